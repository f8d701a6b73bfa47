"""One walk per stop: snapshots are cached until the target's generation changes."""
from __future__ import annotations

from typing import List, Optional, Tuple

from .allocators import walk_all
from .snapshot import HeapSnapshot
from .target import Target

_cache: dict = {}


def snapshots(target: Target, key: Optional[tuple] = None) -> Tuple[List[HeapSnapshot], List[str]]:
    """The heap snapshots of `target`, walked once per (key, generation)."""
    k = (key if key is not None else id(target), target.generation())
    hit = _cache.get("entry")
    if hit is not None and hit[0] == k:
        return hit[1]
    result = walk_all(target)
    _cache["entry"] = (k, result)
    return result


def program_view(target: Target, snaps, key: Optional[tuple] = None):
    """The program-level analysis (variables, crash context) of this stop, computed once."""
    from .checks.analysis import analyse
    k = (key if key is not None else id(target), target.generation())
    hit = _cache.get("program")
    if hit is not None and hit[0] == k:
        return hit[1]
    view = analyse(target, snaps)
    _cache["program"] = (k, view)
    return view


def graph(target: Target, snaps, key: Optional[tuple] = None, conservative: bool = False):
    """The pointer graph of this stop (precise or conservative), built once: (Graph, RootSet)."""
    from .trace import trace_target
    name = "graph-conservative" if conservative else "graph"
    k = (key if key is not None else id(target), target.generation())
    hit = _cache.get(name)
    if hit is not None and hit[0] == k:
        return hit[1]
    result = trace_target(target, snaps, conservative=conservative)
    _cache[name] = (k, result)
    return result


def invalidate() -> None:
    _cache.clear()
