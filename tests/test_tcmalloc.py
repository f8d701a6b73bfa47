"""gperftools tcmalloc 2.10 (Debian's stripped libraries): real programs under real gdb, live and
from gcore cores, LD_PRELOADed (libtcmalloc_minimal.so.4, libtcmalloc.so.4) and linked
(-ltcmalloc_minimal), each checked against the ground truth the program records."""
import functools
import os
import re
import shutil
import subprocess

import pytest

from harness import RUNS, build, gdb_cmd, misclassified_live, run_core, run_live

pytestmark = pytest.mark.gdb

LIBDIR = "/usr/lib/x86_64-linux-gnu"
MINIMAL = f"{LIBDIR}/libtcmalloc_minimal.so.4"
FULL = f"{LIBDIR}/libtcmalloc.so.4"
if not os.path.exists(MINIMAL):
    pytest.skip("libtcmalloc-minimal4 is not installed", allow_module_level=True)

# how the program gets tcmalloc: (LD_PRELOAD library, extra gcc arguments)
VARIANTS = {"preload-minimal": (MINIMAL, ()), "linked-minimal": (None, ("-ltcmalloc_minimal",)),
            "preload-full": (FULL, ())}
MODES = ("live", "core")
KNOWN = ("4", "2000")           # tc_known_heap: threads, objects per thread


@functools.lru_cache(maxsize=None)
def scenario(name, args=(), variant="preload-minimal"):
    """(live run, core run) of a test program at its checkpoint."""
    preload, extra = VARIANTS[variant]
    if preload and not os.path.exists(preload):
        pytest.skip(f"{preload} is not installed")
    exe = build(name, extra=extra)
    live = run_live(exe, args, preload=preload)
    assert live.core, f"gcore failed:\n{live.stdout[-2000:]}"
    core = run_core(exe, live.core, os.path.dirname(live.core))
    return live, core


def get(name, mode, args=(), variant="preload-minimal"):
    live, core = scenario(name, tuple(args), variant)
    return live if mode == "live" else core


def tc_summary(run):
    s = [x for x in run.check["summary"] if x["allocator"] == "tcmalloc"]
    assert len(s) == 1, run.check["summary"]
    return s[0]


def error_findings(run):
    return run.findings()          # allocator-level critical and warning findings


def in_page_run(info):
    return info.get("state") == "free" and (info.get("bin") or "").startswith("page heap")


def assert_truth(run):
    """Every recorded pointer has the state the program says it has. A freed object is free or
    cached at its own address, or lies in a free page run (its span went back to the page heap)."""
    t = run.truth
    assert t is not None and (t.live or t.freed)
    bad = misclassified_live(run)
    for addr, size in t.freed.items():
        i = run.infos[addr]
        if not (i.get("state") in ("free", "cached") and i.get("user_start") == addr or in_page_run(i)):
            bad.append(("freed", hex(addr), size, i.get("state"), i.get("user_start"), i.get("bin")))
    assert not bad, f"{len(bad)} pointers misclassified, first: {bad[:5]}"


def tcstats(run):
    """tcmalloc's own figures, printed by the program before the checkpoint."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^tcstats (\S+) (\d+)$", run.stdout, re.M)}


def owners(live):
    path = os.path.join(os.path.dirname(live.core), "truth.txt.owners")
    out = {}
    for line in open(path):
        _, addr, tid = line.split()
        out[int(addr, 16)] = int(tid)
    return out


# --- a clean, busy heap ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_known_heap_every_object_state(variant, mode):
    live, _ = scenario("tc_known_heap", KNOWN, variant)
    run = get("tc_known_heap", mode, KNOWN, variant)
    s = tc_summary(run)
    assert s["layout"].startswith("built-in table for gperftools 2.10"), s["layout"]
    fb = s["found_by"]
    assert "InitStaticVars" in fb["sizemap_"] and "InitStaticVars" in fb["pageheap_"], fb
    assert ("linked" if variant.startswith("linked") else "LD_PRELOAD") in fb["library"], fb
    assert_truth(run)
    assert not error_findings(run), error_findings(run)[:5]
    st = s["states"]
    assert st["allocated"] >= len(run.truth.live) and st["cached"] > 100 and st["free"] > 100
    # cached objects sit in the cache of the thread that freed them; every thread has some
    freed_by = owners(live)
    cached = [a for a in run.truth.freed if run.infos[a]["state"] == "cached"]
    wrong = [(hex(a), run.infos[a]["tid"], freed_by[a]) for a in cached if run.infos[a]["tid"] != freed_by[a]]
    assert cached and not wrong, wrong[:5]
    assert {run.infos[a]["tid"] for a in cached} == set(run.truth.threads)
    assert all(run.infos[a]["bin"].startswith("thread cache class ") for a in cached)
    # the totals recomputed from the walk are tcmalloc's own (MallocExtension), to the byte
    want = tcstats(live)
    assert len(want) == 7, live.stdout[-2000:]
    heap = run.stats["heaps"][0]
    assert heap["allocator"] == "tcmalloc" and len(heap["thread_caches"]) == len(run.truth.threads)
    assert heap["arenas"][0]["system_mem"] == want["generic.heap_size"]


def test_known_heap_totals_match_tcmalloc():
    """meta stats (heap-check's walk) against MallocExtension's numbers printed by the program."""
    from common.allocators import tcmalloc
    from common.coretarget import CoreTarget
    live, _ = scenario("tc_known_heap", KNOWN, "preload-minimal")
    snap = tcmalloc.walk(CoreTarget(live.core))
    want = tcstats(live)
    got = {k: snap.meta["stats"][k] for k in want}
    assert got == want
    own = snap.meta["stats"]["tcmalloc_counters"]
    assert own["pageheap.system_bytes"] == want["generic.heap_size"]
    assert own["thread caches size_"] == want["tcmalloc.current_total_thread_cache_bytes"]
    assert snap.meta["small_max"] == 262144 and snap.meta["version"] == "gperftools 2.10"


@pytest.mark.parametrize("mode", MODES)
def test_busy_multithreaded_heap_is_clean(mode):
    run = get("tc_known_heap", mode, ("8", "1500"))
    assert not error_findings(run), error_findings(run)[:5]
    assert_truth(run)
    s = tc_summary(run)
    assert s["chunks"] > 12000 and s["threads"] == 8
    assert len(run.stats["heaps"][0]["thread_caches"]) == 8


# --- double frees -----------------------------------------------------------------------------------
def expected(run, kind):
    return [a for k, a in run.truth.expect if k == kind]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how,variant", [("same", "preload-minimal"), ("cross", "preload-minimal"),
                                         ("central", "preload-minimal"), ("cross", "preload-full"),
                                         ("same", "linked-minimal")])
def test_double_free_reported_at_the_object(how, variant, mode):
    run = get("tc_double_free", mode, (how,), variant)
    want = expected(run, "double-free")
    assert len(want) == 1
    got = run.findings("double-free")
    assert [f["address"] for f in got] == want, run.check["findings"]
    f = got[0]
    assert f["severity"] == "critical" and f["chunk"]["start"] == want[0]
    lists = [e for e in f["evidence"] if e.startswith("in ")]
    if how == "same":
        assert "(the list loops)" in f["message"] and len(lists) == 2, f
    elif how == "cross":                        # the caches of threads 2 and 3
        assert any("thread cache" in e for e in lists), f
        assert len({e.split(" at position")[0] for e in lists}) == 2, f
    else:
        assert any(e.startswith("in central free list") for e in lists), f
        assert any(e.startswith("in thread cache") for e in lists), f
    info = run.infos[want[0]]
    assert info["state"] in ("cached", "free") and any("double-free" in w for w in info["warnings"])
    # no other error: the broken counters are evidence of the double free, not findings of their own
    assert not [x for x in error_findings(run) if x["kind"] != "double-free"], run.check["findings"]
    assert_truth(run)


# --- invalid frees and broken links ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_interior_free_reported(mode):
    run = get("tc_invalid_free", mode, ("interior",))
    want = expected(run, "invalid-free")
    assert len(want) == 1
    got = run.findings("invalid-free")
    assert [f["address"] for f in got] == want, run.check["findings"]
    p = want[0] - 16
    assert got[0]["chunk"] == {"start": p, "size": 64, "state": "allocated"}
    assert "16 bytes into the 64-byte object" in got[0]["message"]
    info = run.infos[want[0]]
    assert info["state"] == "allocated" and info["user_start"] == p and info["offset"] == 16
    assert any("invalid-free" in w for w in info["warnings"])
    assert not run.findings("double-free")
    assert_truth(run)


@pytest.mark.parametrize("mode", MODES)
def test_sized_free_with_wrong_size_reported(mode):
    run = get("tc_invalid_free", mode, ("sized",))
    want = expected(run, "invalid-free")
    got = run.findings("invalid-free")
    assert [f["address"] for f in got] == want and len(want) == 1, run.check["findings"]
    assert "class 19 (320 B)" in got[0]["message"] and "class 5 (64 B)" in got[0]["message"]
    assert_truth(run)


@pytest.mark.parametrize("mode", MODES)
def test_overwritten_link_reported(mode):
    run = get("tc_invalid_free", mode, ("link",))
    want = expected(run, "metadata-corruption")
    got = [f for f in run.findings("metadata-corruption") if f["address"] == want[0]]
    assert got and "0x4141414141414141" in got[0]["message"], run.check["findings"]
    assert not run.findings("double-free") and not run.findings("invalid-free")
    assert_truth(run)


# --- what is not walkable says so ----------------------------------------------------------------------
def test_unknown_build_says_what_to_install():
    """A tcmalloc whose build-id is not in the table and which has no debug info."""
    from elftools.elf.elffile import ELFFile
    lib = os.path.join(RUNS, "libtcmalloc_minimal.so.4")
    shutil.copy(os.path.realpath(MINIMAL), lib)
    with open(lib, "r+b") as f:
        elf = ELFFile(f)
        note = elf.get_section_by_name(".note.gnu.build-id")
        desc_at = note["sh_offset"] + note["sh_size"] - 20
        f.seek(desc_at)
        b = f.read(1)
        f.seek(desc_at)
        f.write(bytes([b[0] ^ 0xFF]))
    exe = build("tc_invalid_free")
    p = subprocess.run(gdb_cmd(False) + ["-ex", f"set environment LD_PRELOAD={lib}", "-ex", "break heaplens_checkpoint",
                                         "-ex", "run interior", "-ex", "heap-check", "-ex", "kill", exe],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    assert "has no debug info and is not in heaplens' layout table" in out, out[-2000:]
    assert "scripts/layouts/tcmalloc.sh" in out


# --- garbage in the allocator's metadata ----------------------------------------------------------------
FUZZ_ITERATIONS = int(os.environ.get("TC_FUZZ_ITERATIONS", "150"))


class Overlay:
    """A core seen through seeded byte mutations (addr -> bytes), for the walker only."""

    def __init__(self, base, muts):
        self.base, self.muts = base, sorted(muts)
        self.kind, self.pointer_size, self.byteorder = "core", 8, "little"
        self.bytes_read = self.max_read = 0

    def read(self, addr, size):
        self.bytes_read += size
        self.max_read = max(self.max_read, size)
        data = self.base.read(addr, size)
        hits = [(a, b) for a, b in self.muts if a < addr + size and a + len(b) > addr]
        if not hits:
            return data
        buf = bytearray(data)
        for a, b in hits:
            s, e = max(a, addr), min(a + len(b), addr + size)
            buf[s - addr:e - addr] = b[s - a:e - a]
        return bytes(buf)

    def threadsafe_reader(self):
        return self.read

    def __getattr__(self, name):                 # regions, threads, objfiles, symbol, ...
        return getattr(self.base, name)


def _fuzz_sites(snap, t):
    """Addresses of the metadata words the walker trusts least: Span fields, free objects'
    links, thread-cache list heads/lengths/links, central lists and slots, page-map entries."""
    from common.allocators.tcmalloc_locate import locate
    from common.memcache import CachedReader
    roots = locate(t, CachedReader(t))
    lay = roots.layout
    idx = snap.index
    free = [int(a) for a in idx.start[idx.state != 0][:5000]]
    spans, caches = [], list(snap.thread_cache.values())
    r = CachedReader(t)
    root = roots.pageheap + lay.ph_pagemap + lay.pm_root
    leaf = next(v for v in (r.u64(root + 8 * i) for i in range(lay.root_len)) if v)
    for a in idx.start[:: max(1, len(idx) // 300)]:
        s = r.u64(leaf + 8 * ((int(a) >> lay.page_shift) & (lay.leaf_len - 1)))
        if s:
            spans.append(s)
    central = [roots.central_cache + cl * lay.cf_stride for cl in range(1, roots.sizes.num_classes)]
    return {"span": [s + off for s in spans for off in (0, 8, 16, 24, 32, 40)],
            "link": free,
            "cache": [c + lay.tc_list + 32 * cl + off for c in caches for cl in range(1, 40) for off in (0, 8)]
                     + [c + lay.tc_next for c in caches] + [c + lay.tc_tid for c in caches],
            "central": [c + off for c in central for off in (lay.cf_used_slots, lay.cf_slots, lay.cf_slots + 8,
                                                             lay.cf_nonempty + lay.span_next, lay.cf_size_class)],
            "pagemap": [leaf + 8 * ((int(a) >> lay.page_shift) & (lay.leaf_len - 1))
                        for a in idx.start[:: max(1, len(idx) // 200)]] + [root + 8 * i for i in range(4)],
            "heads": [roots.thread_heaps, roots.sizemap + lay.sm_num_classes]}


def test_walk_survives_random_corruption():
    """Seeded random garbage in spans, links, thread caches, central lists and the page map:
    the walk returns a report (or a NotTcmalloc sentence), never raises anything else, stays
    fast and reads a bounded amount; every report renders."""
    import random
    import time
    from common import commands as C
    from common.allocators import tcmalloc
    from common.allocators.tcmalloc_locate import NotTcmalloc
    from common.coretarget import CoreTarget
    from common.report import SEVERITIES, sort_findings
    live, _ = scenario("tc_known_heap", KNOWN, "preload-minimal")
    base = CoreTarget(live.core)
    clean = tcmalloc.walk(base)
    sites = _fuzz_sites(clean, base)
    heap = [int(a) for a in clean.index.start[:: max(1, len(clean.index) // 500)]]
    detected = 0
    for seed in range(FUZZ_ITERATIONS):
        rng = random.Random(seed)
        muts = []
        for _ in range(rng.choice((1, 1, 2, 3, 8))):
            kind = rng.choice(sorted(sites))
            addr = rng.choice(sites[kind])
            val = rng.choice((0, 1, 0xFFFFFFFF, 0x4141414141414141, rng.getrandbits(64), rng.getrandbits(16),
                              rng.choice(heap), rng.choice(heap) + 8 * rng.randrange(1, 8), addr, addr - 8))
            width = 4 if kind == "cache" and rng.random() < 0.5 else 8
            muts.append((addr, (val & ((1 << 8 * width) - 1)).to_bytes(width, "little")))
        t = Overlay(base, muts)
        t0 = time.perf_counter()
        try:
            snap = tcmalloc.walk(t)
        except NotTcmalloc as e:
            assert str(e) and "\n" not in str(e)
            continue
        except Exception as e:
            raise AssertionError(f"seed {seed}: {type(e).__name__}: {e} with {[(hex(a), b.hex()) for a, b in muts]}")
        assert time.perf_counter() - t0 < 10, f"seed {seed}: slow walk"
        assert t.max_read <= 16 << 20 and t.bytes_read <= 1 << 30, (seed, t.max_read, t.bytes_read)
        detected += any(f.severity in ("critical", "warning") for f in snap.findings)
        for f in snap.findings:
            assert f.severity in SEVERITIES and f.message and "\n" not in f.message, f
        stats = C.heap_stats(snap)
        text = C._render_stats(stats) + C._render_check([snap], sort_findings(snap.findings), [C._summary(snap)], 0.0)
        for a in heap[:5] + [0, heap[0] + 3]:
            text += C._render_info(C.alloc_info([snap], C.Pointer(a, hex(a))))
        assert text
    assert detected > FUZZ_ITERATIONS // 4


def test_threads_matched_without_fs_base():
    """A debugger that gives no thread pointers (lldb): caches are matched to threads through the
    kernel tid in glibc's struct pthread at ThreadCache.tid_, with the same result."""
    from dataclasses import replace
    from common.allocators import tcmalloc
    from common.coretarget import CoreTarget
    live, _ = scenario("tc_known_heap", KNOWN, "preload-minimal")
    base = CoreTarget(live.core)

    class NoThreadPointers(Overlay):
        def threads(self):
            return [replace(t, fs_base=None) for t in self.base.threads()]

    with_fs = tcmalloc.walk(base)
    without = tcmalloc.walk(NoThreadPointers(base, []))
    assert "fs_base" in with_fs.meta["found_by"]["threads"]
    assert "struct pthread" in without.meta["found_by"]["threads"]
    assert without.thread_cache == with_fs.thread_cache and len(with_fs.thread_cache) == 4
    assert [(fl.thread, fl.tid) for fl in without.lists] == [(fl.thread, fl.tid) for fl in with_fs.lists]


@pytest.mark.skipif(not os.environ.get("HEAPLENS_TCMALLOC_G_LIB"),
                    reason="set HEAPLENS_TCMALLOC_G_LIB to a libtcmalloc_minimal.so.4 built with -g "
                           "(scripts/layouts/tcmalloc.sh WORKDIR leaves one in WORKDIR/google-perftools-2.10/.libs)")
@pytest.mark.parametrize("mode", MODES)
def test_layout_and_roots_from_debug_info(mode):
    """With debug info for tcmalloc, struct offsets and the hidden globals come from it (and
    agree with the table: the totals still match tcmalloc's own)."""
    VARIANTS["preload-debuginfo"] = (os.environ["HEAPLENS_TCMALLOC_G_LIB"], ())
    live, _ = scenario("tc_known_heap", KNOWN, "preload-debuginfo")
    run = get("tc_known_heap", mode, KNOWN, "preload-debuginfo")
    s = tc_summary(run)
    assert s["layout"] == "debug info" and "debug info" in s["found_by"]["sizemap_"], s
    assert_truth(run)
    assert not error_findings(run), error_findings(run)[:5]
    assert run.stats["heaps"][0]["arenas"][0]["system_mem"] == tcstats(live)["generic.heap_size"]
