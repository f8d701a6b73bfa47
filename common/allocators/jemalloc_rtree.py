"""jemalloc's emap radix tree, read whole: every leaf in one bulk read each, decoded with numpy
into the extents (edata_t) it maps, then every edata read in clustered bulk reads.

For automatic arenas the rtree is the only complete index of extents (arena->large and
bin->slabs_full are kept for manual arenas only): every page of a slab and the first and last
page of every other extent (large, dirty, muzzy, retained) map to their edata_t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from ..memcache import CachedReader
from ..target import ReadError
from .jemalloc_layout import JeLayout

U64 = np.uint64
MAX_LEAVES = 4096           # 4 TiB of address space at 1 GiB a leaf: far beyond any real heap
MAX_NODES = 1024            # interior nodes of a 3-level tree
CLUSTER_GAP = 64 << 10      # edata closer than this are read together
CLUSTER_MAX = 8 << 20       # bytes per clustered edata read


@dataclass
class Extents:
    """One row per distinct edata the rtree maps (sorted by edata address), plus the rtree
    entries themselves (r_*), each with the row of its edata in r_group."""
    edata: np.ndarray          # u64 edata_t address
    first_key: np.ndarray      # u64 lowest page address mapped to it
    last_key: np.ndarray       # u64 highest
    npages: np.ndarray         # i64 rtree entries naming it
    r_key: np.ndarray          # u64 page address of each entry
    r_group: np.ndarray        # i64 its edata's row
    r_szind: np.ndarray        # i64 metadata in the entry
    r_slab: np.ndarray
    r_state: np.ndarray
    # filled from the edata_t itself
    ok: np.ndarray = None      # bool: edata readable
    bits: np.ndarray = None
    addr: np.ndarray = None
    size_esn: np.ndarray = None
    bitmap: np.ndarray = None  # (n, groups) u64


def _decode(lay: JeLayout, raw: bytes):
    """(edata, szind, slab, state) arrays of the non-empty elements of a leaf, and their indexes."""
    if lay.leaf_compact:
        bits = np.frombuffer(raw, dtype="<u8")
        nz = np.nonzero(bits)[0]
        b = bits[nz]
        nhib = U64(64 - lay.lg_vaddr)
        with np.errstate(over="ignore"):
            ed = ((b << nhib).view(np.int64) >> np.int64(64 - lay.lg_vaddr)).view(U64) & ~U64(127)
        szind = (b >> U64(lay.lg_vaddr)).astype(np.int64)
        meta = b
    else:                                          # {edata *; unsigned metadata} per element
        w = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        nz = np.nonzero(w[:, 0])[0]
        ed = w[nz, 0]
        meta = w[nz, 1] & U64(0xFFFFFFFF)
        szind = (meta >> U64(5)).astype(np.int64)
    slab = (meta & U64(1)).astype(bool)
    state = ((meta >> U64(2)) & U64(7)).astype(np.int64)
    return nz, ed, szind, slab, state


def read_rtree(r: CachedReader, lay: JeLayout, root_addr: int, problems: List[str]) -> Tuple[Extents, int]:
    """Every extent the tree maps; problems (unreadable nodes) are appended as sentences.
    Returns (extents, leaves read)."""
    levels = lay.levels
    nhib = 64 - lay.lg_vaddr
    shifts = []
    cum = nhib
    for b in levels:
        cum += b
        shifts.append(64 - cum)
    node_sz = 8
    # (address of the node array, level, key prefix)
    frontier = [(root_addr, 0, 0)]
    leaves: List[Tuple[int, int]] = []             # (leaf address, key prefix)
    nodes = 0
    while frontier:
        addr, lvl, prefix = frontier.pop()
        n = 1 << levels[lvl]
        if lvl == len(levels) - 1:                 # a 1-level tree: the root is the leaf
            leaves.append((addr, prefix))
            continue
        try:
            raw = r.read(addr, n * node_sz)
        except ReadError as e:
            problems.append(f"rtree node at {addr:#x} (level {lvl}) is unreadable: {e}")
            continue
        kids = np.frombuffer(raw, dtype="<u8")
        for i in np.nonzero(kids)[0].tolist():
            child = int(kids[i])
            key = prefix | (i << shifts[lvl])
            if child & 7:
                problems.append(f"rtree node at {addr:#x} entry {i} holds a misaligned pointer {child:#x}")
                continue
            if lvl + 1 == len(levels) - 1:
                leaves.append((child, key))
                if len(leaves) > MAX_LEAVES:
                    problems.append(f"the rtree has more than {MAX_LEAVES} leaves; the rest is not walked")
                    frontier = []
                    break
            else:
                nodes += 1
                if nodes > MAX_NODES:
                    problems.append(f"the rtree has more than {MAX_NODES} interior nodes; the rest is not walked")
                    frontier = []
                    break
                frontier.append((child, lvl + 1, key))
    leaves.sort(key=lambda x: x[1])
    parts = []
    nleaf = 1 << levels[-1]
    lshift = U64(shifts[-1])
    for leaf, prefix in leaves:
        try:
            raw = r.read(leaf, nleaf * lay.leaf_size)
        except ReadError as e:
            problems.append(f"rtree leaf at {leaf:#x} (pages from {prefix:#x}) is unreadable: {e}")
            continue
        nz, ed, szind, slab, state = _decode(lay, raw)
        keep = ed != 0                             # cleared entries (deregistered pages)
        if not keep.any():
            continue
        keys = U64(prefix) | (nz[keep].astype(U64) << lshift)
        parts.append((keys, ed[keep], szind[keep], slab[keep], state[keep]))
    if parts:
        keys, ed, szind, slab, state = (np.concatenate(c) for c in zip(*parts))
    else:
        keys = ed = np.zeros(0, U64)
        szind = state = np.zeros(0, np.int64)
        slab = np.zeros(0, bool)
    return _group(keys, ed, szind, slab, state), len(leaves)


def _group(keys, ed, szind, slab, state) -> Extents:
    order = np.lexsort((keys, ed))
    keys, ed, szind, slab, state = keys[order], ed[order], szind[order], slab[order], state[order]
    uniq, first, counts = np.unique(ed, return_index=True, return_counts=True)
    last = first + counts - 1
    grp = np.repeat(np.arange(len(uniq)), counts)
    return Extents(uniq, keys[first], keys[last], counts.astype(np.int64), keys, grp, szind, slab, state)


def read_edata(r: CachedReader, lay: JeLayout, ex: Extents) -> None:
    """Fill ex.bits/addr/size_esn/bitmap from the edata_t structs, read in clusters."""
    n = len(ex.edata)
    g = lay.bitmap_groups
    ex.ok = np.zeros(n, bool)
    ex.bits, ex.addr, ex.size_esn = np.zeros(n, U64), np.zeros(n, U64), np.zeros(n, U64)
    ex.bitmap = np.zeros((n, g), U64)
    if n == 0:
        return
    a = ex.edata
    esz = lay.edata_size
    breaks = np.nonzero((np.diff(a) > U64(CLUSTER_GAP)))[0] + 1
    starts = np.concatenate([[0], breaks, [n]])
    for s0, s1 in zip(starts[:-1].tolist(), starts[1:].tolist()):
        lo = s0
        while lo < s1:                               # split clusters that would exceed CLUSTER_MAX
            lim = min(int(a[lo]) + CLUSTER_MAX, (1 << 64) - 1)
            hi = lo + int(np.searchsorted(a[lo:s1], U64(lim), side="left"))
            hi = max(hi, lo + 1)
            _read_cluster(r, lay, ex, lo, hi, esz, g)
            lo = hi


def _read_cluster(r, lay, ex, lo, hi, esz, g):
    base = int(ex.edata[lo])
    span = int(ex.edata[hi - 1]) - base + esz
    try:
        buf = np.frombuffer(r.read(base, span), dtype="<u8")
    except ReadError:
        if hi - lo > 1:                              # one bad page: read them one by one
            for i in range(lo, hi):
                _read_cluster(r, lay, ex, i, i + 1, esz, g)
        return
    idx = ((ex.edata[lo:hi] - U64(base)) // U64(8)).astype(np.int64)
    ex.ok[lo:hi] = True
    ex.bits[lo:hi] = buf[idx + lay.e_bits // 8]
    ex.addr[lo:hi] = buf[idx + lay.e_addr // 8]
    ex.size_esn[lo:hi] = buf[idx + lay.e_size // 8]
    ex.bitmap[lo:hi] = buf[idx[:, None] + lay.e_bitmap // 8 + np.arange(g)[None, :]]


def field(lay: JeLayout, bits: np.ndarray, name: str) -> np.ndarray:
    shift, width = lay.ebits[name]
    return ((bits >> U64(shift)) & U64((1 << width) - 1)).astype(np.int64)
