"""Tracing benchmark (figures, not a test): heap-leaks on generated heaps of 10^5 and 10^6
chunks in gdb, live, and the DWARF map decode of a large binary, first and cached.

    .venv/bin/python bench/trace_bench.py [--sizes 100000,1000000] [--repeat 2] [--maps-binary PATH]

--maps-binary defaults to libc's separate debug file (libc6-dbg: ~680k DIEs), the largest DWARF
on a stock Debian machine; its first decode takes ~20-30 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "bench", "build")

PROBE = r'''
import json, os, time, resource
def rss():
    d = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            d[line.split(":")[0]] = int(line.split()[1]) / 1024
    return d
out = {}
t = time.perf_counter(); gdb.execute("heap-check", to_string=True); out["heap_check_s"] = time.perf_counter() - t
open("/proc/self/clear_refs", "w").write("5")
before = rss()["VmRSS"]
t = time.perf_counter(); gdb.execute("heap-leaks --json " + os.environ["TB_OUT"], to_string=True)
out["heap_leaks_s"] = time.perf_counter() - t
out["mb_added"] = rss()["VmHWM"] - before
rep = json.load(open(os.environ["TB_OUT"]))
out["edges"] = rep["stats"].get("edges")
out["chunks"] = rep["summary"]["reachable"]["count"] + sum(rep["summary"][k]["count"] for k in ("definitely", "indirectly", "possibly"))
out["lost"] = {k: rep["summary"][k]["count"] for k in ("definitely", "indirectly", "possibly")}
out["notes"] = rep["notes"][:2]
json.dump(out, open(os.environ["TB_RES"], "w"))
'''


def run_gdb(exe, n, tmp):
    probe = os.path.join(tmp, "probe.py")
    open(probe, "w").write(PROBE)
    env = dict(os.environ, TB_OUT=os.path.join(tmp, "leaks.json"), TB_RES=os.path.join(tmp, "res.json"))
    subprocess.run(["gdb", "-nx", "-q", "-batch", "-iex", "set debuginfod enabled off",
                    "-x", os.path.join(ROOT, "gdb_plugin", "gdbinit.py"), "-ex", "break heaplens_checkpoint",
                    "-ex", f"run {n} 4", "-ex", f"source {probe}", "-ex", "kill", exe],
                   env=env, capture_output=True, text=True, timeout=900, check=False)
    return json.load(open(env["TB_RES"]))


def maps_decode(path):
    code = ("import sys, time; sys.path.insert(0, %r); from common.maps import load_file_maps; "
            "t=time.perf_counter(); fm=load_file_maps(%r, use_cache=%s, cache_dir=%r); "
            "print(time.perf_counter()-t, fm.stats.get('cached'))")
    cache = tempfile.mkdtemp(prefix="heaplens-mapcache-")
    py = os.path.join(ROOT, ".venv", "bin", "python")
    res = []
    for use in (True, True):
        p = subprocess.run([py, "-c", code % (ROOT, path, use, cache)], capture_output=True, text=True, timeout=900)
        res.append(p.stdout.split())
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--maps-binary", default=None)
    ap.add_argument("--no-maps", action="store_true")
    a = ap.parse_args()
    os.makedirs(BUILD, exist_ok=True)
    exe = os.path.join(BUILD, "genheap")
    subprocess.run(["gcc", "-O2", "-g", "-pthread", "-o", exe, os.path.join(ROOT, "bench", "genheap.c")], check=True)
    print(f"# heap-leaks in gdb, live (genheap, 4 threads); {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print("| N | chunks | heap-check s | heap-leaks s (min / median) | edges | edges/s | MB added | lost d/i/p |")
    print("|---:|---:|---:|---|---:|---:|---:|---|")
    for n in map(int, a.sizes.split(",")):
        runs = []
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(run_gdb(exe, n, tmp))
        ls = [r["heap_leaks_s"] for r in runs]
        r = runs[0]
        print(f"| {n:,} | {r['chunks']:,} | {statistics.median(x['heap_check_s'] for x in runs):.2f} | "
              f"{min(ls):.2f} / {statistics.median(ls):.2f} | {r['edges']:,} | {r['edges'] / min(ls):,.0f} | "
              f"{max(x['mb_added'] for x in runs):.0f} | {r['lost']['definitely']}/{r['lost']['indirectly']}/"
              f"{r['lost']['possibly']} |")
    if not a.no_maps:
        path = a.maps_binary
        if path is None:
            sys.path.insert(0, ROOT)
            from common.elfinfo import elf_info
            from common.objfiles import debug_file_for
            path = debug_file_for(elf_info("/lib/x86_64-linux-gnu/libc.so.6").build_id)
        if path:
            (t1, c1), (t2, c2) = maps_decode(path)
            print(f"\nDWARF maps of {path} ({os.path.getsize(path) >> 20} MiB): first decode {float(t1):.1f} s "
                  f"(cached={c1}), cached load {float(t2):.2f} s (cached={c2})")


if __name__ == "__main__":
    main()
