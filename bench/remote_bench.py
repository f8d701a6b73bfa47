"""Remote benchmark (figures, not a test): heaplens over gdbserver, bytes read from the target.

    .venv/bin/python bench/remote_bench.py [--sizes 10000,100000,1000000] [--modes before,after]
                                           [--link MiBps:RTTms] [--link-sizes 10000,100000]
                                           [--out bench/results.md | --no-append]

For each N and mode, in fresh processes: `gdbserver --once` starts bench/build/genheap N 4 on a
free loopback port; a byte-counting TCP proxy (this script) sits between it and gdb; a gdb driven
over MI by common.remote.RemoteSession (the same session `run_remote` uses) loads the plugin,
breaks at heaplens_checkpoint(), then runs `heap-check --json` and `heap-leaks --json`.

Per command: wall time; the command's own `target_io` (bytes heaplens asked gdb to read from the
target, and the number of read requests; cumulative in a stop, so heap-leaks is the difference);
and the bytes the proxy saw go from gdbserver to gdb (the remote protocol: hex-encoded memory,
about 2x, plus gdb's own traffic: registers, thread lists, frames, symbol look-ups).
Figures: bytes per chunk walked (heap-check / summary chunks) and per edge traced (heap-leaks /
stats.edges).

Modes: `before` runs with HEAPLENS_SLOW_LINK=0 in gdb's environment: the remote target then reads
as a local one does (8 MiB heap windows, 64 KiB cache blocks, whole anonymous mappings in the
mmapped-chunk search, 64 KiB gaps read through by the tracer), which is what heaplens did before
the slow-link read strategy; `after` is the default. `--link 3:2` also times heap-check through
the proxy throttled to 3 MiB/s with a 2 ms round trip, at --link-sizes (default 10^4, 10^5).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.remote import RemoteSession  # noqa: E402

BUILD = os.path.join(ROOT, "bench", "build")
EXE = os.path.join(BUILD, "genheap")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build():
    os.makedirs(BUILD, exist_ok=True)
    src = os.path.join(ROOT, "bench", "genheap.c")
    if not os.path.exists(EXE) or os.path.getmtime(EXE) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-g", "-pthread", "-o", EXE, src], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LinkProxy:
    """One TCP connection from gdb to gdbserver, forwarded and counted; optionally throttled
    (bytes per second each way, and a round-trip time split over the two directions)."""

    def __init__(self, upstream_port: int, rate=None, rtt: float = 0.0):
        self.up_port, self.rate, self.delay = upstream_port, rate, rtt / 2
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.down = self.up = 0          # bytes gdbserver -> gdb, gdb -> gdbserver
        self.packets_up = 0              # gdb's sends (about one per request packet)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            cli, _ = self.srv.accept()
        except OSError:
            return
        srv = socket.create_connection(("127.0.0.1", self.up_port))
        for s in (cli, srv):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(srv, cli, "down"), daemon=True).start()
        threading.Thread(target=self._pump, args=(cli, srv, "up"), daemon=True).start()

    def _pump(self, src, dst, way):
        throttled = self.rate is not None or self.delay > 0
        q: "queue.Queue" = queue.Queue()
        if throttled:
            threading.Thread(target=self._sender, args=(q, dst), daemon=True).start()
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            if way == "down":
                self.down += len(data)
            else:
                self.up += len(data)
                self.packets_up += data.count(b"$")
            if throttled:
                q.put((time.monotonic() + self.delay, data))
            else:
                try:
                    dst.sendall(data)
                except OSError:
                    break
        q.put(None)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _sender(self, q, dst):
        free_at = 0.0
        while True:
            item = q.get()
            if item is None:
                return
            due, data = item
            free_at = max(free_at, due) + (len(data) / self.rate if self.rate else 0)
            wait = free_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                return

    def counters(self):
        return self.down, self.up, self.packets_up

    def close(self):
        self.srv.close()


def one_run(n: int, mode: str, commands, link=None, timeout=1800) -> dict:
    port = free_port()
    gs = subprocess.Popen(["gdbserver", "--once", f"127.0.0.1:{port}", EXE, str(n), "4"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            if "Listening on port" in (gs.stderr.readline() or ""):
                break
        rate, rtt = link if link else (None, 0.0)
        proxy = LinkProxy(port, rate, rtt)
        old = os.environ.get("HEAPLENS_SLOW_LINK")
        os.environ["HEAPLENS_SLOW_LINK"] = "0" if mode == "before" else "1"
        try:
            sess = RemoteSession(timeout=timeout)
        finally:
            if old is None:
                os.environ.pop("HEAPLENS_SLOW_LINK", None)
            else:
                os.environ["HEAPLENS_SLOW_LINK"] = old
        res = {"n": n, "mode": mode, "link": link}
        tmp = tempfile.mkdtemp(prefix="hl-rb-")
        with sess:
            sess.load(EXE)
            sess.connect(f"127.0.0.1:{proxy.port}")
            sess.source_plugin()
            sess.console("break heaplens_checkpoint")
            sess.console("continue")
            io_before = {"bytes_read": 0, "reads": 0}
            for cmd in commands:
                path = os.path.join(tmp, cmd + ".json")
                d0, u0, p0 = proxy.counters()
                t = time.perf_counter()
                text, err = sess.run(cmd, [], path)
                dt = time.perf_counter() - t
                d1, u1, p1 = proxy.counters()
                if err:
                    raise RuntimeError(f"{cmd} failed: {err}\n{text[-2000:]}")
                rep = json.load(open(path))
                io = rep.get("target_io") or {}
                r = {"seconds": round(dt, 3), "link_down": d1 - d0, "link_up": u1 - u0, "link_requests": p1 - p0,
                     "bytes_read": io.get("bytes_read", 0) - io_before["bytes_read"],
                     "reads": io.get("reads", 0) - io_before["reads"]}
                io_before = {"bytes_read": io.get("bytes_read", 0), "reads": io.get("reads", 0)}
                if cmd == "heap-check":
                    s = rep["summary"][0]
                    r["chunks"] = s["chunks"]
                    r["states"] = s["states"]
                    r["findings"] = len(rep["findings"])
                    r["notes"] = rep["notes"]
                else:
                    r["edges"] = rep["stats"].get("edges")
                    r["lost"] = {k: rep["summary"][k]["count"] for k in ("definitely", "indirectly", "possibly")}
                    r["reachable"] = rep["summary"]["reachable"]["count"]
                res[cmd] = r
                os.unlink(path)
        os.rmdir(tmp)
        proxy.close()
        return res
    finally:
        try:
            gs.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gs.kill()
            gs.wait()


def fmt_row(r, cmd):
    c = r[cmd]
    unit = c["chunks"] if cmd == "heap-check" else c["edges"]
    per = lambda b: f"{b / unit:,.0f}" if unit else "-"
    return (f"| {r['n']:,} | {cmd} | {r['mode']} | {unit:,} | {c['bytes_read'] / 1e6:,.1f} | {per(c['bytes_read'])} | "
            f"{c['reads']:,} | {c['link_down'] / 1e6:,.1f} | {per(c['link_down'])} | {c['link_requests']:,} | "
            f"{c['seconds']:.2f} |")


def report(results, link_results, args) -> str:
    lines = ["", "## Remote (gdbserver)", "",
             f"`bench/remote_bench.py --sizes {args.sizes} --modes {args.modes}"
             + (f" --link {args.link} --link-sizes {args.link_sizes}" if args.link else "") + "`, "
             f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average "
             f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; gdb and gdbserver 13 over loopback "
             "through a byte-counting proxy; genheap N 4 (4 threads, ~30% freed, 8 mmapped chunks).",
             "*before*: HEAPLENS_SLOW_LINK=0 (the remote target read like a local one: 8 MiB heap windows, "
             "64 KiB cache blocks, whole anonymous mappings in the mmapped-chunk search, 64 KiB gaps read "
             "through by the tracer); *after*: the slow-link read strategy (default for remote targets).",
             "*read*: bytes heaplens asked gdb to read from the target (`target_io.bytes_read`) and its read "
             "requests; *link*: bytes gdbserver sent to gdb (hex-encoded memory, ~2x, plus gdb's own "
             "traffic) and the packets gdb sent. Per chunk walked for heap-check, per edge traced for "
             "heap-leaks (heap-leaks after heap-check in the same stop: its own reads only).", "",
             "| N | command | mode | chunks / edges | MB read | bytes read per chunk/edge | read requests "
             "| link MB | link bytes per chunk/edge | link packets | wall s |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for cmd in ("heap-check", "heap-leaks"):
            if cmd in r:
                lines.append(fmt_row(r, cmd))
    if link_results:
        rate, rtt = link_results[0]["link"]
        lines += ["", f"Through the proxy throttled to {rate / (1 << 20):g} MiB/s each way with a {rtt * 1000:g} ms "
                      "round trip (heap-check only):", "",
                  "| N | mode | link MB | link packets | wall s |", "|---:|---|---:|---:|---:|"]
        for r in link_results:
            c = r["heap-check"]
            lines.append(f"| {r['n']:,} | {r['mode']} | {c['link_down'] / 1e6:,.1f} | {c['link_requests']:,} | "
                         f"{c['seconds']:.2f} |")
    same = []
    for n in sorted({r["n"] for r in results}):
        rs = [r for r in results if r["n"] == n]
        if len(rs) == 2:
            a, b = rs
            ok = all(a[c].get(k) == b[c].get(k) for c in ("heap-check",) for k in ("chunks", "states", "findings"))
            ok &= all(a[c].get(k) == b[c].get(k) for c in ("heap-leaks",) if c in a for k in ("edges", "lost"))
            same.append(f"N={n:,}: {'identical' if ok else 'DIFFERENT'}")
    if same:
        lines += ["", "Reports before and after (chunks, states, findings, edges, leaks): " + "; ".join(same) + "."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--modes", default="before,after")
    ap.add_argument("--link", default=None, help="MiBps:RTTms, e.g. 3:2")
    ap.add_argument("--link-sizes", default="10000,100000")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    build()
    results, link_results = [], []
    for n in [int(x) for x in args.sizes.split(",")]:
        for mode in args.modes.split(","):
            log(f"N={n:,} {mode} ...")
            r = one_run(n, mode, ("heap-check", "heap-leaks"))
            for cmd in ("heap-check", "heap-leaks"):
                c = r[cmd]
                log(f"  {cmd}: {c['seconds']:.2f} s, read {c['bytes_read']:,} B in {c['reads']:,} requests, "
                    f"link {c['link_down']:,} B / {c['link_requests']:,} packets")
            results.append(r)
    if args.link:
        mib, ms = (float(x) for x in args.link.split(":"))
        for n in [int(x) for x in args.link_sizes.split(",")]:
            for mode in args.modes.split(","):
                log(f"N={n:,} {mode} over {args.link} ...")
                r = one_run(n, mode, ("heap-check",), link=(mib * (1 << 20), ms / 1000))
                log(f"  heap-check: {r['heap-check']['seconds']:.2f} s")
                link_results.append(r)
    text = report(results, link_results, args)
    print(text)
    raw = os.path.join(BUILD, "remote-results.json")
    json.dump({"results": results, "link": link_results}, open(raw, "w"), indent=1)
    if not args.no_append:
        with open(args.out, "a") as f:
            f.write(text)
        log(f"appended to {args.out}")


if __name__ == "__main__":
    main()
