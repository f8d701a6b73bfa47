"""Source-level names of machine frames without a debugger: for a pc of one ELF file, the
function, the inlined calls expanded into their own frames (as a debugger numbers them), and
each frame's file and line — from the DWARF of the file or of its separate debug file.

Only the compilation unit holding the pc is read (found through .debug_aranges), so a frame in
libc costs one of libc's units, not libc's whole DWARF. Answers are kept per file version in
memory and per build-id on disk (in the maps cache directory, under frames/), so a pile of
cores from the same libc pays once. Names follow gdb: the linkage name when the DWARF gives one (glibc's
`__GI___libc_free`), else the name; C++ names as the DWARF maps spell them come from
common.maps (the caller prefers those for the program's own frames).

    si = source_info(path, build_id)
    si.frames_at(link_pc) -> [SrcFrame(function, file, line)]   # innermost first; [] = no DWARF
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .elfinfo import file_version
from .maps.decode import die_ranges

MAX_CU_DIES = 400_000            # DIEs of one unit walked at most
MAX_DEPTH = 64                   # nesting of inlined calls / blocks followed
MAX_DISK_ENTRIES = 20_000        # pcs kept per build-id on disk
MAX_STRUCT_HITS = 256            # references to a struct's name examined in .debug_info
MAX_STRUCT_UNITS = 16            # units parsed looking for one struct
_SUBPROG, _INLINED, _BLOCK = "DW_TAG_subprogram", "DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"


@dataclass(frozen=True)
class SrcFrame:
    function: str
    file: str = ""
    line: int = 0


def _digest() -> str:
    try:
        with open(__file__, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()[:8]
    except OSError:
        return "0"


class SourceInfo:
    def __init__(self, path: str, build_id: Optional[str]):
        self.path = path
        self.build_id = build_id
        self.error: Optional[str] = None
        self._dwarf = None
        self._fh = None
        self._opened = False
        self._cus: Dict[int, Tuple[list, list]] = {}       # CU offset -> (functions, line rows)
        self._calls: Dict[int, Tuple[dict, dict]] = {}     # CU offset -> (by return pc, tail calls by function)
        self._cu_ranges: Optional[Tuple[List[int], List[Tuple[int, int]]]] = None
        self._memo: Dict[int, List[SrcFrame]] = {}
        self._disk: Optional[Dict[str, list]] = None
        self._dirty = False

    # --- opening --------------------------------------------------------------------------
    def _open(self) -> bool:
        if self._opened:
            return self._dwarf is not None
        self._opened = True
        from elftools.elf.elffile import ELFFile
        from .maps.files import find_debug_file
        try:
            fh = open(self.path, "rb")
            elf = ELFFile(fh)
            src = elf if _has_dwarf(elf) else None
            if src is None:
                dbg = find_debug_file(self.path, self.build_id, elf)
                fh.close()
                if dbg is None:
                    self.error = f"{self.path} has no DWARF debug info"
                    return False
                fh = open(dbg, "rb")
                src = ELFFile(fh)
                if not _has_dwarf(src):
                    fh.close()
                    self.error = f"{dbg} has no DWARF debug info"
                    return False
            try:
                self._dwarf = src.get_dwarf_info(follow_links=False)
            except TypeError:                      # older pyelftools
                self._dwarf = src.get_dwarf_info()
            self._fh = fh
        except Exception as e:                     # unreadable file or DWARF: names from symbols only
            self.error = f"{self.path}: DWARF unreadable ({type(e).__name__}: {e})"
            self._dwarf = None
        return self._dwarf is not None

    # --- disk cache -----------------------------------------------------------------------
    def _disk_path(self) -> Optional[str]:
        if not self.build_id:
            return None
        from .maps.cache import cache_dir
        base = os.path.join(cache_dir(), "frames")
        safe = "".join(c for c in self.build_id if c.isalnum())[:80]
        return os.path.join(base, f"{safe}.{_digest()}.json")

    def _load_disk(self) -> Dict[str, list]:
        if self._disk is None:
            self._disk = {}
            p = self._disk_path()
            if p:
                try:
                    with open(p) as f:
                        d = json.load(f)
                    if isinstance(d, dict):
                        self._disk = d
                except (OSError, ValueError):
                    pass
        return self._disk

    def save(self) -> None:
        """Write the answers found in this process to the disk cache (atomically)."""
        p = self._disk_path()
        if not p or not self._dirty or self._disk is None:
            return
        try:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            old = {}
            try:
                with open(p) as f:
                    old = json.load(f)
            except (OSError, ValueError):
                old = {}
            if isinstance(old, dict) and len(old) < MAX_DISK_ENTRIES:
                old.update(self._disk)
                data = old
            else:
                data = self._disk
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(p), suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, p)
            self._dirty = False
            stem, mine = os.path.basename(p).split(".", 1)[0] + ".", os.path.basename(p)
            for name in os.listdir(os.path.dirname(p)):   # answers of older versions of this code
                if name.startswith(stem) and name.endswith(".json") and name != mine:
                    os.unlink(os.path.join(os.path.dirname(p), name))
        except OSError:
            pass

    # --- lookups --------------------------------------------------------------------------
    def frames_at(self, link_pc: int) -> List[SrcFrame]:
        """The frames at link_pc (a caller frame passes its return address minus one),
        innermost first; [] when the file has no DWARF for that pc."""
        hit = self._memo.get(link_pc)
        if hit is not None:
            return hit
        disk = self._load_disk()
        raw = disk.get(str(link_pc))
        if raw is not None:
            out = [SrcFrame(*x) for x in raw]
        else:
            try:
                out = self._resolve(link_pc)
            except Exception as e:                 # bad DWARF costs this pc's names, not the report
                self.error = self.error or f"{self.path}: DWARF not decodable at {link_pc:#x} ({type(e).__name__})"
                out = []
            if self._dwarf is not None:
                disk[str(link_pc)] = [[f.function, f.file, f.line] for f in out]
                self._dirty = True
        self._memo[link_pc] = out
        return out

    def _resolve(self, pc: int) -> List[SrcFrame]:
        if not self._open():
            return []
        off = self._cu_offset(pc)
        if off is None:
            return []
        funcs, rows, files = self._unit(off)
        fn = _function_at(funcs, pc)
        if fn is None:
            return []
        chain = self._chain(fn, pc)
        file, line = _line_at(rows, pc)
        out: List[SrcFrame] = []
        # innermost frame: the line table's line; each outer frame: its inlined callee's call site
        for k in range(len(chain) - 1, -1, -1):
            die = chain[k]
            name = _name(die)
            if k == len(chain) - 1:
                out.append(SrcFrame(name, file, line))
            else:
                inner = chain[k + 1]
                a = inner.attributes
                cl = a.get("DW_AT_call_line")
                cf = a.get("DW_AT_call_file")
                cfile = files.get(cf.value, "") if cf is not None else ""
                out.append(SrcFrame(name, cfile, cl.value if cl is not None else 0))
        return out

    def _cu_offset(self, pc: int) -> Optional[int]:
        d = self._dwarf
        try:
            ar = d.get_aranges()
        except Exception:                          # broken aranges: scan the units instead
            ar = None
        if ar is not None:
            try:
                off = ar.cu_offset_at_addr(pc)
                if off is not None:
                    return off
            except Exception:                      # pc not covered
                pass
        if self._cu_ranges is None:
            spans = []
            for cu in d.iter_CUs():
                top = cu.get_top_DIE()
                for lo, hi in _ranges(d, top, cu):
                    spans.append((lo, hi, cu.cu_offset))
            spans.sort()
            self._cu_ranges = ([s[0] for s in spans], spans)
        starts, spans = self._cu_ranges
        i = bisect.bisect_right(starts, pc) - 1
        for j in range(i, max(i - 64, -1), -1):
            if spans[j][0] <= pc < spans[j][1]:
                return spans[j][2]
        return None

    def _unit(self, off: int):
        hit = self._cus.get(off)
        if hit is not None:
            return hit
        d = self._dwarf
        cu = d.get_CU_at(off)
        top = cu.get_top_DIE()
        funcs = []
        n = 0
        stack = [top]
        while stack:                               # subprograms, also inside namespaces/classes
            die = stack.pop()
            for ch in die.iter_children():
                n += 1
                if n > MAX_CU_DIES:
                    stack = []
                    break
                if ch.tag == _SUBPROG:
                    if "DW_AT_declaration" in ch.attributes:
                        continue
                    for lo, hi in _ranges(d, ch, cu):
                        funcs.append((lo, hi, ch))
                elif ch.tag in ("DW_TAG_namespace", "DW_TAG_class_type", "DW_TAG_structure_type",
                                "DW_TAG_module"):
                    stack.append(ch)
        funcs.sort(key=lambda f: f[0])
        rows, files = _line_rows(d, cu, top)
        res = (funcs, rows, files)
        self._cus[off] = res
        return res

    def _chain(self, fn, pc: int) -> list:
        """[subprogram, inlined, inlined...] containing pc, outermost first."""
        d = self._dwarf
        chain = [fn]
        cur = fn
        for _ in range(MAX_DEPTH):
            nxt = None
            todo = list(cur.iter_children())
            seen = 0
            while todo and nxt is None and seen < MAX_CU_DIES:
                ch = todo.pop(0)
                seen += 1
                if ch.tag == _INLINED:
                    if any(lo <= pc < hi for lo, hi in _ranges(d, ch, ch.cu)):
                        nxt = ch
                elif ch.tag == _BLOCK:
                    rng = _ranges(d, ch, ch.cu)
                    if not rng or any(lo <= pc < hi for lo, hi in rng):
                        todo = list(ch.iter_children()) + todo
            if nxt is None:
                break
            chain.append(nxt)
            cur = nxt
        return chain

    # --- struct layouts -----------------------------------------------------------------------
    def struct_fields(self, name: str) -> Optional[Tuple[int, Dict[str, int]]]:
        """(size, {member: byte offset}) of the complete `struct name` (named members only, as
        gdb's Type.fields() gives them), or None. The unit defining it is found by searching
        .debug_info's bytes for a reference to the name's string (then parsing only the units
        that hold one), not by reading every unit."""
        key = f"s:{name}"
        disk = self._load_disk()
        if key in disk:
            v = disk[key]
            return (v[0], dict(v[1])) if v else None
        res = None
        try:
            if self._open():
                res = self._find_struct(name)
        except Exception:                          # bad DWARF: no layout from this file
            res = None
        if self._dwarf is not None:
            disk[key] = [res[0], res[1]] if res else None
            self._dirty = True
        return res

    def _find_struct(self, name: str) -> Optional[Tuple[int, Dict[str, int]]]:
        d = self._dwarf
        info = d.debug_info_sec.stream.getvalue()
        needles = [name.encode() + b"\0"]
        if d.debug_str_sec is not None:
            strs = d.debug_str_sec.stream.getvalue()
            o = strs.find(b"\0" + name.encode() + b"\0")
            if o >= 0:
                needles.append(struct.pack("<I", o + 1))
            elif strs.startswith(name.encode() + b"\0"):
                needles.append(struct.pack("<I", 0))
        units = _unit_starts(info)
        tried = set()
        for needle in needles:
            pos = 0
            for _ in range(MAX_STRUCT_HITS):
                hit = info.find(needle, pos)
                if hit < 0:
                    break
                pos = hit + 1
                i = bisect.bisect_right(units, hit) - 1
                if i < 0 or units[i] in tried:
                    continue
                tried.add(units[i])
                if len(tried) > MAX_STRUCT_UNITS:
                    return None
                found = self._struct_in_unit(units[i], name)
                if found is not None:
                    return found
        return None

    def _struct_in_unit(self, off: int, name: str) -> Optional[Tuple[int, Dict[str, int]]]:
        cu = self._dwarf.get_CU_at(off)
        want = name.encode()
        n = 0
        for die in cu.iter_DIEs():
            n += 1
            if n > MAX_CU_DIES:
                break
            if die.tag != "DW_TAG_structure_type":
                continue
            a = die.attributes
            nm = a.get("DW_AT_name")
            if nm is None or nm.value != want or "DW_AT_declaration" in a or "DW_AT_byte_size" not in a:
                continue
            fields: Dict[str, int] = {}
            for ch in die.iter_children():
                if ch.tag != "DW_TAG_member":
                    continue
                ca = ch.attributes
                mn = ca.get("DW_AT_name")
                loc = ca.get("DW_AT_data_member_location")
                if mn is None or "DW_AT_bit_size" in ca:
                    continue
                if loc is None:
                    off_ = 0
                elif isinstance(loc.value, int):
                    off_ = loc.value
                elif isinstance(loc.value, list) and loc.value and loc.value[0] == 0x23:   # DW_OP_plus_uconst
                    off_ = _uleb_value(loc.value[1:])
                else:
                    continue
                fields[mn.value.decode("utf-8", "replace")] = off_
            return a["DW_AT_byte_size"].value, fields
        return None

    # --- call sites (gdb's tail-call frames) -------------------------------------------------
    def call_site(self, link_return_pc: int) -> Optional[Tuple[bool, Optional[int], str]]:
        """The call whose return address is link_return_pc: (tail call?, target's link-time
        address when this file defines it, target's name); None when the DWARF has no such call
        site or says nothing of its target."""
        key = f"c:{link_return_pc}"
        disk = self._load_disk()
        if key in disk:
            v = disk[key]
            return (bool(v[0]), v[1], v[2]) if v else None
        res = None
        try:
            if self._open():
                off = self._cu_offset(link_return_pc - 1)
                if off is not None:
                    res = self._call_table(off)[0].get(link_return_pc)
        except Exception:                          # bad DWARF: no call-site information
            res = None
        if self._dwarf is not None:
            disk[key] = list(res) if res else None
            self._dirty = True
        return res

    def tail_calls(self, link_pc: int) -> Tuple[Optional[int], List[Tuple[int, Optional[int], str]]]:
        """(start of the function holding link_pc, its tail calls as (link return pc, target
        link address or None, target name))."""
        key = f"t:{link_pc}"
        disk = self._load_disk()
        if key in disk:
            v = disk[key]
            return v[0], [tuple(x) for x in v[1]]
        start, calls = None, []
        try:
            if self._open():
                off = self._cu_offset(link_pc)
                if off is not None:
                    funcs = self._unit(off)[0]
                    fn = _function_at(funcs, link_pc)
                    if fn is not None:
                        start = _entry(self._dwarf, fn)
                        calls = self._call_table(off)[1].get(fn.offset, [])
        except Exception:                          # bad DWARF: no tail calls known
            start, calls = None, []
        if self._dwarf is not None:
            disk[key] = [start, [list(c) for c in calls]]
            self._dirty = True
        return start, calls

    def _call_table(self, off: int):
        hit = self._calls.get(off)
        if hit is not None:
            return hit
        funcs = self._unit(off)[0]
        by_pc: Dict[int, Tuple[bool, Optional[int], str]] = {}
        tails: Dict[int, list] = {}
        seen = 0
        for _lo, _hi, fn in funcs:
            if fn.offset in tails:
                continue
            mine = tails.setdefault(fn.offset, [])
            todo = [fn]
            while todo and seen < MAX_CU_DIES:
                die = todo.pop()
                for ch in die.iter_children():
                    seen += 1
                    if ch.tag in ("DW_TAG_call_site", "DW_TAG_GNU_call_site"):
                        c = self._call(ch)
                        if c is not None:
                            pc, tail, addr, name = c
                            by_pc[pc] = (tail, addr, name)
                            if tail:
                                mine.append((pc, addr, name))
                    elif ch.tag in (_INLINED, _BLOCK):
                        todo.append(ch)
        res = (by_pc, tails)
        self._calls[off] = res
        return res

    def _call(self, die) -> Optional[Tuple[int, bool, Optional[int], str]]:
        a = die.attributes
        rp = a.get("DW_AT_call_return_pc") or a.get("DW_AT_low_pc")
        if rp is None or not isinstance(rp.value, int):
            return None
        tail = "DW_AT_call_tail_call" in a or "DW_AT_GNU_tail_call" in a
        key = "DW_AT_call_origin" if "DW_AT_call_origin" in a else \
            "DW_AT_abstract_origin" if "DW_AT_abstract_origin" in a else None
        if key is None:
            return None                            # an indirect call: the target is not known
        try:
            tgt = die.get_DIE_from_attribute(key)
        except Exception:                          # a reference pyelftools cannot follow
            return None
        addr = _entry(self._dwarf, tgt)
        return rp.value, tail, addr, _name(tgt)

    def close(self) -> None:
        self.save()
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None


def _unit_starts(info: bytes) -> List[int]:
    """Offsets of the units in .debug_info (from their length fields)."""
    out, pos = [], 0
    while pos + 4 <= len(info) and len(out) < 1 << 20:
        n, = struct.unpack_from("<I", info, pos)
        if n == 0xFFFFFFFF:
            if pos + 12 > len(info):
                break
            n, = struct.unpack_from("<Q", info, pos + 4)
            size = 12 + n
        else:
            size = 4 + n
        if n == 0:
            break
        out.append(pos)
        pos += size
    return out


def _uleb_value(bs) -> int:
    v = shift = 0
    for b in bs:
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return v


def _function_at(funcs, pc: int):
    """The subprogram DIE holding pc: the one starting last; among several with the same range
    (assembler aliases), the last in DWARF order, as gdb's block lookup picks."""
    best = None
    for lo, hi, die in funcs:
        if lo > pc:
            break
        if pc < hi and (best is None or lo >= best[0]):
            best = (lo, die)
    return best[1] if best is not None else None


def _has_dwarf(elf) -> bool:
    sec = elf.get_section_by_name(".debug_info")
    return sec is not None and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] > 0


def _name(die) -> str:
    """gdb's name for a function DIE: linkage name, else name, through abstract origins and
    specifications."""
    cur = die
    for _ in range(8):
        a = cur.attributes
        for key in ("DW_AT_linkage_name", "DW_AT_MIPS_linkage_name", "DW_AT_name"):
            v = a.get(key)
            if v is not None and isinstance(v.value, bytes):
                name = v.value.decode("utf-8", "replace")
                if key != "DW_AT_name" and name.startswith("_Z"):
                    continue                       # C++: a mangled name is not what gdb shows
                return name
        ref = a.get("DW_AT_abstract_origin") or a.get("DW_AT_specification")
        if ref is None:
            break
        try:
            cur = cur.get_DIE_from_attribute("DW_AT_abstract_origin" if "DW_AT_abstract_origin" in a
                                             else "DW_AT_specification")
        except Exception:                          # a reference into another unit pyelftools cannot follow
            break
    return "??"


def _entry(dwarf, die) -> Optional[int]:
    """The entry address of a function DIE defined here (DW_AT_entry_pc, else its lowest pc)."""
    a = die.attributes
    e = a.get("DW_AT_entry_pc")
    if e is not None and isinstance(e.value, int) and e.form.startswith("DW_FORM_addr"):
        return e.value
    rng = _ranges(dwarf, die, die.cu)
    if rng:
        return min(r[0] for r in rng)
    return None


def _ranges(dwarf, die, cu) -> List[Tuple[int, int]]:
    if "DW_AT_ranges" not in die.attributes:
        return die_ranges(die, None, 0, cu)
    try:
        base_attr = cu.get_top_DIE().attributes.get("DW_AT_low_pc")
        base = base_attr.value if base_attr is not None and isinstance(base_attr.value, int) else 0
        return die_ranges(die, dwarf.range_lists(), base, cu)
    except Exception:                              # unreadable range list: no ranges known
        return []


def _line_rows(dwarf, cu, top):
    """(rows, files): rows = sorted [(address, end_of_sequence, file, line)], files = {file
    index: full path} (for DW_AT_call_file)."""
    try:
        lp = dwarf.line_program_for_CU(cu)
    except Exception:                              # no or broken line table: lines unknown
        lp = None
    if lp is None:
        return [], {}
    hdr = lp.header
    version = hdr["version"]
    comp = top.attributes.get("DW_AT_comp_dir")
    comp_dir = comp.value.decode("utf-8", "replace") if comp is not None and isinstance(comp.value, bytes) else ""
    dirs = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in hdr["include_directory"]]
    files: Dict[int, str] = {}
    entries = hdr["file_entry"]
    for i, fe in enumerate(entries):
        idx = i if version >= 5 else i + 1
        name = fe.name.decode("utf-8", "replace") if isinstance(fe.name, bytes) else str(fe.name)
        di = fe.dir_index
        if version >= 5:
            d = dirs[di] if di < len(dirs) else ""
        else:
            d = dirs[di - 1] if 0 < di <= len(dirs) else comp_dir
        path = name if name.startswith("/") else os.path.join(d, name) if d else name
        if not path.startswith("/") and comp_dir:
            path = os.path.join(comp_dir, path)
        files[idx] = os.path.normpath(path) if path.startswith("/") else path
    rows = []
    try:
        for e in lp.get_entries():
            st = e.state
            if st is None:
                continue
            rows.append((st.address, st.end_sequence, files.get(st.file, ""), st.line))
    except Exception:                              # a broken line program: what was read stays
        pass
    rows.sort(key=lambda r: (r[0], not r[1]))
    return rows, files


def _line_at(rows, pc: int) -> Tuple[str, int]:
    if not rows:
        return "", 0
    i = bisect.bisect_right(rows, (pc, True, "\uffff", 1 << 62)) - 1
    while i >= 0 and rows[i][0] <= pc:
        addr, end, file, line = rows[i]
        if end:
            return "", 0                           # pc lies after a sequence's end: no line
        if line:
            return file, line
        i -= 1
    return "", 0


_infos: Dict[Tuple[str, float, int], SourceInfo] = {}


def source_info(path: str, build_id: Optional[str] = None) -> Optional[SourceInfo]:
    key = file_version(path)
    if key is None:
        return None
    si = _infos.get(key)
    if si is None:
        if len(_infos) > 64:
            save_all()
            _infos.clear()
        si = _infos[key] = SourceInfo(path, build_id)
    return si


def save_all() -> None:
    """Write every SourceInfo's new answers to the disk cache (called once per report)."""
    for si in list(_infos.values()):
        si.save()
