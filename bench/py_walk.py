"""Pure-Python baseline, no debugger: CoreTarget(core) + common.allocators.glibc.walk, timed.

Usage: .venv/bin/python bench/py_walk.py CORE   (prints one JSON object)
Run by bench/run_bench.py in its own process, so its memory figures are its own.
"""
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def status_kb():
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k] = int(v.split()[0])
    return d


def main(core):
    import numpy  # noqa: F401  (imported before the "before" figure, as in gdb's plugin load)
    from common.allocators import glibc
    from common.coretarget import CoreTarget
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = status_kb()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    target = CoreTarget(core)
    snap = glibc.walk(target)
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    after = status_kb()
    findings = [{"kind": f.kind, "severity": f.severity, "message": f.message} for f in snap.findings]
    print(json.dumps({
        "chunks": len(snap.index), "states": snap.index.counts(),
        "mmapped_expected": snap.meta.get("mmapped_expected"), "seconds": seconds,
        "cpu_seconds": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "walk_seconds": snap.meta.get("total_seconds"), "findings": findings, "notes": snap.notes,
        "rss_before_kb": before.get("VmRSS"), "hwm_after_kb": after.get("VmHWM"),
        "rss_after_kb": after.get("VmRSS")}))


if __name__ == "__main__":
    main(sys.argv[1])
