"""The tracing commands: heap-leaks, heap-trace, heap-why (what they compute and print).

They share one pointer graph per stop (common.session.graph): roots from the program's
variables and registers, typed edges from the debug-info maps, a labelled conservative
fallback where types run out. See common/trace/ for the model.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

from .commands import Args, Pointer, Result, _finish, parse_args
from .report import fmt_size, table
from .session import graph, snapshots
from .target import Target

HEAP_LEAKS_USAGE = "heap-leaks [--conservative] [--json PATH]"
HEAP_TRACE_USAGE = "heap-trace [--json PATH] [--dot PATH] [--around ADDRESS|ROOT] [--depth N]"
HEAP_WHY_USAGE = "heap-why EXPR [--json PATH]"

_CATS = (("definitely_lost", "definitely lost"), ("indirectly_lost", "indirectly lost"),
         ("possibly_lost", "possibly lost"))


def parse_heap_leaks(argstr: str) -> Args:
    return parse_args(argstr, False, False, HEAP_LEAKS_USAGE, extra=("conservative",))


def parse_heap_trace(argstr: str) -> Args:
    return parse_args(argstr, False, False, HEAP_TRACE_USAGE, extra=("dot", "around", "depth"))


def parse_heap_why(argstr: str) -> Args:
    return parse_args(argstr, True, False, HEAP_WHY_USAGE)


def _graphs(target: Target, key, conservative: bool):
    snaps, _ = snapshots(target, key)
    g, rs = graph(target, snaps, key)
    gc = graph(target, snaps, key, conservative=True)[0] if conservative else None
    return snaps, g, rs, gc


# --- heap-leaks ---------------------------------------------------------------------------------
def run_heap_leaks(target: Target, args: Args, cache_key=None) -> Result:
    from .trace import leaks, stale_findings
    t0 = time.perf_counter()
    cons = bool(args.options.get("conservative"))
    snaps, g, rs, gc = _graphs(target, cache_key, cons)
    rep = leaks(g, baseline=gc)
    if gc is not None:
        rep["conservative_report"] = leaks(gc, baseline=g)
    stale = [f.to_json() for f in stale_findings(g)]
    rep["findings"] = rep.get("findings", []) + stale
    rep["seconds"] = round(time.perf_counter() - t0, 3)
    payload = {"target": target.describe(), **rep}
    return _finish("heap-leaks", args, snaps, payload, _render_leaks(rep, stale), target=target)


def _render_leaks(rep: Dict[str, Any], stale: List[dict]) -> str:
    out = []
    st, roots = rep.get("stats", {}), rep.get("roots", {})
    opt = roots.get("variables_optimized_out", 0)
    mode = rep["mode"] if roots.get("variables_placed", 0) or rep["mode"] != "precise" else \
        "no debug info for any variable: conservative"
    out.append(f"heap-leaks ({mode} trace): {st.get('edges', 0):,} edges from "
               f"{roots.get('variables_placed', 0)} root variables"
               + (f" ({opt} optimized out: their frames are scanned conservatively, labelled)" if opt else "")
               + f", {roots.get('conservative_roots', 0)} conservatively scanned regions  [{rep['seconds']:.2f} s]")
    sm = rep["summary"]
    rows = [[label, f"{sm[key.split('_')[0]]['count']:,}", fmt_size(sm[key.split('_')[0]]['bytes'])]
            for key, label in _CATS]
    rows.append(["reachable", f"{sm['reachable']['count']:,}", fmt_size(sm['reachable']['bytes'])])
    if "reachable_conservatively_only" in sm:
        c = sm["reachable_conservatively_only"]
        rows.append(["(of which reachable only via conservatively scanned memory)", f"{c['count']:,}",
                     fmt_size(c["bytes"])])
    out.append(table(rows, ["", "chunks", "bytes"]))
    for key, label in _CATS:
        items = rep.get(key) or []
        if not items:
            continue
        out.append(f"{label} (largest first):")
        rows = []
        for e in items[:20]:
            extra = ""
            if e.get("indirect") and e["indirect"]["count"]:
                extra = f"+{e['indirect']['count']} chunks / {fmt_size(e['indirect']['bytes'])} lost with it"
            elif e.get("interior"):
                extra = "only interior pointers: " + "; ".join(str(x.get("from", x)) if isinstance(x, dict) else str(x)
                                                               for x in e["interior"][:2])
            other = e.get("conservative")
            if other:
                extra += f" (a conservative scan says: {other})"
            rows.append([f"{e['address']:#x}", e["size"], e.get("type") or "?", extra])
        out.append(table(rows, ["address", "size", "type", ""]))
        if len(items) > 20:
            out.append(f"  ... {len(items) - 20} more in the JSON report")
    if rep.get("by_type"):
        out.append("by type:")
        rows = [[t.get("type") or "?", t.get("category"), t.get("count"), fmt_size(t.get("bytes"))]
                for t in rep["by_type"][:15]]
        out.append(table(rows, ["type", "category", "chunks", "bytes"]))
    if stale:
        out.append("stale pointers found while tracing:")
        for f in stale[:10]:
            out.append(f"  {f['severity']}: {f['message']}")
    for n in rep.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out) + "\n"


# --- heap-trace ---------------------------------------------------------------------------------
def run_heap_trace(target: Target, args: Args, cache_key=None) -> Result:
    from .trace import to_dot, to_json
    snaps, g, rs, _ = _graphs(target, cache_key, False)
    around = args.options.get("around")
    if around is not None:
        try:
            around = int(around, 0)
        except ValueError:
            pass                                  # a root's name
    depth = args.options.get("depth")
    data = to_json(g, around=around, depth=depth)
    payload = {"target": target.describe(), "graph": data}
    text = (f"pointer graph: {len(data.get('nodes', [])):,} nodes, {len(data.get('edges', [])):,} edges"
            + (f" around {args.options.get('around')} (depth {depth})" if around is not None else "") + "\n")
    res = _finish("heap-trace", args, snaps, payload, text, target=target)
    dot = args.options.get("dot")
    if dot:
        try:
            with open(dot, "w") as f:
                f.write(to_dot(g, around=around, depth=depth))
            res.text += f"Graphviz DOT written to {dot}\n"
        except OSError as e:
            res.errors.append(f"could not write DOT to {dot}: {e.strerror or e}")
    return res


# --- heap-why -----------------------------------------------------------------------------------
def run_heap_why(target: Target, ptr: Pointer, args: Args, cache_key=None) -> Result:
    from .trace import why
    snaps, g, rs, _ = _graphs(target, cache_key, False)
    w = why(g, ptr.address)
    payload = {"target": target.describe(), "expression": ptr.expr, **w}
    return _finish("heap-why", args, snaps, payload, _render_why(ptr, w), target=target)


def _render_why(ptr: Pointer, w: Dict[str, Any]) -> str:
    head = f"{ptr.expr or hex(ptr.address)} = {ptr.address:#x}"
    if w.get("error"):
        return f"{head}: {w['error']}\n"
    out = [f"{head}: {w.get('type') or 'untyped'} chunk of {w['size']} bytes, {w.get('category')}"]
    chains = w.get("chains") or []
    if not chains:
        out.append("  no chain of pointers from any root reaches it")
    for c in chains:
        how = c.get("how")
        out.append(f"  {c.get('text') or ' -> '.join(c.get('steps', []))}" + (f"   [{how}]" if how and how != "precise"
                                                                                else ""))
    return "\n".join(out) + "\n"


HEAP_LEAKS_HELP = f"""Allocated chunks that no pointer reachable from the program's roots reaches.
Usage: {HEAP_LEAKS_USAGE}
Precise tracing from the compiler's maps: roots are globals, every frame's variables and the
registers; pointers are followed where debug info says they are, with a labelled conservative
scan where it cannot (void *, unions, optimized-out variables). Categories as in valgrind:
definitely lost, indirectly lost (only lost chunks point to it), possibly lost (only interior
pointers). --conservative also runs the guessing approach (any word that looks like a
pointer) and compares the two."""

HEAP_TRACE_HELP = f"""The pointer graph of the snapshot, as JSON and Graphviz DOT.
Usage: {HEAP_TRACE_USAGE}
Nodes are chunks (with inferred type and size) and roots; edges carry field paths and how they
were found (precise, ambiguous, conservative). --around limits it to a neighbourhood."""

HEAP_WHY_HELP = f"""The chain(s) of pointers from a root to the chunk an expression points into.
Usage: {HEAP_WHY_USAGE}
e.g. `heap-why node` -> global g_cache -> entries[3] -> next -> value"""
