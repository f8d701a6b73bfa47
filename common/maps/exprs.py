"""DWARF location expressions: a decoder and a stack-machine evaluator (DWARF 5 section 2.5/2.6,
with the GNU extensions gcc emits). No pyelftools here: expressions are cached as bytes and
evaluated at every stop, so this module only needs the bytes, registers, the CFA and memory.

`evaluate()` returns a `Loc`: where a variable's value is (memory address, register, a computed
value, pieces), or why it cannot be placed ("optimized_out", "unavailable", "unsupported"). An
op this evaluator does not understand gives "unsupported", never a guess.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

M64 = (1 << 64) - 1
MAX_STEPS = 10_000          # ops executed per evaluation (bra/skip loops are legal DWARF)
MAX_STACK = 1_000

# x86-64 DWARF register numbers (System V psABI, figure 3.36)
DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
REG_NUMBERS = {name: i for i, name in enumerate(DWARF_REGS)}

# opcodes used by name below (DWARF 5 table 7.9 and GNU extensions)
OP_ADDR = 0x03
OP_DEREF = 0x06
OP_CONST1U, OP_CONST1S, OP_CONST2U, OP_CONST2S = 0x08, 0x09, 0x0a, 0x0b
OP_CONST4U, OP_CONST4S, OP_CONST8U, OP_CONST8S = 0x0c, 0x0d, 0x0e, 0x0f
OP_CONSTU, OP_CONSTS = 0x10, 0x11
OP_DUP, OP_DROP, OP_OVER, OP_PICK, OP_SWAP, OP_ROT = 0x12, 0x13, 0x14, 0x15, 0x16, 0x17
OP_XDEREF = 0x18
OP_ABS, OP_AND, OP_DIV, OP_MINUS, OP_MOD, OP_MUL, OP_NEG, OP_NOT, OP_OR, OP_PLUS = range(0x19, 0x23)
OP_PLUS_UCONST = 0x23
OP_SHL, OP_SHR, OP_SHRA, OP_XOR = 0x24, 0x25, 0x26, 0x27
OP_BRA = 0x28
OP_EQ, OP_GE, OP_GT, OP_LE, OP_LT, OP_NE = range(0x29, 0x2f)
OP_SKIP = 0x2f
OP_LIT0, OP_LIT31 = 0x30, 0x4f
OP_REG0, OP_REG31 = 0x50, 0x6f
OP_BREG0, OP_BREG31 = 0x70, 0x8f
OP_REGX, OP_FBREG, OP_BREGX, OP_PIECE, OP_DEREF_SIZE, OP_XDEREF_SIZE, OP_NOP = range(0x90, 0x97)
OP_PUSH_OBJECT_ADDRESS, OP_CALL2, OP_CALL4, OP_CALL_REF = 0x97, 0x98, 0x99, 0x9a
OP_FORM_TLS_ADDRESS, OP_CALL_FRAME_CFA, OP_BIT_PIECE, OP_IMPLICIT_VALUE, OP_STACK_VALUE = 0x9b, 0x9c, 0x9d, 0x9e, 0x9f
OP_IMPLICIT_POINTER, OP_ADDRX, OP_CONSTX, OP_ENTRY_VALUE = 0xa0, 0xa1, 0xa2, 0xa3
OP_CONST_TYPE, OP_REGVAL_TYPE, OP_DEREF_TYPE, OP_XDEREF_TYPE, OP_CONVERT, OP_REINTERPRET = range(0xa4, 0xaa)
OP_GNU_PUSH_TLS_ADDRESS = 0xe0
OP_GNU_UNINIT = 0xf0
OP_GNU_ENCODED_ADDR = 0xf1
OP_GNU_IMPLICIT_POINTER = 0xf2
OP_GNU_ENTRY_VALUE = 0xf3
OP_GNU_CONST_TYPE, OP_GNU_REGVAL_TYPE, OP_GNU_DEREF_TYPE, OP_GNU_CONVERT = 0xf4, 0xf5, 0xf6, 0xf7
OP_GNU_REINTERPRET = 0xf9
OP_GNU_PARAMETER_REF = 0xfa
OP_GNU_ADDR_INDEX, OP_GNU_CONST_INDEX, OP_GNU_VARIABLE_VALUE = 0xfb, 0xfc, 0xfd

OP_NAMES = {
    0x03: "DW_OP_addr", 0x06: "DW_OP_deref", 0x18: "DW_OP_xderef", 0x90: "DW_OP_regx", 0x91: "DW_OP_fbreg",
    0x92: "DW_OP_bregx", 0x93: "DW_OP_piece", 0x94: "DW_OP_deref_size", 0x95: "DW_OP_xderef_size",
    0x97: "DW_OP_push_object_address", 0x98: "DW_OP_call2", 0x99: "DW_OP_call4", 0x9a: "DW_OP_call_ref",
    0x9b: "DW_OP_form_tls_address", 0x9c: "DW_OP_call_frame_cfa", 0x9d: "DW_OP_bit_piece",
    0x9e: "DW_OP_implicit_value", 0x9f: "DW_OP_stack_value", 0xa0: "DW_OP_implicit_pointer",
    0xa1: "DW_OP_addrx", 0xa2: "DW_OP_constx", 0xa3: "DW_OP_entry_value", 0xa4: "DW_OP_const_type",
    0xa5: "DW_OP_regval_type", 0xa6: "DW_OP_deref_type", 0xa7: "DW_OP_xderef_type", 0xa8: "DW_OP_convert",
    0xa9: "DW_OP_reinterpret", 0xe0: "DW_OP_GNU_push_tls_address", 0xf0: "DW_OP_GNU_uninit",
    0xf1: "DW_OP_GNU_encoded_addr", 0xf2: "DW_OP_GNU_implicit_pointer", 0xf3: "DW_OP_GNU_entry_value",
    0xf4: "DW_OP_GNU_const_type", 0xf5: "DW_OP_GNU_regval_type", 0xf6: "DW_OP_GNU_deref_type",
    0xf7: "DW_OP_GNU_convert", 0xf9: "DW_OP_GNU_reinterpret", 0xfa: "DW_OP_GNU_parameter_ref",
    0xfb: "DW_OP_GNU_addr_index", 0xfc: "DW_OP_GNU_const_index", 0xfd: "DW_OP_GNU_variable_value",
}


for _n, _name in enumerate(("dup", "drop", "over", "pick", "swap", "rot", "xderef", "abs", "and", "div", "minus",
                            "mod", "mul", "neg", "not", "or", "plus", "plus_uconst", "shl", "shr", "shra",
                            "xor", "bra", "eq", "ge", "gt", "le", "lt", "ne", "skip")):
    OP_NAMES.setdefault(0x12 + _n, "DW_OP_" + _name)
OP_NAMES.update({0x08: "DW_OP_const1u", 0x09: "DW_OP_const1s", 0x0a: "DW_OP_const2u", 0x0b: "DW_OP_const2s",
                 0x0c: "DW_OP_const4u", 0x0d: "DW_OP_const4s", 0x0e: "DW_OP_const8u", 0x0f: "DW_OP_const8s",
                 0x10: "DW_OP_constu", 0x11: "DW_OP_consts", 0x96: "DW_OP_nop"})


def op_name(op: int) -> str:
    if OP_LIT0 <= op <= OP_LIT31:
        return f"DW_OP_lit{op - OP_LIT0}"
    if OP_REG0 <= op <= OP_REG31:
        return f"DW_OP_reg{op - OP_REG0}"
    if OP_BREG0 <= op <= OP_BREG31:
        return f"DW_OP_breg{op - OP_BREG0}"
    return OP_NAMES.get(op, f"DW_OP_0x{op:02x}")


class ExprError(Exception):
    """A malformed expression (truncated operand, bad branch): reported as unsupported."""


def _uleb(b: bytes, i: int) -> Tuple[int, int]:
    v = shift = 0
    while True:
        if i >= len(b):
            raise ExprError("truncated LEB128")
        c = b[i]
        i += 1
        v |= (c & 0x7f) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _sleb(b: bytes, i: int) -> Tuple[int, int]:
    v, j = _uleb(b, i)
    if b[j - 1] & 0x40:                    # the last byte's sign bit extends the value
        v -= 1 << (7 * (j - i))
    return v, j


_FIXED = {OP_CONST1U: ("<B", 1), OP_CONST1S: ("<b", 1), OP_CONST2U: ("<H", 2), OP_CONST2S: ("<h", 2),
          OP_CONST4U: ("<I", 4), OP_CONST4S: ("<i", 4), OP_CONST8U: ("<Q", 8), OP_CONST8S: ("<q", 8),
          OP_ADDR: ("<Q", 8), OP_PICK: ("<B", 1), OP_DEREF_SIZE: ("<B", 1), OP_XDEREF_SIZE: ("<B", 1),
          OP_BRA: ("<h", 2), OP_SKIP: ("<h", 2), OP_CALL2: ("<H", 2), OP_CALL4: ("<I", 4),
          OP_CALL_REF: ("<I", 4), OP_GNU_PARAMETER_REF: ("<I", 4)}


def decode(expr: bytes) -> List[Tuple[int, int, tuple]]:
    """[(offset, opcode, operands)] for a whole expression (64-bit addresses, 32-bit DWARF
    offsets). Raises ExprError on a truncated or unknown op."""
    out = []
    i, n = 0, len(expr)
    while i < n:
        start = i
        op = expr[i]
        i += 1
        if op in _FIXED:
            fmt, size = _FIXED[op]
            if i + size > n:
                raise ExprError(f"truncated {op_name(op)}")
            args: tuple = (struct.unpack_from(fmt, expr, i)[0],)
            i += size
        elif OP_LIT0 <= op <= OP_REG31 or op in (
                OP_DEREF, OP_DUP, OP_DROP, OP_OVER, OP_SWAP, OP_ROT, OP_XDEREF, OP_NOP, OP_STACK_VALUE,
                OP_CALL_FRAME_CFA, OP_FORM_TLS_ADDRESS, OP_GNU_PUSH_TLS_ADDRESS, OP_PUSH_OBJECT_ADDRESS,
                OP_GNU_UNINIT) or OP_ABS <= op <= OP_NOT or op in (OP_OR, OP_PLUS, OP_SHL, OP_SHR, OP_SHRA,
                                                                 OP_XOR) or OP_EQ <= op <= OP_NE:
            args = ()
        elif OP_BREG0 <= op <= OP_BREG31 or op in (OP_FBREG, OP_CONSTS):
            v, i = _sleb(expr, i)
            args = (v,)
        elif op in (OP_CONSTU, OP_PLUS_UCONST, OP_REGX, OP_PIECE, OP_ADDRX, OP_CONSTX, OP_CONVERT,
                    OP_REINTERPRET, OP_GNU_CONVERT, OP_GNU_REINTERPRET, OP_GNU_ADDR_INDEX, OP_GNU_CONST_INDEX):
            v, i = _uleb(expr, i)
            args = (v,)
        elif op == OP_BREGX:
            r, i = _uleb(expr, i)
            off, i = _sleb(expr, i)
            args = (r, off)
        elif op == OP_BIT_PIECE:
            size, i = _uleb(expr, i)
            off, i = _uleb(expr, i)
            args = (size, off)
        elif op in (OP_IMPLICIT_VALUE, OP_ENTRY_VALUE, OP_GNU_ENTRY_VALUE):
            size, i = _uleb(expr, i)
            if i + size > n:
                raise ExprError(f"truncated {op_name(op)}")
            args = (bytes(expr[i:i + size]),)
            i += size
        elif op in (OP_IMPLICIT_POINTER, OP_GNU_IMPLICIT_POINTER, OP_GNU_VARIABLE_VALUE):
            if i + 4 > n:
                raise ExprError(f"truncated {op_name(op)}")
            ref = struct.unpack_from("<I", expr, i)[0]
            i += 4
            if op == OP_GNU_VARIABLE_VALUE:
                args = (ref,)
            else:
                off, i = _sleb(expr, i)
                args = (ref, off)
        elif op in (OP_CONST_TYPE, OP_GNU_CONST_TYPE):
            t, i = _uleb(expr, i)
            if i >= n:
                raise ExprError("truncated DW_OP_const_type")
            size = expr[i]
            i += 1
            if i + size > n:
                raise ExprError("truncated DW_OP_const_type")
            args = (t, bytes(expr[i:i + size]))
            i += size
        elif op in (OP_REGVAL_TYPE, OP_GNU_REGVAL_TYPE):
            r, i = _uleb(expr, i)
            t, i = _uleb(expr, i)
            args = (r, t)
        elif op in (OP_DEREF_TYPE, OP_GNU_DEREF_TYPE, OP_XDEREF_TYPE):
            if i >= n:
                raise ExprError("truncated DW_OP_deref_type")
            size = expr[i]
            t, i = _uleb(expr, i + 1)
            args = (size, t)
        else:
            raise ExprError(f"unknown opcode 0x{op:02x}")
        out.append((start, op, args))
    return out


@dataclass
class Loc:
    """Where a variable's bytes are, or why they cannot be had.

    kind: "memory" (address), "register" (reg: DWARF number; value: its contents when
    readable), "value" (a computed value: DW_OP_stack_value, a constant), "implicit" (data:
    literal bytes, DW_OP_implicit_value / DW_AT_const_value blocks), "pieces" (pieces: list of
    (size in bytes, Loc), a variable split over several places), "optimized_out" (no location
    here), "unavailable" (a needed register or memory word is not known, e.g. a caller-saved
    register in an outer frame), "unsupported" (an op or form not implemented: reason says which).
    """
    kind: str
    address: Optional[int] = None
    reg: Optional[int] = None
    value: Optional[int] = None
    data: Optional[bytes] = None
    pieces: List[Tuple[int, "Loc"]] = field(default_factory=list)
    reason: str = ""

    @property
    def placed(self) -> bool:
        return self.kind in ("memory", "register", "value", "implicit", "pieces")


def optimized_out(reason: str = "no location at this pc") -> Loc:
    return Loc("optimized_out", reason=reason)


@dataclass
class Context:
    """What an expression may read. pc is the runtime pc (for location-list selection the
    caller already chose the expression); bias is the object's load bias (added to DW_OP_addr).

    read_reg(dwarf_regno) -> int or None; read_mem(addr, size) -> bytes or None;
    frame_base() -> int or None (lazily: most expressions never need it);
    entry_value(expr_bytes) -> int or None (DW_OP_entry_value: the value the expression had on
    entry to the function, found through the caller's call-site parameters)."""
    pc: int = 0
    bias: int = 0
    cfa: Optional[int] = None
    read_reg: Callable[[int], Optional[int]] = lambda r: None
    read_mem: Callable[[int, int], Optional[bytes]] = lambda a, n: None
    frame_base: Callable[[], Optional[int]] = lambda: None
    entry_value: Callable[[bytes], Optional[int]] = lambda e: None
    tls_base: Optional[int] = None        # the module's TLS block of the current thread, if known


class _Stop(Exception):
    def __init__(self, loc: Loc):
        self.loc = loc


def _signed(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v


def _mem(ctx: Context, addr: int, size: int) -> int:
    raw = None
    try:
        raw = ctx.read_mem(addr & M64, size)
    except Exception:          # a reader may raise on unmapped memory: the value is unavailable
        raw = None
    if raw is None or len(raw) < size:
        raise _Stop(Loc("unavailable", reason=f"memory at {addr & M64:#x} unreadable"))
    return int.from_bytes(raw[:size], "little")


def _reg(ctx: Context, r: int) -> int:
    v = ctx.read_reg(r)
    if v is None:
        name = DWARF_REGS[r] if r < len(DWARF_REGS) else f"r{r}"
        raise _Stop(Loc("unavailable", reg=r, reason=f"register {name} not available in this frame"))
    return v & M64


def evaluate(expr: bytes, ctx: Context, *, as_location: bool = True) -> Loc:
    """Evaluate a location description. as_location=False: a DWARF expression whose result is
    a value (DW_AT_frame_base is a location too; DW_AT_call_value is a value)."""
    try:
        ops = decode(expr)
    except ExprError as e:
        return Loc("unsupported", reason=f"malformed expression: {e}")
    if not ops:
        return optimized_out("empty location expression")
    try:
        return _run(ops, len(expr), ctx, as_location)
    except _Stop as s:
        return s.loc
    except IndexError:
        return Loc("unsupported", reason="malformed expression: stack underflow")
    except ZeroDivisionError:
        return Loc("unavailable", reason="division by zero (a value read from memory was 0)")


def _run(ops, end: int, ctx: Context, as_location: bool) -> Loc:
    stack: List[int] = []
    pieces: List[Tuple[int, Loc]] = []
    result: Optional[Loc] = None          # a location set by reg/stack_value/implicit_value
    by_offset = {off: k for k, (off, _, _) in enumerate(ops)}
    k = steps = 0
    n = len(ops)
    while k < n:
        steps += 1
        if steps > MAX_STEPS or len(stack) > MAX_STACK:
            return Loc("unsupported", reason="expression does not terminate")
        off, op, args = ops[k]
        k += 1
        if op == OP_PIECE or op == OP_BIT_PIECE:
            if op == OP_BIT_PIECE and (args[0] % 8 or args[1] % 8):
                return Loc("unsupported", reason="DW_OP_bit_piece of a partial byte")
            size = args[0] // 8 if op == OP_BIT_PIECE else args[0]
            if result is not None:
                piece = result
            elif stack:
                piece = Loc("memory", address=stack[-1] + (args[1] // 8 if op == OP_BIT_PIECE else 0))
            else:
                piece = optimized_out("piece optimized out")
            pieces.append((size, piece))
            stack.clear()
            result = None
            continue
        if result is not None and op not in (OP_GNU_UNINIT, OP_NOP):
            # reg / stack_value / implicit_value must be the last op of the expression or piece
            return Loc("unsupported", reason=f"{op_name(op)} after a location that must end the expression")
        if OP_LIT0 <= op <= OP_LIT31:
            stack.append(op - OP_LIT0)
        elif op == OP_ADDR:
            stack.append((args[0] + ctx.bias) & M64)
        elif op in _FIXED and op <= OP_CONST8S or op in (OP_CONSTU, OP_CONSTS):
            stack.append(args[0] & M64)
        elif OP_REG0 <= op <= OP_REG31 or op == OP_REGX:
            r = op - OP_REG0 if op != OP_REGX else args[0]
            v = ctx.read_reg(r)
            result = Loc("register", reg=r, value=None if v is None else v & M64)
            if v is None and as_location:
                name = DWARF_REGS[r] if r < len(DWARF_REGS) else f"r{r}"
                result = Loc("unavailable", reg=r, reason=f"register {name} not available in this frame")
                if k == n:
                    return result
        elif OP_BREG0 <= op <= OP_BREG31:
            stack.append((_reg(ctx, op - OP_BREG0) + args[0]) & M64)
        elif op == OP_BREGX:
            stack.append((_reg(ctx, args[0]) + args[1]) & M64)
        elif op == OP_FBREG:
            fb = ctx.frame_base()
            if fb is None:
                raise _Stop(Loc("unavailable", reason="frame base not available"))
            stack.append((fb + args[0]) & M64)
        elif op == OP_CALL_FRAME_CFA:
            if ctx.cfa is None:
                raise _Stop(Loc("unavailable", reason="CFA not available"))
            stack.append(ctx.cfa & M64)
        elif op == OP_DUP:
            stack.append(stack[-1])
        elif op == OP_DROP:
            stack.pop()
        elif op == OP_OVER:
            stack.append(stack[-2])
        elif op == OP_PICK:
            stack.append(stack[-1 - args[0]])
        elif op == OP_SWAP:
            stack[-1], stack[-2] = stack[-2], stack[-1]
        elif op == OP_ROT:
            stack[-1], stack[-2], stack[-3] = stack[-2], stack[-3], stack[-1]
        elif op == OP_DEREF:
            stack.append(_mem(ctx, stack.pop(), 8))
        elif op == OP_DEREF_SIZE:
            if not 1 <= args[0] <= 8:
                return Loc("unsupported", reason=f"DW_OP_deref_size {args[0]}")
            stack.append(_mem(ctx, stack.pop(), args[0]))
        elif op == OP_ABS:
            stack.append(abs(_signed(stack.pop())) & M64)
        elif op == OP_NEG:
            stack.append(-stack.pop() & M64)
        elif op == OP_NOT:
            stack.append(~stack.pop() & M64)
        elif op == OP_PLUS_UCONST:
            stack.append((stack.pop() + args[0]) & M64)
        elif op in (OP_AND, OP_DIV, OP_MINUS, OP_MOD, OP_MUL, OP_OR, OP_PLUS, OP_SHL, OP_SHR, OP_SHRA, OP_XOR) \
                or OP_EQ <= op <= OP_NE:
            b = stack.pop()
            a = stack.pop()
            stack.append(_binary(op, a, b))
        elif op == OP_SKIP or op == OP_BRA:
            if op == OP_BRA and stack.pop() == 0:
                continue
            target = off + 3 + args[0]
            if target == end:
                k = n
                continue
            if target not in by_offset:
                return Loc("unsupported", reason="branch into the middle of an op")
            k = by_offset[target]
        elif op == OP_NOP:
            pass
        elif op == OP_STACK_VALUE:
            result = Loc("value", value=stack[-1] & M64)
        elif op == OP_IMPLICIT_VALUE:
            result = Loc("implicit", data=args[0])
        elif op in (OP_ENTRY_VALUE, OP_GNU_ENTRY_VALUE):
            v = None
            try:
                v = ctx.entry_value(args[0])
            except Exception:       # a resolver failure is "not known", never a crash
                v = None
            if v is None:
                raise _Stop(optimized_out("entry value not resolvable (DW_OP_entry_value)"))
            stack.append(v & M64)
        elif op in (OP_IMPLICIT_POINTER, OP_GNU_IMPLICIT_POINTER):
            raise _Stop(optimized_out("implicit pointer to an optimized-out object"))
        elif op == OP_GNU_PARAMETER_REF:
            raise _Stop(optimized_out("parameter passed as a constant (DW_OP_GNU_parameter_ref)"))
        elif op == OP_GNU_UNINIT:
            pass
        elif op in (OP_FORM_TLS_ADDRESS, OP_GNU_PUSH_TLS_ADDRESS):
            if ctx.tls_base is None:
                raise _Stop(Loc("unsupported", reason="thread-local storage (TLS block unknown)"))
            stack.append((stack.pop() + ctx.tls_base) & M64)
        elif op in (OP_CONVERT, OP_GNU_CONVERT, OP_REINTERPRET, OP_GNU_REINTERPRET) and args[0] == 0:
            pass                      # to the generic type: a no-op on a 64-bit target
        elif op in (OP_REGVAL_TYPE, OP_GNU_REGVAL_TYPE):
            if args[0] >= len(DWARF_REGS):
                return Loc("unsupported", reason=f"{op_name(op)} of register {args[0]} "
                                                 "(vector and x87 registers are not read)")
            stack.append(_reg(ctx, args[0]))   # integer registers only: the type only narrows
        elif op in (OP_DEREF_TYPE, OP_GNU_DEREF_TYPE) and 1 <= args[0] <= 8:
            stack.append(_mem(ctx, stack.pop(), args[0]))
        elif op in (OP_CONST_TYPE, OP_GNU_CONST_TYPE) and 1 <= len(args[1]) <= 8:
            stack.append(int.from_bytes(args[1], "little"))
        else:
            return Loc("unsupported", reason=f"{op_name(op)} not supported")
    if pieces:
        if result is not None or stack:
            return Loc("unsupported", reason="ops after the last DW_OP_piece")
        return Loc("pieces", pieces=pieces)
    if result is not None:
        return result
    if not stack:
        return optimized_out("expression left nothing on the stack")
    if as_location:
        return Loc("memory", address=stack[-1] & M64)
    return Loc("value", value=stack[-1] & M64)


def _binary(op: int, a: int, b: int) -> int:
    if op == OP_AND:
        return a & b
    if op == OP_OR:
        return a | b
    if op == OP_XOR:
        return a ^ b
    if op == OP_PLUS:
        return (a + b) & M64
    if op == OP_MINUS:
        return (a - b) & M64
    if op == OP_MUL:
        return (a * b) & M64
    if op == OP_DIV:
        sa, sb = _signed(a), _signed(b)
        if sb == 0:
            raise ZeroDivisionError
        q = abs(sa) // abs(sb)
        return (q if (sa < 0) == (sb < 0) else -q) & M64
    if op == OP_MOD:
        if b == 0:
            raise ZeroDivisionError
        return a % b
    if op == OP_SHL:
        return (a << b) & M64 if b < 64 else 0
    if op == OP_SHR:
        return a >> b if b < 64 else 0
    if op == OP_SHRA:
        return (_signed(a) >> min(b, 63)) & M64
    sa, sb = _signed(a), _signed(b)
    return int({OP_EQ: sa == sb, OP_GE: sa >= sb, OP_GT: sa > sb, OP_LE: sa <= sb,
                OP_LT: sa < sb, OP_NE: sa != sb}[op])


def simple_register(expr: bytes) -> Optional[int]:
    """The DWARF register number when expr is just DW_OP_regN / DW_OP_regx N / DW_OP_bregN 0
    (what call-site parameters and entry values name), else None."""
    if not expr:
        return None
    op = expr[0]
    if OP_REG0 <= op <= OP_REG31 and len(expr) == 1:
        return op - OP_REG0
    try:
        ops = decode(expr)
    except ExprError:
        return None
    if len(ops) != 1:
        return None
    _, op, args = ops[0]
    if op == OP_REGX:
        return args[0]
    if OP_BREG0 <= op <= OP_BREG31 and args[0] == 0:
        return op - OP_BREG0
    return None


def static_address(expr: bytes) -> Optional[int]:
    """The link-time address when expr is exactly DW_OP_addr A (static storage)."""
    if len(expr) == 9 and expr[0] == OP_ADDR:
        return struct.unpack_from("<Q", expr, 1)[0]
    return None


def tls_offset(expr: bytes) -> Optional[int]:
    """The offset in the module's TLS block when expr is `DW_OP_const* N;
    DW_OP_form_tls_address` (or GNU_push_tls_address), else None."""
    if not expr or expr[-1] not in (OP_FORM_TLS_ADDRESS, OP_GNU_PUSH_TLS_ADDRESS):
        return None
    try:
        ops = decode(expr)
    except ExprError:
        return None
    if len(ops) != 2:
        return None
    _, op, args = ops[0]
    if op in _FIXED and OP_CONST1U <= op <= OP_CONST8S or op in (OP_CONSTU, OP_CONSTS):
        return args[0] & M64
    if OP_LIT0 <= op <= OP_LIT31:
        return op - OP_LIT0
    return None
