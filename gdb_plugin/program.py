"""The program's own state as gdb's debug info describes it: frames, pointer variables,
globals, and where each type keeps its pointers. Translation only; analysis is in common/."""
from __future__ import annotations

import contextlib
import re
from typing import Dict, List, Optional

import gdb

from common.objfiles import is_system, program_data_objects
from common.target import FrameInfo, PtrSlot, StopInfo, TypeLayout, Variable

MAX_SLOTS = 4096          # pointer slots expanded per type (big arrays are cut here)
MAX_ARRAY = 1024          # elements of one array expanded
_layouts: Dict[str, TypeLayout] = {}


@contextlib.contextmanager
def preserved_selection():
    """Run a block that switches threads/frames, then give the user back their selection."""
    try:
        cur = gdb.selected_thread()
        cur_frame = gdb.selected_frame() if cur is not None else None
    except gdb.error:
        cur, cur_frame = None, None
    try:
        yield
    finally:
        try:
            if cur is not None and cur.is_valid():
                cur.switch()
            if cur_frame is not None and cur_frame.is_valid():
                cur_frame.select()
        except gdb.error:
            pass


def _frame_at(thread: int, level: int):
    """Switch to a thread and return its frame at `level` (the caller preserves selection)."""
    for th in gdb.selected_inferior().threads():
        if th.num == thread:
            th.switch()
            break
    f = gdb.newest_frame()
    for _ in range(level):
        f = f.older()
    return f


def _target_info(ptr_type: gdb.Type):
    """(sizeof *p or None, pointee type name or None) for a pointer type."""
    try:
        t = ptr_type.target()
        st = t.strip_typedefs()
    except (gdb.error, RuntimeError):
        return None, None
    if st.code in (gdb.TYPE_CODE_VOID, gdb.TYPE_CODE_FUNC):
        return None, None
    if st.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR) and st.sizeof == 1:
        return None, None                       # char *: a byte buffer, no object size to check
    try:
        size = st.sizeof
    except gdb.error:                           # incomplete type
        return None, None
    name = str(st) if st.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION) else None
    return (size or None), name


def _slots(t: gdb.Type, path: str, off: int, out: List[PtrSlot], ambiguous: bool, depth: int) -> None:
    if len(out) >= MAX_SLOTS or depth > 12:
        return
    st = t.strip_typedefs()
    code = st.code
    if code == gdb.TYPE_CODE_PTR:
        size, target = _target_info(st)
        out.append(PtrSlot(path, off, str(t), size, target, ambiguous))
    elif code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        amb = ambiguous or code == gdb.TYPE_CODE_UNION
        for f in st.fields():
            if getattr(f, "bitsize", 0) or not hasattr(f, "bitpos") or f.type is None:
                continue                        # bitfields and static members hold no pointer
            name = f.name or ""
            sub = path if f.is_base_class or not name else f"{path}.{name}"
            _slots(f.type, sub, off + f.bitpos // 8, out, amb, depth + 1)
    elif code == gdb.TYPE_CODE_ARRAY:
        try:
            lo, hi = st.range()
            elem = st.target()
            esz = elem.sizeof
        except (gdb.error, RuntimeError):
            return
        if esz <= 0:
            return
        probe: List[PtrSlot] = []
        _slots(elem, "", 0, probe, ambiguous, depth + 1)
        if not probe:
            return                              # no pointers in this element type
        for i in range(0, min(hi - lo + 1, MAX_ARRAY)):
            for p in probe:
                if len(out) >= MAX_SLOTS:
                    return
                out.append(PtrSlot(f"{path}[{i}]{p.path}", off + i * esz + p.offset, p.type_name,
                                   p.target_size, p.target_type, p.ambiguous))


def layout_of(t: gdb.Type) -> TypeLayout:
    key = str(t)
    lay = _layouts.get(key)
    if lay is None:
        out: List[PtrSlot] = []
        try:
            _slots(t, "", 0, out, False, 0)
            size = t.strip_typedefs().sizeof
        except (gdb.error, RuntimeError):
            size = 0
        lay = TypeLayout(key, size, tuple(out))
        _layouts[key] = lay
    return lay


def type_layout(name: str) -> Optional[TypeLayout]:
    try:
        return layout_of(gdb.lookup_type(name))
    except gdb.error:
        m = re.match(r"(struct|union|enum) (.+)", name)
        try:
            return layout_of(gdb.lookup_type(m.group(2))) if m else None
        except gdb.error:
            return None


def _variable(sym, frame, kind, thread, tid, level, fn) -> Optional[Variable]:
    try:
        lay = layout_of(sym.type)
    except (gdb.error, RuntimeError):
        return None
    if not lay.slots:
        return None
    var = Variable(sym.name, kind, lay, thread=thread, tid=tid, frame=level, function=fn)
    try:
        val = sym.value(frame) if frame is not None else sym.value()
        if val.is_optimized_out:
            var.optimized_out = True
            return var
        addr = val.address
        if addr is not None:
            var.address = int(addr)
        elif val.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
            var.value = int(val) & 0xFFFFFFFFFFFFFFFF
        else:
            var.optimized_out = True            # an aggregate in registers: not followed
    except (gdb.error, RuntimeError, ValueError):
        var.optimized_out = True
    return var


_ALL_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
             "r14", "r15", "rip")


def _registers(f, names=_ALL_REGS) -> Dict[str, int]:
    """The frame's unwound registers by name (callee-saved ones exact; optimized-out skipped)."""
    out = {}
    for r in names:
        try:
            v = f.read_register(r)
            if not v.is_optimized_out:
                out[r] = int(v) & 0xFFFFFFFFFFFFFFFF
        except (gdb.error, ValueError):
            pass
    return out


def _cfa(f, older) -> Optional[int]:
    """The frame's canonical frame address: the caller's unwound sp. For the outermost frame
    gdb shows there is no caller to ask; the DWARF maps compute it from .eh_frame. (Selecting
    that frame to ask `info frame` would switch gdb's language to the frame's — often
    assembly — and change how every later type is spelled.)"""
    if older is None:
        return None
    try:
        return int(older.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
    except (gdb.error, ValueError, RuntimeError):
        return None


def frames(inferior, max_frames: int, variables: bool, registers: bool = False) -> List[FrameInfo]:
    out: List[FrameInfo] = []
    with preserved_selection():
        for th in sorted(inferior.threads(), key=lambda t: t.num):
            tid = th.ptid[1] or th.ptid[0]
            try:
                th.switch()
                f = gdb.newest_frame()
            except gdb.error:
                continue
            level = 0
            while f is not None and level < max_frames:
                fi = _frame_info(f, th.num, tid, level, variables)
                try:
                    older = f.older()
                except gdb.error:
                    older = None
                if registers:
                    fi.registers = _registers(f)
                    fi.cfa = _cfa(f, older)
                out.append(fi)
                f = older
                level += 1
    return out


def _frame_info(f, thread, tid, level, variables) -> FrameInfo:
    try:
        pc = f.pc()
    except gdb.error:
        pc = 0
    fn = f.name() or ""
    sal = f.find_sal()
    path = objfile = ""
    line = 0
    if sal is not None and sal.symtab is not None:
        path, line = sal.symtab.fullname(), sal.line
        objfile = sal.symtab.objfile.filename if sal.symtab.objfile else ""
    if not objfile:
        try:
            objfile = gdb.solib_name(pc) or ""
        except gdb.error:
            pass
    fi = FrameInfo(thread, tid, level, pc, fn, path, line, objfile)
    if not variables or is_system(objfile):
        return fi                               # the C library's frames: its own business
    try:
        block = f.block()
    except (RuntimeError, gdb.error):
        return fi
    seen = set()
    while block is not None:
        for sym in block:
            if sym.name in seen or not (sym.is_argument or sym.is_variable):
                continue
            seen.add(sym.name)
            v = _variable(sym, f, "arg" if sym.is_argument else "local", thread, tid, level, fn)
            if v is not None:
                fi.variables.append(v)
        if block.function is not None:
            break
        block = block.superblock
    return fi


def globals_(objfiles) -> List[Variable]:
    """Pointer-holding variables with static storage in the program and its own libraries:
    the symbol-table candidates (common.objfiles.program_data_objects), typed by gdb."""
    out: List[Variable] = []
    for _obj, name, addr, _size in program_data_objects(objfiles):
        sym = _symbol_at(name, addr)
        if sym is None:
            continue
        lay = layout_of(sym.type)
        if lay.slots:
            out.append(Variable(name, "global", lay, address=addr))
    return out


def _symbol_at(name: str, addr: int):
    """The debug-info symbol `name` whose storage is at addr (statics may share names)."""
    cands = []
    try:
        g = gdb.lookup_global_symbol(name, gdb.SYMBOL_VAR_DOMAIN)
        if g is not None:
            cands.append(g)
        cands += gdb.lookup_static_symbols(name, gdb.SYMBOL_VAR_DOMAIN)
    except (gdb.error, AttributeError, TypeError):
        return None
    for sym in cands:
        try:
            a = sym.value().address
            if a is not None and int(a) == addr:
                return sym
        except (gdb.error, RuntimeError, TypeError):
            continue
    return None


def stop_info() -> StopInfo:
    try:
        th = gdb.selected_thread()
    except gdb.error:
        th = None
    if th is None:
        return StopInfo(None)
    sig = addr = None
    try:
        si = gdb.parse_and_eval("$_siginfo")
        signo = int(si["si_signo"])
        names = {6: "SIGABRT", 11: "SIGSEGV", 7: "SIGBUS", 4: "SIGILL", 8: "SIGFPE", 5: "SIGTRAP"}
        sig = names.get(signo, f"signal {signo}")
        if signo in (11, 7):
            addr = int(si["_sifields"]["_sigfault"]["si_addr"])
        if signo == 5:
            sig = None                           # a breakpoint or a step, not a crash
    except (gdb.error, RuntimeError, ValueError, TypeError):
        pass
    return StopInfo(th.num, sig, addr)


_REGS = ("rbx", "rbp", "r12", "r13", "r14", "r15", "rdi", "rsi", "rax", "rdx")


def frame_registers(thread: int, level: int):
    with preserved_selection():
        try:
            return _registers(_frame_at(thread, level), _REGS)
        except (gdb.error, RuntimeError, AttributeError):
            return {}


def evaluate(expr: str, thread: int, level: int):
    with preserved_selection():
        try:
            _frame_at(thread, level).select()
            v = gdb.parse_and_eval(expr)
            if v.is_optimized_out:
                return None
            t = v.type.strip_typedefs()
            size = _target_info(t)[0] if t.code == gdb.TYPE_CODE_PTR else None
            return int(v) & 0xFFFFFFFFFFFFFFFF, str(v.type), size
        except (gdb.error, RuntimeError, ValueError, AttributeError):
            return None
