"""Where tracing starts: the program's variables (precise) and the memory nobody describes
(conservative, labelled).

`build_graph` takes the roots as parameters: `Variable`s (from the debugger's debug info today,
from the DWARF location/global maps tomorrow) and `ExtraRoot`s, memory or register values
scanned word by word. `target_roots()` makes both from a Target:

- precise: every argument/local of every frame of every thread, and the program's globals;
- conservative (registers and the stack slices of optimized-out frames count pointers into a
  chunk's middle, which makes it "possibly lost" rather than lost; the other memory counts
  only pointers to chunk starts, unless the graph is built conservatively):
  * the registers of each thread's innermost frame;
  * for a frame with an optimized-out pointer variable: that frame's callee-saved registers as
    unwound, and (stack="frames", the default) that frame's own stack slice [sp, caller's sp);
    stack="threads" scans each thread's whole live stack instead, stack="none" neither;
  * the writable data (.data/.bss) of loaded objects whose globals the debug info does not
    describe (system libraries such as libc, whose stdio buffers live on the heap; objects
    without debug info), minus the allocator's own state (malloc_state);
  * anonymous writable memory that is neither heap nor a thread's stack: thread-local storage
    and thread control blocks, memory the program mmapped itself;
  * allocator-internal chunks (each thread's tcache), which the allocator itself holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..objfiles import is_system
from ..target import Region, Target, Variable

MAX_SCAN = 1 << 30           # bytes of non-heap memory scanned conservatively at most
TLS_BELOW = 16 << 10         # bytes below a thread pointer scanned as static TLS
TCB_SPAN = 4 << 10           # bytes at and above a thread pointer (struct pthread)
ARENA_SPAN = 0x900           # bytes of a malloc_state left out of data scans


@dataclass
class ExtraRoot:
    """Memory or register values scanned conservatively (no type known)."""
    label: str                                     # how a person reads it in a chain
    kind: str                                      # registers, stack, data, tls, anon, allocator
    ranges: Sequence[Tuple[int, int]] = ()         # [start, end) memory to scan word by word
    values: Sequence[Tuple[str, int]] = ()         # (name, value): registers, known pointers
    interior: bool = False                         # interior pointers count (else chunk starts only)
    thread: Optional[int] = None
    frame: Optional[int] = None
    function: Optional[str] = None
    precise: bool = False                          # values known to be pointers (allocator state)


@dataclass
class RootSet:
    variables: List[Variable]
    extra: List[ExtraRoot]
    stats: Dict[str, int] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


def _undescribed_objects(obj, described: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """[start, end) of the object file's symbol-table data objects that no debug-info variable
    covers: Rust's precompiled std keeps its statics that way, and so does a static library
    built without -g. Their words are scanned for chunk starts (labelled conservative)."""
    from ..elfinfo import elf_info
    info = elf_info(obj.path)
    if info is None:
        return []
    spans = sorted(described)
    import bisect
    starts = [a for a, _ in spans]
    out = []
    for _name, value, size in info.data_objects():
        lo, hi = value + obj.base, value + obj.base + size
        i = bisect.bisect_right(starts, lo) - 1
        if i >= 0 and spans[i][0] <= lo and hi <= spans[i][1]:
            continue
        out.append((lo & ~7, (hi + 7) & ~7))
    return out


def _has_debug_info(obj) -> bool:
    from ..elfinfo import elf_info
    from ..objfiles import debug_file_for
    info = elf_info(obj.path)
    if info is None:
        return False
    try:
        if info.elf.get_section_by_name(".debug_info") is not None:
            return True
    except Exception:
        return False
    return debug_file_for(obj.build_id) is not None


def writable_segments(obj) -> List[Tuple[int, int]]:
    """[start, end) of an object's writable PT_LOAD segments (.data, .bss), relocated."""
    from ..elfinfo import elf_info
    info = elf_info(obj.path)
    if info is None:
        return []
    out = []
    try:
        for seg in info.elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & 2 and seg["p_memsz"]:
                lo = obj.base + seg["p_vaddr"]
                out.append((lo & ~7, (lo + seg["p_memsz"] + 7) & ~7))
    except Exception:
        return []
    return out


def _subtract(ranges: List[Tuple[int, int]], holes: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    out = []
    holes = sorted(holes)
    for lo, hi in ranges:
        cur = lo
        for a, b in holes:
            if b <= cur or a >= hi:
                continue
            if a > cur:
                out.append((cur, a))
            cur = max(cur, b)
        if cur < hi:
            out.append((cur, hi))
    return [(a & ~7, b & ~7) for a, b in out if (b & ~7) > (a & ~7)]


def thread_sps(target: Target, frames) -> Dict[Tuple[int, int], int]:
    """(thread, frame level) -> stack pointer, for the frames asked about."""
    out: Dict[Tuple[int, int], int] = {}
    core = getattr(target, "core", None)
    core_regs = {}
    if core is not None:
        for t in getattr(core, "threads", []):
            core_regs[getattr(t, "tid", None)] = getattr(t, "regs", {})
    for th, level, tid in frames:
        v = None
        try:
            r = target.evaluate("$sp", th, level)
            if r is not None:
                v = int(r[0])
        except Exception:
            v = None
        if v is None and level == 0:
            v = (core_regs.get(tid) or {}).get("rsp")
        if v is None:
            try:
                v = target.frame_registers(th, level).get("rsp")
            except Exception:
                v = None
        if v:
            out[(th, level)] = v
    return out


def _region_of(regions: List[Region], addr: int) -> Optional[Region]:
    for r in regions:
        if r.start <= addr < r.end:
            return r
    return None


def heap_ranges(snaps) -> List[Tuple[int, int]]:
    """Memory the allocator(s) own: walked heap segments, heap_info reservations, mmapped chunks,
    the allocators' own metadata."""
    from ..heapindex import MMAPPED
    out = []
    for s in snaps:
        for a in s.arenas:
            for lo, hi in a.segments:
                out.append((lo, hi))
        out.extend(s.metadata)
        idx = s.index
        mm = idx.state == MMAPPED
        for st, sz in zip(idx.start[mm].tolist(), idx.size[mm].tolist()):
            out.append((st, st + sz))
    return out


def target_roots(target: Target, snaps=(), frames=None, globals_=None, stack: str = "frames",
                 conservative: bool = False, described=None) -> RootSet:
    """The roots of `target` at this stop (see the module's comment). `conservative`: the
    guessing approach's roots (every writable non-heap byte, whole stacks, interior pointers)."""
    notes: List[str] = []
    if frames is None:
        frames = target.frames()
    if globals_ is None:
        globals_ = target.globals()
    variables = [v for f in frames for v in f.variables] + list(globals_)
    extra: List[ExtraRoot] = []
    stats = {"frames": len(frames), "variables": len(variables), "globals": len(globals_),
             "optimized_out": sum(1 for v in variables if v.optimized_out),
             "in_registers": sum(1 for v in variables if v.address is None and v.value is not None)}
    try:
        threads = target.threads()
    except Exception:
        threads = []
    try:
        regions = list(target.regions())
    except Exception:
        regions = []

    # registers of each thread's innermost frame
    by_thread: Dict[int, list] = {}
    for f in frames:
        by_thread.setdefault(f.thread, []).append(f)
    for th in threads:
        regs = {}
        try:
            regs = target.frame_registers(th.num, 0)
        except Exception:
            regs = {}
        if not regs:
            core = getattr(target, "core", None)
            for t in getattr(core, "threads", []) if core is not None else []:
                if getattr(t, "tid", None) == th.tid:
                    regs = {k: v for k, v in t.regs.items()
                            if k not in ("rip", "rsp", "fs_base", "gs_base", "eflags", "cs", "ss", "ds",
                                         "es", "fs", "gs", "orig_rax")}
        if regs:
            extra.append(ExtraRoot(f"registers of thread {th.num}", "registers", values=sorted(regs.items()),
                                   interior=True, thread=th.num, frame=0))

    # stack pointers: of every thread, and of frames with optimized-out pointer variables
    want = set()
    for th in threads:
        fl = by_thread.get(th.num, [])
        want.add((th.num, 0, th.tid))
        for i, f in enumerate(fl):
            if any(v.optimized_out for v in f.variables):
                want.add((f.thread, f.level, f.tid))
                if i + 1 < len(fl):
                    want.add((f.thread, fl[i + 1].level, f.tid))
    sps = thread_sps(target, sorted(want)) if want else {}
    stack_regions: List[Tuple[Region, int, Optional[int]]] = []     # (region, sp, fs_base)
    for th in threads:
        sp = sps.get((th.num, 0))
        reg = _region_of(regions, sp) if sp else None
        if reg is not None:
            stack_regions.append((reg, sp, th.fs_base))

    opt_frames = 0
    for th in threads:
        fl = by_thread.get(th.num, [])
        if stack == "threads" or conservative:
            sp = sps.get((th.num, 0))
            reg = _region_of(regions, sp) if sp else None
            if reg is not None:
                extra.append(ExtraRoot(f"stack of thread {th.num}", "stack", ranges=[(sp & ~7, reg.end)],
                                       interior=conservative, thread=th.num))
        for i, f in enumerate(fl):
            gone = [v.name for v in f.variables if v.optimized_out]
            if not gone:
                continue
            opt_frames += 1
            what = f"{f.function or '??'} (thread {f.thread}, frame {f.level}; optimized out: {', '.join(gone[:4])}" \
                   + (" ..." if len(gone) > 4 else "") + ")"
            if f.level > 0:
                try:
                    regs = target.frame_registers(f.thread, f.level)
                except Exception:
                    regs = {}
                callee = {k: v for k, v in regs.items() if k in ("rbx", "rbp", "r12", "r13", "r14", "r15")}
                if callee:
                    extra.append(ExtraRoot(f"saved registers of {what}", "registers",
                                           values=sorted(callee.items()), interior=True,
                                           thread=f.thread, frame=f.level, function=f.function))
            if stack == "frames" and not conservative:
                lo = sps.get((f.thread, f.level))
                hi = sps.get((f.thread, fl[i + 1].level)) if i + 1 < len(fl) else None
                reg = _region_of(regions, lo) if lo else None
                if lo and reg is not None:
                    if hi is None or not (lo < hi <= reg.end):
                        hi = min(reg.end, lo + 4096)
                    extra.append(ExtraRoot(f"stack of {what}", "stack", ranges=[(lo & ~7, hi)], interior=True,
                                           thread=f.thread, frame=f.level, function=f.function))
    stats["frames_with_optimized_out"] = opt_frames

    # data of objects whose globals debug info does not describe
    try:
        objs = target.objfiles()
    except Exception:
        objs = []
    arenas = [(a.address, a.address + ARENA_SPAN) for s in snaps for a in s.arenas if a.address]
    precise_data: List[Tuple[int, int]] = []
    scanned = 0
    for obj in objs:
        segs = writable_segments(obj)
        covered = not conservative and not is_system(obj.path) and _has_debug_info(obj)
        if covered:
            precise_data += segs
            if described is not None:           # symbols the debug info says nothing about
                hidden = _undescribed_objects(obj, described)
                if hidden:
                    extra.append(ExtraRoot(f"data of {os.path.basename(obj.path)}: {len(hidden)} objects without "
                                           "debug info (e.g. a library built without -g)", "data",
                                           ranges=hidden))
                    scanned += sum(b - a for a, b in hidden)
            continue
        segs = _subtract(segs, arenas)
        if segs:
            why = "" if conservative else (" (system library: its globals are not traced precisely)"
                                           if is_system(obj.path) else " (no debug info)")
            extra.append(ExtraRoot(f"data of {os.path.basename(obj.path)}{why}", "data", ranges=segs,
                                   interior=conservative))
            scanned += sum(b - a for a, b in segs)

    # anonymous writable memory: TLS, TCBs, the program's own mmaps (not heap, not stacks)
    heap = heap_ranges(snaps) + [(a - 64, a + ARENA_SPAN) for a, _ in arenas]   # + heap_info, malloc_state
    data_all = [r for obj in objs for r in writable_segments(obj)]
    for reg in regions:
        if not (reg.readable and reg.writable and reg.anonymous and reg.in_snapshot):
            continue
        holes = heap + data_all
        st = [(r, sp, fs) for r, sp, fs in stack_regions if r.start == reg.start]
        label = "anonymous memory"
        kind = "anon"
        if st:
            if conservative or stack == "threads":
                continue                                   # already scanned as a stack
            r, sp, fs = st[0]
            # a thread's stack mapping: keep its TLS and thread control block only
            if fs and r.start <= fs < r.end:
                lo = max(sp, fs - TLS_BELOW)
                holes = holes + [(r.start, lo)]
                label, kind = "thread-local storage", "tls"
            else:
                continue
        if reg.path == "[stack]" and not st:
            continue
        rngs = _subtract([(reg.start, reg.end)], holes)
        rngs = [(a, b) for a, b in rngs]
        if not rngs:
            continue
        size = sum(b - a for a, b in rngs)
        if scanned + size > MAX_SCAN:
            notes.append(f"stopped scanning non-heap memory conservatively after {MAX_SCAN >> 20} MiB")
            break
        scanned += size
        extra.append(ExtraRoot(f"{label} {reg.start:#x}-{reg.end:#x}", kind, ranges=rngs, interior=conservative))

    # the C runtime's own: each thread's DTV (glibc callocs it for every thread but the first
    # and keeps dtv + 1, 16 bytes into the chunk, in the thread control block at fs_base + 8)
    dtvs = []
    for th in threads:
        if th.fs_base:
            try:
                dtv = int.from_bytes(target.read(th.fs_base + 8, 8), "little")
            except Exception:
                continue
            if dtv > 16:
                dtvs.append((f"dtv of thread {th.num} (fs_base+8, minus 16)", dtv - 16))
    if dtvs:
        extra.append(ExtraRoot("thread control blocks", "runtime", values=dtvs, precise=True))

    # allocator-internal chunks
    for s in snaps:
        vals = [(f"tcache of thread {n}", a) for n, a in sorted(s.thread_cache.items())] + list(s.internal)
        if vals:
            extra.append(ExtraRoot(f"{s.allocator} thread caches", "allocator", values=vals, precise=True))
    stats["extra_roots"] = len(extra)
    stats["conservative_bytes"] = scanned
    return RootSet(variables, extra, stats, notes)
