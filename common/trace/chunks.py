"""Every chunk of every snapshot as one sorted table of user regions.

A pointer belongs to a chunk when it lies in the chunk's user region [user, user + usable):
that is what malloc returned and what the program may touch. The table keeps every state
(free, cached and top chunks too): an edge into one of those is a stale pointer, not an edge
to an object.
"""
from __future__ import annotations

import bisect
from typing import List, Optional, Tuple

import numpy as np

from ..heapindex import ALLOCATED, MMAPPED, STATE_NAMES
from ..snapshot import HeapSnapshot

U64 = np.uint64


class Chunks:
    """Sorted user regions of all chunks: `user`, `end` (uint64), `state` (uint8), `snap`
    (which snapshot), `sidx` (index in that snapshot's HeapIndex). `obj` marks the objects
    (allocated or mmapped chunks)."""

    def __init__(self, snaps: List[HeapSnapshot]):
        users, ends, states, sn, si = [], [], [], [], []
        for k, s in enumerate(snaps):
            idx = s.index
            n = len(idx)
            if n == 0:
                continue
            start = idx.start.astype(U64)
            size = idx.size.astype(U64)
            st = idx.state.astype(np.uint8)
            delta = np.where(st == MMAPPED, 2 * idx.usable_delta, idx.usable_delta).astype(U64)
            usable = np.where(size > delta, size - delta, U64(0))
            user = start + U64(idx.user_offset)
            users.append(user)
            ends.append(user + usable)
            states.append(st)
            sn.append(np.full(n, k, dtype=np.int16))
            si.append(np.arange(n, dtype=np.int32 if n < (1 << 31) else np.int64))
        if users:
            user = np.concatenate(users)
            order = np.argsort(user, kind="stable") if len(users) > 1 else slice(None)
            self.user = user[order]
            self.end = np.concatenate(ends)[order]
            self.state = np.concatenate(states)[order]
            self.snap = np.concatenate(sn)[order]
            self.sidx = np.concatenate(si)[order]
        else:
            self.user = self.end = np.zeros(0, dtype=U64)
            self.state = np.zeros(0, dtype=np.uint8)
            self.snap = np.zeros(0, dtype=np.int16)
            self.sidx = np.zeros(0, dtype=np.int64)
        self.n = int(self.user.shape[0])
        self.usable = (self.end - self.user).astype(np.int64)
        self.obj = (self.state == ALLOCATED) | (self.state == MMAPPED)
        self.snaps = snaps
        # overlapping regions (two allocators claiming the same bytes, or a corrupt index)
        # would break the binary search: keep the first of any overlapping pair
        if self.n > 1:
            bad = self.user[1:] < self.end[:-1]
            if bool(bad.any()):
                self.end[:-1] = np.where(bad, self.user[1:], self.end[:-1])
                self.usable = (self.end - self.user).astype(np.int64)
        self.lo = int(self.user[0]) if self.n else 0
        self.hi = int(self.end.max()) if self.n else 0
        self._ulist: Optional[List[int]] = None
        self._elist: Optional[List[int]] = None

    # --- lookups ---------------------------------------------------------------------------
    def lookup(self, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(chunk index or -1, offset in the user region) of each value (vectorised)."""
        values = np.asarray(values, dtype=U64)
        if self.n == 0 or values.size == 0:
            return np.full(values.shape, -1, dtype=np.int64), np.zeros(values.shape, dtype=np.int64)
        j = np.searchsorted(self.user, values, side="right").astype(np.int64) - 1
        jj = np.maximum(j, 0)
        hit = (j >= 0) & (values < self.end[jj])
        j = np.where(hit, j, -1)
        off = np.where(hit, (values - self.user[jj]).astype(np.int64), 0)
        return j, off

    def _lists(self):
        if self._ulist is None:
            self._ulist = self.user.tolist()
            self._elist = self.end.tolist()
        return self._ulist, self._elist

    def find(self, value: int) -> int:
        """Index of the chunk whose user region holds value, or -1 (scalar)."""
        if not self.lo <= value < self.hi:
            return -1
        u, e = self._lists()
        j = bisect.bisect_right(u, value) - 1
        return j if j >= 0 and value < e[j] else -1

    def find_loose(self, value: int) -> int:
        """Like find, but an address in a chunk's header also names that chunk (for people
        asking about a chunk address rather than a user pointer)."""
        j = self.find(value)
        if j >= 0 or self.n == 0:
            return j
        k = int(np.searchsorted(self.user, U64(value), side="right"))
        if k < self.n and self.chunk_start(k) <= value < int(self.user[k]):
            return k
        return -1

    # --- description --------------------------------------------------------------------------
    def state_name(self, i: int) -> str:
        return STATE_NAMES[int(self.state[i])]

    def chunk_start(self, i: int) -> int:
        """Address of chunk i's header (its allocator's own chunk address)."""
        s = self.snaps[int(self.snap[i])]
        return int(s.index.start[int(self.sidx[i])])

    def chunk_size(self, i: int) -> int:
        s = self.snaps[int(self.snap[i])]
        return int(s.index.size[int(self.sidx[i])])

    def chunk_json(self, i: int) -> dict:
        return {"start": self.chunk_start(i), "size": self.chunk_size(i), "state": self.state_name(i)}

    def where(self, i: int) -> str:
        """Which freelist holds a free/cached chunk, for people."""
        s = self.snaps[int(self.snap[i])]
        k = int(self.sidx[i])
        w = int(s.index.where[k])
        if 0 <= w < len(s.lists):
            return s.lists[w].name
        return self.state_name(i)
