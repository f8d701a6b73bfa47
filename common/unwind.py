"""Stack unwinding without a debugger: each thread's frames from its registers and the
objects' call frame information (.eh_frame, else .debug_frame), decoded with pyelftools.

    u = Unwinder(read, code_at)      # read(addr, n) -> bytes; code_at(pc) -> CodeObject or None
    frames, why_stopped = u.unwind(registers, max_frames=64)

One FDE is decoded per function actually met (found through .eh_frame_hdr's sorted table, the
way the C runtime's own unwinder finds it) and kept per file, so a core's few dozen frames cost
a few dozen FDE decodes, not libc's thousands. A row gives the CFA (register + offset or a
DWARF expression) and a rule per register; the caller's rip is the return-address column,
its rsp the CFA, callee-saved registers come from their save slots, and registers no rule
mentions keep their value (gdb's default on x86-64, so frame registers agree with gdb's).

Signal trampolines (glibc's __restore_rt: `mov $15, %rax; syscall`) are recognised by their
code, as gdb does: the interrupted registers are read from the ucontext on the stack. Code with
no CFI is handled like gdb's prologue analysis (frame-pointer chain after `push %rbp; mov
%rsp,%rbp`, else the return address at the stack top), and such frames say so (`how`). Unwinding stops
cleanly on an undefined return address (the outermost frame), a return address outside any
code, a stack that does not grow towards older frames, an unreadable save slot, or the depth
limit; the reason is returned for the report.
"""
from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .elfinfo import file_version
from .maps import exprs

M64 = (1 << 64) - 1
RA_COLUMN = 16
REG_NAMES = exprs.DWARF_REGS                       # DWARF numbering 0..16 (16 = rip)
CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")
MAX_FRAMES = 256
MAX_FDES_PER_FILE = 4096                           # decoded FDE tables kept per file
SIGTRAMP_CODE = bytes.fromhex("48c7c00f0000000f05")   # mov $15 (rt_sigreturn), %rax; syscall
ENDBR64 = bytes.fromhex("f30f1efa")
# struct ucontext: uc_flags, uc_link, uc_stack (24 bytes), then mcontext.gregs in this order
UC_GREGS = 40
GREG_ORDER = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx",
              "rax", "rcx", "rsp", "rip")


@dataclass(frozen=True)
class CodeObject:
    """The object file a pc lies in: its path on disk, load bias, separate debug file."""
    path: str
    bias: int
    debug_path: Optional[str] = None


@dataclass
class UFrame:
    pc: int
    registers: Dict[str, int]
    cfa: Optional[int] = None
    caller: bool = False             # pc is a return address (look up pc - 1)
    how: str = "registers"           # registers (innermost), cfi, signal, tail-call; without CFI:
    #                                  frame-pointer, prologue, stack-top, return-address (bad pc)
    objfile: str = ""
    signal_frame: bool = False       # this frame is a signal trampoline (<signal handler called>)


@dataclass
class Row:
    """One decoded CFI row: the CFA rule and the register rules at a pc."""
    cfa_reg: Optional[int]
    cfa_off: int
    cfa_expr: Optional[bytes]
    rules: Dict[int, Tuple[str, object]] = field(default_factory=dict)
    ra: int = RA_COLUMN


class CfiTable:
    """The call frame information of one ELF file (link-time addresses)."""

    def __init__(self, path: str, debug_path: Optional[str] = None):
        self.path = path
        self.debug_path = debug_path
        self._eh = None                  # (CallFrameInfo, section address) for .eh_frame
        self._hdr: Optional[Tuple[List[int], List[int]]] = None   # sorted initial locations, FDE offsets
        self._all: Optional[Tuple[List[int], list]] = None       # without a search table: every FDE
        self._decoded: Dict[Tuple[int, int], object] = {}
        self.error: Optional[str] = None
        try:
            self._load()
        except Exception as e:          # pyelftools or file trouble: this file has no CFI for us
            self.error = f"{path}: unwind tables unreadable ({type(e).__name__}: {e})"

    def _load(self) -> None:
        from elftools.elf.elffile import ELFFile
        with open(self.path, "rb") as f:
            elf = ELFFile(f)
            eh = elf.get_section_by_name(".eh_frame")
            hdr = elf.get_section_by_name(".eh_frame_hdr")
            if eh is not None and eh["sh_type"] != "SHT_NOBITS" and eh["sh_size"]:
                self._eh = (_cfi(eh.data(), eh["sh_addr"], True), eh["sh_addr"])
                if hdr is not None and hdr["sh_type"] != "SHT_NOBITS":
                    self._hdr = _search_table(hdr.data(), hdr["sh_addr"], eh["sh_addr"])
            if self._hdr is None:
                entries = []
                if self._eh is not None:
                    entries += [(e, self._eh[0]) for e in _fdes(self._eh[0])]
                if not entries:
                    entries += self._debug_frame_entries(elf)
                if not entries and self.debug_path:
                    with open(self.debug_path, "rb") as g:
                        entries += self._debug_frame_entries(ELFFile(g))
                entries.sort(key=lambda e: e[0].header["initial_location"])
                self._all = ([e[0].header["initial_location"] for e in entries], entries)

    def _debug_frame_entries(self, elf):
        sec = elf.get_section_by_name(".debug_frame")
        if sec is None or sec["sh_type"] == "SHT_NOBITS" or not sec["sh_size"]:
            return []
        cfi = _cfi(sec.data(), 0, False)
        return [(e, cfi) for e in _fdes(cfi)]

    def row(self, link_pc: int) -> Optional[Row]:
        fde = self._fde(link_pc)
        if fde is None:
            return None
        key = (id(fde[1]), fde[0].offset)
        table = self._decoded.get(key)
        if table is None:
            if len(self._decoded) >= MAX_FDES_PER_FILE:
                self._decoded.clear()
            table = fde[0].get_decoded().table
            self._decoded[key] = table
        rows = [r for r in table if r["pc"] <= link_pc]
        if not rows:
            return None
        r = rows[-1]
        c = r.get("cfa")
        if c is None:
            return None
        cie = fde[0].cie
        ra = cie.header.get("return_address_register", RA_COLUMN) if cie is not None else RA_COLUMN
        out = Row(c.reg, c.offset or 0, bytes(c.expr) if c.expr is not None else None, ra=ra)
        for k, v in r.items():
            if isinstance(k, int):
                arg = v.arg
                if v.type in ("EXPRESSION", "VAL_EXPRESSION") and arg is not None:
                    arg = bytes(arg)
                out.rules[k] = (v.type, arg)
        return out

    def _fde(self, link_pc: int):
        if self._hdr is not None:
            locs, offs = self._hdr
            i = bisect.bisect_right(locs, link_pc) - 1
            if i < 0:
                return None
            cfi = self._eh[0]
            entry = cfi._parse_entry_at(offs[i])
            h = getattr(entry, "header", None)
            if h is None or "initial_location" not in h:
                return None
            if not h["initial_location"] <= link_pc < h["initial_location"] + h["address_range"]:
                return None
            return entry, cfi
        if self._all is not None:
            locs, entries = self._all
            i = bisect.bisect_right(locs, link_pc) - 1
            for j in range(i, max(i - 4, -1), -1):
                e = entries[j][0]
                if e.header["initial_location"] <= link_pc < e.header["initial_location"] + e.header["address_range"]:
                    return entries[j]
        return None


def _cfi(data: bytes, address: int, eh: bool):
    from elftools.dwarf.callframe import CallFrameInfo
    from elftools.dwarf.structs import DWARFStructs
    structs = DWARFStructs(little_endian=True, dwarf_format=32, address_size=8)
    return CallFrameInfo(io.BytesIO(data), len(data), address, structs, for_eh_frame=eh)


def _fdes(cfi) -> list:
    from elftools.dwarf.callframe import FDE
    return [e for e in cfi.get_entries() if isinstance(e, FDE)]


def _read_encoded(data: bytes, pos: int, enc: int, sec_addr: int, datarel: int) -> Tuple[Optional[int], int]:
    """A DW_EH_PE-encoded value of .eh_frame_hdr: (value, next position)."""
    if enc == 0xFF:
        return None, pos
    fmt = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}.get(enc & 0x0F)
    if fmt is None:
        raise ValueError(f"unsupported pointer encoding {enc:#x}")
    v, = struct.unpack_from(fmt, data, pos)
    pos += struct.calcsize(fmt)
    app = enc & 0x70
    if app == 0x10:
        v += sec_addr + pos - struct.calcsize(fmt)        # pc-relative
    elif app == 0x30:
        v += datarel                                       # relative to the header's start
    elif app != 0:
        raise ValueError(f"unsupported pointer application {app:#x}")
    return v & M64, pos


def _search_table(data: bytes, hdr_addr: int, eh_addr: int) -> Optional[Tuple[List[int], List[int]]]:
    """.eh_frame_hdr's binary-search table as (initial locations, FDE offsets in .eh_frame)."""
    if len(data) < 4 or data[0] != 1:
        return None
    ptr_enc, count_enc, table_enc = data[1], data[2], data[3]
    _, pos = _read_encoded(data, 4, ptr_enc, hdr_addr, hdr_addr)
    count, pos = _read_encoded(data, pos, count_enc, hdr_addr, hdr_addr)
    if count is None or table_enc == 0xFF or count > (len(data) - pos) // 8:
        return None
    if table_enc == 0x3B:                                  # datarel sdata4: the usual, vectorised
        import numpy as np
        arr = np.frombuffer(data, dtype="<i4", count=2 * count, offset=pos).astype(np.int64).reshape(-1, 2)
        locs = (arr[:, 0] + hdr_addr).tolist()
        offs = (arr[:, 1] + hdr_addr - eh_addr).tolist()
    else:
        locs, offs = [], []
        for _ in range(count):
            a, pos = _read_encoded(data, pos, table_enc, hdr_addr, hdr_addr)
            b, pos = _read_encoded(data, pos, table_enc, hdr_addr, hdr_addr)
            locs.append(a)
            offs.append(b - eh_addr)
    order = sorted(range(len(locs)), key=locs.__getitem__)
    return [locs[i] for i in order], [offs[i] for i in order]


_tables: Dict[Tuple[str, float, int], CfiTable] = {}


def cfi_table(path: str, debug_path: Optional[str] = None) -> Optional[CfiTable]:
    """The CfiTable of a file, made once per file version per process."""
    key = file_version(path)
    if key is None:
        return None
    t = _tables.get(key)
    if t is None:
        if len(_tables) > 256:
            _tables.clear()
        t = _tables[key] = CfiTable(path, debug_path)
    return t


class UnwindStop(Exception):
    pass


class Unwinder:
    def __init__(self, read: Callable[[int, int], bytes], code_at: Callable[[int], Optional[CodeObject]],
                 is_code: Optional[Callable[[int], bool]] = None,
                 function_start: Optional[Callable[[int], Optional[int]]] = None):
        self.read = read
        self.code_at = code_at
        self.is_code = is_code or (lambda pc: code_at(pc) is not None)
        self.function_start = function_start or (lambda pc: None)

    def _u64(self, addr: int) -> int:
        try:
            return struct.unpack("<Q", self.read(addr, 8))[0]
        except Exception:            # ReadError and kin: the frame cannot be unwound further
            raise UnwindStop(f"cannot read the stack at {addr:#x}") from None

    def unwind(self, registers: Dict[str, int], max_frames: int = 64) -> Tuple[List[UFrame], str]:
        """The frames of one thread, innermost first, and why unwinding stopped."""
        regs = {k: v & M64 for k, v in registers.items() if k in REG_NAMES}
        pc = regs.get("rip")
        if not pc:
            return [], "no program counter"
        frames: List[UFrame] = []
        cur = UFrame(pc, regs, None, False, "registers")
        seen = set()
        why = ""
        for _ in range(min(max_frames, MAX_FRAMES)):
            obj = self.code_at(cur.pc)
            cur.objfile = obj.path if obj else ""
            frames.append(cur)
            if not cur.pc:                   # a zero return address: shown (as gdb does), then the end
                why = "zero pc"
                break
            key = (cur.pc, cur.registers.get("rsp"))
            if key in seen:
                why = "the stack repeats itself (a loop in saved frames)"
                break
            seen.add(key)
            try:
                nxt = self._step(cur, obj, len(frames) == 1)
            except UnwindStop as e:
                why = str(e)
                break
            if nxt is None:
                why = "outermost frame"
                break
            cur = nxt
        else:
            why = f"stopped after {len(frames)} frames (the limit)"
        return frames, why

    def _step(self, f: UFrame, obj: Optional[CodeObject], innermost: bool) -> Optional[UFrame]:
        regs = f.registers
        sp = regs.get("rsp")
        if sp is None:
            raise UnwindStop("no stack pointer")
        if self._is_sigtramp(f.pc):
            f.signal_frame = True
            return self._signal_caller(f)
        if obj is None:
            if innermost:            # a call through a bad pointer: the return address is at sp
                ra = self._u64(sp)
                return self._checked(f, UFrame(ra, dict(regs, rsp=sp + 8, rip=ra), sp + 8, True, "return-address"))
            raise UnwindStop(f"pc {f.pc:#x} is not in any code mapping")
        table = cfi_table(obj.path, obj.debug_path)
        row = table.row(f.pc - obj.bias - (1 if f.caller else 0)) if table is not None else None
        if row is None:
            return self._no_cfi(f)
        return self._apply(f, row, obj)

    def _apply(self, f: UFrame, row: Row, obj: CodeObject) -> Optional[UFrame]:
        regs = f.registers

        def reg(n: int) -> Optional[int]:
            return regs.get(REG_NAMES[n]) if 0 <= n < len(REG_NAMES) else None

        if row.cfa_expr is not None:
            cfa = self._expr(row.cfa_expr, regs, None, f.pc, obj, location=True)
        else:
            base = reg(row.cfa_reg) if row.cfa_reg is not None else None
            if base is None:
                raise UnwindStop(f"CFA register {row.cfa_reg} unknown at {f.pc:#x}")
            cfa = (base + row.cfa_off) & M64
        if cfa is None:
            raise UnwindStop(f"CFA expression not computable at {f.pc:#x}")
        f.cfa = cfa
        new = dict(regs)
        new["rsp"] = cfa
        rule_ra = row.rules.get(row.ra)
        if rule_ra is not None and rule_ra[0] == "UNDEFINED":
            return None                          # the outermost frame (_start, clone3)
        for n, (typ, arg) in row.rules.items():
            if n >= len(REG_NAMES) or n == 7:
                continue
            name = "rip" if n == row.ra else REG_NAMES[n]
            if typ == "OFFSET":
                new[name] = self._u64(cfa + arg)
            elif typ == "VAL_OFFSET":
                new[name] = (cfa + arg) & M64
            elif typ == "REGISTER":
                v = reg(arg)
                if v is None:
                    new.pop(name, None)
                else:
                    new[name] = v
            elif typ == "EXPRESSION":
                a = self._expr(arg, regs, cfa, f.pc, obj, location=True)
                if a is None:
                    new.pop(name, None)
                else:
                    new[name] = self._u64(a)
            elif typ == "VAL_EXPRESSION":
                v = self._expr(arg, regs, cfa, f.pc, obj, location=False)
                if v is None:
                    new.pop(name, None)
                else:
                    new[name] = v
            elif typ == "UNDEFINED":
                new.pop(name, None)
        if row.ra != RA_COLUMN and row.ra < len(REG_NAMES):
            new["rip"] = new.get(REG_NAMES[row.ra], new.get("rip"))
        ra = new.get("rip")
        if ra is None:
            return None
        return self._checked(f, UFrame(ra, new, None, True, "cfi"))

    def _expr(self, code: bytes, regs, cfa, pc, obj, location: bool) -> Optional[int]:
        """A CFI expression: the CFA's (no initial stack) or a register rule's (the CFA pushed
        first, as DW_OP_constu). location=True: the address it computes; else its value."""
        def read_reg(r: int):
            return regs.get(REG_NAMES[r]) if r < len(REG_NAMES) else None

        def read_mem(a: int, n: int):
            try:
                return self.read(a, n)
            except Exception:        # an unreadable word: the expression has no value
                return None
        if cfa is not None:
            code = bytes([0x10]) + _uleb(cfa) + code
        ctx = exprs.Context(pc=pc, bias=obj.bias, cfa=cfa, read_reg=read_reg, read_mem=read_mem)
        loc = exprs.evaluate(code, ctx, as_location=location)
        if loc.kind == "memory" and loc.address is not None:
            return loc.address & M64
        if loc.kind in ("value", "register") and loc.value is not None:
            return loc.value & M64
        return None

    def _is_sigtramp(self, pc: int) -> bool:
        try:
            return self.read(pc, len(SIGTRAMP_CODE)) == SIGTRAMP_CODE
        except Exception:            # unreadable code: not a trampoline we can recognise
            return False

    def _signal_caller(self, f: UFrame) -> Optional[UFrame]:
        sp = f.registers["rsp"]
        try:
            raw = self.read(sp + UC_GREGS, 8 * len(GREG_ORDER))
        except Exception:            # ReadError: the ucontext is not in the snapshot
            raise UnwindStop(f"cannot read the signal frame's saved registers at {sp + UC_GREGS:#x}") from None
        vals = struct.unpack(f"<{len(GREG_ORDER)}Q", raw)
        new = dict(zip(GREG_ORDER, vals))
        f.cfa = sp
        if not new.get("rip"):
            return None
        # the interrupted pc is exact (not a return address): it is looked up as is
        return UFrame(new["rip"], new, None, False, "signal")

    def _no_cfi(self, f: UFrame) -> Optional[UFrame]:
        """Code without CFI, as gdb's x86-64 prologue analysis treats it: when the function
        (its symbol) begins `push %rbp; mov %rsp,%rbp` and pc is past it, the frame-pointer chain;
        past the push only, the return address above the saved rbp; otherwise a frameless
        function whose return address is at the stack top."""
        regs = f.registers
        sp = regs["rsp"]
        start = self.function_start(f.pc - (1 if f.caller else 0))
        code = b""
        if start is not None and 0 <= f.pc - start < 1 << 20:
            try:
                code = self.read(start, 12)
            except Exception:        # the code is not readable: treat the function as frameless
                code = b""
        pos = 4 if code[:4] == ENDBR64 else 0
        pushed = code[pos:pos + 1] == b"\x55"
        moved = pushed and code[pos + 1:pos + 4] in (b"\x48\x89\xe5", b"\x48\x8b\xec")
        off = f.pc - start if start is not None else -1
        if moved and off >= pos + 4:
            return self._frame_pointer(f)
        if pushed and off >= pos + 1:
            ra = self._u64(sp + 8)
            new = dict(regs, rsp=sp + 16, rbp=self._u64(sp), rip=ra)
            f.cfa = sp + 16
            return self._checked(f, UFrame(ra, new, None, True, "prologue"))
        ra = self._u64(sp)
        f.cfa = sp + 8
        return self._checked(f, UFrame(ra, dict(regs, rsp=sp + 8, rip=ra), None, True, "stack-top"))

    def _frame_pointer(self, f: UFrame) -> Optional[UFrame]:
        regs = f.registers
        bp, sp = regs.get("rbp"), regs.get("rsp")
        if not bp or sp is None or not sp <= bp < sp + (1 << 24) or bp & 7:
            raise UnwindStop(f"no unwind information for pc {f.pc:#x} and no usable frame pointer")
        ra = self._u64(bp + 8)
        new = dict(regs, rsp=bp + 16, rbp=self._u64(bp), rip=ra)
        f.cfa = bp + 16
        return self._checked(f, UFrame(ra, new, None, True, "frame-pointer"))

    def _checked(self, f: UFrame, nxt: UFrame) -> Optional[UFrame]:
        sp, nsp = f.registers.get("rsp"), nxt.registers.get("rsp")
        if not nxt.pc:
            return nxt                           # the caller of the outermost frame (unwind() stops there)
        if sp is not None and nsp is not None and nsp <= sp:
            raise UnwindStop(f"the caller's stack pointer {nsp:#x} is not above {sp:#x}: the stack is corrupt here")
        if not self.is_code(nxt.pc):
            raise UnwindStop(f"return address {nxt.pc:#x} is not in any code mapping")
        return nxt


def _uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)
