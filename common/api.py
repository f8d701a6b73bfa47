"""heaplens' Python API, for scripts and ~/.gdbinit files.

Inside gdb (after `source <checkout>/gdb_plugin/gdbinit.py`):

    python
    from gdb_plugin.api import target          # the program gdb is stopped in
    from common import api
    rep = api.check(target())                  # the heap-check report (a dict, schema heaplens/1)
    for f in rep["findings"]:
        print(f["kind"], hex(f["address"] or 0), f["message"])
    print(api.info(target(), 0x5555555592a0)["state"])
    end

Every function takes a Target (gdb_plugin.api.target() in gdb; common.coretarget.CoreTarget
for a core file without a debugger) and returns plain dicts and lists in the JSON shapes of
CONTRACT.md. The heap is walked once per stop of the program and cached.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import commands as _c
from .session import snapshots as _snapshots
from .snapshot import HeapSnapshot
from .target import Target

__all__ = ["check", "info", "stats", "frames", "state", "is_free", "usable_size", "walk"]


def walk(target: Target) -> List[HeapSnapshot]:
    """The heap snapshots (one per allocator in use): .index, .findings, .arenas, .lists."""
    return _snapshots(target)[0]


def check(target: Target) -> Dict[str, Any]:
    """The heap-check report: findings worst first, summary, program analysis."""
    return _c.run_heap_check(target, _c.Args()).report


def info(target: Target, address: int, type_size: Optional[int] = None, type_name: Optional[str] = None) -> Dict[str, Any]:
    """The info-alloc answer for an address (type_size: sizeof the pointee, for the type check)."""
    snaps = walk(target)
    return _c.alloc_info(snaps, _c.Pointer(address, f"{address:#x}", type_name, type_size))


def stats(target: Target) -> Dict[str, Any]:
    return _c.run_heap_stats(target, _c.Args()).report


def frames(target: Target) -> Dict[str, Any]:
    return _c.run_heap_frames(target, _c.Args()).report


def state(target: Target, address: int) -> str:
    """'allocated', 'free', 'cached', 'top', 'mmapped', 'not-heap' or 'unknown'."""
    return _c.pointer_state(target, address)["state"]


def is_free(target: Target, address: int) -> bool:
    return state(target, address) in ("free", "cached")


def usable_size(target: Target, address: int) -> Optional[int]:
    return _c.pointer_state(target, address)["size"]
