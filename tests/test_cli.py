"""Issue 7: `heaplens`, the command line for core files without a debugger.

The same cores (gcore's, made by tests/harness.run_live, and the kernel's) are analysed by the
plugin inside real gdb (harness.run_core) and by `.venv/bin/heaplens` (a subprocess, no gdb):
heap-check, heap-stats, heap-frames, heap-leaks and every `info` answer must be the same reports
(JSON schema heaplens/1, timing fields aside), frames must be gdb's frames (inline, tail-call
and signal frames included), and bad input (truncated cores, garbage, a moved executable) gives
one clear sentence and whatever report can still be trusted.

Where the CLI cannot equal the plugin, the test says why and asserts the exact relation:
- at -O2 the DWARF maps place each piece of an aggregate split over registers; the plugin's
  gdb view calls the whole aggregate optimized out, so the CLI may name *more* variables — every
  extra one is a variable the plugin lists as optimized out in the same frame;
- the CLI does not read variables of system libraries' frames (libc's `p` in _int_free), so
  when the source line of the crashing call cannot be read it infers the freed pointer from the
  program's own variables instead (the same pointer, labelled as inferred).
"""
import glob
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import tempfile

import pytest

from harness import ROOT, RUNS, build, gdb_cmd, run_core, run_live

pytestmark = pytest.mark.gdb
CLI = os.path.join(ROOT, ".venv", "bin", "heaplens")
EXAMPLES = os.path.join(ROOT, "examples")
VOLATILE = {"seconds", "walk_seconds", "total_seconds", "load_seconds", "decode_seconds", "build_seconds",
            "read_seconds", "root_seconds", "scan_seconds", "precise_seconds", "classify_seconds",
            "maps_load_seconds", "maps_cfa_from_unwind_tables"}   # the last: the CLI's unwinder gives
#                                                                  every frame a CFA, gdb not the outermost


# how the DWARF maps were obtained depends on who ran first (decoded, or loaded from the cache)
_MAPS_TIMING = re.compile(r"; (loaded from the cache in|first decode) [0-9.]+ s( \(cached for next time\))?")


def norm(x):
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(x, list):
        return [norm(v) for v in x]
    if isinstance(x, str):
        return _MAPS_TIMING.sub("", x)
    return x


def heaplens(*args, timeout=300):
    if not os.path.exists(CLI):
        pytest.skip(f"{CLI} is missing: run scripts/setup.sh")
    p = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def cli_json(*args):
    p = heaplens(*args, "--json", "-")
    assert p.returncode in (0, 1), (p.returncode, p.stderr)
    return json.loads(p.stdout), p


def key(f):
    v = f.get("variable") or {}
    return (f["kind"], f["severity"], f["address"], v.get("name"), v.get("function"))


def frame_names(frames_report):
    return {t["thread"]: [f["function"] for f in t["frames"]] for t in frames_report["threads"]}


# --- the cores ------------------------------------------------------------------------------------
class Case:
    def __init__(self, exe, core, truth_dir, plugin, leaks=None, frames=None):
        self.exe, self.core, self.truth_dir, self.plugin = exe, core, truth_dir, plugin
        self.leaks, self.frames = leaks, frames


def _plugin_on_core(exe, core, extra_cmds=()):
    d = os.path.dirname(core)
    cmds = [f"heap-leaks --json {d}/leaks.json", f"heap-frames --json {d}/frames.json",
            *(c.replace("{d}", d) for c in extra_cmds)]
    run = run_core(exe, core, d, extra=cmds)
    return Case(exe, core, d, run, json.load(open(f"{d}/leaks.json")), json.load(open(f"{d}/frames.json")))


def _checkpoint_case(name, args=(), opt="-O0", extra_cmds=()):
    exe = build(name, opt)
    live = run_live(exe, list(args))
    assert live.core, "gcore failed"
    return _plugin_on_core(exe, live.core, extra_cmds)


def _abort_case(opt):
    """threaded_server big: run under gdb to glibc's abort, gcore there, then the plugin on it.
    Built here, not in harness.build's cache shared by every checkout on the machine: the crash
    context reads the calling line from the source file the DWARF names, which must be this one."""
    d = tempfile.mkdtemp(prefix="hl-abort-", dir=RUNS)
    exe = os.path.join(d, "threaded_server")
    subprocess.run(["gcc", "-g", opt, "-pthread", "-o", exe, os.path.join(EXAMPLES, "threaded_server.c")],
                   check=True, capture_output=True)
    core = os.path.join(d, "core")
    p = subprocess.run(gdb_cmd(False) + ["-ex", "run big", "-ex", f"gcore {core}", "-ex", "kill", "--args", exe],
                       capture_output=True, text=True, timeout=180)
    assert os.path.exists(core), p.stdout[-2000:]
    return _plugin_on_core(exe, core)


@pytest.fixture(scope="module")
def cases():
    made = {}
    yield made
    for c in made.values():                   # cores are big: gone with the module, not at exit
        if c.core and c.core.startswith(RUNS):
            shutil.rmtree(os.path.dirname(c.core), ignore_errors=True)


def get(cases, name):
    if name not in cases:
        if name == "known_heap":
            cases[name] = _checkpoint_case("known_heap")
        elif name == "tcache_double_free":
            cases[name] = _checkpoint_case("tcache_double_free")
        elif name == "stale":
            cases[name] = _checkpoint_case("stale_pointers", ["stale"], extra_cmds=[
                "frame 1", "info alloc holder->data --json {d}/i1.json"])
        elif name == "stale-O2":
            cases[name] = _checkpoint_case("stale_pointers", ["stale"], "-O2")
        elif name == "trace_leaks":
            cases[name] = _checkpoint_case("trace_leaks")
        elif name == "clean":
            cases[name] = _checkpoint_case("stale_pointers", ["clean"])
        elif name == "abort-O0":
            cases[name] = _abort_case("-O0")
        elif name == "abort-O2":
            cases[name] = _abort_case("-O2")
    return cases[name]


# --- same reports as the plugin -------------------------------------------------------------------
def without_pointer_origin(rep):
    """The report minus how the crash's pointer was found (see the module's comment)."""
    rep = json.loads(json.dumps(rep))
    for f in rep["findings"]:
        if f["check"] == "crash":
            f["evidence"] = [e for e in f["evidence"] if not e.startswith("the pointer ")]
    if rep.get("program", {}).get("crash"):
        rep["program"]["crash"].pop("pointer_from", None)
    return rep


def plain_text(t):
    return re.sub(r"\[\d+\.\d+ s\]|\nJSON report written to \S+", "", t).strip()


@pytest.mark.parametrize("name", ["known_heap", "tcache_double_free", "stale", "trace_leaks", "abort-O0"])
def test_check_stats_frames_equal_the_plugin(cases, name):
    c = get(cases, name)
    rep, p = cli_json("check", c.core, "--exe", c.exe)
    assert rep["schema"] == "heaplens/1" and rep["command"] == "heap-check"
    want = c.plugin.check
    if name.startswith("abort"):
        mine, theirs = rep["program"]["crash"], want["program"]["crash"]
        assert mine["pointer"] == theirs["pointer"]
        if mine["pointer_from"] != theirs["pointer_from"]:
            # the plugin read libc's own variable (gdb has libc's DWARF); the CLI does not read
            # system libraries' variables and names the pointer from the program's instead
            assert "_int_free" in theirs["pointer_from"] or "libc_free" in theirs["pointer_from"]
            assert mine["pointer_from"].startswith(("inferred", "a guess", "'"))
        rep, want = without_pointer_origin(rep), without_pointer_origin(want)
    assert norm(rep) == norm(want)
    stats, _ = cli_json("stats", c.core, "--exe", c.exe)
    assert norm(stats) == norm(c.plugin.stats)
    frames, _ = cli_json("frames", c.core, "--exe", c.exe)
    assert frame_names(frames) == frame_names(c.frames)           # every frame gdb shows, in order
    fr, want_fr = (without_pointer_origin(frames), without_pointer_origin(c.frames)) if name.startswith("abort") \
        else (frames, c.frames)
    assert norm(fr) == norm(want_fr)
    if not name.startswith("abort"):                               # the text is the plugin's text too
        text = heaplens("check", c.core, "--exe", c.exe).stdout
        assert plain_text(text) == plain_text(c.plugin.texts["heap-check"])


@pytest.mark.parametrize("name", ["known_heap", "tcache_double_free", "trace_leaks"])
def test_info_equals_the_plugin_for_every_truth_address(cases, name):
    c = get(cases, name)
    addrs = sorted(c.plugin.infos)
    assert addrs, "the program recorded no truth addresses"
    p = heaplens("info", c.core, *[f"{a:#x}" for a in addrs], "--exe", c.exe, "--json", "-")
    assert p.returncode == 0, p.stderr
    got = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(got) == len(addrs)
    for a, rep in zip(addrs, got):
        assert rep["address"] == a
        assert norm(rep) == norm(c.plugin.infos[a]), hex(a)


def test_info_and_why_take_expressions(cases):
    c = get(cases, "stale")
    # a local of the stopped thread's frames (main, frame 1: frame 0 is heaplens_checkpoint)
    rep, _ = cli_json("info", c.core, "holder->data", "--exe", c.exe)
    want = json.load(open(os.path.join(c.truth_dir, "i1.json")))
    assert norm(rep) == norm(want)
    assert rep["state"] in ("free", "cached")
    # the expressions name the same chunks the plugin's findings name
    uaf = {f["variable"]["name"]: f for f in c.plugin.check["findings"] if f["kind"] == "use-after-free"}
    for expr in ("g_head", "conn.buf", "holder->data"):
        r, _ = cli_json("info", c.core, expr, "--exe", c.exe)
        assert r["user_start"] == uaf[expr]["address"], expr
        assert r["expression"] == expr
    r, _ = cli_json("info", c.core, "g_head", "--frame", "1", "--thread", "1", "--exe", c.exe)
    assert r["user_start"] == uaf["g_head"]["address"]
    p = heaplens("info", c.core, "no_such_variable", "--exe", c.exe)
    assert p.returncode == 2 and "cannot evaluate 'no_such_variable'" in p.stderr and not p.stdout
    w, _ = cli_json("why", c.core, "holder->data", "--exe", c.exe)
    assert w["command"] == "heap-why" and w["expression"] == "holder->data"


def test_leaks_equal_the_plugin_and_the_truth(cases):
    c = get(cases, "trace_leaks")
    rep, p = cli_json("leaks", c.core, "--exe", c.exe)
    assert p.returncode == 1                              # leaks are warnings: --fail-on warning
    assert norm(rep) == norm(c.leaks)
    exp = {}
    for kind, addr in c.plugin.truth.expect:
        exp.setdefault(kind, []).append(addr)
    cats = {e["address"]: name for name in ("definitely", "indirectly", "possibly")
            for e in rep[f"{name}_lost"]}
    assert all(cats.get(a) == "definitely" for a in exp["definitely-lost"])
    assert all(cats.get(a) == "indirectly" for a in exp["indirectly-lost"])
    assert sorted(cats.get(a) for a in exp["cycle-lost"]) == ["definitely", "indirectly", "indirectly"]
    assert cats.get(exp["possibly-lost"][0]) == "possibly"
    assert not [a for a in exp["reachable"] if a in cats]
    s = rep["summary"]
    assert (s["definitely"]["count"], s["indirectly"]["count"], s["possibly"]["count"]) == (4, 11, 1)
    cons, _ = cli_json("leaks", c.core, "--exe", c.exe, "--conservative")
    assert cons["conservative_report"]["summary"]["definitely"]["count"] == 3
    assert heaplens("leaks", c.core, "--exe", c.exe, "--fail-on", "critical").returncode == 0


# --- crash context and -O2 --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["abort-O0", "abort-O2"])
def test_abort_core_names_the_double_free_like_the_plugin(cases, name):
    c = get(cases, name)
    rep, p = cli_json("check", c.core)                    # the executable found from the core
    assert p.returncode == 1
    crash = [f for f in rep["findings"] if f["check"] == "crash"]
    assert len(crash) == 1 and rep["findings"][0] == crash[0]
    f = crash[0]
    assert f["kind"] == "double-free" and f["severity"] == "critical"
    assert f["variable"]["name"] == "response" and f["variable"]["function"] == "handler_query_response"
    assert rep["program"]["stop"] == c.plugin.check["program"]["stop"]
    want = c.plugin.check["findings"][0]
    assert key(f) == key(want)
    assert (f["variable"]["thread"], f["variable"]["tid"], f["variable"]["frame"]) == \
        (want["variable"]["thread"], want["variable"]["tid"], want["variable"]["frame"])
    assert f["message"] == want["message"]
    frames, _ = cli_json("frames", c.core)
    assert frame_names(frames) == frame_names(c.frames)
    _program_findings_cover_the_plugin(rep, c)


@pytest.mark.parametrize("name", ["stale-O2", "abort-O2"])
def test_O2_cli_places_at_least_the_plugins_variables(cases, name):
    c = get(cases, name)
    rep, _ = cli_json("check", c.core, "--exe", c.exe)
    _program_findings_cover_the_plugin(rep, c)


def _program_findings_cover_the_plugin(rep, c):
    """Every program-level finding of the plugin is the CLI's; a finding only the CLI has is for a
    variable the plugin lists as optimized out in that frame (an aggregate in registers)."""
    mine = {key(f): f for f in rep["findings"]}
    theirs = {key(f): f for f in c.plugin.check["findings"]}
    assert set(theirs) <= set(mine), set(theirs) - set(mine)
    gone = {(t["thread"], fr["level"], v["name"]) for t in c.frames["threads"] for fr in t["frames"]
            for v in fr["variables"] if v.get("optimized_out")}
    for k in set(mine) - set(theirs):
        v = mine[k]["variable"]
        base = re.split(r"[.\[]|->", v["name"])[0]
        assert (v["thread"], v["frame"], base) in gone, (k, sorted(gone))


# --- the kernel's cores, signal frames, missing pages ------------------------------------------------
SIG_SRC = r"""
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char *g_buf;
static void handler(int sig)
{
    (void)sig;
    char *p = g_buf;
    free(p);
    free(p);                                    /* a double free inside a signal handler */
}
static pthread_barrier_t started;
static void *idle(void *arg) { (void)arg; pthread_barrier_wait(&started); for (;;) pause(); return NULL; }
__attribute__((noinline)) static void work(int n)
{
    g_buf = malloc(4000 + n);
    memset(g_buf, 1, 16);
    raise(SIGUSR1);
}
int main(void)
{
    pthread_t t;
    pthread_barrier_init(&started, NULL, 2);
    pthread_create(&t, NULL, idle, NULL);
    pthread_barrier_wait(&started);
    usleep(20000);                              /* let the thread reach pause() */
    signal(SIGUSR1, handler);
    void *keep = malloc(100);
    work(0);
    free(keep);
    return 0;
}
"""


def _kernel_core(exe, args, d):
    pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    if pattern.startswith("|"):
        pytest.skip(f"core dumps go to a program ({pattern}), not a file")

    def limit():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    subprocess.run([exe, *args], cwd=d, preexec_fn=limit, capture_output=True, timeout=60)
    found = [c for c in glob.glob(os.path.join(d, "core*")) if os.path.isfile(c)]
    if not found:
        pytest.skip(f"the kernel wrote no core file (core_pattern {pattern!r})")
    return found[0]


def _gdb_bt(exe, core):
    p = subprocess.run(gdb_cmd(False) + ["-ex", "thread apply all bt", exe, core], capture_output=True,
                       text=True, timeout=120)
    out, cur = {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"Thread (\d+) ", line)
        if m:
            cur = out.setdefault(int(m.group(1)), [])
            continue
        m = re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(<signal handler called>|\S+)", line)
        if m and cur is not None:
            cur.append(m.group(1))
    return out


def test_kernel_core_with_a_signal_frame_unwinds_like_gdb(tmp_path):
    src, exe = tmp_path / "sig.c", str(tmp_path / "sig")
    src.write_text(SIG_SRC)
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-o", exe, str(src)], check=True, capture_output=True)
    core = _kernel_core(exe, [], str(tmp_path))
    frames, _ = cli_json("frames", core)
    names = frame_names(frames)
    assert names == _gdb_bt(exe, core)
    t1 = names[1]
    assert "<signal handler called>" in t1 and t1[t1.index("<signal handler called>") - 1] == "handler"
    assert t1[-2:] == ["work", "main"]                  # unwound through the signal frame
    rep, p = cli_json("check", core)
    f = rep["findings"][0]
    assert f["kind"] == "double-free" and f["variable"]["name"] == "p" and f["variable"]["function"] == "handler"
    assert rep["program"]["stop"]["signal"] == "SIGABRT"


def _segments(core):
    """(vaddr, memsz, file offset, filesz) of a core's PT_LOAD segments."""
    data = open(core, "rb").read(1 << 16)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    out = []
    for i in range(phnum):
        t, _f, off, va, _pa, fsz, msz, _a = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if t == 1:
            out.append((va, msz, off, fsz))
    return out


def test_truncated_kernel_core_warns_and_reports_the_rest(tmp_path):
    exe = build("threaded_server", "-O0", src_dir=EXAMPLES)
    core = _kernel_core(exe, ["big"], str(tmp_path))
    full, _ = cli_json("check", core)
    # cut the file inside the main thread's stack (the last writable mapping the kernel dumps)
    stack = max((s for s in _segments(core) if s[3] and s[0] < 0x7FFFFFFFF000), key=lambda s: s[0])
    cut = str(tmp_path / "cut.core")
    with open(core, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(stack[2] + 4096))
    rep, p = cli_json("check", cut)
    assert "warning: the core file is truncated" in p.stderr
    assert any("truncated" in n for n in rep["notes"])
    frames, _ = cli_json("frames", core)
    main_thread = next(t for t, names in frame_names(frames).items() if "main" in names)
    assert f"thread {main_thread}: the stack could not be unwound further" in p.stderr   # main's stack is gone
    # the rest of the report: the heap and the crash context are all still there
    assert norm(rep["summary"]) == norm(full["summary"])
    assert [key(f) for f in rep["findings"]] == [key(f) for f in full["findings"]]
    assert rep["findings"][0]["kind"] == "double-free"


def test_truncated_gcore_says_what_is_missing(cases, tmp_path):
    c = get(cases, "tcache_double_free")
    cut = str(tmp_path / "cut.core")
    with open(c.core, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(os.path.getsize(c.core) * 3 // 4))   # gcore writes its notes last: they go
    p = heaplens("check", cut)
    assert p.returncode == 2 and not p.stdout
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "the core file is truncated" in err[0] and "glibc cannot be located" in err[0]


def test_gcore_leaves_out_library_code_which_comes_from_disk(cases):
    """gcore's default filter leaves read-only file mappings (libc's code) out of the core: the
    unwinder reads libc's code and .eh_frame from the file on disk and still finds every frame."""
    c = get(cases, "abort-O0")
    segs = _segments(c.core)
    regions = json.loads(heaplens("frames", c.core, "--json", "-").stdout)
    pcs = [f["pc"] for t in regions["threads"] for f in t["frames"]]
    libc_pcs = [pc for pc in pcs if not any(va <= pc < va + msz and fsz for va, msz, _, fsz in segs)]
    assert libc_pcs, "every frame's code is in the core: nothing left out to test"
    assert sum(len(v) for v in frame_names(regions).values()) == sum(len(v) for v in frame_names(c.frames).values())


# --- the executable -------------------------------------------------------------------------------
def test_moved_executable_needs_exe_and_wrong_exe_is_named(cases, tmp_path):
    c = get(cases, "tcache_double_free")
    moved = str(tmp_path / "prog")
    shutil.copy(c.exe, moved)
    live = run_live(moved)
    os.rename(moved, moved + ".elsewhere")
    p = heaplens("check", live.core, "--json", "-")
    assert f"the executable {moved} (named by the core) is not on this machine: pass --exe" in p.stderr
    good, _ = cli_json("check", live.core, "--exe", moved + ".elsewhere")
    assert good["program"]["variables"] > 0
    assert norm(good["findings"]) == norm(live.check["findings"])
    other = build("clean_small")
    p = heaplens("check", live.core, "--exe", other)
    assert "is not the program that dumped this core (build-id" in p.stderr
    p = heaplens("check", live.core, "--exe", str(tmp_path / "nothing"))
    assert p.returncode == 2 and "no such file" in p.stderr


# --- batch mode, exit status, help ----------------------------------------------------------------
def test_jsonl_batch_one_line_per_core_in_order(cases, tmp_path):
    a, b = get(cases, "tcache_double_free"), get(cases, "clean")
    garbage = tmp_path / "garbage.core"
    garbage.write_bytes(b"not a core at all\n" * 100)
    missing = str(tmp_path / "missing.core")
    p = heaplens("check", a.core, str(garbage), b.core, missing, "--jsonl", "--jobs", "2")
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert [rep["core"] for rep in lines] == [a.core, str(garbage), b.core, missing]
    assert lines[0]["error"] is None and lines[0]["schema"] == "heaplens/1"
    assert norm({k: v for k, v in lines[0].items() if k not in ("core", "error", "warnings")}) == norm(a.plugin.check)
    assert "not a 64-bit little-endian ELF core file" in lines[1]["error"]
    assert lines[2]["error"] is None
    assert norm({k: v for k, v in lines[2].items() if k not in ("core", "error", "warnings")}) == norm(b.plugin.check)
    assert "cannot open core file" in lines[3]["error"]
    assert p.returncode == 2                              # some cores could not be analysed
    assert "\r[" not in p.stderr                          # no progress bar: stderr is not a terminal
    out = str(tmp_path / "all.jsonl")
    p = heaplens("check", a.core, b.core, "--jsonl", "--json", out)
    assert p.returncode == 1 and len(open(out).read().splitlines()) == 2


def test_exit_status_by_severity(cases, tmp_path):
    clean = get(cases, "clean")                           # allocator and program: nothing wrong
    assert not [f for f in clean.plugin.check["findings"] if f["severity"] in ("critical", "warning")]
    assert heaplens("check", clean.core).returncode == 0
    c = get(cases, "stale")                               # warnings only
    sev = {f["severity"] for f in c.plugin.check["findings"]}
    assert "warning" in sev and "critical" not in sev
    assert heaplens("check", c.core).returncode == 1
    assert heaplens("check", c.core, "--fail-on", "critical").returncode == 0
    assert heaplens("check", get(cases, "tcache_double_free").core, "--fail-on", "critical").returncode == 1
    assert heaplens("stats", c.core).returncode == 0
    assert heaplens("check", str(tmp_path / "missing")).returncode == 2
    assert heaplens("check", c.core, "--fail-on", "bogus").returncode == 2
    assert heaplens("check").returncode == 2
    assert heaplens().returncode == 2
    assert heaplens("stats", c.core, c.core).returncode == 2
    p = heaplens("check", c.core, "--json", str(tmp_path / "r.json"))
    assert p.returncode == 1 and json.load(open(tmp_path / "r.json"))["command"] == "heap-check"
    assert f"JSON report written to {tmp_path / 'r.json'}" in p.stdout


def test_help():
    p = heaplens("--help")
    assert p.returncode == 0
    for word in ("check", "leaks", "info", "stats", "frames", "why", "exit status", "--fail-on"):
        assert word in p.stdout
    p = heaplens("check", "--help")
    assert p.returncode == 0 and "--jsonl" in p.stdout and "--gdb-remote" in p.stdout and "--exe" in p.stdout
    assert heaplens("info", "--help").returncode == 0


def test_remote_arguments_are_checked_and_failures_are_one_sentence(cases):
    c = get(cases, "clean")
    p = heaplens("check", c.core, "--pid", "1")
    assert p.returncode == 2 and "no core file argument" in p.stderr
    p = heaplens("frames", c.core, "--pid", "1")
    assert p.returncode == 2                              # frames has no --pid: a usage error
    p = heaplens("check", "--gdb-remote", "127.0.0.1:1", timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("heaplens: ") and len(p.stderr.strip().splitlines()) == 1


def test_garbage_stacks_stop_the_unwinder_cleanly(cases, tmp_path):
    """Random bytes over the crashing thread's stack: every thread still gets the frames that can
    be trusted, the heap report is unchanged, and no traceback, hang or unbounded walk results."""
    import random
    c = get(cases, "abort-O0")
    from common.elfcore import CoreFile
    cf = CoreFile(c.core)
    rsp = cf.threads[0].regs["rsp"]
    seg = next(s for s in cf.segments if s[0] <= rsp < s[0] + s[1] and s[3])
    cf.close()
    full, _ = cli_json("check", c.core)
    rng = random.Random(7)
    for trial in range(3):
        bad = str(tmp_path / f"bad{trial}.core")
        shutil.copy(c.core, bad)
        with open(bad, "r+b") as f:
            f.seek(seg[2] + rsp - seg[0] + 8 * trial)           # over the saved registers and return addresses
            f.write(bytes(rng.randrange(256) for _ in range(2048)) if trial < 2 else b"\0" * 2048)
        frames, p = cli_json("frames", bad)
        assert p.returncode in (0, 1)
        names = frame_names(frames)
        assert names[2] == frame_names(c.frames)[2] and names[3] == frame_names(c.frames)[3]   # other threads
        assert 1 <= len(names[1]) <= 64
        rep, p = cli_json("check", bad)
        assert norm(rep["summary"]) == norm(full["summary"])
        assert p.returncode in (0, 1)


def test_unwinder_survives_random_stack_words(cases):
    """300 random mutations of saved words, return addresses, pc and sp: the unwinder returns at
    most the frame limit, quickly, and never raises."""
    import random
    import time
    from common.coretarget import CoreTarget
    from common.unwind import Unwinder
    t = CoreTarget(get(cases, "abort-O0").core)
    code_at, is_code = t._code_at()
    th = t.core.threads[0]
    rsp, rng = th.regs["rsp"], random.Random(1)
    for trial in range(300):
        over = {}
        for _ in range(rng.randrange(1, 40)):
            a = (rsp + rng.randrange(0, 0x400)) & ~7
            over[a] = struct.pack("<Q", rng.choice([0, rng.getrandbits(64), a + 8 * rng.randrange(-4, 8),
                                                     th.regs["rip"], rsp]))

        def read(addr, n, over=over):
            data = bytearray(t.core.read(addr, n))
            for a, b in over.items():
                if addr <= a <= addr + n - 8:
                    data[a - addr:a - addr + 8] = b
            return bytes(data)
        regs = dict(th.regs)
        if trial % 5 == 0:
            regs["rip"] = rng.getrandbits(64)
        if trial % 7 == 0:
            regs["rsp"] = rng.getrandbits(64)
        t0 = time.perf_counter()
        frames, why = Unwinder(read, code_at, is_code).unwind(regs, 64)
        assert len(frames) <= 64 and time.perf_counter() - t0 < 2.0
        assert why


def test_progress_bar_only_on_a_terminal(cases):
    import pty
    a, b = get(cases, "tcache_double_free"), get(cases, "clean")
    master, slave = pty.openpty()
    try:
        p = subprocess.run([CLI, "check", a.core, b.core, "--jsonl"], stdout=subprocess.PIPE, stderr=slave,
                           timeout=300)
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert p.returncode == 1 and len(p.stdout.splitlines()) == 2
    assert b"2/2 cores" in err and b"\r[" in err


OTHER = {"jemalloc": ("je_known", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
         "tcmalloc": ("tc_known_heap", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")}


@pytest.mark.parametrize("allocator", sorted(OTHER))
def test_other_allocators_equal_the_plugin(allocator, tmp_path):
    """jemalloc and tcmalloc (preloaded) cores: the same heap-check, heap-stats and info answers
    (info on a sample of ~200 truth addresses: these programs record thousands)."""
    from truth import addresses, read_truth
    name, lib = OTHER[allocator]
    if not os.path.exists(lib) or not os.path.exists(os.path.join(ROOT, "tests", "programs", name + ".c")):
        pytest.skip(f"{lib} or tests/programs/{name}.c is missing")
    exe = build(name)
    d, core, truth = str(tmp_path), str(tmp_path / "core"), str(tmp_path / "truth.txt")
    env = dict(os.environ, HEAPLENS_TRUTH=truth)
    subprocess.run(gdb_cmd(False) + ["-ex", f"set environment LD_PRELOAD={lib}", "-ex", "break heaplens_checkpoint",
                                     "-ex", "run", "-ex", f"gcore {core}", "-ex", "kill", exe],
                   env=env, capture_output=True, text=True, timeout=300)
    assert os.path.exists(core)
    addrs = sorted(set(addresses(read_truth(truth))))
    addrs = addrs[::max(1, len(addrs) // 200)]
    cmds = ["-ex", f"heap-check --json {d}/check.json", "-ex", f"heap-stats --json {d}/stats.json"]
    for k, a in enumerate(addrs):
        cmds += ["-ex", f"info alloc {a:#x} --json {d}/info{k}.json"]
    p = subprocess.run(gdb_cmd(False) + cmds + [exe, core], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stdout + p.stderr
    rep, _ = cli_json("check", core, "--exe", exe)
    want = json.load(open(f"{d}/check.json"))
    assert rep["allocator"] == allocator == want["allocator"]
    assert norm(rep) == norm(want)
    stats, _ = cli_json("stats", core, "--exe", exe)
    assert norm(stats) == norm(json.load(open(f"{d}/stats.json")))
    p = heaplens("info", core, *[f"{a:#x}" for a in addrs], "--exe", exe, "--json", "-")
    got = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(got) == len(addrs)
    for k, (a, r) in enumerate(zip(addrs, got)):
        assert norm(r) == norm(json.load(open(f"{d}/info{k}.json"))), hex(a)
