"""The walked chunks of a heap as sorted arrays, with fast address -> index lookups.

Freelist traversal resolves every chunk's next pointer for a list kind in one vectorised
searchsorted, so following a list is a bare `i = nxt[i]` loop in Python.
"""
from __future__ import annotations

from array import array
from typing import Callable, Dict, List

import numpy as np

U64 = np.uint64


class ChunkTable:
    def __init__(self, parts: List[tuple]):
        if parts:
            parts = sorted((p for p in parts if len(p[0])), key=lambda p: int(p[0][0]))
            cols = list(zip(*parts)) or [[np.zeros(0, U64)]] * 5 + [[np.zeros(0, np.int16)]]
            S, W0, W1, W2, W3, A = (np.concatenate(c) for c in cols)
            if len(S) > 1 and not bool(np.all(S[1:] > S[:-1])):   # parts overlap: sort (rare)
                order = np.argsort(S, kind="stable")
                S, W0, W1, W2, W3, A = (x[order] for x in (S, W0, W1, W2, W3, A))
            self.S, self.W0, self.W1, self.W2, self.W3, self.A = S, W0, W1, W2, W3, A
        else:
            e = np.zeros(0, dtype=U64)
            self.S, self.W0, self.W1, self.W2, self.W3 = e, e, e, e, e
            self.A = np.zeros(0, dtype=np.int16)
        self.n = len(self.S)
        self._nxt: Dict[str, list] = {}

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """Index of each address that is a chunk start, else -1 (vectorised)."""
        addrs = np.asarray(addrs, dtype=U64)
        if self.n == 0:
            return np.full(addrs.shape, -1, dtype=np.int64)
        j = np.minimum(np.searchsorted(self.S, addrs), self.n - 1)
        return np.where(self.S[j] == addrs, j, -1).astype(np.int64)

    def idx(self, addr: int) -> int:
        if self.n == 0 or not 0 <= addr < 1 << 64:
            return -1
        j = int(np.searchsorted(self.S, U64(addr)))
        return j if j < self.n and int(self.S[j]) == addr else -1

    def containing(self, addr: int, size_of: Callable[[int], int]) -> int:
        """Index of the chunk whose [start, start+size) holds addr, else -1."""
        if self.n == 0 or not 0 <= addr < 1 << 64:
            return -1
        j = int(np.searchsorted(self.S, U64(addr), side="right")) - 1
        return j if j >= 0 and addr < int(self.S[j]) + size_of(j) else -1

    def next_index(self, kind: str, next_addr: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list:
        """Per chunk, the index of the chunk its first word leads to under `kind`'s encoding
        (-1 when that is no chunk start). Computed once per kind, as a Python list."""
        if kind not in self._nxt:
            with np.errstate(over="ignore"):
                # array('q'): 8 bytes an entry (a list of ints costs ~36), indexing as fast
                self._nxt[kind] = array("q", self.lookup(next_addr(self.S, self.W2)).tobytes())
        return self._nxt[kind]
