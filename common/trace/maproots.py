"""Roots placed by the compiler's maps (the MappedTrace way): the debugger only unwinds
(each frame's pc, registers and CFA); which variables hold pointers, where, and of what type
comes from the DWARF maps decoded by common.maps. Files without DWARF leave their frames to the
labelled conservative fallback of target_roots."""
from __future__ import annotations

from typing import Optional

from ..target import Target, TypeLayout


def map_roots(target: Target, read) -> Optional[tuple]:
    """(frames with variables, globals, type resolver, notes, stats, described: the [start, end)
    of every static variable the DWARF describes, pointer or not), or None when no loaded
    object of the program has DWARF maps (the caller then uses the debugger's view)."""
    from ..maps import ProgramMaps
    pm = ProgramMaps.load(target.objfiles(), system=False)
    if not getattr(pm, "files", None):
        return None
    frames = target.frames(variables=False, registers=True)
    frames = pm.frame_variables(frames, read=read)
    glob = pm.globals(include_system=False)
    try:
        glob += pm.tls_variables(target.threads())
    except Exception:                       # TLS placement is a bonus: never lose the rest for it
        pass

    def resolve(key: str) -> Optional[TypeLayout]:
        if key and key.startswith("dwarf:"):
            return pm.type_layout(key)
        return pm.type_layout(key) or target.type_layout(key)

    described = [(v.address, v.address + max(v.layout.size, 1))
                 for v in pm.globals(include_system=False, pointers_only=False) if v.address is not None]
    notes = [f"roots placed by the DWARF maps: {pm.describe()}"] + list(getattr(pm, "messages", []))
    return frames, glob, resolve, notes, dict(getattr(pm, "stats", {}) or {}), described
