"""Allocator walkers. Each module offers walk(target, reader) -> HeapSnapshot or raises its
own Not<Allocator> exception with a sentence saying why it does not apply."""
from __future__ import annotations

from typing import List, Tuple

from ..memcache import CachedReader
from ..snapshot import HeapSnapshot
from ..target import Target


class NoAllocator(Exception):
    """No supported allocator could be walked; the message says what was tried and what is missing."""


def walk_all(target: Target) -> Tuple[List[HeapSnapshot], List[str]]:
    """Walk every allocator in use. Returns the snapshots and the reasons others were skipped."""
    from . import glibc
    from .glibc_locate import NotGlibc
    reader = CachedReader(target)
    snaps, skipped = [], []
    try:
        snaps.append(glibc.walk(target, reader))
    except NotGlibc as e:
        skipped.append(str(e))
    if not snaps:
        raise NoAllocator("; ".join(skipped) or "no supported allocator found")
    return snaps, skipped
