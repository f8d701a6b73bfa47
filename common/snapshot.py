"""HeapSnapshot: the result of walking one allocator once at one stop of the program."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .heapindex import Arena, FreeList, HeapIndex
from .report import Finding
from .target import ThreadInfo


@dataclass
class HeapSnapshot:
    allocator: str                         # "glibc", "jemalloc", "tcmalloc"
    index: HeapIndex
    lists: List[FreeList]
    arenas: List[Arena]
    findings: List[Finding]
    threads: List[ThreadInfo]
    notes: List[str] = field(default_factory=list)      # how roots were found, what is missing
    meta: Dict[str, Any] = field(default_factory=dict)  # version, layout source, timings
    thread_cache: Dict[int, int] = field(default_factory=dict)   # thread num -> cache address
    thread_arena: Dict[int, int] = field(default_factory=dict)   # thread num -> arena number
    unwalked: List[tuple] = field(default_factory=list)          # (start, end) heap bytes not parsed
    # (start, end) of the allocator's own bookkeeping outside the heap (jemalloc's base blocks:
    # extent records hold heap addresses): never scanned as program roots
    metadata: List[tuple] = field(default_factory=list)
    # (label, address) of chunks the allocator allocated for itself (jemalloc's tcache stacks):
    # never leaks, and their words (stale cache slots included) are not the program's pointers
    internal: List[tuple] = field(default_factory=list)

    def thread(self, num: Optional[int]) -> Optional[ThreadInfo]:
        for t in self.threads:
            if t.num == num:
                return t
        return None

    def arena_name(self, number: Optional[int]) -> str:
        if number is None or number < 0 or number >= len(self.arenas):
            return "-"
        return self.arenas[number].name
