"""The bytes of the heap's objects, read once in bulk and kept as one array of words.

Only the user regions of allocated (and mmapped) chunks are wanted; neighbouring regions are
merged into ranges (small gaps are read through: one big read beats many small ones) and each
range is read in windows of at most WINDOW bytes. Words are gathered by address, vectorised
(numpy) or one at a time (a memoryview, for the scalar part of the traversal). Memory that
cannot be read (left out of a core) stays zero and is reported.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..target import ReadError

U64 = np.uint64
WINDOW = 16 << 20            # bytes per bulk read
GAP = 64 << 10               # regions closer than this are read as one range
SLOW_GAP = 1 << 10           # the same over a slow link (target.slow_link): a gap skipped costs about one
                             # round trip (~9 KiB with gdbserver), a gap read costs its bytes
DEFAULT_BUDGET = 2 << 30     # bytes of heap held at most (and at most half the free memory)


def default_budget() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return max(64 << 20, min(DEFAULT_BUDGET, int(line.split()[1]) * 1024 // 2))
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_BUDGET


def merge_ranges(lo: np.ndarray, hi: np.ndarray, gap: int = GAP) -> List[Tuple[int, int]]:
    """Sorted, 8-aligned, merged [lo, hi) ranges (lo sorted ascending)."""
    if lo.size == 0:
        return []
    lo = (lo.astype(U64) // U64(8)) * U64(8)
    hi = ((hi.astype(U64) + U64(7)) // U64(8)) * U64(8)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    hi = np.maximum.accumulate(hi)
    brk = np.nonzero(lo[1:] > hi[:-1] + U64(gap))[0] + 1
    starts = np.concatenate([[0], brk])
    stops = np.concatenate([brk - 1, [lo.size - 1]])
    return [(int(lo[a]), int(hi[b])) for a, b in zip(starts, stops)]


class HeapImage:
    def __init__(self, target, ranges: List[Tuple[int, int]], budget: Optional[int] = None):
        self.notes: List[str] = []
        budget = default_budget() if budget is None else budget
        kept, total = [], 0
        for lo, hi in ranges:
            if total + (hi - lo) > budget:
                self.notes.append(f"heap image capped at {budget >> 20} MiB: objects above {lo:#x} "
                                  "are not read, so their pointers are not followed")
                break
            kept.append((lo, hi))
            total += hi - lo
        self.ranges = kept
        self.rstart = np.array([a for a, _ in kept], dtype=U64)
        self.rend = np.array([b for _, b in kept], dtype=U64)
        offs, o = [], 0
        for a, b in kept:
            offs.append(o)
            o += (b - a) // 8
        self.roff = np.array(offs, dtype=np.int64)
        self.words = np.zeros(o, dtype=U64)
        self.bytes_read = 0
        self.unreadable = 0
        self._read_all(target)
        self.mv = memoryview(self.words)     # scalar word access: mv[i] is a Python int
        self._starts_list = [a for a, _ in kept]
        self._ends_list = [b for _, b in kept]
        self._offs_list = offs

    def _read_all(self, target) -> None:
        fast = None
        try:
            fast = target.threadsafe_reader()
        except Exception:
            fast = None
        read = fast or target.read
        missing = []
        for (lo, hi), woff in zip(self.ranges, self.roff.tolist()):
            a = lo
            while a < hi:
                n = min(WINDOW, hi - a)
                data = self._read(read, target, a, n)
                if data is None:
                    self._read_small(read, target, a, n, woff + (a - lo) // 8, missing)
                else:
                    w = woff + (a - lo) // 8
                    self.words[w:w + n // 8] = np.frombuffer(data, dtype="<u8", count=n // 8)
                    self.bytes_read += n
                a += n
        if missing:
            self.unreadable = sum(b - a for a, b in missing)
            self.notes.append(f"{self.unreadable:,} bytes of heap objects could not be read (first at "
                              f"{missing[0][0]:#x}): pointers there are not followed")

    @staticmethod
    def _read(read, target, a, n) -> Optional[bytes]:
        try:
            data = read(a, n)
            if len(data) == n:
                return data
        except ReadError:
            pass
        except Exception:
            pass
        if read is not target.read:
            try:
                data = target.read(a, n)
                if len(data) == n:
                    return data
            except Exception:
                pass
        return None

    def _read_small(self, read, target, a, n, w, missing) -> None:
        """A window that failed as a whole: read it page by page, leave holes as zeros."""
        step = 4096
        end = a + n
        while a < end:
            m = min(step - (a % step), end - a)
            data = self._read(read, target, a, m)
            if data is None:
                if missing and missing[-1][1] == a:
                    missing[-1] = (missing[-1][0], a + m)
                else:
                    missing.append((a, a + m))
            else:
                self.words[w:w + m // 8] = np.frombuffer(data, dtype="<u8", count=m // 8)
                self.bytes_read += m
            w += m // 8
            a += m

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes)

    # --- access ----------------------------------------------------------------------------
    def index(self, addrs: np.ndarray) -> np.ndarray:
        """Word index of each 8-aligned address whose 8 bytes are in the image, else -1."""
        addrs = np.asarray(addrs, dtype=U64)
        if self.rstart.size == 0 or addrs.size == 0:
            return np.full(addrs.shape, -1, dtype=np.int64)
        r = np.searchsorted(self.rstart, addrs, side="right").astype(np.int64) - 1
        rr = np.maximum(r, 0)
        ok = (r >= 0) & (addrs + U64(8) <= self.rend[rr]) & ((addrs & U64(7)) == 0)
        w = self.roff[rr] + ((addrs - self.rstart[rr]) >> U64(3)).astype(np.int64)
        return np.where(ok, w, -1)

    def gather(self, addrs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(words, ok) at the addresses (unaligned or unread addresses: ok False, word 0)."""
        w = self.index(addrs)
        ok = w >= 0
        out = self.words[np.where(ok, w, 0)] if self.words.size else np.zeros(w.shape, dtype=U64)
        return np.where(ok, out, U64(0)), ok

    def word_index(self, addr: int) -> int:
        """Scalar version of index()."""
        import bisect
        r = bisect.bisect_right(self._starts_list, addr) - 1
        if r < 0 or addr + 8 > self._ends_list[r] or addr & 7:
            return -1
        return self._offs_list[r] + ((addr - self._starts_list[r]) >> 3)

    def read_bytes(self, addr: int, n: int) -> Optional[bytes]:
        """Bytes of the image (within one range), or None."""
        import bisect
        r = bisect.bisect_right(self._starts_list, addr) - 1
        if r < 0 or addr + n > self._ends_list[r]:
            return None
        base = self._offs_list[r] * 8 + (addr - self._starts_list[r])
        return self.words.view(np.uint8)[base:base + n].tobytes()
