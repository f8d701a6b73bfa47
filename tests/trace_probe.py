"""Runs inside gdb (HL_EXTRA="source tests/trace_probe.py" from tests/test_trace.py): drives
common.trace from gdb's debug info until the heap-leaks/heap-why/heap-trace commands exist.

Writes HL_OUT/trace.json: precise and conservative leak reports (each compared with the
other), why() for every address of the truth file's `expect` lines, stale-pointer findings, a
JSON/DOT neighbourhood and timings. HL_TRACE_STACK sets the stack mode (frames/threads/none).
"""
import json
import os
import time
import traceback

out = os.environ["HL_OUT"]
res = {}
try:
    from common.memcache import CachedReader
    from common.session import snapshots
    from common.trace import (build_graph, leaks, stale_findings, target_roots, to_dot, to_json, why)
    from gdb_plugin.api import target

    t = target()
    t0 = time.perf_counter()
    snaps, _ = snapshots(t)
    res["walk_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rs = target_roots(t, snaps, stack=os.environ.get("HL_TRACE_STACK", "frames"))
    rc = target_roots(t, snaps, conservative=True)
    res["roots_seconds"] = time.perf_counter() - t0
    res["roots"] = {"stats": rs.stats, "notes": rs.notes,
                    "extra": [{"label": e.label, "kind": e.kind, "ranges": len(e.ranges), "values": len(e.values)}
                              for e in rs.extra]}
    t0 = time.perf_counter()
    g = build_graph(snaps, rs.variables, t.type_layout, CachedReader(t), extra_roots=rs.extra)
    res["precise_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gc = build_graph(snaps, rc.variables, t.type_layout, CachedReader(t), conservative=True, extra_roots=rc.extra)
    res["conservative_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res["leaks"] = leaks(g, baseline=gc)
    res["leaks_conservative"] = leaks(gc, baseline=g)
    res["leaks_seconds"] = time.perf_counter() - t0
    res["stale"] = [f.to_json() for f in stale_findings(g)]
    whys = {}
    truth = os.environ.get("HL_TRUTH")
    if truth and os.path.exists(truth):
        for line in open(truth):
            f = line.split()
            if f and f[0] == "expect":
                a = int(f[2], 16)
                whys[str(a)] = why(g, a)
    res["why"] = whys
    targets = [int(a) for a, w in whys.items() if w.get("chains")]
    if targets:
        res["json_around"] = to_json(g, around=targets[0], depth=2)
        res["dot_around"] = to_dot(g, around=targets[0], depth=2)
    res["dot"] = to_dot(g)
    res["graph_json_counts"] = to_json(g)["counts"]
except Exception:
    res["error"] = traceback.format_exc()
path = os.path.join(out, "trace.json")
with open(path, "w") as f:
    json.dump(res, f, default=lambda o: int(o) if hasattr(o, "__int__") else str(o))
print(f"TRACE-JSON {path}")
