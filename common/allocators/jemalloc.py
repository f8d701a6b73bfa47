"""jemalloc 5.3 walker: every extent, slab region, large allocation and thread-cached region.

Flow (bulk reads only):
1. roots (jemalloc_locate): the library, its layout (debug info or the per-build-id table),
   the hidden globals' addresses;
2. globals: je_arenas, the size-class and bin tables, tcache bin sizes; every arena_t once
   (its bins' counters and its base's statistics);
3. the emap rtree, leaf by leaf, into the set of extents; their edata_t in clustered reads;
   rtree and edata cross-checked, edata validated;
4. slab regions expanded with numpy from each slab's bitmap (physical bit 1 = free);
   large extents one entry each; dirty/muzzy extents as free entries;
5. thread caches (jemalloc_tcache): TLS tsd of every thread, plus every arena's tcache ring;
6. classification (jemalloc_checks): cached regions, double frees, interior pointers in caches,
   wrong bins; jemalloc's own counters recomputed and compared.
Nothing read from the target is trusted: every count and pointer is bounded before use.

What the snapshot holds: every slab region (allocated, cached in a thread cache, or free in its
slab's bitmap), every large allocation (one entry, its usable size), and every dirty or muzzy
extent as one free entry; retained extents (address space without memory) are only counted.
Arena.system_mem is the bytes of the active, dirty and muzzy extents the arena owns (its
metadata, from the arena's base, is in meta["stats"]["metadata"]). meta["stats"] recomputes
jemalloc's own statistics from the walk: "allocated" counts regions in use *or cached* (as
stats.allocated does), "active" the pages of active extents, "mapped" and "resident" add the
bases' figures and dirty (and, for mapped, muzzy) pages; meta["jemalloc_counters"] are the
counters jemalloc itself keeps (bin curregs/curslabs, large nmalloc-ndalloc, nactive, ...).
"""
from __future__ import annotations

import os
import struct
import time
from typing import Dict, List, Optional

import numpy as np

from ..heapindex import ALLOCATED, FREE, Arena, FreeList, HeapIndex
from ..memcache import CachedReader
from ..snapshot import HeapSnapshot
from ..target import ReadError, Target
from .base import MAX_PER_CHECK, WalkerBase
from .jemalloc_checks import JeChecks
from .jemalloc_locate import JeRoots, NotJemalloc, locate
from .jemalloc_rtree import field, read_edata, read_rtree
from .jemalloc_tcache import TcacheWalk

__all__ = ["walk", "NotJemalloc"]

U64 = np.uint64
MAX_ARENAS = 4095           # MALLOCX_ARENA_LIMIT
MAX_NREGS = 1 << 16
MAX_BASE_BLOCKS = 1 << 16     # a base grows by blocks of >= 2 MiB: more means a corrupt chain
STATE_NAMES = ("active", "dirty", "muzzy", "retained", "transition", "merging")
ACTIVE, DIRTY, MUZZY, RETAINED = 0, 1, 2, 3


def walk(target: Target, reader: Optional[CachedReader] = None) -> HeapSnapshot:
    reader = reader or CachedReader(target)
    return _Walker(target, reader, locate(target, reader)).run()


def _u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def _u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


class _Walker(TcacheWalk, JeChecks, WalkerBase):
    def __init__(self, target: Target, reader: CachedReader, roots: JeRoots):
        super().__init__(target, reader, roots)
        self.arenas: List[Arena] = []
        self.arena_pos: Dict[int, int] = {}          # arena_t address -> position in self.arenas
        self.ind_pos: Dict[int, int] = {}            # jemalloc arena index -> position
        self.arena_tcache_ql: List[int] = []
        self.thread_cache: Dict[int, int] = {}
        self.thread_arena: Dict[int, int] = {}
        self.counters: Dict[str, int] = {}           # jemalloc's own numbers, as read
        self.bin_curregs = np.zeros(0, np.int64)     # [arena pos, bin] jemalloc's counters
        self.bin_curslabs = np.zeros(0, np.int64)
        self.large_cur = np.zeros(0, np.int64)       # [arena pos, large class]
        self.unwalked: List[tuple] = []
        self.base_ranges: List[tuple] = []           # jemalloc's metadata blocks

    # --- findings ----------------------------------------------------------------------------
    def corrupt(self, address, message, evidence=(), check="", severity="critical", chunk=None):
        self.find("metadata-corruption", severity, address, message, evidence, check, chunk)

    def size_of(self, szind: int) -> int:
        return int(self.sz_tab[szind]) if 0 <= szind < len(self.sz_tab) else 0

    # --- run ---------------------------------------------------------------------------------
    def run(self) -> HeapSnapshot:
        t0 = time.perf_counter()
        self._globals()
        self._arenas()
        t1 = time.perf_counter()
        problems: List[str] = []
        root = self.roots.addr("je_arena_emap_global") + self.lay.rtree_root
        ex, nleaves = read_rtree(self.r, self.lay, root, problems)
        for p in problems:
            self.corrupt(None, p, ["jemalloc's emap (je_arena_emap_global.rtree)"], "rtree")
        read_edata(self.r, self.lay, ex)
        t2 = time.perf_counter()
        self._extents(ex)
        self._regions()
        t3 = time.perf_counter()
        self._thread_caches()
        self._build_index()
        self._classify_cached()
        self._compare_counters()
        t4 = time.perf_counter()
        self.summarise_overflow()
        lay = self.lay
        meta = {"version": lay.version, "version_string": lay.version_string, "layout": lay.source,
                "found_by": dict(self.roots.how), "library": self.roots.obj.path,
                "lg_vaddr": lay.lg_vaddr, "small_max": self.size_of(self.nbins - 1),
                "narenas": len(self.arenas), "extents": int(len(ex.edata)), "rtree_leaves": nleaves,
                "slabs": int(len(self.slab_base)), "regions": int(self.nregions),
                "stats": self.stats, "jemalloc_counters": self.counters,
                "walk_seconds": round(t3 - t0, 4), "read_seconds": round(t2 - t1, 4),
                "total_seconds": round(t4 - t0, 4)}
        snap = HeapSnapshot("jemalloc", self.index, self.lists, self.arenas, self.findings, self.threads,
                            self.notes, meta, self.thread_cache, self.thread_arena, self.unwalked,
                            metadata=self.base_ranges,
                            internal=[(f"tcache stacks of thread {tc.thread}", tc.dyn)
                                      for tc in self.tcaches if tc.dyn])
        return snap

    # --- globals -------------------------------------------------------------------------------
    def _read(self, name: str, n: int) -> bytes:
        a = self.roots.addr(name)
        if a is None:
            raise NotJemalloc(f"jemalloc's {name} has no address in the layout ({self.lay.source})")
        try:
            return self.r.read(a, n)
        except ReadError:
            w = self.t.warnings()
            raise NotJemalloc(f"jemalloc's {name} at {a:#x} is not in the snapshot" +
                              (f": {w[0]}" if w else " (a core without the library's data?)"))

    def _globals(self):
        lay = self.lay
        ntot = MAX_ARENAS
        if lay.glob("narenas_total") is not None:
            ntot = _u32(self._read("narenas_total", 4), 0)
            if not 0 < ntot <= MAX_ARENAS:
                self.corrupt(None, f"narenas_total = {ntot} is out of range (1..{MAX_ARENAS}); all "
                             f"{MAX_ARENAS} slots of je_arenas are read", ["jemalloc global narenas_total"], "globals",
                             severity="warning")
                ntot = MAX_ARENAS
        self.narenas_auto = _u32(self._read("je_narenas_auto", 4), 0)
        self.arena_ptrs = np.frombuffer(self._read("je_arenas", 8 * ntot), dtype="<u8")
        if not self.arena_ptrs[0]:
            raise NotJemalloc(f"jemalloc ({os.path.basename(self.roots.obj.path)}) is loaded but not initialised "
                              "(no allocation has gone through it yet)", present=False)
        self.sz_tab = np.frombuffer(self._read("je_sz_index2size_tab", 8 * lay.nsizes), dtype="<u8").astype(np.int64)
        bi = np.frombuffer(self._read("je_bin_infos", lay.bin_info_size * lay.nbins), dtype=np.uint8)
        rec = bi.reshape(lay.nbins, lay.bin_info_size)
        col = lambda off, n: rec[:, off:off + n].copy().view("<u8" if n == 8 else "<u4").ravel().astype(np.int64)
        self.reg_size, self.slab_size = col(lay.bi_reg_size, 8), col(lay.bi_slab_size, 8)
        self.nregs, self.n_shards = col(lay.bi_nregs, 4), col(lay.bi_n_shards, 4)
        self.nbins = lay.nbins
        why = None
        if not (self.sz_tab[0] > 0 and np.all(np.diff(self.sz_tab) > 0)):
            why = "its size-class table (je_sz_index2size_tab) is not increasing"
        elif not np.array_equal(self.reg_size, self.sz_tab[:self.nbins]):
            why = "its bin table (je_bin_infos) disagrees with the size classes"
        elif np.any((self.nregs < 1) | (self.nregs > MAX_NREGS) | (self.slab_size % lay.page != 0)
                    | (self.nregs * self.reg_size > self.slab_size) | (self.n_shards < 1) | (self.n_shards > 64)):
            why = "its bin table (je_bin_infos) has impossible slab geometry"
        if why:
            raise NotJemalloc(f"jemalloc's tables do not fit the layout ({lay.source}): {why}; the library "
                              "may not be the build the layout describes, or its globals are overwritten")
        self.nhbins = _u32(self._read("je_nhbins", 4), 0)
        if not 0 <= self.nhbins <= lay.tcache_nbins_max:
            self.corrupt(None, f"je_nhbins = {self.nhbins} is out of range (0..{lay.tcache_nbins_max}); "
                         "thread caches are not read", ["jemalloc global nhbins"], "globals")
            self.nhbins = 0
        self.ncached_max = np.zeros(self.nhbins, np.int64)
        if self.nhbins:
            p = _u64(self._read("je_tcache_bin_info", 8), 0)
            try:
                self.ncached_max = np.frombuffer(self.r.read(p, 2 * self.nhbins), dtype="<u2").astype(np.int64)
            except ReadError:
                self.corrupt(None, f"je_tcache_bin_info ({p:#x}) is unreadable: thread caches are not read",
                             [], "globals")
                self.nhbins = 0
        self.stack_bytes = int(self.ncached_max.sum()) * 8
        offs = lay.glob("je_arena_bin_offsets")
        self.bin_offsets = (np.frombuffer(self._read("je_arena_bin_offsets", 4 * self.nbins), dtype="<u4")
                            .astype(np.int64) if offs is not None else None)

    # --- arenas ------------------------------------------------------------------------------
    def _base_blocks(self, base: int) -> None:
        """The blocks of one base allocator (a chain from base_t.blocks). They hold jemalloc's
        metadata, whose extent records point at heap memory: the tracer must not take them
        for program roots. A bad link ends the chain (these ranges only narrow a scan)."""
        lay = self.lay
        try:
            block = _u64(self.r.read(base + lay.base_blocks, 8), 0)
        except ReadError:
            return
        seen = set()
        while block and block not in seen and len(seen) < MAX_BASE_BLOCKS and not block & 0xFFF:
            seen.add(block)
            try:
                raw = self.r.read(block, max(lay.bb_size, lay.bb_next) + 8)
            except ReadError:
                return
            size = _u64(raw, lay.bb_size)
            if not 0 < size < 1 << 40:
                return
            self.base_ranges.append((block, block + size))
            block = _u64(raw, lay.bb_next)

    def _arenas(self):
        lay = self.lay
        nb = self.nbins
        nlarge = lay.nsizes - nb
        cur, slabs, large = [], [], []
        bases = {}
        for ind in np.nonzero(self.arena_ptrs)[0].tolist():
            p = int(self.arena_ptrs[ind])
            if p & 63 or p in self.arena_pos:
                self.corrupt(None, f"je_arenas[{ind}] = {p:#x} is not an arena address",
                             ["arena_t is cacheline-aligned and appears once in je_arenas"], "arena")
                continue
            try:
                raw = self.r.read(p, lay.arena_size)
            except ReadError:
                self.corrupt(None, f"arena {ind} at {p:#x} is unreadable", [f"je_arenas[{ind}]"], "arena")
                continue
            if _u32(raw, lay.a_ind) != ind:
                self.corrupt(None, f"arena {ind} at {p:#x} says it is arena {_u32(raw, lay.a_ind)}",
                             [f"je_arenas[{ind}]; arena_t.ind"], "arena")
                continue
            pos = len(self.arenas)
            self.arena_pos[p] = pos
            self.ind_pos[ind] = pos
            name = f"arena {ind}" + ("" if ind < self.narenas_auto else " (manual)")
            self.arenas.append(Arena(pos, p, name))
            self.arena_tcache_ql.append(_u64(raw, lay.a_tcache_ql))
            nact = _u64(raw, lay.a_nactive)
            self._count("active_pages", nact)
            for st, off in lay.a_npages.items():
                self._count(f"{st}_pages", _u64(raw, off))
            self._count("internal", _u64(raw, lay.a_internal))
            ls = np.frombuffer(raw, dtype="<u8", count=nlarge * lay.lstats_size // 8, offset=lay.a_lstats)
            ls = ls.reshape(nlarge, lay.lstats_size // 8)
            large.append((ls[:, lay.ls_nmalloc // 8] - ls[:, lay.ls_ndalloc // 8]).astype(np.int64))
            c, s = self._bin_counters(p)
            cur.append(c)
            slabs.append(s)
            base = _u64(raw, lay.a_base)
            if base and base not in bases:
                try:
                    bases[base] = struct.unpack("<3Q", self.r.read(base + lay.base_allocated, 24))
                except ReadError:
                    pass
                else:
                    self._base_blocks(base)
        if not self.arenas:
            raise NotJemalloc("no jemalloc arena could be read (je_arenas holds no valid arena)")
        self.bin_curregs, self.bin_curslabs = np.array(cur), np.array(slabs)
        self.large_cur = np.array(large)
        for a, r_, m in bases.values():
            self._count("base_allocated", a)
            self._count("base_resident", r_)
            self._count("base_mapped", m)

    def _count(self, key: str, v: int):
        self.counters[key] = self.counters.get(key, 0) + int(v)

    def _bin_counters(self, arena: int):
        """curregs and curslabs per bin of one arena, summed over its shards (-1: unreadable)."""
        lay = self.lay
        cur = np.full(self.nbins, -1, np.int64)
        slabs = np.full(self.nbins, -1, np.int64)
        if self.bin_offsets is None:
            return cur, slabs
        total = int(self.n_shards.sum())
        lo = arena + int(self.bin_offsets.min())
        span = int(self.bin_offsets.max()) + int(self.n_shards.max()) * lay.bin_size - int(self.bin_offsets.min())
        if span > total * lay.bin_size * 2 or span <= 0:
            return cur, slabs
        try:
            raw = self.r.read(lo, span)
        except ReadError:
            return cur, slabs
        for b in range(self.nbins):
            o0 = int(self.bin_offsets[b]) - int(self.bin_offsets.min())
            c = s = 0
            for sh in range(int(self.n_shards[b])):
                o = o0 + sh * lay.bin_size
                c += _u64(raw, o + lay.b_curregs)
                s += _u64(raw, o + lay.b_curslabs)
            cur[b], slabs[b] = c, s
        return cur, slabs

    # --- extents -----------------------------------------------------------------------------
    def _extents(self, ex):
        lay = self.lay
        page = lay.page
        pmask = U64(~(page - 1) & 0xFFFFFFFFFFFFFFFF)
        bits = ex.bits
        e_arena, e_slab = field(lay, bits, "arena"), field(lay, bits, "slab").astype(bool)
        e_state, e_szind = field(lay, bits, "state"), field(lay, bits, "szind")
        e_nfree = field(lay, bits, "nfree")
        base = ex.addr & pmask
        size = ex.size_esn & pmask
        n = len(ex.edata)
        bad = np.zeros(n, bool)
        # unreadable edata
        for i in np.nonzero(~ex.ok)[0][:MAX_PER_CHECK].tolist():
            self.corrupt(None, f"the rtree maps pages {int(ex.first_key[i]):#x}.. to edata {int(ex.edata[i]):#x}, "
                         "which is unreadable", ["jemalloc emap rtree leaf"], "edata")
        bad |= ~ex.ok
        with np.errstate(over="ignore"):
            insane = ex.ok & ((ex.addr == 0) | (size == 0) | (size > U64(1 << 44)) | (e_state > 5)
                              | (ex.addr >= U64(1 << lay.lg_vaddr)))
        self._report_edata(ex, np.nonzero(insane)[0], base, size, e_state,
                           lambda i: f"corrupt edata {int(ex.edata[i]):#x}: address {int(ex.addr[i]):#x}, size "
                                     f"{int(size[i]):#x}, state {int(e_state[i])}")
        bad |= insane
        # the rtree and the edata must agree (emap.c): every entry carries the extent's state; the
        # first page of an active extent carries its size class and slab flag, and so does every
        # page of a slab (a large extent's last page keeps stale ones: only its head is looked up;
        # an inactive extent's size class and slab flag mean nothing)
        g = ex.r_group
        rb = base[g]
        active = e_state == ACTIVE
        head = ex.r_key == rb
        chk = (ex.ok & ~bad)[g]
        with np.errstate(over="ignore"):
            r_out = chk & ((ex.r_key < rb) | (ex.r_key >= rb + size[g]))
        r_state = chk & (ex.r_state != e_state[g])
        r_meta = chk & active[g] & (head | e_slab[g]) & ((ex.r_szind != e_szind[g]) | (ex.r_slab != e_slab[g]))
        per = lambda m: np.bincount(g[m], minlength=n) > 0
        g_out, g_state, g_meta = per(r_out), per(r_state), per(r_meta)
        no_head = ex.ok & ~bad & ~per(head)
        slab_holes = ex.ok & ~bad & active & e_slab & (ex.npages != (size // U64(page)).astype(np.int64))
        disagree = g_out | g_state | g_meta | no_head | slab_holes
        rows = np.nonzero(disagree)[0]
        first_row = np.full(n, -1, np.int64)
        for m in (r_meta, r_state, r_out):
            idxs = np.nonzero(m)[0]
            first_row[g[idxs[::-1]]] = idxs[::-1]        # earliest offending entry per extent
        for i in rows[:MAX_PER_CHECK].tolist():
            k = int(first_row[i])
            what = []
            if k >= 0:
                key = int(ex.r_key[k])
                what.append(f"the rtree entry for page {key:#x} says size class {int(ex.r_szind[k])}, slab "
                            f"{int(ex.r_slab[k])}, state {STATE_NAMES[min(int(ex.r_state[k]), 5)]}; the edata says "
                            f"{int(e_szind[i])}, {int(e_slab[i])}, {STATE_NAMES[min(int(e_state[i]), 5)]}")
                if g_out[i]:
                    what.append(f"the rtree maps pages {int(ex.first_key[i]):#x}..{int(ex.last_key[i]):#x}, "
                                f"outside the extent {int(base[i]):#x}+{int(size[i]):#x}")
            elif no_head[i]:
                what.append(f"no rtree entry maps the extent's first page {int(base[i]):#x}")
            else:
                what.append(f"only {int(ex.npages[i])} of the slab's {int(size[i]) // page} pages are in the rtree")
            self.corrupt(int(ex.addr[i]) if not e_slab[i] else None,
                         f"rtree and edata {int(ex.edata[i]):#x} disagree: {'; '.join(what)}",
                         ["jemalloc looks up every free()d pointer in the rtree: a wrong entry sends it to the "
                          "wrong size class or extent"], "rtree-edata",
                         chunk={"start": int(base[i]), "size": int(size[i]), "state": "unknown"})
        self.per_check["rtree-edata"] += max(0, len(rows) - MAX_PER_CHECK)
        bad |= disagree
        # slab geometry
        nb = self.nbins
        is_slab = ex.ok & ~bad & e_slab & (e_state == ACTIVE)
        sz = np.clip(e_szind, 0, nb - 1)
        slab_bad = is_slab & ((e_szind >= nb) | (ex.addr != base) | (size != self.slab_size[sz].astype(U64))
                              | (e_nfree > self.nregs[sz]))
        self._report_edata(ex, np.nonzero(slab_bad)[0], base, size, e_state,
                           lambda i: f"corrupt slab edata {int(ex.edata[i]):#x}: size class {int(e_szind[i])}, "
                                     f"address {int(ex.addr[i]):#x}, size {int(size[i]):#x}, nfree {int(e_nfree[i])}")
        is_slab &= ~slab_bad
        is_large = ex.ok & ~bad & ~e_slab & (e_state == ACTIVE)
        usize = self.sz_tab[np.clip(e_szind, 0, lay.nsizes - 1)].astype(U64)
        with np.errstate(over="ignore"):
            large_bad = is_large & ((e_szind >= lay.nsizes) | (ex.addr - base >= U64(page)) | (ex.addr & U64(7) != 0)
                                    | (ex.addr + usize > base + size))
        self._report_edata(ex, np.nonzero(large_bad)[0], base, size, e_state,
                           lambda i: f"corrupt large edata {int(ex.edata[i]):#x}: address {int(ex.addr[i]):#x}, "
                                     f"size class {int(e_szind[i])} ({int(usize[i])} bytes) in an extent of "
                                     f"{int(size[i]):#x} bytes at {int(base[i]):#x}")
        is_large &= ~large_bad
        # arenas
        pos_of = np.full(MAX_ARENAS + 1, -1, np.int64)
        for ind, pos in self.ind_pos.items():
            pos_of[ind] = pos
        apos = pos_of[np.clip(e_arena, 0, MAX_ARENAS)]
        unknown = ex.ok & ~bad & (apos < 0) & (e_state != RETAINED)
        for i in np.nonzero(unknown)[0][:MAX_PER_CHECK].tolist():
            self.corrupt(int(ex.addr[i]), f"extent {int(base[i]):#x} (edata {int(ex.edata[i]):#x}) belongs to arena "
                         f"{int(e_arena[i])}, which does not exist", [], "edata-arena", severity="warning")
        transient = ex.ok & ~bad & (e_state > RETAINED)
        if transient.any():
            self.notes.append(f"{int(transient.sum())} extent(s) are being split or merged by a thread stopped inside "
                              "jemalloc; their regions are not listed")
        is_free = ex.ok & ~bad & ((e_state == DIRTY) | (e_state == MUZZY))
        retained = ex.ok & ~bad & (e_state == RETAINED)
        # overlapping extents: two edata claiming the same memory
        keep = is_slab | is_large | is_free
        kidx = np.nonzero(keep)[0]
        order = kidx[np.argsort(base[kidx], kind="stable")]
        if len(order) > 1:
            with np.errstate(over="ignore"):
                ov = np.nonzero(base[order][1:] < base[order][:-1] + size[order][:-1])[0]
            for j in ov[:MAX_PER_CHECK].tolist():
                a_, b_ = int(order[j]), int(order[j + 1])
                self.corrupt(int(ex.addr[b_]), f"extents overlap: {int(base[a_]):#x}+{int(size[a_]):#x} (edata "
                             f"{int(ex.edata[a_]):#x}) and {int(base[b_]):#x} (edata {int(ex.edata[b_]):#x})",
                             [], "extent-overlap")
                keep[b_] = False
            is_slab &= keep
            is_large &= keep
            is_free &= keep
        # extents dropped as corrupt: lookups there say "unknown", not "not in the heap"
        dropped = ex.ok & (bad | slab_bad | large_bad) & (base != 0) & (size > 0) & (size <= U64(1 << 36))
        self.unwalked = [(int(b), int(b) + int(z)) for b, z in zip(base[dropped][:1000], size[dropped][:1000])]
        # per-arena system memory: what the arena owns (active, dirty and muzzy extents)
        owned = is_slab | is_large | is_free
        for pos in range(len(self.arenas)):
            m = owned & (apos == pos)
            a = self.arenas[pos]
            a.system_mem = int(size[m].sum())
        self.ex = ex
        self.ex_base, self.ex_size, self.ex_apos, self.ex_szind = base, size, apos, e_szind
        s = np.nonzero(is_slab)[0]
        s = s[np.argsort(base[s], kind="stable")]
        self.slab_rows = s
        self.slab_base, self.slab_szind = base[s], e_szind[s]
        self.slab_nfree, self.slab_apos = e_nfree[s], apos[s]
        self.large_rows = np.nonzero(is_large)[0]
        self.free_rows = np.nonzero(is_free)[0]
        st = {"active_bytes": int(size[is_slab | is_large].sum()),
              "dirty_bytes": int(size[is_free & (e_state == DIRTY)].sum()),
              "muzzy_bytes": int(size[is_free & (e_state == MUZZY)].sum()),
              "retained_bytes": int(size[retained].sum()),
              "slab_bytes": int(size[is_slab].sum()), "large_extent_bytes": int(size[is_large].sum()),
              "slabs": int(is_slab.sum()), "large_extents": int(is_large.sum()),
              "free_extents": int(is_free.sum()), "retained_extents": int(retained.sum())}
        self.stats = st
        self.e_state = e_state
        for pos, a in enumerate(self.arenas):
            m = owned & (apos == pos)
            if m.sum() <= 4096:
                a.segments = [(int(b), int(b) + int(z)) for b, z in zip(base[m], size[m])]
            else:                                    # a summary, not a list of every extent
                a.segments = [(int(base[m].min()), int((base[m] + size[m]).max()))]

    def _report_edata(self, ex, rows, base, size, e_state, msg):
        for i in rows[:MAX_PER_CHECK].tolist():
            self.corrupt(int(ex.addr[i]) if ex.addr[i] else None, msg(i),
                         [f"edata_t at {int(ex.edata[i]):#x}, mapped by rtree pages {int(ex.first_key[i]):#x}.."
                          f"{int(ex.last_key[i]):#x}", "its regions are not listed"], "edata",
                         chunk={"start": int(base[i]), "size": int(size[i]), "state": "unknown"})
        self.per_check["edata"] += max(0, len(rows) - MAX_PER_CHECK)

    # --- slab regions ---------------------------------------------------------------------------
    def _regions(self):
        """Every region of every slab, from its bitmap: vectorised over all slabs at once."""
        ex, rows = self.ex, self.slab_rows
        szind = self.slab_szind
        nregs = self.nregs[szind]
        reg = self.reg_size[szind].astype(U64)
        total = int(nregs.sum())
        self.nregions = total
        slab_of = np.repeat(np.arange(len(rows)), nregs)
        first = np.cumsum(nregs) - nregs
        k = np.arange(total, dtype=np.int64) - first[slab_of]
        self.r_start = self.slab_base[slab_of] + k.astype(U64) * reg[slab_of]
        self.r_size = reg[slab_of]
        words = ex.bitmap[rows[slab_of], k >> 6]
        free = ((words >> (k & 63).astype(U64)) & U64(1)).astype(bool)
        self.r_free, self.r_slab, self.r_szind = free, slab_of, szind[slab_of]
        self.r_apos = self.slab_apos[slab_of]
        # bitmap against nfree: jemalloc keeps both under the bin lock
        cnt = np.add.reduceat(free.astype(np.int64), first) if total else np.zeros(0, np.int64)
        mism = np.nonzero(cnt != self.slab_nfree)[0]
        for j in mism[:MAX_PER_CHECK].tolist():
            b = int(self.slab_base[j])
            sz = int(self.slab_szind[j])
            self.corrupt(None, f"slab {b:#x} (bin {sz}, {self.size_of(sz):#x}-byte regions): its bitmap has "
                         f"{int(cnt[j])} free regions but its edata says nfree = {int(self.slab_nfree[j])}",
                         [f"edata_t at {int(ex.edata[rows[j]]):#x}", "a write into freed jemalloc metadata or a "
                          "thread stopped inside malloc/free of this size class"], "slab-nfree", severity="warning",
                         chunk={"start": b, "size": int(self.slab_size[sz]), "state": "slab"})
        self.per_check["slab-nfree"] += max(0, len(mism) - MAX_PER_CHECK)
        cfree = np.cumsum(free)
        before = (cfree - free)[first] if total else np.zeros(0, np.int64)
        self.r_rank = np.where(free, cfree - 1 - before[slab_of], -1).astype(np.int32) if total else \
            np.zeros(0, np.int32)

    # --- the index -------------------------------------------------------------------------------
    def _list(self, key, **kw) -> int:
        lid = self._list_ids.get(key)
        if lid is None:
            lid = len(self.lists)
            self.lists.append(FreeList(**kw))
            self._list_ids[key] = lid
        return lid

    def _build_index(self):
        self._list_ids: Dict[tuple, int] = {}
        nr = len(self.r_start)
        # free slab regions: one list per (arena, size class), position = order of reuse (lowest first)
        pairs = self.r_apos.astype(np.int64) * 1024 + self.r_szind
        where_r = np.full(nr, -1, np.int32)
        fm = self.r_free
        if fm.any():
            up, inv = np.unique(pairs[fm], return_inverse=True)
            ids = np.empty(len(up), np.int32)
            for j, p in enumerate(up.tolist()):
                pos, sz = divmod(p, 1024)
                ids[j] = self._list(("slab", pos, sz), kind="slab", index=sz, arena=pos, lifo=False,
                                    name=f"free in a slab of bin {sz} ({self.size_of(sz):#x}), "
                                         f"{self.arenas[pos].name if pos >= 0 else 'no arena'}")
            where_r[fm] = ids[inv]
        ex = self.ex
        lr, fr = self.large_rows, self.free_rows
        usize = self.sz_tab[np.clip(self.ex_szind[lr], 0, len(self.sz_tab) - 1)].astype(U64)
        where_f = np.empty(len(fr), np.int32)
        for j, i in enumerate(fr.tolist()):
            st = "dirty" if self.e_state[i] == DIRTY else "muzzy"
            pos = int(self.ex_apos[i])
            where_f[j] = self._list(("extent", pos, st), kind=f"extent-{st}", index=int(self.e_state[i]), arena=pos,
                                    lifo=False, name=f"{st} extents of "
                                                     f"{self.arenas[pos].name if pos >= 0 else 'no arena'}")
        start = np.concatenate([self.r_start, ex.addr[lr], self.ex_base[fr]])
        size = np.concatenate([self.r_size, usize, self.ex_size[fr]])
        state = np.concatenate([np.where(self.r_free, FREE, ALLOCATED).astype(np.uint8),
                                np.full(len(lr), ALLOCATED, np.uint8), np.full(len(fr), FREE, np.uint8)])
        arena = np.concatenate([self.r_apos, self.ex_apos[lr], self.ex_apos[fr]]).astype(np.int16)
        where = np.concatenate([where_r, np.full(len(lr), -1, np.int32), where_f])
        recency = np.concatenate([self.r_rank, np.full(len(lr), -1, np.int32), np.zeros(len(fr), np.int32)])
        szind = np.concatenate([self.r_szind, self.ex_szind[lr], np.full(len(fr), -1, np.int64)])
        order = np.argsort(start, kind="stable")
        self.index = HeapIndex(start[order], size[order], state[order], arena[order], where[order],
                               recency[order], user_offset=0, usable_delta=0)
        self.i_szind = szind[order]
