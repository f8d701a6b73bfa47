"""Build the C test programs and run them under real gdb, live and from gcore cores."""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional

from truth import Truth, read_truth  # noqa: F401  (re-exported for the tests)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = os.path.join(ROOT, "tests", "programs")
GDBINIT = os.path.join(ROOT, "gdb_plugin", "gdbinit.py")
PROBE = os.path.join(ROOT, "tests", "gdb_probe.py")
# per checkout: the binaries' debug info names this checkout's sources (another checkout's build
# of the same program would point gdb at files that may be gone)
BUILD = os.path.join(tempfile.gettempdir(),
                     f"heaplens-tests-{os.getuid()}-{hashlib.sha1(ROOT.encode()).hexdigest()[:8]}")
# every run's output (JSON, cores of hundreds of MB) lives here and goes when the tests end
RUNS = tempfile.mkdtemp(prefix="heaplens-runs-")
atexit.register(shutil.rmtree, RUNS, True)


def build(name: str, opt: str = "-O0", src_dir: str = PROGRAMS, extra=()) -> str:
    """Compile src_dir/NAME.c with debug info; cached per (source mtime, flags)."""
    os.makedirs(BUILD, exist_ok=True)
    src = os.path.join(src_dir, name + ".c")
    exe = os.path.join(BUILD, f"{name}{opt}{''.join(extra)}".replace("/", "_"))
    if not os.path.exists(exe) or os.path.getmtime(exe) < max(
            os.path.getmtime(src), os.path.getmtime(os.path.join(PROGRAMS, "truth.h"))):
        tmp = f"{exe}.{os.getpid()}.tmp"       # atomic: concurrent test runs share this cache
        subprocess.run(["gcc", "-g", opt, "-pthread", "-o", tmp, src, *extra], check=True,
                       capture_output=True, text=True)
        os.replace(tmp, exe)
    return exe


def misclassified_live(run) -> list:
    """The truth file's live pointers that info alloc does not call allocated at their own
    address with at least the requested size (one rule for every allocator's tests)."""
    bad = []
    for addr, size in run.truth.live.items():
        i = run.infos[addr]
        if i.get("state") != "allocated" or i.get("user_start") != addr or (i.get("size") or 0) < size:
            bad.append(("live", hex(addr), size, i.get("state"), i.get("user_start"), i.get("size")))
    return bad


@dataclass
class Run:
    check: dict
    stats: dict
    infos: Dict[int, dict]
    texts: Dict[str, str]
    truth: Optional[Truth]
    stdout: str
    core: Optional[str] = None

    def findings(self, kind=None, severities=("critical", "warning"), program=False):
        """Findings of a kind; allocator-level only unless program=True."""
        return [f for f in self.check["findings"]
                if (kind is None or f["kind"] == kind) and f["severity"] in severities
                and (program or f["check"] not in ("stale-pointer", "type-size", "crash"))]


def gdb_cmd(nodebug: bool) -> List[str]:
    cmd = ["gdb", "-nx", "-q", "-batch", "-iex", "set debuginfod enabled off"]
    if nodebug:               # gdb must not find libc6-dbg: the structure path is exercised
        cmd += ["-iex", "set debug-file-directory /nonexistent"]
    return cmd + ["-iex", "set pagination off", "-iex", "set confirm off", "-x", GDBINIT]


def run_live(exe: str, args=(), nodebug=False, gcore=True, extra=(), timeout=300, workdir=None,
             preload: Optional[str] = None) -> Run:
    """Run exe under gdb to heaplens_checkpoint, probe, optionally gcore. `preload`: a library
    the program (not gdb) gets in LD_PRELOAD."""
    out = tempfile.mkdtemp(prefix="hl-", dir=workdir or RUNS)
    env = dict(os.environ, HL_OUT=out, HL_TRUTH=os.path.join(out, "truth.txt"),
               HEAPLENS_TRUTH=os.path.join(out, "truth.txt"), HL_EXTRA=";".join(extra))
    core = os.path.join(out, "core") if gcore else None
    if core:
        env["HL_GCORE"] = core
    pre = ["-ex", f"set environment LD_PRELOAD={preload}"] if preload else []
    cmd = gdb_cmd(nodebug) + pre + ["-ex", "break heaplens_checkpoint", "-ex", "run " + " ".join(args),
                              "-ex", f"source {PROBE}", "-ex", "kill", "--args", exe]
    return _finish(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout), out, core)


def run_core(exe: str, core: str, truth_dir: str, nodebug=False, extra=(), timeout=300) -> Run:
    out = tempfile.mkdtemp(prefix="hl-core-", dir=os.path.dirname(truth_dir))
    if os.path.exists(os.path.join(truth_dir, "truth.txt")):
        shutil.copy(os.path.join(truth_dir, "truth.txt"), os.path.join(out, "truth.txt"))
    env = dict(os.environ, HL_OUT=out, HL_TRUTH=os.path.join(out, "truth.txt"), HL_EXTRA=";".join(extra))
    env.pop("HL_GCORE", None)
    cmd = gdb_cmd(nodebug) + ["-ex", f"source {PROBE}", exe, core]
    return _finish(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout), out, None)


def _finish(p: subprocess.CompletedProcess, out: str, core: Optional[str]) -> Run:
    text = p.stdout + p.stderr
    if "Traceback" in text:
        raise AssertionError(f"Python traceback in gdb output:\n{text[-3000:]}")
    try:
        probe = json.load(open(os.path.join(out, "probe.json")))
    except OSError:
        raise AssertionError(f"the gdb probe did not run:\n{text[-3000:]}")

    def load(name):
        path = os.path.join(out, name)
        return json.load(open(path)) if os.path.exists(path) else None
    truth_path = os.path.join(out, "truth.txt")
    truth = read_truth(truth_path) if os.path.exists(truth_path) else None
    infos = {int(k): v for k, v in probe["infos"].items()}
    return Run(load("check.json"), load("stats.json"), infos, probe["texts"], truth, text,
               core if core and os.path.exists(core) else None)
