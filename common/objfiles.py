"""Loaded objects derived from the mappings (path -> load bias), shared by every target."""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .elfinfo import elf_info
from .target import ObjFile, Region


# Where the system's libraries live: their globals, frames' variables and (by default) DWARF
# are theirs, not the program's.
SYSTEM_PREFIXES = ("/usr/lib/", "/lib/", "/lib64/", "/usr/lib64/")


def is_system(path: str) -> bool:
    return bool(path) and path.startswith(SYSTEM_PREFIXES)


def program_data_objects(objfiles: Iterable[ObjFile]) -> Iterator[Tuple[ObjFile, str, int, int]]:
    """(object, name, runtime address, size) of the symbol-table data objects of the program
    and its own libraries: the candidates for global pointer variables, which the debugger
    then types."""
    for obj in objfiles:
        if is_system(obj.path):
            continue
        info = elf_info(obj.path)
        if info is None:
            continue
        for name, value, size in info.data_objects():
            yield obj, name, value + obj.base, size


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
