"""`heaplens`: the plugin's reports for core files, without a debugger.

A thin door like the gdb and lldb adapters: it parses arguments, makes a CoreTarget
(common.coretarget), turns an EXPR into an address, calls the same run_* functions of
common.commands / common.tracecmds and prints their text or JSON (schema heaplens/1). Many
cores at once (--jsonl) run in parallel processes, one JSON line per core. A live program
elsewhere (--gdb-remote, --pid) is handed to common.remote, which drives gdb over MI.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from typing import Dict, List, Optional, Tuple

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
LOG = os.path.join(os.environ.get("TMPDIR", "/tmp"), "heaplens-error.log")
DEFAULT_FAIL_ON = "warning"
CORE_TIMEOUT = 600               # seconds one core may take in a batch before its process is killed

EPILOG = """exit status:
  0  the analysis ran and found nothing at or above --fail-on (default: warning)
  1  findings at or above --fail-on (check, leaks, frames); for several cores: in any core
  2  bad usage, an unreadable or foreign core file, no allocator found, or an internal error
     (one sentence on stderr); for several cores: any core that could not be analysed

The executable is found from the core (the file mapping that holds the program's entry point,
AT_ENTRY); pass --exe PROG when it moved or the core came from another machine. Separate
debug info is found like gdb finds it (/usr/lib/debug/.build-id, .gnu_debuglink).
"""

SUBCOMMANDS = {
    # name: (plugin command, help)
    "check": ("heap-check", "walk the allocator(s), run every consistency check, report findings worst first"),
    "leaks": ("heap-leaks", "chunks no pointer from the program's roots reaches (precise tracing from DWARF)"),
    "info": ("info alloc", "allocation state of the chunk an address or expression points into"),
    "stats": ("heap-stats", "per-arena and per-size-class usage, free space, fragmentation"),
    "frames": ("heap-frames", "every frame of every thread, pointers annotated with their chunk's state"),
    "why": ("heap-why", "the chains of pointers from a root to the chunk an expression points into"),
}
REMOTE_OK = ("check", "leaks", "info", "stats")


class CliError(Exception):
    """One sentence for the user; exit status 2."""


# --- arguments ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    from .report import SEVERITIES
    p = argparse.ArgumentParser(
        prog="heaplens", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="heaplens without a debugger: heap reports for core files (glibc, jemalloc, tcmalloc), "
                    "the same reports as the gdb/lldb plugin (JSON schema heaplens/1).",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    for name, (_plugin, help_) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "check":
            sp.add_argument("cores", nargs="*", metavar="CORE", help="core file(s) (gcore's or the kernel's)")
        elif name in ("info", "why"):
            sp.add_argument("args", nargs="+", metavar="CORE EXPR",
                            help="the core file, then EXPR: an address (hex or decimal), a global or a local "
                                 "of the stopped thread's frames (innermost first), p->field, s.field, a[3], *p"
                                 + ("; several EXPRs give one report each" if name == "info" else ""))
            sp.add_argument("--thread", type=int, help="evaluate EXPR in this thread (gdb's numbering)")
            sp.add_argument("--frame", type=int, help="evaluate EXPR in this frame only (0 = innermost)")
        else:
            sp.add_argument("cores", nargs="*" if name in REMOTE_OK else 1, metavar="CORE", help="core file")
        sp.add_argument("--exe", metavar="PROG", help="the program's executable (default: found from the core; "
                                                      "with several cores, used for all)")
        sp.add_argument("--json", metavar="PATH", help="write the JSON report to PATH (- = standard output only)")
        if name in ("check", "leaks", "frames"):
            sp.add_argument("--fail-on", choices=SEVERITIES, default=DEFAULT_FAIL_ON,
                            help=f"exit 1 when a finding of this severity or worse exists (default {DEFAULT_FAIL_ON})")
        if name == "leaks":
            sp.add_argument("--conservative", action="store_true",
                            help="also run the guessing (conservative) scan and compare the two")
        if name == "check":
            sp.add_argument("--jsonl", action="store_true",
                            help="one JSON line per core on standard output (or PATH of --json), with 'core' "
                                 "and 'error' fields; cores run in parallel processes")
            sp.add_argument("--jobs", "-j", type=int, default=0,
                            help="parallel processes for several cores (default: the number of CPUs)")
            sp.add_argument("--timeout", type=float, default=CORE_TIMEOUT,
                            help=f"seconds one core may take in a batch (default {CORE_TIMEOUT})")
        if name in REMOTE_OK:
            sp.add_argument("--gdb-remote", metavar="HOST:PORT",
                            help="analyse a live program under a gdbserver instead of a core (gdb runs here)")
            sp.add_argument("--pid", type=int, help="analyse the live local process PID (gdb attaches) instead of a core")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    if not argv:
        p.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        a = p.parse_args(argv)
    except SystemExit as e:                       # argparse: --help (0) or a usage error (2)
        return EXIT_CLEAN if e.code in (0, None) else EXIT_ERROR
    if a.cmd is None:
        p.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        if getattr(a, "gdb_remote", None) or getattr(a, "pid", None):
            return _remote(a)
        if a.cmd == "check":
            if not a.cores:
                raise CliError("check needs a core file (or --gdb-remote / --pid)")
            if len(a.cores) > 1 and a.json and not a.jsonl:
                raise CliError("several cores give one JSON line each: add --jsonl (with --json PATH for a file)")
            if len(a.cores) > 1 or a.jsonl:
                return _batch(a)
            return _single(a, a.cores[0])
        if a.cmd in ("info", "why"):
            core, exprs = a.args[0], a.args[1:]
            if not exprs:
                raise CliError(f"{a.cmd} needs a core file and an EXPR")
            if a.cmd == "why" and len(exprs) > 1:
                raise CliError("why takes one EXPR")
            return _single(a, core, exprs)
        if not a.cores:
            raise CliError(f"{a.cmd} needs a core file (or --gdb-remote / --pid)")
        if len(a.cores) > 1:
            raise CliError(f"{a.cmd} takes one core file (check takes several)")
        return _single(a, a.cores[0])
    except CliError as e:
        _err(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_ERROR
    except BrokenPipeError:                       # `heaplens ... | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_CLEAN


def _err(msg: str) -> None:
    sys.stderr.write(f"heaplens: {msg}\n")


# --- one core -------------------------------------------------------------------------------------
def analyse(cmd: str, core: str, exe: Optional[str], exprs=(), fail_on: Optional[str] = DEFAULT_FAIL_ON,
            conservative: bool = False, thread: Optional[int] = None, frame: Optional[int] = None,
            json_path: Optional[str] = None):
    """Run one command on one core: (list of common.commands.Result, target warnings). Raises
    CliError with one sentence for what cannot be analysed."""
    from . import commands as C
    from . import tracecmds as T
    from .allocators import NoAllocator
    from .coretarget import CoreTarget
    from .target import TargetError
    try:
        target = CoreTarget(core, exe=exe)
    except TargetError as e:
        raise CliError(str(e)) from None
    key = ("cli", os.path.abspath(core), id(target))
    args = C.Args(json=json_path, fail_on=fail_on if cmd in ("check", "leaks", "frames") else None)
    if conservative:
        args.options["conservative"] = True
    try:
        if cmd == "check":
            results = [C.run_heap_check(target, args, key)]
        elif cmd == "stats":
            results = [C.run_heap_stats(target, args, key)]
        elif cmd == "frames":
            results = [_with_fail(C.run_heap_frames(target, args, key), fail_on, "heap-frames")]
        elif cmd == "leaks":
            results = [_with_fail(T.run_heap_leaks(target, args, key), fail_on, "heap-leaks")]
        elif cmd == "info":
            results = [C.run_info_alloc(target, pointer(target, e, thread, frame), args, key) for e in exprs]
        elif cmd == "why":
            results = [T.run_heap_why(target, pointer(target, exprs[0], thread, frame), args, key)]
        else:
            raise CliError(f"unknown command {cmd}")
    except (TargetError, NoAllocator, C.UsageError) as e:
        raise CliError(str(e)) from None
    warns = list(target.warnings())
    for num, why in sorted(target.unwind_notes().items()):
        warns.append(f"thread {num}: {why}")
    return results, warns


def _with_fail(res, fail_on: Optional[str], name: str):
    """heap-leaks and heap-frames have no --fail-on in the plugin: the CLI applies it to their
    findings the way heap-check does."""
    from .report import severity_rank
    if not fail_on:
        return res
    worst = [f for f in res.report.get("findings", [])
             if f.get("severity") and severity_rank(f["severity"]) <= severity_rank(fail_on)]
    if worst:
        res.fail = (f"{name}: {len(worst)} finding(s) of severity {fail_on} or worse "
                    f"(first: {worst[0].get('kind')})")
    return res


def pointer(target, expr: str, thread: Optional[int] = None, frame: Optional[int] = None):
    """EXPR -> common.commands.Pointer: an integer is an address; otherwise the expression is
    evaluated in the given frame, else in the stopped thread's frames innermost first (then
    globals), through the DWARF maps."""
    from .commands import Pointer
    text = expr.strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+|\d+", text):
        return Pointer(int(text, 0) & 0xFFFFFFFFFFFFFFFF, text, None, None)
    if thread is None:
        thread = target.stop_info().thread or 1
    levels = [frame] if frame is not None else \
        [f.level for f in target.frames(variables=False) if f.thread == thread] or [0]
    for level in levels:
        r = target.evaluate(text, thread, level)
        if r is not None:
            value, type_name, size = r
            return Pointer(value & 0xFFFFFFFFFFFFFFFF, text, type_name, size)
    where = f"frame {frame} of thread {thread}" if frame is not None else f"the frames of thread {thread}"
    raise CliError(f"cannot evaluate '{text}': no pointer of that name in {where} or among the globals "
                   "(an address, a variable, p->field, s.field, a[N] or *p; the program needs -g)")


def _single(a, core: str, exprs=()) -> int:
    try:
        results, warns = analyse(a.cmd, core, a.exe, exprs, getattr(a, "fail_on", None),
                                 getattr(a, "conservative", False), getattr(a, "thread", None),
                                 getattr(a, "frame", None), None)
    except CliError:
        raise
    except Exception as e:                        # a bug of ours: one sentence, details in the log
        _log(f"{a.cmd} {core}")
        raise CliError(f"internal error ({type(e).__name__}: {e}); details in {LOG} — please report it") from None
    for w in warns:
        _err(f"warning: {w}")
    to_stdout = a.json == "-"
    reports = [r.report for r in results]
    if a.json and not to_stdout:
        err = _write_json(a.json, reports)
        if err:
            raise CliError(err)
    status = EXIT_CLEAN
    for r in results:
        if not to_stdout:
            sys.stdout.write(r.text)
        for e in r.errors:
            _err(e)
        if r.fail:
            status = EXIT_FINDINGS
    if a.json and not to_stdout:
        sys.stdout.write(f"JSON report{'s' if len(reports) > 1 else ''} written to {a.json}\n")
    if to_stdout:
        sys.stdout.write(_dumps_all(reports))
    sys.stdout.flush()
    return status


def _dumps_all(reports: List[dict]) -> str:
    from .report import dumps
    if len(reports) == 1:
        return dumps(reports[0]) + "\n"
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in reports)   # one per line


def _write_json(path: str, reports: List[dict]) -> Optional[str]:
    """One report: the plugin's JSON file; several (info with several EXPRs): one per line."""
    if len(reports) == 1:
        from .report import write_json
        return write_json(reports[0], path)
    try:
        with open(path, "w") as f:
            f.write(_dumps_all(reports))
    except OSError as e:
        return f"could not write JSON to {path}: {e.strerror or e}"
    return None


def _log(what: str) -> None:
    try:
        with open(LOG, "a") as f:
            f.write(f"--- heaplens {what}\n{traceback.format_exc()}\n")
    except OSError:
        pass


# --- many cores -----------------------------------------------------------------------------------
def _one_core(core: str, exe: Optional[str], fail_on: str) -> Tuple[dict, int, List[str]]:
    """The heap-check report of one core as a JSON line's object (with "core" and "error"),
    its exit status and warnings. Never raises."""
    try:
        results, warns = analyse("check", core, exe, (), fail_on)
        rep = dict(results[0].report)
        rep["core"] = core
        rep["error"] = None
        rep["warnings"] = warns
        return rep, EXIT_FINDINGS if results[0].fail else EXIT_CLEAN, warns
    except CliError as e:
        msg = str(e)
    except Exception as e:                        # a bug of ours must not stop the batch
        _log(f"check {core}")
        msg = f"internal error ({type(e).__name__}: {e}); details in {LOG}"
    return {"schema": "heaplens/1", "command": "heap-check", "core": core, "error": msg}, EXIT_ERROR, []


def _child(conn, core: str, exe: Optional[str], fail_on: str) -> None:
    try:
        conn.send(_one_core(core, exe, fail_on)[:2])
    except Exception:                             # a report that cannot be pickled: say so
        try:
            conn.send(({"schema": "heaplens/1", "command": "heap-check", "core": core,
                        "error": "the report could not be sent back from the analysis process"}, EXIT_ERROR))
        except Exception:                         # the parent is gone: nothing left to tell
            pass
    finally:
        conn.close()


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done, self.errors = total, 0, 0
        self.on = total > 1 and sys.stderr.isatty()
        self.t0 = time.monotonic()

    def step(self, error: bool) -> None:
        self.done += 1
        self.errors += int(error)
        if not self.on:
            return
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        el = time.monotonic() - self.t0
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} cores"
                         + (f", {self.errors} unreadable" if self.errors else "") + f"  {el:.0f} s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _batch(a) -> int:
    """heap-check on several cores in parallel processes (one process per core, at most --jobs at
    once): a core that crashes or hangs its process costs only its own line."""
    import multiprocessing as mp
    from . import commands, coretarget, tracecmds  # noqa: F401  (loaded once, before forking)
    from .allocators import walk_all  # noqa: F401
    cores = list(a.cores)
    jobs = a.jobs if a.jobs and a.jobs > 0 else (os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(cores)))
    if not a.jsonl:
        return _batch_text(a, cores)
    out = sys.stdout
    fh = None
    if a.json and a.json != "-":
        try:
            fh = open(a.json, "w")
        except OSError as e:
            raise CliError(f"could not write {a.json}: {e.strerror or e}")
        out = fh
    ctx = mp.get_context("fork")
    prog = _Progress(len(cores))
    results: Dict[int, Tuple[dict, int]] = {}
    running: Dict[int, tuple] = {}               # index -> (process, connection, start time)
    nxt = 0
    emitted = 0
    status = EXIT_CLEAN
    try:
        while emitted < len(cores):
            while nxt < len(cores) and len(running) < jobs:
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send, cores[nxt], a.exe, a.fail_on), daemon=True)
                proc.start()
                send.close()
                running[nxt] = (proc, recv, time.monotonic())
                nxt += 1
            from multiprocessing.connection import wait
            ready = wait([r for _, r, _ in running.values()], timeout=1.0)
            now = time.monotonic()
            for i, (proc, recv, t0) in list(running.items()):
                res = None
                if recv in ready:
                    try:
                        res = recv.recv()
                    except (EOFError, OSError):
                        code = proc.exitcode if proc.exitcode is not None else proc.join(5) or proc.exitcode
                        res = ({"schema": "heaplens/1", "command": "heap-check", "core": cores[i],
                                "error": f"the analysis process died (exit status {code})"}, EXIT_ERROR)
                elif now - t0 > a.timeout:
                    proc.kill()
                    res = ({"schema": "heaplens/1", "command": "heap-check", "core": cores[i],
                            "error": f"not finished within {a.timeout:g} s (its process was killed)"}, EXIT_ERROR)
                if res is None:
                    continue
                recv.close()
                proc.join(5)
                del running[i]
                results[i] = res
                prog.step(res[1] == EXIT_ERROR)
            while emitted in results:             # lines in the order the cores were given
                rep, st = results.pop(emitted)
                out.write(json.dumps(rep, separators=(",", ":")) + "\n")
                out.flush()
                status = max(status, st)
                emitted += 1
    finally:
        for proc, recv, _ in running.values():
            proc.kill()
        prog.close()
        if fh is not None:
            fh.close()
    if fh is not None:
        sys.stdout.write(f"{len(cores)} JSON lines written to {a.json}\n")
    return status


def _batch_text(a, cores: List[str]) -> int:
    """Several cores without --jsonl: each core's text report after a header line."""
    status = EXIT_CLEAN
    for core in cores:
        sys.stdout.write(f"== {core}\n")
        rep, st, warns = _one_core(core, a.exe, a.fail_on)
        for w in warns:
            _err(f"{core}: warning: {w}")
        if rep.get("error"):
            _err(f"{core}: {rep['error']}")
        else:
            from . import commands as C
            sys.stdout.write(_text_of(rep, C))
        status = max(status, st)
    sys.stdout.flush()
    return status


def _text_of(rep: dict, C) -> str:
    """A short text summary of one batch report (the full table is in the JSON)."""
    fs = rep.get("findings", [])
    lines = []
    for s in rep.get("summary", []):
        st = s.get("states", {})
        lines.append(f"{s.get('allocator')} {s.get('version') or ''} heap: {s.get('chunks', 0):,} chunks — "
                     f"{st.get('allocated', 0):,} allocated, {st.get('free', 0):,} free, {st.get('cached', 0):,} cached")
    if not fs:
        lines.append("No heap errors found.")
    for f in fs:
        addr = "-" if f.get("address") is None else f"{f['address']:#x}"
        lines.append(f"  {f.get('severity')}: {f.get('kind')} at {addr}: {f.get('message')}")
    return "\n".join(lines) + "\n"


# --- a live program elsewhere -----------------------------------------------------------------------
def _remote(a) -> int:
    if a.cmd not in REMOTE_OK:
        raise CliError(f"{a.cmd} works on core files only")
    if getattr(a, "gdb_remote", None) and getattr(a, "pid", None):
        raise CliError("give one of --gdb-remote and --pid, not both")
    if a.cmd == "info":
        exprs = a.args
        if len(exprs) != 1:
            raise CliError("with --gdb-remote / --pid, info takes one EXPR and no core file")
    elif a.cores:
        raise CliError("with --gdb-remote / --pid there is no core file argument")
    try:
        from .remote import run_remote
    except ImportError:
        raise CliError("remote analysis (common/remote.py) is not available in this checkout") from None
    plugin = SUBCOMMANDS[a.cmd][0]
    argv: List[str] = []
    if a.cmd == "info":
        argv.append(a.args[0])
    if getattr(a, "fail_on", None):
        argv += ["--fail-on", a.fail_on]
    if getattr(a, "conservative", False):
        argv.append("--conservative")
    report, text, status = run_remote(plugin, argv, gdb_remote=a.gdb_remote, pid=a.pid, exe=a.exe)
    if report is None:
        raise CliError(text.strip() or "the remote analysis failed")
    if a.json == "-":
        from .report import dumps
        sys.stdout.write(dumps(report) + "\n")
    else:
        sys.stdout.write(text)
        if a.json:
            err = _write_json(a.json, [report])
            if err:
                raise CliError(err)
            sys.stdout.write(f"JSON report written to {a.json}\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":                        # python -m common.cli
    sys.exit(main())
