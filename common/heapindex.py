"""The HeapIndex: every chunk of every allocator, classified once, sorted by address.

Arrays (numpy) rather than objects: a million chunks cost ~40 MB and a lookup of the chunk
containing an address is one binary search.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

ALLOCATED, FREE, CACHED, TOP, MMAPPED = 0, 1, 2, 3, 4
STATE_NAMES = ("allocated", "free", "cached", "top", "mmapped")


@dataclass
class FreeList:
    """One freelist (a tcache bin, a fastbin, a bin...) that chunks can belong to."""
    kind: str                  # tcache, fastbin, unsorted, smallbin, largebin (or allocator-specific)
    index: int
    name: str                  # for people: "tcache[2] (0x40) of thread 2"
    arena: Optional[int] = None    # arena number
    thread: Optional[int] = None   # debugger thread number for thread caches
    tid: Optional[int] = None
    lifo: bool = True          # position 0 is the most recently freed

    def recency_text(self, position: int) -> str:
        """How recently a chunk at `position` was freed, in words; '' where the list has no
        order (a slab bitmap, a set of free extents)."""
        if not self.lifo or position < 0:
            return ""
        return "freed last" if position == 0 else f"position {position} of its list"


@dataclass
class Arena:
    number: int                # 0 = main arena
    address: int
    name: str
    system_mem: int = 0
    segments: List[tuple] = field(default_factory=list)   # (start, end) walked ranges
    top: int = 0
    top_size: int = 0
    last_remainder: int = 0    # chunk glibc split last for a small request (0 = none)
    threads: List[int] = field(default_factory=list)      # debugger thread numbers attached


class HeapIndex:
    def __init__(self, start, size, state, arena, where, recency, user_offset=16, usable_delta=8):
        start = np.asarray(start, dtype=np.uint64)
        order = slice(None) if len(start) < 2 or bool(np.all(start[1:] > start[:-1])) \
            else np.argsort(start, kind="stable")
        self.start = start[order]
        self.size = np.asarray(size, dtype=np.uint64)[order]
        self.state = np.asarray(state, dtype=np.uint8)[order]
        self.arena = np.asarray(arena, dtype=np.int16)[order]
        self.where = np.asarray(where, dtype=np.int32)[order]       # FreeList index or -1
        self.recency = np.asarray(recency, dtype=np.int32)[order]   # position in that list or -1
        self.user_offset = user_offset      # chunk start -> user pointer
        self.usable_delta = usable_delta    # chunk size - usable size for in-use chunks

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def find(self, addr: int) -> int:
        """Index of the chunk containing addr, or -1."""
        n = len(self)
        if n == 0:
            return -1
        i = int(np.searchsorted(self.start, np.uint64(addr), side="right")) - 1
        if i >= 0 and addr < int(self.start[i]) + int(self.size[i]):
            return i
        return -1

    def counts(self) -> Dict[str, int]:
        c = np.bincount(self.state, minlength=len(STATE_NAMES))
        return {STATE_NAMES[i]: int(c[i]) for i in range(len(STATE_NAMES))}

    def chunk_json(self, i: int) -> Dict:
        return {"start": int(self.start[i]), "size": int(self.size[i]),
                "state": STATE_NAMES[int(self.state[i])]}
