"""heaplens in lldb-16: the same test programs as the gdb acceptance tests, compared with gdb's
JSON field by field, live and on gcore cores.

Each scenario stops ONE process at heaplens_checkpoint and shows it to both debuggers: gdb
runs it, probes it (tests/gdb_probe.py), saves a gcore core, stops it with SIGSTOP and
detaches; lldb then attaches to the same stopped process and probes it (tests/lldb_probe.py);
finally both debuggers probe the core. So every address, tid and freelist is the same for
both, and any difference is a difference between the adapters.

The program-level answers (crash context, stale pointers, heap-frames, the Target's frames,
variables, layouts, registers and CFA, heap-leaks/heap-why) are compared the same way on the
programs of tests/test_program_checks.py, stopped at their checkpoint or at their crash
(program_scenario).
"""
import concurrent.futures
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from harness import BUILD, PROBE, PROGRAMS, ROOT, Run, build, gdb_cmd, read_truth, run_core

LLDB = shutil.which("lldb-16")
pytestmark = [pytest.mark.gdb,
              pytest.mark.skipif(LLDB is None, reason="lldb-16 is not installed (run scripts/setup.sh)")]

PLUGIN = os.path.join(ROOT, "lldb_plugin")
LPROBE = os.path.join(ROOT, "tests", "lldb_probe.py")

SCENARIOS = [("known_heap", ()), ("tcache_double_free", ("cross",)), ("fastbin_double_free", ()),
             ("freelist_overwrite", ("smallbin",)), ("size_smash", ()), ("busy_heap", ())]
SCENARIO_IDS = ["known_heap", "tcache+fastbin", "fastbin-loop", "smallbin-overwrite", "size-smash", "busy_heap"]


NODEBUG = "settings set symbols.enable-external-lookup false"     # lldb must not find libc6-dbg


def lldb_cmd(*commands, init=True, exe=None, nodebug=False):
    """lldb-16 in batch mode, no ~/.lldbinit, heaplens imported, then the commands."""
    cmd = [LLDB, "-b", "-x"] + (["-O", NODEBUG] if nodebug else [])
    if init:
        cmd += ["-o", f"command script import {PLUGIN}"]
    for c in commands:
        cmd += ["-o", c]
    return cmd + ([exe] if exe else [])


def lldb_env(**extra):
    env = dict(os.environ, **extra)
    for k in ("PYTHONPATH", "PYTHONHOME"):      # lldb's embedded Python must manage on its own
        env.pop(k, None)
    return env


# Keeps the detached program a child of a live process, so that its process group is not
# orphaned when gdb exits (the kernel would SIGHUP + SIGCONT it and it would run to its end).
HELPER = r"""
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)            # PR_SET_CHILD_SUBREAPER
log, pidfile, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "w") as f:
    try:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                       timeout=int(os.environ.get("HL_HELPER_TIMEOUT", "300")))
    except subprocess.TimeoutExpired:
        f.write("\n(the test's helper: gdb timed out)\n")
try:
    pid = int(open(pidfile).read())
except (OSError, ValueError):
    pid = 0
print(pid, flush=True)
sys.stdin.readline()
if pid > 0:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
for p in os.listdir("/proc"):                      # whatever else is left (a gdb that timed out)
    try:
        if p.isdigit() and int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
            os.kill(int(p), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""

# Run by gdb at the checkpoint, after its probe and gcore: gdb's own thread pointers, then
# the program is left stopped for lldb.
STOP_FOR_LLDB = """
import json, os, signal
import gdb
inf = gdb.selected_inferior()
out = os.environ["HL_OUT"]
threads = []
for t in inf.threads():
    t.switch()
    threads.append({"num": t.num, "tid": t.ptid[1], "fs_base": int(gdb.parse_and_eval("$fs_base"))})
json.dump(threads, open(os.path.join(out, "gdb_threads.json"), "w"))
os.kill(inf.pid, signal.SIGSTOP)
open(os.path.join(out, "pid"), "w").write(str(inf.pid))
"""


def load_run(out: str, text: str, truth_dir: str) -> Run:
    assert "Traceback" not in text, text[-3000:]
    try:
        probe = json.load(open(os.path.join(out, "probe.json")))
    except OSError:
        raise AssertionError(f"the probe did not run:\n{text[-3000:]}")

    def load(name):
        p = os.path.join(out, name)
        return json.load(open(p)) if os.path.exists(p) else None
    tpath = os.path.join(truth_dir, "truth.txt")
    truth = read_truth(tpath) if os.path.exists(tpath) else None
    infos = {int(k): v for k, v in probe["infos"].items()}
    return Run(load("check.json"), load("stats.json"), infos, probe["texts"], truth, text)


def run_lldb_probe(out: str, truth: str, *commands, extra=(), nodebug=False, dump=False, after_crash=False):
    """lldb-16 -b: the commands, then the probe (after a crash stop, lldb's batch mode skips
    the remaining -o commands and runs the -k ones: the probe goes there)."""
    os.makedirs(out, exist_ok=True)
    env = lldb_env(HL_OUT=out, HL_TRUTH=truth, HL_EXTRA=";".join(extra), **({"HL_DUMP": "1"} if dump else {}))
    probe = f"command script import {LPROBE}"
    cmd = lldb_cmd(*commands, *([] if after_crash else [probe]), nodebug=nodebug)
    if after_crash:
        cmd += ["-k", probe]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return p.stdout + p.stderr


_made = []          # scenario directories (cores of ~300 MB for busy_heap): removed after the module


@functools.lru_cache(maxsize=None)
def scenario(name, args=()):
    """dict of runs: gdb-live, lldb-live (same process), gdb-core, lldb-core (same core), and
    without libc debug info: lldb-live-nodebug, lldb-core-nodebug, gdb-core-nodebug."""
    exe = build(name)
    out = tempfile.mkdtemp(prefix=f"hl-lldb-{name}-", dir=BUILD)
    _made.append(out)
    gout = os.path.join(out, "gdb-live")
    os.makedirs(gout)
    stop = os.path.join(out, "stop.py")
    open(stop, "w").write(STOP_FOR_LLDB)
    core = os.path.join(gout, "core")
    env = dict(os.environ, HL_OUT=gout, HL_TRUTH=os.path.join(gout, "truth.txt"),
               HEAPLENS_TRUTH=os.path.join(gout, "truth.txt"), HL_GCORE=core, HL_EXTRA="")
    gdb = gdb_cmd(False) + ["-ex", "break heaplens_checkpoint", "-ex", "run " + " ".join(args),
                            "-ex", f"source {PROBE}", "-ex", f"source {stop}", "-ex", "detach", "--args", exe]
    log = os.path.join(out, "gdb-live.log")
    helper = subprocess.Popen([sys.executable, "-c", HELPER, log, os.path.join(gout, "pid"), *gdb], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(helper.stdout.readline() or 0)
        gtext = open(log).read()
        assert pid > 0, f"gdb did not leave the program stopped:\n{gtext[-3000:]}"
        ltext = run_lldb_probe(os.path.join(out, "lldb-live"), os.path.join(gout, "truth.txt"),
                               f"process attach --pid {pid}", extra=["process detach"])
        lntext = run_lldb_probe(os.path.join(out, "lldb-live-nodebug"), os.path.join(gout, "truth.txt"),
                                f"process attach --pid {pid}", extra=["process detach"], nodebug=True)
    finally:
        helper.stdin.close()
        helper.wait(timeout=60)
    runs = {"gdb-live": load_run(gout, gtext, gout), "lldb-live": load_run(os.path.join(out, "lldb-live"), ltext, gout),
            "lldb-live-nodebug": load_run(os.path.join(out, "lldb-live-nodebug"), lntext, gout)}
    assert os.path.exists(core), f"gcore failed:\n{gtext[-2000:]}"
    ctext = run_lldb_probe(os.path.join(out, "lldb-core"), os.path.join(gout, "truth.txt"),
                           f"target create {exe} --core {core}")
    runs["lldb-core"] = load_run(os.path.join(out, "lldb-core"), ctext, gout)
    ctext = run_lldb_probe(os.path.join(out, "lldb-core-nodebug"), os.path.join(gout, "truth.txt"),
                           f"target create {exe} --core {core}", nodebug=True)
    runs["lldb-core-nodebug"] = load_run(os.path.join(out, "lldb-core-nodebug"), ctext, gout)
    runs["gdb-core"] = run_core(exe, core, gout)
    runs["gdb-core-nodebug"] = run_core(exe, core, gout, nodebug=True)
    for k in ("lldb-live", "lldb-core", "lldb-live-nodebug", "lldb-core-nodebug"):
        runs[k].threads = json.load(open(os.path.join(out, k, "threads.json")))["threads"]
    runs["gdb-live"].threads = json.load(open(os.path.join(gout, "gdb_threads.json")))
    runs["core"] = core
    runs["exe"] = exe
    return runs


@pytest.fixture(scope="module")
def prepared():
    """Two scenarios at a time (each is a chain of four debugger runs)."""
    for name, _ in SCENARIOS:
        build(name)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(scenario, n, a) for n, a in SCENARIOS]
        for f in futures:
            try:
                f.result()
            except Exception:
                pass                       # the test of that scenario reports it
    yield
    scenario.cache_clear()
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


# --- comparing reports ------------------------------------------------------------------------
MODES = ["live", "core", "live-nodebug", "core-nodebug"]
# what each lldb run is compared with: the same process or the same core in gdb (gdb cannot
# attach without debug info to the process lldb holds, so lldb live without debug info is
# compared with gdb on the core saved at that very stop)
GDB_PEER = {"live": "gdb-live", "core": "gdb-core", "live-nodebug": "gdb-core-nodebug",
            "core-nodebug": "gdb-core-nodebug"}


def pair(runs, mode):
    return runs[GDB_PEER[mode]], runs[f"lldb-{mode}"]
PROGRAM_CHECKS = {"crash", "stale-pointer", "type-size", "cap"}


def allocator_findings(run):
    """heap-check's allocator findings (the program-level ones, from variables and the crash
    context, are compared by program_key / Norm: their thread and frame numbers are each
    debugger's own)."""
    return [f for f in run.check["findings"] if f.get("variable") is None and f.get("check") not in PROGRAM_CHECKS]


def by_tid(run):
    """Text with 'thread N' in this run's numbering -> 'thread [tid T]': thread numbers may
    legitimately differ between debuggers, tids may not."""
    nums = {c["thread"]: c["tid"] for h in run.stats["heaps"] for c in h["thread_caches"]}

    def norm(text):
        if not isinstance(text, str):
            return text
        return re.sub(r"\bthread (\d+)\b", lambda m: f"thread [tid {nums.get(int(m.group(1)), '?' + m.group(1))}]",
                      text)
    return norm


def finding_key(f, norm=lambda t: t):
    return (f["kind"], f["severity"], f["address"], json.dumps(f.get("chunk"), sort_keys=True), norm(f["message"]),
            tuple(map(norm, f["evidence"])), f.get("check"))


INFO_FIELDS = ("state", "address", "chunk_start", "user_start", "size", "chunk_size", "offset", "arena", "bin",
               "tid", "recency", "type_check", "warnings")


def info_view(i, norm):
    d = {k: i.get(k) for k in INFO_FIELDS}
    d["bin"] = norm(d["bin"])
    d["findings"] = sorted(finding_key(f, norm) for f in i.get("findings", []))
    d["warnings"] = sorted(map(norm, d["warnings"] or []))
    return d


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,args", SCENARIOS, ids=SCENARIO_IDS)
def test_heap_check_same_findings_as_gdb(name, args, mode, prepared):
    runs = scenario(name, args)
    g, l = pair(runs, mode)
    gn, ln = by_tid(g), by_tid(l)
    gf = sorted(finding_key(f, gn) for f in allocator_findings(g))
    lf = sorted(finding_key(f, ln) for f in allocator_findings(l))
    assert lf == gf
    gs, ls = g.check["summary"], l.check["summary"]
    for a, b in zip(gs, ls):
        for k in ("allocator", "version", "layout", "found_by", "arenas", "threads", "chunks", "states",
                  "unwalked_bytes"):
            assert b[k] == a[k], (k, b[k], a[k])
    assert len(gs) == len(ls)
    assert l.check["target"].startswith("live process" if mode.startswith("live") else "core file")
    assert ("structure" in ls[0]["found_by"]["main_arena"]) == mode.endswith("nodebug")
    # the expected finding is there at all (not only "the same as gdb")
    for kind, addr in g.truth.expect:
        assert any(f["kind"] == kind and f["address"] == addr for f in allocator_findings(l)), (kind, hex(addr))
    # and the program-level ones (the programs' own dangling pointers)
    gp = sorted(map(program_key(g), [f for f in g.check["findings"] if f["scope"] == "program"]))
    lp = sorted(map(program_key(l), [f for f in l.check["findings"] if f["scope"] == "program"]))
    assert lp == gp
    for k in ("variables", "globals", "optimized_out", "pointers"):
        assert l.check["program"][k] == g.check["program"][k], k


def program_key(run):
    """finding_key for program-level findings: thread N -> its tid, frame N -> the function
    (from the findings' own variables: each debugger numbers threads and frames its own way)."""
    norm = by_tid(run)
    fn = {(f["variable"]["thread"], f["variable"]["frame"]): f["variable"]["function"]
          for f in run.check["findings"] if f.get("variable")}
    tid = {f["variable"]["thread"]: f["variable"]["tid"] for f in run.check["findings"] if f.get("variable")}

    def text(t):
        t = re.sub(r"\bthread (\d+), frame (\d+)",
                   lambda m: f"thread [tid {tid.get(int(m.group(1)))}], frame [{fn.get((int(m.group(1)), int(m.group(2))))}]",
                   t)
        return norm(t)

    def key(f):
        v = dict(f.get("variable") or {}, thread=None, frame=None)
        return finding_key(dict(f, message=text(f["message"]), evidence=[text(e) for e in f["evidence"]]),
                           ) + (json.dumps(v, sort_keys=True),)
    return key


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,args", SCENARIOS, ids=SCENARIO_IDS)
def test_info_alloc_same_answers_as_gdb(name, args, mode, prepared):
    runs = scenario(name, args)
    g, l = pair(runs, mode)
    assert set(l.infos) == set(g.infos) and len(g.infos) > 5
    gn, ln = by_tid(g), by_tid(l)
    diffs = []
    for addr in g.infos:
        a, b = info_view(g.infos[addr], gn), info_view(l.infos[addr], ln)
        if a != b:
            diffs.append((hex(addr), {k: (a[k], b[k]) for k in a if a[k] != b[k]}))
    assert not diffs, f"{len(diffs)} of {len(g.infos)} answers differ, first: {diffs[:3]}"
    # every cached chunk is attributed to a thread (tcache attribution works without fs_base)
    cached = [i for i in l.infos.values() if i.get("state") == "cached"]
    assert all(i["tid"] in set(g.truth.threads) for i in cached)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,args", [SCENARIOS[0], SCENARIOS[5]], ids=["known_heap", "busy_heap"])
def test_heap_stats_same_as_gdb(name, args, mode, prepared):
    runs = scenario(name, args)
    g, l = pair(runs, mode)
    gh, lh = g.stats["heaps"][0], l.stats["heaps"][0]
    for k in ("totals", "size_classes", "mmapped", "version"):
        assert lh[k] == gh[k], k
    g_tid = {c["thread"]: c["tid"] for c in gh["thread_caches"]}     # each debugger's own numbering
    l_tid = {c["thread"]: c["tid"] for c in lh["thread_caches"]}

    def arenas(h, tids):
        return [dict(a, threads=sorted(tids.get(n, n) for n in a["threads"])) for a in h["arenas"]]

    def caches(h):
        return sorted((dict(c, thread=None) for c in h["thread_caches"]), key=lambda c: c["tid"])
    assert arenas(lh, l_tid) == arenas(gh, g_tid)
    assert caches(lh) == caches(gh)
    assert len(lh["thread_caches"]) == len(g.truth.threads)


@pytest.mark.parametrize("name,args", [SCENARIOS[0], SCENARIOS[5]], ids=["known_heap", "busy_heap"])
def test_thread_pointers_match_gdb_fs_base(name, args, prepared):
    """lldb 16 has no fs_base register: live, heaplens finds each thread's pointer in ld.so's
    thread lists; on a core it reads NT_PRSTATUS. Both must equal gdb's $fs_base."""
    runs = scenario(name, args)
    want = {t["tid"]: t["fs_base"] for t in runs["gdb-live"].threads}
    assert len(want) == len(runs["gdb-live"].truth.threads) and all(want.values())
    for mode in MODES:
        got = {t["tid"]: t["fs_base"] for t in runs[f"lldb-{mode}"].threads}
        assert got == want, mode


@pytest.mark.parametrize("name,args", [SCENARIOS[0], SCENARIOS[5]], ids=["known_heap", "busy_heap"])
def test_thread_pointer_walk_agrees_with_core_notes(name, args, prepared):
    """common.threadptr alone (no debugger) on the core: ld.so's lists give NT_PRSTATUS' fs_base."""
    from common.coretarget import CoreTarget
    from common.threadptr import thread_pointers
    t = CoreTarget(scenario(name, args)["core"])
    want = {th.tid: th.fs_base for th in t.core.threads}
    assert len(want) > 1 and all(want.values())
    assert thread_pointers(t, list(want)) == want
    assert thread_pointers(t, [1]) == {}                # a tid that is not there: nothing, not a guess


# --- program-level answers: variables, crash context, heap-frames, registers -----------------------
EXAMPLES = os.path.join(ROOT, "examples")
# (program, source directory, arguments, stops by crashing) as in tests/test_program_checks.py
# (-O2: a pointer variable held in a register, in a frame an inlined call sits in)
PROGRAM_SCENARIOS = [("threaded_server", EXAMPLES, ("big",), True, "-O0"),
                     ("stale_pointers", PROGRAMS, ("stale",), False, "-O0"),
                     ("stale_pointers", PROGRAMS, ("segv",), True, "-O0"),
                     ("stale_pointers", PROGRAMS, ("segv",), True, "-O2"),
                     ("session_cache", EXAMPLES, (), False, "-O0")]
PROGRAM_IDS = ["threaded-abort", "stale", "segv", "segv-O2", "session_cache"]
WHY = {"session_cache": "cache[0]", "stale_pointers": "g_root->right"}      # heap-why EXPR

# gdb's view of the program through the same dump as lldb's (tests/lldb_probe.py dump_program)
GDB_DUMP = f"""
import json, os, sys
import gdb
# gdb's adapter selects frames while it reads them (the outermost frame's CFA), and gdb then
# spells types in that frame's language (clone3.S is assembly: `job *`, not `struct job *`)
gdb.execute("set language c")
sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
from lldb_probe import dump_program
from gdb_plugin.target import current_target
json.dump(dump_program(current_target()), open(os.path.join(os.environ["HL_OUT"], "program.json"), "w"))
"""


def _load_program(run, out):
    run.program = json.load(open(os.path.join(out, "program.json")))

    def load(name):
        p = os.path.join(out, name)
        return json.load(open(p)) if os.path.exists(p) else None
    run.frames, run.leaks, run.why = load("frames.json"), load("leaks.json"), load("why.json")
    return run


_program_runs = {}


def program_scenario(*sc):
    """The runs of a scenario, made once (a failure too: each test reports it)."""
    if sc not in _program_runs:
        try:
            _program_runs[sc] = _program_scenario(*sc)
        except Exception as e:
            _program_runs[sc] = e
    r = _program_runs[sc]
    if isinstance(r, Exception):
        raise r
    return r


def _program_scenario(name, src_dir, args, crash, opt):
    """gdb runs the program to heaplens_checkpoint or to its crash, reports, dumps its view of
    the program, saves a core and leaves the process stopped (a crash signal is not passed on:
    `handle ... nopass`); lldb attaches to that process (after a crash it continues, and the
    program faults again at the same instruction, or, in abort(), raises SIGABRT a second
    time with the heap untouched) and reports; then both debuggers report on the core."""
    exe = build(name, opt, src_dir=src_dir)
    out = tempfile.mkdtemp(prefix=f"hl-lldbprog-{name}-", dir=BUILD)
    _made.append(out)
    gout = os.path.join(out, "gdb-live")
    os.makedirs(gout)
    open(os.path.join(out, "stop.py"), "w").write(STOP_FOR_LLDB)
    open(os.path.join(out, "dump.py"), "w").write(GDB_DUMP)
    core = os.path.join(gout, "core")
    # heap-frames, and the tracing commands (whose roots are the Target's frames and registers)
    frames = ";".join(["heap-frames --json {0}/frames.json", "heap-leaks --json {0}/leaks.json"] +
                      ([f"heap-why {WHY[name]} --json {{0}}/why.json"] if name in WHY else []))
    env = dict(os.environ, HL_OUT=gout, HL_TRUTH=os.path.join(gout, "truth.txt"), HL_HELPER_TIMEOUT="120",
               HEAPLENS_TRUTH=os.path.join(gout, "truth.txt"), HL_GCORE=core, HL_EXTRA=frames.format(gout))
    gdb = gdb_cmd(False) + ([] if crash else ["-ex", "break heaplens_checkpoint"]) + [
        "-ex", "run " + " ".join(args), "-ex", f"source {PROBE}", "-ex", f"source {out}/dump.py",
        "-ex", "handle SIGABRT SIGSEGV SIGBUS nopass", "-ex", f"source {out}/stop.py", "-ex", "detach", "--args", exe]
    log = os.path.join(out, "gdb-live.log")
    helper = subprocess.Popen([sys.executable, "-c", HELPER, log, os.path.join(gout, "pid"), *gdb], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lout = os.path.join(out, "lldb-live")
    try:
        pid = int(helper.stdout.readline() or 0)
        gtext = open(log).read()
        assert pid > 0, f"gdb did not leave the program stopped:\n{gtext[-3000:]}"
        attach = [f"process attach --pid {pid}"] + (
            ["process handle SIGSTOP -s false -p false -n false", "process continue"] if crash else [])
        ltext = run_lldb_probe(lout, os.path.join(gout, "truth.txt"), *attach, extra=frames.format(lout).split(";"),
                               dump=True, after_crash=crash)
    finally:
        helper.stdin.close()
        helper.wait(timeout=60)
    runs = {"gdb-live": _load_program(load_run(gout, gtext, gout), gout),
            "lldb-live": _load_program(load_run(lout, ltext, gout), lout)}
    assert os.path.exists(core), f"gcore failed:\n{gtext[-2000:]}"
    cout = os.path.join(out, "lldb-core")
    ctext = run_lldb_probe(cout, os.path.join(gout, "truth.txt"), f"target create {exe} --core {core}",
                           extra=frames.format(cout).split(";"), dump=True)
    runs["lldb-core"] = _load_program(load_run(cout, ctext, gout), cout)
    gcout = os.path.join(out, "gdb-core")
    os.makedirs(gcout)
    p = subprocess.run(gdb_cmd(False) + ["-ex", f"source {PROBE}", "-ex", f"source {out}/dump.py", exe, core],
                       env=dict(os.environ, HL_OUT=gcout, HL_EXTRA=frames.format(gcout)),
                       capture_output=True, text=True, timeout=300)
    runs["gdb-core"] = _load_program(load_run(gcout, p.stdout + p.stderr, gout), gcout)
    runs["exe"], runs["core"] = exe, core
    return runs


@pytest.fixture(scope="module")
def programs_prepared():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(program_scenario, *sc) for sc in PROGRAM_SCENARIOS]
        for f in futures:
            try:
                f.result()
            except Exception:
                pass                       # the test of that scenario reports it
    yield
    _program_runs.clear()
    for d in [d for d in _made if os.path.basename(d).startswith("hl-lldbprog-")]:
        _made.remove(d)
        shutil.rmtree(d, ignore_errors=True)


class Norm:
    """Each debugger numbers threads and frames its own way (lldb's numbers are what `thread
    select` / `frame select` take in lldb): texts are compared with thread N -> the thread's
    tid and frame N -> the function of that frame."""

    def __init__(self, run):
        prog = run.program
        self.tid = {int(k): v for k, v in prog["threads"].items()}
        self.fn = {(f["thread"], f["level"]): f["function"] for f in prog["frames"]}

    def thread(self, num):
        return f"[tid {self.tid.get(num, '?')}]"

    def text(self, s):
        if not isinstance(s, str):
            return s
        s = re.sub(r"\bthread (\d+)(, frame (\d+)|\) \(LWP \d+\), frame (\d+)| \(LWP \d+\), frame (\d+))?",
                   lambda m: self._thread_frame(m), s)
        return s

    def _thread_frame(self, m):
        num = int(m.group(1))
        out = f"thread {self.thread(num)}"
        if m.group(2):
            level = int(m.group(3) or m.group(4) or m.group(5))
            mid = m.group(2).rsplit(", frame", 1)[0]
            out += f"{mid}, frame [{self.fn.get((num, level), '?')}]"
        return out

    def finding(self, f):
        v = dict(f.get("variable") or {})
        if v:
            v["thread"] = self.thread(v.get("thread"))
            v["frame"] = self.fn.get((f["variable"].get("thread"), f["variable"].get("frame")), "?")
        return (f["kind"], f["severity"], f["address"], json.dumps(f.get("chunk"), sort_keys=True),
                json.dumps(v, sort_keys=True), self.text(f["message"]), tuple(map(self.text, f["evidence"])),
                f["check"])


def program_findings(run):
    return [f for f in run.check["findings"] if f["scope"] == "program"]


PROGRAM_MODES = ["live", "core"]


@pytest.mark.parametrize("mode", PROGRAM_MODES)
@pytest.mark.parametrize("scenario_", PROGRAM_SCENARIOS, ids=PROGRAM_IDS)
def test_program_findings_same_as_gdb(scenario_, mode, programs_prepared):
    """heap-check's program-level findings (crash context, stale pointers, size mismatch) equal
    gdb's field by field, thread and frame numbers compared as tid and function."""
    runs = program_scenario(*scenario_)
    g, l = runs[f"gdb-{mode}"], runs[f"lldb-{mode}"]
    gn, ln = Norm(g), Norm(l)
    gf, lf = program_findings(g), program_findings(l)
    assert gf, "gdb found no program-level findings: the scenario is not exercised"
    assert sorted(map(ln.finding, lf)) == sorted(map(gn.finding, gf))
    # the heap findings are the same too
    assert sorted(map(ln.finding, allocator_findings(l))) == sorted(map(gn.finding, allocator_findings(g)))
    gp, lp = g.check["program"], l.check["program"]
    for k in ("variables", "globals", "optimized_out", "pointers"):
        assert lp[k] == gp[k], (k, lp[k], gp[k])
    assert {k: lp["stop"][k] for k in ("signal", "fault_address")} == \
        {k: gp["stop"][k] for k in ("signal", "fault_address")}
    if gp["stop"]["thread"] is not None:
        assert ln.tid[lp["stop"]["thread"]] == gn.tid[gp["stop"]["thread"]]
    assert ("crash" in lp) == ("crash" in gp)
    if "crash" in gp:
        same = ("tid", "signal", "operation", "message", "expression", "pointer", "pointer_from", "function")
        assert {k: lp["crash"][k] for k in same} == {k: gp["crash"][k] for k in same}
    assert l.program["selection_kept"]


def frames_view(run, norm):
    """heap-frames per thread (by tid): the frames that list variables, in order, each with its
    variables' names, kinds, values, types, states, annotations and warnings."""
    out = {}
    for t in run.frames["threads"]:
        rows = []
        for f in t["frames"]:
            if not f["variables"]:
                continue
            vs = sorted((v["name"], v["kind"], v.get("value"), v.get("type"), v.get("state"),
                         norm.text(v.get("annotation")), tuple(map(norm.text, v.get("warnings", ()))),
                         v.get("optimized_out", False)) for v in f["variables"])
            rows.append((f["function"], f["file"], f["line"], vs))
        out[t["tid"]] = (t["crashed"], rows)
    return out


@pytest.mark.parametrize("mode", PROGRAM_MODES)
@pytest.mark.parametrize("scenario_", PROGRAM_SCENARIOS, ids=PROGRAM_IDS)
def test_heap_frames_same_variables_as_gdb(scenario_, mode, programs_prepared):
    runs = program_scenario(*scenario_)
    g, l = runs[f"gdb-{mode}"], runs[f"lldb-{mode}"]
    gv, lv = frames_view(g, Norm(g)), frames_view(l, Norm(l))
    assert any(rows for _, rows in gv.values())
    assert lv == gv
    assert sorted(map(Norm(l).finding, program_findings_of(l.frames))) == \
        sorted(map(Norm(g).finding, program_findings_of(g.frames)))


def program_findings_of(rep):
    return [f for f in rep["findings"] if f["scope"] == "program"]


def _variables(run):
    """Every Variable the Target gives, keyed by (tid, function, name) or ('global', name)."""
    norm = Norm(run)
    out = {}
    for f in run.program["frames"]:
        for v in f["variables"]:
            out[(f["tid"], f["function"], v["name"])] = dict(v, thread=norm.thread(v["thread"]), frame=None)
    for v in run.program["globals"]:
        out[("global", v["name"])] = v
    return out


@pytest.mark.parametrize("mode", PROGRAM_MODES)
@pytest.mark.parametrize("scenario_", PROGRAM_SCENARIOS, ids=PROGRAM_IDS)
def test_target_variables_and_layouts_same_as_gdb(scenario_, mode, programs_prepared):
    """The Target protocol itself: every Variable (storage address or register value,
    optimized-out flag) with its TypeLayout (slot paths, offsets, type names as gdb spells
    them, target sizes), the globals, the layouts behind type_layout(), and stop_info()."""
    runs = program_scenario(*scenario_)
    g, l = runs[f"gdb-{mode}"], runs[f"lldb-{mode}"]
    gv, lv = _variables(g), _variables(l)
    assert len(gv) >= 3
    assert lv == gv
    assert l.program["types"] == g.program["types"]
    gs, ls = g.program["stop"], l.program["stop"]
    assert (ls["signal"], ls["fault_address"]) == (gs["signal"], gs["fault_address"])


def _timeless(d):
    """A report without its timings (and the notes that carry them)."""
    if isinstance(d, dict):
        return {k: _timeless(v) for k, v in d.items() if "seconds" not in k and k not in ("notes", "target")}
    if isinstance(d, list):
        return [_timeless(x) for x in d]
    return d


@pytest.mark.parametrize("mode", PROGRAM_MODES)
@pytest.mark.parametrize("scenario_", PROGRAM_SCENARIOS, ids=PROGRAM_IDS)
def test_heap_leaks_and_why_same_as_gdb(scenario_, mode, programs_prepared):
    """The tracing commands (roots from the Target's variables, registers and stacks) give
    gdb's answers in lldb: heap-leaks' whole report, heap-why's chains."""
    runs = program_scenario(*scenario_)
    g, l = runs[f"gdb-{mode}"], runs[f"lldb-{mode}"]
    assert g.leaks is not None and l.leaks is not None, l.texts
    gl, ll = _timeless(g.leaks), _timeless(l.leaks)
    gn, ln = Norm(g), Norm(l)
    gl["findings"] = sorted(map(gn.finding, gl.pop("findings", [])))
    ll["findings"] = sorted(map(ln.finding, ll.pop("findings", [])))
    for rep in (gl, ll):          # how many frames: gdb also counts the tail-call frames it infers
        for k in ("roots_frames", "maps_frames", "maps_frames_without_maps", "maps_cfa_from_unwind_tables"):
            rep["stats"].pop(k, None)
        if mode == "live" and scenario_[3]:
            # lldb sees the crash repeated (program_scenario): the C library's frames, and so
            # the stack ranges scanned conservatively for them, are not the same
            rep.pop("stats"), rep.pop("roots")
    assert ll == gl
    if scenario_[0] in WHY:
        assert l.why is not None and l.why["chains"], l.texts
        assert _timeless(l.why) == _timeless(g.why)


def _frames_by_pc(run, gdb=False):
    """(tid, pc) -> frames. For gdb, each frame's `cfa` becomes the CFA of the real frame it
    belongs to: gdb's adapter gives an inlined frame (or a tail-call frame it infers) the sp
    (its caller's unwound sp, the same frame's), lldb the containing function's CFA."""
    out = {}
    frames = run.program["frames"]
    for i, f in enumerate(frames):
        if gdb:
            f = dict(f)
            j = i
            while j < len(frames) and frames[j]["tid"] == f["tid"] and frames[j]["cfa"] is not None \
                    and frames[j]["cfa"] == frames[j]["registers"].get("rsp"):
                j += 1
            same = j < len(frames) and frames[j]["tid"] == f["tid"]
            f["cfa"] = frames[j]["cfa"] if same else None
        out.setdefault((f["tid"], f["pc"]), []).append(f)
    return out


@pytest.mark.parametrize("mode", PROGRAM_MODES)
@pytest.mark.parametrize("scenario_", PROGRAM_SCENARIOS, ids=PROGRAM_IDS)
def test_frames_registers_and_cfa_same_as_gdb(scenario_, mode, programs_prepared):
    """frames(registers=True): each frame's unwound registers and CFA, and frame_registers(),
    equal gdb's for the same stop. Frames are matched by (tid, pc): gdb also shows tail-call
    frames it infers from call-site debug info, which lldb 16 does not; every frame of the
    program's own code is in both."""
    runs = program_scenario(*scenario_)
    g, l = runs[f"gdb-{mode}"], runs[f"lldb-{mode}"]
    gf, lf = _frames_by_pc(g, gdb=True), _frames_by_pc(l)
    exe = runs["exe"]
    regs = None
    if mode == "live" and scenario_[3]:
        # lldb sees the crash repeated (see program_scenario): in abort() the C library's frames
        # are at its second raise; the program's frames and their callee-saved registers are not
        lf = {k: v for k, v in lf.items() if v[0]["objfile"] == exe}
        regs = ("rbx", "rbp", "rsp", "r12", "r13", "r14", "r15", "rip")
    mine = [k for k, fs in gf.items() if fs[0]["objfile"] == exe]
    assert mine and all(k in lf for k in mine), (mine, list(lf))
    compared = 0
    for key, lfs in lf.items():
        if key not in gf:
            continue
        for a, b in zip(gf[key], lfs):
            if a["function"] != b["function"]:
                continue                      # an inlined frame at the same pc: compared by name below
            if a["cfa"] is not None:          # gdb gives none for the outermost frame
                assert b["cfa"] == a["cfa"], (key, a["function"])
            pick = (lambda d: {r: d.get(r) for r in regs}) if regs else (lambda d: d)
            assert pick(b["registers"]) == pick(a["registers"]), (key, a["function"])
            assert pick(b["saved"]) == pick(a["saved"]), (key, a["function"])
            compared += 1
    assert compared >= len(mine)


def test_lldb_writes_invalidate_the_cached_walk(tmp_path):
    """lldb has no memory-changed event: a `memory write`, an expression that assigns, a
    script's SBProcess.WriteMemory after a walk must not leave heaplens answering from the
    stale walk; reading memory, printing variables and expressions that only read must not
    throw the walk away."""
    exe = build("stale_pointers")
    j = lambda n: str(tmp_path / f"{n}.json")
    gen = "script print('generation', lldb_plugin.target.generation_of(lldb.target))"
    p = subprocess.run(lldb_cmd(
        "breakpoint set -n heaplens_checkpoint", "process launch -- stale", f"heap-check --json {j('a')}",
        "script import lldb_plugin.target", gen, "memory read --force -c 4096 &g_head", "frame variable", "bt",
        "p g_head->next", f"heap-frames --json {j('frames')}", "info alloc g_head", gen,
        "memory write -s 8 &g_head 0", f"heap-check --json {j('b')}",
        "frame select 1", "expression conn.buf = 0", f"heap-check --json {j('c')}",
        "script lldb.process.WriteMemory(lldb.frame.FindVariable('holder').GetValueAsUnsigned(), bytes(8), lldb.SBError())",
        f"heap-check --json {j('d')}",
        "memory write -s 8 -- old 0x4141414141414141", f"heap-check --json {j('e')}", gen, "frame info", exe=exe),
        capture_output=True, text=True, timeout=120, env=lldb_env())
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out[-3000:]
    gens = re.findall(r"^generation (.*)$", p.stdout, re.M)
    assert len(gens) == 3 and gens[0] == gens[1] != gens[2], gens      # reads kept it, writes changed it

    def names(n):
        return sorted(f["variable"]["name"] for f in json.load(open(j(n)))["findings"] if f["scope"] == "program")
    a = names("a")
    assert {"g_head", "conn.buf", "holder->data", "holder->list", "big"} <= set(a)
    assert names("b") == sorted(set(a) - {"g_head"})
    assert names("c") == sorted(set(a) - {"g_head", "conn.buf"})
    assert names("d") == sorted(set(a) - {"g_head", "conn.buf", "holder->data"})
    e = json.load(open(j("e")))["findings"]                     # a tcache link overwritten: the walk sees it
    assert any(f["kind"] == "metadata-corruption" and f["scope"] == "heap" for f in e), e
    assert "frame #1:" in out.rsplit("frame info", 1)[1]      # heaplens kept the user's frame


def test_annotations_and_breakpoint_callback(tmp_path):
    """lldb's forms of gdb's pretty-printer annotations (a type summary for pointers) and of
    `break free if $heap_is_free($rdi)` (a breakpoint callback that returns False to go on)."""
    exe = build("session_cache", src_dir=EXAMPLES)
    p = subprocess.run(lldb_cmd("breakpoint set -n heaplens_checkpoint", "process launch", "heaplens-annotate",
                                "heaplens-annotate on", "frame select 1", "frame variable", "bt 3", "p response",
                                "heaplens-annotate off", "frame variable response", "heaplens-annotate maybe", exe=exe),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out[-3000:]
    on, off = out.split("heaplens: pointer annotations off\n")[1:3] if out.count("annotations off") == 2 else ("", "")
    note = "[cached: tcache[6] (0x80) of thread 1, 120 B, freed last]"
    assert out.count("heaplens: pointer annotations off") == 2 and "heaplens: pointer annotations on" in out
    assert re.search(r'\(char \*\) response = 0x[0-9a-f]+ ".*" ' + re.escape(note), on), on
    assert f"report_done(response=" in on and note + ")" in on                 # the backtrace too
    assert re.search(r"\(char \*\) \$0 = 0x[0-9a-f]+ .*" + re.escape(note), on)
    assert note not in off and re.search(r'\(char \*\) response = 0x[0-9a-f]+ "', off)
    assert "error: heaplens-annotate: usage: heaplens-annotate [on|off]" in out
    # the breakpoint condition: stop in free only when its argument is already free
    exe = build("threaded_server", src_dir=EXAMPLES)
    cond = "return lldb_plugin.heap_is_free(frame, frame.FindRegister('rdi').unsigned)"
    p = subprocess.run(lldb_cmd("breakpoint set -n free", f'breakpoint command add -s python -o "{cond}"',
                                "process launch", "bt 2",
                                "script r = lldb.frame.FindRegister('rdi').unsigned; print('STATE', "
                                "lldb_plugin.heap_state(lldb.frame, r), lldb_plugin.heap_size(lldb.frame, r))",
                                "process kill", exe=exe),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "SIGABRT" not in out, out[-3000:]
    assert "stop reason = breakpoint 1." in out and "handler_query_response(id=2" in out, out[-3000:]
    assert "STATE cached 312" in out


# --- as a user would ----------------------------------------------------------------------------
def test_loaded_from_lldbinit_in_a_plain_lldb(tmp_path):
    """~/.lldbinit line, any cwd, no environment help: launch, stop, check, info alloc."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".lldbinit").write_text(f"command script import {PLUGIN}\n")
    exe = build("tcache_double_free")
    truth = tmp_path / "truth.txt"
    report = tmp_path / "check.json"
    info = tmp_path / "info.json"
    env = lldb_env(HOME=str(home))
    p = subprocess.run([LLDB, "-b", "-o", "breakpoint set -n heaplens_checkpoint",
                        "-o", f"settings set target.env-vars HEAPLENS_TRUTH={truth}",
                        "-o", "process launch -- cross", "-o", f"heap-check --json {report}",
                        "-o", "heap-stats", "-o", "info alloc 0", "-o", "thread list", exe],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out[-3000:]
    assert "heaplens: not loaded" not in out
    t = read_truth(str(truth))
    want = [a for k, a in t.expect if k == "double-free"]
    rep = json.load(open(report))
    assert rep["schema"] == "heaplens/1" and rep["target"].startswith("live process")
    assert [f["address"] for f in rep["findings"] if f["kind"] == "double-free"] == want
    assert "was freed twice: it is in tcache[1] (0x30) of thread 1 and fastbin[1] (0x30) of main_arena" in out
    assert "glibc 2.36 heap statistics" in out
    # the gdb spelling, and the alias, with an address and with an expression
    p = subprocess.run([LLDB, "-b", "-o", "breakpoint set -n heaplens_checkpoint",
                        "-o", f"settings set target.env-vars HEAPLENS_TRUTH={truth}",
                        "-o", "process launch -- cross", "-o", f"info alloc {want[0]:#x} --json {info}",
                        "-o", f"info-alloc {want[0]:#x}", "-o", f"info alloc (char *){want[0]:#x} + 3", exe],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out[-3000:]
    i = json.load(open(info))
    assert i["state"] == "cached" and i["bin"] == "tcache[1] (0x30) of thread 1" and i["recency"] == 0
    assert out.count(f"{want[0]:#x} = {want[0]:#x}") == 2
    assert "interior pointer: 3 bytes into the allocation" in out


def test_info_alloc_expressions_and_type_check(tmp_path):
    """Variables, casts, p->next, arrays and a selected frame, evaluated by lldb."""
    exe = build("session_cache", src_dir=os.path.join(ROOT, "examples"))
    j = lambda n: str(tmp_path / f"{n}.json")
    p = subprocess.run(lldb_cmd("breakpoint set -n heaplens_checkpoint", "process launch",
                                f"info alloc cache[0] --json {j('fits')}",
                                f"info alloc (struct log_entry *)cache[1] --json {j('small')}",
                                f"info alloc access_log[0]->path --json {j('interior')}",
                                f"info alloc cache --json {j('global')}",
                                "frame select 1", f"info alloc response --json {j('response')}", exe=exe),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "Traceback" not in out, out[-3000:]
    fits, small, interior, glob_, resp = (json.load(open(j(n))) for n in
                                          ("fits", "small", "interior", "global", "response"))
    assert fits["state"] == "allocated" and fits["type_check"]["fits"] and fits["type_check"]["type_size"] == 32
    assert small["type_check"] == {"type": "struct log_entry *", "type_size": 56, "room": 40, "fits": False}
    assert any("needs 56 bytes but only 40 remain" in w for w in small["warnings"])
    assert interior["offset"] == 8 and interior["type_check"] is None
    assert glob_["state"] == "not-heap" and glob_["chunk_start"] is None
    assert resp["state"] == "cached" and resp["thread"] == 1 and resp["recency"] == 0
    assert resp["bin"] == "tcache[6] (0x80) of thread 1" and resp["size"] == 120
    assert resp["findings"][0]["kind"] == "double-free"


def test_fail_on_makes_lldb_batch_exit_nonzero(prepared):
    runs = scenario("fastbin_double_free", ())
    p = subprocess.run(lldb_cmd(f"target create {runs['exe']} --core {runs['core']}",
                                "heap-check --fail-on critical", "script print('not reached')"),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: heap-check: 1 finding(s) of severity critical or worse (first: double-free" in p.stderr
    assert "double-free" in p.stdout and "not reached" not in p.stdout     # the table, then the failure
    clean = scenario("known_heap", ())          # a sound heap; the program's dangling pointers are warnings
    p = subprocess.run(lldb_cmd(f"target create {clean['exe']} --core {clean['core']}",
                                "heap-check --fail-on critical", "heap-check --fail-on warning",
                                "script print('not reached')"),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    assert p.returncode == 1, p.stdout + p.stderr
    assert "critical" not in p.stdout.split("heap-check --fail-on warning")[0].split("finding(s):")[1].split("\n")[0]
    assert re.search(r"error: heap-check: \d+ finding\(s\) of severity warning or worse \(first: use-after-free",
                     p.stderr), p.stderr


def test_loading_twice_bad_arguments_and_no_process(tmp_path):
    exe = build("clean_small")
    cmds = tmp_path / "cmds"
    cmds.write_text("\n".join([f"command script import {PLUGIN}", f"command script import {PLUGIN}",
                               "heap-check", "heap-check --bogus", "info alloc", "info alloc nosuchvar",
                               "heap-stats extra", "heap-check --fail-on sometimes", "help info alloc",
                               "breakpoint set -n heaplens_checkpoint", "process launch",
                               "info alloc nosuchvar", "info alloc truth_tab[0]", "heap-check --json -"]) + "\n")
    p = subprocess.run([LLDB, "-x", "-O", "settings set interpreter.stop-command-source-on-error false",
                        "-s", str(cmds), "-o", "quit", exe],
                       capture_output=True, text=True, timeout=120, env=lldb_env(), cwd=str(tmp_path))
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert errors[0] == ("error: heap-check: the program is not running and no core file is loaded: start it "
                         "(process launch, process attach) or load a core (target create -c CORE)")
    assert "error: heap-check: unknown option --bogus; usage: heap-check [--json PATH] [--fail-on " in out
    assert "error: info alloc: info alloc EXPR [--json PATH]" in out
    assert "error: heap-stats: unexpected argument 'extra'; usage: heap-stats [--json PATH]" in out
    assert "error: heap-check: --fail-on takes one of critical, warning, info, not 'sometimes'" in out
    assert "error: info alloc: cannot evaluate 'nosuchvar': use of undeclared identifier 'nosuchvar'" in out
    assert ("error: info alloc: 'truth_tab[0]' is a struct truth_rec, not a pointer or an address "
            "(try &truth_tab[0] for the object's own address)") in out
    assert len(errors) == 8, errors                       # each problem is one sentence
    assert "heaplens: not loaded" not in out and "could not add" not in out
    assert "Allocation state of the heap chunk an expression points into" in out
    start = p.stdout.index('"schema": "heaplens/1"')
    rep = json.loads(p.stdout[p.stdout.rindex("{", 0, start):p.stdout.index("\n}", start) + 2])
    assert rep["command"] == "heap-check" and [f for f in rep["findings"] if f["scope"] == "heap"] == []
    # the program keeps two pointers to what it freed (gdb says the same)
    assert sorted((f["kind"], f["severity"], f["variable"]["name"]) for f in rep["findings"]) == \
        [("use-after-free", "warning", "b"), ("use-after-free", "warning", "d")]


def test_unsupported_lldb_python_gives_one_sentence(tmp_path):
    """The version gate and the dependency check, exercised inside lldb-16 with fakes."""
    script = tmp_path / "fake.py"
    script.write_text(f"""
import sys, types
import lldb
sys.path.insert(0, {ROOT!r})
import lldb_plugin
broken = types.ModuleType("lldb")
print("broken:", lldb_plugin._lldb_problem(broken))
old = types.SimpleNamespace(SBDebugger=types.SimpleNamespace(GetVersionString=lambda: "lldb version 14.0.6"))
print("old:", lldb_plugin._lldb_problem(old))
print("ok:", repr(lldb_plugin._lldb_problem(lldb)))
""")
    p = subprocess.run(lldb_cmd(f"command script import {script}", init=False), capture_output=True,
                       text=True, timeout=60, env=lldb_env())
    out = p.stdout
    assert "broken: heaplens: not loaded: this lldb's Python module is broken" in out
    assert "old: heaplens: not loaded: lldb version 14.0.6 is not supported" in out and "use lldb-16" in out
    assert "ok: ''" in out


def test_missing_dependencies_give_one_sentence(tmp_path):
    """A checkout whose .venv was never made (setup.sh not run): one sentence, no commands."""
    root = tmp_path / "checkout"
    for d in ("lldb_plugin", "common"):
        shutil.copytree(os.path.join(ROOT, d), root / d, ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run(lldb_cmd(f"command script import {root}/lldb_plugin", "help heap-check", init=False),
                       capture_output=True, text=True, timeout=60, env=lldb_env(), cwd=str(tmp_path))
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out
    assert "heaplens: not loaded: numpy is missing for lldb's Python (3." in out
    assert f"run {root}/scripts/setup.sh" in out
    assert "error: 'heap-check' is not a known command" in out
