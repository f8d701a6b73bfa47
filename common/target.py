"""The Target protocol: everything the core needs from a debugger or a core file.

The core never imports gdb or lldb. An adapter (gdb_plugin.target.GdbTarget, a core-file
reader, later lldb) implements `Target`; analyses only call these methods.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence


class TargetError(Exception):
    """A problem with the target itself (no process, no core): one sentence for the user."""


class ReadError(TargetError):
    """Memory at an address could not be read (unmapped, or left out of a core)."""

    def __init__(self, addr: int, size: int, why: str = "unreadable"):
        super().__init__(f"cannot read {size} bytes at {addr:#x}: {why}")
        self.addr, self.size = addr, size


@dataclass(frozen=True)
class Region:
    """One mapping of the address space, as /proc/PID/maps or a core's PT_LOAD shows it."""
    start: int
    end: int
    perms: str = "rw-p"          # r/w/x/p letters, '-' where absent
    path: str = ""               # backing file, "[heap]", "[stack]" or "" for anonymous
    offset: int = 0              # file offset of `start` where file-backed
    in_snapshot: bool = True     # False: a core that left these bytes out

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def readable(self) -> bool:
        return self.perms[:1] == "r"

    @property
    def writable(self) -> bool:
        return len(self.perms) > 1 and self.perms[1] == "w"

    @property
    def anonymous(self) -> bool:
        return not self.path or self.path in ("[heap]", "[anon]")

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


@dataclass(frozen=True)
class ThreadInfo:
    num: int                     # the debugger's thread number (what `thread N` takes)
    tid: int                     # kernel thread id (LWP)
    fs_base: Optional[int] = None  # x86-64 thread pointer; None where the debugger gives none
    name: str = ""
    selected: bool = False


@dataclass(frozen=True)
class ObjFile:
    path: str                    # the file as loaded (for reading sections, relocations)
    base: int                    # load bias: runtime address = file vaddr + base
    build_id: Optional[str] = None
    has_debug_info: bool = False


@dataclass
class StructLayout:
    """Field offsets of a C struct as debug info describes it (None when there is none)."""
    name: str
    size: int
    fields: Dict[str, int] = field(default_factory=dict)


class Target:
    """What the core may ask of a debugger or snapshot. Subclasses override the methods."""

    #: "live", "core" or "remote": how memory is reached (reported, and chooses read strategy)
    kind: str = "live"
    pointer_size: int = 8
    byteorder: str = "little"

    # --- memory -------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        """Exactly `size` bytes at `addr`, or raise ReadError. Callers read in bulk."""
        raise NotImplementedError

    def regions(self) -> List[Region]:
        """The mappings, sorted by start."""
        raise NotImplementedError

    # --- program ------------------------------------------------------------------------
    def threads(self) -> List[ThreadInfo]:
        raise NotImplementedError

    def objfiles(self) -> List[ObjFile]:
        """Loaded objects (executable first when known)."""
        raise NotImplementedError

    def symbol(self, name: str, objfile_hint: str = "") -> Optional[int]:
        """Runtime address of a data symbol (static or global), or None. Uses debug info
        when the debugger has it; must not guess."""
        return None

    def struct_layout(self, name: str) -> Optional[StructLayout]:
        """Layout of `struct name` from debug info, or None without debug info."""
        return None

    def threadsafe_reader(self):
        """A read(addr, size) callable that may run on a worker thread (no debugger API calls:
        pread on /proc/PID/mem, or a core's mmap), used to prefetch bulk windows; or None."""
        return None

    def warnings(self) -> List[str]:
        """Problems with the snapshot itself (a truncated core...), for every report."""
        return []

    def generation(self) -> int:
        """Changes whenever the inferior may have changed (resumed, memory written)."""
        return 0

    def describe(self) -> str:
        return self.kind

    # --- helpers built on read ------------------------------------------------------------
    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]


def region_index(regions: Sequence[Region]):
    """A function addr -> Region or None over a sorted region list (binary search)."""
    import bisect
    starts = [r.start for r in regions]

    def find(addr: int) -> Optional[Region]:
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and regions[i].contains(addr):
            return regions[i]
        return None
    return find
