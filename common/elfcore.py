"""A reader for ELF core files (gcore's or the kernel's), with no debugger.

Gives the mappings (PT_LOAD, named by the NT_FILE note), per-thread registers (NT_PRSTATUS:
tid, fs_base, rip, rsp) and memory through mmap. Pages a core left out (gcore skips
read-only file-backed pages) are read from the mapped file on disk when it is there.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .target import ReadError, Region, TargetError

PT_LOAD, PT_NOTE = 1, 4


class MissingFromCore(ReadError):
    """The core describes these bytes but does not hold them, and no file has their real
    contents (writable memory of a truncated core). Nobody may substitute the file's bytes."""

NT_PRSTATUS, NT_FILE = 1, 0x46494C45
# x86-64 user_regs_struct order inside elf_prstatus.pr_reg (offset 112)
_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
         "rsp ss fs_base gs_base ds es fs gs").split()


@dataclass(frozen=True)
class CoreThread:
    tid: int
    regs: Dict[str, int]

    @property
    def fs_base(self) -> int:
        return self.regs.get("fs_base", 0)


class CoreFile:
    def __init__(self, path: str):
        self.path = path
        try:
            self._f = open(path, "rb")
            self._size = os.fstat(self._f.fileno()).st_size
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise TargetError(f"cannot open core file {path}: {e}") from None
        mm = self._mm
        if self._size < 64 or mm[:4] != b"\x7fELF" or mm[4] != 2 or mm[5] != 1 \
                or struct.unpack_from("<H", mm, 16)[0] != 4:
            raise TargetError(f"{path} is not a 64-bit little-endian ELF core file")
        phoff, = struct.unpack_from("<Q", mm, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", mm, 0x36)
        if phentsize < 56:
            raise TargetError(f"{path}: corrupt ELF header (program header size {phentsize})")
        self.segments: List[Tuple[int, int, int, int, int]] = []   # vaddr, memsz, off, filesz, flags
        self.files: List[Tuple[int, int, int, str]] = []           # start, end, file offset, path
        self.threads: List[CoreThread] = []
        self.truncated = False
        self.missing_bytes = 0
        for i in range(min(phnum, 1 << 16)):
            o = phoff + i * phentsize
            if o + 56 > self._size:
                self.truncated = True
                break
            p_type, p_flags, p_off, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from("<IIQQQQQQ", mm, o)
            if p_type == PT_LOAD:
                if p_off + p_filesz > self._size:
                    self.truncated = True
                    self.missing_bytes += p_off + p_filesz - max(self._size, p_off)
                    p_filesz = max(0, self._size - p_off)
                self.segments.append((p_vaddr, p_memsz, p_off, p_filesz, p_flags))
            elif p_type == PT_NOTE:
                self._parse_notes(p_off, min(p_filesz, max(0, self._size - p_off)))
        self.segments.sort()
        self._starts = [s[0] for s in self.segments]

    def _parse_notes(self, off: int, size: int) -> None:
        mm, end = self._mm, off + size
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", mm, off)
            desc = off + 12 + ((namesz + 3) & ~3)
            nxt = desc + ((descsz + 3) & ~3)
            if nxt > end:
                break
            if ntype == NT_PRSTATUS and descsz >= 112 + 27 * 8:
                tid, = struct.unpack_from("<i", mm, desc + 32)
                regs = dict(zip(_REGS, struct.unpack_from("<27Q", mm, desc + 112)))
                self.threads.append(CoreThread(tid, regs))
            elif ntype == NT_FILE and descsz >= 16:
                self._parse_nt_file(desc, descsz)
            off = nxt

    def _parse_nt_file(self, desc: int, descsz: int) -> None:
        mm = self._mm
        count, page = struct.unpack_from("<QQ", mm, desc)
        if count > 1 << 20 or 16 + 24 * count > descsz:
            return
        names = bytes(mm[desc + 16 + 24 * count: desc + descsz]).split(b"\0")
        for i in range(count):
            s, e, pgoff = struct.unpack_from("<QQQ", mm, desc + 16 + 24 * i)
            name = names[i].decode("utf-8", "replace") if i < len(names) else ""
            self.files.append((s, e, pgoff * page, name))
        self.files.sort()

    # --- memory ---------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0:
                raise ReadError(addr, size, "not in the core")
            vaddr, memsz, off, filesz, flags = self.segments[i]
            if addr >= vaddr + memsz:
                raise ReadError(addr, size, "not in the core")
            n = min(size, vaddr + memsz - addr)
            rel = addr - vaddr
            if rel + n <= filesz:
                out += self._pread(off + rel, n)
            else:
                if rel < filesz:                         # part present, rest left out
                    n = filesz - rel
                    out += self._pread(off + rel, n)
                else:
                    n = min(n, memsz - rel)
                    if flags & 2:                        # writable: the file holds stale bytes
                        raise MissingFromCore(addr, n, "left out of the core (truncated?)")
                    out += self._read_file_backed(addr, n)
            addr += n
            size -= n
        return bytes(out)

    def _pread(self, off: int, n: int) -> bytes:
        # pread, not mmap slices: file pages touched through a mapping count as the debugger's
        # resident memory; pread also releases the GIL, so a worker thread can prefetch.
        data = os.pread(self._f.fileno(), n, off)
        if len(data) != n:
            raise ReadError(off, n, "core file is shorter than its headers say")
        return data

    def _read_file_backed(self, addr: int, n: int) -> bytes:
        for s, e, foff, path in self.files:
            if s <= addr and addr + n <= e:
                try:
                    with open(path, "rb") as f:
                        f.seek(foff + addr - s)
                        data = f.read(n)
                except OSError:
                    break
                if len(data) == n:
                    return data
                break
        raise ReadError(addr, n, "left out of the core and not in a file on disk")

    def regions(self) -> List[Region]:
        out = []
        fstarts = [f[0] for f in self.files]
        for vaddr, memsz, off, filesz, flags in self.segments:
            perms = ("r" if flags & 4 else "-") + ("w" if flags & 2 else "-") + ("x" if flags & 1 else "-") + "p"
            path, foff = "", 0
            j = bisect.bisect_right(fstarts, vaddr) - 1
            if j >= 0 and self.files[j][0] <= vaddr < self.files[j][1]:
                path, foff = self.files[j][3], self.files[j][2] + vaddr - self.files[j][0]
            out.append(Region(vaddr, vaddr + memsz, perms, path, foff, in_snapshot=filesz >= memsz))
        return out

    @property
    def warnings(self):
        if not self.truncated:
            return []
        return [f"the core file is truncated: {self.missing_bytes:,} bytes of memory it describes are missing "
                f"(it ends at byte {self._size:,}); what lay there is not analysed"]

    def close(self) -> None:
        try:
            self._mm.close()
            self._f.close()
        except (OSError, ValueError):
            pass
