"""glibc ptmalloc walker: every arena, heap, chunk and freelist, checked as glibc would.

Flow (one pass, bulk reads only):
1. roots (glibc_locate): main_arena, mp_, layout, TLS slots;
2. arenas: the main_arena.next ring, each malloc_state read once;
3. chunk walk of every heap segment in 8 MiB windows (a tight loop over the size fields of a
   memoryview; the first four words of every chunk are gathered with numpy);
4. freelists: each thread's tcache, fastbins, unsorted/small/large bins, read through the
   walked table (or the page cache for links that leave it), with glibc's own link checks;
5. resync: a walk stopped by a smashed size resumes at the next chunk a freelist vouches for;
6. classification and cross-checks: a chunk in two freelists is a double free; boundary tags
   (PREV_INUSE, prev_size), arena bits and sizes are checked vectorised;
7. mmapped chunks found by structure in anonymous mappings, counted against mp_.n_mmaps.
Nothing read from the heap is trusted: every loop is bounded by the bytes it walks.
"""
from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..checks import freelists
from ..heapindex import (ALLOCATED, CACHED, FREE, MMAPPED, TOP, Arena, FreeList, HeapIndex)
from ..memcache import CachedReader
from ..report import Finding
from ..snapshot import HeapSnapshot
from ..target import ReadError, Region, Target, region_index
from . import glibc_layout as L
from .chunktable import ChunkTable
from .glibc_locate import GlibcRoots, NotGlibc, choose_tls_slot, locate

WINDOW = 8 << 20            # bytes of heap parsed per bulk read
MAX_PER_CHECK = 25          # findings of one rule before they are summarised
MAX_ARENAS = 1024
RESYNC_SCAN = 4 << 20       # bytes searched for a chain of valid chunks after a corrupt one
MMAP_BLOCK = 1 << 20        # bytes read per bulk read while looking for mmapped chunks
MMAP_SCAN_MAX = 1 << 30     # anonymous memory scanned for them at the most (~0.5 s)

_BINNED = ("unsorted", "smallbin", "largebin")
_KIND_CODE = {"tcache": 0, "fastbin": 1, "unsorted": 2, "smallbin": 3, "largebin": 3}
_M64 = (1 << 64) - 1
_U12, _U16 = np.uint64(12), np.uint64(16)


def _bin_index_vec(cs: np.ndarray) -> np.ndarray:
    """bin_index() of malloc.c over an array of chunk sizes."""
    return np.where(cs < L.NSMALLBINS * 16, cs >> 4,
           np.where((cs >> 6) <= 48, 48 + (cs >> 6),
           np.where((cs >> 9) <= 20, 91 + (cs >> 9),
           np.where((cs >> 12) <= 10, 110 + (cs >> 12),
           np.where((cs >> 15) <= 4, 119 + (cs >> 15),
           np.where((cs >> 18) <= 2, 124 + (cs >> 18), 126))))))


def walk(target: Target, reader: Optional[CachedReader] = None) -> HeapSnapshot:
    reader = reader or CachedReader(target)
    return _Walker(target, reader, locate(target, reader)).run()


class _Seg:
    __slots__ = ("lo", "hi", "arena", "top", "fencepost_ok")

    def __init__(self, lo, hi, arena, top, fencepost_ok):
        self.lo, self.hi, self.arena, self.top, self.fencepost_ok = lo, hi, arena, top, fencepost_ok


class _Walker:
    def __init__(self, target: Target, reader: CachedReader, roots: GlibcRoots):
        self.t, self.r, self.roots, self.lay = target, reader, roots, roots.layout
        self.regions: List[Region] = target.regions()
        self.region_of = region_index(self.regions)
        self.threads = target.threads()
        self.findings: List[Finding] = []
        self.per_check: Counter = Counter()
        self.notes: List[str] = list(target.warnings()) + list(roots.notes)
        self.lists: List[FreeList] = []
        self.arenas: List[Arena] = []
        self.arena_raw: List[bytes] = []
        self.segs: List[_Seg] = []
        self.parts: List[tuple] = []      # (starts, w0, w1, w2, w3, arena) numpy arrays
        self.gaps: List[tuple] = []       # (start, end, seg) not parsed yet
        self.unwalked: List[tuple] = []

    # --- findings ----------------------------------------------------------------------------
    def find(self, kind, severity, chunk_addr, message, evidence=(), check="", state=None):
        self.per_check[check] += 1
        if self.per_check[check] > MAX_PER_CHECK:
            return
        chunk = None
        if chunk_addr is not None:
            i = self.tab.idx(chunk_addr) if hasattr(self, "tab") else -1
            size = self._csize(i) if i >= 0 else None
            chunk = {"start": chunk_addr, "size": size, "state": state}
        addr = chunk_addr + L.CHUNK_HDR_SZ if chunk_addr is not None else None
        self.findings.append(Finding(kind, severity, addr, message, list(evidence), chunk, None, check))

    def capped(self, check: str, idx) -> "np.ndarray":
        """The first MAX_PER_CHECK hits of a vectorised check; the rest are only counted."""
        idx = np.asarray(idx)
        if len(idx) > MAX_PER_CHECK:
            self.per_check[check] += len(idx) - MAX_PER_CHECK
        return idx[:MAX_PER_CHECK]

    def corrupt(self, chunk_addr, message, evidence=(), check="", severity="critical", state=None):
        self.find("metadata-corruption", severity, chunk_addr, message, evidence, check, state)

    # --- run ---------------------------------------------------------------------------------
    def run(self) -> HeapSnapshot:
        try:
            return self._run()
        finally:
            if getattr(self, "_executor", None) is not None:
                self._executor.shutdown(wait=True)

    def _run(self) -> HeapSnapshot:
        t0 = time.perf_counter()
        self._read_mp()
        self._read_arenas()
        self._check_initialised()
        for a in self.arenas:
            self._segments(a)
        for seg in self.segs:
            self._walk_seg(seg, seg.lo)
        self._build_table()
        t_walk = time.perf_counter()
        self._tls()
        self._lists()
        self._resync()
        self._validate_members()
        state, where, recency = self._classify()
        self._boundary_checks(state, where)
        mm = self._mmapped()
        index = self._index(state, where, recency, mm)
        t_end = time.perf_counter()
        for check, n in self.per_check.items():
            if n > MAX_PER_CHECK:
                self.findings.append(Finding("metadata-corruption", "warning", None,
                                             f"{n - MAX_PER_CHECK} more findings of check '{check}' not listed",
                                             [], None, None, check))
        meta = {"glibc_version": self.lay.version_str, "layout": self.lay.source,
                "found_by": dict(self.roots.how), "main_arena": self.roots.main_arena,
                "mp_": self.roots.mp, "libc": self.roots.libc.path,
                "walk_seconds": round(t_walk - t0, 4), "total_seconds": round(t_end - t0, 4),
                "bytes_walked": sum(s.hi - s.lo for s in self.segs),
                "mmapped_expected": self.n_mmaps}
        snap = HeapSnapshot("glibc", index, self.lists, self.arenas, self.findings, self.threads,
                            self.notes, meta, self.tcache_of, self.thread_arena, self.unwalked)
        return snap

    # --- roots -------------------------------------------------------------------------------
    def _read_mp(self):
        lay, mp = self.lay, self.roots.mp
        self.sbrk_base = self.n_mmaps = self.tcache_count = None
        if mp is None:
            return
        try:
            raw = self.r.read(mp, lay.mp_size)
        except ReadError:
            self.notes.append(f"mp_ at {mp:#x} is unreadable")
            return
        u = lambda off: int.from_bytes(raw[off:off + 8], "little")
        self.sbrk_base = u(lay.mp_sbrk_base)
        self.n_mmaps = int.from_bytes(raw[lay.mp_n_mmaps:lay.mp_n_mmaps + 4], "little", signed=True)
        self.tcache_count = u(lay.mp_tcache_count)
        self.mmapped_mem = u(lay.mp_mmapped_mem)

    def _read_arenas(self):
        lay, main = self.lay, self.roots.main_arena
        addr, seen = main, set()
        while len(self.arenas) < MAX_ARENAS:
            try:
                raw = self.r.read(addr, lay.ms_size)
            except ReadError:
                self.corrupt(None, f"arena list: arena at {addr:#x} is unreadable; later arenas are not walked",
                             [f"previous arena's next field = {addr:#x}"], "arena-list")
                break
            seen.add(addr)
            n = len(self.arenas)
            self.arenas.append(Arena(n, addr, "main_arena" if n == 0 else f"arena {n} ({addr:#x})",
                                     system_mem=_u64(raw, lay.ms_system_mem)))
            self.arena_raw.append(raw)
            nxt = _u64(raw, lay.ms_next)
            if nxt == main:
                break
            bad = None
            if nxt and not nxt & 0xF and self.r.try_u64(nxt) is None and self.r.try_u64(main) is not None \
                    and self.t.warnings():
                self.notes.append(f"the arena at {nxt:#x} (after {self.arenas[-1].name}) is not in the snapshot; "
                                  "it and later arenas are not walked")
                break
            if nxt in seen:
                bad = "loops back to an arena already seen"
            elif nxt & 0xF or not nxt:
                bad = "is not an arena address"
            else:
                from .glibc_locate import _looks_like_arena
                if not _looks_like_arena(self.r, nxt, lay):
                    bad = "does not point at an arena"
            if bad:
                self.corrupt(None, f"arena list corrupt: next of {self.arenas[-1].name} = {nxt:#x} {bad}",
                             ["glibc walks this ring in arena_get2/reused_arena"], "arena-list")
                break
            addr = nxt

    def _check_initialised(self):
        """glibc initialises main_arena's bins on the first malloc; all-zero bins mean glibc's
        malloc never ran (the program uses another allocator, or has not allocated yet)."""
        raw = self.arena_raw[0]
        lay = self.lay
        if _u64(raw, lay.ms_top) == 0 and not any(raw[lay.ms_bins:lay.ms_bins + 254 * 8]):
            others = [o.path for o in self.t.objfiles()
                      if any(k in os.path.basename(o.path) for k in ("jemalloc", "tcmalloc", "mimalloc", "hoard"))]
            why = (f"the program uses {', '.join(os.path.basename(p) for p in others)} instead, which heaplens "
                   "does not walk yet" if others else "it has not allocated yet, or uses another allocator")
            raise NotGlibc(f"glibc's malloc has never been used in this program (main_arena is uninitialised): {why}")

    def _segments(self, a: Arena):
        lay, raw = self.lay, self.arena_raw[a.number]
        top = _u64(raw, lay.ms_top)
        a.top = top
        a.last_remainder = _u64(raw, lay.ms_last_remainder)
        if top == 0:
            return                                 # malloc never used this arena
        if top & 0xF:
            self.corrupt(None, f"{a.name}: top pointer {top:#x} is misaligned", [], "top")
            return
        if a.number == 0:
            reg = self.region_of(top)
            if reg is None:
                self.corrupt(None, f"main_arena.top = {top:#x} is not in any mapping", [], "top")
                return
            lo = None
            if self.sbrk_base:
                lo = self.sbrk_base + ((16 - ((self.sbrk_base + 16) & 15)) & 15)
                if not reg.contains(lo):           # non-contiguous main arena: walk the first piece too
                    r0 = self.region_of(lo)
                    if r0 is not None:
                        self._add_seg(lo, r0.end, a, None, True)
                    lo = None
            if lo is None:
                lo = reg.start
            self._add_seg(lo, reg.end, a, top, False)
            return
        mask = ~(lay.heap_max_size - 1)
        h, chain, seen = top & mask, [], set()
        while h and len(chain) < 4096 and h not in seen:
            seen.add(h)
            try:
                ar_ptr, prev, size = self.r.words(h, 3)
            except ReadError:
                self.corrupt(None, f"{a.name}: heap_info at {h:#x} unreadable", [], "heap-info")
                break
            if ar_ptr != a.address or size > lay.heap_max_size or size < 4096 or size & 0xFFF:
                self.corrupt(None, f"{a.name}: heap_info at {h:#x} is corrupt (ar_ptr {ar_ptr:#x}, "
                             f"size {size:#x})", [f"heaps of an arena are chained by heap_info.prev"],
                             "heap-info")
                break
            chain.append((h, size))
            if h == a.address & mask:
                break
            h = prev & mask if prev else 0
        for h, size in reversed(chain):
            first = a.address + lay.ms_size if h == a.address & mask else h + lay.hi_sizeof
            lo = (first + 15) & ~15
            reg = self.region_of(lo)
            hi = h + size
            if reg is not None:
                hi = min(hi, reg.end)
            is_top_heap = h == top & mask
            self._add_seg(lo, hi, a, top if is_top_heap else None, not is_top_heap)

    def _add_seg(self, lo, hi, a, top, fencepost_ok):
        lo, hi = (lo + 15) & ~15, hi & ~15         # chunks are 16-aligned; so is every bound we walk
        if hi > lo:
            seg = _Seg(lo, hi, a.number, top, fencepost_ok)
            self.segs.append(seg)
            a.segments.append((lo, hi))

    # --- the chunk walk ----------------------------------------------------------------------
    def _walk_seg(self, seg: _Seg, lo: int) -> None:
        """Walk chunks from lo to seg.hi; records parts and, on a bad size, a gap."""
        hi, top = seg.hi, seg.top
        windows = _Windows(self.t, lo, hi, self._pool())
        pos = lo
        last = None
        try:
            while pos < hi:
                try:
                    wstart, buf = windows.get(pos)
                except ReadError:
                    self.unwalked.append((pos, hi))
                    self.notes.append(f"heap bytes {pos:#x}-{hi:#x} are not in the snapshot "
                                      f"(truncated core?); chunks there are not reported")
                    return
                q = memoryview(buf).cast("Q")
                nq = len(q)
                wend = min(hi, wstart + WINDOW)
                lim = (wend - wstart) >> 3
                total = (hi - wstart) >> 3
                topi = (top - wstart) >> 3 if top is not None and pos <= top < wend else -1
                if topi >= 0:
                    lim = topi                              # stop exactly at top (or report overshoot)
                offs: List[int] = []
                app = offs.append
                i = (pos - wstart) >> 3
                bad = False
                while i < lim:                              # the hot loop: keep it bare
                    s = q[i + 1] & -8
                    if s < 32 or s & 15:
                        bad = True
                        break
                    app(i)
                    i += s >> 3
                if offs and i > total:                      # the last chunk ran past the segment
                    i = offs.pop()
                    bad = True
                if offs:
                    idx = np.array(offs, dtype=np.int64)
                    arr = np.frombuffer(buf, dtype="<u8", count=nq)
                    starts = np.uint64(wstart) + idx.astype(np.uint64) * np.uint64(8)
                    self.parts.append((starts, arr[idx], arr[idx + 1], arr[idx + 2], arr[idx + 3],
                                       np.full(len(idx), seg.arena, dtype=np.int16)))
                    last = int(starts[-1])
                here = wstart + 8 * i
                if bad:
                    sw = q[i + 1]
                    if (sw & -8) == 16 and seg.fencepost_ok and i + 3 < nq and (q[i + 3] & -8) == 0:
                        return                              # fencepost pair closing a heap
                    self._bad_size(seg, here, sw, last)
                    return
                if topi >= 0:
                    if here == top:
                        self._top(seg, top)
                    else:
                        self._missed_top(seg, lo, here, last)
                    return
                pos = here
        finally:
            windows.close()
        if top is not None and top >= lo:
            self._missed_top(seg, lo, pos, last)

    def _missed_top(self, seg, lo, here, last):
        top = seg.top
        ev = [f"the walk reached {here:#x}"]
        if last is not None:
            ev.append(f"last chunk parsed: {last:#x}: its size field is the likely culprit")
        self.corrupt(last, f"{self.arenas[seg.arena].name}: the chunk walk from {lo:#x} went past the top "
                     f"chunk {top:#x} without landing on it", ev, "top")
        self.gaps.append((here, seg.hi, seg))

    def _pool(self):
        if not hasattr(self, "_executor"):
            self._executor = None
            if self.t.threadsafe_reader() is not None and not os.environ.get("HEAPLENS_NO_PREFETCH"):
                from concurrent.futures import ThreadPoolExecutor
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heaplens-read")
        return self._executor

    def _bad_size(self, seg, here, sw, last):
        s = sw & ~L.SIZE_BITS
        why = ("is smaller than the minimum chunk (0x20)" if s < L.MINSIZE else
               "is not a multiple of 16" if s & 15 else
               f"runs past the end of the heap segment ({seg.hi:#x})")
        ev = [f"size field at {here + 8:#x} = {sw:#x}"]
        if last is not None:
            ev.append(f"previous chunk {last:#x} ends here: an overflow out of it is the likely cause")
        ev.append("glibc aborts with 'free(): invalid size' or 'malloc(): invalid size' when it meets it")
        self.corrupt(here, f"chunk {here:#x} has a corrupt size field {sw:#x}: it {why}", ev, "chunk-size",
                     state="unknown")
        self.gaps.append((here, seg.hi, seg))

    def _top(self, seg, top):
        lay, a = self.lay, self.arenas[seg.arena]
        try:
            sw = self.r.u64(top + 8)
        except ReadError:
            return
        s = sw & ~L.SIZE_BITS
        a.top_size = s
        self.parts.append((np.array([top], dtype=np.uint64), np.array([0], dtype=np.uint64),
                           np.array([sw], dtype=np.uint64), np.zeros(1, np.uint64), np.zeros(1, np.uint64),
                           np.array([seg.arena], dtype=np.int16)))
        self._top_addrs = getattr(self, "_top_addrs", set()) | {top}
        end = top + s
        expect = None
        if seg.arena == 0 and self.sbrk_base and a.system_mem and seg.lo - self.sbrk_base < 16:
            expect = self.sbrk_base + a.system_mem
        elif seg.arena != 0:
            expect = seg.hi
        ev = [f"top chunk {top:#x} size field {sw:#x}"]
        if s < L.MINSIZE or s & 15:
            self.corrupt(top, f"{a.name}: top chunk size {sw:#x} is invalid", ev, "top")
        elif s > a.system_mem > 0 or (expect is not None and end != expect) or end > seg.hi:
            ev.append(f"the top chunk should end at {expect:#x}" if expect else f"segment ends at {seg.hi:#x}")
            ev.append("glibc aborts with 'malloc(): corrupted top size' when it uses it")
            self.corrupt(top, f"{a.name}: corrupted top size {s:#x} (ends at {end:#x})", ev, "top")

    def _build_table(self):
        self.tab = ChunkTable(self.parts)
        self.parts = [(self.tab.S, self.tab.W0, self.tab.W1, self.tab.W2, self.tab.W3, self.tab.A)]
        T = self.tab
        self.S, self.S0, self.S1, self.S2, self.S3, self.SA = T.S, T.W0, T.W1, T.W2, T.W3, T.A
        self.top_addrs = getattr(self, "_top_addrs", set())

    def _csize(self, i: int) -> int:
        return int(self.S1[i]) & ~L.SIZE_BITS

    def _where(self, addr: int) -> str:
        """Where an address points, for evidence: 'in /path/prog', 'in [stack]', 'unmapped'."""
        a = self._arena_of_addr(addr)
        if a is not None:
            return f"inside {self.arenas[a].name}'s heap but not a chunk start"
        reg = self.region_of(addr & _M64)
        if reg is None:
            return "not mapped"
        return f"in {reg.path or 'an anonymous mapping'} ({reg.perms})"

    def _arena_of_addr(self, addr: int) -> Optional[int]:
        for s in self.segs:
            if s.lo <= addr < s.hi:
                return s.arena
        return None

    # --- thread-local roots ------------------------------------------------------------------
    def _tls(self):
        self.tcache_of: Dict[int, int] = {}
        self.thread_arena: Dict[int, int] = {}
        lay, libc = self.lay, self.roots.libc
        if not any(t.fs_base for t in self.threads):
            self.notes.append("the debugger gives no thread pointers (fs_base): thread caches (tcache) "
                              "cannot be located, so cached chunks show as allocated")
            return

        def is_tcache(v):
            i = self.tab.idx(v - L.CHUNK_HDR_SZ)
            return i >= 0 and self._csize(i) == lay.tcache_chunk_size

        tp, hits = choose_tls_slot(self.t, self.r, libc, self.threads, is_tcache)
        self.roots.tcache_tpoff = tp
        if tp is None:
            self.notes.append("no thread's tcache could be located (libc's TLS slots not found)")
            return
        self.roots.how["tcache"] = f"TLS slot fs_base{tp:+#x} (libc's TPOFF64 GOT entry, validated on {hits} thread(s))"
        for t in self.threads:
            if t.fs_base:
                v = self.r.try_u64(t.fs_base + tp)
                if v and is_tcache(v):
                    self.tcache_of[t.num] = v
                elif v:
                    self.corrupt(None, f"thread {t.num}'s tcache pointer (fs_base{tp:+#x}) is {v:#x}, which is not a "
                                 f"tcache_perthread_struct chunk of size {lay.tcache_chunk_size:#x}",
                                 [f"thread {t.num} (LWP {t.tid}); its cached chunks cannot be listed"], "tcache-ptr",
                                 severity="warning")
        arena_addrs = {a.address: a.number for a in self.arenas}
        ta, _ = choose_tls_slot(self.t, self.r, libc, self.threads, lambda v: v in arena_addrs)
        if ta is not None:
            self.roots.thread_arena_tpoff = ta
            for t in self.threads:
                v = self.r.try_u64(t.fs_base + ta) if t.fs_base else None
                if v in arena_addrs:
                    self.thread_arena[t.num] = arena_addrs[v]
                    self.arenas[arena_addrs[v]].threads.append(t.num)

    # --- freelists -----------------------------------------------------------------------------
    def _new_list(self, **kw) -> int:
        self.lists.append(FreeList(**kw))
        return len(self.lists) - 1

    # How each list kind links chunks: chunk address -> next chunk address, given the raw first
    # word (fd / tcache next). Safe-linking stores next as (address of the field >> 12) ^ ptr.
    def _link(self, kind: str):
        sl = self.lay.safe_linking
        if kind == "tcache":          # the link holds the next *user* pointer (chunk + 16)
            if sl:
                return (lambda c, raw: ((((c + 16) >> 12) ^ raw) - 16) & _M64,
                        lambda S, W: ((S + _U16) >> _U12 ^ W) - _U16)
            return (lambda c, raw: (raw - 16) & _M64, lambda S, W: W - _U16)
        if kind == "fastbin" and sl:
            return (lambda c, raw: ((c + 16) >> 12) ^ raw, lambda S, W: (S + _U16) >> _U12 ^ W)
        return (lambda c, raw: raw, lambda S, W: W)

    def _follow(self, lid: int, first: int, kind: str, end: int, bound: int):
        """Follow one list from chunk address `first` until the chunk address `end`.
        Returns (chunk addresses in order, outcome, detail); outcome is 'ok', 'cycle' (detail:
        the repeated chunk), 'bad' (detail: the offending link target), or 'bound'."""
        scalar, vector = self._link(kind)
        nxt = self.tab.next_index(kind, vector)
        S, W2 = self.S, self.S2
        order: List[int] = []
        seen = set()
        c = first
        while True:
            if c == end:
                return order, "ok", None
            if c & 15 or not c:
                return order, "bad", c
            i = self.tab.idx(c)
            if i >= 0:
                app = order.append
                last = i
                while i >= 0 and len(order) < bound:        # the hot path: walked chunks only
                    if i in seen:
                        return order, "cycle", int(S[i])
                    seen.add(i)
                    app(i)
                    last = i
                    i = nxt[last]
                if i >= 0:
                    return order, "bound", None
                c = scalar(int(S[last]), int(W2[last]))
                continue
            if c in seen or len(order) >= bound:             # off the walked table: read it
                return order, ("cycle" if c in seen else "bound"), c
            if self._arena_of_addr(c) is None:               # outside every heap: a smashed link
                return order, "bad", c
            try:
                raw = self.r.u64(c + 16)
            except ReadError:
                return order, "bad", c
            seen.add(c)
            order.append(~len(self._off))
            self._off.append(c)
            c = scalar(c, raw)

    def _addrs(self, order: List[int]) -> np.ndarray:
        o = np.array(order, dtype=np.int64)
        out = self.S[np.maximum(o, 0)] if self.tab.n else np.zeros(len(o), dtype=np.uint64)
        neg = o < 0
        if neg.any():
            out = out.copy()
            out[neg] = np.array([self._off[~k] for k in o[neg]], dtype=np.uint64)
        return out

    def _record(self, lid: int, addrs: np.ndarray):
        self.m_addr.append(addrs)
        self.m_lid.append(np.full(len(addrs), lid, dtype=np.int32))
        self.m_pos.append(np.arange(len(addrs), dtype=np.int32))

    def _lists(self):
        self._off: List[int] = []
        self.m_addr, self.m_lid, self.m_pos = [], [], []
        self._tcaches()
        for a, raw in zip(self.arenas, self.arena_raw):
            self._fastbins(a, raw)
            self._bins(a, raw)

    def _tcaches(self):
        lay = self.lay
        cs = lay.tcache_count_size
        key_sum = Counter()
        cached = []
        for t in self.threads:
            tc = self.tcache_of.get(t.num)
            if not tc:
                continue
            try:
                raw = self.r.read(tc, lay.tcache_struct_size)
            except ReadError:
                continue
            counts = np.frombuffer(raw, dtype="<u2" if cs == 2 else "u1", count=L.TCACHE_MAX_BINS)
            heads = np.frombuffer(raw, dtype="<u8", count=L.TCACHE_MAX_BINS, offset=L.TCACHE_MAX_BINS * cs)
            for b in np.nonzero((counts != 0) | (heads != 0))[0]:
                b, head, count = int(b), int(heads[b]), int(counts[b])
                csize = L.MINSIZE + b * L.MALLOC_ALIGNMENT
                name = f"tcache[{b}] ({csize:#x}) of thread {t.num}"
                lid = self._new_list(kind="tcache", index=b, name=name,
                                     arena=self.thread_arena.get(t.num), thread=t.num, tid=t.tid)
                bound = max(count, self.tcache_count or 7, 7) * 2 + 16
                order, outcome, detail = self._follow(lid, (head - 16) & _M64, "tcache", _M64 - 15, bound)
                addrs = self._addrs(order)
                self._record(lid, addrs)
                last = int(addrs[-1]) if len(addrs) else None
                if outcome == "bad":
                    self.corrupt(last, f"{name}: link to invalid address {(detail + 16) & _M64:#x} after "
                                 f"{len(addrs)} entries", [f"{name}, position {len(addrs)}",
                                 f"{(detail + 16) & _M64:#x} is {self._where(detail + 16)}",
                                 "glibc aborts with 'malloc(): unaligned tcache chunk detected'"],
                                 "tcache-link", state="cached")
                elif outcome == "cycle":
                    self._record(lid, np.array([detail], dtype=np.uint64))   # the repeat: a duplicate
                elif outcome == "bound":
                    self.corrupt(None, f"{name}: chain longer than {bound} entries (count {count})", [],
                                 "tcache-count")
                elif len(addrs) != count:
                    self.corrupt(None, f"{name}: counts[] says {count} entries but the chain has {len(addrs)}",
                                 ["glibc trusts counts[]: it would hand out a wild pointer or lose entries"],
                                 "tcache-count")
                cached.append(addrs)
        if not cached or not lay.random_tcache_key:
            return
        addrs = np.concatenate(cached)
        idx = self.tab.lookup(addrs)
        keys = np.where(idx >= 0, self.S3[np.maximum(idx, 0)], np.uint64(0)) if self.tab.n else addrs * 0
        key = self.roots.tcache_key
        if key is None:
            vals, cnt = np.unique(keys[idx >= 0], return_counts=True)
            if len(vals) == 0 or (cnt.max() < 2 and len(vals) > 1):
                return
            key = int(vals[np.argmax(cnt)])
        for j in self.capped("tcache-key", np.nonzero((idx >= 0) & (keys != np.uint64(key)))[0]):
            chunk, k = int(addrs[j]), int(keys[j])
            self.corrupt(chunk, f"tcache entry {chunk + 16:#x} has its key overwritten ({k:#x})",
                         [f"every tcache entry's key field ({chunk + 24:#x}) holds tcache_key {key:#x}",
                          "a write through a pointer after free() is the likely cause",
                          "glibc's tcache double-free check relies on this key"],
                         "tcache-key", severity="warning", state="cached")

    def _fastbins(self, a: Arena, raw: bytes):
        heads = np.frombuffer(raw, dtype="<u8", count=L.NFASTBINS, offset=self.lay.ms_fastbins)
        for b in np.nonzero(heads)[0]:
            b = int(b)
            csize = (b + 2) << 4
            name = f"fastbin[{b}] ({csize:#x}) of {a.name}"
            lid = self._new_list(kind="fastbin", index=b, name=name, arena=a.number)
            order, outcome, detail = self._follow(lid, int(heads[b]), "fastbin", 0, self.tab.n + 1)
            addrs = self._addrs(order)
            self._record(lid, addrs)
            if outcome == "bad":
                last = int(addrs[-1]) if len(addrs) else None
                self.corrupt(last, f"{name}: link to invalid address {detail:#x} after {len(addrs)} entries",
                             [f"{name}, position {len(addrs)}", f"{detail:#x} is {self._where(detail)}",
                              "glibc aborts with 'malloc(): unaligned fastbin chunk detected'"],
                             "fastbin-link", state="free")
            elif outcome == "cycle":
                self._record(lid, np.array([detail], dtype=np.uint64))

    def _bins(self, a: Arena, raw: bytes):
        lay = self.lay
        bins = np.frombuffer(raw, dtype="<u8", count=254, offset=lay.ms_bins)
        base = a.address + lay.ms_bins - 16
        heads = base + np.arange(1, L.NBINS, dtype=np.uint64) * np.uint64(16) - np.uint64(16)
        fds, bks = bins[0::2], bins[1::2]
        for k in np.nonzero((fds != heads) | (bks != heads))[0]:
            i = int(k) + 1
            b, fd0, bk0 = int(heads[k]), int(fds[k]), int(bks[k])
            kind = "unsorted" if i == 1 else "smallbin" if i < L.NSMALLBINS else "largebin"
            csize = i << 4 if kind == "smallbin" else None
            nm = L.bin_name(i) + (f" ({csize:#x})" if csize else "") + f" of {a.name}"
            lid = self._new_list(kind=kind, index=i, name=nm, arena=a.number)
            if (fd0 == b) != (bk0 == b):
                self.corrupt(None, f"{nm}: head fd {fd0:#x} / bk {bk0:#x} disagree about emptiness",
                             ["glibc aborts with 'corrupted double-linked list'"], "bin-link")
            order, outcome, detail = self._follow(lid, fd0, "bin", b, self.tab.n + 1)
            addrs = self._addrs(order)
            self._record(lid, addrs)
            n = len(addrs)
            last = int(addrs[-1]) if n else None
            if outcome == "bad":
                self.corrupt(last, f"{nm}: fd of {'chunk %#x' % last if n else 'the bin head'} is {detail:#x}, "
                             "not a chunk", [f"{nm}, position {n}", f"{detail:#x} is {self._where(detail)}",
                                             "glibc aborts with 'malloc(): smallbin "
                             "double linked list corrupted' or 'unsorted double linked list corrupted'"],
                             "bin-link", state="free")
            elif outcome == "cycle":
                self._record(lid, np.array([detail], dtype=np.uint64))
                self.corrupt(detail, f"{nm}: the list loops back to {detail:#x} without returning to the bin head",
                             [f"{nm}, position {n}"], "bin-link", state="free")
            elif outcome == "ok" and n and bk0 != last:
                self.corrupt(None, f"{nm}: bin's bk {bk0:#x} is not its last chunk {last:#x}",
                             ["glibc takes chunks from the bk end"], "bin-link")
            if n:
                self._check_backlinks(nm, b, addrs, kind)

    def _check_backlinks(self, nm, b, addrs, kind):
        """Every chunk's bk must point at the one before it (the head for the first)."""
        idx = self.tab.lookup(addrs)
        ok = idx >= 0
        bks = self.S3[np.maximum(idx, 0)] if self.tab.n else np.zeros(len(addrs), np.uint64)
        prev = np.concatenate([np.array([b], dtype=np.uint64), addrs[:-1]])
        for j in self.capped("bin-link", np.nonzero(ok & (bks != prev))[0]):
            p = int(addrs[j])
            self.corrupt(p, f"{nm}: corrupted double-linked list: chunk {p:#x} has bk {int(bks[j]):#x}, "
                         f"expected {int(prev[j]):#x}", [f"{nm}, position {int(j)}", "fd->bk must point back "
                         "(glibc: 'corrupted double-linked list')"], "bin-link", state="free")
        if kind == "largebin":
            self._check_nextsize(nm, addrs)
        if kind == "largebin" and ok.all() and len(addrs) > 1:
            sz = self.S1[idx] & np.uint64(~L.SIZE_BITS & _M64)
            for j in self.capped("bin-order", np.nonzero(sz[1:] > sz[:-1])[0]):
                p = int(addrs[j + 1])
                self.corrupt(p, f"{nm}: chunk {p:#x} (size {int(sz[j + 1]):#x}) breaks the bin's descending "
                             "size order", [f"{nm}, position {int(j) + 1}", "glibc keeps large bins sorted"],
                             "bin-order", severity="warning", state="free")

    def _check_nextsize(self, nm, addrs):
        """The size-skip list of a large bin: the first chunk of each size links to the next
        size's first (fd_nextsize) and back (bk_nextsize); glibc: 'largebin double linked list
        corrupted (nextsize)'."""
        firsts = []
        for p in addrs.tolist():
            try:
                fdn, bkn = self.r.words(p + 32, 2)
            except ReadError:
                return
            if fdn or bkn:
                firsts.append((p, fdn, bkn))
        heads = {p for p, _, _ in firsts}
        for p, fdn, bkn in firsts[:MAX_PER_CHECK]:
            back = self.r.try_u64(fdn + 40) if fdn in heads else None
            if fdn not in heads or back != p:
                self.corrupt(p, f"{nm}: chunk {p:#x}'s fd_nextsize {fdn:#x} " + (
                    "is not the first chunk of another size in this bin" if fdn not in heads else
                    f"points back (bk_nextsize) to {back:#x}, not to it"),
                    ["glibc: 'malloc(): largebin double linked list corrupted (nextsize)'"], "bin-nextsize",
                    state="free")

    # --- resync after a smashed size -------------------------------------------------------------
    def _resync(self):
        """Recover the chunks after a corrupt size field. From the first trusted chunk beyond it
        (a freelist entry or top), find the first position after the bad header whose chain of
        valid sizes lands exactly on that anchor: the chunks are walked from there, and the
        corrupt chunk gets the size it must have had."""
        rounds = 0
        while self.gaps and rounds < 1000:
            rounds += 1
            gaps, self.gaps = self.gaps, []
            anchors = sorted(set(self._off) | self.top_addrs)
            grew = False
            for lo, hi, seg in gaps:
                cand = [c for c in anchors if lo < c < hi and self.tab.idx(c) < 0]
                if seg.top is not None and lo < seg.top < hi and self.tab.idx(seg.top) < 0:
                    cand.append(seg.top)
                anchor = None
                for c in sorted(set(cand)):
                    try:
                        s = self.r.u64(c + 8) & ~L.SIZE_BITS
                    except ReadError:
                        continue
                    if c == seg.top or (s >= L.MINSIZE and not s & 15 and c + s <= hi):
                        anchor = c
                        break
                if anchor is None:
                    self.unwalked.append((lo, hi))
                    self.notes.append(f"heap bytes {lo:#x}-{hi:#x} ({hi - lo} bytes) could not be walked "
                                      "after a corrupt chunk; no freelist entry there to resume from")
                    continue
                resume = self._chain_to(lo, anchor) or anchor
                before = sum(len(p[0]) for p in self.parts)
                if resume != anchor:
                    self._infer_chunk(lo, resume, seg)
                else:
                    self.unwalked.append((lo, anchor))
                    self.notes.append(f"chunk walk resumed at {anchor:#x} (a chunk a freelist or top vouches "
                                      f"for); {anchor - lo} bytes from {lo:#x} could not be parsed")
                if resume == seg.top:
                    self._top(seg, resume)
                else:
                    self._walk_seg(seg, resume)
                grew |= sum(len(p[0]) for p in self.parts) > before
            if grew:
                self._build_table()

    def _chain_to(self, bad: int, anchor: int) -> Optional[int]:
        """The lowest 16-aligned position p (bad+32 <= p <= anchor) whose chain of plausible
        chunk sizes reaches `anchor` exactly, or None. Bounded to RESYNC_SCAN bytes."""
        if anchor - bad > RESYNC_SCAN or anchor - bad < L.MINSIZE:
            return None
        try:
            raw = self.r.read(bad, anchor - bad)
        except ReadError:
            return None
        w = np.frombuffer(raw, dtype="<u8")
        K = (anchor - bad) >> 4
        sz = (w[1::2] & np.uint64(~L.SIZE_BITS & _M64)).astype(np.int64)[:K]
        k = np.arange(K, dtype=np.int64)
        nxt = np.where((sz >= L.MINSIZE) & (sz & 15 == 0), k + (sz >> 4), K + 1)
        nxt = nxt.tolist()
        reach = bytearray(K + 2)
        reach[K] = 1
        for j in range(K - 1, 1, -1):                  # sizes only grow addresses: one backward pass
            n = nxt[j]
            if n <= K and reach[n]:
                reach[j] = 1
        for j in range(2, K + 1):
            if reach[j]:
                return bad + 16 * j
        return None

    def _infer_chunk(self, lo: int, resume: int, seg: _Seg):
        """The corrupt chunk spans [lo, resume): enter it with that size so lookups work."""
        size = resume - lo
        flags = L.PREV_INUSE | (L.NON_MAIN_ARENA if seg.arena else 0)
        try:
            w0, _, w2, w3 = self.r.words(lo, 4)
        except ReadError:
            w0 = w2 = w3 = 0
        self.parts.append((np.array([lo], np.uint64), np.array([w0], np.uint64), np.array([size | flags], np.uint64),
                           np.array([w2], np.uint64), np.array([w3], np.uint64), np.array([seg.arena], np.int16)))
        for f in self.findings:
            if f.chunk and f.chunk.get("start") == lo and f.check == "chunk-size":
                f.evidence.append(f"the next valid chunk starts at {resume:#x}, so this chunk's size was "
                                  f"probably {size:#x}; the walk resumed there")
                f.chunk["size"] = size

    def _validate_members(self):
        """Each freelist entry must be a walked chunk of the right size class and arena."""
        if self.m_addr:
            M = np.concatenate(self.m_addr)
            lid = np.concatenate(self.m_lid)
            pos = np.concatenate(self.m_pos)
        else:
            M, lid, pos = np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32)
        idx = self.tab.lookup(M)
        for j in self.capped("freelist-entry", np.nonzero(idx < 0)[0]):
            self._off_table_entry(int(M[j]), self.lists[int(lid[j])], int(pos[j]))
        good = idx >= 0
        tops = self.tab.lookup(np.array(sorted(self.top_addrs), dtype=np.uint64))
        for j in np.nonzero(good & np.isin(idx, tops))[0]:
            fl = self.lists[int(lid[j])]
            self.corrupt(int(M[j]), f"the top chunk {int(M[j]):#x} is in {fl.name}", [fl.name], "freelist-entry")
        kinds = np.array([_KIND_CODE[fl.kind] for fl in self.lists] or [0], dtype=np.int8)
        lindex = np.array([fl.index for fl in self.lists] or [0], dtype=np.int64)
        larena = np.array([fl.arena if fl.arena is not None else -1 for fl in self.lists] or [0], dtype=np.int64)
        gi, gl = idx[good], lid[good]
        cs = (self.S1[gi] & np.uint64(~L.SIZE_BITS & _M64)).astype(np.int64)
        k = kinds[gl]
        exp = np.where(k == 0, (cs - L.MINSIZE + 15) // 16,
                       np.where(k == 1, (cs >> 4) - 2, np.where(k == 2, 1, _bin_index_vec(cs))))
        ok_unsorted = (cs >= L.MINSIZE)
        wrong = np.where(k == 2, ~ok_unsorted, exp != lindex[gl])
        for j in self.capped("bin-size", np.nonzero(wrong)[0]):
            fl, c, s = self.lists[int(gl[j])], int(self.S[gi[j]]), int(cs[j])
            want = {"tcache": f"tcache[{L.tcache_index(s)}]", "fastbin": f"fastbin[{L.fastbin_index(s)}]"
                    if s <= 0xB0 else "no fastbin"}.get(fl.kind, L.bin_name(L.bin_index(s)))
            self.corrupt(c, f"chunk {c:#x} in {fl.name} has size {s:#x}, which belongs in {want}",
                         [f"{fl.name}, position {int(pos[good][j])}", "a size field was overwritten after free, "
                          "or the link into this list was" + (" (glibc: 'malloc(): memory corruption (fast)')"
                                                              if fl.kind == "fastbin" else "")],
                         "bin-size", state="cached" if fl.kind == "tcache" else "free")
        wrong_arena = (k != 0) & (larena[gl] >= 0) & (self.SA[gi].astype(np.int64) != larena[gl])
        for j in self.capped("bin-arena", np.nonzero(wrong_arena)[0]):
            fl, c = self.lists[int(gl[j])], int(self.S[gi[j]])
            self.corrupt(c, f"chunk {c:#x} of {self.arenas[int(self.SA[gi[j]])].name} is in {fl.name}",
                         [f"{fl.name}, position {int(pos[good][j])}", "a bin holds only its own arena's chunks"],
                         "bin-arena", state="free")
        self.M_idx, self.M_lid, self.M_pos = gi, gl, pos[good]

    def _off_table_entry(self, chunk: int, fl: FreeList, pos: int):
        where = f"{fl.name}, position {pos}"
        j = self.tab.containing(chunk, self._csize)
        if j >= 0:
            host = int(self.S[j])
            self.corrupt(host, f"freelist entry {chunk:#x} lies inside chunk {host:#x} (size {self._csize(j):#x}):"
                         " a size field or a link is corrupt", [where, "overlapping chunks: the host's size was "
                         "enlarged by an overflow, or the link was overwritten"], "overlap")
        elif any(a <= chunk < b for a, b in self.unwalked):
            pass                                  # in bytes we could not walk: already reported
        elif self._arena_of_addr(chunk) is None:
            self.corrupt(None, f"{fl.name}: entry {chunk + 16:#x} is outside every heap",
                         [where, "a freelist link was overwritten (use-after-free write or overflow)"],
                         "freelist-entry")
        else:
            self.corrupt(None, f"{fl.name}: entry {chunk + 16:#x} is not a chunk boundary", [where],
                         "freelist-entry")

    # --- classification and cross-checks ------------------------------------------------------------
    def _classify(self):
        n = self.tab.n
        state = np.zeros(n, dtype=np.uint8)
        where = np.full(n, -1, dtype=np.int32)
        recency = np.full(n, -1, dtype=np.int32)
        tops = self.tab.lookup(np.array(sorted(self.top_addrs), dtype=np.uint64))
        state[tops[tops >= 0]] = TOP
        is_tc = np.array([fl.kind == "tcache" for fl in self.lists] or [False], dtype=bool)
        uniq, lid, pos, dups = freelists.resolve(self.M_idx, self.M_lid, self.M_pos, is_tc)
        state[uniq] = np.where(is_tc[lid], CACHED, FREE)
        where[uniq] = lid
        recency[uniq] = pos
        for u, ms in dups:
            self._double_free(int(self.S[u]), ms)
        return state, where, recency

    def _double_free(self, chunk, ms):
        descs = []
        for lid, pos in ms:
            fl = self.lists[lid]
            lwp = f" (LWP {fl.tid})" if fl.thread is not None else ""
            descs.append(f"in {fl.name}{lwp} at position {pos}" + (" (freed most recently)" if pos == 0 else ""))
        names = [self.lists[l].name for l, _ in ms]
        if len(set(names)) == 1:
            msg = f"{chunk + 16:#x} was freed twice: it is in {names[0]} twice (the list loops)"
        else:
            msg = f"{chunk + 16:#x} was freed twice: it is in {' and '.join(dict.fromkeys(names))}"
            owners = sorted({self.lists[l].thread for l, _ in ms if self.lists[l].thread is not None})
            if len(owners) > 1:      # a thread's tcache only takes what that thread frees
                msg += f" (freed by thread {' and by thread '.join(map(str, owners))})"
        ev = descs + ["the next two mallocs of this size will both return it"]
        self.find("double-free", "critical", chunk, msg, ev, "freelist-duplicate",
                  state="cached" if any(self.lists[l].kind == "tcache" for l, _ in ms) else "free")

    def _boundary_checks(self, state, where):
        n = len(self.S)
        if n < 2:
            return
        S, S0, S1, SA = self.S, self.S0, self.S1, self.SA
        size = S1 & np.uint64(~L.SIZE_BITS & 0xFFFFFFFFFFFFFFFF)
        kinds = np.array([fl.kind in _BINNED for fl in self.lists] + [False], dtype=bool)
        binned = kinds[where]                                  # where == -1 -> last (False)
        contig = (S[:-1] + size[:-1]) == S[1:]                  # chunk j+1 physically follows j
        nxt_pinuse = (S1[1:] & np.uint64(L.PREV_INUSE)) != 0
        # a binned free chunk: next chunk must have PREV_INUSE clear and prev_size == size
        bad1 = np.nonzero(contig & binned[:-1] & (nxt_pinuse | (S0[1:] != size[:-1])))[0]
        for j in self.capped("prev-size", bad1):
            j = int(j)
            c, nx = int(S[j]), int(S[j + 1])
            self.corrupt(nx, f"chunk {nx:#x} disagrees with the free chunk {c:#x} before it "
                         f"(prev_size {int(S0[j + 1]):#x}, PREV_INUSE {int(S1[j + 1]) & 1}; expected "
                         f"{int(size[j]):#x}, 0)", [f"{c:#x} is in {self.lists[int(where[j])].name}",
                                                    "glibc: 'corrupted size vs. prev_size'"],
                         "prev-size", state=_sname(state[j + 1]))
        # PREV_INUSE clear: the previous chunk must be binned-free with the same size
        bad2 = np.nonzero(contig & ~nxt_pinuse & ~binned[:-1])[0]
        for j in self.capped("prev-inuse", bad2):
            j = int(j)
            c, nx = int(S[j]), int(S[j + 1])
            self.corrupt(nx, f"chunk {nx:#x} has PREV_INUSE clear but the chunk before it ({c:#x}) is "
                         f"{_sname(state[j])}, not in a bin", ["free() of either would consolidate with "
                         "a chunk in use (glibc: 'double free or corruption (!prev)' or worse)"],
                         "prev-inuse", state=_sname(state[j + 1]))
        # two adjacent binned chunks are always coalesced by glibc
        bad3 = np.nonzero(contig & binned[:-1] & binned[1:])[0]
        for j in self.capped("coalesce", bad3):
            j = int(j)
            self.corrupt(int(S[j + 1]), f"free chunks {int(S[j]):#x} and {int(S[j + 1]):#x} are adjacent "
                         "but not coalesced", ["glibc merges neighbouring free chunks"], "coalesce",
                         severity="warning", state="free")
        # binned chunks: glibc stores size | PREV_INUSE, so both other bits are clear
        for j in self.capped("binned-bits", np.nonzero(binned & ((S1 & np.uint64(L.IS_MMAPPED | L.NON_MAIN_ARENA)) != 0))[0]):
            j = int(j)
            self.corrupt(int(S[j]), f"free chunk {int(S[j]):#x} in {self.lists[int(where[j])].name} has flag bits set "
                         f"in its size field {int(S1[j]):#x}", ["glibc writes size | PREV_INUSE into binned chunks: the "
                         "size field was overwritten after free"], "binned-bits", state="free")
        # chunks in use (allocated, tcache, fastbin): IS_MMAPPED clear, NON_MAIN_ARENA matches the arena
        inuse = ~binned & (state != TOP)
        mm_bit = (S1 & np.uint64(L.IS_MMAPPED)) != 0
        for j in self.capped("mmapped-bit", np.nonzero(inuse & mm_bit)[0]):
            j = int(j)
            self.corrupt(int(S[j]), f"chunk {int(S[j]):#x} inside a heap has the IS_MMAPPED bit set "
                         f"(size field {int(S1[j]):#x})", ["free() would munmap it: 'munmap_chunk(): invalid pointer'"],
                         "mmapped-bit", state=_sname(state[j]))
        nm_bit = (S1 & np.uint64(L.NON_MAIN_ARENA)) != 0
        for j in self.capped("arena-bit", np.nonzero(inuse & (nm_bit != (SA != 0)))[0]):
            j = int(j)
            a = self.arenas[int(SA[j])]
            self.corrupt(int(S[j]), f"chunk {int(S[j]):#x} in {a.name} has NON_MAIN_ARENA "
                         f"{'set' if nm_bit[j] else 'clear'} (size field {int(S1[j]):#x})",
                         ["free() would hand it to the wrong arena"], "arena-bit", state=_sname(state[j]))

    # --- mmapped chunks ------------------------------------------------------------------------
    def _mmapped(self) -> List[Tuple[int, int]]:
        """mmapped chunks, found by structure: glibc keeps no list of them, only a count
        (mp_.n_mmaps). Each starts a page with prev_size 0 and a page-multiple size with
        IS_MMAPPED set. Anonymous writable mappings outside the heaps are scanned at every page
        start (the kernel merges neighbouring mappings, so chunks need not start a mapping),
        in bulk blocks, skipping over chunks found; the scan stops when the count is reached."""
        mask = ~(self.lay.heap_max_size - 1)
        reserved = [(a.address & mask, (a.address & mask) + self.lay.heap_max_size)
                    for a in self.arenas[1:]] + [(s.lo, s.hi) for s in self.segs]
        want = self.n_mmaps if self.n_mmaps is not None and self.n_mmaps >= 0 else None
        out: List[Tuple[int, int]] = []
        scanned = 0
        for reg in self.regions:
            if want is not None and len(out) >= want:
                break
            if not (reg.readable and reg.writable and reg.anonymous and reg.in_snapshot) or reg.path == "[heap]":
                continue
            if any(lo < reg.end and reg.start < hi for lo, hi in reserved):
                continue
            a = reg.start
            while a < reg.end and scanned < MMAP_SCAN_MAX and (want is None or len(out) < want):
                end = min(reg.end, a + MMAP_BLOCK)
                scanned += end - a
                try:
                    buf = self.t.read(a, end - a)
                except ReadError:
                    a = end
                    continue
                w = np.frombuffer(buf, dtype="<u8")
                prev, sw = w[0::512], w[1::512]
                size = sw & np.uint64(~L.SIZE_BITS & _M64)
                ok = ((sw & np.uint64(L.IS_MMAPPED)) != 0) & ((sw & np.uint64(L.NON_MAIN_ARENA)) == 0) \
                    & (prev == 0) & (size >= np.uint64(4096)) & ((size & np.uint64(0xFFF)) == 0)
                nxt = a
                for k in np.nonzero(ok)[0]:
                    p, s = a + int(k) * 4096, int(size[k])
                    if p < nxt or p + s > reg.end:
                        continue
                    out.append((p, s))
                    nxt = p + s
                a = max(end, nxt)
        if scanned >= MMAP_SCAN_MAX:
            self.notes.append(f"stopped looking for mmapped chunks after {MMAP_SCAN_MAX >> 20} MiB of "
                              "anonymous memory")
        if want is not None and len(out) != want:
            self.notes.append(f"found {len(out)} mmapped chunks; glibc counts {want} (mp_.n_mmaps)"
                              + (": the others are in memory the snapshot lacks, or were allocated with "
                                 "an alignment (memalign) this scan does not follow" if len(out) < want else ""))
        return out

    def _index(self, state, where, recency, mm) -> HeapIndex:
        n_mm = len(mm)
        start = np.concatenate([self.S, np.array([a for a, _ in mm], dtype=np.uint64)])
        size = np.concatenate([self.S1 & np.uint64(~L.SIZE_BITS & 0xFFFFFFFFFFFFFFFF),
                               np.array([s for _, s in mm], dtype=np.uint64)])
        st = np.concatenate([state, np.full(n_mm, MMAPPED, dtype=np.uint8)])
        ar = np.concatenate([self.SA, np.full(n_mm, -1, dtype=np.int16)])
        wh = np.concatenate([where, np.full(n_mm, -1, dtype=np.int32)])
        rc = np.concatenate([recency, np.full(n_mm, -1, dtype=np.int32)])
        return HeapIndex(start, size, st, ar, wh, rc, user_offset=L.CHUNK_HDR_SZ, usable_delta=L.SIZE_SZ)


class _Windows:
    """Fixed WINDOW-sized bulk reads of [lo, hi) (plus 64 bytes of overlap so a chunk starting
    near a window's end has its header in it); the next window is prefetched on a worker thread
    when the target has a thread-safe reader, so reading overlaps parsing."""

    def __init__(self, target: Target, lo: int, hi: int, pool):
        self.t, self.lo, self.hi, self.pool = target, lo, hi, pool
        self.fast = target.threadsafe_reader() if pool is not None else None
        self.pending = None                        # (window number, future)

    def _span(self, k: int):
        a = self.lo + k * WINDOW
        return a, min(self.hi, a + WINDOW + 64) - a

    def _read(self, k: int) -> bytes:
        a, n = self._span(k)
        if self.fast is not None:
            try:
                return self.fast(a, n)
            except ReadError:
                pass
        return self.t.read(a, n)                   # main thread: the debugger's own path

    def get(self, pos: int):
        k = (pos - self.lo) // WINDOW
        buf = None
        if self.pending is not None:
            pk, fut = self.pending
            self.pending = None
            try:
                data = fut.result()
            except Exception:                      # a failed prefetch is simply read again
                data = None
            if pk == k and data is not None:
                buf = data
        if buf is None:
            buf = self._read(k)
        if self.fast is not None and self.lo + (k + 1) * WINDOW < self.hi:
            a, n = self._span(k + 1)
            self.pending = (k + 1, self.pool.submit(self.fast, a, n))
        return self.lo + k * WINDOW, buf

    def close(self):
        if self.pending is not None:
            try:
                self.pending[1].result()
            except Exception:
                pass
            self.pending = None


def _u64(raw: bytes, off: int) -> int:
    return int.from_bytes(raw[off:off + 8], "little")


def _sname(code) -> str:
    from ..heapindex import STATE_NAMES
    return STATE_NAMES[int(code)]
