"""Sourced by gdb (from bench/run_bench.py) once the program is stopped or the core is loaded.

Times `heap-check` twice (cold walk, then the cached second call), records gdb's memory around
each call, reads glibc's count of mmapped chunks (mp_.n_mmaps, when gdb has libc's debug info),
optionally saves a core with gcore, and writes everything to $HLB_OUT/result.json.

Environment:
  HLB_OUT      directory for result.json and the heap-check JSON reports (required)
  HLB_GCORE    if set: also `gcore` the live process to this path, timed
  HLB_PROFILE  if set: run the cold heap-check under cProfile, stats written to this path
"""
import json
import os
import resource
import time

import gdb

OUT = os.environ["HLB_OUT"]


def status_kb():
    """VmRSS and VmHWM of this gdb process, in KiB."""
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k] = int(v.split()[0])
    return d


def reset_hwm():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so VmHWM afterwards is the peak *during*
    the command and not an older peak of gdb's own (symbol loading, `run`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(label, profile=None):
    path = os.path.join(OUT, f"{label}.json")
    if os.path.exists(path):
        os.unlink(path)
    hwm_reset = reset_hwm()
    before = status_kb()
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = cpu_seconds()
    err = None
    text = ""
    t0 = time.perf_counter()
    try:
        if profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
            try:
                text = gdb.execute(f"heap-check --json {path}", to_string=True)
            finally:
                prof.disable()
                prof.dump_stats(profile)
        else:
            text = gdb.execute(f"heap-check --json {path}", to_string=True)
    except gdb.error as e:
        err = str(e)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    after = status_kb()
    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rec = {"seconds": seconds, "cpu_seconds": cpu, "error": err, "text": text[-4000:],
           "json": path if os.path.exists(path) else None, "hwm_reset": hwm_reset,
           "rss_before_kb": before.get("VmRSS"), "hwm_before_kb": before.get("VmHWM"),
           "rss_after_kb": after.get("VmRSS"), "hwm_after_kb": after.get("VmHWM"),
           "maxrss_before_kb": maxrss0, "maxrss_after_kb": maxrss1,
           "loadavg": open("/proc/loadavg").read().split()[:3]}
    return rec


def main():
    res = {"target": gdb.execute("info target", to_string=True)[-2000:]}
    prof = os.environ.get("HLB_PROFILE") or None
    res["cold"] = measure("cold", prof)
    res["cached"] = measure("cached")
    try:                                    # glibc's own count, for the mmapped-chunk check
        res["gdb_n_mmaps"] = int(gdb.parse_and_eval("mp_.n_mmaps"))
    except gdb.error:                       # no libc debug info
        res["gdb_n_mmaps"] = None
    core = os.environ.get("HLB_GCORE")
    if core:
        t0 = time.perf_counter()
        try:
            gdb.execute(f"gcore {core}", to_string=True)
            res["gcore_error"] = None
        except gdb.error as e:
            res["gcore_error"] = str(e)
        res["gcore_seconds"] = time.perf_counter() - t0
    with open(os.path.join(OUT, "result.json"), "w") as f:
        json.dump(res, f, indent=1)


try:
    main()
except Exception as e:                      # any failure here must reach run_bench.py
    import traceback
    with open(os.path.join(OUT, "result.json"), "w") as f:
        json.dump({"script_error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}, f)
    raise
