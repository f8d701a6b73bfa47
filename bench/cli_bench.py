#!/usr/bin/env python3
"""`heaplens check` (no debugger) against the plugin's `heap-check` inside gdb, on the same cores.

Usage (from the checkout, after scripts/setup.sh):
    .venv/bin/python bench/cli_bench.py [--sizes 10000,100000,1000000] [--repeat 3]
                                        [--threads 4] [--out bench/results.md]

For every size N: genheap (bench/genheap.c) runs under gdb to heaplens_checkpoint() and is
gcore'd; then, --repeat times each, in fresh processes:
  - CLI: `.venv/bin/heaplens check CORE --exe genheap --json PATH`;
  - plugin: `gdb -batch -x gdb_plugin/gdbinit.py -ex 'heap-check --json PATH' genheap CORE`;
both timed as wall time of the whole process (start-up, loading, the analysis, the report) and by
the report's own "seconds" (the analysis: walk, checks, program view), with each process's peak
RSS (wait4). One more CLI run with empty caches (HEAPLENS_CACHE_DIR pointing at a new directory:
DWARF maps, frame names and struct layouts decoded from scratch). At the largest size, a batch:
four hard links to the core, `heaplens check --jsonl --jobs 1` and `--jobs 2`.
Both must report the same chunks and no error finding on these clean heaps. The core is deleted
after each size. Figures go under a "## CLI" heading of --out (replaced when already there).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench as RB  # noqa: E402  (genheap build, machine facts, gdb command line)

ROOT = RB.ROOT
CLI = os.path.join(ROOT, ".venv", "bin", "heaplens")
WORK = os.path.join(RB.BUILD, "cli")
HEADING = "## CLI"


def peak_mb(cmd, env=None) -> tuple:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_maxrss / 1024, p.returncode, err


def report(path: str, what: str) -> dict:
    try:
        rep = json.load(open(path))
    except (OSError, ValueError) as e:
        raise RB.BenchError(f"{what}: no JSON report ({e})")
    bad = [f for f in rep.get("findings", []) if f.get("severity") in RB.BAD_SEVERITIES]
    if bad:
        raise RB.BenchError(f"{what}: error findings on a clean heap: {bad[:3]}")
    return rep


def make_core(n: int, threads: int, core: str) -> None:
    cmd = RB.gdb_cmd(False) + ["-ex", "break heaplens_checkpoint", "-ex", f"run {n} {threads}",
                               "-ex", f"gcore {core}", "-ex", "kill", "--args", RB.EXE]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=RB.TIMEOUT, cwd=ROOT)
    if not os.path.exists(core):
        raise RB.BenchError(f"gcore failed for N={n}:\n{(p.stdout + p.stderr)[-2000:]}")


def one(kind: str, core: str, n: int, k: int, env=None) -> dict:
    js = os.path.join(WORK, f"{kind}-{n}-{k}.json")
    if kind.startswith("cli"):
        cmd = [CLI, "check", core, "--exe", RB.EXE, "--json", js]
    else:
        cmd = RB.gdb_cmd(False) + ["-ex", f"heap-check --json {js}", RB.EXE, core]
    wall, mb, rc, err = peak_mb(cmd, env)
    if "Traceback" in err:
        raise RB.BenchError(f"{kind} N={n}: traceback:\n{err[-2000:]}")
    rep = report(js, f"{kind} N={n}")
    os.unlink(js)
    return {"wall": wall, "seconds": rep["seconds"], "chunks": rep["summary"][0]["chunks"],
            "walk": rep["summary"][0].get("walk_seconds"), "mb": mb, "rc": rc}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def batch(core: str, jobs: int, copies: int = 4) -> dict:
    links = []
    for i in range(copies):
        p = os.path.join(WORK, f"batch-{i}.core")
        if os.path.exists(p):
            os.unlink(p)
        os.link(core, p)
        links.append(p)
    t0 = time.perf_counter()
    p = subprocess.run([CLI, "check", *links, "--exe", RB.EXE, "--jsonl", "--jobs", str(jobs)],
                       capture_output=True, text=True, timeout=RB.TIMEOUT, cwd=ROOT)
    wall = time.perf_counter() - t0
    for link in links:
        os.unlink(link)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    if len(lines) != copies or any(rep.get("error") for rep in lines):
        raise RB.BenchError(f"batch --jobs {jobs}: {p.stderr[-2000:]}")
    return {"jobs": jobs, "cores": copies, "wall": wall}


def render(res: dict) -> str:
    m = res["machine"]
    out = [HEADING, "",
           f"`bench/cli_bench.py` ({res['date']}; heaplens commit {m['commit']}; {m['nproc']} CPUs, {m['cpu']}; "
           f"{m['gdb']}; load average {' '.join(res['load_start'])} at the start, "
           f"{' '.join(res['load_end'])} at the end; {res['repeat']} runs each, medians).",
           "`heaplens check CORE --exe genheap --json PATH` (a process with no debugger) against "
           "`gdb -batch -x gdb_plugin/gdbinit.py -ex 'heap-check --json PATH' genheap CORE` on the same "
           "gcore core. *wall* is the whole process (start-up, loading symbols/the core, the analysis, "
           "the report); *analysis* is the report's own `seconds` (walk, checks, frames and variables); "
           "*peak MB* the process's maximum RSS. *CLI, empty caches*: one run with a new cache directory "
           "(DWARF maps, frame names, struct layouts decoded from scratch).", "",
           "| N | chunks | CLI wall s | CLI analysis s | CLI peak MB | plugin (gdb) wall s | plugin analysis s "
           "| gdb peak MB | CLI, empty caches: wall s | core MB |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, d in res["sizes"].items():
        c, g, cold = d["cli"], d["gdb"], d["cli_cold"]
        out.append(f"| {int(n):,} | {c[0]['chunks']:,} | {med([x['wall'] for x in c]):.2f} | "
                   f"{med([x['seconds'] for x in c]):.2f} | {med([x['mb'] for x in c]):.0f} | "
                   f"{med([x['wall'] for x in g]):.2f} | {med([x['seconds'] for x in g]):.2f} | "
                   f"{med([x['mb'] for x in g]):.0f} | {cold['wall']:.2f} | {d['core_mb']:.0f} |")
    out.append("")
    for b in res.get("batch", []):
        out.append(f"- batch at N={int(res['batch_n']):,}: {b['cores']} cores with `--jsonl --jobs {b['jobs']}` "
                   f"in {b['wall']:.2f} s ({b['wall'] / b['cores']:.2f} s per core)")
    out.append("- the CLI no longer reads libc's debug symbol table with pyelftools (~0.6 s before): data "
               "symbols and function names come from the ELF tables as numpy arrays (common/elfsyms.py, ~2 ms "
               "per lookup), frame names and struct layouts from single DWARF units cached by build-id "
               "(common/srcinfo.py)")
    return "\n".join(out) + "\n"


def write(path: str, section: str) -> None:
    try:
        text = open(path).read()
    except OSError:
        text = ""
    if HEADING + "\n" in text:
        start = text.index(HEADING + "\n")
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(RB.BENCH, "results.md"))
    a = ap.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip()]
    if not os.path.exists(CLI):
        print(f"{CLI} is missing: run scripts/setup.sh", file=sys.stderr)
        return 2
    try:
        RB.build()
        os.makedirs(WORK, exist_ok=True)
        res = {"machine": RB.machine(), "repeat": a.repeat, "sizes": {},
               "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_start": open("/proc/loadavg").read().split()[:3]}
        for n in sizes:
            core = os.path.join(WORK, f"genheap-{n}.core")
            RB.log(f"N={n:,}: making the core")
            make_core(n, a.threads, core)
            d = {"cli": [], "gdb": [], "core_mb": os.path.getsize(core) / 1e6}
            try:
                one("cli", core, n, -1)                     # warm the caches (maps, frame names)
                for k in range(a.repeat):
                    d["cli"].append(one("cli", core, n, k))
                    d["gdb"].append(one("gdb", core, n, k))
                    RB.log(f"  run {k + 1}: CLI {d['cli'][-1]['wall']:.2f} s, gdb {d['gdb'][-1]['wall']:.2f} s")
                fresh = tempfile.mkdtemp(prefix="hl-cache-", dir=WORK)
                env = dict(os.environ, HEAPLENS_CACHE_DIR=os.path.join(fresh, "maps"))
                d["cli_cold"] = one("cli-cold", core, n, 0, env)
                shutil.rmtree(fresh, ignore_errors=True)
                if {x["chunks"] for x in d["cli"]} != {x["chunks"] for x in d["gdb"]}:
                    raise RB.BenchError(f"N={n}: the CLI and the plugin walked different chunk counts")
                if n == max(sizes):
                    res["batch_n"] = n
                    res["batch"] = [batch(core, 1), batch(core, 2)]
            finally:
                os.unlink(core)
            res["sizes"][str(n)] = d
        res["load_end"] = open("/proc/loadavg").read().split()[:3]
        section = render(res)
        write(a.out, section)
        print(section)
        with open(os.path.join(WORK, "raw-results.json"), "w") as f:
            json.dump(res, f, indent=1)
    except RB.BenchError as e:
        print(f"cli_bench: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
