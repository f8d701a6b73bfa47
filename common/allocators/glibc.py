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
from typing import Dict, List, Optional

import numpy as np

from ..heapindex import MMAPPED, Arena, HeapIndex
from ..memcache import CachedReader
from ..report import Finding
from ..snapshot import HeapSnapshot
from ..target import ReadError, Region, Target, region_index
from . import glibc_layout as L
from .chunktable import ChunkTable
from .glibc_checks import CrossChecks
from .glibc_freelists import FreelistWalk
from .glibc_locate import GlibcRoots, NotGlibc, choose_tls_slot, locate

from .base import WalkerBase  # noqa: E402
from .glibc_shared import (MAX_ARENAS, MAX_PER_CHECK, RESYNC_SCAN, SLOW_WINDOW, WINDOW, _M64)  # noqa: E402


def walk(target: Target, reader: Optional[CachedReader] = None) -> HeapSnapshot:
    reader = reader or CachedReader(target)
    return _Walker(target, reader, locate(target, reader)).run()


class _Seg:
    __slots__ = ("lo", "hi", "arena", "top", "fencepost_ok")

    def __init__(self, lo, hi, arena, top, fencepost_ok):
        self.lo, self.hi, self.arena, self.top, self.fencepost_ok = lo, hi, arena, top, fencepost_ok


class _Walker(FreelistWalk, CrossChecks, WalkerBase):
    def __init__(self, target: Target, reader: CachedReader, roots: GlibcRoots):
        super().__init__(target, reader, roots)
        self.regions: List[Region] = target.regions()
        self.region_of = region_index(self.regions)
        self.arenas: List[Arena] = []
        self.arena_raw: List[bytes] = []
        self.segs: List[_Seg] = []
        self.parts: List[tuple] = []      # (starts, w0, w1, w2, w3, arena) numpy arrays
        self.gaps: List[tuple] = []       # (start, end, seg) not parsed yet
        self.unwalked: List[tuple] = []
        self._top_addrs: set = set()
        self.nextsize: Dict[int, tuple] = {}   # chunk -> (fd_nextsize, bk_nextsize), slow links only

    # --- findings ----------------------------------------------------------------------------
    def find(self, kind, severity, chunk_addr, message, evidence=(), check="", state=None):
        """A finding about the chunk at chunk_addr (glibc findings name chunks by their header)."""
        if not self.listed(check):
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
        self.summarise_overflow()
        meta = {"version": self.lay.version_str, "glibc_version": self.lay.version_str, "layout": self.lay.source,
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
            why = (f"the program uses {', '.join(os.path.basename(p) for p in others)} instead"
                   if others else "it has not allocated yet, or uses another allocator")
            raise NotGlibc(f"glibc's malloc has never been used in this program (main_arena is uninitialised): {why}",
                           present=False)

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
            if reg is None and getattr(self.t, "regions_partial", False) and self.sbrk_base and a.system_mem:
                # no mappings from the target: the contiguous main heap is what glibc says it is
                reg = Region(self.sbrk_base & ~0xFFF, (self.sbrk_base + a.system_mem + 0xFFF) & ~0xFFF,
                             "rw-p", "[heap]")
                reg = reg if reg.contains(top) else None
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
                             f"size {size:#x})", ["heaps of an arena are chained by heap_info.prev"],
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
                wend = min(hi, wstart + windows.size)
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
                    if windows.slow:                        # keep what _check_nextsize would re-read
                        self._keep_nextsize(arr, idx, starts)
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

    def _keep_nextsize(self, arr, idx, starts):
        """fd_nextsize/bk_nextsize (words 4-5) of every chunk large enough for a large bin, from
        the window in hand: over a slow link re-reading them later costs a round trip each."""
        large = np.uint64(L.NSMALLBINS * L.MALLOC_ALIGNMENT)
        big = np.nonzero(((arr[idx + 1] & np.uint64(~L.SIZE_BITS & _M64)) >= large) & (idx + 5 < len(arr)))[0]
        if big.size:
            j = idx[big]
            self.nextsize.update(zip(starts[big].tolist(), zip(arr[j + 4].tolist(), arr[j + 5].tolist())))

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
        a = self.arenas[seg.arena]
        try:
            sw = self.r.u64(top + 8)
        except ReadError:
            return
        s = sw & ~L.SIZE_BITS
        a.top_size = s
        self.parts.append((np.array([top], dtype=np.uint64), np.array([0], dtype=np.uint64),
                           np.array([sw], dtype=np.uint64), np.zeros(1, np.uint64), np.zeros(1, np.uint64),
                           np.array([seg.arena], dtype=np.int16)))
        self._top_addrs.add(top)
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
        self.top_addrs = set(self._top_addrs)

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
    when the target has a thread-safe reader, so reading overlaps parsing.

    Over a slow link (target.slow_link) each window is SLOW_WINDOW bytes read from the chunk the
    walk is at: a chunk that runs past a window's end is skipped, not read, so large chunks cost
    their header, not their bytes."""

    def __init__(self, target: Target, lo: int, hi: int, pool):
        self.t, self.lo, self.hi, self.pool = target, lo, hi, pool
        self.fast = target.threadsafe_reader() if pool is not None else None
        self.pending = None                        # (window number, future)
        self.slow = bool(getattr(target, "slow_link", False))
        self.size = SLOW_WINDOW if self.slow else WINDOW

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
        if self.slow:
            return pos, self.t.read(pos, min(self.hi, pos + SLOW_WINDOW + 64) - pos)
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
