"""Facts read from an ELF object file on disk (not from the process): sections, build-id,
relocations, symbols, version strings. Used to find allocator roots by structure when the
debugger has no debug info for the allocator's library."""
from __future__ import annotations

import functools
import os
import re
from typing import Dict, List, Optional, Tuple

R_X86_64_RELATIVE = 8
R_X86_64_TPOFF64 = 18


class ElfInfo:
    def __init__(self, path: str):
        from elftools.elf.elffile import ELFFile   # imported here: optional at module load
        self.path = path
        self._f = open(path, "rb")
        self.elf = ELFFile(self._f)

    def close(self) -> None:
        self._f.close()

    @functools.cached_property
    def build_id(self) -> Optional[str]:
        for sec in self.elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
        return None

    def section(self, name: str) -> Optional[Tuple[int, bytes]]:
        """(vaddr, bytes) of a section with contents, or None."""
        sec = self.elf.get_section_by_name(name)
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            return None
        return sec["sh_addr"], sec.data()

    def section_range(self, name: str) -> Optional[Tuple[int, int]]:
        sec = self.elf.get_section_by_name(name)
        if sec is None:
            return None
        return sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]

    @functools.cached_property
    def rela(self) -> List[Tuple[int, int, int, int]]:
        """(r_offset, type, sym index, addend) of every RELA dynamic relocation."""
        from elftools.elf.relocation import RelocationSection
        out = []
        for sec in self.elf.iter_sections():
            if isinstance(sec, RelocationSection) and sec.is_RELA():
                for r in sec.iter_relocations():
                    out.append((r["r_offset"], r["r_info_type"], r["r_info_sym"], r["r_addend"]))
        return out

    def tpoff_slots(self) -> List[Tuple[int, int]]:
        """(GOT slot vaddr, addend) of R_X86_64_TPOFF64 relocations: at run time each slot
        holds the thread-pointer offset of one initial-exec TLS variable."""
        return [(off, add) for off, typ, _, add in self.rela if typ == R_X86_64_TPOFF64]

    def relative_targets(self) -> Dict[int, int]:
        """slot vaddr -> link-time target of RELATIVE relocations (RELA addends)."""
        return {off: add for off, typ, _, add in self.rela if typ == R_X86_64_RELATIVE}

    def symbol(self, name: str) -> Optional[int]:
        """Link-time value of the defined symbol `name` (.symtab or .dynsym, read as numpy
        arrays by common.elfsyms: 1 ms for libc's debug symbols, 0.3 s through pyelftools)."""
        from .elfsyms import symbols
        syms = symbols(self.path)
        return syms.lookup(name) if syms is not None else None

    def data_objects(self, min_size: int = 8) -> List[Tuple[str, int, int]]:
        """(name, link-time address, size) of the data objects in .symtab (globals and
        file-statics alike); empty for a stripped file."""
        sec = self.elf.get_section_by_name(".symtab")
        if sec is None:
            return []
        out = []
        for sym in sec.iter_symbols():
            if sym["st_info"]["type"] == "STT_OBJECT" and sym["st_size"] >= min_size \
                    and sym["st_shndx"] != "SHN_UNDEF" and sym.name:
                out.append((sym.name, sym["st_value"], sym["st_size"]))
        return out

    def first_load_vaddr(self) -> int:
        for seg in self.elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                return seg["p_vaddr"] & ~0xFFF
        return 0

    def find_bytes(self, pattern: "re.Pattern[bytes]") -> Optional[re.Match]:
        for name in (".rodata", ".data"):
            s = self.section(name)
            if s:
                m = pattern.search(s[1])
                if m:
                    return m
        return None


def file_version(path: str) -> Optional[Tuple[str, float, int]]:
    """(path, mtime, size): the key of every per-file cache (a rebuilt file is a new entry);
    None when the file cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return path, st.st_mtime, st.st_size


@functools.lru_cache(maxsize=16)
def _cached(path: str, mtime: float, size: int) -> ElfInfo:
    return ElfInfo(path)


# A program on another machine maps files this machine may not have, or has in another build:
# the adapter fetches them from the target and says here where the copy is. Every reader of a
# loaded object's file (elf_info, the DWARF maps) opens local_file(path).
_local_copies: Dict[str, str] = {}


def use_local_copy(path: str, local: str) -> None:
    """Read `local` wherever the program's file `path` is meant."""
    _local_copies[path] = local


def local_file(path: str) -> str:
    return _local_copies.get(path, path)


def elf_info(path: str) -> Optional[ElfInfo]:
    """An ElfInfo for `path` (or its local copy), cached per file version; None when the file
    is not readable ELF."""
    key = file_version(local_file(path))
    if key is None:
        return None
    try:
        return _cached(*key)
    except Exception:   # missing file, not ELF, pyelftools parse error: the caller says what is missing
        return None
