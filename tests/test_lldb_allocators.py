"""jemalloc and tcmalloc in lldb-16: the same walkers behind the same commands. On the core gdb
made, lldb's answers must equal gdb's for every recorded pointer; live (lldb launches the program
with the library in LD_PRELOAD), every pointer must have the state the program recorded."""
import os
import tempfile

import pytest

from harness import BUILD, build, run_core, run_live
from test_lldb import LLDB, load_run, run_lldb_probe

LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
PROGRAM = {"jemalloc": "je_known", "tcmalloc": "tc_known_heap"}
PROGRAM_CHECKS = ("stale-pointer", "type-size", "crash", "cap")
INFO_FIELDS = ("state", "user_start", "size", "bin", "tid", "recency", "arena")

pytestmark = [pytest.mark.skipif(LLDB is None, reason="lldb-16 is not installed")]


def needs(alloc):
    if not os.path.exists(LIBS[alloc]):
        pytest.skip(f"{LIBS[alloc]} is not installed")
    if not os.path.exists(os.path.join(os.path.dirname(__file__), "programs", PROGRAM[alloc] + ".c")):
        pytest.skip(f"tests/programs/{PROGRAM[alloc]}.c is missing")
    return build(PROGRAM[alloc])


def heap_findings(run):
    return sorted((f["kind"], f["address"]) for f in run.check["findings"]
                  if f["severity"] in ("critical", "warning") and f["check"] not in PROGRAM_CHECKS)


@pytest.mark.parametrize("alloc", ["jemalloc", "tcmalloc"])
def test_lldb_core_equals_gdb(alloc):
    exe = needs(alloc)
    live = run_live(exe, preload=LIBS[alloc])
    assert live.core, live.stdout[-2000:]
    truth_dir = os.path.dirname(live.core)
    try:
        gdb = run_core(exe, live.core, truth_dir)
        out = tempfile.mkdtemp(prefix=f"hl-lldb-{alloc}-", dir=BUILD)
        text = run_lldb_probe(out, os.path.join(truth_dir, "truth.txt"), f"target create {exe} --core {live.core}")
        lldb = load_run(out, text, truth_dir)
    finally:
        os.unlink(live.core)
    assert lldb.check["allocator"] == gdb.check["allocator"] == alloc
    ls, gs = lldb.check["summary"][0], gdb.check["summary"][0]
    for k in ("version", "layout", "chunks", "states", "arenas", "threads"):
        assert ls[k] == gs[k], (k, ls[k], gs[k])
    assert heap_findings(lldb) == heap_findings(gdb)
    addrs = list(gdb.infos)
    assert len(addrs) > 100
    diff = [(hex(a), f, lldb.infos[a].get(f), gdb.infos[a].get(f)) for a in addrs for f in INFO_FIELDS
            if lldb.infos[a].get(f) != gdb.infos[a].get(f)]
    assert not diff, diff[:10]
    assert lldb.stats["heaps"][0]["totals"] == gdb.stats["heaps"][0]["totals"]


@pytest.mark.parametrize("alloc", ["jemalloc", "tcmalloc"])
def test_lldb_live_states_match_the_program(alloc):
    exe = needs(alloc)
    out = tempfile.mkdtemp(prefix=f"hl-lldb-live-{alloc}-", dir=BUILD)
    truth = os.path.join(out, "truth.txt")
    text = run_lldb_probe(out, truth, f"target create {exe}", "breakpoint set -n heaplens_checkpoint",
                          f"process launch -E LD_PRELOAD={LIBS[alloc]} -E HEAPLENS_TRUTH={truth}")
    run = load_run(out, text, out)
    assert run.check["allocator"] == alloc, run.check.get("notes")
    assert not heap_findings(run), heap_findings(run)[:5]
    t = run.truth
    assert len(t.live) > 100 and len(t.freed) > 10
    bad = [(hex(a), run.infos[a].get("state")) for a in t.live if run.infos[a].get("state") != "allocated"]
    bad += [(hex(a), run.infos[a].get("state")) for a in t.freed
            if run.infos[a].get("state") not in ("free", "cached")]
    assert not bad, bad[:10]
    cached = {run.infos[a].get("tid") for a in t.freed if run.infos[a].get("state") == "cached"}
    assert cached and cached <= set(t.threads), (cached, t.threads)


def test_lldb_reads_a_contained_process_files_through_proc_root(tmp_path):
    """lldb attached to a process in another mount namespace (a container) whose jemalloc lives
    at a path that is empty here: heaplens reads it through /proc/PID/root."""
    from test_remote import NAMESPACES, Contained
    if NAMESPACES.args[0]:
        pytest.skip(NAMESPACES.kwargs["reason"])
    import json
    import subprocess
    from test_lldb import lldb_cmd, lldb_env
    c = Contained(tmp_path)
    try:
        out = tmp_path / "check.json"
        p = subprocess.run(lldb_cmd(f"process attach --pid {c.proc.pid}", f"heap-check --json {out}",
                                    "process detach"), env=lldb_env(), capture_output=True, text=True, timeout=300)
        assert "Traceback" not in p.stdout + p.stderr
        rep = json.load(open(out))
        c.check_report(rep, p.stdout, f"{c.there}/libjemalloc.so.2 is read through /proc/{c.proc.pid}/root")
    finally:
        c.stop()
