"""heaplens on a live program through gdb driven over MI (common/remote.py): a gdbserver on
loopback (`--gdb-remote`) and a local process (`--pid`).

The program (tests/programs/remote_heap.c: a double free, a leaked list, tcache/fastbin/small/
large bins, an mmapped chunk, a second arena) sleeps at its checkpoint, so one process state is
examined every way: through gdbserver --attach (remote), with gdb attached to the pid (local),
and against the truth file it wrote. The remote report must equal the local one.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from harness import ROOT, build
from truth import addresses, read_truth

pytestmark = pytest.mark.gdb
if shutil.which("gdbserver") is None:
    pytest.skip("gdbserver is not installed (apt-get install gdbserver; scripts/setup.sh does it)",
                allow_module_level=True)

from common.memcache import RangeCache  # noqa: E402
from common.remote import RemoteSession, run_remote  # noqa: E402
from common.target import ReadError  # noqa: E402

TIMEOUT = 120


def _json(path):
    with open(path) as f:
        return json.load(f)


def _end(gs):
    """Wait for a gdbserver --once (it ends when gdb detaches) and close its pipe."""
    try:
        gs.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gs.kill()
        gs.wait()
    gs.stderr.close()


def _gdbserver_attach(pid: int, prefix=()):
    """`gdbserver --once --attach PID` on a free loopback port (run through `prefix`, e.g.
    nsenter): (process, 'HOST:PORT')."""
    gs = subprocess.Popen([*prefix, "gdbserver", "--once", "--attach", "127.0.0.1:0", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = gs.stderr.readline()
        if line.startswith("Listening on port"):
            return gs, f"127.0.0.1:{int(line.split()[-1])}"
        if not line and gs.poll() is not None:
            break
    gs.kill()
    _end(gs)
    raise AssertionError("gdbserver did not start listening")


class Waiting:
    """remote_heap started with HEAPLENS_WAIT: sleeping at its checkpoint until killed."""

    def __init__(self, tmp):
        self.exe = build("remote_heap")
        self.truth_path = os.path.join(tmp, "truth.txt")
        env = dict(os.environ, HEAPLENS_WAIT="1", HEAPLENS_TRUTH=self.truth_path)
        self.proc = subprocess.Popen([self.exe], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline()          # the truth file is written before "ready"
        assert line == b"ready\n", f"remote_heap did not reach its checkpoint: {line!r}"
        self.pid = self.proc.pid
        self.truth = read_truth(self.truth_path)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        with open(f"/proc/{self.pid}/stat") as f:   # not stopped or traced: running, sleeping
            return f.read().rsplit(")", 1)[1].split()[0] in ("S", "R")

    def gdbserver(self):
        """`gdbserver --once --attach` on a free loopback port: (process, 'HOST:PORT')."""
        return _gdbserver_attach(self.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    w = Waiting(str(tmp_path_factory.mktemp("remote")))
    yield w
    w.stop()


def remote(prog, command, argv=(), **kw):
    """run_remote through a fresh gdbserver --attach; the program must survive it."""
    gs, addr = prog.gdbserver()
    try:
        res = run_remote(command, list(argv), gdb_remote=addr, exe=prog.exe, timeout=TIMEOUT, **kw)
    finally:
        _end(gs)
    assert prog.alive(), "the program did not survive the remote session"
    return res


def local(prog, command, argv=()):
    res = run_remote(command, list(argv), pid=prog.pid, timeout=TIMEOUT)
    assert prog.alive(), "the program did not survive gdb attaching to it"
    return res


def _comparable(rep):
    """The report without what may differ between two looks at one state (timings, how the
    memory was reached)."""
    rep = json.loads(json.dumps(rep))
    for k in ("seconds", "target", "target_io"):
        rep.pop(k, None)
    for s in rep.get("summary", []) if isinstance(rep.get("summary"), list) else []:
        s.pop("walk_seconds", None)
    rep.pop("stats", None)
    return rep


# --- a remote report equals the local one ----------------------------------------------------------
@pytest.fixture(scope="module")
def checks(prog):
    return {"remote": remote(prog, "heap-check", ["--fail-on", "critical"]),
            "local": local(prog, "heap-check", ["--fail-on", "critical"])}


def test_heap_check_remote_equals_local(prog, checks):
    (r, rtext, rst), (l, ltext, lst) = checks["remote"], checks["local"]
    assert r is not None and l is not None, (rtext, ltext)
    assert rst == lst == 1, "the double free is critical: --fail-on critical exits 1"
    assert r["summary"][0]["chunks"] == l["summary"][0]["chunks"]
    assert r["summary"][0]["states"] == l["summary"][0]["states"]
    assert r["findings"] == l["findings"]
    assert _comparable(r) == _comparable(l)
    df = [f for f in r["findings"] if f["kind"] == "double-free"]
    assert [f["address"] for f in df] == [a for k, a in prog.truth.expect if k == "double-free"]
    assert r["summary"][0]["states"]["mmapped"] == len(prog.truth.mmapped) == 1
    assert "heap:" in rtext and "double-free" in rtext


def test_remote_report_carries_target_io(checks):
    r, l = checks["remote"][0], checks["local"][0]
    io = r["target_io"]
    assert io["reads"] > 0 and io["bytes_read"] > 0
    assert "target_io" not in l                       # memory read here: nothing to count
    assert r["target"].startswith("remote") and l["target"].startswith("live")


def test_heap_leaks_remote_equals_local(prog):
    r, rtext, rst = remote(prog, "heap-leaks", ["--fail-on", "warning"])
    l, ltext, lst = local(prog, "heap-leaks", ["--fail-on", "warning"])
    assert r is not None and l is not None, (rtext, ltext)
    assert r["summary"] == l["summary"]
    assert r["findings"] == l["findings"]
    assert r["stats"]["edges"] == l["stats"]["edges"]
    assert (r["summary"]["definitely"]["count"], r["summary"]["indirectly"]["count"]) == (1, 4)
    assert rst == lst == 1                            # the leak is a warning
    assert r["target_io"]["bytes_read"] > 0


def test_info_alloc_remote_equals_local_and_truth(prog):
    """Every address of the truth file, over one remote session and one local one."""
    addrs = addresses(prog.truth)
    out = {}
    for how in ("remote", "local"):
        gs = None
        with RemoteSession(timeout=TIMEOUT) as s:
            s.load(prog.exe)
            if how == "remote":
                gs, addr = prog.gdbserver()
                s.connect(addr)
            else:
                s.attach(prog.pid)
            s.source_plugin()
            tmp = os.path.join(os.path.dirname(prog.truth_path), f"info-{how}.json")
            res = {}
            for a in addrs:
                text, err = s.run("info alloc", [f"{a:#x}"], tmp)
                assert err is None, err
                res[a] = _json(tmp)
            out[how] = res
        if gs is not None:
            _end(gs)
        assert prog.alive()
    for a in addrs:
        assert _comparable(out["remote"][a]) == _comparable(out["local"][a]), hex(a)
    t, info = prog.truth, out["remote"]
    assert all(info[a]["state"] == "allocated" and info[a]["user_start"] == a for a in t.live)
    assert all(info[a]["state"] in ("free", "cached") and info[a]["user_start"] == a for a in t.freed)
    assert all(info[a]["state"] == "mmapped" and info[a]["user_start"] == a for a in t.mmapped)


def test_heap_stats_remote(prog):
    r, text, st = remote(prog, "heap-stats")
    l, _, _ = local(prog, "heap-stats")
    assert st == 0 and r["heaps"] == l["heaps"]


# --- memory never comes from this machine's /proc for a remote target ------------------------------
PROBE = r"""
import builtins, os, re
_hl_seen = []
_pat = re.compile(r"/proc/(\d+)/")
def _hl_wrap(fn):
    def w(path, *a, **k):
        m = _pat.search(str(path))
        if m and int(m.group(1)) != os.getpid():
            _hl_seen.append(str(path))
        return fn(path, *a, **k)
    return w
builtins.open = _hl_wrap(builtins.open)
os.open = _hl_wrap(os.open)
"""


def test_remote_target_never_reads_local_proc(prog):
    """On loopback /proc/PID/mem would work and hide the cost; on a real remote it would be the
    wrong process. Every open() of another process's /proc files is recorded during the commands."""
    gs, addr = prog.gdbserver()
    with RemoteSession(timeout=TIMEOUT) as s:
        s.load(prog.exe)
        s.connect(addr)
        s.source_plugin()
        s.console("python exec(" + json.dumps(PROBE) + ")")     # one console line over MI
        tmp = os.path.join(os.path.dirname(prog.truth_path), "probe.json")
        for cmd in ("heap-check", "heap-leaks", "heap-stats"):
            text, err = s.run(cmd, [], tmp)
            assert err is None, err
        seen = s.console("python print(repr(_hl_seen))").strip()
        kind = s.console("python from gdb_plugin.target import current_target as _c; "
                         "t = _c(); print(t.kind, t._mem is None, t.core is None, t.threadsafe_reader() is None, "
                         "len(t.regions()))").split()
    _end(gs)
    assert seen == "[]", f"heaplens opened this machine's /proc files of the target: {seen}"
    assert kind[:4] == ["remote", "True", "True", "True"] and int(kind[4]) > 10, kind


def test_mappings_unknown_one_sentence_and_the_heap_still_walked(prog, checks):
    """A stub that cannot give /proc/PID/maps (hostio off): the loaded files from gdb, the main
    heap from glibc's own bounds, one note saying what is missing; no false corruption."""
    gs, addr = prog.gdbserver()
    with RemoteSession(timeout=TIMEOUT) as s:
        s.load(prog.exe)
        s.console("set remote hostio-open-packet off")
        s.connect(addr)
        s.source_plugin()
        tmp = os.path.join(os.path.dirname(prog.truth_path), "nomaps.json")
        text, err = s.run("heap-check", [], tmp)
        assert err is None, err
        rep = _json(tmp)
    _end(gs)
    notes = [n for n in rep["notes"] if "no memory mappings" in n]
    assert len(notes) == 1 and "\n" not in notes[0]
    full = checks["remote"][0]
    assert rep["findings"] == full["findings"]
    st, fst = rep["summary"][0]["states"], full["summary"][0]["states"]
    assert {k: v for k, v in st.items() if k != "mmapped"} == {k: v for k, v in fst.items() if k != "mmapped"}


# --- errors: one sentence, exit 2, quickly; the program is never killed ------------------------------
def _free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def test_unreachable_port_is_one_sentence_fast(prog):
    t = time.monotonic()
    rep, text, st = run_remote("heap-check", [], gdb_remote=f"127.0.0.1:{_free_port()}", exe=prog.exe, timeout=60)
    assert time.monotonic() - t < 8
    assert rep is None and st == 2
    assert "cannot connect to gdbserver" in text and "\n" not in text.strip()


def test_wrong_exe_is_refused(prog):
    other = build("clean_small")
    gs, addr = prog.gdbserver()
    rep, text, st = run_remote("heap-check", [], gdb_remote=addr, exe=other, timeout=TIMEOUT)
    _end(gs)
    assert rep is None and st == 2
    assert "not the program the target runs" in text and "\n" not in text.strip()
    assert prog.alive()


def test_bad_arguments(prog):
    assert run_remote("heap-check", [], pid=prog.pid, exe="/nonexistent/prog")[2] == 2
    rep, text, st = run_remote("heap-check", [], pid=prog.pid, exe="/nonexistent/prog")
    assert "does not exist" in text
    assert run_remote("heap-check", [], gdb_remote="nohostport", timeout=30)[2] == 2
    assert run_remote("heap-check", [])[2] == 2
    assert run_remote("rm -rf", [], pid=prog.pid)[2] == 2
    rep, text, st = run_remote("heap-check", ["--bogus"], pid=prog.pid, timeout=TIMEOUT)
    assert rep is None and st == 2 and "unknown option" in text
    assert prog.alive()


@pytest.mark.parametrize("limit", [0.4, 0.9, 1.5])
def test_timeout_detaches_never_kills(prog, limit):
    """Whatever phase the time limit interrupts (gdb starting, attaching, loading the plugin,
    the command), the answer is a report or one sentence, soon, and the program runs on."""
    for how in ("pid", "remote"):
        t = time.monotonic()
        if how == "pid":
            rep, text, st = run_remote("heap-leaks", [], pid=prog.pid, timeout=limit)
        else:
            gs, addr = prog.gdbserver()
            rep, text, st = run_remote("heap-leaks", [], gdb_remote=addr, exe=prog.exe, timeout=limit)
            _end(gs)
        assert time.monotonic() - t < limit + 25
        assert (rep is not None and st in (0, 1)) or (rep is None and st == 2 and "\n" not in text.strip()), text
        time.sleep(0.2)
        assert prog.alive(), f"{how}: the program was left stopped or killed"


def test_pid_that_does_not_exist():
    rep, text, st = run_remote("heap-check", [], pid=2 ** 22 + 7, timeout=30)
    assert rep is None and st == 2 and "cannot attach to process" in text


# --- gdbserver starting the program; the CLI -------------------------------------------------------
def test_gdbserver_started_program_matches_truth(tmp_path):
    """gdbserver runs the program itself; the session breaks at heaplens_checkpoint (no wait)."""
    exe = build("remote_heap")
    truth_path = str(tmp_path / "truth.txt")
    env = dict(os.environ, HEAPLENS_TRUTH=truth_path)
    env.pop("HEAPLENS_WAIT", None)
    gs = subprocess.Popen(["gdbserver", "--once", "127.0.0.1:0", exe], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    for _ in range(50):
        line = gs.stderr.readline()
        if line.startswith("Listening on port"):
            port = int(line.split()[-1])
            break
    assert port, "gdbserver did not start"
    try:
        with RemoteSession(timeout=TIMEOUT) as s:
            s.load(exe)
            s.connect(f"127.0.0.1:{port}")
            s.source_plugin()
            s.console("break heaplens_checkpoint")
            s.console("continue")
            text, err = s.run("heap-check", [], str(tmp_path / "c.json"))
            assert err is None, err
            rep = _json(tmp_path / "c.json")
            truth = read_truth(truth_path)
            infos = {}
            for a in addresses(truth):
                s.run("info alloc", [f"{a:#x}"], str(tmp_path / "i.json"))
                infos[a] = _json(tmp_path / "i.json")
    finally:
        gs.wait(timeout=30)
        rest = gs.stderr.read()
        gs.stderr.close()
    assert "Detaching from process" in rest and "Killing" not in rest, rest    # detached, ran on to its exit
    assert [f["address"] for f in rep["findings"] if f["kind"] == "double-free"] == [a for _, a in truth.expect]
    assert all(infos[a]["state"] == "allocated" for a in truth.live)
    assert all(infos[a]["state"] in ("free", "cached") for a in truth.freed)
    assert all(infos[a]["state"] == "mmapped" for a in truth.mmapped)
    assert rep["target_io"]["reads"] > 0


def test_cli_check_gdb_remote(prog, tmp_path):
    """`heaplens check --gdb-remote HOST:PORT --exe PROG --json PATH` (common/cli.py)."""
    if not os.path.exists(os.path.join(ROOT, "common", "cli.py")):
        pytest.skip("common/cli.py is not in this checkout yet")
    gs, addr = prog.gdbserver()
    out = str(tmp_path / "cli.json")
    p = subprocess.run([sys.executable, "-m", "common.cli", "check", "--gdb-remote", addr, "--exe", prog.exe,
                        "--json", out], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    _end(gs)
    assert p.returncode == 1, p.stdout + p.stderr        # default --fail-on warning; there is a double free
    rep = _json(out)
    rep = rep[0] if isinstance(rep, list) else rep
    assert rep["command"] == "heap-check" and rep["target_io"]["bytes_read"] > 0
    assert any(f["kind"] == "double-free" for f in rep["findings"])
    assert "Traceback" not in p.stderr
    assert prog.alive()
    p = subprocess.run([sys.executable, "-m", "common.cli", "check", "--pid", str(prog.pid), "--json", "-"],
                       cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 1 and json.loads(p.stdout)["findings"] == rep["findings"]


# --- pure Python: the remote range cache -------------------------------------------------------------
def test_range_cache_serves_reads_and_fetches_each_byte_once():
    import random
    rnd = random.Random(7)
    mem = bytes(rnd.getrandbits(8) for _ in range(1 << 15))
    calls = []

    def fetch(a, n):
        calls.append((a, n))
        if a < 0 or a + n > len(mem):
            raise ReadError(a, n)
        return mem[a:a + n]
    c = RangeCache(fetch, 1 << 30)
    for _ in range(2000):
        a = rnd.randrange(0, len(mem) - 1)
        n = rnd.randrange(1, min(2000, len(mem) - a) + 1)
        assert c.read(a, n) == mem[a:a + n]
    fetched = sorted(calls)
    assert all(a + n <= b for (a, n), (b, _) in zip(fetched, fetched[1:])), "a byte was fetched twice"
    assert sum(n for _, n in calls) <= len(mem)
    with pytest.raises(ReadError):
        c.read(len(mem) - 4, 8)
    small = RangeCache(fetch, 1000)                       # bounded: reads still right, little kept
    for _ in range(200):
        a = rnd.randrange(0, len(mem) - 100)
        assert small.read(a, 100) == mem[a:a + 100]
    assert small.kept <= 1000


# --- a target whose files this machine does not have ----------------------------------------------
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


NAMESPACES = pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None
                                or os.geteuid() != 0 or not os.path.exists(JEMALLOC),
                                reason="needs root, unshare/nsenter and libjemalloc2")


class Contained:
    """remote_heap in a private mount namespace, with jemalloc loaded from a directory that is
    empty outside it: as far as files go, another machine (or a container)."""

    def __init__(self, tmp_path):
        self.exe = build("remote_heap", extra=("-DTRUTH_ANY_ALLOCATOR",))   # no glibc headers under jemalloc
        self.there = tmp_path / "only-on-the-target"
        self.there.mkdir()
        self.truth_path = tmp_path / "truth.txt"
        script = (f"mount -t tmpfs none {self.there} && cp {JEMALLOC} {self.there}/ && HEAPLENS_WAIT=1 "
                  f"HEAPLENS_TRUTH={self.truth_path} LD_PRELOAD={self.there}/libjemalloc.so.2 exec {self.exe}")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout.readline() == b"ready\n", "the program did not reach its checkpoint"
        assert not os.listdir(self.there), "the namespace leaked: the library is visible here"

    def gdbserver(self):
        """gdbserver --attach inside the program's namespace (it serves the program's files)."""
        return _gdbserver_attach(self.proc.pid, ["nsenter", "-t", str(self.proc.pid), "-m"])

    def check_report(self, rep, text, note):
        assert rep is not None, text
        assert rep["allocator"] == "jemalloc", rep.get("notes")
        assert any(note in n for n in rep["notes"]), rep["notes"]
        assert rep["summary"][0]["layout"].startswith("built-in table for jemalloc 5.3.0")
        truth = read_truth(str(self.truth_path))
        dbl = [a for kind, a in truth.expect if kind == "double-free"]
        found = {f["address"] for f in rep["findings"] if f["kind"] == "double-free"}
        assert dbl and set(dbl) <= found, (dbl, found)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@NAMESPACES
def test_files_only_the_target_has_are_fetched(tmp_path, monkeypatch):
    """heaplens must fetch the library over the remote protocol (gdb's `remote get`), say so, and
    walk jemalloc's heap with the copy; without it the allocator could not even be identified."""
    c = Contained(tmp_path)
    monkeypatch.setenv("HEAPLENS_CACHE_DIR", str(tmp_path / "cache" / "maps"))    # gdb inherits it
    try:
        gs, addr = c.gdbserver()
        try:
            rep, text, _ = run_remote("heap-check", [], gdb_remote=addr, exe=c.exe, timeout=TIMEOUT)
        finally:
            _end(gs)
        c.check_report(rep, text, f"{c.there}/libjemalloc.so.2 is not on this machine: fetched from the target")
    finally:
        c.stop()
    copies = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache" / "remote-files") for f in fs]
    assert len(copies) == 1 and open(copies[0], "rb").read() == open(JEMALLOC, "rb").read()


@NAMESPACES
def test_a_contained_process_files_are_read_through_proc_root(tmp_path):
    """--pid on a process in a container: its files are read through /proc/PID/root."""
    c = Contained(tmp_path)
    try:
        rep, text, _ = run_remote("heap-check", [], pid=c.proc.pid, timeout=TIMEOUT)
        c.check_report(rep, text, f"{c.there}/libjemalloc.so.2 is read through /proc/{c.proc.pid}/root")
    finally:
        c.stop()
