"""jemalloc 5.3 layouts read from an ELF file with DWARF (a debug file, or an unstripped library or
program): struct offsets, the link-time addresses of the hidden globals, the build's configuration.

The same function makes the shipped tables (scripts/layouts/jemalloc_extract.py runs it on a
rebuild of Debian's package) and reads a debug file found at run time, so the two cannot drift.
The result is a plain dict, the format of common/allocators/data/jemalloc-*.json:

  structs:  {tag: {"size": n, "fields": {name: [offset, size]}}}
  globals:  {symbol: [link-time address (TLS symbols: offset in the TLS segment), size]}
  config:   lg_vaddr, lg_page, nsizes, nbins, tcache_nbins_max, rtree geometry, edata bit fields
(the TLS GOT slot that leads to each thread's tsd is read from the library file itself at run time)
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

# tsd_t's members are mangled so that jemalloc's own code must use accessors
TSD_PREFIX = "cant_access_tsd_items_directly_use_a_getter_or_setter_"

# struct tag -> the members the walker reads (found through anonymous unions/structs)
FIELDS: Dict[str, Tuple[str, ...]] = {
    "edata_s": ("e_bits", "e_addr", "e_size_esn", "e_slab_data"),
    "bin_info_s": ("reg_size", "slab_size", "nregs", "n_shards", "bitmap_info"),
    "bitmap_info_s": ("nbits", "ngroups"),
    "cache_bin_s": ("stack_head", "low_bits_low_water", "low_bits_full", "low_bits_empty"),
    "cache_bin_info_s": ("ncached_max",),
    "tcache_s": ("tcache_slow", "bins"),
    "tcache_slow_s": ("link", "arena", "tcache", "dyn_alloc"),
    "tsd_s": ("state", "tcache", "tcache_slow", "arena", "iarena", "tcache_enabled",
              "thread_allocated", "thread_deallocated", "tsd_link"),
    "arena_s": ("nthreads", "stats", "tcache_ql", "large", "pa_shard", "ind", "base", "bins"),
    "arena_stats_s": ("internal", "allocated_large", "lstats"),
    "arena_stats_large_s": ("nmalloc", "ndalloc"),
    "pa_shard_s": ("nactive", "pac"),
    "pac_s": ("ecache_dirty", "ecache_muzzy", "ecache_retained"),
    "ecache_s": ("eset",),
    "eset_s": ("npages",),
    "base_s": ("allocated", "resident", "mapped", "blocks"),
    "base_block_s": ("size", "next"),
    "emap_s": ("rtree",),
    "rtree_s": ("root",),
    "rtree_node_elm_s": ("child",),
    "rtree_leaf_elm_s": (),
    "bin_s": ("stats", "slabcur", "slabs_nonfull", "slabs_full"),
    "bin_stats_s": ("nmalloc", "ndalloc", "curregs", "curslabs", "nonfull_slabs"),
}

# hidden globals (static ones too: they are in .symtab of a debug file)
GLOBALS = ("je_arenas", "narenas_total", "je_narenas_auto", "je_arena_emap_global", "je_bin_infos",
           "je_sz_index2size_tab", "je_tcache_bin_info", "je_nhbins", "je_arena_bin_offsets", "je_tsd_tls",
           "tsd_nominal_tsds", "b0", "je_opt_tcache", "je_tcache_maxclass", "je_opt_narenas")
REQUIRED_GLOBALS = ("je_arenas", "je_narenas_auto", "je_arena_emap_global", "je_bin_infos",
                    "je_sz_index2size_tab", "je_tcache_bin_info", "je_nhbins", "je_tsd_tls")

VERSION_RE = re.compile(rb"(?<![0-9.])(\d+\.\d+\.\d+)-\d+-g[0-9a-f]{40}")
_MACRO_RE = {name: re.compile(rb"(?:^|\x00)" + name.encode() + rb" (\d+)\x00")
             for name in ("LG_VADDR", "LG_PAGE", "LG_QUANTUM", "SC_LG_TINY_MIN")}
MALLOCX_ARENA_BITS = 12       # fixed in jemalloc 5.x (MALLOCX_ARENA_LIMIT = 4095)


class DwarfError(Exception):
    """The file's debug info lacks what the walker needs: the message says what."""


def _name(die) -> Optional[str]:
    a = die.attributes.get("DW_AT_name")
    return a.value.decode("utf-8", "replace") if a is not None else None


def _strip(t):
    """Through typedefs and qualifiers to the underlying type DIE."""
    n = 0
    while t is not None and t.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                                      "DW_TAG_atomic_type", "DW_TAG_restrict_type") and n < 32:
        t = t.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in t.attributes else None
        n += 1
    return t


def _type_size(t) -> Optional[int]:
    t = _strip(t)
    if t is None:
        return None
    if "DW_AT_byte_size" in t.attributes:
        return t.attributes["DW_AT_byte_size"].value
    if t.tag == "DW_TAG_array_type":
        el = _type_size(t.get_DIE_from_attribute("DW_AT_type"))
        n = 1
        for sub in t.iter_children():
            if sub.tag == "DW_TAG_subrange_type":
                if "DW_AT_count" in sub.attributes:
                    n *= sub.attributes["DW_AT_count"].value
                elif "DW_AT_upper_bound" in sub.attributes:
                    n *= sub.attributes["DW_AT_upper_bound"].value + 1
                else:
                    n = 0                 # flexible array member
        return el * n if el is not None else None
    if t.tag == "DW_TAG_pointer_type":
        return 8
    return None


def _member(struct, name: str, depth: int = 0) -> Optional[Tuple[int, Optional[int]]]:
    """(offset, size) of member `name`, looking inside anonymous unions/structs."""
    for m in struct.iter_children():
        if m.tag != "DW_TAG_member":
            continue
        loc = m.attributes.get("DW_AT_data_member_location")
        off = loc.value if loc is not None and isinstance(loc.value, int) else 0
        mt = m.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in m.attributes else None
        nm = _name(m)
        if nm == name:
            return off, _type_size(mt)
        if nm is None and depth < 4:
            inner = _strip(mt)
            if inner is not None and inner.tag in ("DW_TAG_union_type", "DW_TAG_structure_type"):
                r = _member(inner, name, depth + 1)
                if r is not None:
                    return off + r[0], r[1]
    return None


# jemalloc's own compile units (each includes every internal header); in a program with jemalloc
# linked in, only these are searched, not the program's own (possibly thousands of) units
_JE_UNITS = ("jemalloc.c", "arena.c", "tcache.c", "emap.c", "extent.c", "tsd.c", "large.c", "ctl.c")


def _struct_dies(dwarf) -> Dict[str, Any]:
    """Complete struct/union definitions by tag, from jemalloc's compile units (jemalloc.c's
    unit includes nearly every internal header: usually one unit is enough)."""
    want = set(FIELDS)
    found: Dict[str, Any] = {}
    for cu in dwarf.iter_CUs():
        top = cu.get_top_DIE()
        name = (_name(top) or "").replace("\\", "/")
        if not name.endswith(tuple("/" + u for u in _JE_UNITS)) and name not in _JE_UNITS:
            continue
        for die in top.iter_children():
            if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") \
                    and "DW_AT_declaration" not in die.attributes:
                nm = _name(die)
                if nm in want and nm not in found:
                    found[nm] = die
        if len(found) == len(want):
            break
    return found


def _symbols(elf) -> Tuple[Dict[str, Tuple[int, int, str]], List[str]]:
    """name -> (value, size, type) of the wanted globals from .symtab (then .dynsym)."""
    from elftools.elf.sections import SymbolTableSection
    out: Dict[str, Tuple[int, int, str]] = {}
    dups: List[str] = []
    want = set(GLOBALS)
    for secname in (".symtab", ".dynsym"):
        sec = elf.get_section_by_name(secname)
        if not isinstance(sec, SymbolTableSection):
            continue
        for sym in sec.iter_symbols():
            if sym.name in want and sym["st_shndx"] != "SHN_UNDEF":
                v = (sym["st_value"], sym["st_size"], sym["st_info"]["type"])
                if sym.name in out and out[sym.name][:2] != v[:2]:
                    dups.append(sym.name)
                out.setdefault(sym.name, v)
    return out, dups


def _macros(elf) -> Dict[str, int]:
    """Configuration macros kept by -g3 builds (jemalloc's configure adds -g3): their
    definitions sit in .debug_str as 'NAME VALUE'."""
    sec = elf.get_section_by_name(".debug_str")
    if sec is None:
        return {}
    data = sec.data()
    out = {}
    for name, rx in _MACRO_RE.items():
        m = rx.search(data)
        if m:
            out[name] = int(m.group(1))
    return out


def version_string(elf) -> Optional[str]:
    """jemalloc's version string (e.g. 5.3.0-0-g54eaed1d...) from the file's read-only data."""
    for name in (".rodata", ".data.rel.ro"):
        sec = elf.get_section_by_name(name)
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            continue
        m = VERSION_RE.search(sec.data())
        if m:
            return m.group(0).decode()
    return None


def edata_bits(nsizes: int, lg_page: int, lg_tiny_min: int = 3) -> Dict[str, List[int]]:
    """[shift, width] of the e_bits fields (edata.h, jemalloc 5.3): arena, slab, committed, pai,
    zeroed, guarded, state, szind, nfree, bin_shard, is_head, packed in that order."""
    widths = [("arena", MALLOCX_ARENA_BITS), ("slab", 1), ("committed", 1), ("pai", 1), ("zeroed", 1),
              ("guarded", 1), ("state", 3), ("szind", max(1, math.ceil(math.log2(nsizes)))),
              ("nfree", lg_page - lg_tiny_min + 1), ("binshard", 6), ("is_head", 1)]
    out, shift = {}, 0
    for name, w in widths:
        out[name] = [shift, w]
        shift += w
    return out


def lg_vaddr_candidates(root_len: int, lg_page: int, compact: bool) -> List[int]:
    """LG_VADDR values whose rtree (rtree.h) has a root of root_len entries and the given leaf form."""
    out = []
    for lg_vaddr in range(32, 65):
        nsb = lg_vaddr - lg_page
        height = 1 if nsb <= 10 else 2 if nsb <= 36 else 3 if nsb <= 52 else 0
        if not height:
            continue
        if 1 << (nsb // height) == root_len and ((64 - lg_vaddr) >= 8) == compact:
            out.append(lg_vaddr)
    return out


def extract(path: str) -> Dict[str, Any]:
    """The layout dict of the jemalloc in ELF file `path` (which must carry DWARF and .symtab)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            raise DwarfError(f"{path} has no DWARF debug info")
        dies = _struct_dies(elf.get_dwarf_info())
        if not dies:
            raise DwarfError(f"{path}'s debug info has no jemalloc compile unit")
        missing = [t for t in FIELDS if t not in dies]
        if missing:
            raise DwarfError(f"{path}: debug info lacks struct {', '.join(missing[:4])} (not jemalloc 5.3?)")
        structs: Dict[str, Any] = {}
        for tag, names in FIELDS.items():
            die = dies[tag]
            fields = {}
            for n in names:
                r = _member(die, n) or (_member(die, TSD_PREFIX + n) if tag == "tsd_s" else None)
                if r is None:
                    raise DwarfError(f"{path}: struct {tag} has no member {n} (not jemalloc 5.3?)")
                fields[n] = [r[0], r[1]]
            structs[tag] = {"size": die.attributes["DW_AT_byte_size"].value if "DW_AT_byte_size" in die.attributes
                            else None, "fields": fields}
        syms, dups = _symbols(elf)
        missing = [g for g in REQUIRED_GLOBALS if g not in syms]
        if missing:
            raise DwarfError(f"{path}: no symbol {', '.join(missing)} in its symbol table")
        if dups:
            raise DwarfError(f"{path}: symbol(s) {', '.join(dups)} defined twice")
        macros = _macros(elf)
        version = version_string(elf)
        build_id = None
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        build_id = note["n_desc"]
    return _assemble(structs, {k: [v[0], v[1]] for k, v in syms.items()},
                     {k: v[2] for k, v in syms.items()}, macros, version, build_id, path)


def _assemble(structs, globs, symtypes, macros, version, build_id, path) -> Dict[str, Any]:
    S = lambda t: structs[t]["size"]
    F = lambda t, f: structs[t]["fields"][f]
    lg_page = macros.get("LG_PAGE", 12)
    bin_info = S("bin_info_s")
    nsizes = globs["je_sz_index2size_tab"][1] // 8
    nbins = globs["je_bin_infos"][1] // bin_info if bin_info else 0
    root_len = (S("rtree_s") - F("rtree_s", "root")[0]) // S("rtree_node_elm_s")
    compact = S("rtree_leaf_elm_s") == 8
    cands = lg_vaddr_candidates(root_len, lg_page, compact)
    lg_vaddr = macros.get("LG_VADDR")
    how = "macro LG_VADDR in the debug info"
    if lg_vaddr is None:
        if len(cands) != 1 and 48 not in cands:
            raise DwarfError(f"{path}: cannot tell the rtree's LG_VADDR (candidates {cands})")
        lg_vaddr = 48 if 48 in cands else cands[0]
        how = f"rtree root of {root_len} entries"
    elif lg_vaddr not in cands:
        raise DwarfError(f"{path}: LG_VADDR {lg_vaddr} disagrees with the rtree root of {root_len} entries")
    if symtypes.get("je_tsd_tls") != "STT_TLS":
        raise DwarfError(f"{path}: je_tsd_tls is not a thread-local symbol")
    config = {"lg_vaddr": lg_vaddr, "lg_vaddr_from": how, "lg_page": lg_page,
              "lg_quantum": macros.get("LG_QUANTUM"), "nsizes": nsizes, "nbins": nbins,
              "tcache_nbins_max": (S("tcache_s") - F("tcache_s", "bins")[0]) // S("cache_bin_s"),
              "rtree_root_len": root_len, "rtree_leaf_compact": compact,
              "bitmap_groups": F("edata_s", "e_slab_data")[1] // 8 if F("edata_s", "e_slab_data")[1] else 8,
              "edata_bits": edata_bits(nsizes, lg_page, macros.get("SC_LG_TINY_MIN", 3)),
              "edata_alignment": 128}
    return {"version": version.split("-")[0] if version else None, "version_string": version,
            "build_id": build_id, "config": config, "structs": structs, "globals": globs}
