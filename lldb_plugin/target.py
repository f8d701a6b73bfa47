"""LldbTarget: the core's view of the program lldb is debugging (live, core or remote).

Memory: a live process on this machine is read through /proc/PID/mem (lldb's own reads go
through its debug server at ~60 MiB/s, 20x slower); a core file through common.elfcore
(found among the files lldb has mapped); anything else through SBProcess.ReadMemory in
1 MiB blocks. Symbols and struct layouts come from lldb's debug info. lldb 16 gives no fs_base
register, so thread pointers come from the core's NT_PRSTATUS notes or, live, from ld.so's
thread lists (common.threadptr).
"""
from __future__ import annotations

import os
import re
import struct
from collections import OrderedDict
from typing import Dict, List, Optional

import lldb  # noqa: F401  (only the adapters import lldb)

from common.elfcore import CoreFile
from common.localmem import LocalMemory
from common.objfiles import objfiles_from_regions
from common.remotefiles import namespace_copies
from common.target import ObjFile, ReadError, Region, StructLayout, Target, TargetError, ThreadInfo
from common.threadptr import thread_pointers

from . import program as P

BLOCK = 1 << 20                 # SBProcess.ReadMemory granularity for small reads
MAX_BLOCKS = 64

NOT_RUNNING = ("the program is not running and no core file is loaded: start it (process launch, "
               "process attach) or load a core (target create -c CORE)")


class LldbTarget(LocalMemory, Target):
    def __init__(self, target: "lldb.SBTarget"):
        if target is None or not target.IsValid():
            raise TargetError(NOT_RUNNING)
        proc = target.GetProcess()
        if proc is None or not proc.IsValid():
            raise TargetError(NOT_RUNNING)
        state = proc.GetState()
        if state in (lldb.eStateInvalid, lldb.eStateUnloaded, lldb.eStateExited, lldb.eStateDetached,
                     lldb.eStateConnected, lldb.eStateAttaching, lldb.eStateLaunching):
            raise TargetError(NOT_RUNNING)
        if state in (lldb.eStateRunning, lldb.eStateStepping):
            raise TargetError("the process is running: interrupt it first (process interrupt)")
        self.target, self.proc = target, proc
        self.pid = proc.GetProcessID()
        self.core: Optional[CoreFile] = None
        self._mem = None
        self._blocks: "OrderedDict[int, Optional[bytes]]" = OrderedDict()
        plugin = proc.GetPluginName() or ""
        if "core" in plugin.lower() or plugin == "minidump":
            self.kind = "core"
            self.core = _core_for(proc)
        else:
            self.kind = "live" if self._local() else "remote"
            if self.kind == "live":
                self._mem = self._open_mem()
        self._regions: Optional[List[Region]] = None
        self._objs: Optional[List[ObjFile]] = None
        self._file_notes: List[str] = []       # files read through a container's /proc/PID/root
        self._threads: Optional[List[ThreadInfo]] = None
        self._program: Optional[P.Program] = None

    def _local(self) -> bool:
        plat = self.target.GetPlatform()
        name = plat.GetName() if plat is not None and plat.IsValid() else "host"
        return name == "host" and self.pid > 0 and os.path.isdir(f"/proc/{self.pid}")

    def _open_mem(self):
        """/proc/PID/mem, when it is this very process (same bytes as lldb reads at the stack
        pointer: not another process that happens to have the pid)."""
        try:
            f = open(f"/proc/{self.pid}/mem", "rb", buffering=0)
        except OSError:
            return None
        try:
            th = self.proc.GetSelectedThread()
            sp = th.GetFrameAtIndex(0).GetSP() if th.IsValid() else 0
            if sp and sp != lldb.LLDB_INVALID_ADDRESS:
                err = lldb.SBError()
                want = self.proc.ReadMemory(sp, 64, err)
                if err.Success() and want and os.pread(f.fileno(), 64, sp) != bytes(want):
                    f.close()
                    return None
        except (OSError, OverflowError, ValueError):
            f.close()
            return None
        return f

    def close(self):
        if self._mem is not None:
            self._mem.close()
            self._mem = None
        self.core = None                      # shared: stays open while lldb has the process

    # --- memory ---------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if addr < 0 or addr + size > 1 << 64:
            raise ReadError(addr, size, "address out of range")
        data = self.fast_read(addr, size)
        if data is not None:
            return data
        return self._lldb_read(addr, size)

    def _lldb_read(self, addr: int, size: int) -> bytes:
        if size >= BLOCK:
            return self._raw(addr, size)
        base = addr & ~(BLOCK - 1)
        if addr + size <= base + BLOCK:
            block = self._block(base)
            if block is not None:
                return block[addr - base:addr - base + size]
        return self._raw(addr, size)

    def _block(self, base: int) -> Optional[bytes]:
        if base in self._blocks:
            self._blocks.move_to_end(base)
            return self._blocks[base]
        try:
            data = self._raw(base, BLOCK)
        except ReadError:
            data = None                                  # partly unmapped: exact reads instead
        self._blocks[base] = data
        if len(self._blocks) > MAX_BLOCKS:
            self._blocks.popitem(last=False)
        return data

    def _raw(self, addr: int, size: int) -> bytes:
        err = lldb.SBError()
        try:
            data = self.proc.ReadMemory(addr, size, err)
        except (OverflowError, ValueError, TypeError) as e:
            raise ReadError(addr, size, str(e)) from None
        if not err.Success() or data is None or len(data) != size:
            raise ReadError(addr, size, err.GetCString() or "short read")
        return bytes(data)

    def regions(self) -> List[Region]:
        if self._regions is None:
            self._regions = self.local_regions(self.pid if self.kind == "live" else None)
            if self._regions is None:
                self._regions = self._lldb_regions()
        return self._regions

    def _lldb_regions(self) -> List[Region]:
        """SBProcess.GetMemoryRegions, each named by the module lldb loaded there (the
        lowest mapping of a module gets file offset 0, which is what objfiles need)."""
        out: List[Region] = []
        try:
            infos = self.proc.GetMemoryRegions()
        except Exception:
            return out
        info = lldb.SBMemoryRegionInfo()
        seen = set()
        for i in range(infos.GetSize()):
            if not infos.GetMemoryRegionAtIndex(i, info) or not info.IsMapped():
                continue
            lo, hi = info.GetRegionBase(), info.GetRegionEnd()
            perms = (("r" if info.IsReadable() else "-") + ("w" if info.IsWritable() else "-")
                     + ("x" if info.IsExecutable() else "-") + "p")
            path, off = info.GetName() or "", 0
            addr = self.target.ResolveLoadAddress(lo)
            mod = addr.GetModule() if addr.IsValid() else None
            if mod is not None and mod.IsValid():                # the whole region, not just its start
                last = self.target.ResolveLoadAddress(hi - 1)
                if not last.IsValid() or last.GetModule() != mod:
                    mod = None
            if mod is not None and mod.IsValid():
                path = mod.GetFileSpec().fullpath or path
                sec = addr.GetSection()
                off = sec.GetFileOffset() + addr.GetOffset() if sec.IsValid() else None
                if path not in seen:                      # a module's lowest mapping starts the file
                    seen.add(path)
                    off = 0 if off is None else off
                elif off is None or off == 0:
                    off = max(1, lo - min(r.start for r in out if r.path == path))
            out.append(Region(lo, hi, perms, path, off))
        out.sort(key=lambda r: r.start)
        return out

    # --- program --------------------------------------------------------------------------
    def threads(self) -> List[ThreadInfo]:
        if self._threads is not None:
            return self._threads
        sel = self.proc.GetSelectedThread()
        sel_id = sel.GetThreadID() if sel is not None and sel.IsValid() else None
        rows = []
        for th in self.proc:
            tid = th.GetThreadID()
            rows.append([th.GetIndexID(), tid, _register_fs_base(th), th.GetName() or "", tid == sel_id])
        missing = [r[1] for r in rows if not r[2]]
        if missing:
            found: Dict[int, int] = {}
            if self.core is not None:
                found = {t.tid: t.fs_base for t in self.core.threads if t.fs_base}
            if any(t not in found for t in missing):
                try:
                    found.update({k: v for k, v in thread_pointers(self, missing).items() if k not in found})
                except (ReadError, TargetError):
                    pass
            for r in rows:
                r[2] = r[2] or found.get(r[1])
        self._threads = [ThreadInfo(n, tid, fs or None, name, s) for n, tid, fs, name, s in
                         sorted(rows, key=lambda r: r[0])]
        return self._threads

    def objfiles(self) -> List[ObjFile]:
        if self._objs is None:
            regions = self.regions()
            if self.kind == "live":       # a process in a container: its files through /proc/PID/root
                self._file_notes = namespace_copies(self.pid, {r.path for r in regions if r.offset == 0})
            self._objs = objfiles_from_regions(regions)
        return self._objs

    def _module_matches(self, mod, hint: str) -> bool:
        if not hint:
            return True
        try:
            path = mod.GetFileSpec().fullpath if mod is not None and mod.IsValid() else ""
        except Exception:
            return True
        return not path or os.path.realpath(path) == os.path.realpath(hint)

    def symbol(self, name: str, objfile_hint: str = "") -> Optional[int]:
        """A data symbol's load address from debug info, else from a symbol table's data
        symbol (an exact entry, never a guess); None when neither has it."""
        try:
            values = self.target.FindGlobalVariables(name, 16)
        except Exception:
            values = None
        for i in range(values.GetSize() if values is not None else 0):
            v = values.GetValueAtIndex(i)
            if v is None or not v.IsValid() or v.GetName() != name:
                continue
            if not self._module_matches(v.GetAddress().GetModule(), objfile_hint):
                continue
            addr = v.GetLoadAddress()
            if addr not in (None, lldb.LLDB_INVALID_ADDRESS) and addr > 0:
                return addr
        try:
            ctxs = self.target.FindSymbols(name, lldb.eSymbolTypeData)
        except Exception:
            return None
        for i in range(ctxs.GetSize()):
            sc = ctxs.GetContextAtIndex(i)
            sym = sc.GetSymbol()
            if not sym.IsValid() or sym.GetName() != name or sym.GetType() != lldb.eSymbolTypeData:
                continue
            if not self._module_matches(sc.GetModule(), objfile_hint):
                continue
            addr = sym.GetStartAddress().GetLoadAddress(self.target)
            if addr not in (None, lldb.LLDB_INVALID_ADDRESS) and addr > 0:
                return addr
        return None

    def struct_layout(self, name: str) -> Optional[StructLayout]:
        try:
            t = self.target.FindFirstType(name)
            if not t.IsValid():
                t = self.target.FindFirstType("struct " + name)
            if not t.IsValid():
                return None
            t = t.GetCanonicalType()
            if t.GetTypeClass() not in (lldb.eTypeClassStruct, lldb.eTypeClassClass) or not t.GetByteSize():
                return None
            fields = {f.GetName(): f.GetOffsetInBytes() for f in t.get_fields_array() if f.GetName()}
            if not fields:
                return None
            return StructLayout(name, t.GetByteSize(), fields)
        except Exception:
            return None

    def warnings(self):
        if self.core is not None:
            return self.core.warnings
        self.objfiles()
        return list(self._file_notes)

    # --- program state --------------------------------------------------------------------
    @property
    def program(self) -> "P.Program":
        if self._program is None:
            self._program = P.Program(self.target, self.proc)
        return self._program

    def frames(self, max_frames: int = 64, variables: bool = True, registers: bool = False):
        return self.program.frames(max_frames, variables, registers)

    def globals(self):
        return self.program.globals_(self.objfiles())

    def type_layout(self, type_name: str):
        return self.program.layouts.type_layout(type_name)

    def stop_info(self):
        core = None
        if self.kind == "core":
            core = P.core_stop(self.core.path) if self.core is not None else None
        return self.program.stop_info(core)

    def frame_registers(self, thread: int, frame: int):
        return self.program.frame_registers(thread, frame)

    def evaluate(self, expr: str, thread: int, frame: int):
        return self.program.evaluate(expr, thread, frame)

    def generation(self):
        return generation_of(self.target, self.proc)

    def cache_key(self):
        return ("lldb", self.proc.GetUniqueID(), self.pid, self.core.path if self.core else None)

    def describe(self) -> str:
        if self.kind == "core":
            return f"core file {self.core.path if self.core else '?'}"
        return f"{self.kind} process {self.pid}"


def generation_of(target, proc=None):
    """Changes whenever the inferior may have changed: it resumed or stopped (expression
    evaluations that ran code included: lldb counts them as stops), or lldb wrote its memory
    or registers (`memory write`, `expression p->x = 0`, `register write`,
    SBProcess.WriteMemory), which lldb announces nowhere but in the packets it sends to its
    debug server: see writes_seen()."""
    try:
        proc = proc or target.GetProcess()
        return (proc.GetUniqueID(), proc.GetStopID(True), writes_seen(target.GetDebugger(), proc))
    except Exception:
        return 0


# --- memory written by lldb --------------------------------------------------------------------
# lldb 16 has no memory-changed event and its statistics do not count `memory write`; its debug
# server does see every write: M/X (memory) and P/G/QRestoreRegisterState (registers) packets.
# The packet history (`process plugin packet history`: the last 512 packets, numbered from the
# start of the connection) is read at each generation() and the writes counted per process.
# Writes into memory lldb allocated for itself (_M packets: expression results, JIT code) are
# not the program's memory and are not counted.
_LINE = re.compile(r"^history\[(\d+)\][^\n]*?(send|read) packet: \$([^#\n]*)", re.M)
_MEM_WRITE = re.compile(r"[MX]([0-9a-fA-F]+),([0-9a-fA-F]+)[:]")
_REG_WRITE = re.compile(r"(P[0-9a-fA-F]+=|G|QRestoreRegisterState)")


class _Writes:
    def __init__(self):
        self.seen = -1                         # last packet index looked at
        self.count = 0                         # writes to the program's memory or registers
        self.scratch: List[List[int]] = []     # [start, end) lldb allocated in the process
        self.alloc_size: Optional[int] = None  # an _M request waiting for its reply

    def feed(self, direction: str, body: str, counting: bool) -> bool:
        """One packet; True when it writes the program's memory or registers."""
        if direction == "read":
            if self.alloc_size is not None:
                try:
                    start = int(body, 16)
                    self.scratch.append([start, start + self.alloc_size])
                except ValueError:
                    pass
                self.alloc_size = None
            return False
        self.alloc_size = None
        if body.startswith("_M"):
            try:
                self.alloc_size = int(body[2:].split(",", 1)[0], 16)
            except ValueError:
                pass
            return False
        if body.startswith("_m"):
            try:
                addr = int(body[2:], 16)
                self.scratch = [r for r in self.scratch if r[0] != addr]
            except ValueError:
                pass
            return False
        m = _MEM_WRITE.match(body)
        if m:
            addr, size = int(m.group(1), 16), int(m.group(2), 16)
            return counting and not any(a <= addr and addr + size <= b for a, b in self.scratch)
        return counting and bool(_REG_WRITE.match(body))


_writes: Dict[int, _Writes] = {}               # process unique id -> what its packets showed


def writes_seen(debugger, proc) -> int:
    """How many times lldb has written the process's memory or registers since we first
    looked (live processes through lldb's debug server; a core cannot be written)."""
    if (proc.GetPluginName() or "") != "gdb-remote":
        return 0
    uid = proc.GetUniqueID()
    st = _writes.get(uid)
    res = lldb.SBCommandReturnObject()
    try:
        debugger.GetCommandInterpreter().HandleCommand("process plugin packet history", res)
        text = res.GetOutput() or "" if res.Succeeded() else None
    except Exception:                          # undecodable output: assume the worst
        text = None
    first = st is None
    if first:
        if len(_writes) > 64:
            _writes.pop(next(iter(_writes)))
        st = _writes[uid] = _Writes()
    if text is None:
        st.count += 1                          # cannot tell: a fresh walk is the safe answer
        return st.count
    wrote = False
    lowest, before = None, st.seen
    for m in _LINE.finditer(text):
        i = int(m.group(1))
        lowest = i if lowest is None else lowest
        if i <= st.seen:
            continue
        # on the first look, only learn lldb's own allocations: earlier writes are in what we read
        wrote |= st.feed(m.group(2), m.group(3), not first)
        st.seen = i
    if not first and lowest is not None and lowest > before + 1:
        wrote = True                           # the history moved past packets never looked at
    if wrote:
        st.count += 1
    return st.count


def _register_fs_base(th) -> Optional[int]:
    try:
        frame = th.GetFrameAtIndex(0)
        reg = frame.FindRegister("fs_base") if frame.IsValid() else None
        if reg is not None and reg.IsValid():
            v = reg.GetValueAsUnsigned(0)
            return v or None
    except Exception:
        pass
    return None


_cores: Dict[int, Optional[CoreFile]] = {}


def _core_for(proc) -> Optional[CoreFile]:
    """The CoreFile of a core-file process, found once per lldb process instance."""
    uid = proc.GetUniqueID()
    if uid not in _cores:
        if len(_cores) >= 8:                     # many cores loaded in one session: forget the oldest
            old = _cores.pop(next(iter(_cores)))
            if old is not None:
                old.close()
        _cores[uid] = _find_core(proc)
    return _cores[uid]


def _find_core(proc) -> Optional[CoreFile]:
    """The core file lldb loaded for `proc`. lldb 16's API does not name it, but lldb keeps
    the file mapped: among the files in lldb's own address space, the ELF core whose
    NT_PRSTATUS threads are exactly this process' threads."""
    tids = {th.GetThreadID() for th in proc}
    candidates = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[2] == "00000000" and parts[5].startswith("/"):
                    path = parts[5].rstrip("\n")
                    if path.endswith(" (deleted)") or path in candidates:
                        continue
                    candidates.append(path)
    except OSError:
        return None
    for path in candidates:
        if not _is_core(path):
            continue
        try:
            core = CoreFile(path)
        except TargetError:
            continue
        if {t.tid for t in core.threads} == tids:
            return core
        core.close()
    return None


def _is_core(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    return len(head) == 18 and head[:4] == b"\x7fELF" and struct.unpack_from("<H", head, 16)[0] == 4
