"""The few x86-64 instruction forms needed to read tcmalloc's hidden globals out of the exported
`tcmalloc::Static::InitStaticVars()` of a stripped library (no disassembler dependency):

    lea  rdi, [rip+X] ; ... ; call SizeMap::Init            -> X = Static::sizemap_
    lea  rbp, [rip+X] ; loop { mov rdi, rbp ; add rbp, N ;
                               call CentralFreeList::Init }  -> X = Static::central_cache_, N = its stride
    lea  rdi, [rip+X] ; call PageHeap::PageHeap             -> X = Static::pageheap_

Calls are resolved by name through the PLT (`jmp [rip+slot]` + the slot's JUMP_SLOT/GLOB_DAT
relocation) or, for a direct call, by the symbol at the target. Instructions are matched by
their exact byte forms, and a match only counts when the call it belongs to resolves to the
named function, so a stray byte pattern cannot be taken for one.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from ..elfsyms import symbols

R_X86_64_GLOB_DAT = 6
R_X86_64_JUMP_SLOT = 7
LEA_BACK = 48           # bytes before a call searched for the lea that loads rdi
LOOP_BACK = 256         # bytes before the loop's call searched for the lea of the loop pointer


def _s32(b: bytes, i: int) -> int:
    return struct.unpack_from("<i", b, i)[0]


class CodeReader:
    """Call-target names and function bytes of one ELF file (an elfinfo.ElfInfo)."""

    def __init__(self, info):
        self.info = info
        self._names: Dict[int, Optional[str]] = {}
        self._data: Dict[int, bytes] = {}
        self._slots: Optional[Dict[int, int]] = None
        self._plt = [(s["sh_addr"], s["sh_addr"] + s["sh_size"], s) for s in info.elf.iter_sections()
                     if s.name.startswith(".plt")]
        self._dynsym = info.elf.get_section_by_name(".dynsym")

    def function(self, name: str) -> Optional[Tuple[int, bytes]]:
        """(link-time address, code bytes) of a defined function symbol."""
        from elftools.elf.sections import SymbolTableSection
        for secname in (".dynsym", ".symtab"):
            sec = self.info.elf.get_section_by_name(secname)
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.get_symbol_by_name(name) or ():
                if sym["st_shndx"] != "SHN_UNDEF" and sym["st_size"]:
                    code = self._bytes(sym["st_value"], min(sym["st_size"], 8192))
                    if code:
                        return sym["st_value"], code
        return None

    def _bytes(self, vaddr: int, size: int) -> Optional[bytes]:
        for sec in self.info.elf.iter_sections():
            lo = sec["sh_addr"]
            if sec["sh_type"] == "SHT_PROGBITS" and lo <= vaddr and vaddr + size <= lo + sec["sh_size"]:
                return sec.data()[vaddr - lo:vaddr - lo + size]
        return None

    def _section_data(self, sec) -> bytes:
        key = sec["sh_addr"]
        if key not in self._data:
            self._data[key] = sec.data()
        return self._data[key]

    def _slot_symbols(self) -> Dict[int, int]:
        if self._slots is None:
            self._slots = {off: sym for off, typ, sym, _ in self.info.rela
                           if typ in (R_X86_64_JUMP_SLOT, R_X86_64_GLOB_DAT) and sym}
        return self._slots

    def call_name(self, target: int) -> Optional[str]:
        """Name of the function a `call target` reaches (through the PLT or directly)."""
        if target in self._names:
            return self._names[target]
        name = None
        sec = next((s for lo, hi, s in self._plt if lo <= target < hi), None)
        if sec is not None:
            code = self._section_data(sec)[target - sec["sh_addr"]:target - sec["sh_addr"] + 16]
            i = 4 if code[:4] == b"\xf3\x0f\x1e\xfa" else 0      # endbr64
            i += code[i:i + 1] == b"\xf2"                         # bnd prefix
            if code[i:i + 2] == b"\xff\x25" and len(code) >= i + 6:
                slot = target + i + 6 + _s32(code, i + 2)
                idx = self._slot_symbols().get(slot)
                if idx is not None and self._dynsym is not None:
                    name = self._dynsym.get_symbol(idx).name
        else:                                                     # a direct call: the symbol there
            syms = symbols(self.info.path)
            hit = syms.function_at(target) if syms is not None else None
            name = hit[0] if hit is not None and hit[1] == target else None
        self._names[target] = name
        return name


def calls(code: bytes, base: int, reader: CodeReader, wanted) -> List[Tuple[int, str]]:
    """(offset in code, callee name) of every `call rel32` (E8) whose callee is in `wanted`."""
    out = []
    i = code.find(b"\xe8")
    while 0 <= i <= len(code) - 5:
        name = reader.call_name(base + i + 5 + _s32(code, i + 1))
        if name in wanted:
            out.append((i, name))
        i = code.find(b"\xe8", i + 1)
    return out


def lea_rip(code: bytes, end: int, reg: int, back: int) -> Optional[int]:
    """Offset of the last `lea reg64, [rip+disp32]` ending at or before `end`, at most `back`
    bytes before it: REX.W(+R) 8D, ModRM mod=00 rm=101."""
    rex = 0x4C if reg >= 8 else 0x48
    modrm = 0x05 | ((reg & 7) << 3)
    for j in range(end - 7, max(-1, end - back - 1), -1):
        if code[j] == rex and code[j + 1] == 0x8D and code[j + 2] == modrm:
            return j
    return None


def lea_target(code: bytes, base: int, j: int) -> int:
    return base + j + 7 + _s32(code, j + 3)


def rdi_source(code: bytes, call: int) -> Optional[int]:
    """The register moved into rdi just before a call (`mov rdi, reg`), or 7 when a
    `lea rdi, [rip+...]` comes first; None when neither is found in the 24 bytes before it."""
    for j in range(call - 3, max(-1, call - 25), -1):
        rex, op, m = code[j], code[j + 1], code[j + 2]
        if rex in (0x48, 0x49, 0x4C, 0x4D) and m >> 6 == 3:
            if op == 0x89 and m & 7 == 7 and not rex & 1:            # mov rdi, reg (89 /r: reg -> rm)
                return ((m >> 3) & 7) | (8 if rex & 4 else 0)
            if op == 0x8B and (m >> 3) & 7 == 7 and not rex & 4:     # mov rdi, reg (8B /r: rm -> reg)
                return (m & 7) | (8 if rex & 1 else 0)
        if j <= call - 7 and code[j] == 0x48 and code[j + 1] == 0x8D and code[j + 2] == 0x3D:
            return 7
    return None


def add_imm(code: bytes, lo: int, hi: int, reg: int) -> Optional[int]:
    """The immediate of an `add reg64, imm` between lo and hi (the loop pointer's stride)."""
    rex = 0x49 if reg >= 8 else 0x48
    modrm = 0xC0 | (reg & 7)
    for j in range(max(0, lo), min(hi, len(code) - 3)):
        if code[j] == rex and code[j + 2] == modrm:
            if code[j + 1] == 0x81 and j + 7 <= len(code):
                return _s32(code, j + 3)
            if code[j + 1] == 0x83:
                return struct.unpack_from("<b", code, j + 3)[0]
    return None


SIZEMAP_INIT = "_ZN8tcmalloc7SizeMap4InitEv"
CENTRAL_INIT = "_ZN8tcmalloc15CentralFreeList4InitEm"
PAGEHEAP_CTOR = ("_ZN8tcmalloc8PageHeapC1Ev", "_ZN8tcmalloc8PageHeapC2Ev")
INIT_STATIC_VARS = "_ZN8tcmalloc6Static14InitStaticVarsEv"


_DECODED: Dict[int, tuple] = {}          # id(ElfInfo) -> (ElfInfo, result)


def decode_init_static_vars(info) -> Tuple[Dict[str, int], Optional[int], str]:
    """Link-time addresses {"sizemap_", "central_cache_", "pageheap_"} found in InitStaticVars(),
    the central-cache stride seen in its loop (or None), and a sentence on what failed.
    Cached per ElfInfo (elfinfo caches those per file version)."""
    key = id(info)
    if key not in _DECODED or _DECODED[key][0] is not info:
        _DECODED[key] = (info, _decode(info))
    return _DECODED[key][1]


def _decode(info) -> Tuple[Dict[str, int], Optional[int], str]:
    cr = CodeReader(info)
    fn = cr.function(INIT_STATIC_VARS)
    if fn is None:
        return {}, None, "the library does not export tcmalloc::Static::InitStaticVars()"
    base, code = fn
    found: Dict[str, int] = {}
    stride = None
    for off, name in calls(code, base, cr, {SIZEMAP_INIT, CENTRAL_INIT, *PAGEHEAP_CTOR}):
        if name == CENTRAL_INIT:
            if "central_cache_" in found:
                continue
            reg = rdi_source(code, off)
            if reg is None:
                continue
            j = lea_rip(code, off, reg, LOOP_BACK)
            if j is not None:
                found["central_cache_"] = lea_target(code, base, j)
                stride = add_imm(code, j + 7, off + 16, reg) if reg != 7 else None
            continue
        key = "sizemap_" if name == SIZEMAP_INIT else "pageheap_"
        j = lea_rip(code, off, 7, LEA_BACK)
        if j is not None and key not in found:
            found[key] = lea_target(code, base, j)
    missing = [k for k in ("sizemap_", "central_cache_", "pageheap_") if k not in found]
    why = ("InitStaticVars() does not have the expected shape (no `lea` before the call for "
           + ", ".join(missing) + ")") if missing else ""
    return found, stride, why
