"""The maps of one ELF file: where its DWARF is (the file itself, or a separate debug file by
build-id or .gnu_debuglink), decoding it once, caching it by build-id, and saying in one
sentence what is missing when there is nothing to decode. Nothing here raises."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..elfinfo import local_file
from . import cache
from .decode import decode_cfa, decode_dwarf
from .globals import GlobalMap
from .locations import LocationMap
from .typemap import TypeMap

DEBUG_DIRS = ("/usr/lib/debug",)


@dataclass
class FileMaps:
    path: str                          # the file as loaded
    fid: str                           # the id in type keys: "dwarf:<fid>:<die offset>"
    build_id: Optional[str]
    debug_path: Optional[str]          # where the DWARF came from (None: no DWARF)
    types: TypeMap
    locations: LocationMap
    globals: GlobalMap
    stats: dict = field(default_factory=dict)
    error: Optional[str] = None        # one sentence: what is missing, or what could not be read
    notes: List[str] = field(default_factory=list)

    @property
    def has_dwarf(self) -> bool:
        return self.debug_path is not None and len(self.types) > 0

    def type_key(self, die_offset: int) -> str:
        return f"dwarf:{self.fid}:{die_offset}"


def _empty(path: str, fid: str, build_id: Optional[str], error: str, stats: Optional[dict] = None) -> FileMaps:
    return FileMaps(path, fid, build_id, None, TypeMap(fid, {}), LocationMap({}, []), GlobalMap({}),
                    dict(stats or {}, cached=False), error)


def file_id(path: str, build_id: Optional[str]) -> str:
    if build_id:
        return build_id[:16]
    try:
        st = os.stat(path)
        ident = f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        ident = path
    return "f" + hashlib.sha1(ident.encode()).hexdigest()[:15]


def _open(path: str):
    from elftools.elf.elffile import ELFFile
    f = open(path, "rb")
    try:
        return f, ELFFile(f)
    except Exception:
        f.close()
        raise


def _build_id(elf) -> Optional[str]:
    for sec in elf.iter_sections():
        if sec["sh_type"] == "SHT_NOTE":
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return note["n_desc"]
    return None


def _has_debug_info(elf) -> bool:
    sec = elf.get_section_by_name(".debug_info")
    return sec is not None and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] > 0


def _debuglink(elf) -> Optional[str]:
    sec = elf.get_section_by_name(".gnu_debuglink")
    if sec is None or sec["sh_type"] == "SHT_NOBITS":
        return None
    data = sec.data()
    name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
    return name or None


def find_debug_file(path: str, build_id: Optional[str], elf=None,
                    debug_dirs: Sequence[str] = DEBUG_DIRS) -> Optional[str]:
    """The separate debug file of `path`: /usr/lib/debug/.build-id/xx/yyyy.debug, else the
    .gnu_debuglink name next to the file, in its .debug/ directory, or under /usr/lib/debug
    plus the file's directory (gdb's search order)."""
    cands = []
    if build_id and len(build_id) > 2:
        for d in debug_dirs:
            cands.append(os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug"))
    link = _debuglink(elf) if elf is not None else None
    if link:
        here = os.path.dirname(os.path.realpath(path))
        cands += [os.path.join(here, link), os.path.join(here, ".debug", link)]
        for d in debug_dirs:
            cands.append(os.path.join(d, here.lstrip("/"), link))
            if here.startswith("/usr/"):                 # merged /usr: /lib/x86_64-linux-gnu too
                cands.append(os.path.join(d, here[len("/usr/"):], link))
    real = os.path.realpath(path)
    for c in cands:
        if os.path.isfile(c) and os.path.realpath(c) != real:
            return c
    return None


def _tls_segment(elf) -> List[int]:
    try:
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_TLS":
                return [seg["p_vaddr"], seg["p_memsz"], seg["p_align"]]
    except Exception:           # odd program headers: no TLS placement, nothing else lost
        pass
    return []


def _from_cache(entry, path: str) -> Optional[FileMaps]:
    meta, cols, strs, blobs = entry
    fid = meta["fid"]
    try:
        tcols = {c: cols.get("t." + c, []) for c in TypeMap.COLUMNS}
        tcols.update({c: strs.get("t." + c, []) for c in TypeMap.STRINGS})
        lcols = {c: cols.get("l." + c, []) for c in LocationMap.COLUMNS}
        lcols.update({c: strs.get("l." + c, []) for c in LocationMap.STRINGS})
        gcols = {c: cols.get("g." + c, []) for c in GlobalMap.COLUMNS}
        gcols.update({c: strs.get("g." + c, []) for c in GlobalMap.STRINGS})
        groups = [[tcols[c] for c in ("off", "kind", "flags", "size", "ref", "astart", "acount", "definition", "name")],
                  [tcols[c] for c in ("m_off", "m_type", "m_flags", "m_var", "m_name")],
                  [lcols[c] for c in ("v_name", "v_type", "v_kind", "v_lkind", "v_loc")],
                  [lcols[c] for c in ("s_kind", "s_parent", "s_name", "s_rstart", "s_rcount", "s_vstart", "s_vcount")],
                  [lcols[c] for c in ("f_scope0", "f_scope1", "f_fb_kind", "f_fb", "f_die", "f_lo")],
                  [lcols[c] for c in ("r_lo", "r_hi", "r_func")], [lcols[c] for c in ("e_lo", "e_hi", "e_expr")],
                  [lcols[c] for c in ("cf_lo", "cf_hi", "cf_reg", "cf_off")],
                  [gcols[c] for c in GlobalMap.COLUMNS + GlobalMap.STRINGS]]
        if any(len({len(col) for col in g}) > 1 for g in groups):
            return None                       # columns of one table disagree: not ours, a miss
        fm = FileMaps(path, fid, meta.get("build_id"), meta.get("debug_path"), TypeMap(fid, tcols),
                      LocationMap(lcols, blobs), GlobalMap(gcols, meta.get("tls")), dict(meta.get("stats", {})),
                      meta.get("error"), list(meta.get("notes", [])))
    except (KeyError, TypeError):
        return None
    return fm


def _to_cache(fm: FileMaps, path: str) -> bool:
    cols, strs = {}, {}
    for prefix, obj, C, S in (("t.", fm.types, TypeMap.COLUMNS, TypeMap.STRINGS),
                              ("l.", fm.locations, LocationMap.COLUMNS, LocationMap.STRINGS),
                              ("g.", fm.globals, GlobalMap.COLUMNS, GlobalMap.STRINGS)):
        for c in C:
            cols[prefix + c] = getattr(obj, c)
        for c in S:
            strs[prefix + c] = getattr(obj, c)
    stats = {k: v for k, v in fm.stats.items() if k not in ("cached", "load_seconds")}
    meta = dict(fid=fm.fid, build_id=fm.build_id, debug_path=fm.debug_path, path=fm.path, stats=stats,
                error=fm.error, notes=fm.notes, tls=fm.globals.tls)
    return cache.save(path, meta, cols, strs, fm.locations.blobs, unsigned=("t.vv_value",))


def load_file_maps(path: str, build_id: Optional[str] = None, *, use_cache: bool = True,
                   cache_dir: Optional[str] = None, debug_dirs: Sequence[str] = DEBUG_DIRS) -> FileMaps:
    """The maps of the ELF file at `path` (executable or shared object). Decoded on first use
    (stats["decode_seconds"]) and then loaded from the cache (stats["cached"], stats["load_seconds"]).
    Without DWARF, empty maps and `error` says what is missing. Never raises."""
    t0 = time.perf_counter()
    try:
        return _load(path, build_id, use_cache, cache_dir, debug_dirs, t0)
    except Exception as e:            # the last guard: a bug here must not break a report
        return _empty(path, file_id(path, build_id), build_id,
                      f"{path}: its debug info could not be decoded ({type(e).__name__}: {e})")


def _load(path, build_id, use_cache, cache_dir, debug_dirs, t0) -> FileMaps:
    name = os.path.basename(path) or path
    try:
        fh, elf = _open(local_file(path))
    except FileNotFoundError:
        return _empty(path, file_id(path, build_id), build_id, f"{path} does not exist: no maps for it")
    except Exception as e:
        return _empty(path, file_id(path, build_id), build_id,
                      f"{path} is not a readable ELF file ({type(e).__name__}): no maps for it")
    with fh:
        try:
            bid = build_id or _build_id(elf)
        except Exception:
            bid = build_id
        fid = file_id(path, bid)
        key = bid if bid else fid
        cpath = cache.cache_path(key, cache_dir)
        if use_cache:
            entry = cache.load(cpath)
            if entry is not None:
                fm = _from_cache(entry, path)
                if fm is not None:
                    fm.stats["cached"] = True
                    fm.stats["load_seconds"] = round(time.perf_counter() - t0, 3)
                    fm.stats["cache_file"] = cpath
                    return fm
        tls = _tls_segment(elf)
        src_path, src_elf, src_fh = None, None, None
        if _has_debug_info(elf):
            src_path, src_elf = path, elf
        else:
            dbg = find_debug_file(path, bid, elf, debug_dirs)
            if dbg is not None:
                try:
                    src_fh, src_elf = _open(dbg)
                    if _has_debug_info(src_elf):
                        src_path = dbg
                    else:
                        src_fh.close()
                        src_fh, src_elf = None, None
                except Exception:
                    src_fh, src_elf = None, None
        if src_path is None:
            hint = "build with -g" if not path.startswith(("/usr/", "/lib")) else \
                "install its debug symbols (the -dbg or -dbgsym package)"
            return _empty(path, fid, bid, f"{path} has no DWARF debug info: {hint}")
        try:
            try:
                dwarf = src_elf.get_dwarf_info(follow_links=False)
            except TypeError:                          # older pyelftools: no follow_links
                dwarf = src_elf.get_dwarf_info()
        except Exception as e:
            if src_fh is not None:
                src_fh.close()
            return _empty(path, fid, bid, f"the DWARF of {src_path} cannot be read by pyelftools "
                                         f"({type(e).__name__}: {e}): no maps for {name}")
        notes = []
        try:
            if src_elf.get_section_by_name(".gnu_debugaltlink") is not None:
                notes.append(f"{src_path} refers to a dwz supplementary file: types and names kept there "
                             "are not decoded")
        except Exception:
            pass
        try:
            tm, lm, gm, stats, failures = decode_dwarf(dwarf, fid, tls)
            t1 = time.perf_counter()
            try:
                unwind = dwarf if src_elf is elf else elf.get_dwarf_info()
                cf, cf_failed = decode_cfa(unwind)
                if not cf["cf_lo"] and src_elf is not elf:
                    cf, cf_failed = decode_cfa(dwarf)      # .debug_frame in the debug file
            except Exception:
                cf, cf_failed = {}, 1
            for c, col in cf.items():
                setattr(lm, c, col)
            stats["cfa_rows"] = len(lm.cf_lo)
            stats["cfa_fdes_failed"] = cf_failed
            stats["decode_seconds"] = round(stats["decode_seconds"] + time.perf_counter() - t1, 3)
        finally:
            if src_fh is not None:
                src_fh.close()
    error = None
    if stats["cus_failed"]:
        error = (f"{stats['cus_failed']} of {stats['cus']} compilation units of {src_path} could not be "
                 f"decoded (first: {failures[0] if failures else '?'}); their types and functions are missing")
        notes.extend(failures)
    if stats["unsupported_refs"]:
        notes.append(f"{stats['unsupported_refs']} references to type units or supplementary files not followed")
    stats["cached"] = False
    stats["source"] = src_path
    fm = FileMaps(path, fid, bid, src_path, tm, lm, gm, stats, error, notes)
    if use_cache and stats["cus"] > stats["cus_failed"]:
        fm.stats["cache_written"] = _to_cache(fm, cpath)
        fm.stats["cache_file"] = cpath
    fm.stats["load_seconds"] = round(time.perf_counter() - t0, 3)
    return fm
