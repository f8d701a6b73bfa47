"""heaplens on a program running elsewhere: a gdb driven over MI (pygdbmi) does the work.

    report, text, status = run_remote("heap-check", ["--fail-on", "warning"],
                                      gdb_remote="board:2345", exe="./prog")
    report, text, status = run_remote("heap-leaks", [], pid=1234)

A local gdb connects to a gdbserver (`target remote HOST:PORT`) or attaches to a local process
(`attach PID`), loads the plugin (gdb_plugin/gdbinit.py) and runs the command there. Memory never
crosses MI: the plugin in gdb reads it over the remote protocol (or /proc for --pid) and writes
the JSON report to a temporary file this process reads; MI carries only session control and the
command's text. The program is always detached from, never killed, whatever happens.

Status: 0 fine; 1 the report has findings at or above `--fail-on SEVERITY` (given in argv, for
any command; decided here from the report); 2 failure, with one sentence saying why in place of
the text.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from .report import SEVERITIES, severity_rank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GDBINIT = os.path.join(ROOT, "gdb_plugin", "gdbinit.py")
COMMANDS = ("heap-check", "heap-stats", "heap-leaks", "heap-why", "heap-trace", "heap-frames", "info alloc")
POLL = 0.005                  # pygdbmi's wait for more output (its default 0.2 s makes each call slow)
CONNECT_TIMEOUT = 10          # seconds gdb waits for a gdbserver that does not answer
SETUP_TIMEOUT = 60            # seconds for any one set-up step (loading symbols, attaching)


class RemoteError(Exception):
    """One sentence for the user: what failed and what to check."""


class _Stopped(Exception):
    """The session ran out of time."""


def _mi_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RemoteSession:
    """One gdb over MI, connected to one target. Console commands go through
    `-interpreter-exec console`; `console()` returns their text. Use as a context manager:
    leaving it detaches (never kills) and ends gdb."""

    def __init__(self, *, gdb: str = "gdb", timeout: float = 600, sysroot: Optional[str] = None):
        from pygdbmi.gdbcontroller import GdbController
        if shutil.which(gdb) is None:
            raise RemoteError(f"gdb ({gdb}) is not installed or not on PATH: install gdb")
        self.deadline = time.monotonic() + timeout
        self._token = 100
        self.attached = False
        self.pending: Optional[tuple] = None   # (token, interruptible, stops) of the command in flight
        self.sysroot = sysroot
        self.ctl = GdbController(command=[gdb, "--interpreter=mi3", "-nx", "-q"],
                                 time_to_check_for_additional_output_sec=POLL)
        try:
            for line in ("set debuginfod enabled off", "set pagination off", "set confirm off",
                         "set width 0", "set height 0", "set exec-file-mismatch warn",
                         "set tcp auto-retry off", f"set tcp connect-timeout {CONNECT_TIMEOUT}"):
                self.console(line, SETUP_TIMEOUT, check=False)
            if sysroot is not None:
                self.console(f"set sysroot {sysroot}", SETUP_TIMEOUT)
        except BaseException:
            self.close()
            raise

    # --- MI plumbing ------------------------------------------------------------------------
    def _left(self, limit: Optional[float]) -> float:
        left = self.deadline - time.monotonic()
        if limit is not None:
            left = min(left, limit)
        if left <= 0:
            raise _Stopped()
        return left

    def mi(self, cmd: str, limit: Optional[float] = None, interruptible: bool = True,
           stops: bool = False) -> Tuple[str, dict, str]:
        """Send one MI command; wait for its result record and, for ^running or a command that
        `stops` the program (attach, target remote), for the stop too. Returns (result class,
        its payload, console and log text). `interruptible`: whether SIGINT may end it when time
        runs out; not while attaching: gdb reports attach done before the process has stopped,
        and a SIGINT then reaches the process itself, which it kills."""
        self._token += 1
        self.ctl.write(f"{self._token}{cmd}", read_response=False)
        self.pending = (self._token, interruptible, stops)  # until it is over (a timeout leaves it set)
        return self._wait(limit)

    def _wait(self, limit: Optional[float]) -> Tuple[str, dict, str]:
        tok, _, stops = self.pending
        text: List[str] = []
        result = None
        running = False
        stopped = False
        while True:
            left = self._left(limit)
            try:
                out = self.ctl.get_gdb_response(timeout_sec=min(left, 0.5), raise_error_on_timeout=False)
            except Exception as e:                       # gdb died: pygdbmi raises on a closed pipe
                raise RemoteError(f"gdb ended unexpectedly ({e})") from None
            if not out and self.ctl.gdb_process is not None and self.ctl.gdb_process.poll() is not None:
                raise RemoteError(f"gdb ended unexpectedly (exit status {self.ctl.gdb_process.returncode})")
            for r in out:
                kind = r.get("type")
                if kind in ("console", "log") and isinstance(r.get("payload"), str):
                    text.append(r["payload"])
                elif kind == "result" and r.get("token") == tok:
                    result = (r.get("message") or "", r.get("payload") or {})
                    running = result[0] == "running" or (stops and result[0] != "error" and not stopped)
                elif kind == "notify" and r.get("message") == "stopped":
                    stopped, running = True, False
                    payload = r.get("payload") or {}
                    if payload.get("reason", "").startswith("exited"):
                        text.append(f"[the program exited: {payload.get('reason')}]\n")
            if result is not None and not running:
                self.pending = None
                return result[0], result[1], "".join(text)

    def console(self, line: str, limit: Optional[float] = None, check: bool = True,
                interruptible: bool = True, stops: bool = False) -> str:
        """Run a console command; its text, or RemoteError with gdb's message when check."""
        if "\n" in line or "\r" in line:
            raise RemoteError("a command line must not contain newlines")
        cls, payload, text = self.mi(f"-interpreter-exec console {_mi_quote(line)}", limit, interruptible, stops)
        if cls == "error" and check:
            raise RemoteError((payload.get("msg") or text.strip() or f"'{line}' failed").strip())
        return text if cls != "error" else text + (payload.get("msg") or "") + "\n"

    # --- session ------------------------------------------------------------------------------
    def load(self, exe: Optional[str]) -> None:
        if exe is None:
            return
        if not os.path.exists(exe):
            raise RemoteError(f"the program file {exe} does not exist (--exe must name the program's "
                              "executable on this machine)")
        cls, payload, _ = self.mi(f"-file-exec-and-symbols {_mi_quote(exe)}", SETUP_TIMEOUT, interruptible=False)
        if cls == "error":
            raise RemoteError(f"gdb cannot load {exe}: {_sentence(payload.get('msg', 'failed'))}")

    def connect(self, gdb_remote: str) -> None:
        if not re.fullmatch(r"[\w.\-\[\]:]+:\d+", gdb_remote):
            raise RemoteError(f"--gdb-remote takes HOST:PORT (a gdbserver's address), not '{gdb_remote}'")
        if self.sysroot is None and _is_loopback(gdb_remote.rsplit(":", 1)[0].strip("[]")):
            self.console("set sysroot /", SETUP_TIMEOUT)    # same machine: read files here, not over the link
        self.attached = True                 # from here on, leaving detaches (harmless if not attached)
        try:
            text = self.console(f"target remote {gdb_remote}", CONNECT_TIMEOUT + SETUP_TIMEOUT,
                                interruptible=False, stops=True)
        except RemoteError as e:
            raise RemoteError(f"cannot connect to gdbserver at {gdb_remote}: {_sentence(e)} "
                              "(is gdbserver running there and listening on that port?)") from None
        self._check_exe(text)

    def attach(self, pid: int) -> None:
        self.attached = True                 # a timeout in the middle must still detach
        try:
            text = self.console(f"attach {int(pid)}", SETUP_TIMEOUT, interruptible=False, stops=True)
        except RemoteError as e:
            msg = _sentence(e)
            hint = (" (ptrace is restricted: run as the process's owner with "
                    "/proc/sys/kernel/yama/ptrace_scope 0, or as root)" if "not permitted" in msg else "")
            raise RemoteError(f"cannot attach to process {pid}: {msg}{hint}") from None
        self._check_exe(text)

    def _check_exe(self, text: str) -> None:
        m = re.search(r"(?:Build ID mismatch|Mismatch) between current exec-file (\S+)\s+and automatically "
                      r"determined exec-file (\S+)", text)
        if m:
            raise RemoteError(f"{m.group(1)} is not the program the target runs ({m.group(2)}; their "
                              "build IDs differ): pass the matching executable with --exe")

    def source_plugin(self) -> None:
        text = self.console(f"source {GDBINIT}", SETUP_TIMEOUT)
        m = re.search(r"heaplens: not loaded: [^\n]*", text)
        if m:
            raise RemoteError(m.group(0))

    def run(self, command: str, argv: List[str], json_path: str) -> Tuple[str, Optional[str]]:
        """(text, error message or None) of one heaplens command, its JSON written to json_path."""
        args = _strip(argv)
        line = " ".join([command] + args + ["--json", json_path])
        cls, payload, text = self.mi(f"-interpreter-exec console {_mi_quote(line)}")
        text = text.replace(f"\nJSON report written to {json_path}\n", "")    # our temporary file
        return text, (payload.get("msg") if cls == "error" else None)

    def close(self) -> None:
        """Detach (the program goes on running), end gdb. Never raises, bounded in time."""
        if self.ctl.gdb_process is None:
            return
        try:
            if self.pending is not None:     # time ran out in the middle of a command
                if self.pending[1]:          # a heaplens command or the running program: interrupt it
                    self.ctl.gdb_process.send_signal(signal.SIGINT)
                self.deadline = time.monotonic() + CONNECT_TIMEOUT + SETUP_TIMEOUT
                self._wait(None)             # attaching or connecting: let it finish, then detach
            if self.attached:
                self.deadline = time.monotonic() + 20
                try:
                    self.mi("-target-detach", 10)
                except _Stopped:             # still busy: interrupt once more
                    self.ctl.gdb_process.send_signal(signal.SIGINT)
                    self.deadline = time.monotonic() + 10
                    self.mi("-target-detach", 10)
                self.attached = False
            self.ctl.write("-gdb-exit", read_response=False)
            self.ctl.gdb_process.wait(timeout=5)
        except Exception:
            pass
        finally:
            p = self.ctl.gdb_process
            if p is not None and p.poll() is None:
                p.kill()                     # gdb is wedged: its death detaches ptrace / drops the link
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr) if p is not None else ():
                try:
                    f.close()
                except OSError:
                    pass
            self.ctl.gdb_process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _sentence(e) -> str:
    s = " ".join(str(e).split()).rstrip(".")
    return s or "failed"


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _strip(argv: List[str]) -> List[str]:
    """argv without --json PATH (the report comes back as a dict; the caller writes it) and
    --fail-on SEVERITY (decided here from the report, for every command)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--json", "--fail-on"):
            skip = True
        elif not a.startswith(("--json=", "--fail-on=")):
            out.append(a)
    return out


def _fail_on(argv: List[str]) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == "--fail-on" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--fail-on="):
            return a.split("=", 1)[1]
    return None


def _status(report: Dict, argv: List[str]) -> int:
    sev = _fail_on(argv)
    if not sev:
        return 0
    worst = [f for f in report.get("findings", []) if severity_rank(f.get("severity", "")) <= severity_rank(sev)]
    return 1 if worst else 0


def run_remote(command: str, argv: List[str], *, gdb_remote: Optional[str] = None, pid: Optional[int] = None,
               exe: Optional[str] = None, timeout: float = 600, sysroot: Optional[str] = None,
               gdb: str = "gdb") -> Tuple[Optional[Dict], str, int]:
    """Run one heaplens command on a remote (gdbserver HOST:PORT) or local (PID) live program.

    Returns (the JSON report or None, the command's text output or one error sentence, status
    0/1/2). argv: the command's own arguments (EXPR for info alloc / heap-why, --fail-on ...);
    a --json there is dropped (the report is returned). sysroot: gdb's `set sysroot` (default:
    "/" for a gdbserver on this machine, else gdb's own default, which fetches the target's
    libraries over the link)."""
    if command not in COMMANDS:
        return None, f"unknown command '{command}' (one of {', '.join(COMMANDS)})", 2
    if (gdb_remote is None) == (pid is None):
        return None, "give exactly one of --gdb-remote HOST:PORT and --pid PID", 2
    if any("\n" in a or "\r" in a for a in argv):
        return None, "arguments must not contain newlines", 2
    sev = _fail_on(argv)
    if sev is not None and sev not in SEVERITIES:
        return None, f"--fail-on takes one of {', '.join(SEVERITIES)}, not '{sev}'", 2
    tmpdir = tempfile.mkdtemp(prefix="heaplens-remote-")
    json_path = os.path.join(tmpdir, "report.json")
    sess = None
    try:
        sess = RemoteSession(gdb=gdb, timeout=timeout, sysroot=sysroot)
        sess.load(exe)
        if gdb_remote is not None:
            sess.connect(gdb_remote)
        else:
            sess.attach(pid)
        sess.source_plugin()
        text, err = sess.run(command, list(argv), json_path)
        report = _load(json_path)
        if report is None:
            return None, (err or text.strip() or f"{command} wrote no report").strip(), 2
        if err:                                          # the report was written, then something failed
            text += err + "\n"
        return report, text, _status(report, argv)
    except RemoteError as e:
        return None, str(e), 2
    except _Stopped:
        return None, f"{command} did not finish within {timeout:g} s (the program was detached, not killed)", 2
    except Exception as e:                                 # pygdbmi or gdb failing in a way we did not foresee
        return None, f"the gdb session failed: {type(e).__name__}: {e}", 2
    finally:
        if sess is not None:
            sess.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def _load(path: str) -> Optional[Dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
