"""A reader for ELF core files (gcore's or the kernel's), with no debugger.

Gives the mappings (PT_LOAD, named by the NT_FILE note), per-thread registers (NT_PRSTATUS:
tid, the pending signal, all general registers with fs_base), each thread's NT_SIGINFO (signal,
fault address), the auxiliary vector (NT_AUXV), the process name (NT_PRPSINFO) and memory
through pread. Pages a core left out (gcore and the kernel skip read-only file-backed pages) are
read from the mapped file on disk when it is there; `path_map` redirects a mapped file's path
(the CLI's --exe) for those reads and for the names regions() gives.
"""
from __future__ import annotations

import bisect
import functools
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .target import ReadError, Region, TargetError

PT_LOAD, PT_NOTE = 1, 4


class MissingFromCore(ReadError):
    """The core describes these bytes but does not hold them, and no file has their real
    contents (writable memory of a truncated core). Nobody may substitute the file's bytes."""

NT_PRSTATUS, NT_PRPSINFO, NT_AUXV, NT_SIGINFO, NT_FILE = 1, 3, 6, 0x53494749, 0x46494C45
AT_PHDR, AT_ENTRY, AT_EXECFN = 3, 9, 31
MAX_AUXV = 512                          # entries read from NT_AUXV
MAX_FILE_ONLY = 1 << 16                 # NT_FILE entries considered for segment-less mappings
# x86-64 user_regs_struct order inside elf_prstatus.pr_reg (offset 112)
_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
         "rsp ss fs_base gs_base ds es fs gs").split()


@dataclass
class CoreThread:
    tid: int
    regs: Dict[str, int]
    cursig: int = 0                     # pr_cursig: the signal the thread stopped with (0: none)
    siginfo: Optional[Tuple[int, int, int]] = None   # NT_SIGINFO: (si_signo, si_code, si_addr)

    @property
    def fs_base(self) -> int:
        return self.regs.get("fs_base", 0)


@functools.lru_cache(maxsize=256)
def _phdrs(path: str, mtime: float) -> Tuple[Tuple[int, int, int], ...]:
    """(p_offset, p_filesz, p_flags) of the PT_LOAD segments of an ELF file."""
    out = []
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return ()
            phoff, = struct.unpack_from("<Q", hdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
            f.seek(phoff)
            raw = f.read(phentsize * min(phnum, 256))
        for i in range(len(raw) // max(phentsize, 56)):
            typ, flags, off, _va, _pa, filesz, _memsz, _al = struct.unpack_from("<IIQQQQQQ", raw, i * phentsize)
            if typ == PT_LOAD:
                out.append((off & ~0xFFF, filesz + (off & 0xFFF), flags))
    except (OSError, struct.error):
        return ()
    return tuple(out)


def _file_segment_flags(path: str, offset: int) -> int:
    """p_flags of the file's PT_LOAD segment holding file offset `offset` (4 = read only when
    the file cannot tell: an unknown mapping is never trusted as writable memory)."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return 4
    for off, size, flags in _phdrs(path, mtime):
        if off <= offset < off + size:
            return flags
    return 4


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
        self.auxv: Dict[int, int] = {}
        self.process_name = ""                                     # NT_PRPSINFO pr_fname
        self.process_args = ""                                     # pr_psargs (first 80 bytes)
        self.path_map: Dict[str, str] = {}                         # mapped file -> file to read instead (set_path_map)
        self._file_only: Optional[List[Tuple[int, int, int, str, int]]] = None
        self.truncated = False
        self._cut: set = set()                                     # vaddr of segments the truncation cut
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
                    self._cut.add(p_vaddr)
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
                cursig, = struct.unpack_from("<h", mm, desc + 12)
                tid, = struct.unpack_from("<i", mm, desc + 32)
                regs = dict(zip(_REGS, struct.unpack_from("<27Q", mm, desc + 112)))
                self.threads.append(CoreThread(tid, regs, cursig))
            elif ntype == NT_SIGINFO and descsz >= 24 and self.threads:
                signo, _errno, code = struct.unpack_from("<iii", mm, desc)
                addr, = struct.unpack_from("<Q", mm, desc + 16)
                self.threads[-1].siginfo = (signo, code, addr)     # follows its thread's NT_PRSTATUS
            elif ntype == NT_AUXV:
                for k in range(min(descsz // 16, MAX_AUXV)):
                    key, val = struct.unpack_from("<QQ", mm, desc + 16 * k)
                    if key == 0:
                        break
                    self.auxv.setdefault(key, val)
            elif ntype == NT_PRPSINFO and descsz >= 136:
                self.process_name = bytes(mm[desc + 40:desc + 56]).split(b"\0", 1)[0].decode("utf-8", "replace")
                self.process_args = bytes(mm[desc + 56:desc + 136]).split(b"\0", 1)[0].decode("utf-8", "replace")
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
            if i < 0 or addr >= self.segments[i][0] + self.segments[i][1]:
                n = self._read_unlisted(addr, size, out, self._starts[i + 1] if i + 1 < len(self._starts) else None)
                addr += n
                size -= n
                continue
            vaddr, memsz, off, filesz, flags = self.segments[i]
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
                        raise MissingFromCore(addr, n, "cut off by the core file's truncation" if vaddr in self._cut
                                              else "left out of the core (its dump filter excluded it)")
                    out += self._read_file_backed(addr, n)
            addr += n
            size -= n
        return bytes(out)

    def _read_unlisted(self, addr: int, size: int, out: bytearray, next_seg: Optional[int]) -> int:
        """Bytes of a file mapping the core has no segment for at all (gcore leaves out
        read-only file-backed mappings: code, read-only data): from the file, when the file's own
        program headers say the mapping is not writable. Returns how many bytes were appended."""
        for s, e, foff, path, flags in self.file_only_mappings():
            if s <= addr < e:
                n = min(size, e - addr)
                if next_seg is not None:
                    n = min(n, next_seg - addr)
                if flags & 2:
                    raise MissingFromCore(addr, n, "writable file mapping left out of the core")
                out += self._read_file(self.path_map.get(path, path), foff + addr - s, addr, n)
                return n
        raise ReadError(addr, size, "not in the core")

    def set_path_map(self, mapping: Dict[str, str]) -> None:
        """Read (and name) the mapped file `key` from the file `value` instead (--exe)."""
        self.path_map = dict(mapping)
        self._file_only = None

    def file_only_mappings(self) -> List[Tuple[int, int, int, str, int]]:
        """(start, end, file offset, path, ELF p_flags) of the NT_FILE ranges no PT_LOAD covers."""
        if self._file_only is not None:
            return self._file_only
        out = []
        for s, e, foff, path in self.files[:MAX_FILE_ONLY]:
            cur = s
            i = max(0, bisect.bisect_right(self._starts, s) - 1)
            while cur < e:
                while i < len(self.segments) and self.segments[i][0] + self.segments[i][1] <= cur:
                    i += 1
                if i < len(self.segments) and self.segments[i][0] <= cur:
                    cur = self.segments[i][0] + self.segments[i][1]
                    continue
                stop = min(e, self.segments[i][0]) if i < len(self.segments) else e
                if stop > cur:
                    off = foff + cur - s
                    out.append((cur, stop, off, path, _file_segment_flags(self.path_map.get(path, path), off)))
                cur = stop
        out.sort()
        self._file_only = out
        return out

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
                return self._read_file(self.path_map.get(path, path), foff + addr - s, addr, n)
        raise ReadError(addr, n, "left out of the core and not in a file on disk")

    @staticmethod
    def _read_file(path: str, off: int, addr: int, n: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(off)
                data = f.read(n)
        except (OSError, ValueError):
            data = b""
        if len(data) != n:
            raise ReadError(addr, n, f"left out of the core and not readable from {path}")
        return data

    def regions(self) -> List[Region]:
        out = []
        fstarts = [f[0] for f in self.files]
        for vaddr, memsz, off, filesz, flags in self.segments:
            perms = ("r" if flags & 4 else "-") + ("w" if flags & 2 else "-") + ("x" if flags & 1 else "-") + "p"
            path, foff = "", 0
            j = bisect.bisect_right(fstarts, vaddr) - 1
            if j >= 0 and self.files[j][0] <= vaddr < self.files[j][1]:
                path, foff = self.files[j][3], self.files[j][2] + vaddr - self.files[j][0]
                path = self.path_map.get(path, path)
            out.append(Region(vaddr, vaddr + memsz, perms, path, foff, in_snapshot=filesz >= memsz))
        for s, e, foff, path, flags in self.file_only_mappings():
            perms = ("r" if flags & 4 else "-") + ("w" if flags & 2 else "-") + ("x" if flags & 1 else "-") + "p"
            out.append(Region(s, e, perms, self.path_map.get(path, path), foff, in_snapshot=False))
        out.sort(key=lambda r: r.start)
        return out

    def file_at(self, addr: int) -> Optional[Tuple[int, int, int, str]]:
        """The NT_FILE entry (start, end, file offset, path as the process saw it) holding addr."""
        for f in self.files:
            if f[0] <= addr < f[1]:
                return f
        return None

    def executable(self) -> Tuple[Optional[str], str]:
        """(path, how) of the program's executable as the process had it mapped: the NT_FILE
        mapping that holds AT_ENTRY (or AT_PHDR), else AT_EXECFN's string; (None, why) when
        the core says neither."""
        for key, what in ((AT_ENTRY, "AT_ENTRY"), (AT_PHDR, "AT_PHDR")):
            a = self.auxv.get(key)
            f = self.file_at(a) if a else None
            if f is not None:
                return f[3], f"the mapping holding {what} (NT_FILE)"
        a = self.auxv.get(AT_EXECFN)
        if a:
            try:
                raw = self.read(a, 256)
            except ReadError:
                raw = b""
            name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            if name:
                return name, "AT_EXECFN"
        if not self.auxv:
            return None, "the core has no auxiliary vector (NT_AUXV)"
        return None, "no file mapping holds the program's entry point"

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
