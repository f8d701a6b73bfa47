"""The heap in the program's own terms: which variables point where.

Every pointer held by an argument, a local or a global (all threads, all frames), and every
pointer field of the objects they point to (one level deep), is classified against the heap
index. A pointer into a free or cached chunk is a use-after-free in waiting; a `T *` whose
chunk has less room than sizeof(T) is a size mismatch. Values are read in bulk from the
snapshot; the debugger only says where variables live and what their types are.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from ..heapindex import CACHED, FREE, MMAPPED, STATE_NAMES, TOP
from ..memcache import CachedReader
from ..report import Finding, fmt_size
from ..snapshot import HeapSnapshot
from ..target import PtrSlot, ReadError, StopInfo, Target, Variable

MAX_OBJECT = 1 << 20        # bytes of one variable or pointee read to find its pointers
MAX_REFS = 200_000          # pointers examined in one pass
MAX_FINDINGS = 50           # per kind, before they are counted only
_U64 = struct.Struct("<Q")


@dataclass
class Ref:
    """One pointer value found in program state."""
    var: Variable
    path: str                      # "response", "s->next", "cache[3]", "cache[3]->buf"
    value: int
    slot: PtrSlot
    depth: int                     # 0: held by the variable itself; 1: a field of its pointee


@dataclass
class Where:
    """What a pointer value points at in the heap."""
    snap: HeapSnapshot
    index: int
    state: int
    start: int
    user: int
    usable: int
    offset: int
    csize: int = 0                 # the chunk's own size (header included)

    @property
    def chunk(self) -> Dict:
        return {"start": self.start, "size": self.csize, "state": self.state_name}

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


def locate(snaps: List[HeapSnapshot], value: int) -> Optional[Where]:
    for s in snaps:
        i = s.index.find(value)
        if i >= 0:
            idx = s.index
            st, start, csize = int(idx.state[i]), int(idx.start[i]), int(idx.size[i])
            usable = csize - (2 * idx.usable_delta if st == MMAPPED else idx.usable_delta)
            user = start + idx.user_offset
            return Where(s, i, st, start, user, usable, value - user, csize)
    return None


def annotate(w: Optional[Where]) -> str:
    """The short note shown beside a pointer: [cached: tcache[6] (0x80) of thread 3, 120 B, freed last]."""
    if w is None:
        return ""
    size = fmt_size(w.usable)
    inside = f", +{w.offset}" if w.offset else ""
    if w.state in (FREE, CACHED):
        idx = w.snap.index
        wh = int(idx.where[w.index])
        fl = w.snap.lists[wh] if wh >= 0 else None
        when = fl.recency_text(int(idx.recency[w.index])) if fl else ""
        return f"[{w.state_name}: {fl.name if fl else '?'}, {size}{inside}" + (f", {when}]" if when else "]")
    if w.state == TOP:
        return "[in the top chunk: never allocated, or freed and merged into top]"
    return f"[{w.state_name}, {size}{inside}]"


def _u64s(raw: bytes, offsets: Iterable[int]) -> List[Optional[int]]:
    out = []
    for off in offsets:
        out.append(_U64.unpack_from(raw, off)[0] if off + 8 <= len(raw) else None)
    return out


def _join(base: str, sub: str) -> str:
    return base + sub


def collect(target: Target, reader: CachedReader, variables: List[Variable],
            snaps: List[HeapSnapshot]) -> Tuple[List[Ref], Dict[str, int]]:
    """Every pointer value in `variables` and one level into what they point to."""
    refs: List[Ref] = []
    stats = {"variables": 0, "optimized_out": 0, "unreadable": 0, "pointers": 0}
    layouts: Dict[str, object] = {}
    for var in variables:
        if len(refs) >= MAX_REFS:
            break
        stats["variables"] += 1
        if var.optimized_out:
            stats["optimized_out"] += 1
            continue
        lay = var.layout
        if var.address is None:
            if var.value is None or not lay.slots:
                continue
            pairs = [(lay.slots[0], var.value)]
        else:
            try:
                raw = reader.read(var.address, min(lay.size, MAX_OBJECT))
            except ReadError:
                stats["unreadable"] += 1
                continue
            pairs = [(s, v) for s, v in zip(lay.slots, _u64s(raw, (s.offset for s in lay.slots))) if v is not None]
        for slot, value in pairs:
            if not value:
                continue
            path = var.name + slot.path
            refs.append(Ref(var, path, value, slot, 0))
            if slot.target_type and not slot.ambiguous:
                refs.extend(_deeper(target, reader, var, path, value, slot, snaps, layouts))
    stats["pointers"] = len(refs)
    return refs, stats


def _deeper(target, reader, var, path, value, slot, snaps, layouts) -> List[Ref]:
    """Pointer fields of the object `value` points to: an allocated chunk, or any readable
    non-heap object (a struct on another thread's stack, a global)."""
    w = locate(snaps, value)
    if w is not None and w.state not in (0, MMAPPED):
        return []
    lay = layouts.get(slot.target_type)
    if lay is None and slot.target_type not in layouts:
        lay = target.type_layout(slot.target_type)
        layouts[slot.target_type] = lay
    if lay is None or not lay.slots:
        return []
    room = max(0, w.usable - w.offset) if w is not None else lay.size
    try:
        raw = reader.read(value, min(lay.size, room, MAX_OBJECT))
    except ReadError:
        return []
    out = []
    for s, v in zip(lay.slots, _u64s(raw, (s.offset for s in lay.slots))):
        if v:
            sub = s.path[1:] if s.path.startswith(".") else s.path
            out.append(Ref(var, f"{path}->{sub}" if sub else f"*{path}", v, s, 1))
    return out


def _var_json(var: Variable, path: str) -> Dict:
    return {"name": path, "kind": var.kind, "thread": var.thread, "tid": var.tid, "frame": var.frame,
            "function": var.function}


def _who(var: Variable, path: str) -> str:
    if var.kind == "global":
        return f"global {path}"
    return f"{path} ({var.kind} of {var.function or '??'}, thread {var.thread}, frame {var.frame})"


def check(refs: List[Ref], snaps: List[HeapSnapshot], stop: StopInfo,
          crash_frame: Optional[Tuple[int, int]] = None, skip_paths=()) -> List[Finding]:
    """use-after-free and size-mismatch findings for the pointers in refs.

    crash_frame: (thread, level) of the program frame that crashed; a stale pointer held there
    is critical (it is being used), elsewhere a warning (it may never be used again)."""
    found: List[Finding] = []
    counts = {"use-after-free": 0, "size-mismatch": 0}
    freed_twice = {f.chunk["start"] for s in snaps for f in s.findings if f.kind == "double-free" and f.chunk}
    for r in refs:
        if (r.var.thread, r.var.frame, r.path) in skip_paths:
            continue
        w = locate(snaps, r.value)
        if w is None:
            continue
        v = r.var
        in_crash = crash_frame is not None and (v.thread, v.frame) == crash_frame
        if w.state in (FREE, CACHED, TOP):
            counts["use-after-free"] += 1
            if counts["use-after-free"] > MAX_FINDINGS:
                continue
            faulted = stop.fault_address is not None and w.start <= stop.fault_address < w.start + w.usable + 16
            sev = "critical" if faulted or in_crash else "warning"   # in_crash: a SIGSEGV/SIGBUS frame
            if r.slot.ambiguous:
                sev = "info"
            note = annotate(w)
            msg = (f"{_who(v, r.path)} points to freed memory {note}"
                   if w.state != TOP else f"{_who(v, r.path)} points into the top chunk {note}")
            ev = [f"{r.path} = {r.value:#x} ({r.slot.type_name})"]
            if faulted:
                ev.append(f"the crash: the faulting access at {stop.fault_address:#x} is inside this freed chunk")
            elif in_crash:
                ev.append("held in the frame that crashed")
            elif sev == "warning":
                ev.append("a dangling pointer: any use of it is a use-after-free (set it to NULL after free)")
            if r.slot.ambiguous:
                ev.append("held in a union: it may not be a pointer at all")
            if r.depth:
                ev.append(f"found one level deep: a field of the object {r.path.split('->')[0]} points to")
            if w.start in freed_twice:
                ev.append("this chunk was freed twice: see the double-free finding")
            elif w.state == CACHED:
                fl = w.snap.lists[int(w.snap.index.where[w.index])]
                if fl.thread is not None and v.thread is not None and fl.thread != v.thread:
                    ev.append(f"freed by thread {fl.thread} (its tcache holds it), not by thread {v.thread}")
            found.append(Finding("use-after-free", sev, r.value - w.offset if w.state != TOP else r.value,
                                 msg, ev, w.chunk,
                                 _var_json(v, r.path), "stale-pointer"))
        elif r.slot.target_size and w.state in (0, MMAPPED) and not r.slot.ambiguous:
            room = w.usable - w.offset
            if w.offset >= 0 and r.slot.target_size > room and not (w.offset and room == 0):
                counts["size-mismatch"] += 1
                if counts["size-mismatch"] > MAX_FINDINGS:
                    continue
                found.append(Finding(
                    "size-mismatch", "critical" if in_crash else "warning", w.user,
                    f"{_who(v, r.path)} is a {r.slot.type_name} ({r.slot.target_size} bytes) but points to "
                    f"{room} bytes of a {w.usable}-byte allocation",
                    [f"{r.path} = {r.value:#x}, {w.offset} bytes into the chunk at {w.start:#x}",
                     "the object does not fit: a wrong malloc size, or a stale pointer into a reused chunk"],
                    w.chunk, _var_json(v, r.path),
                    "type-size"))
    for kind, n in counts.items():
        if n > MAX_FINDINGS:
            found.append(Finding(kind, "info", None, f"{n - MAX_FINDINGS} more {kind} findings not listed",
                                 [], None, None, "cap"))
    return found
