"""Find gperftools tcmalloc in a target: the library, its version and layout, and the addresses
of its roots.

Debian ships the libraries stripped, exporting `ThreadCache::thread_heaps_`,
`Static::pageheap_lock_`, `Static::inited_` and `Static::InitStaticVars()`, while
`Static::sizemap_`, `central_cache_` and `pageheap_` are hidden: their addresses are read from
InitStaticVars()'s code (tcmalloc_x86). With debug info the debugger's symbols are used instead.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..elfinfo import elf_info
from ..memcache import CachedReader
from ..target import ObjFile, ReadError, Target
from .base import NotThisAllocator
from .tcmalloc_layout import TcLayout, from_table, with_debug_info
from .tcmalloc_x86 import decode_init_static_vars

_LIB = re.compile(r"(^|/)libtcmalloc(_minimal|_and_profiler)?(_debug)?\.so(\.[0-9.]+)?$")
_VERSION = re.compile(rb"gperftools (\d+\.\d+(?:\.\d+)?)")
SYM = {"thread_heaps_": "_ZN8tcmalloc11ThreadCache13thread_heaps_E",
       "pageheap_lock_": "_ZN8tcmalloc6Static14pageheap_lock_E",
       "inited_": "_ZN8tcmalloc6Static7inited_E",
       "thread_heap_count_": "_ZN8tcmalloc11ThreadCache18thread_heap_count_E"}
DEBUG_NAMES = {"sizemap_": "tcmalloc::Static::sizemap_", "central_cache_": "tcmalloc::Static::central_cache_",
               "pageheap_": "tcmalloc::Static::pageheap_"}
REGEN = ("install Debian's libtcmalloc-minimal4 / libgoogle-perftools4 2.10-1, debug info for this "
         "library, or regenerate common/allocators/data/tcmalloc-2.10-debian.json for it with "
         "scripts/layouts/tcmalloc.sh")


class NotTcmalloc(NotThisAllocator):
    """tcmalloc is not in use or cannot be walked; the message says what is missing."""


@dataclass
class SizeMap:
    num_classes: int
    size: List[int]             # class -> object bytes (class 0 unused)
    pages: List[int]            # class -> pages per span
    to_move: List[int]          # class -> transfer batch

    def objects(self, cl: int, page_shift: int) -> int:
        return (self.pages[cl] << page_shift) // self.size[cl] if self.size[cl] else 0


@dataclass
class TcRoots:
    lib: ObjFile
    layout: TcLayout
    version: str
    sizemap: int
    central_cache: int
    pageheap: int
    thread_heaps: int
    pageheap_lock: Optional[int]
    thread_heap_count: Optional[int] = None
    sizes: SizeMap = None
    how: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def find_library(target: Target) -> Optional[ObjFile]:
    for obj in target.objfiles():
        if _LIB.search(obj.path or ""):
            return obj
    return None


def _linked_how(target: Target, lib: ObjFile) -> str:
    """'linked' when the executable names the library in DT_NEEDED, else 'LD_PRELOAD or dlopen'."""
    objs = target.objfiles()
    name = os.path.basename(lib.path)
    exe = elf_info(objs[0].path) if objs else None
    try:
        dyn = exe.elf.get_section_by_name(".dynamic") if exe is not None else None
        needed = [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"] if dyn is not None else []
    except Exception:       # an odd executable only loses this detail
        needed = []
    if any(name.startswith(n) or n.startswith(name.split(".so")[0] + ".so") for n in needed):
        return f"{name} (linked: in the program's DT_NEEDED)"
    return f"{name} (LD_PRELOAD or dlopen: not in the program's DT_NEEDED)"


def locate(target: Target, reader: CachedReader) -> TcRoots:
    lib = find_library(target)
    if lib is None:
        if target.warnings():                   # e.g. a truncated core: its list of files went with it
            raise NotTcmalloc("tcmalloc cannot be looked for: the list of loaded libraries is not in the snapshot",
                              present=False)
        raise NotTcmalloc("tcmalloc (libtcmalloc*.so) is not loaded in this program", present=False)
    base = os.path.basename(lib.path)
    if "_debug" in base:
        raise NotTcmalloc(f"{base} is gperftools' debugging allocator, which wraps every block in guard "
                          "words: heaplens walks the plain libtcmalloc_minimal.so.4 / libtcmalloc.so.4 only")
    info = elf_info(lib.path)
    if info is None:
        raise NotTcmalloc(f"tcmalloc's library file {lib.path} cannot be read: make it available at that path")
    how: Dict[str, str] = {"library": _linked_how(target, lib)}
    notes: List[str] = []
    m = info.find_bytes(_VERSION)
    version = m.group(1).decode() if m else None
    bid = lib.build_id or info.build_id
    layout = with_debug_info(target, version or "2.10") if _has_dwarf(info, bid) else None
    if layout is None:
        layout = from_table(bid)
        if layout is not None and version and version != layout.version:
            layout = None
    if layout is None:
        raise NotTcmalloc(f"{base} (gperftools {version or 'of unknown version'}, build-id {bid or '?'}) has no "
                          f"debug info and is not in heaplens' layout table: {REGEN}")
    version = version or layout.version

    syms = {k: info.symbol(v) for k, v in SYM.items()}
    if syms["thread_heaps_"] is None:
        raise NotTcmalloc(f"{base} does not export tcmalloc::ThreadCache::thread_heaps_: not a gperftools "
                          f"tcmalloc heaplens knows ({REGEN})")
    roots: Dict[str, int] = {}
    for key, name in DEBUG_NAMES.items():
        a = target.symbol(name, lib.path)
        if a is not None:
            roots[key] = a
            how[key] = f"symbol {name} (debug info)"
    if len(roots) < 3:
        found, stride, why = decode_init_static_vars(info)
        for key, addr in found.items():
            if key not in roots:
                roots[key] = addr + lib.base
                how[key] = "rip-relative lea before the call in the exported Static::InitStaticVars()"
        if len(roots) < 3:
            raise NotTcmalloc(f"tcmalloc's hidden globals could not be found in {base}: {why}; {REGEN}")
        if stride is not None and stride != layout.cf_stride:
            raise NotTcmalloc(f"{base}: InitStaticVars() steps through the central cache by {stride} bytes but the "
                              f"layout says {layout.cf_stride}: the layout does not match this build; {REGEN}")
    how["thread_heaps_"] = "exported symbol ThreadCache::thread_heaps_"

    inited = syms["inited_"]
    if inited is not None:
        try:
            if reader.read(inited + lib.base, 1) == b"\0":
                raise NotTcmalloc(f"{base} is loaded but has not initialised yet (no allocation through it so far)")
        except ReadError:
            raise NotTcmalloc(f"tcmalloc's data (Static::inited_ at {inited + lib.base:#x}) is not in the snapshot: "
                              + _missing(target))
    roots_ = TcRoots(lib, layout, version, roots["sizemap_"], roots["central_cache_"], roots["pageheap_"],
                     syms["thread_heaps_"] + lib.base,
                     syms["pageheap_lock_"] + lib.base if syms["pageheap_lock_"] is not None else None,
                     syms["thread_heap_count_"] + lib.base if syms["thread_heap_count_"] is not None else None,
                     how=how, notes=notes)
    roots_.sizes = read_sizemap(reader, roots_, target)
    return roots_


def _has_dwarf(info, build_id: Optional[str]) -> bool:
    """Whether debug info for the library can exist (in it, or a separate file by build-id):
    asking the debugger for types costs a DWARF search otherwise wasted on a stripped library."""
    from ..objfiles import debug_file_for
    try:
        if info.elf.get_section_by_name(".debug_info") is not None:
            return True
    except Exception:          # an unreadable section table: let the debugger answer
        return True
    return debug_file_for(build_id) is not None


def _missing(target: Target) -> str:
    w = target.warnings()
    return w[0] if w else "the core is truncated or was written without the library's data"


def read_sizemap(reader: CachedReader, roots: TcRoots, target: Target) -> SizeMap:
    lay = roots.layout
    try:
        raw = reader.read(roots.sizemap, lay.sm_size)
    except ReadError:
        raise NotTcmalloc(f"tcmalloc's size map at {roots.sizemap:#x} is not in the snapshot: " + _missing(target))
    n = struct.unpack_from("<Q", raw, lay.sm_num_classes)[0]
    k = lay.max_classes
    size = list(struct.unpack_from(f"<{k}i", raw, lay.sm_class_size))
    pages = list(struct.unpack_from(f"<{k}Q", raw, lay.sm_class_pages))
    move = list(struct.unpack_from(f"<{k}i", raw, lay.sm_to_move))
    bad = None
    if not 2 <= n <= k:
        bad = f"num_size_classes = {n}"
    elif size[1] < 8 or any(size[c] <= size[c - 1] for c in range(2, n)):
        bad = "class sizes are not increasing"
    elif any(not 1 <= pages[c] <= 1024 or not 1 <= move[c] <= 1 << 16 for c in range(1, n)):
        bad = "pages per span or batch sizes out of range"
    if bad:
        raise NotTcmalloc(f"tcmalloc's size map at {roots.sizemap:#x} does not look initialised or the layout is "
                          f"wrong ({bad}); {REGEN}")
    return SizeMap(int(n), size[:n], pages[:n], move[:n])

