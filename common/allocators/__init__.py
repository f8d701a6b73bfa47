"""Allocator walkers. Each module in WALKERS offers walk(target, reader) -> HeapSnapshot, or raises
a NotThisAllocator subclass with a sentence saying why it does not apply."""
from __future__ import annotations

import importlib
from typing import List, Tuple

from ..memcache import CachedReader
from ..snapshot import HeapSnapshot
from ..target import Target
from .base import NotThisAllocator

# Module names under common.allocators, in report order. A module that is missing (not written
# yet in a checkout) is skipped.
WALKERS = ("glibc", "jemalloc", "tcmalloc")


class NoAllocator(Exception):
    """No supported allocator could be walked; the message says what was tried and what is missing."""


def walk_all(target: Target) -> Tuple[List[HeapSnapshot], List[str]]:
    """Walk every allocator in use. Returns the snapshots and the sentences about allocators that
    are loaded but could not be walked (all reasons when none could)."""
    reader = CachedReader(target)
    snaps: List[HeapSnapshot] = []
    present, absent = [], []
    for name in WALKERS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue
            raise
        try:
            snaps.append(mod.walk(target, reader))
        except NotThisAllocator as e:
            (present if e.present else absent).append(str(e))
    if not snaps:
        raise NoAllocator("; ".join(present + absent) or "no supported allocator found")
    return snaps, present
