"""Acceptance tests: real C programs with real heap bugs, under real gdb, live and from gcore
cores, with libc debug info (libc6-dbg) and without it (the structure path)."""
import functools
import os
import subprocess

import pytest

from harness import GDBINIT, build, gdb_cmd, misclassified_live, run_core, run_live

pytestmark = pytest.mark.gdb

MODES = [("live", False), ("core", False), ("live", True), ("core", True)]
MODE_IDS = ["live-debuginfo", "core-debuginfo", "live-nodebug", "core-nodebug"]


@functools.lru_cache(maxsize=None)
def scenario(name, args=(), opt="-O0", nodebug=False):
    """(live run, core run) of a test program at its checkpoint."""
    exe = build(name, opt)
    live = run_live(exe, args, nodebug=nodebug)
    assert live.core, f"gcore failed:\n{live.stdout[-2000:]}"
    core = run_core(exe, live.core, os.path.dirname(live.core), nodebug=nodebug)
    return live, core


def get(name, mode, nodebug, args=(), opt="-O0"):
    live, core = scenario(name, tuple(args), opt, nodebug)
    return live if mode == "live" else core


def assert_found_by(run, nodebug):
    fb = run.check["summary"][0]["found_by"]
    if nodebug:
        assert fb["main_arena"].startswith("structure"), fb
        assert run.check["summary"][0]["layout"].startswith("built-in table"), run.check["summary"]
    else:
        assert "debug info" in fb["main_arena"], fb
        assert run.check["summary"][0]["layout"] == "debug info"
    assert "tcache" in fb, fb


def assert_truth(run, skip_live_after=None):
    """Every recorded pointer has the state the program says it has."""
    t = run.truth
    assert t is not None
    bad = misclassified_live(run)
    for addr, size in t.freed.items():
        i = run.infos[addr]
        if i.get("state") not in ("free", "cached") or i.get("user_start") != addr:
            bad.append(("freed", hex(addr), size, i.get("state"), i.get("user_start"), i.get("bin")))
    for addr, size in t.mmapped.items():
        i = run.infos[addr]
        if i.get("state") != "mmapped" or i.get("user_start") != addr or i.get("size", 0) < size:
            bad.append(("mmapped", hex(addr), size, i.get("state"), i.get("user_start"), i.get("size")))
    assert not bad, f"{len(bad)} pointers misclassified, first: {bad[:5]}"


PROGRAM_CHECKS = ("stale-pointer", "type-size", "crash")


def error_findings(run):
    """Errors in the allocator's metadata (the test programs keep dangling pointers in local
    arrays on purpose, which the program-level checks rightly report)."""
    return [f for f in run.check["findings"] if f["severity"] in ("critical", "warning")
            and f["check"] not in PROGRAM_CHECKS]


# --- clean heaps ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,nodebug", MODES, ids=MODE_IDS)
def test_known_heap_every_chunk_state(mode, nodebug):
    run = get("known_heap", mode, nodebug)
    assert_found_by(run, nodebug)
    assert_truth(run)
    assert not error_findings(run), error_findings(run)
    t = run.truth
    assert len(t.freed) > 100 and len(t.mmapped) == 2
    states = run.check["summary"][0]["states"]
    assert states["cached"] > 0 and states["free"] > 0 and states["mmapped"] == 2
    # every freed chunk in a tcache is attributed to a live thread of the program
    bins = {run.infos[a]["bin"].split(" of ")[0].split("[")[0] for a in t.freed}
    assert {"tcache", "fastbin", "smallbin", "largebin", "unsorted"} <= bins, bins
    tids = set(t.threads)
    assert len(tids) == 4
    cached_tids = {run.infos[a]["tid"] for a in t.freed if run.infos[a]["state"] == "cached"}
    assert cached_tids and cached_tids <= tids and len(cached_tids) == 4
    assert run.check["summary"][0]["arenas"] == 4


@pytest.mark.parametrize("mode,nodebug", MODES, ids=MODE_IDS)
def test_busy_multithreaded_heap_is_clean(mode, nodebug):
    run = get("busy_heap", mode, nodebug)
    assert not error_findings(run), error_findings(run)[:5]
    assert_truth(run)
    s = run.check["summary"][0]
    assert s["chunks"] > 2000 and s["arenas"] >= 4
    assert s["states"]["free"] > 0 and s["states"]["cached"] > 0 and s["states"]["mmapped"] >= 4
    stats = run.stats["heaps"][0]
    assert len(stats["arenas"]) == s["arenas"]
    assert len(stats["thread_caches"]) == len(run.truth.threads)


def test_clean_small_program_at_O2():
    live, core = scenario("clean_small", (), "-O2", False)
    for run in (live, core):
        assert_truth(run)
        assert not error_findings(run)


def test_known_heap_at_O2_without_debuginfo():
    live, core = scenario("known_heap", (), "-O2", True)
    for run in (live, core):
        assert_truth(run)
        assert not error_findings(run)


# --- double frees ------------------------------------------------------------------------------
def expected(run, kind):
    return [a for k, a in run.truth.expect if k == kind]


@pytest.mark.parametrize("mode,nodebug", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("prog,args", [("tcache_double_free", ("cross",)), ("tcache_double_free", ("key",)),
                                       ("fastbin_double_free", ())],
                         ids=["tcache+fastbin", "tcache-loop", "fastbin-loop"])
def test_double_free_reported_at_the_pointer(prog, args, mode, nodebug):
    run = get(prog, mode, nodebug, args)
    want = expected(run, "double-free")
    assert len(want) == 1
    got = run.findings("double-free")
    assert [f["address"] for f in got] == want, got
    f = got[0]
    assert f["severity"] == "critical" and f["chunk"]["start"] == want[0] - 16
    assert any("tcache" in e or "fastbin" in e for e in f["evidence"]), f
    info = run.infos[want[0]]
    assert info["state"] in ("cached", "free") and any("double-free" in w for w in info["warnings"])
    # the rest of the heap is still classified correctly
    assert_truth(run)


def test_tcache_and_fastbin_double_free_names_both_lists():
    live, _ = scenario("tcache_double_free", ("cross",), "-O0", False)
    f = live.findings("double-free")[0]
    assert "was freed twice: it is in tcache[1] (0x30) of thread 1 and fastbin[1] (0x30) of main_arena" \
        in f["message"], f["message"]
    assert any(e.startswith("in tcache[1] (0x30) of thread 1") for e in f["evidence"]), f["evidence"]
    assert any(e.startswith("in fastbin[1] (0x30) of main_arena") for e in f["evidence"]), f["evidence"]


# --- corrupted metadata ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode,nodebug", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("mode_arg", ["tcache", "smallbin"])
def test_freelist_link_overwritten_after_free(mode_arg, mode, nodebug):
    run = get("freelist_overwrite", mode, nodebug, (mode_arg,))
    want = expected(run, "metadata-corruption")
    assert len(want) == 1
    got = [f for f in run.findings("metadata-corruption") if f["address"] == want[0]]
    assert got, run.check["findings"]
    assert not run.findings("double-free")
    assert_truth(run)


@pytest.mark.parametrize("mode,nodebug", MODES, ids=MODE_IDS)
def test_size_field_smashed_by_overflow(mode, nodebug):
    run = get("size_smash", mode, nodebug)
    want = expected(run, "metadata-corruption")
    assert len(want) == 1
    got = [f for f in run.findings("metadata-corruption") if f["address"] == want[0]]
    assert got and got[0]["severity"] == "critical", run.check["findings"]
    assert "0x4141414141414141" in got[0]["message"]
    # the walk recovered: every chunk after the smashed one is still classified
    b = want[0]
    live_after = {a: s for a, s in run.truth.live.items() if a != b}
    assert len([a for a in live_after if a > b]) >= 20
    run.truth.live.pop(b)
    assert_truth(run)


# --- batch use ---------------------------------------------------------------------------------
def test_fail_on_makes_gdb_batch_exit_nonzero():
    live, _ = scenario("fastbin_double_free", (), "-O0", False)
    exe = build("fastbin_double_free")
    p = subprocess.run(gdb_cmd(False) + ["-ex", "heap-check --fail-on critical", exe, live.core],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "heap-check: 1 finding(s) of severity critical or worse (first: double-free" in p.stderr
    p = subprocess.run(gdb_cmd(False) + ["-ex", "heap-check --fail-on critical",
                                         build("clean_small"), scenario("clean_small", (), "-O2", False)[0].core],
                       capture_output=True, text=True, timeout=120)
    # a core of the -O2 build with the -O0 executable is a mismatch gdb warns about; use the right one
    p = subprocess.run(gdb_cmd(False) + ["-ex", "heap-check --fail-on critical", build("clean_small", "-O2"),
                                         scenario("clean_small", (), "-O2", False)[0].core],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No heap errors found." in p.stdout


def test_loading_twice_and_bad_arguments_are_harmless(tmp_path):
    exe = build("clean_small")
    p = subprocess.run(gdb_cmd(False) + ["-x", GDBINIT, "-ex", "heap-check", "-ex", "heap-check --bogus",
                                         "-ex", "info alloc", "-ex", "info alloc nosuchvar",
                                         "-ex", "heap-stats extra", exe],
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    assert "the program is not running and no core file is loaded" in out
    assert "unknown option --bogus" in out
    assert "usage" in out.lower()


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.skipif(not os.path.exists(JEMALLOC), reason="libjemalloc2 is not installed")
def test_program_using_another_allocator_gets_one_sentence():
    exe = build("clean_small")
    p = subprocess.run(gdb_cmd(False) + ["-ex", f"set environment LD_PRELOAD={JEMALLOC}",
                                         "-ex", "break heaplens_checkpoint", "-ex", "run", "-ex", "heap-check", exe],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "metadata-corruption" not in out and "double-free" not in out
    # the jemalloc walker takes over; glibc, unused, is not mentioned at all
    assert "jemalloc 5.3.0 heap:" in out, out[-2000:]
    assert "glibc's malloc has never been used" not in out


def test_static_binary_gets_one_sentence():
    exe = build("clean_small", "-O0", extra=("-static",))
    p = subprocess.run(gdb_cmd(False) + ["-ex", "break heaplens_checkpoint", "-ex", "run", "-ex", "heap-check", exe],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    assert "heap-check: no glibc (libc.so.6) is loaded in this program" in out


def kernel_core(tmp_path):
    """A core written by the kernel (headers first, as real crash cores are), or skip."""
    import glob
    import resource
    if open("/proc/sys/kernel/core_pattern").read().strip()[:1] == "|":
        pytest.skip("kernel cores are piped to a handler on this machine")
    exe = build("crash_core")

    def unlimited():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    subprocess.run([exe], cwd=str(tmp_path), preexec_fn=unlimited, capture_output=True)
    cores = glob.glob(str(tmp_path / "core*"))
    if not cores:
        pytest.skip("the kernel wrote no core file here")
    return exe, cores[0]


def test_truncated_kernel_core_gives_a_sentence_not_a_wrong_answer(tmp_path):
    exe, core = kernel_core(tmp_path)
    p = subprocess.run(gdb_cmd(False) + ["-ex", "heap-check", exe, core], capture_output=True, text=True,
                       timeout=120)
    assert "No heap errors found." in p.stdout and "2,00" in p.stdout, p.stdout + p.stderr
    data = open(core, "rb").read()
    for frac in (0.6, 0.3):
        cut = str(tmp_path / f"cut{int(frac * 100)}")
        open(cut, "wb").write(data[:int(len(data) * frac)])
        p = subprocess.run(gdb_cmd(False) + ["-ex", "heap-check", exe, cut], capture_output=True, text=True,
                           timeout=120)
        out = p.stdout + p.stderr
        assert "Traceback" not in out and "internal error" not in out
        assert "the core file is truncated" in out, out[-2000:]
        assert "never been used" not in out          # the stale file image must not be believed


def test_info_alloc_type_check_and_pointer_kinds(tmp_path):
    from harness import ROOT
    exe = build("session_cache", src_dir=os.path.join(ROOT, "examples"))
    j = lambda n: str(tmp_path / f"{n}.json")
    cmds = [f"info alloc cache[0] --json {j('fits')}",
            f"info alloc (struct log_entry *)cache[1] --json {j('small')}",
            f"info alloc access_log[0]->path --json {j('interior')}",
            f"info alloc cache --json {j('global')}",
            f"frame function report_done", f"info alloc response --json {j('response')}"]
    run = run_live(exe, extra=cmds, gcore=False)
    import json
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
