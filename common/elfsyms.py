"""ELF symbol tables read with numpy, without pyelftools: name -> address for the few data
symbols a walk needs, and address -> function for naming frames.

pyelftools parses a symbol table one entry at a time (libc's debug file: ~30k entries, ~0.6 s);
here the table is one structured array and a name is found by searching the string table, so a
lookup costs milliseconds. Nothing here raises: a file that is not a readable 64-bit
little-endian ELF has no symbols."""
from __future__ import annotations

import bisect
import functools
import struct
from typing import List, Optional, Tuple

import numpy as np

from .elfinfo import file_version

SHT_SYMTAB, SHT_DYNSYM, SHT_NOBITS = 2, 11, 8
STT_OBJECT, STT_FUNC, STT_TLS, STT_GNU_IFUNC = 1, 2, 6, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
MAX_SYMTAB = 256 << 20            # bytes of one symbol or string table read at most
MAX_NAME_HITS = 64                # occurrences of one name in a string table examined
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                 ("value", "<u8"), ("size", "<u8")])
_BIND_RANK = {STB_GLOBAL: 0, STB_WEAK: 1, STB_LOCAL: 2}


class _Table:
    def __init__(self, syms: np.ndarray, strtab: bytes):
        self.syms = syms[syms["shndx"] != 0]          # defined symbols only
        self.strtab = strtab

    def name(self, off: int) -> str:
        end = self.strtab.find(b"\0", off)
        return self.strtab[off:end if end >= 0 else len(self.strtab)].decode("utf-8", "replace")

    def find(self, name: str) -> List[Tuple[int, int, int]]:
        """(bind rank, value, type) of the defined symbols called `name`."""
        key = name.encode() + b"\0"
        out = []
        pos = 0
        for _ in range(MAX_NAME_HITS):
            o = self.strtab.find(key, pos)
            if o < 0:
                break
            pos = o + 1
            for i in np.flatnonzero(self.syms["name"] == o):
                s = self.syms[i]
                info = int(s["info"])
                out.append((_BIND_RANK.get(info >> 4, 3), int(s["value"]), info & 0xF))
        return out


class ElfSymbols:
    """The .symtab and .dynsym of one file (either may be absent)."""

    def __init__(self, path: str):
        self.path = path
        self.tables: List[_Table] = []
        self._funcs: Optional[Tuple[list, np.ndarray, np.ndarray, _Table]] = None
        try:
            with open(path, "rb") as f:
                self._read(f)
        except (OSError, ValueError, struct.error, MemoryError):
            self.tables = []

    def _read(self, f) -> None:
        hdr = f.read(64)
        if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
            return
        shoff, = struct.unpack_from("<Q", hdr, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", hdr, 0x3A)
        if not shoff or shentsize < 64 or shnum > 1 << 16:
            return
        f.seek(shoff)
        raw = f.read(shentsize * shnum)
        secs = []
        for i in range(len(raw) // shentsize):
            _n, typ, _fl, _a, off, size, link, _inf, _al, _es = struct.unpack_from("<IIQQQQIIQQ", raw, i * shentsize)
            secs.append((typ, off, size, link))
        for want in (SHT_SYMTAB, SHT_DYNSYM):
            for typ, off, size, link in secs:
                if typ != want or size > MAX_SYMTAB or link >= len(secs):
                    continue
                st_typ, st_off, st_size, _ = secs[link]
                if st_typ == SHT_NOBITS or st_size > MAX_SYMTAB:
                    continue
                f.seek(off)
                data = f.read(size - size % _SYM.itemsize)
                f.seek(st_off)
                strtab = f.read(st_size)
                self.tables.append(_Table(np.frombuffer(data, dtype=_SYM), strtab))

    def lookup(self, name: str, types=(STT_OBJECT, STT_FUNC, STT_TLS, STT_GNU_IFUNC, 0)) -> Optional[int]:
        """Link-time value of the defined symbol `name` (global before weak before local)."""
        best = None
        for t in self.tables:
            for rank, value, typ in t.find(name):
                if typ in types and (best is None or rank < best[0]):
                    best = (rank, value)
        return best[1] if best is not None else None

    def function_at(self, addr: int) -> Optional[Tuple[str, int]]:
        """(name, start) of the function symbol covering link-time address addr. Among aliases
        at one address the global name wins (what a debugger shows without debug info)."""
        if self._funcs is None:
            self._funcs = self._function_index()
        starts, sizes, names_at, table = self._funcs
        if not starts:
            return None
        i = bisect.bisect_right(starts, addr) - 1
        for j in range(i, max(i - 16, -1), -1):        # a few back: a small symbol may follow a big one
            lo = starts[j]
            if lo <= addr < lo + max(int(sizes[j]), 1):
                return table.name(int(names_at[j])), lo
            if addr - lo > 1 << 20:
                break
        return None

    def _function_index(self):
        # the table with the most function symbols (the full .symtab when present)
        best = None
        for t in self.tables:
            typ = t.syms["info"] & 0xF
            m = ((typ == STT_FUNC) | (typ == STT_GNU_IFUNC)) & (t.syms["value"] != 0)
            if best is None or m.sum() > best[1].sum():
                best = (t, m)
        if best is None or not best[1].any():
            return [], np.zeros(0), np.zeros(0), None
        t, m = best
        s = t.syms[m]
        rank = np.vectorize(lambda b: _BIND_RANK.get(int(b), 3))(s["info"] >> 4) if len(s) else np.zeros(0)
        order = np.lexsort((rank, s["value"]))
        s, rank = s[order], rank[order]
        keep = np.ones(len(s), dtype=bool)
        keep[1:] = s["value"][1:] != s["value"][:-1]   # first (best-ranked) alias per address
        s = s[keep]
        return s["value"].tolist(), s["size"], s["name"], t


@functools.lru_cache(maxsize=32)
def _cached(path: str, mtime: float, size: int) -> ElfSymbols:
    return ElfSymbols(path)


def symbols(path: str) -> Optional[ElfSymbols]:
    """The symbols of `path`, cached per file version; None when the file cannot be read."""
    key = file_version(path)
    return _cached(*key) if key is not None else None
