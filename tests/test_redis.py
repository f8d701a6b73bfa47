"""A real server on jemalloc: Debian's redis-server (linked with Debian's libjemalloc.so.2),
loaded with keys of several sizes, stopped under gdb (attach, batch), then its gcore core.
heap-check must find nothing wrong, and the walk must agree with Redis's own numbers.

Tolerance: allocated and active bytes agree with INFO memory's allocator_allocated /
allocator_active within 256 KiB + 0.1%. Redis refreshes those fields in serverCron (every
100 ms), not when INFO runs, and between that refresh and gdb's stop the INFO and MEMORY
MALLOC-STATS replies come and go (MALLOC-STATS formats ~120 KiB of text into one buffer):
measured differences are 12-90 KiB. Resident and mapped bytes move only by whole purges:
within 1 MiB + 0.5%. jemalloc's own counters read from the stopped process (bin curregs,
large counts, nactive) must match the walk exactly.
"""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from harness import gdb_cmd

REDIS = shutil.which("redis-server")
pytestmark = [pytest.mark.gdb, pytest.mark.skipif(REDIS is None, reason="redis-server is not installed "
                                                                        "(apt-get install redis-server)")]
NKEYS = 8000
SIZES = (8, 40, 100, 600, 3000, 20000, 100000)


def kib_tolerance(ref: int, kib: int, frac: float) -> int:
    return kib * 1024 + int(ref * frac)


class Resp:
    """A minimal RESP client (no dependency on redis-py)."""

    def __init__(self, port):
        for _ in range(100):
            try:
                self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        self.f = self.s.makefile("rb")

    def send(self, *args):
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))

    def reply(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:].strip()
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return rest

    def call(self, *args):
        self.send(*args)
        return self.reply()


def load(c: Resp):
    """Strings of 8 B .. 200 KB, hashes and lists; then delete a third of the strings."""
    for i in range(NKEYS):
        c.send("SET", f"key:{i}", b"x" * (SIZES[i % len(SIZES)] if i % 50 else 200000))
    for _ in range(NKEYS):
        c.reply()
    for i in range(400):
        c.send("HSET", f"h:{i}", *[x for j in range(20) for x in (f"f{j}", "v" * (j * 7 % 90))])
        c.send("RPUSH", f"l:{i}", *[f"item{j}" * (j % 5 + 1) for j in range(30)])
    for _ in range(800):
        c.reply()
    c.call("DEL", *[f"key:{i}" for i in range(0, NKEYS, 3)])


PROBE = """python
import json, os
from gdb_plugin.target import current_target
from common.session import snapshots
json.dump([s.meta for s in snapshots(current_target())[0]], open(os.environ["HL_META"], "w"), default=str)
end
"""


def gdb_batch(args, out, name):
    script = os.path.join(out, f"{name}.gdb")
    with open(script, "w") as f:
        f.write(f"heap-check --json {out}/{name}-check.json\nheap-stats --json {out}/{name}-stats.json\n{PROBE}")
    env = dict(os.environ, HL_META=f"{out}/{name}-meta.json")
    p = subprocess.run(gdb_cmd(False) + ["-x", script] + args, capture_output=True, text=True, timeout=300, env=env)
    text = p.stdout + p.stderr
    assert "Traceback" not in text, text[-3000:]
    load_json = lambda n: json.load(open(f"{out}/{name}-{n}.json"))
    return {"check": load_json("check"), "stats": load_json("stats"), "meta": load_json("meta")[0], "text": text}


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("redis"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", out, "--save", "",
                             "--appendonly", "no", "--daemonize", "no", "--logfile", os.path.join(out, "log")])
    try:
        c = Resp(port)
        load(c)
        time.sleep(0.5)                      # let serverCron refresh the allocator figures INFO shows
        info = c.call("INFO", "memory").decode()
        mem = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
        malloc_stats = c.call("MEMORY", "MALLOC-STATS").decode()
        core = os.path.join(out, "core")
        live = gdb_batch(["-p", str(proc.pid), "-ex", f"gcore {core}"], out, "live")
        assert os.path.exists(core), live["text"][-2000:]
        dead = gdb_batch([REDIS, core], out, "core")
        os.unlink(core)
        yield {"info": mem, "malloc_stats": malloc_stats, "live": live, "core": dead}
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_redis_uses_debian_jemalloc(redis):
    assert redis["info"]["mem_allocator"].strip() == "jemalloc-5.3.0"
    for run in ("live", "core"):
        s = redis[run]["check"]["summary"][0]
        assert s["allocator"] == "jemalloc" and s["version"] == "5.3.0"
        assert s["layout"].startswith("built-in table for jemalloc 5.3.0 (build-id 1d5163c2"), s["layout"]


@pytest.mark.parametrize("run", ["live", "core"])
def test_redis_heap_check_has_no_false_findings(redis, run):
    bad = [f for f in redis[run]["check"]["findings"] if f["severity"] in ("critical", "warning", "info")
           and f["scope"] == "heap"]
    assert not bad, bad[:5]


@pytest.mark.parametrize("run", ["live", "core"])
def test_redis_allocated_agrees_with_info_memory(redis, run):
    info, h = redis["info"], redis[run]["stats"]["heaps"][0]["totals"]
    ours = h["in_use_bytes"] + h["cached_bytes"]            # jemalloc counts cached regions as allocated
    ref = int(info["allocator_allocated"])
    assert abs(ours - ref) <= kib_tolerance(ref, 256, 0.001), (ours, ref)
    st = redis[run]["meta"]["stats"]
    assert st["allocated"] == ours
    ref = int(info["allocator_active"])
    assert abs(st["active"] - ref) <= kib_tolerance(ref, 256, 0.001), (st["active"], ref)
    ref = int(info["allocator_resident"])
    assert abs(st["resident"] - ref) <= kib_tolerance(ref, 1024, 0.005), (st["resident"], ref)
    # Redis's own count (zmalloc's usable sizes of what it holds) is part of the live bytes
    used = int(info["used_memory"])
    assert used <= st["live_bytes"] <= used + kib_tolerance(used, 1024, 0.01), (used, st["live_bytes"])


def test_redis_malloc_stats_agree(redis):
    ms = redis["malloc_stats"]
    line = next(l for l in ms.splitlines() if l.startswith("Allocated:"))
    vals = dict(kv.strip().split(": ")[:2] for kv in line.split(",") if ": " in kv)
    st = redis["live"]["meta"]["stats"]
    for key, ours, kib, frac in (("Allocated", st["allocated"], 256, 0.001), ("active", st["active"], 256, 0.001),
                                 ("resident", st["resident"], 1024, 0.005), ("mapped", st["mapped"], 1024, 0.005)):
        ref = int(vals[key].split()[0])
        assert abs(ours - ref) <= kib_tolerance(ref, kib, frac), (key, ours, ref)


@pytest.mark.parametrize("run", ["live", "core"])
def test_redis_walk_matches_jemalloc_counters(redis, run):
    m = redis[run]["meta"]
    st, c = m["stats"], m["jemalloc_counters"]
    assert st["counter_mismatches"] == 0
    assert st["walked_curregs"] == c["curregs"] > 50000
    assert st["walked_curslabs"] == c["curslabs"]
    assert st["large_live"] + st["large_cached"] == c["large_extents"] > 1000
    assert st["allocated"] == c["allocated"]
    assert st["active"] == c["active_pages"] * 4096


def test_redis_core_is_the_live_heap(redis):
    a, b = redis["live"]["meta"]["stats"], redis["core"]["meta"]["stats"]
    assert a == b
    assert redis["live"]["check"]["summary"][0]["states"] == redis["core"]["check"]["summary"][0]["states"]
