"""Crash context: the program stopped in the allocator's error path (abort from
malloc_printerr, or a SIGSEGV inside malloc/free). Name the allocator call, the pointer it was
given, glibc's own message, the program frame and the expression that passed the pointer,
and classify: double free, invalid free, or metadata corruption.

The pointer comes from libc's own frame (`mem`, with libc debug info), else from the source
line of the calling frame (`free(resp->buf)`: the argument is evaluated in that frame), so
it works without libc debug info. glibc's message is read from `__abort_msg`, which glibc
sets (exported, GLIBC_PRIVATE) before aborting so that core dumps keep it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

from ..heapindex import CACHED, FREE, TOP
from ..memcache import CachedReader
from ..objfiles import is_system
from ..report import Finding
from ..snapshot import HeapSnapshot
from ..target import FrameInfo, ReadError, StopInfo, Target
from .program import Ref, locate

# libc entry points (as gdb names them with and without libc debug info) -> the operation
_ENTRY = {"free": "free", "cfree": "free", "__libc_free": "free", "__GI___libc_free": "free",
          "malloc": "malloc", "__libc_malloc": "malloc", "__GI___libc_malloc": "malloc",
          "realloc": "realloc", "__libc_realloc": "realloc", "__GI___libc_realloc": "realloc",
          "calloc": "calloc", "__libc_calloc": "calloc", "__GI___libc_calloc": "calloc",
          "reallocarray": "realloc", "__libc_reallocarray": "realloc",
          # jemalloc's own entry points (and a je_-prefixed build's names)
          "dallocx": "free", "sdallocx": "free", "mallocx": "malloc", "rallocx": "realloc",
          "je_free": "free", "je_malloc": "malloc", "je_realloc": "realloc", "je_calloc": "calloc"}
_PTR_ARG = {"free": "mem", "realloc": "oldmem"}
_CALL = re.compile(r"\b(free|cfree|realloc|reallocarray)\s*\(|\bdelete(\s*\[\s*\])?\s+")


@dataclass
class Crash:
    thread: int
    tid: int
    signal: str
    op: Optional[str] = None               # free, malloc, realloc, calloc
    message: Optional[str] = None          # glibc's own words
    frame: Optional[FrameInfo] = None      # the program frame that called the allocator
    expr: Optional[str] = None             # the expression passed, e.g. "response"
    pointer: Optional[int] = None
    pointer_from: str = ""                 # how the pointer was found
    in_allocator: bool = False
    needs_inference: bool = False
    notes: List[str] = field(default_factory=list)


def _is_system(f: FrameInfo, libc_path: str) -> bool:
    return bool(f.objfile) and (f.objfile == libc_path or is_system(f.objfile))


def abort_message(target: Target, reader: CachedReader) -> Optional[str]:
    from ..allocators.glibc_locate import find_libc
    from ..elfinfo import elf_info
    addr = target.symbol("__abort_msg")
    libc = find_libc(target)
    if addr is None and libc is not None:
        info = elf_info(libc.path)
        v = info.symbol("__abort_msg") if info else None
        addr = v + libc.base if v is not None else None
    if addr is None:
        return None
    try:
        p = reader.u64(addr)
        if not p:
            return None
        raw = reader.read(p + 4, 512)
    except ReadError:
        return None
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return text or None


def analyse(target: Target, reader: CachedReader, frames: List[FrameInfo], stop: StopInfo,
            snaps: List[HeapSnapshot]) -> Optional[Crash]:
    if stop.thread is None or stop.signal not in ("SIGABRT", "SIGSEGV", "SIGBUS"):
        return None
    mine = sorted((f for f in frames if f.thread == stop.thread), key=lambda f: f.level)
    if not mine:
        return None
    from ..allocators.glibc_locate import find_libc
    libc = find_libc(target)
    libc_path = libc.path if libc else ""
    crash = Crash(stop.thread, mine[0].tid, stop.signal)
    prog = next((f for f in mine if not _is_system(f, libc_path)), None)
    if prog is None:
        return None
    crash.frame = prog
    inner = [f for f in mine if f.level < prog.level]
    entry = None
    for f in reversed(inner):                   # outermost libc frame that is an allocator entry
        op = _ENTRY.get(f.function) or ("free" if f.function.startswith("operator delete") else None)
        if op:
            entry, crash.op = f, op
            break
    crash.message = abort_message(target, reader) if stop.signal == "SIGABRT" else None
    if crash.op is None and crash.message:
        m = re.match(r"(free|malloc|realloc|calloc|munmap_chunk|malloc_consolidate)\(\)", crash.message)
        if m:
            crash.op = {"munmap_chunk": "free", "malloc_consolidate": "malloc"}.get(m.group(1), m.group(1))
        elif "double free" in crash.message:
            crash.op = "free"
    src = target.source_line(prog.file, prog.line) if prog.file and prog.line else None
    if crash.op is None and src:
        m = _CALL.search(src)
        if m:
            crash.op = "realloc" if "realloc" in (m.group(1) or "") else "free"
    crash.in_allocator = crash.op is not None or (stop.signal == "SIGABRT" and bool(crash.message))
    if not crash.in_allocator:
        return crash                            # a crash in program code: stale pointers say more
    # the pointer: libc's own argument (debug info), else the call's source text
    if entry is not None and crash.op in _PTR_ARG:
        r = target.evaluate(_PTR_ARG[crash.op], crash.thread, entry.level)
        if r is not None:
            crash.pointer, crash.pointer_from = r[0], f"argument {_PTR_ARG[crash.op]} of {entry.function}"
    if src:
        expr = _call_argument(src, crash.op)
        if expr:
            crash.expr = expr
            if crash.pointer is None:
                r = target.evaluate(expr, crash.thread, prog.level)
                if r is not None:
                    crash.pointer, crash.pointer_from = r[0], f"'{expr}' evaluated in {prog.function}"
    if crash.pointer is None and crash.op in ("free", "realloc"):
        for f in inner:                          # _int_free's chunk pointer (libc debug info)
            if f.function in ("_int_free", "_int_free_merge_chunk", "_int_realloc"):
                r = target.evaluate("p", crash.thread, f.level)
                if r is not None and r[0]:
                    crash.pointer, crash.pointer_from = r[0] + 16, f"chunk argument p of {f.function} (+16)"
                    break
    if crash.pointer is None and crash.op in ("free", "realloc"):
        crash.needs_inference = True
    return crash


def infer_pointer(crash: Crash, refs: List[Ref], snaps: List[HeapSnapshot], target: Target = None) -> None:
    """Optimized code keeps no copy of the argument: if the calling frame's variables point to
    exactly one free chunk's start, that is the pointer (labelled as inferred)."""
    if not crash.needs_inference or crash.frame is None:
        return
    cands = {}
    for r in refs:
        if (r.var.thread, r.var.frame) != (crash.thread, crash.frame.level):
            continue
        w = locate(snaps, r.value)
        if w is not None and w.offset == 0 and w.state in (FREE, CACHED, TOP):
            cands.setdefault(r.value, r.path)
    if len(cands) == 1:
        (p, path), = cands.items()
        crash.pointer = p
        crash.pointer_from = (f"inferred: the argument is optimized out, and {path} is the only pointer to a "
                              f"freed chunk in {crash.frame.function}'s variables")
        return
    # last resort: the allocator keeps its argument in registers that libc's own frames saved
    regs = {}
    for level in range(0, crash.frame.level + 1) if target is not None else ():
        for name, v in target.frame_registers(crash.thread, level).items():
            for cand in (v, v + 16):          # a user pointer, or a chunk pointer
                w = locate(snaps, cand)
                if w is not None and w.offset == 0 and w.state in (FREE, CACHED):
                    regs.setdefault(cand, f"{name} in frame {level}")
    if len(regs) == 1:
        (p, where), = regs.items()
        crash.pointer = p
        crash.pointer_from = (f"a guess: the argument is optimized out; {p:#x} is the only freed chunk found in "
                              f"the registers of the allocator's frames ({where})")
    else:
        crash.notes.append("the pointer passed to the allocator could not be recovered (optimized out, no "
                           "source line, no libc debug info)")


def _call_argument(line: str, op: Optional[str]) -> Optional[str]:
    """The (first) argument of free(...)/realloc(...) on a source line, parentheses balanced."""
    m = _CALL.search(line)
    if not m:
        return None
    if m.group(1) is None:                       # C++: delete p;  delete[] p;
        arg = line[m.end():].split(";", 1)[0].strip()
        return arg if arg and re.fullmatch(r"[\w\s\.\->\[\]\(\)\*&+]+", arg) else None
    i, depth, start = m.end(), 1, m.end()
    while i < len(line) and depth:
        c = line[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            break
        i += 1
    arg = line[start:i].strip()
    return arg if arg and re.fullmatch(r"[\w\s\.\->\[\]\(\)\*&+]+", arg) else None


def findings(crash: Crash, snaps: List[HeapSnapshot], refs: List[Ref], target: Target) -> List[Finding]:
    """The crash as one finding (critical), with evidence a person can check."""
    if crash is None or not crash.in_allocator:
        return []
    f = crash.frame
    where = f"{f.function or '??'}" + (f" ({_short(f.file)}:{f.line})" if f.file else "")
    call = f"{crash.op or 'the allocator'}({crash.expr or ''})"
    ev = []
    if crash.message:
        ev.append(f"glibc: {crash.message}")
    ev.append(f"{call} was called from {where} in thread {crash.thread} (LWP {crash.tid}), frame {f.level}")
    if crash.pointer_from:
        ev.append(f"the pointer {crash.pointer:#x} is {crash.pointer_from}")
    var = {"name": crash.expr or "?", "thread": crash.thread, "tid": crash.tid, "frame": f.level,
           "function": f.function}
    p = crash.pointer
    if p is None:
        msg = (f"{crash.signal} inside {crash.op or 'the allocator'}() called from {where}: the heap metadata "
               f"is corrupt" + (f" (glibc: {crash.message})" if crash.message else ""))
        return [Finding("metadata-corruption", "critical", None, msg, ev + crash.notes, None, var, "crash")]
    w = locate(snaps, p)
    holders = []
    if w is not None:
        lo, hi = w.start, w.user + max(w.usable, 0)
        holders = [r for r in refs if lo <= r.value < hi and not (r.var.thread == crash.thread
                                                                 and r.var.frame == f.level)]
    for r in holders[:5]:
        who = f"global {r.path}" if r.var.kind == "global" else \
            f"{r.path} ({r.var.kind} of {r.var.function}, thread {r.var.thread})"
        ev.append(f"also pointing at it: {who}")
    expr = crash.expr or f"{p:#x}"
    if w is None:
        kind = "invalid-free"
        msg = f"{call} in {where}: {p:#x} is not heap memory ({_region(target, p)}), so it was never allocated"
        chunk = None
    elif w.offset != 0 and w.state not in (TOP,):
        kind = "invalid-free"
        msg = (f"{call} in {where}: {p:#x} points {w.offset} bytes into the {w.usable}-byte allocation at "
               f"{w.user:#x}, not at its start")
        chunk = w.chunk
    elif w.state in (FREE, CACHED, TOP):
        kind = "double-free"
        if w.state == TOP:
            state = "already freed: it lies in the top chunk (freed and merged into top)"
        else:
            fl = w.snap.lists[int(w.snap.index.where[w.index])]
            rec = int(w.snap.index.recency[w.index])
            when = "freed most recently" if rec == 0 else f"position {rec} of its list"
            state = f"already free in {fl.name} ({when})"
            if fl.thread is not None and fl.thread != crash.thread:
                state += f": thread {fl.thread}'s cache holds it, so thread {fl.thread} freed it first"
            elif fl.thread is not None:
                state += ": this thread's own cache holds it, so this thread freed it before"
        what = "buffer" if w.state == TOP else f"{w.usable}-byte buffer"
        msg = f"double free of the {what} that {expr} in {f.function or where} points to: {state}"
        chunk = w.chunk
    else:
        kind = "metadata-corruption"
        msg = (f"{call} in {where} aborted on an allocated {w.usable}-byte chunk: its header or a neighbour's "
               f"is corrupt" + (f" (glibc: {crash.message})" if crash.message else ""))
        chunk = w.chunk
        near = [x for s in snaps for x in s.findings if x.chunk and x.chunk.get("start") is not None
                and abs(x.chunk["start"] - w.start) <= 2 * max(w.usable, 4096)]
        for x in near[:3]:
            ev.append(f"nearby: {x.message}")
    return [Finding(kind, "critical", w.user if w is not None and w.offset == 0 else p, msg, ev + crash.notes,
                    chunk, var, "crash")]


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _region(target: Target, addr: int) -> str:
    from ..target import region_index
    reg = region_index(target.regions())(addr)
    if reg is None:
        return "unmapped"
    if reg.path == "[stack]":
        return "the main thread's stack"
    if reg.path:
        return f"in {reg.path}"
    return "an anonymous mapping (a thread stack or mmap)"
