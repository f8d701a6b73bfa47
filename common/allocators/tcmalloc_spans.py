"""tcmalloc's page map and spans, read in bulk.

The page map (PageMap2: a root of leaves, each leaf 2^18 `Span*`) is the complete index of the
heap: every page tcmalloc got from the system belongs to exactly one span. Entries are not
cleared when spans merge, so interior pages of a former small span still point at the dead Span
record: a span is real only when the map entry of its own first page points back at it.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..memcache import CachedReader
from ..target import ReadError
from .tcmalloc_layout import TcLayout

MAX_LEAVES = 512                 # 1 GiB of leaves (each maps 2 GiB of address space)
SPAN_BATCH_GAP = 4096            # Span records closer than this are read in one call
SPAN_BATCH_MAX = 1 << 20
U64 = np.dtype("<u8")


class PageMap:
    """All non-empty page-map entries: `pages` (sorted page numbers) and `ptrs` (Span*)."""

    def __init__(self, pages: np.ndarray, ptrs: np.ndarray, problems: List[str]):
        self.pages, self.ptrs, self.problems = pages, ptrs, problems

    def lookup(self, pages: np.ndarray) -> np.ndarray:
        """The Span* of each page (0 where the map has none)."""
        pages = np.asarray(pages, dtype=np.uint64)
        if not len(self.pages):
            return np.zeros(len(pages), dtype=np.uint64)
        pos = np.searchsorted(self.pages, pages)
        pos = np.minimum(pos, len(self.pages) - 1)
        hit = self.pages[pos] == pages
        return np.where(hit, self.ptrs[pos], np.uint64(0))


def read_pagemap(reader: CachedReader, lay: TcLayout, pageheap: int) -> PageMap:
    problems: List[str] = []
    root_addr = pageheap + lay.ph_pagemap + lay.pm_root
    root = np.frombuffer(reader.read(root_addr, lay.root_len * 8), dtype=U64)
    leaves = np.nonzero(root)[0]
    if len(leaves) > MAX_LEAVES:
        problems.append(f"the page map root has {len(leaves)} leaves (more than {MAX_LEAVES}): only the first "
                        f"{MAX_LEAVES} are read")
        leaves = leaves[:MAX_LEAVES]
    pages, ptrs = [], []
    for i1 in leaves.tolist():
        leaf = int(root[i1])
        if leaf & 7:
            problems.append(f"page map root[{i1}] = {leaf:#x} is not a leaf address (misaligned)")
            continue
        try:
            vals = np.frombuffer(reader.read(leaf, lay.leaf_len * 8), dtype=U64)
        except ReadError:
            problems.append(f"page map leaf root[{i1}] = {leaf:#x} is unreadable: pages "
                            f"{i1 << lay.leaf_bits:#x}.. are not walked")
            continue
        nz = np.nonzero(vals)[0]
        pages.append(nz.astype(np.uint64) + np.uint64(i1 << lay.leaf_bits))
        ptrs.append(vals[nz])
    if pages:
        return PageMap(np.concatenate(pages), np.concatenate(ptrs), problems)
    return PageMap(np.zeros(0, np.uint64), np.zeros(0, np.uint64), problems)


class Spans:
    """The real spans, sorted by start page, as numpy arrays (one row per span)."""

    def __init__(self, addr, start, length, nxt, prev, objects, refcount, sizeclass, location, sample):
        self.addr, self.start, self.length = addr, start, length
        self.next, self.prev, self.objects = nxt, prev, objects
        self.refcount, self.sizeclass, self.location, self.sample = refcount, sizeclass, location, sample

    def __len__(self):
        return len(self.addr)

    def find_page(self, page: int) -> int:
        """Row of the span containing page, or -1."""
        i = int(np.searchsorted(self.start, np.uint64(page), side="right")) - 1
        if i >= 0 and page < int(self.start[i]) + int(self.length[i]):
            return i
        return -1

    def row_of(self, addr: int) -> int:
        """Row of the span whose record is at addr, or -1."""
        return self.row_by_addr.get(addr, -1)

    def index_records(self):
        self.row_by_addr = {a: i for i, a in enumerate(self.addr.tolist())}
        # plain lists for the link-by-link walks of span rings (numpy scalars are slow one by one)
        self.next_l, self.prev_l, self.objects_l = self.next.tolist(), self.prev.tolist(), self.objects.tolist()


def _field(words: np.ndarray, bitpos: Tuple[int, int]) -> np.ndarray:
    bit, width = bitpos
    return ((words[:, bit // 64] >> np.uint64(bit % 64)) & np.uint64((1 << width) - 1)).astype(np.int64)


def read_spans(reader: CachedReader, lay: TcLayout, ptrs: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """The Span records at the (sorted, unique) addresses `ptrs`, read in batches: returns
    (addresses read, words[n, span_size/8], unreadable addresses)."""
    size = lay.span_size
    nw = size // 8
    ok_addrs, rows, bad = [], [], []
    p = ptrs.tolist()
    i = 0
    while i < len(p):
        j = i + 1
        while j < len(p) and p[j] - p[j - 1] < SPAN_BATCH_GAP and p[j] + size - p[i] <= SPAN_BATCH_MAX:
            j += 1
        lo, hi = p[i], p[j - 1] + size
        try:
            buf = np.frombuffer(reader.read(lo, hi - lo), dtype=np.uint8)
            offs = np.asarray(ptrs[i:j] - np.uint64(lo), dtype=np.int64)
            recs = buf[offs[:, None] + np.arange(size)].copy().view(U64).reshape(-1, nw)
            ok_addrs.append(ptrs[i:j])
            rows.append(recs)
        except ReadError:
            for a in p[i:j]:                  # a batch failed: find out which records are readable
                try:
                    rows.append(np.frombuffer(reader.read(a, size), dtype=U64).reshape(1, nw))
                    ok_addrs.append(np.array([a], dtype=np.uint64))
                except ReadError:
                    bad.append(a)
        i = j
    if not rows:
        return np.zeros(0, np.uint64), np.zeros((0, nw), np.uint64), bad
    return np.concatenate(ok_addrs), np.concatenate(rows), bad


def real_spans(pm: PageMap, lay: TcLayout, reader: CachedReader) -> Tuple[Spans, List[int]]:
    """Spans whose first page maps back to them, sorted by start; plus unreadable Span* values."""
    uniq = np.unique(pm.ptrs)
    addrs, words, bad = read_spans(reader, lay, uniq)
    w = lambda off: words[:, off // 8] if len(words) else np.zeros(0, np.uint64)
    start, length = w(lay.span_start), w(lay.span_length)
    max_page = np.uint64(1 << (48 - lay.page_shift))
    sane = (start < max_page) & (length >= 1) & (length < max_page)
    back = pm.lookup(np.where(sane, start, 0)) == addrs
    keep = np.nonzero(sane & back)[0]
    order = keep[np.argsort(start[keep], kind="stable")]
    ww = words[order]
    sp = Spans(addrs[order], start[order], length[order], ww[:, lay.span_next // 8], ww[:, lay.span_prev // 8],
               ww[:, lay.span_objects // 8], _field(ww, lay.refcount), _field(ww, lay.sizeclass),
               _field(ww, lay.location), _field(ww, lay.sample))
    sp.index_records()
    return sp, bad
