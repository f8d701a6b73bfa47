"""Issue 3: heap errors in the program's own terms — crash context at allocator aborts,
stale pointers in variables, size mismatch, annotated frames, scripting — under real gdb,
live and on cores, -O0 and -O2, with and without libc debug info."""
import json
import os
import subprocess

import pytest

from harness import ROOT, build, gdb_cmd, run_core, run_live

pytestmark = pytest.mark.gdb
EXAMPLES = os.path.join(ROOT, "examples")
DEBUG = [False, True]
DEBUG_IDS = ["debuginfo", "nodebug"]


def program_findings(run, kind):
    return [f for f in run.check["findings"] if f["kind"] == kind and f["check"] in ("stale-pointer", "type-size", "crash")]


def by_name(findings):
    return {f["variable"]["name"]: f for f in findings if f.get("variable")}


def run_at_abort(exe, args, nodebug, tmp):
    """Run to the crash (no checkpoint), heap-check there, gcore; then the same on the core."""
    out = os.path.join(tmp, "live.json")
    core = os.path.join(tmp, "core")
    p = subprocess.run(gdb_cmd(nodebug) + ["-ex", "run " + " ".join(args), "-ex", f"heap-check --json {out}",
                                           "-ex", f"gcore {core}", "-ex", "kill", "--args", exe],
                       capture_output=True, text=True, timeout=180)
    assert "Traceback" not in p.stdout + p.stderr
    live = json.load(open(out))
    out2 = os.path.join(tmp, "core.json")
    p2 = subprocess.run(gdb_cmd(nodebug) + ["-ex", f"heap-check --json {out2}", exe, core],
                        capture_output=True, text=True, timeout=180)
    assert "Traceback" not in p2.stdout + p2.stderr
    return live, json.load(open(out2)), p.stdout + p2.stdout


# --- the case study -------------------------------------------------------------------------
@pytest.mark.parametrize("nodebug", DEBUG, ids=DEBUG_IDS)
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_case_study_abort_names_double_free_variable_and_thread(opt, nodebug, tmp_path):
    exe = build("threaded_server", opt, src_dir=EXAMPLES)
    tids = set()
    for rep in run_at_abort(exe, ["big"], nodebug, str(tmp_path))[:2]:
        crash = [f for f in rep["findings"] if f["check"] == "crash"]
        assert len(crash) == 1, rep["findings"]
        f = crash[0]
        assert rep["findings"][0] is not None and rep["findings"][0]["check"] == "crash"   # shown first
        assert f["kind"] == "double-free" and f["severity"] == "critical"
        assert f["variable"]["name"] == "response"
        assert f["variable"]["function"] == "handler_query_response"
        assert f["variable"]["thread"] == rep["program"]["stop"]["thread"]   # the crashing thread
        tids.add(f["variable"]["tid"])
        assert "double free of the 4008-byte buffer that response in handler_query_response points to" \
            in f["message"], f["message"]
        assert "already free in unsorted" in f["message"]
        assert any(e.startswith("glibc: double free or corruption") for e in f["evidence"]), f["evidence"]
        assert rep["program"]["crash"]["operation"] == "free"
        if opt == "-O0":     # the worker's dead job pointer still leads to the buffer
            assert any("job->response (local of worker_main, thread" in e for e in f["evidence"])
    assert len(tids) == 1                                                    # same LWP live and on the core


def test_case_study_silent_cross_thread_double_free_at_checkpoint():
    exe = build("threaded_server", src_dir=EXAMPLES)
    live = run_live(exe, gcore=False)
    df = live.findings("double-free")
    assert len(df) == 1
    f = df[0]
    assert "tcache[18] (0x140) of thread 2 and tcache[18] (0x140) of thread 3" in f["message"]
    assert "(freed by thread 2 and by thread 3)" in f["message"]


def test_breakpoint_condition_catches_the_double_free_as_it_happens():
    exe = build("threaded_server", src_dir=EXAMPLES)
    p = subprocess.run(gdb_cmd(False) + ["-ex", "break free if $heap_is_free($rdi)", "-ex", "run",
                                         "-ex", "bt 3", "-ex", "p $heap_state($rdi)", "-ex", "p $heap_size($rdi)",
                                         "-ex", "kill", exe], capture_output=True, text=True, timeout=180)
    out = p.stdout
    assert "Traceback" not in out + p.stderr
    assert "hit Breakpoint 1" in out and "SIGABRT" not in out, out[-2000:]
    assert "in handler_query_response (id=2" in out          # the second free, not the first
    assert '= "cached"' in out and "= 312" in out


# --- stale pointers and size mismatch ---------------------------------------------------------
@pytest.mark.parametrize("nodebug", DEBUG, ids=DEBUG_IDS)
@pytest.mark.parametrize("where", ["live", "core"])
def test_stale_pointers_named_by_variable_and_field_path(where, nodebug):
    exe = build("stale_pointers")
    live = run_live(exe, ["stale"], nodebug=nodebug)
    run = live if where == "live" else run_core(exe, live.core, os.path.dirname(live.core), nodebug=nodebug)
    uaf = by_name(program_findings(run, "use-after-free"))
    for name in ("g_head", "conn.buf", "holder->data"):
        assert name in uaf, (name, list(uaf))
        assert uaf[name]["severity"] == "warning" and uaf[name]["chunk"]["state"] in ("free", "cached")
    assert uaf["g_head"]["variable"]["kind"] == "global"
    assert uaf["conn.buf"]["variable"]["function"] == "main"
    sm = by_name(program_findings(run, "size-mismatch"))
    assert "big" in sm and "(136 bytes) but points to 24 bytes" in sm["big"]["message"]


@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_clean_program_with_many_live_pointers_reports_none(opt):
    exe = build("stale_pointers", opt)
    run = run_live(exe, ["clean"], gcore=False)
    assert run.check["program"]["pointers"] >= 20, run.check["program"]
    bad = [f for f in run.check["findings"] if f["kind"] in ("use-after-free", "size-mismatch", "double-free",
                                                            "invalid-free")]
    assert not bad, bad


def test_segv_through_a_freed_node_is_critical_in_the_crashing_frame(tmp_path):
    exe = build("stale_pointers")
    live, core, _ = run_at_abort(exe, ["segv"], False, str(tmp_path))
    for rep in (live, core):
        assert rep["program"]["stop"]["signal"] == "SIGSEGV"
        crit = [f for f in rep["findings"] if f["kind"] == "use-after-free" and f["severity"] == "critical"]
        assert [(f["variable"]["name"], f["variable"]["function"]) for f in crit] == [("n", "walk_list")], crit


# --- annotated frames ---------------------------------------------------------------------------
def test_heap_frames_and_annotated_backtrace(tmp_path):
    exe = build("threaded_server", src_dir=EXAMPLES)
    out = str(tmp_path / "frames.json")
    p = subprocess.run(gdb_cmd(False) + ["-ex", "run big", "-ex", f"heap-frames --json {out}",
                                         "-ex", "set heaplens annotate-frames on", "-ex", "bt full 10", "-ex", "kill", exe],
                       capture_output=True, text=True, timeout=180)
    text = p.stdout
    assert "Traceback" not in text + p.stderr
    rep = json.load(open(out))
    assert rep["command"] == "heap-frames" and rep["schema"] == "heaplens/1"
    t2 = next(t for t in rep["threads"] if t["thread"] == 2)
    assert t2["crashed"]
    fr = next(f for f in t2["frames"] if f["function"] == "handler_query_response")
    resp = next(v for v in fr["variables"] if v["name"] == "response")
    assert resp["state"] == "free" and resp["annotation"].startswith("[free: unsorted of arena")
    assert any("double free" in w for w in resp["warnings"])
    # gdb's own backtrace, annotated
    assert "in handler_query_response (id=2, query=" in text
    line = next(l for l in text.splitlines() if l.strip().startswith("response = 0x"))
    assert "[free: unsorted of arena" in line and "4008 B, freed last]" in line, line


def test_scripting_example_and_python_api():
    """examples/scripting.gdb: the breakpoint condition, annotations and a stop hook written
    with the documented Python API (common.api)."""
    exe = build("threaded_server", src_dir=EXAMPLES)
    p = subprocess.run(gdb_cmd(False) + ["-x", os.path.join(EXAMPLES, "scripting.gdb"), "-ex", "run",
                                         "-ex", "python from common import api; from gdb_plugin.api import target; "
                                                "print('API', api.state(target(), int(gdb.parse_and_eval('$rdi'))), "
                                                "api.usable_size(target(), int(gdb.parse_and_eval('$rdi'))))",
                                         "-ex", "kill", exe], capture_output=True, text=True, timeout=180)
    out = p.stdout
    assert "Traceback" not in out + p.stderr
    hit = next(l for l in out.splitlines() if "hit Breakpoint 1" in l)
    assert "__GI___libc_free (mem=0x" in hit and "[cached: tcache[18] (0x140) of thread 3, 312 B, freed last]" in hit
    assert "[heaplens] 19 chunks, " in out
    assert "API cached 312" in out


def test_batch_script_exit_status(tmp_path):
    exe = build("session_cache", src_dir=EXAMPLES)
    live = run_live(exe)
    p = subprocess.run([os.path.join(EXAMPLES, "check_core.sh"), exe, live.core], capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 1 and "critical heap findings" in p.stdout
    rep = json.load(open(live.core + ".heaplens.json"))
    assert rep["findings"][0]["kind"] == "double-free"


def test_cpp_double_delete(tmp_path):
    src = os.path.join(ROOT, "tests", "programs", "double_delete.cc")
    exe = str(tmp_path / "double_delete")
    subprocess.run(["g++", "-g", "-O0", "-o", exe, src], check=True, capture_output=True)
    live, core, _ = run_at_abort(exe, [], False, str(tmp_path))
    for rep in (live, core):
        crash = rep["findings"][0]
        assert crash["check"] == "crash" and crash["kind"] == "double-free", crash
        assert crash["variable"]["name"] == "session" and crash["variable"]["function"] == "main"
        assert "free(): double free detected in tcache 2" in " ".join(crash["evidence"])
        assert "this thread's own cache holds it" in crash["message"]
