"""jemalloc 5.3 (Debian's libjemalloc2): real programs run under real gdb with the library
LD_PRELOADed and linked with -ljemalloc, live and from gcore cores, checked against the ground
truth the programs record (tests/programs/je_*.c, je_truth.h); plus the layout table, the
walker's behaviour on corrupt metadata, and the one-sentence answers."""
import functools
import glob
import os
import shutil
import subprocess

import pytest

from harness import PROGRAMS, build, gdb_cmd, misclassified_live, run_core, run_live

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
DEBIAN_BUILD_ID = "1d5163c246dc9cd2b4d339f2ac42efd95c6e0ae1"
PROGRAM_CHECKS = ("stale-pointer", "type-size", "crash", "cap")

pytestmark = [pytest.mark.gdb,
              pytest.mark.skipif(not os.path.exists(LIB), reason="libjemalloc2 is not installed")]

LINKS = ["preload", "linked"]
ALL_LINKS = LINKS + ["static"]
MODES = ["live", "core"]
STATIC = "/usr/lib/x86_64-linux-gnu/libjemalloc.a"
LINK_FLAGS = {"preload": (), "linked": ("-ljemalloc",),
              # Debian's libjemalloc.a linked in (the program's own symbol table locates it;
              # -rdynamic lets the program find mallctl with dlsym)
              "static": ("-rdynamic", "-Wl,-Bstatic", "-ljemalloc", "-Wl,-Bdynamic", "-lm", "-ldl", "-lstdc++")}


def je_build(name: str, link: str) -> str:
    """The program, rebuilt when je_truth.h changed (harness.build watches truth.h only)."""
    if link == "static" and not os.path.exists(STATIC):
        pytest.skip("libjemalloc-dev (libjemalloc.a) is not installed")
    extra = LINK_FLAGS[link]
    exe = build(name, extra=extra)
    if os.path.getmtime(exe) < os.path.getmtime(os.path.join(PROGRAMS, "je_truth.h")):
        os.unlink(exe)
        exe = build(name, extra=extra)
    return exe


@functools.lru_cache(maxsize=None)
def scenario(name, link, args=()):
    exe = je_build(name, link)
    live = run_live(exe, args, preload=LIB if link == "preload" else None)
    assert live.core, f"gcore failed:\n{live.stdout[-2000:]}"
    core = run_core(exe, live.core, os.path.dirname(live.core))
    extra = read_extra(os.path.join(os.path.dirname(live.core), "truth.txt"))
    os.unlink(live.core)                    # cores of these heaps are ~200 MB: keep none around
    return live, core, extra


def get(name, link, mode, args=()):
    live, core, extra = scenario(name, link, tuple(args))
    return (live if mode == "live" else core), extra


def read_extra(path):
    """je_truth.h's extra records: freedby (last freeing thread per address, and every free in
    order) and jestat."""
    freedby, jestat, order = {}, {}, []
    for line in open(path):
        f = line.split()
        if f and f[0] == "freedby":
            freedby[int(f[1], 16)] = int(f[2])
            order.append((int(f[1], 16), int(f[2])))
        elif f and f[0] == "jestat":
            jestat[f[1]] = int(f[2])
    return {"freedby": freedby, "jestat": jestat, "order": order}


def heap_findings(run):
    return [f for f in run.check["findings"] if f["severity"] in ("critical", "warning")
            and f["check"] not in PROGRAM_CHECKS]


def assert_truth(run, extra):
    """Every recorded pointer has the state the program says; a cached one is in the cache of
    the thread that freed it."""
    t = run.truth
    bad = misclassified_live(run)
    for addr, size in t.freed.items():
        i = run.infos[addr]
        st, b = i.get("state"), i.get("bin") or ""
        if st == "cached":
            ok = i.get("user_start") == addr and i.get("tid") == extra["freedby"].get(addr) \
                and b.startswith("tcache bin ")
        elif st == "free" and b.startswith("free in a slab"):
            ok = i.get("user_start") == addr
        elif st == "free":                      # a released slab or large extent, maybe coalesced
            ok = "extents of arena" in b and i["user_start"] <= addr < i["user_start"] + i["size"]
        else:
            ok = False
        if not ok:
            bad.append(("freed", hex(addr), size, st, i.get("user_start"), b, i.get("tid"),
                        extra["freedby"].get(addr)))
    assert not bad, f"{len(bad)} of {len(t.live) + len(t.freed)} pointers misclassified, first: {bad[:5]}"


def assert_allocated_matches_jemalloc(run, extra):
    """jemalloc's stats.allocated (read by the program at the checkpoint) counts every region
    handed out by a slab or a large extent, cached ones included: the walk must find exactly it."""
    tot = run.stats["heaps"][0]["totals"]
    assert tot["in_use_bytes"] + tot["cached_bytes"] == extra["jestat"]["allocated"], (tot, extra["jestat"])


# --- a known heap -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("link", ALL_LINKS)
def test_known_heap_every_region_state(link, mode):
    run, extra = get("je_known", link, mode)
    s = run.check["summary"][0]
    assert run.check["allocator"] == "jemalloc" and s["allocator"] == "jemalloc"
    assert s["version"] == "5.3.0"
    table = f"built-in table for jemalloc 5.3.0 (build-id {DEBIAN_BUILD_ID})"
    if link == "static":
        assert s["layout"] == table + ", matched by symbol sizes", s
        assert s["found_by"]["tsd"].startswith("executable's TLS block"), s["found_by"]
    else:
        assert s["layout"] == table, s
        assert "TPOFF64" in s["found_by"]["tsd"], s["found_by"]
    assert not heap_findings(run), heap_findings(run)[:5]
    assert_truth(run, extra)
    t = run.truth
    assert len(t.live) > 300 and len(t.freed) > 1000
    states = {run.infos[a]["state"] for a in t.freed}
    assert states == {"cached", "free"}, states
    # cross-thread frees sit in the freeing thread's cache; every thread's cache holds some
    tids = {run.infos[a]["tid"] for a in t.freed if run.infos[a]["state"] == "cached"}
    assert tids == set(t.threads), (tids, t.threads)
    assert s["arenas"] == 5 and s["threads"] == 5
    caches = run.stats["heaps"][0]["thread_caches"]
    assert {c["tid"] for c in caches} == set(t.threads)
    assert_allocated_matches_jemalloc(run, extra)


def test_recency_is_the_reuse_order():
    """Position 0 of a cache bin is what the next malloc of that size returns: a cached region's
    recency is the number of regions its thread freed into the same bin after it."""
    for mode in MODES:
        run, extra = get("je_known", "preload", mode)
        seen = 0
        for tid in set(run.truth.threads):
            mine = [a for a, t in extra["order"] if t == tid and a in run.truth.freed
                    and run.infos[a]["state"] == "cached"]
            for k, a in enumerate(mine):
                b = run.infos[a]["bin"]
                later = sum(1 for x in mine[k + 1:] if run.infos[x]["bin"] == b)
                assert run.infos[a]["recency"] == later, (hex(a), b, run.infos[a]["recency"], later)
                seen += 1
        assert seen > 500


# --- bugs jemalloc does not notice ------------------------------------------------------------------
BUGS = [("same", "double-free"), ("cross", "double-free"), ("flushed", "double-free"),
        ("released", "double-free"), ("large", "double-free"), ("interior", "invalid-free")]


BUG_CASES = [(b, k, l) for b, k in BUGS for l in LINKS] + [("cross", "double-free", "static"),
                                                             ("interior", "invalid-free", "static")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bug,kind,link", BUG_CASES, ids=[f"{b}-{l}" for b, _, l in BUG_CASES])
def test_bug_reported_at_the_pointer(bug, kind, link, mode):
    run, extra = get("je_bugs", link, mode, (bug,))
    want = [a for k, a in run.truth.expect if k == kind]
    assert len(want) == 1
    got = heap_findings(run)
    assert [(f["kind"], f["address"]) for f in got] == [(kind, want[0])], got
    f = got[0]
    assert f["severity"] == "critical"
    info = run.infos[want[0]]
    if kind == "invalid-free":
        assert f["chunk"]["start"] == want[0] - 16 and info["state"] == "allocated" and info["offset"] == 16
        assert "16 bytes into the 64-byte region" in f["message"]
        assert any(e.startswith("in tcache bin 4 (0x40) of thread 1") for e in f["evidence"]), f["evidence"]
    elif bug in ("flushed", "released"):
        assert info["state"] == "free" and info["user_start"] == want[0]
        assert "slab's bitmap says free" in f["message"] if bug == "flushed" else "dirty extent" in f["message"]
        assert any(e.startswith("in tcache bin 6 (0x60) of thread 1") for e in f["evidence"]), f["evidence"]
    else:
        assert info["state"] == "cached" and info["user_start"] == want[0]
        where = [e for e in f["evidence"] if e.startswith("in tcache bin")]
        assert len(where) == 2, f["evidence"]
        if bug == "cross":                    # one entry in each thread's cache
            assert "of thread 1" in where[0] and "of thread 2" in where[1], where
            assert "(freed by thread 1 and by thread 2)" in f["message"]
        else:                                 # twice in one bin, at positions 0 and 1
            assert where[0].endswith("position 0 (next to be reused)") and where[1].endswith("position 1"), where
    assert any("double-free" in w or "invalid-free" in w for w in info["warnings"]), info
    # everything else is still classified right
    run.truth.freed.pop(want[0], None)
    assert_truth(run, extra)


# --- a busy heap ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("link", ALL_LINKS)
def test_busy_multithreaded_heap_is_clean(link, mode):
    run, extra = get("je_busy", link, mode)
    assert not heap_findings(run), heap_findings(run)[:5]
    assert not [f for f in run.check["findings"] if f["check"] == "counters"], "jemalloc's counters disagree"
    assert_truth(run, extra)
    s = run.check["summary"][0]
    assert s["arenas"] >= 5 and s["threads"] == 7
    assert s["states"]["cached"] > 1000 and s["states"]["free"] > 1000 and s["states"]["allocated"] > 5000
    h = run.stats["heaps"][0]
    assert len(h["thread_caches"]) == 7
    assert_allocated_matches_jemalloc(run, extra)
    # the walk's usable bytes of the program's own live blocks fit in the live total, with only
    # jemalloc's own internal allocations (a tcache stack per thread) and libc's left over
    mine = sum(run.infos[a]["size"] for a in run.truth.live)
    assert mine <= h["totals"]["in_use_bytes"] <= mine + 7 * 32768 + 65536, (mine, h["totals"])


# --- layouts ----------------------------------------------------------------------------------
def rebuilt_library():
    """The -g rebuild scripts/layouts/jemalloc.sh makes (unstripped: DWARF and symbols), if any."""
    pats = [os.environ.get("HEAPLENS_JEMALLOC_BUILD", ""),
            os.path.join(os.environ.get("TMPDIR", "/tmp"), "heaplens-jemalloc-layout")]
    for d in filter(None, pats):
        for p in glob.glob(os.path.join(d, "jemalloc-*", "lib", "libjemalloc.so.2")):
            return p
    return None


def test_shipped_table_is_what_the_rebuild_gives():
    from common.allocators.jemalloc_dwarf import extract
    from common.allocators.jemalloc_layout import tables
    lib = rebuilt_library()
    if lib is None:
        pytest.skip("no rebuild of Debian's jemalloc (run scripts/layouts/jemalloc.sh)")
    t = tables()[DEBIAN_BUILD_ID]
    d = extract(lib)
    for k in ("structs", "globals", "config", "version_string"):
        assert d[k] == t[k], k
    assert t["config"]["lg_vaddr"] == 48


def test_debug_info_layout_used_when_present():
    """The rebuilt, unstripped library preloaded instead: offsets come from its DWARF."""
    lib = rebuilt_library()
    if lib is None:
        pytest.skip("no rebuild of Debian's jemalloc (run scripts/layouts/jemalloc.sh)")
    exe = je_build("je_known", "preload")
    run = run_live(exe, preload=lib, gcore=False)
    s = run.check["summary"][0]
    assert s["layout"] == "debug info" and s["found_by"]["layout"] == f"debug info in {os.path.realpath(lib)}"
    assert not heap_findings(run)
    t = run.truth
    assert all(run.infos[a]["state"] == "allocated" for a in t.live)
    assert all(run.infos[a]["state"] in ("cached", "free") for a in t.freed)


def test_57_bit_rtree_from_debug_info():
    """A build for 5-level paging (configure --with-lg-vaddr=57: a 3-level rtree with 16-byte
    leaf elements) walked from its debug info. Set HEAPLENS_JEMALLOC_57 to such a libjemalloc.so.2
    (unstripped), e.g. the source package configured by hand with --with-lg-vaddr=57."""
    lib = os.environ.get("HEAPLENS_JEMALLOC_57")
    if not lib or not os.path.exists(lib):
        pytest.skip("no LG_VADDR=57 jemalloc build given (HEAPLENS_JEMALLOC_57)")
    from common.allocators.jemalloc_locate import lg_vaddr_from_code
    from common.elfinfo import elf_info
    assert lg_vaddr_from_code(elf_info(lib)) == 57
    exe = je_build("je_known", "preload")
    run = run_live(exe, preload=lib, gcore=False)
    s = run.check["summary"][0]
    assert s["layout"] == "debug info" and not heap_findings(run)
    assert all(run.infos[a]["state"] == "allocated" and run.infos[a]["user_start"] == a for a in run.truth.live)
    assert all(run.infos[a]["state"] in ("cached", "free") for a in run.truth.freed)
    assert s["states"]["cached"] > 1000


def test_unknown_build_gets_one_sentence(tmp_path):
    """A libjemalloc whose build-id has no table and no debug file: one sentence, no guess."""
    from elftools.elf.elffile import ELFFile
    lib = tmp_path / "libjemalloc.so.2"
    shutil.copy(LIB, lib)
    with open(lib, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".note.gnu.build-id")
        off = sec["sh_offset"] + sec["sh_size"] - 20          # the 20-byte build-id itself
    data = bytearray(lib.read_bytes())
    data[off:off + 20] = bytes(range(20))
    lib.write_bytes(bytes(data))
    exe = je_build("je_known", "preload")
    p = subprocess.run(gdb_cmd(False) + ["-ex", f"set environment LD_PRELOAD={lib}", "-ex", "break heaplens_checkpoint",
                                         "-ex", "run", "-ex", "heap-check", "-ex", "kill", exe],
                       capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    bid = bytes(range(20)).hex()
    assert f"jemalloc build-id {bid} has no layout table: install its debug symbols or regenerate with " \
           "scripts/layouts/jemalloc.sh (version 5.3.0; LG_VADDR 48 from its free() code)" in out, out[-2000:]


# --- corrupt metadata (no gdb in the walks: a real core seen through an overlay) ----------------------
@pytest.fixture(scope="module")
def je_core(tmp_path_factory):
    """A gcore core of je_known (preloaded), kept for this module's corruption tests."""
    exe = je_build("je_known", "preload")
    live = run_live(exe, preload=LIB, workdir=str(tmp_path_factory.mktemp("je-core")))
    assert live.core
    yield live.core
    os.unlink(live.core)


def clean_walker(core):
    """The walker's internals on the clean core: where the structures are, to corrupt them."""
    from common.allocators.jemalloc import _Walker
    from common.allocators.jemalloc_locate import locate
    from common.coretarget import CoreTarget
    from common.memcache import CachedReader
    t = CoreTarget(core)
    r = CachedReader(t)
    w = _Walker(t, r, locate(t, r))
    w.run()
    return t, w


def walk_mutated(base, overlay):
    from test_fuzz import MutatedTarget
    from common.allocators import jemalloc
    from common import commands as C
    mt = MutatedTarget(base, overlay, {})
    snap = jemalloc.walk(mt)
    C.heap_stats(snap)                                  # rendering must survive too
    for i in range(0, len(snap.index), max(1, len(snap.index) // 50)):
        C.alloc_info([snap], C.Pointer(int(snap.index.start[i]) + 3))
    return snap, mt


def by_check(snap, check):
    return [f for f in snap.findings if f.check == check]


def test_corrupt_cache_entries_are_findings(je_core):
    import struct
    t, w = clean_walker(je_core)
    tc = next(c for c in w.tcaches if c.thread == 2)
    (b0, head0, items0), (b1, head1, items1) = [x for x in tc.bins if len(x[2]) >= 2 and w.size_of(x[0]) >= 32][:2]
    over = [(head0, struct.pack("<Q", int(items0[1]) + 8)),            # an interior pointer on top
            (head1 + 8, struct.pack("<Q", int(items1[0])))]            # the top entry twice
    snap, _ = walk_mutated(t, over)
    inv = by_check(snap, "tcache-interior")
    assert [f.address for f in inv] == [int(items0[1]) + 8] and inv[0].kind == "invalid-free"
    dup = by_check(snap, "tcache-duplicate")
    assert [f.address for f in dup] == [int(items1[0])] and dup[0].kind == "double-free"
    assert "position 0" in dup[0].evidence[0] and "position 1" in dup[0].evidence[1]
    # a cache bin whose bounds are garbage is reported and skipped, not followed
    o = tc.addr + w.lay.tc_bins + b0 * w.lay.cb_size + w.lay.cb_empty
    snap, _ = walk_mutated(t, [(o, b"\x00\xff")])
    assert by_check(snap, "tcache-bin")


def test_corrupt_slab_and_extent_metadata_are_findings(je_core):
    import struct
    t, w = clean_walker(je_core)
    lay = w.lay
    row = int(w.slab_rows[len(w.slab_rows) // 2])
    ed = int(w.ex.edata[row])
    bits = int(w.ex.bits[row])
    shift, width = lay.ebits["nfree"]
    wrong = (bits & ~(((1 << width) - 1) << shift)) | (((int(w.slab_nfree[len(w.slab_rows) // 2]) + 3)
                                                        & ((1 << width) - 1)) << shift)
    snap, _ = walk_mutated(t, [(ed + lay.e_bits, struct.pack("<Q", wrong))])
    f = by_check(snap, "slab-nfree")
    assert len(f) == 1 and f[0].chunk["start"] == int(w.slab_base[len(w.slab_rows) // 2]), f
    # an edata whose address is garbage: reported, its regions dropped, the rest still walked
    snap, _ = walk_mutated(t, [(ed + lay.e_addr, struct.pack("<Q", 0x123))])
    assert by_check(snap, "rtree-edata") or by_check(snap, "edata")
    assert len(snap.index) > len(w.index) // 2
    # the slab's rtree entry for its first page pointing at another slab's edata
    other = int(w.ex.edata[int(w.slab_rows[0])])
    key = int(w.slab_base[len(w.slab_rows) // 2])
    root = w.roots.addr("je_arena_emap_global") + lay.rtree_root
    leaf = w.r.u64(root + 8 * ((key >> 30) & 0x3FFFF))
    elm = leaf + 8 * ((key >> 12) & 0x3FFFF)
    old = w.r.u64(elm)
    snap, _ = walk_mutated(t, [(elm, struct.pack("<Q", (old & 0xFFFF00000000007F) | (other & 0xFFFFFFFFFF80)))])
    assert by_check(snap, "rtree-edata")


def test_random_corruption_never_breaks_the_walk(je_core):
    """Seeded random overwrites of jemalloc's metadata: rtree leaves, edata, cache stacks, tsd,
    arenas and globals. Every walk returns a snapshot (or one NotJemalloc sentence), reads a
    bounded amount and finishes quickly."""
    import random
    import struct
    import time
    from common.allocators.jemalloc_locate import NotJemalloc
    t, w = clean_walker(je_core)
    lay = w.lay
    root = w.roots.addr("je_arena_emap_global") + lay.rtree_root
    leaf = w.r.u64(root + 8 * ((int(w.slab_base[0]) >> 30) & 0x3FFFF))
    targets = [(int(e), lay.edata_size) for e in w.ex.edata[:200]]
    targets += [(leaf + 8 * ((int(b) >> 12) & 0x3FFFF), 8) for b in w.slab_base[:200]]
    targets += [(int(h), 8 * len(it)) for c in w.tcaches for _, h, it in c.bins]
    targets += [(c.tsd, lay.tsd_size) for c in w.tcaches if c.tsd]
    targets += [(a.address, lay.arena_size) for a in w.arenas]
    targets += [(w.roots.addr(g), 64) for g in ("je_arenas", "je_bin_infos", "je_sz_index2size_tab", "je_nhbins")]
    seed0 = int(os.environ.get("FUZZ_BASE_SEED", "1"))
    outcomes = {"snapshot": 0, "not-jemalloc": 0}
    for it in range(int(os.environ.get("FUZZ_ITERATIONS", "150"))):
        rnd = random.Random(seed0 + it)
        over = []
        for _ in range(rnd.randint(1, 12)):
            a, n = rnd.choice(targets)
            off = rnd.randrange(0, max(1, n - 8)) & ~7
            v = rnd.choice([0, 1, 0xFFFFFFFFFFFFFFFF, rnd.getrandbits(64), rnd.getrandbits(16),
                            int(rnd.choice(w.ex.edata)) + rnd.choice([0, 8, 128]),
                            int(rnd.choice(w.index.start)) + rnd.choice([0, 8, 16])])
            over.append((a + off, struct.pack("<Q", v & (2 ** 64 - 1))))
        t0 = time.perf_counter()
        try:
            snap, mt = walk_mutated(t, over)
            outcomes["snapshot"] += 1
            assert mt.max_read <= 8 << 20 and mt.bytes_read <= 256 << 20, (seed0 + it, mt.max_read, mt.bytes_read)
        except NotJemalloc as e:
            outcomes["not-jemalloc"] += 1
            assert "\n" not in str(e)
        assert time.perf_counter() - t0 < 10, f"seed {seed0 + it} took too long"
    assert outcomes["snapshot"] > outcomes["not-jemalloc"], outcomes
