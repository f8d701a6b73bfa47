"""GdbTarget: the core's view of the program gdb is debugging (live, core or remote).

Memory: a live local process is read through /proc/PID/mem (faster than gdb's own path, and
bulk); a core file through its mmap (common.elfcore); anything else through
Inferior.read_memory. Symbols and struct layouts come from gdb's debug info.

A remote target (gdbserver, a stub) is never read through this machine's /proc: a process with
the same pid here is another process. Its memory goes over the remote protocol, counted
(io_stats), and its mappings come from gdb (`info proc mappings`, which gdbserver serves).
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

import gdb  # noqa: F401  (only the adapters import gdb)

from common.elfcore import CoreFile
from common.localmem import LocalMemory
from common.memcache import RangeCache
from common.objfiles import objfiles_from_regions
from common.remotefiles import ensure_local, namespace_copies
from . import program
from common.target import ObjFile, ReadError, Region, StructLayout, Target, TargetError, ThreadInfo

_generation = 0


def bump_generation(*_):
    global _generation
    _generation += 1


def _connect_events():
    ev = gdb.events
    for name in ("cont", "stop", "exited", "new_objfile", "memory_changed", "inferior_call",
                 "new_inferior", "register_changed", "before_prompt"):
        reg = getattr(ev, name, None)
        if reg is not None and name != "before_prompt":
            reg.connect(bump_generation)


class GdbTarget(LocalMemory, Target):
    def __init__(self):
        inf = gdb.selected_inferior()
        if inf is None or inf.pid == 0 and not self._core_path():
            raise TargetError("the program is not running and no core file is loaded: "
                              "start it (run, attach) or load a core (core-file PATH)")
        self.inf = inf
        conn = getattr(inf, "connection", None)
        ctype = getattr(conn, "type", None) if conn is not None else None
        self.core: Optional[CoreFile] = None
        self._mem = None
        self._range_cache: Optional[RangeCache] = None
        if ctype == "core" or (ctype is None and self._core_path()):
            self.kind = "core"
            path = self._core_path()
            if path:
                try:
                    self.core = CoreFile(path)
                except TargetError:
                    self.core = None
        elif ctype == "native":
            self.kind = "live"
            try:
                self._mem = open(f"/proc/{inf.pid}/mem", "rb", buffering=0)
            except OSError:
                self._mem = None
        else:
            self.kind = "remote"
            # read sparingly over the link; HEAPLENS_SLOW_LINK=0 reads as for a local process
            self.slow_link = os.environ.get("HEAPLENS_SLOW_LINK", "1") != "0"
            if self.slow_link:                      # fetch each byte once per stop
                self._range_cache = RangeCache(self._remote_read, _range_cache_bytes())
        self._io_reads = self._io_bytes = 0
        self._regions: Optional[List[Region]] = None
        self._region_warning: Optional[str] = None
        self._objs: Optional[List[ObjFile]] = None
        self._file_notes: List[str] = []       # remote files fetched (or not) to read them here

    @staticmethod
    def _core_path() -> Optional[str]:
        try:
            text = gdb.execute("info target", to_string=True)
        except gdb.error:
            return None
        m = re.search(r"Local core dump file:\s*\n?\s*`([^']+)'", text)
        return m.group(1) if m else None

    def close(self):
        if self._mem is not None:
            self._mem.close()
            self._mem = None

    # --- memory ---------------------------------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if self.kind == "remote":
            if self._range_cache is not None:
                return self._range_cache.read(addr, size)
            return self._remote_read(addr, size)
        data = self.fast_read(addr, size)
        if data is not None:
            return data
        return self._gdb_read(addr, size)

    def _gdb_read(self, addr: int, size: int) -> bytes:
        try:
            return bytes(self.inf.read_memory(addr, size))
        except (gdb.error, gdb.MemoryError, OverflowError, ValueError) as e:
            raise ReadError(addr, size, str(e)) from None

    def _remote_read(self, addr: int, size: int) -> bytes:
        self._io_reads += 1                          # every byte crosses the link: count them
        self._io_bytes += size
        return self._gdb_read(addr, size)

    def io_stats(self):
        if self.kind != "remote":
            return None
        return {"bytes_read": self._io_bytes, "reads": self._io_reads}

    def threadsafe_reader(self):
        return None if self.kind == "remote" else super().threadsafe_reader()

    def regions(self) -> List[Region]:
        if self._regions is None:
            if self.kind != "remote":
                self._regions = self.local_regions(self.inf.pid if self.kind == "live" else None)
            if self._regions is None:
                self._regions = self._gdb_mappings()
            if not self._regions and self.kind == "remote":
                self._regions = self._section_regions()
                self.regions_partial = True
                self._region_warning = (
                    "the remote target gives no memory mappings (`info proc mappings` failed): only the "
                    "loaded files' sections are known, so heaps, stacks and mmapped chunks outside them "
                    "may be missed or misreported")
        return self._regions

    def _section_regions(self) -> List[Region]:
        """What gdb knows without mappings: each loaded file's load bias (from one of its
        sections in `info files`) and so its PT_LOAD segments, as the mappings would show them."""
        from common.elfinfo import elf_info
        try:
            text = gdb.execute("info files", to_string=True)
            main = _local_name(gdb.current_progspace().filename or "")
        except gdb.error:
            return []
        bias = {}
        for m in re.finditer(r"^\s*(0x[0-9a-f]+) - 0x[0-9a-f]+ is (\S+)(?: in (\S+))?$", text, re.M):
            path = _local_name(m.group(3) or main)
            if path and path not in bias:
                info = elf_info(path)
                rng = info.section_range(m.group(2)) if info is not None else None
                bias[path] = (int(m.group(1), 16) - rng[0]) if rng else None
        out = []
        for path, base in bias.items():
            info = elf_info(path) if base is not None else None
            if info is None:
                continue
            try:
                segs = [g for g in info.elf.iter_segments() if g["p_type"] == "PT_LOAD"]
            except Exception:                       # an odd file: leave it out, not the report
                continue
            for seg in segs:
                lo = (base + seg["p_vaddr"]) & ~0xFFF
                hi = (base + seg["p_vaddr"] + seg["p_memsz"] + 0xFFF) & ~0xFFF
                fl = seg["p_flags"]
                perms = ("r" if fl & 4 else "-") + ("w" if fl & 2 else "-") + ("x" if fl & 1 else "-") + "p"
                out.append(Region(lo, hi, perms, path, seg["p_offset"] & ~0xFFF))
        out.sort(key=lambda r: r.start)
        return out

    def _gdb_mappings(self) -> List[Region]:
        try:
            text = gdb.execute("info proc mappings", to_string=True)
        except gdb.error:
            return []
        out = []
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0].startswith("0x"):
                try:
                    lo, hi, _, off = (int(x, 16) for x in f[:4])
                except ValueError:
                    continue
                perms = f[4] if len(f) > 4 and re.fullmatch(r"[r-][w-][x-][ps]", f[4]) else "rw-p"
                path = f[-1] if len(f) > 4 and not f[-1] == perms else ""
                out.append(Region(lo, hi, perms, path, off))
        out.sort(key=lambda r: r.start)
        return out

    # --- program --------------------------------------------------------------------------
    def threads(self) -> List[ThreadInfo]:
        """Threads with their thread pointer. On x86-64 glibc the pthread_t that libthread_db
        gives as the thread's handle is the thread pointer (fs_base), and reading it needs no
        thread switch (switching inside a breakpoint condition does not switch registers)."""
        out = []
        missing = []
        try:
            cur = gdb.selected_thread()
        except gdb.error:
            cur = None
        for t in sorted(self.inf.threads(), key=lambda t: t.num):
            fs = None
            try:
                h = t.handle()
                if h is not None and len(h) == 8:
                    fs = int.from_bytes(bytes(h), "little") or None
            except (gdb.error, RuntimeError, AttributeError, TypeError):
                fs = None
            if fs is None:
                missing.append(t)
            out.append(ThreadInfo(t.num, t.ptid[1] or t.ptid[0], fs, t.name or "", t == cur))
        if missing:                             # no libthread_db: ask each thread's $fs_base
            fs_of = self._fs_base_by_switching(missing)
            out = [ThreadInfo(t.num, t.tid, t.fs_base or fs_of.get(t.num), t.name, t.selected) for t in out]
        return out

    def _fs_base_by_switching(self, threads):
        res = {}
        with program.preserved_selection():
            for t in threads:
                try:
                    t.switch()
                    res[t.num] = int(gdb.parse_and_eval("$fs_base")) or None
                except (gdb.error, ValueError):
                    pass
        return res

    def objfiles(self) -> List[ObjFile]:
        if self._objs is None:
            regions = self.regions()
            if self.kind == "remote":
                self._file_notes = ensure_local(self._remote_solibs(regions), self._gdb_build_id, _remote_get)
            elif self.kind == "live":
                self._file_notes = namespace_copies(self.inf.pid, {r.path for r in regions if r.offset == 0})
            self._objs = objfiles_from_regions(regions)
        return self._objs

    def _remote_solibs(self, regions: List[Region]) -> List[str]:
        """The mapped files gdb counts as the program's shared libraries (not data files such
        as /dev/zero or shared memory, which must never be fetched)."""
        try:
            text = gdb.execute("info sharedlibrary", to_string=True)
        except gdb.error:
            return []
        # a library gdb could not read here has no From/To columns, only its name
        libs = {_local_name(f[-1]) for f in (line.split() for line in text.splitlines())
                if f and (f[-1].startswith("/") or f[-1].startswith("target:/"))}
        return sorted({r.path for r in regions if r.offset == 0 and r.path in libs})

    @staticmethod
    def _gdb_build_id(path: str) -> Optional[str]:
        for o in gdb.objfiles():
            if o.filename and _local_name(o.filename) == path:
                return getattr(o, "build_id", None)
        return None

    def symbol(self, name: str, objfile_hint: str = "") -> Optional[int]:
        for look in (gdb.lookup_static_symbol, gdb.lookup_global_symbol):
            try:
                sym = look(name, gdb.SYMBOL_VAR_DOMAIN)
            except (gdb.error, TypeError):
                continue
            if sym is None or not sym.is_variable:
                continue
            if objfile_hint:
                try:
                    obj = sym.symtab.objfile if sym.symtab else None
                    obj = getattr(obj, "owner", None) or obj      # separate debug file -> the library
                    of = _local_name(obj.filename) if obj else ""
                    if of and os.path.realpath(of) != os.path.realpath(objfile_hint):
                        continue
                except (gdb.error, AttributeError):
                    pass
            try:
                return int(sym.value().address)
            except (gdb.error, TypeError, ValueError):
                continue
        return None

    def struct_layout(self, name: str) -> Optional[StructLayout]:
        try:
            t = gdb.lookup_type("struct " + name).strip_typedefs()
        except gdb.error:
            return None
        try:
            fields = {f.name: f.bitpos // 8 for f in t.fields() if f.name and hasattr(f, "bitpos")}
            return StructLayout(name, t.sizeof, fields)
        except (gdb.error, TypeError):
            return None

    def warnings(self):
        if self.core is not None:
            return self.core.warnings
        self.objfiles()
        return ([self._region_warning] if self._region_warning else []) + self._file_notes

    # --- program state --------------------------------------------------------------------
    def frames(self, max_frames: int = 64, variables: bool = True, registers: bool = False):
        return program.frames(self.inf, max_frames, variables, registers)

    def globals(self):
        return program.globals_(self.objfiles())

    def type_layout(self, type_name: str):
        return program.type_layout(type_name)

    def stop_info(self):
        return program.stop_info()

    def frame_registers(self, thread: int, frame: int):
        return program.frame_registers(thread, frame)

    def evaluate(self, expr: str, thread: int, frame: int):
        return program.evaluate(expr, thread, frame)

    def generation(self):
        return getattr(self, "key", None) or stop_key()

    def describe(self) -> str:
        if self.kind == "core":
            return f"core file {self.core.path if self.core else '?'}"
        return f"{self.kind} process {self.inf.pid}"


def _range_cache_bytes() -> int:
    """How much of a remote target's memory to keep for the stop: 512 MiB, at most a quarter of
    the free memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return min(512 << 20, int(line.split()[1]) * 1024 // 4)
    except (OSError, ValueError, IndexError):
        pass
    return 256 << 20


def _remote_get(path: str, dest: str) -> Optional[str]:
    """Copy the target's file `path` to `dest` over the remote protocol; an error sentence or None."""
    try:
        gdb.execute(f"remote get {path} {dest}", to_string=True)
    except gdb.error as e:
        return str(e)
    return None if os.path.exists(dest) else "gdb wrote no file"


def _local_name(path: str) -> str:
    """A file gdb fetched from a remote target is named 'target:/path'; the mappings say '/path'."""
    return path[len("target:"):] if path.startswith("target:") else path


_connect_events()


_current = [None, None]          # (stop key, GdbTarget)


def _ran_ns(pid: int) -> int:
    """Total on-CPU nanoseconds of a live process's threads: it changes whenever any thread
    ran, including gdb's silent resumes after a false breakpoint condition, which fire no
    Python event."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1
    return total


def stop_key():
    """Changes whenever the inferior may have changed since the last look."""
    try:
        inf = gdb.selected_inferior()
        conn = getattr(inf, "connection", None)
        live = inf.pid and getattr(conn, "type", None) == "native"
        return (_generation, inf.num, inf.pid, _ran_ns(inf.pid) if live else 0)
    except (gdb.error, RuntimeError):
        return (_generation,)


def current_target() -> GdbTarget:
    """The target for this stop, made once per stop (memory handle, mappings, core)."""
    key, t = _current
    now = stop_key()
    if t is not None and key == now:
        return t
    if t is not None:
        t.close()
        _current[1] = None
    t = GdbTarget()
    t.key = now
    _current[0], _current[1] = now, t
    return t


def cache_key(t: GdbTarget):
    return ("gdb", t.inf.num, t.inf.pid, t.core.path if t.core else None)
