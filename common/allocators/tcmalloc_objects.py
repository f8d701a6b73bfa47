"""Every object of every small span, with its first word (the free-list link when it is free).

Objects are laid out back to back from the span's first byte (`nobjs = span bytes // class
size`), so their addresses are computed, not read. The first words come from bulk reads of the
spans' memory (adjacent spans merged into windows), gathered with numpy; free-list walks then
follow precomputed successor indices instead of reading memory link by link.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from ..memcache import CachedReader
from ..target import ReadError, Target
from .tcmalloc_spans import U64, Spans

WINDOW = 8 << 20                 # bytes per bulk read of span memory
MERGE_GAP = 64 << 10             # spans this close are read together (the gap is read too)
NULL, NOT_OBJECT, UNREAD = -1, -2, -3     # successor codes


class Objects:
    def __init__(self, target: Target, reader: CachedReader, spans: Spans, small: np.ndarray,
                 csize: np.ndarray, nobjs: np.ndarray, page_shift: int):
        """small: rows of the small in-use spans (sorted by start); csize/nobjs: their class size
        and object count."""
        self.t, self.r = target, reader
        self.small = small
        counts = nobjs.astype(np.int64)
        n = int(counts.sum())
        self.n = n
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
        self.first = first                        # index of each small span's first object
        self.count = counts
        span_of = np.repeat(np.arange(len(small), dtype=np.int64), counts)
        within = np.arange(n, dtype=np.int64) - first[span_of] if n else np.zeros(0, np.int64)
        base = (spans.start[small] << np.uint64(page_shift)).astype(np.uint64)
        self.addr = base[span_of] + (within.astype(np.uint64) * csize[span_of].astype(np.uint64))
        self.size = csize[span_of].astype(np.uint64)
        self.span_of = span_of                    # index into `small`
        self.unread: List[tuple] = []
        self.next = self._first_words(base, (spans.length[small] << np.uint64(page_shift)).astype(np.uint64))
        self.succ = self._successors()

    def _first_words(self, base: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        nxt = np.zeros(self.n, dtype=np.uint64)
        self.readable = np.ones(self.n, dtype=bool)
        if not self.n:
            return nxt
        runs = []                                 # (lo, hi, first object, end object)
        lo, hi, o0 = int(base[0]), int(base[0] + nbytes[0]), 0
        for k in range(1, len(base)):
            b, e = int(base[k]), int(base[k] + nbytes[k])
            if b - hi <= MERGE_GAP and e - lo <= WINDOW:
                hi = max(hi, e)
                continue
            runs.append((lo, hi, o0, int(self.first[k])))
            lo, hi, o0 = b, e, int(self.first[k])
        runs.append((lo, hi, o0, self.n))
        fast = self.t.threadsafe_reader() if not os.environ.get("HEAPLENS_NO_PREFETCH") else None
        pool = None
        if fast is not None and len(runs) > 1:
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heaplens-tc-read")
        try:
            pending = pool.submit(fast, runs[0][0], runs[0][1] - runs[0][0]) if pool else None
            for k, (lo, hi, a, b) in enumerate(runs):
                buf = None
                if pending is not None:
                    try:
                        buf = pending.result()
                    except Exception:             # a failed prefetch is read again below
                        buf = None
                    pending = None
                if pool is not None and k + 1 < len(runs):
                    nlo, nhi = runs[k + 1][:2]
                    pending = pool.submit(fast, nlo, nhi - nlo)
                if buf is None:
                    buf = self._read(lo, hi)
                if buf is not None:
                    self._gather(nxt, buf, lo, a, b)
                    continue
                for s in range(int(self.span_of[a]), int(self.span_of[b - 1]) + 1):   # one span at a time
                    sa, sb = int(self.first[s]), int(self.first[s] + self.count[s])
                    slo, shi = int(base[s]), int(base[s] + nbytes[s])
                    sbuf = self._read(slo, shi)
                    if sbuf is None:
                        self.readable[sa:sb] = False
                        if self.unread and self.unread[-1][1] >= slo:       # merge adjacent holes
                            self.unread[-1] = (self.unread[-1][0], max(shi, self.unread[-1][1]))
                        else:
                            self.unread.append((slo, shi))
                    else:
                        self._gather(nxt, sbuf, slo, sa, sb)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return nxt

    def _gather(self, nxt: np.ndarray, buf: bytes, lo: int, a: int, b: int) -> None:
        words = np.frombuffer(buf, dtype=U64, count=len(buf) // 8)
        nxt[a:b] = words[((self.addr[a:b] - np.uint64(lo)) >> np.uint64(3)).astype(np.int64)]

    def _read(self, lo: int, hi: int) -> Optional[bytes]:
        try:
            return self.r.read(lo, hi - lo)
        except ReadError:
            return None

    def _successors(self) -> np.ndarray:
        succ = np.full(self.n, NOT_OBJECT, dtype=np.int64)
        if self.n:
            cand = np.searchsorted(self.addr, self.next)
            c = np.minimum(cand, self.n - 1)
            hit = self.addr[c] == self.next
            succ[hit] = c[hit]
            succ[self.next == 0] = NULL
            succ[~self.readable] = UNREAD
        return succ

    def index_of(self, addr: int) -> int:
        """Object index of an exact object start, else -1."""
        i = int(np.searchsorted(self.addr, np.uint64(addr)))
        return i if i < self.n and int(self.addr[i]) == addr else -1

    def containing(self, addr: int) -> int:
        """Index of the object containing addr, else -1."""
        i = int(np.searchsorted(self.addr, np.uint64(addr), side="right")) - 1
        if i >= 0 and addr < int(self.addr[i]) + int(self.size[i]):
            return i
        return -1
