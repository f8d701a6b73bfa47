"""heaplens in lldb-16: the same test programs as the gdb acceptance tests, compared with gdb's
JSON field by field, live and on gcore cores.

Each scenario stops ONE process at heaplens_checkpoint and shows it to both debuggers: gdb
runs it, probes it (tests/gdb_probe.py), saves a gcore core, stops it with SIGSTOP and
detaches; lldb then attaches to the same stopped process and probes it (tests/lldb_probe.py);
finally both debuggers probe the core. So every address, tid and freelist is the same for
both, and any difference is a difference between the adapters.
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

from harness import BUILD, PROBE, ROOT, Run, build, gdb_cmd, read_truth, run_core

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
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, timeout=300)
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
    truth = read_truth(os.path.join(truth_dir, "truth.txt"))
    infos = {int(k): v for k, v in probe["infos"].items()}
    return Run(load("check.json"), load("stats.json"), infos, probe["texts"], truth, text)


def run_lldb_probe(out: str, truth: str, *commands, extra=(), nodebug=False):
    os.makedirs(out, exist_ok=True)
    env = lldb_env(HL_OUT=out, HL_TRUTH=truth, HL_EXTRA=";".join(extra))
    p = subprocess.run(lldb_cmd(*commands, f"command script import {LPROBE}", nodebug=nodebug), env=env,
                       capture_output=True, text=True, timeout=300)
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
    """heap-check's allocator findings (program-level ones, from variables and the crash
    context, need frames that only the gdb adapter provides so far)."""
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
    clean = scenario("known_heap", ())
    p = subprocess.run(lldb_cmd(f"target create {clean['exe']} --core {clean['core']}",
                                "heap-check --fail-on warning"),
                       capture_output=True, text=True, timeout=120, env=lldb_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No heap errors found." in p.stdout


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
    assert rep["command"] == "heap-check" and rep["findings"] == []


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
