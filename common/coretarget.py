"""A Target over an ELF core file, with no debugger: what the `heaplens` command line, the
tests and the fuzzer analyse.

- memory, mappings, threads (registers, fs_base), auxv, the stop signal: common.elfcore;
  pages the core left out come from the mapped files when they are read-only (one rule, in
  elfcore), and `exe` replaces the executable's path when it moved (the CLI's --exe);
- symbols: the ELF symbol tables of each object's debug info (its own .symtab when it has
  DWARF, else the separate debug file by build-id / .gnu_debuglink), read with numpy
  (common.elfsyms) — no guessing, like a debugger's symbol lookup;
- frames: each thread unwound from .eh_frame/.debug_frame (common.unwind), named and split
  into inline frames from DWARF (common.srcinfo; the program's own names from its DWARF maps),
  stopping after `main` as gdb does; variables and globals placed by the DWARF maps
  (common.maps.ProgramMaps), exactly as the tracer places roots under gdb;
- evaluate(): variables, `p->field`, `s.field`, `a[3]`, `*p` and `$registers` of a frame,
  through the maps' type layouts (what crash context and `heaplens info EXPR` need).

Symbols come from separate debug files only when `use_debug_files` is true, so a test can
exercise both the debug-info and the structure path of the allocator walkers.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Dict, List, Optional, Tuple

from .elfcore import CoreFile
from .objfiles import debug_file_for, is_system, objfiles_from_regions, program_data_objects
from .target import (FrameInfo, ObjFile, ReadError, Region, StopInfo, StructLayout, Target, TargetError,
                     ThreadInfo, TypeLayout, Variable, region_index)

SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
           8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM",
           15: "SIGTERM", 19: "SIGSTOP", 24: "SIGXCPU", 25: "SIGXFSZ", 31: "SIGSYS"}
FRAME_REGS = ("rbx", "rbp", "r12", "r13", "r14", "r15", "rdi", "rsi", "rax", "rdx")   # as gdb_plugin reports
SIGTRAMP_NAME = "<signal handler called>"
MAX_EXPR = 200                   # characters of an expression evaluate() accepts
_TOKEN = re.compile(r"\s*(->|\.|\[|\]|\*|&|\(|\)|[A-Za-z_]\w*|0[xX][0-9a-fA-F]+|\d+|\$\w+)")
_CAST = re.compile(r"^\(\s*(?:const\s+|volatile\s+|struct\s+|union\s+|unsigned\s+)*\w+(?:\s+\w+)*\s*\*+\s*\)\s*")


class CoreTarget(Target):
    kind = "core"

    def __init__(self, core_path: str, use_debug_files: bool = True, core: Optional[CoreFile] = None,
                 exe: Optional[str] = None):
        self.core = core or CoreFile(core_path)
        self.use_debug_files = use_debug_files
        self._regions: Optional[List[Region]] = None
        self._objs: Optional[List[ObjFile]] = None
        self._notes: List[str] = []
        self._pm = None
        self._frames: Optional[List[FrameInfo]] = None
        self._frames_vars = False
        self._unwind_notes: Dict[int, str] = {}
        self._globals: Optional[List[Variable]] = None
        self.exe_path: Optional[str] = None
        self._set_exe(exe)

    # --- the executable -----------------------------------------------------------------------
    def _set_exe(self, exe: Optional[str]) -> None:
        mapped, how = self.core.executable()
        if exe:
            exe = os.path.abspath(exe)
            if not os.path.isfile(exe):
                raise TargetError(f"--exe {exe}: no such file")
            if mapped and mapped != exe:
                self.core.set_path_map({mapped: exe})
            self.exe_path = exe
            if mapped is None:
                self._notes.append(f"the core does not say which file is the executable ({how}); "
                                   f"{exe} is not matched to any mapping")
            else:
                self._check_build_id(mapped, exe)
            return
        if mapped is None:
            self._notes.append(f"the executable could not be found from the core ({how}): pass --exe PROG")
        elif not os.path.isfile(mapped):
            self._notes.append(f"the executable {mapped} (named by the core) is not on this machine: pass --exe "
                               "PROG for its symbols and debug info")
        else:
            self.exe_path = mapped

    def _check_build_id(self, mapped: str, exe: str) -> None:
        """Warn when --exe is not the file the process ran (build-ids differ)."""
        from .elfinfo import elf_info
        info = elf_info(exe)
        want = info.build_id if info is not None else None
        have = self._build_id_in_core(mapped)
        if want and have and want != have:
            self._notes.append(f"--exe {exe} is not the program that dumped this core (build-id {want[:12]}... "
                               f"against {have[:12]}... in the core): symbols and variables may be wrong")

    def _build_id_in_core(self, mapped: str) -> Optional[str]:
        """The GNU build-id note of the executable as the core holds it (its first page: the
        ELF header and, in practice, the notes; cores keep ELF headers)."""
        start = next((s for s, e, off, p in self.core.files if p == mapped and off == 0), None)
        held = [r for r in self.core.regions() if r.start <= (start or 0) < r.end and r.in_snapshot]
        if start is None or not held:
            return None                         # not in the core: the file's bytes would prove nothing
        try:
            page = self.core.read(start, 4096)
            phoff, = struct.unpack_from("<Q", page, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", page, 0x36)
            ph = [struct.unpack_from("<IIQQQQQQ", page, phoff + i * phentsize)
                  for i in range(min(phnum, 64)) if phoff + i * phentsize + 56 <= len(page)]
            first = min((p[3] for p in ph if p[0] == 1), default=0) & ~0xFFF
            for typ, _f, _off, vaddr, _pa, filesz, _ms, _al in ph:
                if typ != 4:
                    continue
                note = self.core.read(start - first + vaddr, min(filesz, 1024))
                pos = 0
                while pos + 12 <= len(note):
                    nsz, dsz, ntype = struct.unpack_from("<III", note, pos)
                    d = pos + 12 + ((nsz + 3) & ~3)
                    if ntype == 3 and note[pos + 12:pos + 12 + nsz].rstrip(b"\0") == b"GNU":
                        return note[d:d + dsz].hex()
                    pos = d + ((dsz + 3) & ~3)
        except (struct.error, ReadError):
            return None
        return None

    # --- memory -------------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        return self.core.read(addr, size)

    def threadsafe_reader(self):
        return self.core.read

    def regions(self) -> List[Region]:
        if self._regions is None:
            self._regions = self.core.regions()
        return self._regions

    # --- program ------------------------------------------------------------------------------
    def threads(self) -> List[ThreadInfo]:
        return [ThreadInfo(i + 1, t.tid, t.fs_base or None, selected=(i == 0))
                for i, t in enumerate(self.core.threads)]

    def objfiles(self) -> List[ObjFile]:
        if self._objs is None:
            objs = objfiles_from_regions(self.regions())
            if self.exe_path:                  # the executable first, as the Target protocol asks
                objs.sort(key=lambda o: o.path != self.exe_path)
            self._objs = objs
        return self._objs

    def _symbol_files(self, obj: ObjFile) -> List[str]:
        """Files whose symbol tables count as debug info for obj."""
        out = []
        if not self.use_debug_files:
            return out
        from .maps.files import find_debug_file
        from .elfinfo import elf_info
        info = elf_info(obj.path)
        try:
            own = info is not None and info.elf.get_section_by_name(".debug_info") is not None
        except Exception:              # unreadable sections: no own debug info
            own = False
        if own:
            out.append(obj.path)
        dbg = debug_file_for(obj.build_id) or (find_debug_file(obj.path, obj.build_id, info.elf)
                                               if info is not None else None)
        if dbg:
            out.append(dbg)
        return out

    def symbol(self, name: str, objfile_hint: str = "") -> Optional[int]:
        from .elfsyms import symbols
        for obj in self.objfiles():
            if objfile_hint and os.path.realpath(obj.path) != os.path.realpath(objfile_hint):
                continue
            for path in self._symbol_files(obj):
                s = symbols(path)
                v = s.lookup(name, types=(1,)) if s is not None else None   # STT_OBJECT: data symbols
                if v is not None:
                    return v + obj.base
        return None

    def struct_layout(self, name: str) -> Optional[StructLayout]:
        """`struct name` from the DWARF of the loaded objects (the program first), like a
        debugger's type lookup; None without debug info."""
        if not self.use_debug_files:
            return None
        from .srcinfo import source_info
        for obj in self.objfiles():
            si = source_info(obj.path, obj.build_id)
            found = si.struct_fields(name) if si is not None else None
            if found is not None:
                return StructLayout(name, found[0], dict(found[1]))
        return None

    def warnings(self):
        return list(self.core.warnings) + self._notes

    def describe(self) -> str:
        return f"core file {self.core.path}"

    # --- the DWARF maps of the program ----------------------------------------------------------
    def maps(self):
        """ProgramMaps of the program's own objects (system libraries left out, as the tracer
        does: their first decode is slow and their variables are not the program's)."""
        if self._pm is None:
            from .maps import ProgramMaps
            self._pm = ProgramMaps.load(self.objfiles(), system=False)
        return self._pm

    # --- frames -------------------------------------------------------------------------------
    def _code_at(self):
        from .unwind import CodeObject
        find = region_index(self.regions())
        by_path = {o.path: o for o in self.objfiles()}
        cache: Dict[str, CodeObject] = {}

        def code_at(pc: int):
            r = find(pc)
            if r is None or not r.path.startswith("/") or "x" not in r.perms:
                return None
            obj = by_path.get(r.path)
            if obj is None:
                return None
            co = cache.get(obj.path)
            if co is None:
                co = cache[obj.path] = CodeObject(obj.path, obj.base, debug_file_for(obj.build_id))
            return co

        def is_code(pc: int) -> bool:
            r = find(pc)
            return r is not None and "x" in r.perms
        return code_at, is_code

    def _function_start(self, code_at):
        """pc -> runtime start of the function symbol holding it (for code without CFI)."""
        from .elfsyms import symbols

        def start(pc: int) -> Optional[int]:
            co = code_at(pc)
            if co is None:
                return None
            for path in (co.debug_path, co.path):
                st = symbols(path) if path else None
                hit = st.function_at(pc - co.bias) if st is not None else None
                if hit is not None:
                    return hit[1] + co.bias
            return None
        return start

    def _unwound(self, max_frames: int) -> List[FrameInfo]:
        """Every thread's frames (inline and tail-call frames included, as gdb shows them),
        with registers and CFA set."""
        if self._frames is not None:
            return self._frames
        from .srcinfo import save_all, source_info
        from .unwind import Unwinder
        code_at, is_code = self._code_at()
        u = Unwinder(self.read, code_at, is_code, self._function_start(code_at))
        pm = self.maps()
        objs = {o.path: o for o in self.objfiles()}
        out: List[FrameInfo] = []
        for th in self.threads():
            regs = dict(self.core.threads[th.num - 1].regs)
            ufs, why = u.unwind(regs, max_frames)
            ufs = self._with_tail_calls(ufs, objs, code_at, source_info)
            level = 0
            for uf in ufs:
                if level >= max_frames:
                    break
                if uf.signal_frame:
                    names = [(SIGTRAMP_NAME, "", 0)]
                elif uf.how == "tail-call":
                    names = self._names(uf, pm, objs, source_info)[:1]
                else:
                    names = self._names(uf, pm, objs, source_info)
                fis = []
                for fn, file, line in names[:max_frames - level]:
                    fi = FrameInfo(th.num, th.tid, level, uf.pc, fn, file, line, uf.objfile)
                    fi.registers = dict(uf.registers)
                    fi.cfa = uf.cfa
                    fis.append(fi)
                    level += 1
                out.extend(fis)
                if any(f.function == "main" for f in fis) and uf.objfile == self.exe_path:
                    why = ""
                    break                       # gdb's backtrace stops at main
            notes = []
            if why and why not in ("outermost frame", "zero pc") and not why.startswith("stopped after"):
                notes.append(f"the stack could not be unwound further: {why}")
            fp = sum(1 for uf in ufs if uf.how in ("frame-pointer", "prologue", "stack-top"))
            if fp:
                notes.append(f"{fp} frame(s) found without unwind information (frame-pointer chain or "
                             "prologue analysis, as gdb does): they may be wrong")
            if any(uf.how == "return-address" for uf in ufs):
                notes.append("the pc is not in any code (a call through a bad pointer?): the caller was taken "
                             "from the top of the stack")
            if notes:
                self._unwind_notes[th.num] = "; ".join(notes)
        save_all()
        self._frames = out
        return out

    def _with_tail_calls(self, ufs, objs, code_at, source_info):
        """gdb's tail-call frames: when the call site a caller returns to called function T but
        the callee frame runs F, and T reaches F by one chain of tail calls (the DWARF call
        sites say so), the functions of that chain are frames too (each at its tail call's
        return address). Ambiguous or unknown chains add nothing."""
        if not self.use_debug_files or len(ufs) < 2:
            return ufs
        from .unwind import UFrame
        out = [ufs[0]]
        for e, c in zip(ufs, ufs[1:]):
            if not (e.signal_frame or c.signal_frame or not c.caller):
                try:
                    chain = self._tail_chain(e, c, objs, code_at, source_info)
                except Exception:               # bad call-site data: no tail-call frames here
                    chain = []
                for pc, objfile in chain:
                    regs = dict(c.registers, rip=pc)
                    out.append(UFrame(pc, regs, c.registers.get("rsp"), True, "tail-call", objfile))
            out.append(c)
        return out

    def _tail_chain(self, e, c, objs, code_at, source_info) -> List[Tuple[int, str]]:
        co, eo = code_at(c.pc), code_at(e.pc)
        if co is None or eo is None:
            return []
        cobj, eobj = objs.get(co.path), objs.get(eo.path)
        if cobj is None or eobj is None:
            return []
        cs = source_info(cobj.path, cobj.build_id).call_site(c.pc - cobj.base)
        if cs is None:
            return []
        target = self._resolve_fn(cs[1], cs[2], cobj)
        fe = source_info(eobj.path, eobj.build_id).tail_calls(e.pc - eobj.base - (1 if e.caller else 0))[0]
        if target is None or fe is None:
            return []
        fe += eobj.base
        if target == fe:
            return []
        paths: List[List[Tuple[int, str]]] = []

        def search(fn: int, path: List[Tuple[int, str]], depth: int) -> None:
            if len(paths) > 1 or depth > 4:
                return
            obj = code_at(fn)
            o = objs.get(obj.path) if obj is not None else None
            if o is None:
                return
            _start, calls = source_info(o.path, o.build_id).tail_calls(fn - o.base)
            for rpc, addr, name in calls[:64]:
                t = self._resolve_fn(addr, name, o)
                if t is None or any(p[0] == rpc + o.base for p in path):
                    continue
                step = path + [(rpc + o.base, o.path)]
                if t == fe:
                    paths.append(step)
                else:
                    search(t, step, depth + 1)
        search(target, [], 0)
        if len(paths) != 1:
            return []
        return list(reversed(paths[0]))          # innermost (nearest the callee) first

    def _resolve_fn(self, link_addr: Optional[int], name: str, obj: ObjFile) -> Optional[int]:
        """A call target as a runtime address: defined in obj, else the symbol `name` in obj or
        in any loaded object (a call into another library)."""
        if link_addr is not None:
            return link_addr + obj.base
        if not name or name == "??":
            return None
        from .elfsyms import STT_FUNC, STT_GNU_IFUNC, symbols
        order = [obj] + [o for o in self.objfiles() if o.path != obj.path]
        for o in order:
            for path in (debug_file_for(o.build_id), o.path):
                st = symbols(path) if path else None
                v = st.lookup(name, types=(STT_FUNC, STT_GNU_IFUNC)) if st is not None else None
                if v is not None:
                    return v + o.base
        return None

    def _names(self, uf, pm, objs, source_info) -> List[Tuple[str, str, int]]:
        """(function, file, line) of the frames at one machine frame, innermost first."""
        obj = objs.get(uf.objfile)
        if obj is None:
            return [("", "", 0)]
        link = uf.pc - obj.base - (1 if uf.caller else 0)
        src = source_info(obj.path, obj.build_id) if self.use_debug_files or not is_system(obj.path) else None
        sfs = src.frames_at(link) if src is not None else []
        if sfs and not is_system(obj.path):
            found = pm.file_for_pc(uf.pc, obj.path)
            if found is not None:               # the maps' names: what the variables carry
                mv = found[1].locations.frames_at(link)
                if len(mv) == len(sfs):
                    return [(m.function, s.file, s.line) for m, s in zip(mv, sfs)]
        if sfs:
            return [(s.function, s.file, s.line) for s in sfs]
        from .elfsyms import symbols
        for path in (debug_file_for(obj.build_id), obj.path):
            st = symbols(path) if path else None
            hit = st.function_at(link) if st is not None else None
            if hit is not None:
                return [(hit[0].split("@", 1)[0], "", 0)]
        return [("", "", 0)]

    def frames(self, max_frames: int = 64, variables: bool = True, registers: bool = False) -> List[FrameInfo]:
        frames = self._unwound(max_frames)
        if variables and not self._frames_vars:
            self.maps().frame_variables(frames, read=self.read)
            self._frames_vars = True
        out = []
        for f in frames:
            g = FrameInfo(f.thread, f.tid, f.level, f.pc, f.function, f.file, f.line, f.objfile,
                          list(f.variables) if variables else [],
                          dict(f.registers) if registers else {}, f.cfa if registers else None)
            out.append(g)
        return out

    def unwind_notes(self) -> Dict[int, str]:
        """thread number -> what to distrust about its frames (unwinding stopped early on a
        corrupt stack, frames found by frame pointers or from a bad pc), after frames()."""
        return dict(self._unwind_notes)

    def globals(self) -> List[Variable]:
        """The program's static-storage pointer variables: its symbol table's data objects that
        the DWARF maps type (gdb_plugin's rule: the symbol table names the candidates, debug
        info types them); the tracer takes every static from the maps itself."""
        if self._globals is None:
            by_addr: Dict[int, Variable] = {}
            for v in self.maps().globals(include_system=False):
                if v.address is not None:
                    by_addr.setdefault(v.address, v)
            out = []
            for _obj, name, addr, _size in program_data_objects(self.objfiles()):
                v = by_addr.get(addr)
                # only what a debugger's lookup by symbol name finds, as gdb_plugin does: a
                # function's static (symbol `names.0`, DWARF `names`) is not found that way
                if v is not None and v.name == name:
                    out.append(Variable(name, "global", v.layout, address=addr))
            self._globals = out
        return list(self._globals)

    def type_layout(self, type_name: str) -> Optional[TypeLayout]:
        """Pointer slots of a struct or union pointee (what a debugger's view gives the analysis,
        which follows pointers one level into such objects; the tracer resolves every key
        through the maps itself)."""
        if not type_name:
            return None
        pm = self.maps()
        if type_name.startswith("dwarf:") and pm.type_kind(type_name) not in ("struct", "union"):
            return None
        return pm.type_layout(type_name)

    def stop_info(self) -> StopInfo:
        if not self.core.threads:
            return StopInfo(None)
        t = self.core.threads[0]
        signo = t.siginfo[0] if t.siginfo else t.cursig
        if not signo or signo == 5:
            return StopInfo(1)                  # a breakpoint or step: not a crash
        addr = t.siginfo[2] if t.siginfo and signo in (7, 11) else None
        return StopInfo(1, SIGNALS.get(signo, f"signal {signo}"), addr)

    def frame_registers(self, thread: int, frame: int) -> Dict[str, int]:
        for f in self._unwound(64):
            if f.thread == thread and f.level == frame:
                return {k: v for k, v in f.registers.items() if k in FRAME_REGS}
        return {}

    # --- expressions ----------------------------------------------------------------------------
    def evaluate(self, expr: str, thread: int, frame: int):
        """(value, type name, sizeof target) of a pointer-valued C expression in a frame, or None:
        a variable (the frame's, else a global), then `.f`, `->f`, `[N]`, a leading `*`; a
        leading cast is ignored; `$reg` reads the frame's registers."""
        try:
            return self._evaluate(expr.strip(), thread, frame)
        except (ReadError, ValueError, IndexError, KeyError, struct.error):
            return None

    def _evaluate(self, expr: str, thread: int, frame: int):
        if not expr or len(expr) > MAX_EXPR:
            return None
        expr = _CAST.sub("", expr)
        toks = _tokens(expr)
        if toks is None:
            return None
        if len(toks) == 1 and toks[0].startswith("$"):
            name = {"$sp": "rsp", "$pc": "rip", "$fp": "rbp"}.get(toks[0], toks[0][1:])
            for f in self._unwound(64):
                if f.thread == thread and f.level == frame:
                    v = f.registers.get(name)
                    return (v, "long", None) if v is not None else None
            return None
        derefs = 0
        while toks and toks[0] == "*":
            derefs += 1
            toks = toks[1:]
        if toks and toks[0] == "(" and toks[-1] == ")":
            toks = toks[1:-1]
        if not toks or not re.fullmatch(r"[A-Za-z_]\w*", toks[0]):
            return None
        var = self._variable(toks[0], thread, frame)
        if var is None:
            return None
        lay, addr, value = var.layout, var.address, var.value
        path = ""
        cur = None                               # (slot, pointer value) last read
        i = 1
        while i < len(toks):
            t = toks[i]
            if t == ".":
                path += "." + toks[i + 1]
                i += 2
            elif t == "[":
                if toks[i + 2] != "]":
                    return None
                path += f"[{int(toks[i + 1], 0)}]"
                i += 3
            elif t == "->":
                slot, val = self._slot(lay, path, addr, value)
                if slot is None or not slot.target_type or not val:
                    return None
                lay = self.maps().type_layout(slot.target_type)
                if lay is None:
                    return None
                addr, value, path = val, None, "." + toks[i + 1]
                i += 2
            else:
                return None
        slot, val = self._slot(lay, path, addr, value)
        if slot is None:
            return None
        cur = (slot, val)
        for _ in range(derefs):
            slot, val = cur
            if not slot.target_type or not val:
                return None
            lay = self.maps().type_layout(slot.target_type)
            if lay is None:
                return None
            s2, v2 = self._slot(lay, "", val, None)
            if s2 is None:
                return None
            cur = (s2, v2)
        slot, val = cur
        return val & 0xFFFFFFFFFFFFFFFF, slot.type_name, slot.target_size

    def _slot(self, lay: TypeLayout, path: str, addr: Optional[int], value: Optional[int]):
        """The pointer slot at `path` of an object and the pointer's value."""
        for s in lay.slots:
            if s.path == path:
                if addr is not None:
                    return s, struct.unpack("<Q", self.read(addr + s.offset, 8))[0]
                if value is not None and s.offset == 0:
                    return s, value
                return None, None
        return None, None

    def _variable(self, name: str, thread: int, frame: int) -> Optional[Variable]:
        frames = [f for f in self.frames(variables=True) if f.thread == thread and f.level == frame]
        for f in frames:
            for v in f.variables:
                if v.name == name and not v.optimized_out:
                    return v
        for v in self.maps().globals(include_system=False):
            if v.name == name and v.address is not None:
                return v
        for v in self.globals():
            if v.name == name:
                return v
        return None


def _tokens(expr: str) -> Optional[List[str]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if m is None:
            return None
        out.append(m.group(1))
        pos = m.end()
    return out
