"""Cross-checks of the glibc walker that need the whole classified heap: boundary tags
(PREV_INUSE / prev_size against the freelists), coalescing, flag bits; and mmapped chunks,
found by structure. A mixin of common.allocators.glibc._Walker.
"""
from __future__ import annotations

import struct
from typing import List, Tuple

import numpy as np

from ..heapindex import TOP, STATE_NAMES
from ..target import ReadError
from . import glibc_layout as L
from .glibc_shared import _BINNED, _M64, MMAP_BLOCK, MMAP_SCAN_MAX, MMAP_SLOW_PROBES


def _sname(code) -> str:
    return STATE_NAMES[int(code)]


class CrossChecks:
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
        in bulk blocks, skipping over chunks found; the scan stops when the count is reached.
        Over a slow link only the page headers are read (_mmapped_sparse)."""
        mask = ~(self.lay.heap_max_size - 1)
        reserved = [(a.address & mask, (a.address & mask) + self.lay.heap_max_size)
                    for a in self.arenas[1:]] + [(s.lo, s.hi) for s in self.segs]
        want = self.n_mmaps if self.n_mmaps is not None and self.n_mmaps >= 0 else None
        regions = [reg for reg in self.regions
                   if reg.readable and reg.writable and reg.anonymous and reg.in_snapshot and reg.path != "[heap]"
                   and not any(lo < reg.end and reg.start < hi for lo, hi in reserved)]
        if getattr(self.t, "slow_link", False):
            out, scanned, limit = self._mmapped_sparse(regions, want)
        else:
            out, scanned, limit = self._mmapped_bulk(regions, want), 0, 0
        if limit:
            self.notes.append(f"stopped looking for mmapped chunks after {limit >> 20} MiB of "
                              "anonymous memory")
        if want is not None and len(out) != want:
            self.notes.append(f"found {len(out)} mmapped chunks; glibc counts {want} (mp_.n_mmaps)"
                              + (": the others are in memory the snapshot lacks, or were allocated with "
                                 "an alignment (memalign) this scan does not follow" if len(out) < want else ""))
        return sorted(out)

    def _mmapped_bulk(self, regions, want) -> List[Tuple[int, int]]:
        out: List[Tuple[int, int]] = []
        scanned = 0
        for reg in regions:
            if want is not None and len(out) >= want:
                break
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
        return out

    def _mmapped_sparse(self, regions, want):
        """The same search reading 16 bytes per page instead of every byte (a remote target).
        Pass 1 reads the header at the start of each mapping and follows a chain of chunks from
        there (a chunk is usually its own mapping, or merged after another chunk); pass 2, only
        if the count is still short, reads the header of every remaining page, thread stacks (the
        mappings holding a thread pointer) last. Returns (chunks, pages probed, bytes scanned
        when the probe limit stopped it, else 0)."""
        out: List[Tuple[int, int]] = []
        done: List[Tuple[int, int]] = []          # spans already probed, per region (pass 1)
        probes = 0

        def header(p):
            try:
                prev, sw = struct.unpack("<QQ", self.t.read(p, 16))
            except ReadError:
                return None
            s = sw & ~L.SIZE_BITS & _M64
            if prev == 0 and sw & L.IS_MMAPPED and not sw & L.NON_MAIN_ARENA and s >= 4096 and not s & 0xFFF:
                return s
            return None

        def full():
            return want is not None and len(out) >= want

        for reg in regions:                        # pass 1: mapping starts and their chains
            p = reg.start
            while p < reg.end and not full() and probes < MMAP_SLOW_PROBES:
                probes += 1
                s = header(p)
                if s is None or p + s > reg.end:
                    break
                out.append((p, s))
                p += s
            done.append((reg.start, p + 4096 if p < reg.end else p))
            if full():
                return out, probes, 0
        tps = [t.fs_base for t in self.threads if t.fs_base]
        stack = [any(reg.contains(tp) for tp in tps) for reg in regions]
        order = sorted(range(len(regions)), key=lambda k: stack[k])   # thread stacks last: rarely merged
        for reg, a in ((regions[k], done[k][1]) for k in order):      # pass 2: every other page
            while a < reg.end and not full():
                if probes >= MMAP_SLOW_PROBES:
                    return out, probes, MMAP_SLOW_PROBES * 4096
                probes += 1
                s = header(a)
                if s is not None and a + s <= reg.end:
                    out.append((a, s))
                    a += s
                else:
                    a += 4096
            if full():
                break
        return out, probes, 0
