"""The program's own state as lldb's debug info describes it: frames, pointer variables,
globals, and where each type keeps its pointers. Translation only; analysis is in common/.

Mirrors gdb_plugin/program.py so both debuggers give the core the same picture: the same
slot paths ("", ".next", "[3]", ".hdr.buf"), the same type spelling as gdb prints it
(`struct node *` in C, where lldb says `node *`), the same target-size rules and caps, the
same variables (a frame's blocks from the innermost out to the function, inner names
shadowing outer ones; system libraries' frames and globals left out), and registers unwound
with gdb's rule for the ones no unwind table restores (they keep the inner frame's value).
Frame and thread numbers are lldb's own (what `frame select` / `thread select` take).
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
from typing import Dict, List, Optional, Tuple

import lldb

from common.objfiles import is_system, program_data_objects
from common.target import FrameInfo, PtrSlot, StopInfo, TypeLayout, Variable

MAX_SLOTS = 4096          # pointer slots expanded per type (big arrays are cut here): as gdb's adapter
MAX_ARRAY = 1024          # elements of one array expanded
MAX_DEPTH = 12
_MASK = (1 << 64) - 1
INVALID = lldb.LLDB_INVALID_ADDRESS

_C_LANGS = {getattr(lldb, n) for n in ("eLanguageTypeC", "eLanguageTypeC89", "eLanguageTypeC99",
                                         "eLanguageTypeC11", "eLanguageTypeC17") if hasattr(lldb, n)}
_CXX_LANGS = {getattr(lldb, n) for n in ("eLanguageTypeC_plus_plus", "eLanguageTypeC_plus_plus_03",
                                           "eLanguageTypeC_plus_plus_11", "eLanguageTypeC_plus_plus_14",
                                           "eLanguageTypeC_plus_plus_17", "eLanguageTypeC_plus_plus_20")
              if hasattr(lldb, n)}
_TAGS = {lldb.eTypeClassStruct: "struct", lldb.eTypeClassUnion: "union", lldb.eTypeClassEnumeration: "enum"}
_BYTE_TYPES = {getattr(lldb, n) for n in ("eBasicTypeChar", "eBasicTypeSignedChar", "eBasicTypeUnsignedChar",
                                            "eBasicTypeChar8") if hasattr(lldb, n)}
_AGGREGATES = (lldb.eTypeClassStruct, lldb.eTypeClassUnion, lldb.eTypeClassClass)
# what gdb's adapter reads per frame (frames(registers=True)) and for frame_registers
ALL_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15", "rip")
SAVED_REGS = ("rbx", "rbp", "r12", "r13", "r14", "r15", "rdi", "rsi", "rax", "rdx")
SIGNALS = {6: "SIGABRT", 11: "SIGSEGV", 7: "SIGBUS", 4: "SIGILL", 8: "SIGFPE", 5: "SIGTRAP"}
# stops the debugger made, not the program: a breakpoint or step (SIGTRAP), an attach or an
# interrupt (lldb stops a process with SIGSTOP)
_DEBUGGER_SIGNALS = (5, 19)


def _ok(v) -> bool:
    return v is not None and v.IsValid() and not v.GetError().Fail()


@contextlib.contextmanager
def preserved_selection(proc):
    """Run a block that may switch threads/frames, then give the user back their selection."""
    try:
        th = proc.GetSelectedThread()
        tid = th.GetIndexID() if th.IsValid() else None
        fid = th.GetSelectedFrame().GetFrameID() if th.IsValid() else None
    except Exception:
        tid = fid = None
    try:
        yield
    finally:
        try:
            if tid is not None:
                proc.SetSelectedThreadByIndexID(tid)
                th = proc.GetThreadByIndexID(tid)
                if th.IsValid() and fid is not None and th.GetSelectedFrame().GetFrameID() != fid:
                    th.SetSelectedFrame(fid)
        except Exception:
            pass


# --- names as gdb spells them ------------------------------------------------------------------
class Namer:
    """Type and function names in gdb's spelling. lldb prints C struct types without their tag
    (`node *`); gdb and C say `struct node *`. Whether a type is C is decided by its module's
    compile units (a module with C++ units keeps lldb's spelling, which is C++'s)."""

    def __init__(self):
        self._module_is_c: Dict[str, bool] = {}

    def module_is_c(self, module) -> bool:
        if module is None or not module.IsValid():
            return False
        key = module.GetFileSpec().fullpath or ""
        hit = self._module_is_c.get(key)
        if hit is None:
            langs = set()
            try:
                for i in range(min(module.GetNumCompileUnits(), 4096)):
                    langs.add(module.GetCompileUnitAtIndex(i).GetLanguage())
            except Exception:
                pass
            hit = bool(langs & _C_LANGS) and not (langs & _CXX_LANGS)
            self._module_is_c[key] = hit
        return hit

    def type_name(self, t, is_c: bool) -> str:
        name = t.GetName() or ""
        if not is_c:
            return name
        base = t
        for _ in range(64):
            if base.IsPointerType():
                base = base.GetPointeeType()
            elif base.IsArrayType():
                base = base.GetArrayElementType()
            else:
                break
        base = base.GetUnqualifiedType()
        tag = _TAGS.get(base.GetTypeClass())
        bare = base.GetName() or ""
        if tag and bare and not bare.startswith(tag + " ") and not bare.startswith("("):
            name = tagged(name, bare, tag)
        return name


def tagged(name: str, bare: str, tag: str) -> str:
    """`node *` -> `struct node *` (the first whole-word occurrence of the bare name)."""
    m = re.search(r"(?<![\w])" + re.escape(bare) + r"(?![\w])", name)
    if m is None or name[:m.start()].endswith(tag + " "):
        return name
    return name[:m.start()] + tag + " " + name[m.start():]


def cxx_function_name(name: str) -> str:
    """gdb's frame name for a C++ function: no parameter list, no qualifiers after it, no
    return type (`void ns::tf<int>(int)` -> `ns::tf<int>`, `S::run() const` -> `S::run`)."""
    if not name.endswith(")") and not re.search(r"\)\s*(const|volatile|&|&&|noexcept|\s)*$", name):
        return name
    end = len(name)
    while end and name[end - 1] != ")":
        end -= 1
    depth, i = 0, end - 1
    while i >= 0:
        c = name[i]
        if c == ")":
            depth += 1
        elif c == "(":
            depth -= 1
            if depth == 0:
                break
        i -= 1
    if i <= 0:
        return name
    head = name[:i].rstrip()
    op = re.search(r"\boperator\b", head)
    cut = op.start() if op else len(head)
    depth, start = 0, 0
    for j, c in enumerate(head[:cut]):             # the return type ends at the last top-level space
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        elif c == " " and depth == 0:
            start = j + 1
    return head[start:] or name


# --- type layouts ------------------------------------------------------------------------------
class Layouts:
    """TypeLayouts built from SBTypes the way gdb_plugin/program.py builds them from gdb.Types."""

    def __init__(self, target, namer: Namer):
        self.target = target
        self.namer = namer
        self._cache: Dict[Tuple[str, str, int], TypeLayout] = {}

    def _is_c(self, t, default: Optional[bool]) -> bool:
        try:
            mod = t.GetModule()
            if mod.IsValid():
                return self.namer.module_is_c(mod)
        except Exception:
            pass
        return bool(default)

    def layout_of(self, t, is_c: Optional[bool] = None) -> TypeLayout:
        """is_c: the language of the place the type comes from, when lldb gives the type
        no module (types of frame variables)."""
        is_c = self._is_c(t, is_c)
        key_name = self.namer.type_name(t, is_c)
        try:
            mod = t.GetModule().GetFileSpec().fullpath or ""
        except Exception:
            mod = ""
        size = t.GetCanonicalType().GetByteSize() or 0
        key = (mod, key_name, size)
        lay = self._cache.get(key)
        if lay is None:
            out: List[PtrSlot] = []
            try:
                self._slots(t, "", 0, out, False, 0, is_c)
            except Exception:
                pass
            lay = TypeLayout(key_name, size, tuple(out))
            self._cache[key] = lay
        return lay

    def _target_info(self, ptr_type, is_c: bool):
        """(sizeof *p or None, pointee type name or None) for a pointer type."""
        t = ptr_type.GetPointeeType()
        if not t.IsValid():
            return None, None
        st = t.GetCanonicalType()
        bare = st.GetUnqualifiedType()
        cls = bare.GetTypeClass()
        if bare.GetBasicType() == lldb.eBasicTypeVoid or cls == lldb.eTypeClassFunction:
            return None, None
        if bare.GetBasicType() in _BYTE_TYPES:
            return None, None                   # char *: a byte buffer, no object size to check
        size = st.GetByteSize() or None
        name = self.namer.type_name(st, is_c) if cls in _AGGREGATES else None
        return size, name

    def _slots(self, t, path: str, off: int, out: List[PtrSlot], ambiguous: bool, depth: int, is_c: bool):
        if len(out) >= MAX_SLOTS or depth > MAX_DEPTH:
            return
        st = t.GetCanonicalType()
        cls = st.GetTypeClass()
        if cls == lldb.eTypeClassPointer:
            size, target = self._target_info(st, is_c)
            out.append(PtrSlot(path, off, self.namer.type_name(t, is_c), size, target, ambiguous))
        elif cls in _AGGREGATES:
            amb = ambiguous or cls == lldb.eTypeClassUnion
            virtual = {st.GetVirtualBaseClassAtIndex(i).GetName() for i in range(st.GetNumberOfVirtualBaseClasses())}
            for i in range(st.GetNumberOfDirectBaseClasses()):      # gdb lists base classes first
                b = st.GetDirectBaseClassAtIndex(i)
                if not b.IsValid() or b.GetName() in virtual:
                    continue
                self._slots(b.GetType(), path, off + b.GetOffsetInBits() // 8, out, amb, depth + 1, is_c)
            for i in range(st.GetNumberOfFields()):
                f = st.GetFieldAtIndex(i)
                if not f.IsValid() or f.IsBitfield() or not f.GetType().IsValid():
                    continue                    # bitfields hold no pointer
                name = f.GetName() or ""
                sub = f"{path}.{name}" if name else path
                self._slots(f.GetType(), sub, off + f.GetOffsetInBits() // 8, out, amb, depth + 1, is_c)
        elif cls == lldb.eTypeClassArray:
            elem = st.GetArrayElementType()
            esz = elem.GetByteSize() if elem.IsValid() else 0
            if not esz or esz <= 0:
                return
            count = (st.GetByteSize() or 0) // esz
            probe: List[PtrSlot] = []
            self._slots(elem, "", 0, probe, ambiguous, depth + 1, is_c)
            if not probe:
                return                          # no pointers in this element type
            for i in range(0, min(count, MAX_ARRAY)):
                for p in probe:
                    if len(out) >= MAX_SLOTS:
                        return
                    out.append(PtrSlot(f"{path}[{i}]{p.path}", off + i * esz + p.offset, p.type_name,
                                       p.target_size, p.target_type, p.ambiguous))

    def find_type(self, name: str):
        """A complete type of that name, the program's own first (gdb looks in the current
        scope, then everywhere)."""
        try:
            types = self.target.FindTypes(name)
        except Exception:
            return None
        best = None
        exe = self.target.GetExecutable().fullpath if self.target.GetExecutable() else None
        for i in range(types.GetSize()):
            t = types.GetTypeAtIndex(i)
            if not t.IsValid() or not t.GetCanonicalType().GetByteSize():
                continue
            try:
                mine = t.GetModule().GetFileSpec().fullpath == exe
            except Exception:
                mine = False
            if mine:
                return t
            best = best or t
        return best

    def type_layout(self, name: str) -> Optional[TypeLayout]:
        if not name or re.match(r"(const|volatile)\b", name):
            return None                         # gdb's lookup_type takes no qualifiers either
        t = self.find_type(name)
        if t is None:
            m = re.match(r"(struct|union|enum) (.+)", name)
            t = self.find_type(m.group(2)) if m else None
        return self.layout_of(t) if t is not None else None


# --- frames ------------------------------------------------------------------------------------
def _module_path(frame) -> str:
    try:
        mod = frame.GetModule()
        return mod.GetFileSpec().fullpath or "" if mod.IsValid() else ""
    except Exception:
        return ""


def function_name(frame) -> str:
    name = frame.GetFunctionName() or ""
    if name.startswith("___lldb_unnamed_symbol"):
        return ""                               # lldb's name for a symbol-less function: gdb says ??
    if name and ("(" in name) and frame.GetCompileUnit().GetLanguage() in _CXX_LANGS:
        name = cxx_function_name(name)
    return name


class Program:
    """One stop's view of the program: built per LldbTarget (so per stop)."""

    def __init__(self, target, proc):
        self.target, self.proc = target, proc
        self.namer = Namer()
        self.layouts = Layouts(target, self.namer)

    # threads and frames, innermost first
    def _threads(self):
        return sorted((th for th in self.proc if th.IsValid()), key=lambda th: th.GetIndexID())

    def _thread(self, num: int):
        th = self.proc.GetThreadByIndexID(num)
        return th if th is not None and th.IsValid() else None

    def frames(self, max_frames: int, variables: bool, registers: bool) -> List[FrameInfo]:
        out: List[FrameInfo] = []
        with preserved_selection(self.proc):
            for th in self._threads():
                num, tid = th.GetIndexID(), th.GetThreadID()
                regs: Dict[str, int] = {}
                for level in range(max_frames):      # not GetNumFrames(): it unwinds the whole stack
                    f = th.GetFrameAtIndex(level)
                    if not f.IsValid():
                        break
                    try:
                        fi = self._frame_info(f, num, tid, level, variables)
                    except Exception:                # a frame lldb cannot describe: keep its place
                        fi = FrameInfo(num, tid, level, _concrete_pc(f), "")
                    if registers:
                        regs = unwound_registers(f, regs, ALL_REGS)
                        fi.registers = dict(regs)
                        cfa = f.GetCFA()
                        fi.cfa = cfa if cfa not in (None, INVALID) else None
                    out.append(fi)
                    if fi.function == "main" and self._is_exe(f):
                        break                       # gdb shows nothing past main (backtrace past-main off)
        return out

    def _is_exe(self, frame) -> bool:
        try:
            exe = self.target.GetExecutable()
            return frame.GetModule().GetFileSpec().fullpath == exe.fullpath
        except Exception:
            return False

    def _frame_info(self, f, thread: int, tid: int, level: int, variables: bool) -> FrameInfo:
        pc = _concrete_pc(f)
        fn = function_name(f)
        le = f.GetLineEntry()
        path, line = "", 0
        if le.IsValid() and le.GetFileSpec().IsValid():
            path = le.GetFileSpec().fullpath or ""
            line = le.GetLine() if 0 < le.GetLine() < 0xFFFFFFFF else 0
        objfile = _module_path(f)
        fi = FrameInfo(thread, tid, level, pc, fn, path, line, objfile)
        if not variables or is_system(objfile):
            return fi                               # the C library's frames: its own business
        is_c = self.namer.module_is_c(f.GetModule())
        block = f.GetBlock()
        seen = set()
        for _ in range(256):
            if block is None or not block.IsValid():
                break
            try:
                vals = block.GetVariables(f, True, True, True, lldb.eNoDynamicValues)
            except Exception:
                vals = None
            for i in range(vals.GetSize() if vals is not None else 0):
                v = vals.GetValueAtIndex(i)
                name = v.GetName()
                vt = v.GetValueType()
                if not name or name in seen or vt not in (lldb.eValueTypeVariableArgument, lldb.eValueTypeVariableLocal,
                                                         lldb.eValueTypeVariableStatic):
                    continue
                seen.add(name)
                kind = "arg" if vt == lldb.eValueTypeVariableArgument else "local"
                var = self._variable(v, kind, is_c, thread, tid, level, fn)
                if var is not None:
                    fi.variables.append(var)
            if block.IsInlined():
                break                               # the inlined function's own block
            parent = block.GetParent()
            if not parent.IsValid():
                break                               # the function's block
            block = parent
        return fi

    def _variable(self, v, kind, is_c, thread=None, tid=None, level=None, fn=None) -> Optional[Variable]:
        try:
            t = v.GetType()
            if not t.IsValid():
                return None
            lay = self.layouts.layout_of(t, is_c)
        except Exception:
            return None
        if not lay.slots:
            return None
        var = Variable(v.GetName(), kind, lay, thread=thread, tid=tid, frame=level, function=fn)
        try:
            if not _ok(v):
                var.optimized_out = True
                return var
            addr = in_memory(v)
            if addr is not None:
                var.address = addr
            elif t.GetCanonicalType().GetTypeClass() == lldb.eTypeClassPointer:
                err = lldb.SBError()
                val = v.GetValueAsUnsigned(err, 0)
                if err.Fail():
                    var.optimized_out = True
                else:
                    var.value = val & _MASK
            else:
                var.optimized_out = True            # an aggregate in registers: not followed
        except Exception:
            var.optimized_out = True
        return var

    # globals
    def globals_(self, objfiles) -> List[Variable]:
        """Pointer-holding variables with static storage in the program and its own libraries:
        the symbol-table candidates (common.objfiles.program_data_objects), typed by lldb."""
        out: List[Variable] = []
        modules = {}
        for obj, name, addr, _size in program_data_objects(objfiles):
            if obj.path not in modules:
                modules[obj.path] = self._module(obj.path)
            module = modules[obj.path]
            if module is None:
                continue
            v = self._global_at(module, name, addr)
            if v is None:
                continue
            lay = self.layouts.layout_of(v.GetType(), self.namer.module_is_c(module))
            if lay.slots:
                out.append(Variable(name, "global", lay, address=addr))
        return out

    def _module(self, path: str):
        real = os.path.realpath(path)
        for i in range(self.target.GetNumModules()):
            m = self.target.GetModuleAtIndex(i)
            p = m.GetFileSpec().fullpath or ""
            if p == path or (p and os.path.realpath(p) == real):
                return m
        return None

    def _global_at(self, module, name: str, addr: int):
        """The debug-info variable `name` whose storage is at addr (statics may share names)."""
        try:
            vals = module.FindGlobalVariables(self.target, name, 64)
        except Exception:
            return None
        for i in range(vals.GetSize()):
            v = vals.GetValueAtIndex(i)
            if v.IsValid() and v.GetName() == name and v.GetLoadAddress() == addr:
                return v
        return None

    # stop, registers, expressions
    def stop_info(self, core_stop=None) -> StopInfo:
        """The selected thread's stop (or, when it has none, the thread a signal stopped);
        on a core, what the core's own notes say (its first thread, NT_SIGINFO), as gdb reads it."""
        if core_stop is not None:
            tid, signo, addr = core_stop
            th = next((t for t in self._threads() if t.GetThreadID() == tid), None)
            if th is None:
                return StopInfo(None)
            if not signo or signo in _DEBUGGER_SIGNALS:
                return StopInfo(th.GetIndexID())
            return StopInfo(th.GetIndexID(), SIGNALS.get(signo, f"signal {signo}"),
                            addr if signo in (7, 11) else None)
        sel = self.proc.GetSelectedThread()
        if sel is None or not sel.IsValid():
            return StopInfo(None)
        th = sel
        if _signal_of(sel) is None:
            th = next((t for t in self._threads() if _signal_of(t) not in (None,) + _DEBUGGER_SIGNALS), sel)
        signo = _signal_of(th)
        if signo is None or signo in _DEBUGGER_SIGNALS:
            return StopInfo(th.GetIndexID())
        addr = _fault_address(th) if signo in (7, 11) else None
        return StopInfo(th.GetIndexID(), SIGNALS.get(signo, f"signal {signo}"), addr)

    def frame_registers(self, thread: int, level: int) -> Dict[str, int]:
        th = self._thread(thread)
        if th is None:
            return {}
        regs: Dict[str, int] = {}
        for i in range(0, level + 1):
            f = th.GetFrameAtIndex(i)
            if not f.IsValid():
                return {}
            regs = unwound_registers(f, regs, SAVED_REGS)
        return regs

    def evaluate(self, expr: str, thread: int, level: int):
        th = self._thread(thread)
        if th is None:
            return None
        with preserved_selection(self.proc):
            f = th.GetFrameAtIndex(level)
            if not f.IsValid():
                return None
            v = f.GetValueForVariablePath(expr)          # a, p->next, a[1]: no code generation
            if not _ok(v):
                opts = lldb.SBExpressionOptions()
                opts.SetTimeoutInMicroSeconds(5_000_000)
                opts.SetTryAllThreads(False)
                opts.SetIgnoreBreakpoints(True)
                opts.SetUnwindOnError(True)
                v = f.EvaluateExpression(expr, opts)
            if not _ok(v):
                return None
            t = v.GetType()
            ct = t.GetCanonicalType()
            cls = ct.GetTypeClass()
            is_c = self.namer.module_is_c(f.GetModule())
            err = lldb.SBError()
            if cls == lldb.eTypeClassPointer:
                size = self.layouts._target_info(ct, is_c)[0]
                val = v.GetValueAsUnsigned(err, 0)
            elif ct.GetTypeFlags() & (lldb.eTypeIsInteger | lldb.eTypeIsEnumeration) and \
                    not ct.GetTypeFlags() & lldb.eTypeIsArray:
                size = None
                val = v.GetValueAsSigned(err, 0)
            else:
                return None                            # gdb cannot make an integer of it either
            if err.Fail():
                return None
            return val & _MASK, self.namer.type_name(t, is_c), size


def in_memory(v) -> Optional[int]:
    """The variable's storage address when it lives in the program's memory, else None. lldb's
    GetLoadAddress() is no guide: for a pointer held in a register or computed (DW_OP_reg,
    DW_OP_stack_value) it gives the pointer's value; the location it reports says where the
    value is: an address, a register name, "scalar", or a host address for a value assembled
    from pieces (which has no load address)."""
    addr = v.GetLoadAddress()
    if addr in (None, INVALID):
        return None
    loc = (v.GetLocation() or "").strip()
    try:
        return addr if loc and int(loc, 16) == addr else None
    except ValueError:
        return None                             # "rcx", "scalar": not in memory


def _concrete_pc(frame) -> int:
    """The frame's pc as gdb gives it: for a function that an inlined call sits in, the
    machine pc (lldb's GetPC() there is the inlined block's start, a pc that location lists
    must not be evaluated at); the unwound rip register is the machine pc in every frame."""
    v = frame.FindRegister("rip")
    if _ok(v) and v.GetValue() is not None:
        pc = v.GetValueAsUnsigned(0)
        if pc:
            return pc & _MASK
    pc = frame.GetPC()
    return 0 if pc in (None, INVALID) else pc


def unwound_registers(frame, inner: Dict[str, int], names) -> Dict[str, int]:
    """A frame's registers as gdb unwinds them: what the unwinder restores, and for the rest
    (caller-saved registers lldb calls unavailable) the inner frame's value, as gdb does."""
    out: Dict[str, int] = {}
    for r in names:
        v = frame.FindRegister(r)
        if _ok(v) and v.GetValue() is not None:
            err = lldb.SBError()
            x = v.GetValueAsUnsigned(err, 0)
            if err.Success():
                out[r] = x & _MASK
                continue
        if r in inner:
            out[r] = inner[r]
    return out


def _signal_of(th) -> Optional[int]:
    try:
        if th.GetStopReason() == lldb.eStopReasonSignal and th.GetStopReasonDataCount() >= 1:
            return int(th.GetStopReasonDataAtIndex(0))
    except Exception:
        pass
    return None


def _fault_address(th) -> Optional[int]:
    """si_addr of the signal that stopped the thread: siginfo (lldb 15+, live), else lldb's
    stop description ("... (fault address: 0x10)")."""
    try:
        si = th.GetSiginfo()
        if _ok(si):
            a = si.GetValueForExpressionPath("._sifields._sigfault.si_addr")
            if _ok(a):
                return a.GetValueAsUnsigned(0) & _MASK
    except Exception:
        pass
    try:
        m = re.search(r"fault address:\s*(0x[0-9a-fA-F]+)", th.GetStopDescription(256) or "")
        if m:
            return int(m.group(1), 16)
    except Exception:
        pass
    return None


NT_PRSTATUS, NT_SIGINFO = 1, 0x53494749


def core_stop(path: str) -> Optional[Tuple[int, int, Optional[int]]]:
    """(tid, signal, si_addr) of a core's first thread, the one that was current when the core
    was written (gdb selects it): its NT_SIGINFO, else pr_cursig. None when unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            if phentsize < 56:
                return None
            f.seek(phoff)
            phdrs = f.read(phentsize * min(phnum, 1 << 16))
            tid = signo = addr = None
            for i in range(len(phdrs) // phentsize):
                p_type, _, p_off, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
                if p_type != 4:
                    continue
                f.seek(p_off)
                notes = f.read(min(p_filesz, 64 << 20))
                off = 0
                while off + 12 <= len(notes):
                    namesz, descsz, ntype = struct.unpack_from("<III", notes, off)
                    desc = off + 12 + ((namesz + 3) & ~3)
                    nxt = desc + ((descsz + 3) & ~3)
                    if nxt > len(notes):
                        break
                    if ntype == NT_PRSTATUS and descsz >= 36:
                        if tid is not None:
                            return tid, signo or 0, addr       # the next thread's notes begin
                        cursig, = struct.unpack_from("<h", notes, desc + 12)
                        tid, = struct.unpack_from("<i", notes, desc + 32)
                        signo = cursig or None
                    elif ntype == NT_SIGINFO and descsz >= 24 and tid is not None:
                        signo, = struct.unpack_from("<i", notes, desc)
                        addr, = struct.unpack_from("<Q", notes, desc + 16)
                    off = nxt
            return (tid, signo or 0, addr) if tid is not None else None
    except (OSError, struct.error):
        return None
