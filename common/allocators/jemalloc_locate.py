"""Find jemalloc in a target: the object that holds it (a shared libjemalloc, linked or
LD_PRELOADed, or a program with jemalloc linked in and its symbol table kept), its version, the
layout of its structures and the run-time addresses of its hidden globals.

Debian's libjemalloc.so.2 is stripped and exports only the malloc API, so its globals
(je_arenas, je_arena_emap_global, ...) have no symbol at run time: their addresses, like the
struct offsets, come from debug info when there is some, else from a table keyed by the
library's build-id (data/jemalloc-*.json, made by rebuilding Debian's package with -g).
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..elfinfo import R_X86_64_TPOFF64, ElfInfo, elf_info, file_version
from ..memcache import CachedReader
from ..objfiles import debug_file_for
from ..target import ObjFile, Target
from .base import NotThisAllocator
from .jemalloc_dwarf import VERSION_RE, DwarfError, extract
from .jemalloc_layout import JeLayout, supported, tables

_LIB_NAME = re.compile(r"(^|/)libjemalloc[^/]*\.so(\.\d+)*$")
_MARKER = "je_arena_emap_global"        # a hidden global every 5.x build has (static builds keep it)


class NotJemalloc(NotThisAllocator):
    """jemalloc is not in use or cannot be walked; the message says what is missing."""


@dataclass
class JeRoots:
    obj: ObjFile
    layout: JeLayout
    kind: str                                   # "shared" or "static"
    how: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    tls_slots: List[Tuple[int, int]] = field(default_factory=list)   # (GOT slot runtime addr, TLS offset)
    exe_tls: Optional[Tuple[int, int, int]] = None                   # (vaddr, memsz, align) of PT_TLS

    def addr(self, name: str) -> Optional[int]:
        a = self.layout.glob(name)
        return None if a is None else a + self.obj.base


def find_object(target: Target) -> Optional[Tuple[ObjFile, ElfInfo, str]]:
    """(object, its ElfInfo, "shared" | "static") holding jemalloc, or None. Shared libraries are
    recognised by name; a program with jemalloc linked in by its symbol table."""
    objs = target.objfiles()
    for o in objs:
        if _LIB_NAME.search(o.path or ""):
            info = elf_info(o.path)
            if info is not None:
                return o, info, "shared"
    for o in objs[:1]:                            # the executable
        info = elf_info(o.path) if o.path else None
        if info is not None and info.symbol(_MARKER) is not None:
            return o, info, "static"
    return None


# free()'s inlined rtree lookup masks the pointer with ~(leaf span - 1): the span (LG_PAGE 12 +
# the last level's bits) tells the address width the build assumed (rtree.h)
_LEAF_MASK_VADDR = {0xC0000000: 48, 0xF8000000: 57}


def lg_vaddr_from_code(info: ElfInfo) -> Optional[int]:
    """LG_VADDR of a (stripped) jemalloc from the leaf-key mask in its exported free(), or None."""
    try:
        syms = info.elf.get_section_by_name(".dynsym")
        found = syms.get_symbol_by_name("free") if syms is not None else None
        text = info.section(".text")
        if not found or text is None:
            return None
        addr, size = found[0]["st_value"], min(found[0]["st_size"] or 512, 4096)
        code = text[1][addr - text[0]:addr - text[0] + size]
    except Exception:              # odd ELF: no answer rather than a wrong one
        return None
    hits = set()
    for imm, bits in _LEAF_MASK_VADDR.items():
        pat = imm.to_bytes(4, "little")
        for m in re.finditer(re.escape(pat), code):
            i = m.start()
            # and $imm32, %reg64: REX.W 81 /4 (ModRM 0xE0-0xE7) or REX.W 25 (rax)
            if (i >= 3 and code[i - 3] in (0x48, 0x49) and code[i - 2] == 0x81 and 0xE0 <= code[i - 1] <= 0xE7) \
                    or (i >= 2 and code[i - 2] == 0x48 and code[i - 1] == 0x25):
                hits.add(bits)
    return hits.pop() if len(hits) == 1 else None


@functools.lru_cache(maxsize=32)
def _version_in(path: str, mtime: float, size: int) -> Optional[str]:
    """jemalloc's version string in a file's read-only data (searched once per file version)."""
    info = elf_info(path)
    m = info.find_bytes(VERSION_RE) if info is not None else None
    return m.group(0).decode() if m else None


def version_in(path: str) -> Optional[str]:
    key = file_version(path)
    return _version_in(*key) if key is not None else None


def _static_without_symbols(target: Target) -> Optional[str]:
    objs = target.objfiles()
    v = version_in(objs[0].path) if objs and objs[0].path else None
    return v.split("-")[0] if v else None


def locate(target: Target, reader: CachedReader) -> JeRoots:
    found = find_object(target)
    if found is None:
        v = _static_without_symbols(target)
        if v:
            raise NotJemalloc(f"jemalloc {v} is linked into {os.path.basename(target.objfiles()[0].path)}, "
                              "whose symbol table is stripped: its heap cannot be located (keep the symbol "
                              "table, or link with libjemalloc.so)")
        raise NotJemalloc("no jemalloc is loaded in this program", present=False)
    obj, info, kind = found
    how: Dict[str, str] = {"jemalloc": f"{'library' if kind == 'shared' else 'linked into'} {obj.path}"}
    version = version_in(obj.path)
    lay, lhow = _layout(obj, info, kind, version)
    how["layout"] = lhow
    how["version"] = f"version string {version} in {os.path.basename(obj.path)}" if version else \
        f"layout's version {lay.version_string}"
    if not supported(lay.version):
        raise NotJemalloc(f"jemalloc {lay.version} ({obj.path}) is not supported: heaplens walks jemalloc 5.3")
    roots = JeRoots(obj, lay, kind, how)
    if kind == "shared":
        roots.tls_slots = _tls_slots(info, obj.base)
    else:
        for seg in info.elf.iter_segments():
            if seg["p_type"] == "PT_TLS":
                roots.exe_tls = (seg["p_vaddr"], seg["p_memsz"], seg["p_align"])
    return roots


def _tls_slots(info: ElfInfo, base: int) -> List[Tuple[int, int]]:
    """(runtime GOT slot, offset in the library's TLS block it resolves to) of every
    R_X86_64_TPOFF64 relocation: at run time the slot holds thread-pointer offset of the block +
    that offset (the addend, plus the symbol's value when the relocation names one)."""
    from elftools.elf.sections import SymbolTableSection
    dynsym = info.elf.get_section_by_name(".dynsym")
    out = []
    for off, typ, sym, addend in info.rela:
        if typ != R_X86_64_TPOFF64:
            continue
        value = 0
        if sym and isinstance(dynsym, SymbolTableSection):
            try:
                value = dynsym.get_symbol(sym)["st_value"]
            except Exception:       # a bad symbol index: skip the slot rather than guess
                continue
        out.append((off + base, value + addend))
    return out


def _layout(obj: ObjFile, info: ElfInfo, kind: str, version: Optional[str]) -> Tuple[JeLayout, str]:
    """The layout and a phrase saying where it came from, or NotJemalloc with what to install."""
    tried: List[str] = []
    cands = []
    if info.section_range(".debug_info") is not None:
        cands.append(obj.path)
    dirs = ["/usr/lib/debug"] + [d for d in os.environ.get("HEAPLENS_DEBUG_DIRS", "").split(":") if d]
    dbg = debug_file_for(obj.build_id or info.build_id, tuple(dirs))
    if dbg:
        cands.append(dbg)
    for path in cands:
        try:
            d = extract(path)
        except DwarfError as e:
            tried.append(str(e))
            continue
        except Exception as e:          # pyelftools on an odd file: fall back to the tables
            tried.append(f"{path}: unreadable debug info ({type(e).__name__})")
            continue
        if path != obj.path and d.get("build_id") not in (None, obj.build_id or info.build_id):
            tried.append(f"{path}: build-id differs")
            continue
        return JeLayout(d, "debug info"), f"debug info in {path}"
    bid = obj.build_id or info.build_id
    t = tables().get(bid or "")
    code_vaddr = lg_vaddr_from_code(info) if kind == "shared" else None
    if t is not None:
        if version and t.get("version_string") and t["version_string"] != version:
            raise NotJemalloc(f"jemalloc build-id {bid}: its layout table is for {t['version_string']} but the "
                              f"library says {version}; regenerate with scripts/layouts/jemalloc.sh")
        if code_vaddr is not None and code_vaddr != t["config"]["lg_vaddr"]:
            raise NotJemalloc(f"jemalloc build-id {bid}: its layout table has LG_VADDR {t['config']['lg_vaddr']} but "
                              f"the library's free() uses a {code_vaddr}-bit rtree; regenerate with "
                              "scripts/layouts/jemalloc.sh")
        return (JeLayout(t, f"built-in table for jemalloc {t['version']} (build-id {bid})"),
                f"built-in table for build-id {bid} ({t.get('source', '')})")
    if kind == "static" and version:
        lay = _static_match(info, version)
        if lay is not None:
            return lay
    what = [f"version {version.split('-')[0]}"] if version else []
    if code_vaddr is not None:
        what.append(f"LG_VADDR {code_vaddr} from its free() code")
    what += tried
    extra = f" ({'; '.join(what)})" if what else ""
    raise NotJemalloc(f"jemalloc build-id {bid} has no layout table: install its debug symbols or regenerate with "
                      f"scripts/layouts/jemalloc.sh{extra}")


def _static_match(info: ElfInfo, version: str) -> Optional[Tuple[JeLayout, str]]:
    """A program linked with a distribution's libjemalloc.a: same build as its .so, so a table of the
    same version fits when every hidden global has the table's size in the program's symbol table
    (tsd_t, rtree, bin and size tables: any configuration change alters one of them). Addresses
    then come from the program's own symbols."""
    sizes = {}
    sec = info.elf.get_section_by_name(".symtab")
    if sec is None:
        return None
    for sym in sec.iter_symbols():
        if sym.name.startswith(("je_", "narenas_total", "tsd_nominal_tsds", "b0")):
            sizes[sym.name] = (sym["st_value"], sym["st_size"])
    for t in tables().values():
        if t.get("version_string") != version:
            continue
        g = t["globals"]
        if all(n in sizes and sizes[n][1] == g[n][1] for n in g):
            d = dict(t, globals={n: [sizes[n][0], g[n][1]] for n in g})
            return (JeLayout(d, f"built-in table for jemalloc {t['version']} (build-id {t['build_id']}), "
                                "matched by symbol sizes"),
                    f"built-in table for build-id {t['build_id']} (same version; every global's size matches "
                    f"{os.path.basename(info.path)}'s symbol table, which gives the addresses)")
    return None
