"""Loaded objects derived from the mappings (path -> load bias), shared by every target."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

from .elfinfo import elf_info
from .target import ObjFile, Region


def objfiles_from_regions(regions: Iterable[Region], debug: Optional[Dict[str, bool]] = None) -> List[ObjFile]:
    """One ObjFile per mapped ELF file: base = start of its offset-0 mapping minus the file's
    first PT_LOAD vaddr (0 for shared objects and PIE)."""
    first: Dict[str, Region] = {}
    for r in regions:
        if r.path.startswith("/") and r.offset == 0 and r.path not in first:
            first[r.path] = r
    out = []
    for path, r in first.items():
        info = elf_info(path)
        if info is None:
            continue
        try:
            base = r.start - info.first_load_vaddr()
            bid = info.build_id
        except Exception:            # unreadable or odd ELF: skip the object, not the report
            continue
        out.append(ObjFile(path, base, bid, bool(debug and debug.get(path))))
    return out


def debug_file_for(build_id: Optional[str], dirs=("/usr/lib/debug",)) -> Optional[str]:
    import os
    if not build_id or len(build_id) < 3:
        return None
    for d in dirs:
        p = os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug")
        if os.path.exists(p):
            return p
    return None
