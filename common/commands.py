"""What each user command computes and prints, independent of the debugger.

An adapter parses nothing and decides nothing: it builds a Target, evaluates expressions the
core cannot (EXPR -> address and static type), calls one of the `run_*` functions and prints
the returned text; it raises a debugger error when `fail` is set.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from .heapindex import CACHED, FREE, MMAPPED, STATE_NAMES, TOP
from .report import (SEVERITIES, Finding, fmt_size, make_report, severity_rank, sort_findings, table,
                     write_json)
from .session import program_view, snapshots
from .snapshot import HeapSnapshot
from .target import Target


class UsageError(Exception):
    """Bad command arguments: the message is the usage sentence."""


@dataclass
class Args:
    rest: str = ""                   # the expression, for commands that take one
    json: Optional[str] = None
    fail_on: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)   # command-specific flags


@dataclass
class Result:
    text: str                        # what to print (may be empty when --json - was the only output)
    report: Dict[str, Any]
    fail: Optional[str] = None       # set: the adapter raises a debugger error with this sentence
    json_out: Optional[str] = None   # JSON text to print when --json -
    errors: List[str] = field(default_factory=list)


_FLAG = re.compile(r"(?:^|\s)--(json|fail-on|dot|around|depth)(?:=|\s+)(\"[^\"]*\"|'[^']*'|\S+)")
_BOOL = re.compile(r"(?:^|\s)--(conservative)(?=\s|$)")


def parse_args(argstr: str, allow_expr: bool, allow_fail_on: bool, usage: str, extra=()) -> Args:
    """`[EXPR] [--json PATH] [--fail-on SEVERITY]` plus the `extra` flags a command accepts
    (dot, around, depth, conservative); flags anywhere; EXPR keeps its spaces."""
    a = Args()
    text = argstr or ""
    for m in _BOOL.finditer(text):
        if m.group(1) not in extra:
            raise UsageError(f"unknown option --{m.group(1)}; usage: {usage}")
        a.options[m.group(1)] = True
    text = _BOOL.sub(" ", text)
    for m in _FLAG.finditer(text):
        name, val = m.group(1), m.group(2).strip("\"'")
        if name == "json":
            a.json = val
        elif name == "fail-on":
            if not allow_fail_on:
                raise UsageError(usage)
            if val not in SEVERITIES:
                raise UsageError(f"--fail-on takes one of {', '.join(SEVERITIES)}, not '{val}'")
            a.fail_on = val
        elif name not in extra:
            raise UsageError(f"unknown option --{name}; usage: {usage}")
        elif name == "depth":
            if not val.isdigit():
                raise UsageError(f"--depth takes a number, not '{val}'")
            a.options[name] = int(val)
        else:
            a.options[name] = val
    rest = _FLAG.sub(" ", text).strip()
    if rest.startswith("--"):
        raise UsageError(f"unknown option {rest.split()[0]}; usage: {usage}")
    if rest and not allow_expr:
        raise UsageError(f"unexpected argument '{rest}'; usage: {usage}")
    if allow_expr and not rest:
        raise UsageError(usage)
    a.rest = rest
    return a


def _allocator_field(snaps: List[HeapSnapshot]):
    names = [s.allocator for s in snaps]
    return names[0] if len(names) == 1 else names


def _finish(command: str, args: Args, snaps, payload, text, fail=None, target=None) -> Result:
    io = target.io_stats() if target is not None else None     # remote targets: bytes over the link
    rep = make_report(command, _allocator_field(snaps), dict(payload, target_io=io) if io else payload)
    res = Result(text, rep, fail)
    if args.json:
        if args.json == "-":
            from .report import dumps
            res.json_out = dumps(rep)
        else:
            err = write_json(rep, args.json)
            if err:
                res.errors.append(err)
            else:
                res.text += f"\nJSON report written to {args.json}\n"
    return res


# --- heap-check ---------------------------------------------------------------------------------
HEAP_CHECK_USAGE = "heap-check [--json PATH] [--fail-on critical|warning|info]"


def parse_heap_check(argstr: str) -> Args:
    return parse_args(argstr, False, True, HEAP_CHECK_USAGE)


def run_heap_check(target: Target, args: Args, cache_key=None) -> Result:
    t0 = time.perf_counter()
    snaps, skipped = snapshots(target, cache_key)
    view = program_view(target, snaps, cache_key)
    findings = sort_findings([f for s in snaps for f in s.findings] + view.findings)
    elapsed = time.perf_counter() - t0
    summary = [_summary(s) for s in snaps]
    payload = {"target": target.describe(), "summary": summary, "program": _program_summary(view),
               "findings": [f.to_json() for f in findings],
               "notes": [n for s in snaps for n in s.notes] + skipped + view.notes, "seconds": round(elapsed, 4)}
    text = _render_check(snaps, findings, summary, elapsed, view)
    fail = None
    if args.fail_on:
        worst = [f for f in findings if severity_rank(f.severity) <= severity_rank(args.fail_on)]
        if worst:
            fail = (f"heap-check: {len(worst)} finding(s) of severity {args.fail_on} or worse "
                    f"(first: {worst[0].kind} at {_hex(worst[0].address)})")
    return _finish("heap-check", args, snaps, payload, text, fail, target)


def _summary(s: HeapSnapshot) -> Dict[str, Any]:
    return {"allocator": s.allocator, "version": _version(s), "layout": s.meta.get("layout"),
            "found_by": s.meta.get("found_by"), "arenas": len(s.arenas), "threads": len(s.threads),
            "chunks": len(s.index), "states": s.index.counts(), "walk_seconds": s.meta.get("total_seconds"),
            "unwalked_bytes": sum(b - a for a, b in s.unwalked)}


def _version(s: HeapSnapshot) -> Optional[str]:
    return s.meta.get("version") or s.meta.get("glibc_version")


def _found_by_text(fb: Dict[str, str]) -> str:
    """How the allocator's roots were found: glibc's headline root is main_arena; other
    allocators name their few roots."""
    if "main_arena" in fb:
        return f"; main_arena: {fb['main_arena']}"
    return "".join(f"; {k}: {v}" for k, v in list(fb.items())[:4] if k != "layout")


def _program_summary(view) -> Dict[str, Any]:
    st = view.stats
    d = {"stop": {"thread": view.stop.thread, "signal": view.stop.signal,
                  "fault_address": view.stop.fault_address},
         "frames": st.get("frames", 0), "variables": st.get("variables", 0), "globals": st.get("globals", 0),
         "optimized_out": st.get("optimized_out", 0), "pointers": st.get("pointers", 0)}
    c = view.crash
    if c is not None and c.in_allocator:
        d["crash"] = {"thread": c.thread, "tid": c.tid, "signal": c.signal, "operation": c.op,
                      "message": c.message, "expression": c.expr, "pointer": c.pointer,
                      "pointer_from": c.pointer_from,
                      "function": c.frame.function if c.frame else None,
                      "frame": c.frame.level if c.frame else None}
    return d


def _hex(a) -> str:
    return "-" if a is None else f"{a:#x}"


def _render_check(snaps, findings: List[Finding], summary, elapsed, view=None) -> str:
    out = []
    if view is not None and view.crash is not None and view.crash.in_allocator:
        c = view.crash
        out.append(f"The program stopped with {c.signal} in {c.op or 'the allocator'}() called from "
                   f"{c.frame.function if c.frame else '??'} (thread {c.thread})"
                   + (f"; glibc says: {c.message}" if c.message else ""))
    for s, sm in zip(snaps, summary):
        st = sm["states"]
        out.append(f"{s.allocator} {sm['version'] or ''} heap: {sm['chunks']:,} chunks in {sm['arenas']} arena(s), "
                   f"{sm['threads']} thread(s) — {st['allocated']:,} allocated, {st['free']:,} free, "
                   f"{st['cached']:,} cached, {st['mmapped']:,} mmapped  [{elapsed:.2f} s]")
        out.append(f"  layout: {sm['layout']}" + _found_by_text(sm["found_by"] or {}))
        for n in s.notes:
            out.append(f"  note: {n}")
    if view is not None and view.stats.get("variables"):
        st = view.stats
        out.append(f"  program: {st['pointers']:,} pointers in {st['variables']:,} variables "
                   f"({st['globals']:,} globals, {st['optimized_out']:,} optimized out) across {st['frames']} frames")
    for n in (view.notes if view is not None else []):
        out.append(f"  note: {n}")
    if not findings:
        out.append("No heap errors found.")
        return "\n".join(out) + "\n"
    counts = {sev: sum(f.severity == sev for f in findings) for sev in SEVERITIES}
    out.append(f"{len(findings)} finding(s): " + ", ".join(f"{n} {sev}" for sev, n in counts.items() if n))
    rows = []
    for k, f in enumerate(findings, 1):
        ch = f.chunk or {}
        rows.append([k, f.severity, f.kind, _hex(f.address),
                     _hex(ch.get("size")) if ch.get("size") is not None else "-", f.message])
    out.append(table(rows, ["#", "severity", "kind", "address", "chunk size", "message"]))
    ev = [(k, f) for k, f in enumerate(findings, 1) if f.evidence]
    if ev:
        out.append("evidence:")
        for k, f in ev:
            for e in f.evidence:
                out.append(f"  [{k}] {e}")
    return "\n".join(out) + "\n"


# --- info alloc ---------------------------------------------------------------------------------
INFO_ALLOC_USAGE = "info alloc EXPR [--json PATH]   (EXPR: a pointer variable, p->next, an address)"


@dataclass
class Pointer:
    """What the adapter evaluated EXPR to."""
    address: int
    expr: str = ""
    type_name: Optional[str] = None      # static type of EXPR, e.g. "struct conn *"
    target_size: Optional[int] = None    # sizeof(*EXPR) when EXPR is a typed pointer


def run_info_alloc(target: Target, ptr: Pointer, args: Args, cache_key=None) -> Result:
    snaps, _ = snapshots(target, cache_key)
    info = alloc_info(snaps, ptr)
    return _finish("info alloc", args, snaps, info, _render_info(info), target=target)


def alloc_info(snaps: List[HeapSnapshot], ptr: Pointer) -> Dict[str, Any]:
    addr = ptr.address
    base = {"expression": ptr.expr, "address": addr, "chunk_start": None, "user_start": None, "size": None,
            "offset": None, "state": "not-heap", "arena": None, "bin": None, "thread": None, "tid": None,
            "recency": None, "type_check": None, "warnings": [], "findings": []}
    for s in snaps:
        i = s.index.find(addr)
        if i < 0:
            if any(a <= addr < b for a, b in s.unwalked):
                base["state"] = "unknown"
                base["warnings"].append("the address is in a part of the heap that could not be walked "
                                        "(corrupt allocator metadata, or memory missing from the snapshot)")
            continue
        return _chunk_info(s, i, ptr, base)
    if base["state"] == "not-heap":
        base["warnings"].append("the address is not inside any heap chunk (stack, global, or unmapped)"
                                if addr else "null pointer")
    return base


def _chunk_info(s: HeapSnapshot, i: int, ptr: Pointer, d: Dict[str, Any]) -> Dict[str, Any]:
    idx = s.index
    start, csize, state = int(idx.start[i]), int(idx.size[i]), int(idx.state[i])
    user = start + idx.user_offset
    usable = csize - (2 * idx.usable_delta if state == MMAPPED else idx.usable_delta)
    d.update(allocator=s.allocator, chunk_start=start, user_start=user, size=usable, chunk_size=csize,
             offset=ptr.address - user, state=STATE_NAMES[state])
    a = int(idx.arena[i])
    d["arena"] = s.arena_name(a) if a >= 0 else None
    w = int(idx.where[i])
    if w >= 0:
        fl = s.lists[w]
        d["bin"] = fl.name
        d["recency"] = int(idx.recency[i]) if fl.lifo else None
        if fl.thread is not None:
            d["thread"], d["tid"] = fl.thread, fl.tid
    warn = d["warnings"]
    off = d["offset"]
    if off < 0:
        warn.append(f"points {-off} bytes before the user region, into the chunk header")
    elif state != TOP and off >= usable:
        warn.append(f"points {off - usable} bytes past the end of the {usable}-byte allocation")
    elif off:
        warn.append(f"interior pointer: {off} bytes into the allocation")
    if state in (FREE, CACHED):
        rec = d["recency"]
        when = "" if rec is None else (", freed most recently" if rec == 0 else f", position {rec} of its list")
        warn.append(f"this memory is free ({d['bin']}{when}): using the pointer is a use-after-free")
    elif state == TOP:
        warn.append("the address is in the top chunk (never-allocated space)")
    if ptr.target_size:
        room = usable - max(off, 0)
        fits = room >= ptr.target_size
        d["type_check"] = {"type": ptr.type_name, "type_size": ptr.target_size, "room": room, "fits": fits}
        if not fits and state not in (TOP,):
            warn.append(f"{ptr.type_name or 'the pointer type'} needs {ptr.target_size} bytes but only "
                        f"{room} remain in the chunk")
    for f in s.findings:
        if f.chunk and f.chunk.get("start") == start:
            d["findings"].append(f.to_json())
            warn.append(f"heap-check: {f.kind}: {f.message}")
    return d


def _render_info(d: Dict[str, Any]) -> str:
    head = f"{d['expression'] or _hex(d['address'])} = {_hex(d['address'])}"
    if d["state"] in ("not-heap", "unknown"):
        lines = [f"{head}: {d['state']}"]
    else:
        thread = f" (LWP {d['tid']})" if d["thread"] is not None else ""
        rows = [["state", d["state"] + (f" in {d['bin']}" if d["bin"] else "") + thread],
                ["chunk", f"{_hex(d['chunk_start'])} (chunk size {d['chunk_size']:#x})"],
                ["user region", f"{_hex(d['user_start'])} .. {_hex(d['user_start'] + d['size'])} "
                                f"({d['size']} usable bytes)"],
                ["offset", str(d["offset"])],
                ["arena", d["arena"] or "-"]]
        if d["recency"] is not None:
            rows.append(["recency", f"{d['recency']} (0 = freed last, reused first)"])
        tc = d["type_check"]
        if tc:
            rows.append(["type check", f"{tc['type']}: needs {tc['type_size']} B, {tc['room']} B available — "
                                       + ("fits" if tc["fits"] else "TOO SMALL")])
        lines = [head] + ["  " + l for l in table(rows, ["", ""]).splitlines()[2:]]
    for w in d["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines) + "\n"


# --- heap-stats ---------------------------------------------------------------------------------
HEAP_STATS_USAGE = "heap-stats [--json PATH]"


def parse_heap_stats(argstr: str) -> Args:
    return parse_args(argstr, False, False, HEAP_STATS_USAGE)


def parse_info_alloc(argstr: str) -> Args:
    return parse_args(argstr, True, False, INFO_ALLOC_USAGE)


def run_heap_stats(target: Target, args: Args, cache_key=None) -> Result:
    snaps, _ = snapshots(target, cache_key)
    stats = [heap_stats(s) for s in snaps]
    payload = {"target": target.describe(), "heaps": stats}
    return _finish("heap-stats", args, snaps, payload, "".join(_render_stats(s) for s in stats), target=target)


def _agg(mask, sizes) -> Dict[str, int]:
    return {"count": int(mask.sum()), "bytes": int(sizes[mask].sum())}


def heap_stats(s: HeapSnapshot) -> Dict[str, Any]:
    idx = s.index
    size = idx.size.astype(np.int64)
    st = idx.state
    arenas = []
    for a in s.arenas:
        m = idx.arena == a.number
        free_m = m & (st == FREE)
        free_b = int(size[free_m].sum())
        largest = int(size[free_m].max()) if free_m.any() else 0
        arenas.append({"arena": a.name, "address": a.address, "system_mem": a.system_mem,
                       "heaps": len(a.segments), "chunks": int(m.sum()),
                       "allocated": _agg(m & (st == 0), size), "free": _agg(free_m, size),
                       "cached": _agg(m & (st == CACHED), size), "top": a.top_size, "top_chunk": a.top,
                       "last_remainder": a.last_remainder,
                       "largest_free": largest,
                       "fragmentation": round(1 - largest / free_b, 4) if free_b else 0.0,
                       "threads": a.threads})
    mm = st == MMAPPED
    classes = []
    small = size <= int(s.meta.get("small_max", 1040))
    for csz in np.unique(size[small & (st != TOP) & ~mm]):
        m = size == csz
        classes.append(_class_row(f"{int(csz):#x}", m, st, size))
    big = ~small & (st != TOP)
    if big.any():
        lg = np.floor(np.log2(size[big])).astype(np.int64)
        bsz = np.zeros(len(size), dtype=np.int64)
        bsz[big] = lg
        for b in np.unique(lg):
            m = big & (bsz == b)
            classes.append(_class_row(f"{1 << int(b):#x}-{(1 << (int(b) + 1)) - 1:#x}", m, st, size))
    caches = []
    cw = idx.where[(st == CACHED) & (idx.where >= 0)]
    per_list = np.bincount(cw, minlength=len(s.lists)) if len(s.lists) else np.zeros(0, dtype=np.int64)
    for num, addr in sorted(s.thread_cache.items()):
        mine = [int(per_list[l]) for l, fl in enumerate(s.lists) if fl.thread == num]
        t = s.thread(num)
        caches.append({"thread": num, "tid": t.tid if t else None, "address": addr,
                       "bins_used": sum(1 for c in mine if c), "chunks": sum(mine),
                       "arena": s.arena_name(s.thread_arena.get(num))})
    in_use = int(size[st == 0].sum()) + int(size[mm].sum())
    system = sum(a.system_mem for a in s.arenas) + int(size[mm].sum())
    return {"allocator": s.allocator, "version": _version(s), "arenas": arenas,
            "size_classes": classes, "mmapped": _agg(mm, size), "thread_caches": caches,
            "totals": {"system_bytes": system, "in_use_bytes": in_use,
                       "free_bytes": int(size[st == FREE].sum()), "cached_bytes": int(size[st == CACHED].sum()),
                       "top_bytes": int(size[st == TOP].sum()),
                       "chunks": len(idx)}}


def _class_row(label, m, st, size):
    return {"class": label, "allocated": int((m & (st == 0)).sum()), "free": int((m & (st == FREE)).sum()),
            "cached": int((m & (st == CACHED)).sum()), "bytes": int(size[m].sum())}


_SEGMENTS = {"glibc": "heaps", "jemalloc": "extents", "tcmalloc": "spans"}   # what Arena.segments holds


def _render_stats(h: Dict[str, Any]) -> str:
    out = [f"{h['allocator']} {h['version'] or ''} heap statistics"]
    # glibc's arenas have heaps, a top chunk and coalesced free space (so fragmentation means
    # something); slab allocators have extents/spans and per-class free regions instead
    ptmalloc = h["allocator"] == "glibc"
    rows = [[a["arena"], fmt_size(a["system_mem"]), a["heaps"], f"{a['chunks']:,}",
             f"{a['allocated']['count']:,} / {fmt_size(a['allocated']['bytes'])}",
             f"{a['free']['count']:,} / {fmt_size(a['free']['bytes'])}",
             f"{a['cached']['count']:,} / {fmt_size(a['cached']['bytes'])}"]
            + ([fmt_size(a["top"]), f"{a['fragmentation'] * 100:.0f}%"] if ptmalloc else [])
            + [",".join(map(str, a["threads"])) or "-"]
            for a in h["arenas"]]
    out.append(table(rows, ["arena", "system", _SEGMENTS.get(h["allocator"], "segments"), "chunks", "allocated",
                            "free", "cached"] + (["top", "frag"] if ptmalloc else []) + ["threads"]))
    t = h["totals"]
    mm = (f"mmapped: {h['mmapped']['count']} chunk(s), {fmt_size(h['mmapped']['bytes'])}; "
          if ptmalloc or h["mmapped"]["count"] else "")
    out.append(f"{mm}system memory {fmt_size(t['system_bytes'])}, in use {fmt_size(t['in_use_bytes'])}, "
               f"free {fmt_size(t['free_bytes'])}, cached {fmt_size(t['cached_bytes'])}")
    rows = sorted(h["size_classes"], key=lambda c: -c["bytes"])[:20]
    out.append("size classes (top 20 by bytes):")
    out.append(table([[c["class"], c["allocated"], c["free"], c["cached"], fmt_size(c["bytes"])] for c in rows],
                     ["chunk size", "allocated", "free", "cached", "bytes"]))
    if h["thread_caches"]:
        out.append(table([[c["thread"], c["tid"], _hex(c["address"]), c["chunks"], c["arena"]]
                          for c in h["thread_caches"]], ["thread", "LWP", "thread cache", "cached chunks", "arena"]))
    return "\n".join(out) + "\n"


# --- heap-frames --------------------------------------------------------------------------------
HEAP_FRAMES_USAGE = "heap-frames [--json PATH]"


def parse_heap_frames(argstr: str) -> Args:
    return parse_args(argstr, False, False, HEAP_FRAMES_USAGE)


def run_heap_frames(target: Target, args: Args, cache_key=None) -> Result:
    from .checks.program import annotate, locate
    snaps, _ = snapshots(target, cache_key)
    view = program_view(target, snaps, cache_key)
    by_frame: Dict[tuple, List] = {}
    for r in view.refs:
        if r.var.kind != "global":
            by_frame.setdefault((r.var.thread, r.var.frame), []).append(r)
    warn_by_var: Dict[tuple, List[Finding]] = {}
    for f in view.findings:
        v = f.variable or {}
        warn_by_var.setdefault((v.get("thread"), v.get("frame"), v.get("name")), []).append(f)
    threads: List[Dict[str, Any]] = []
    lines: List[str] = []
    cur = None
    for fr in view.frames:
        if cur is None or cur["thread"] != fr.thread:
            cur = {"thread": fr.thread, "tid": fr.tid, "crashed": view.stop.thread == fr.thread
                   and view.stop.signal is not None, "frames": []}
            threads.append(cur)
            mark = f"  <- stopped here by {view.stop.signal}" if cur["crashed"] else ""
            lines.append(f"Thread {fr.thread} (LWP {fr.tid}){mark}")
        loc = f" at {fr.file.rsplit('/', 1)[-1]}:{fr.line}" if fr.file else ""
        lines.append(f"  #{fr.level:<2} {fr.function or '??'}{loc}")
        fj = {"level": fr.level, "function": fr.function, "file": fr.file, "line": fr.line, "pc": fr.pc,
              "variables": []}
        for v in fr.variables:
            if v.optimized_out:
                fj["variables"].append({"name": v.name, "kind": v.kind, "optimized_out": True})
                lines.append(f"      {v.name} = <optimized out>")
        for r in by_frame.get((fr.thread, fr.level), []):
            w = locate(snaps, r.value)
            if r.depth and (w is None or w.state_name in ("allocated", "mmapped")):
                continue                      # one level deep: shown only when something is wrong
            note = annotate(w)
            ws = warn_by_var.get((fr.thread, fr.level, r.path), [])
            fj["variables"].append({"name": r.path, "kind": r.var.kind, "value": r.value, "type": r.slot.type_name,
                                    "state": w.state_name if w else "not-heap", "annotation": note,
                                    "warnings": [f.message for f in ws]})
            lines.append(f"      {r.path} = {r.value:#x} {note}".rstrip())
            for f in ws:
                lines.append(f"        {f.severity}: {f.kind}" + (f" — {f.evidence[0]}" if f.kind == "double-free"
                                                                  and f.evidence else ""))
        cur["frames"].append(fj)
    if not view.frames:
        lines.append("no frames: the program is not stopped, or the debugger gives none")
    payload = {"target": target.describe(), "threads": threads, "findings": [f.to_json() for f in
                                                                               sort_findings(view.findings)],
               "notes": view.notes}
    return _finish("heap-frames", args, snaps, payload, "\n".join(lines) + "\n", target=target)


# --- scripting: one pointer's state, for $heap_state() and friends ------------------------------
def pointer_state(target: Target, address: int, cache_key=None) -> Dict[str, Any]:
    """alloc_info for an address (the heap is walked once per stop)."""
    snaps, _ = snapshots(target, cache_key)
    return alloc_info(snaps, Pointer(address))


def pointer_note(target: Target, address: int, cache_key=None) -> str:
    """'[cached: tcache[6] (0x80) of thread 1, 120 B, freed last]' for heap pointers, else ''."""
    from .checks.program import annotate, locate
    snaps, _ = snapshots(target, cache_key)
    return annotate(locate(snaps, address))


# --- the command table both adapters register from -----------------------------------------------
@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str                         # first line: summary; then usage and details
    parse: Any                        # argstr -> Args (raises UsageError)
    run: Any                          # (target, Args, cache_key) -> Result


COMMANDS = [
    CommandSpec("heap-check", f"""Walk the heap allocator(s) and check every structure for corruption.
Usage: {HEAP_CHECK_USAGE}
Findings (double free, invalid free, use-after-free, size mismatch, metadata corruption) are
printed worst first, the crash itself first when the program stopped in the allocator.
--json PATH writes the report as JSON (- for the console only); --fail-on makes the command
fail when a finding of that severity or worse exists (a batch run then exits non-zero).""",
                parse_heap_check, run_heap_check),
    CommandSpec("heap-stats", f"""Per-arena and per-size-class heap usage, free space, fragmentation, thread caches.
Usage: {HEAP_STATS_USAGE}""", parse_heap_stats, run_heap_stats),
    CommandSpec("heap-frames", f"""Every frame of every thread with each pointer annotated.
Usage: {HEAP_FRAMES_USAGE}
Each pointer argument and local shows the state of what it points to (allocated, free in which
bin, cached in which thread's tcache, how recently freed), with warnings for stale pointers
and objects too small for their type.""", parse_heap_frames, run_heap_frames),
]

from . import tracecmds as _t  # noqa: E402  (it builds on the helpers above)

COMMANDS += [
    CommandSpec("heap-leaks", _t.HEAP_LEAKS_HELP, _t.parse_heap_leaks, _t.run_heap_leaks),
    CommandSpec("heap-trace", _t.HEAP_TRACE_HELP, _t.parse_heap_trace, _t.run_heap_trace),
]

INFO_ALLOC_HELP = f"""Allocation state of the heap chunk an expression points into.
Usage: {INFO_ALLOC_USAGE}
Shows the chunk, its usable size, state (allocated/free/cached/top/mmapped/not-heap), arena,
freelist and position (0 = freed last), the thread whose cache holds it, and whether the
pointer's static type fits in the chunk."""
