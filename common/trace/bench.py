"""Timing the tracer on a big heap (not a test: figures for the closing note).

Inside gdb, stopped in a program or on its core (roots and types from gdb's debug info):

    gdb -batch -x gdb_plugin/gdbinit.py -ex 'break heaplens_checkpoint' -ex 'run 1000000' \\
        -ex 'python from common.trace.bench import main; main()' tests/programs/build/trace_bench

Without a debugger, on a core (roots: the executable's symbol-table data objects, every word
a `void *`: the precise engine then has nothing typed to follow, so this times the conservative
fallback and the leak analysis):

    .venv/bin/python -m common.trace.bench CORE EXE

Prints one JSON object: seconds per phase, edges, edges per second, peak memory added.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time


def _rss():
    """(current RSS, peak RSS) in MiB, from /proc/self/status."""
    cur = peak = 0.0
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cur, peak


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(target, snaps=None, roots=None, resolve=None, why_addresses=(), conservative_too=True) -> dict:
    from ..memcache import CachedReader
    from . import build_graph, leaks, target_roots, why
    out = {}
    _reset_peak()
    base, _ = _rss()
    t = time.perf_counter()
    if snaps is None:
        from ..session import snapshots
        snaps = snapshots(target)[0]
    out["walk_seconds"] = round(time.perf_counter() - t, 3)
    out["chunks"] = sum(len(s.index) for s in snaps)
    t = time.perf_counter()
    rs = roots if roots is not None else target_roots(target, snaps)
    out["roots_seconds"] = round(time.perf_counter() - t, 3)
    resolve = resolve or target.type_layout
    t = time.perf_counter()
    g = build_graph(snaps, rs.variables, resolve, CachedReader(target), extra_roots=rs.extra)
    out["precise_build_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    rep = leaks(g)
    out["precise_leaks_seconds"] = round(time.perf_counter() - t, 3)
    out["precise_edges"] = g.n_edges
    out["precise_edges_per_second"] = int(g.n_edges / max(out["precise_build_seconds"], 1e-9))
    out["precise_summary"] = rep["summary"]
    out["precise_stats"] = g.stats
    for a in why_addresses:
        t = time.perf_counter()
        w = why(g, a)
        out.setdefault("why", []).append({"seconds": round(time.perf_counter() - t, 3),
                                          "steps": len(w["chains"][0]["steps"]) if w.get("chains") else 0})
    _, peak = _rss()
    out["peak_added_mib_precise"] = round(peak - base, 1)
    del g, rep
    if conservative_too:
        _reset_peak()
        base, _ = _rss()
        t = time.perf_counter()
        gc = build_graph(snaps, rs.variables, resolve, CachedReader(target), conservative=True,
                         extra_roots=rs.extra)
        out["conservative_build_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        rc = leaks(gc)
        out["conservative_leaks_seconds"] = round(time.perf_counter() - t, 3)
        out["conservative_edges"] = gc.n_edges
        out["conservative_edges_per_second"] = int(gc.n_edges / max(out["conservative_build_seconds"], 1e-9))
        out["conservative_summary"] = rc["summary"]
        _, peak = _rss()
        out["peak_added_mib_conservative"] = round(peak - base, 1)
    out["ru_maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main():
    """Inside gdb: measure the program gdb is stopped in (or its core)."""
    from gdb_plugin.api import target
    t = target()
    res = measure(t)
    path = os.environ.get("HL_BENCH_OUT")
    text = json.dumps(res, indent=1, default=str)
    if path:
        with open(path, "w") as f:
            f.write(text)
    print(text)


def _core_main(argv):
    from ..coretarget import CoreTarget
    from ..elfinfo import elf_info
    from ..target import PtrSlot, TypeLayout, Variable
    from .roots import target_roots
    core, exe = argv[0], argv[1]
    t = CoreTarget(core)
    objs = [o for o in t.objfiles() if os.path.realpath(o.path) == os.path.realpath(exe)]
    base = objs[0].base if objs else 0
    variables = []
    info = elf_info(exe)
    for name, value, size in (info.data_objects() if info else []):
        slots = tuple(PtrSlot(f"+{o}", o, "void *", None, None) for o in range(0, size - 7, 8))
        variables.append(Variable(name, "global", TypeLayout(name, size, slots), address=value + base))
    from ..session import snapshots
    w = time.perf_counter()
    snaps = snapshots(t)[0]
    w = time.perf_counter() - w
    rs = target_roots(t, snaps, frames=[], globals_=variables)
    res = measure(t, snaps, rs, resolve=lambda name: None)
    res["walk_seconds"] = round(w, 3)
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    _core_main(sys.argv[1:])
