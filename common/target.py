"""The Target protocol: everything the core needs from a debugger or a core file.

The core never imports gdb or lldb. An adapter (gdb_plugin.target.GdbTarget, a core-file
reader, later lldb) implements `Target`; analyses only call these methods.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple


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


@dataclass(frozen=True)
class PtrSlot:
    """A pointer inside an object: where (path, offset) and to what."""
    path: str                      # "" for the object itself, ".next", "[3]", ".hdr.buf"
    offset: int
    type_name: str                 # the pointer type, e.g. "struct conn *"
    target_size: Optional[int]     # sizeof(*p); None for void *, char *, functions, incomplete types
    target_type: Optional[str] = None   # pointee type name, to expand one level deeper
    ambiguous: bool = False        # inside a union: may not hold a pointer at all


@dataclass(frozen=True)
class Variant:
    """One case of a discriminated union (a Rust enum): its pointer slots apply when the
    discriminant equals `discr_value` (None: the default case)."""
    discr_value: Optional[int]
    slots: Tuple[PtrSlot, ...] = ()


@dataclass(frozen=True)
class TypeLayout:
    """Where a type keeps its pointers (from debug info).

    `slots` always apply. A discriminated union also has `variants`, chosen by the integer of
    `discr_size` bytes at `discr_offset`. A trailing flexible array (`T items[]`) is `tail`:
    (offset, element size, element slots), repeated for as long as the chunk has room."""
    name: str
    size: int
    slots: Tuple[PtrSlot, ...] = ()
    discr_offset: Optional[int] = None
    discr_size: int = 0
    variants: Tuple[Variant, ...] = ()
    tail: Optional[Tuple[int, int, Tuple[PtrSlot, ...]]] = None


@dataclass
class Variable:
    """A program variable holding pointers: an argument, a local or a global."""
    name: str
    kind: str                      # "arg", "local", "global"
    layout: TypeLayout
    address: Optional[int] = None  # where it is stored; None when in a register
    value: Optional[int] = None    # the pointer value for a register-held pointer variable
    thread: Optional[int] = None   # debugger thread number (locals and args)
    tid: Optional[int] = None
    frame: Optional[int] = None    # frame level, 0 = innermost
    function: Optional[str] = None
    optimized_out: bool = False


@dataclass
class FrameInfo:
    thread: int
    tid: int
    level: int
    pc: int
    function: str                  # "" when unknown
    file: str = ""
    line: int = 0
    objfile: str = ""
    variables: List[Variable] = field(default_factory=list)
    registers: Dict[str, int] = field(default_factory=dict)   # unwound, when asked for
    cfa: Optional[int] = None      # canonical frame address (the caller's sp before the call)


@dataclass
class StopInfo:
    """Why the program stopped: the thread and signal (a breakpoint, SIGABRT, SIGSEGV...)."""
    thread: Optional[int]
    signal: Optional[str] = None   # "SIGABRT", "SIGSEGV", ...; None for a breakpoint/step
    fault_address: Optional[int] = None


class Target:
    """What the core may ask of a debugger or snapshot. Subclasses override the methods."""

    #: "live", "core" or "remote": how memory is reached (reported, and chooses read strategy)
    kind: str = "live"
    #: True when every byte read crosses a slow link (a remote target): readers then fetch
    #: only what they need (small cache blocks, headers instead of whole pages) at the cost
    #: of more, smaller requests
    slow_link: bool = False
    #: True when regions() is only what the debugger knows without the real mappings (a remote
    #: stub that cannot give them): the loaded files, not the heaps, stacks or mmapped memory
    regions_partial: bool = False
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

    # --- program state (debug info of the program; empty where the debugger has none) ------
    def frames(self, max_frames: int = 64, variables: bool = True, registers: bool = False) -> List[FrameInfo]:
        """Every thread's frames, innermost first, with pointer-holding args and locals (from the
        debugger's debug info) and, with registers=True, each frame's unwound registers and CFA
        (what the DWARF location maps need to place variables without the debugger)."""
        return []

    def globals(self) -> List[Variable]:
        """Static-storage variables of the program (not of system libraries) holding pointers."""
        return []

    def type_layout(self, type_name: str) -> Optional[TypeLayout]:
        """Pointer slots of a named type (for following a pointer one level deeper)."""
        return None

    def stop_info(self) -> StopInfo:
        return StopInfo(None)

    def evaluate(self, expr: str, thread: int, frame: int) -> Optional[Tuple[int, Optional[str], Optional[int]]]:
        """Evaluate a C expression in a frame: (value, type name, sizeof target) or None."""
        return None

    def frame_registers(self, thread: int, frame: int) -> Dict[str, int]:
        """General registers as unwound for a frame (callee-saved ones are exact)."""
        return {}

    def source_line(self, path: str, line: int) -> Optional[str]:
        try:
            with open(path, errors="replace") as f:
                for i, text in enumerate(f, 1):
                    if i == line:
                        return text.rstrip("\n")
        except OSError:
            return None
        return None

    def io_stats(self) -> Optional[Dict[str, int]]:
        """Memory traffic to a remote target ({"bytes_read", "reads"} since this Target was made),
        reported with every command; None where memory is local (a process here, a core)."""
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
