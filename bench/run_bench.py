#!/usr/bin/env python3
"""heaplens benchmark: `heap-check` on large generated glibc heaps, live and from cores.

Usage (from the checkout):
    .venv/bin/python bench/run_bench.py [--sizes 10000,100000,1000000] [--repeat 3]
                                        [--threads 4] [--out bench/results.md] [--profile]

For every size N, --repeat times, each in fresh gdb processes:
  1. live: gdb runs bench/build/genheap N THREADS to heaplens_checkpoint(); bench/gdb_measure.py
     times `heap-check` twice (cold walk, then the cached call), with gdb's memory around each,
     then gcore's the process;
  2. core: a second gdb on exe + core does the same;
  3. pure Python (no gdb): bench/py_walk.py walks the core with CoreTarget + glibc.walk;
  then the core is deleted.
For the largest size, once more with libc's debug info hidden from gdb (live and core).
Prints a markdown table and writes it, with the machine facts, to --out. Raw figures go to
bench/build/raw-results.json. Exits non-zero if heap-check fails, writes no JSON, or reports a
critical or warning finding on these clean heaps; also (after writing the figures, marked FAILED)
if any heap-check call found a number of mmapped chunks other than genheap made (genheap's truth
file, HEAPLENS_TRUTH) or than glibc counts (mp_.n_mmaps).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.path.join(BENCH, "build")
RUNS = os.path.join(BUILD, "runs")
GDBINIT = os.path.join(ROOT, "gdb_plugin", "gdbinit.py")
MEASURE = os.path.join(BENCH, "gdb_measure.py")
PYWALK = os.path.join(BENCH, "py_walk.py")
EXE = os.path.join(BUILD, "genheap")
TIMEOUT = 1800
BAD_SEVERITIES = ("critical", "warning")

# the project's targets (bench/README.md)
TARGET_N = 1_000_000
TARGET_SECONDS = 1.5
TARGET_MB = 300


MM_NOTE = re.compile(r"found (\d+) mmapped chunks; glibc counts (\d+)")
MISMATCHES = []        # mmapped-chunk count mismatches: reported loudly, the run exits 1


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- build and machine ---------------------------------------------------------------------------
def build() -> None:
    os.makedirs(BUILD, exist_ok=True)
    src = os.path.join(BENCH, "genheap.c")
    cmd = ["gcc", "-O2", "-g", "-pthread", "-o", EXE, src]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"building genheap failed:\n{' '.join(cmd)}\n{p.stderr}")


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gdbv = subprocess.run(["gdb", "--version"], capture_output=True, text=True).stdout.splitlines()
    mem = "?"
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    def git(*args):
        p = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
        return p.stdout.rstrip() if p.returncode == 0 else ""       # keep porcelain's leading blanks
    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [l[3:] for l in git("status", "--porcelain", "--", "common", "gdb_plugin").splitlines() if l[3:]]
    if dirty:
        head += (" + uncommitted changes in " + ", ".join(dirty[:6])
                 + (f" and {len(dirty) - 6} more file(s)" if len(dirty) > 6 else ""))
    return {"commit": head,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "gdb": gdbv[0] if gdbv else "?",
            "kernel": platform.release(), "python": sys.version.split()[0],
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


# --- one gdb run ---------------------------------------------------------------------------------
def gdb_cmd(nodebug: bool) -> list:
    cmd = ["gdb", "-nx", "-q", "-batch", "-iex", "set debuginfod enabled off"]
    if nodebug:
        cmd += ["-iex", "set debug-file-directory /nonexistent"]
    return cmd + ["-iex", "set pagination off", "-iex", "set confirm off", "-x", GDBINIT]


def run_gdb(tag: str, cmd: list, env_extra: dict) -> dict:
    out = os.path.join(RUNS, tag)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = dict(os.environ, HLB_OUT=out, **env_extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    wall = time.perf_counter() - t0
    text = p.stdout + p.stderr
    with open(os.path.join(out, "gdb-output.txt"), "w") as f:
        f.write(" ".join(cmd) + "\n\n" + text)
    try:
        res = json.load(open(os.path.join(out, "result.json")))
    except (OSError, ValueError):
        raise BenchError(f"{tag}: the gdb measuring script did not run (exit {p.returncode}):\n{text[-3000:]}")
    if res.get("script_error"):
        raise BenchError(f"{tag}: the gdb measuring script failed: {res['traceback']}")
    if "Traceback" in text:
        raise BenchError(f"{tag}: Python traceback in gdb's output:\n{text[-3000:]}")
    res["gdb_wall_seconds"] = wall
    res["gdb_exit"] = p.returncode
    m = re.search(r"genheap: (\d+) threads, (\d+) chunks: (\d+) live \+ (\d+) extra live .*?, (\d+) freed", text)
    if m:
        res["genheap"] = {"live": int(m.group(3)), "extra": int(m.group(4)), "freed": int(m.group(5))}
    for call in ("cold", "cached"):
        validate(f"{tag} {call}", res[call])
    return res


def check_gdb_run(tag: str, res: dict, truth: dict) -> None:
    for call in ("cold", "cached"):
        check_mmapped(f"{tag} {call}", res[call], truth.get("mmapped", 0), res.get("gdb_n_mmaps"))


def validate(what: str, rec: dict) -> None:
    """Load the heap-check JSON into rec; fail on a missing report or an error finding."""
    if rec.get("error"):
        raise BenchError(f"{what}: heap-check failed: {rec['error']}\n{rec.get('text', '')}")
    path = rec.get("json")
    if not path or not os.path.exists(path):
        raise BenchError(f"{what}: heap-check wrote no JSON report\n{rec.get('text', '')}")
    try:
        rep = json.load(open(path))
        summ = rep["summary"][0]
        rec["chunks"] = int(summ["chunks"])
        rec["walk_seconds"] = summ.get("walk_seconds")
        rec["states"] = summ.get("states")
        rec["layout"] = summ.get("layout")
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise BenchError(f"{what}: heap-check JSON {path} is unusable: {type(e).__name__}: {e}")
    bad = [f for f in rep.get("findings", []) if f.get("severity") in BAD_SEVERITIES]
    if bad:
        lines = "\n".join(f"  {f['severity']} {f['kind']}: {f['message']}" for f in bad[:10])
        raise BenchError(f"{what}: heap-check reports {len(bad)} error finding(s) on a clean heap:\n{lines}")
    if rec["chunks"] <= 0:
        raise BenchError(f"{what}: heap-check walked no chunks")
    rec["info_findings"] = len(rep.get("findings", []))
    rec["notes"] = rep.get("notes", [])
    rec["mmapped"] = (rec["states"] or {}).get("mmapped")
    rec["mmapped_glibc"] = mmapped_glibc(rec, "mp_" in (summ.get("found_by") or {}))


def mmapped_glibc(rec: dict, mp_known: bool):
    """glibc's count of mmapped chunks (mp_.n_mmaps) as heap-check saw it: stated in its note
    "found N mmapped chunks; glibc counts M" when the two differ, else equal to the chunks found
    (None when heap-check did not find mp_)."""
    for nt in rec.get("notes", []):
        m = MM_NOTE.search(nt)
        if m:
            return int(m.group(2))
    return rec.get("mmapped") if mp_known else None


def read_truth(path: str) -> dict:
    """Count the lines of genheap's truth file by kind (live/freed/mmapped/thread), then delete it
    (~30 MB at 10^6 chunks)."""
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                k = line.split(" ", 1)[0]
                counts[k] = counts.get(k, 0) + 1
    except OSError as e:
        raise BenchError(f"genheap wrote no truth file {path}: {e}")
    os.unlink(path)
    return counts


def check_mmapped(what: str, rec: dict, truth: int, gdb_count=None) -> None:
    """The mmapped chunks heap-check found must be exactly those genheap made (its truth file), and
    glibc's own count (mp_.n_mmaps, from heap-check's note and, in gdb with debug info, read by gdb)
    must agree. A mismatch is logged at once and fails the run at the end."""
    found, glibc = rec.get("mmapped"), rec.get("mmapped_glibc")
    rec["mmapped_truth"] = truth
    bad = []
    if found != truth:
        bad.append(f"heap-check found {found} mmapped chunks, genheap made {truth}")
    if glibc is not None and glibc != found:
        bad.append(f"heap-check found {found} mmapped chunks, glibc counts {glibc} (mp_.n_mmaps)")
    if gdb_count is not None and gdb_count != truth:
        bad.append(f"gdb reads mp_.n_mmaps = {gdb_count}, genheap made {truth} mmapped chunks")
    for b in bad:
        msg = f"{what}: {b}"
        MISMATCHES.append(msg)
        log(f"    !!! MMAPPED MISMATCH: {msg}")


def run_live(n: int, threads: int, tag: str, core: str, nodebug=False, profile=None) -> dict:
    truth = os.path.join(RUNS, tag, "truth.txt")
    env = {"HLB_GCORE": core, "HEAPLENS_TRUTH": truth}
    if profile:
        env["HLB_PROFILE"] = profile
    cmd = gdb_cmd(nodebug) + ["-ex", "break heaplens_checkpoint", "-ex", f"run {n} {threads}",
                              "-ex", f"source {MEASURE}", "-ex", "kill", "--args", EXE]
    res = run_gdb(tag, cmd, env)
    if res.get("gcore_error") or not os.path.exists(core):
        raise BenchError(f"{tag}: gcore failed: {res.get('gcore_error')}")
    res["core_bytes"] = os.path.getsize(core)
    res["truth"] = read_truth(truth)
    check_gdb_run(tag, res, res["truth"])
    return res


def run_core(tag: str, core: str, truth: dict, nodebug=False, profile=None) -> dict:
    env = {"HLB_PROFILE": profile} if profile else {}
    cmd = gdb_cmd(nodebug) + ["-ex", f"source {MEASURE}", EXE, core]
    res = run_gdb(tag, cmd, env)
    check_gdb_run(tag, res, truth)
    return res


def run_py(tag: str, core: str, truth: dict) -> dict:
    py = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(py):
        py = sys.executable
    p = subprocess.run([py, PYWALK, core], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    if p.returncode != 0:
        raise BenchError(f"{tag}: pure-Python walk failed:\n{p.stderr[-3000:]}")
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    bad = [f for f in rec["findings"] if f["severity"] in BAD_SEVERITIES]
    if bad:
        raise BenchError(f"{tag}: pure-Python walk reports error finding(s): {bad[:5]}")
    rec["mmapped"] = rec["states"].get("mmapped")
    rec["mmapped_glibc"] = rec.get("mmapped_expected")
    check_mmapped(tag, rec, truth.get("mmapped", 0))
    return rec


# --- statistics and table ------------------------------------------------------------------------
def mb(kb) -> float:
    return kb / 1024.0


def added_mb(rec: dict) -> float:
    """Memory the command added to the process: peak RSS during it minus RSS before it."""
    return mb(rec["hwm_after_kb"] - rec["rss_before_kb"])


def kept_mb(rec: dict) -> float:
    return mb(rec["rss_after_kb"] - rec["rss_before_kb"])


def row(n: int, label: str, recs: list, core_bytes=None) -> dict:
    secs = [r["seconds"] for r in recs]
    chunks = sorted({r["chunks"] for r in recs})
    return {"n": n, "label": label, "runs": len(recs), "chunks": chunks,
            "min": min(secs), "median": statistics.median(secs), "max": max(secs),
            "cpu": statistics.median(r["cpu_seconds"] for r in recs),
            "walk": statistics.median(r["walk_seconds"] for r in recs if r.get("walk_seconds") is not None)
            if any(r.get("walk_seconds") is not None for r in recs) else None,
            "added": statistics.median(added_mb(r) for r in recs),
            "added_max": max(added_mb(r) for r in recs),
            "kept": statistics.median(kept_mb(r) for r in recs),
            "core_mb": (statistics.median(core_bytes) / 1048576.0) if core_bytes else None}


def fmt_row(r: dict) -> str:
    ch = "/".join(f"{c:,}" for c in r["chunks"])
    rate = f"{r['chunks'][0] / r['min'] / 1e6:.2f} M" if "cached" not in r["label"] and r["min"] > 0 else "-"
    walk = f"{r['walk']:.3f}" if r["walk"] is not None and "cached" not in r["label"] else "-"
    core = f"{r['core_mb']:.0f}" if r["core_mb"] is not None else "-"
    return (f"| {r['n']:,} | {r['label']} | {r['runs']} | {ch} | {r['min']:.3f} | {r['median']:.3f} | "
            f"{r['max']:.3f} | {r['cpu']:.3f} | {walk} | {rate} | {r['added']:.0f} "
            f"(max {r['added_max']:.0f}) | {r['kept']:.0f} | {core} |")


HEADER = ("| N | measurement | runs | chunks | s min | s median | s max | CPU s (median) | walk s (median) "
          "| chunks/s (at min) | MB added to RSS, median (max) | MB kept | core MB |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def build_rows(results: dict) -> list:
    rows = []
    for n, d in results["sizes"].items():
        n = int(n)
        core_bytes = [r["core_bytes"] for r in d["live"]]
        rows.append(row(n, "live, cold", [r["cold"] for r in d["live"]]))
        rows.append(row(n, "live, cached 2nd call", [r["cached"] for r in d["live"]]))
        rows.append(row(n, "core, cold", [r["cold"] for r in d["core"]], core_bytes))
        rows.append(row(n, "core, cached 2nd call", [r["cached"] for r in d["core"]], core_bytes))
        if d.get("py"):
            rows.append(row(n, "pure Python on the core (no gdb)", d["py"], core_bytes))
        nd = d.get("nodebug")
        if nd:
            rows.append(row(n, "live, cold, no libc debug info", [nd["live"]["cold"]]))
            rows.append(row(n, "core, cold, no libc debug info", [nd["core"]["cold"]],
                            [nd["live"]["core_bytes"]]))
    return rows


def targets(rows: list) -> list:
    out = []
    for r in rows:
        if r["n"] != TARGET_N or r["label"] not in ("live, cold", "core, cold"):
            continue
        ok_t = r["median"] <= TARGET_SECONDS
        ok_m = r["added_max"] <= TARGET_MB
        out.append(f"- {r['label']} at 10^6: median {r['median']:.2f} s (min {r['min']:.2f} s) vs "
                   f"≤ {TARGET_SECONDS} s: **{'met' if ok_t else 'NOT met'}**; "
                   f"{r['added_max']:.0f} MB added (worst run) vs ≤ {TARGET_MB} MB: "
                   f"**{'met' if ok_m else 'NOT met'}**")
    return out


def mmapped_records(d: dict) -> list:
    """(label, record, gdb's mp_.n_mmaps or None) of every heap-check call made at one size."""
    out = []
    for r in d["live"]:
        out += [("live", r["cold"], r.get("gdb_n_mmaps")), ("live", r["cached"], r.get("gdb_n_mmaps"))]
    for r in d["core"]:
        out += [("core", r["cold"], r.get("gdb_n_mmaps")), ("core", r["cached"], r.get("gdb_n_mmaps"))]
    out += [("pure Python", r, None) for r in d.get("py", [])]
    nd = d.get("nodebug")
    if nd:
        for k in ("live", "core"):
            out += [(f"{k}, no libc debug info", nd[k][c], nd[k].get("gdb_n_mmaps")) for c in ("cold", "cached")]
    return out


def mmapped_lines(results: dict) -> list:
    lines = []
    for n, d in results["sizes"].items():
        recs = mmapped_records(d)
        if not recs:
            continue
        truth = sorted({r.get("mmapped_truth") for _, r, _ in recs} - {None})
        by = {}
        for label, r, _ in recs:
            by.setdefault(label, set()).add(r.get("mmapped"))
        glibc = sorted({r.get("mmapped_glibc") for _, r, _ in recs} - {None})
        gdbc = sorted({g for _, _, g in recs} - {None})
        found = "; ".join(f"{k} {'/'.join(map(str, sorted(v, key=str)))}" for k, v in by.items())
        lines.append(f"- N={int(n):,}: genheap made {'/'.join(map(str, truth))} mmapped chunks (truth file); "
                     f"glibc counts {'/'.join(map(str, glibc)) or '?'} (mp_.n_mmaps as heap-check read it), "
                     f"{'/'.join(map(str, gdbc)) or '?'} (as gdb reads it); heap-check found: {found} "
                     f"({len(recs)} calls)")
    return lines


def render(results: dict, rows: list) -> str:
    m = results["machine"]
    lines = ["# heaplens benchmark results", "",
             f"- date: {m['date']}; heaplens commit {m['commit']}",
             f"- machine: {m['nproc']} CPU(s), {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}",
             f"- {m['gdb']}; heaplens in gdb's embedded Python; pure-Python row with {m['python']}",
             f"- genheap: {results['threads']} threads; each measurement repeated {results['repeat']} times "
             f"in separate gdb processes (the rows without libc debug info: once)",
             f"- load average (1/5/15 min) at start {' '.join(m['loadavg_start'])}, "
             f"at end {' '.join(results['loadavg_end'])}",
             f"- total benchmark wall time {results['wall_seconds']:.0f} s", ""]
    mism = results.get("mmapped_mismatches") or []
    if mism:
        lines += ["**FAILED: mmapped chunk counts disagree (heap-check against genheap's truth file or "
                  f"glibc's mp_.n_mmaps; {len(mism)} mismatch(es)):**", ""] + [f"- {m}" for m in mism] + [""]
    else:
        lines += ["mmapped chunks: every heap-check call found exactly the mmapped chunks genheap made "
                  "(its truth file), and glibc's count (mp_.n_mmaps) agrees. **Check passed.**", ""]
    lines += [HEADER]
    lines += [fmt_row(r) for r in rows]
    lines += ["",
              "Columns: *s* is the wall time of the `heap-check --json PATH` command as gdb runs it "
              "(target set-up, allocator walk, checks, text and JSON report); *CPU s* is gdb's user+system "
              "CPU time over the same call (it can exceed the wall time: reads are prefetched on a worker "
              "thread); *walk s* is heaplens' own timer for the walk and checks (`summary[0].walk_seconds`; "
              "for the pure-Python row, *s* minus *walk s* is CoreTarget set-up and locating glibc's roots, "
              "i.e. reading libc's debug-file symbol table with pyelftools); "
              "*chunks/s* uses the fastest run; *MB added* is VmHWM after the call minus VmRSS before it "
              "(VmHWM reset through /proc/self/clear_refs just before the call, so it is the peak during "
              "the call); *MB kept* is VmRSS after minus before (the cached snapshot lives on); "
              "*core MB* is the gcore file size.", ""]
    t = targets(rows)
    if t:
        lines += ["Project targets (10^6 chunks: ≤ 1.5 s live and core, ≤ 300 MB added to gdb):", ""] + t + [""]
    extra = []
    for n, d in results["sizes"].items():
        g = [r["gcore_seconds"] for r in d["live"]]
        gw = [r["gdb_wall_seconds"] for r in d["core"]]
        extra.append(f"- N={int(n):,}: gcore took {min(g):.1f}-{max(g):.1f} s; whole core gdb session "
                     f"(start, load, two heap-checks, exit) {min(gw):.1f}-{max(gw):.1f} s")
        notes = sorted({nt for r in d["live"] + d["core"] for nt in r["cold"].get("notes", [])})
        for nt in notes:
            extra.append(f"  - heap-check note: {nt}")
        gh = d["live"][0].get("genheap")
        if gh:
            extra.append(f"  - genheap made {gh['live']:,} live + {gh['extra']} extra live + "
                         f"{gh['freed']:,} freed chunks; heap-check states (live, cold): "
                         f"{d['live'][0]['cold'].get('states')}")
    spread = [(r["max"] / r["min"], r) for r in rows if r["runs"] > 1 and "cached" not in r["label"] and r["min"] > 0]
    if spread:
        worst, r = max(spread, key=lambda x: x[0])
        extra.insert(0, f"- noise: the widest spread of a cold measurement is max/min = {worst:.2f} "
                        f"(N={r['n']:,}, {r['label']}: {r['min']:.3f}-{r['max']:.3f} s); the median is the "
                        f"figure to compare, the max shows interference from other load")
    lines += ["Other figures:", ""] + extra + [""]
    lines += ["mmapped chunks per size (heap-check calls: live and core cold + cached, pure Python, "
              "and the runs without libc debug info):", ""] + mmapped_lines(results) + [""]
    if results.get("profiles"):
        lines += ["Profiles (cProfile of the cold `heap-check` at the largest size, top entries by "
                  "internal time; profiling slows the run):", ""]
        for name, text in results["profiles"].items():
            lines += [f"{name}:", "", "```", text.rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def profile_text(path: str, top: int = 25) -> str:
    import io
    import pstats
    buf = io.StringIO()
    st = pstats.Stats(path, stream=buf)
    st.strip_dirs().sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    # keep the header line with the totals and the table
    keep = [l for l in text.splitlines() if l.strip() and not l.startswith(("Ordered by", "   List reduced"))]
    return "\n".join(keep)


# --- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    ap.add_argument("--no-nodebug", action="store_true", help="skip the run without libc debug info")
    ap.add_argument("--profile", action="store_true",
                    help="also profile the cold heap-check (live and core) at the largest size")
    a = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip()]
    if not sizes or a.repeat < 1:
        ap.error("need at least one size and --repeat >= 1")

    t_start = time.perf_counter()
    build()
    shutil.rmtree(RUNS, ignore_errors=True)
    os.makedirs(RUNS)
    results = {"machine": machine(), "threads": a.threads, "repeat": a.repeat, "sizes": {}}
    made_cores = []

    def core_path(tag):
        p = os.path.join(BUILD, f"core.{tag}")
        made_cores.append(p)
        return p

    def drop(p):
        if os.path.exists(p):
            os.unlink(p)

    failure = None
    try:
        for n in sizes:
            d = results["sizes"][str(n)] = {"live": [], "core": [], "py": []}
            for k in range(a.repeat):
                tag = f"{n}-{k + 1}"
                core = core_path(tag)
                log(f"[{n:,} #{k + 1}] live gdb ...")
                live = run_live(n, a.threads, f"{tag}-live", core)
                d["live"].append(live)
                log(f"    live cold {live['cold']['seconds']:.3f} s, cached {live['cached']['seconds']:.3f} s, "
                    f"{live['cold']['chunks']:,} chunks, +{added_mb(live['cold']):.0f} MB; "
                    f"core {live['core_bytes'] / 1048576:.0f} MB; core gdb ...")
                c = run_core(f"{tag}-core", core, live["truth"])
                d["core"].append(c)
                log(f"    core cold {c['cold']['seconds']:.3f} s, cached {c['cached']['seconds']:.3f} s, "
                    f"+{added_mb(c['cold']):.0f} MB; pure Python ...")
                py = run_py(f"{tag}-py", core, live["truth"])
                d["py"].append(py)
                log(f"    pure Python {py['seconds']:.3f} s, +{added_mb(py):.0f} MB")
                for what, r in (("core", c["cold"]), ("pure Python", py)):
                    if r["chunks"] != live["cold"]["chunks"]:
                        log(f"    WARNING: {what} walk found {r['chunks']:,} chunks, live {live['cold']['chunks']:,}")
                drop(core)
            if n == max(sizes) and not a.no_nodebug:
                tag = f"{n}-nodebug"
                core = core_path(tag)
                log(f"[{n:,} no libc debug info] live gdb ...")
                live = run_live(n, a.threads, f"{tag}-live", core, nodebug=True)
                log(f"    live cold {live['cold']['seconds']:.3f} s ({live['cold']['layout']}); core gdb ...")
                c = run_core(f"{tag}-core", core, live["truth"], nodebug=True)
                log(f"    core cold {c['cold']['seconds']:.3f} s ({c['cold']['layout']})")
                d["nodebug"] = {"live": live, "core": c}
                drop(core)
            if n == max(sizes) and a.profile:
                tag = f"{n}-profile"
                core = core_path(tag)
                results["profiles"] = {}
                for kind in ("live", "core"):
                    prof = os.path.join(BUILD, f"profile-{kind}.prof")
                    log(f"[{n:,} profile] {kind} gdb ...")
                    if kind == "live":
                        r = live = run_live(n, a.threads, f"{tag}-live", core, profile=prof)
                    else:
                        r = run_core(f"{tag}-core", core, live["truth"], profile=prof)
                    results["profiles"][f"{kind}, cold ({r['cold']['seconds']:.2f} s under the profiler)"] = \
                        profile_text(prof)
                drop(core)
    except BenchError as e:
        failure = str(e)
    except subprocess.TimeoutExpired as e:
        failure = f"timed out after {e.timeout} s: {' '.join(map(str, e.cmd))}"
    finally:
        for p in made_cores:
            drop(p)

    results["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["mmapped_mismatches"] = list(MISMATCHES)
    results["wall_seconds"] = time.perf_counter() - t_start
    with open(os.path.join(BUILD, "raw-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if failure:
        log(f"\nBENCHMARK FAILED: {failure}\n(raw figures so far: {os.path.join(BUILD, 'raw-results.json')}; "
            f"gdb output under {RUNS})")
        for m in MISMATCHES:
            log(f"  and mmapped mismatch: {m}")
        return 1
    text = render(results, build_rows(results))
    print(text)
    with open(a.out, "w") as f:
        f.write(text)
    log(f"written to {a.out}")
    if MISMATCHES:
        log(f"\nBENCHMARK FAILED: {len(MISMATCHES)} mmapped chunk count mismatch(es) (the figures are "
            "written, marked FAILED):\n" + "\n".join(f"  {m}" for m in MISMATCHES))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"BENCHMARK FAILED: {e}")
        sys.exit(1)
