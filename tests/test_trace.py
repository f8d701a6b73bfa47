"""Issue 4, part B: common/trace — the typed pointer graph, leaks, who-points-to, exports.

Real C programs under real gdb, live and from gcore cores (tests/trace_probe.py drives the API
from gdb's debug info until the heap-leaks/heap-why/heap-trace commands exist), plus unit
tests of the engine on synthetic heaps (layouts gdb cannot give yet: discriminated unions,
flexible array tails; long chains; arrays sized by their chunk)."""
import json
import os
import struct

import numpy as np
import pytest

from harness import ROOT, build, run_core, run_live

PROBE = os.path.join(ROOT, "tests", "trace_probe.py")


def _trace(run) -> dict:
    text = run.texts.get(f"source {PROBE}", "")
    for line in text.splitlines():
        if line.startswith("TRACE-JSON "):
            res = json.load(open(line.split(" ", 1)[1]))
            assert "error" not in res, res["error"]
            return res
    raise AssertionError(f"the trace probe wrote nothing:\n{text[-3000:]}\n{run.stdout[-3000:]}")


def _expect(run):
    out = {}
    for kind, addr in run.truth.expect:
        out.setdefault(kind, []).append(addr)
    return out


def _cats(rep):
    """address -> category in a leaks() report (absent: reachable)."""
    out = {}
    for name in ("definitely", "indirectly", "possibly"):
        for e in rep[f"{name}_lost"]:
            out[e["address"]] = name
    return out


# --- real programs under gdb -------------------------------------------------------------------
@pytest.fixture(scope="module")
def leaks_runs():
    exe = build("trace_leaks")
    live = run_live(exe, extra=[f"source {PROBE}"])
    assert live.core, "gcore failed"
    core = run_core(exe, live.core, os.path.dirname(live.core), extra=[f"source {PROBE}"])
    core.truth = live.truth
    return {"live": live, "core": core}


@pytest.mark.gdb
@pytest.mark.parametrize("where", ["live", "core"])
def test_leak_categories(leaks_runs, where):
    run = leaks_runs[where]
    res, exp = _trace(run), _expect(run)
    rep = res["leaks"]
    cats = _cats(rep)
    # a dropped linked list: one definitely lost head, the rest (nodes and their names) indirectly
    for a in exp["definitely-lost"]:
        assert cats.get(a) == "definitely", (hex(a), cats.get(a))
    for a in exp["indirectly-lost"]:
        assert cats.get(a) == "indirectly", (hex(a), cats.get(a))
    head = [e for e in rep["definitely_lost"] if e["address"] == exp["definitely-lost"][0]][0]
    assert head["indirect"]["count"] == len(exp["indirectly-lost"]) == 9
    # a cycle nothing points to: valgrind's rule, one definitely lost standing for two indirectly lost
    cyc = sorted(cats.get(a) for a in exp["cycle-lost"])
    assert cyc == ["definitely", "indirectly", "indirectly"], cyc
    # the integer-only reference: lost when traced precisely, reachable when guessing — both shown
    hid = exp["integer-only"][0]
    assert cats.get(hid) == "definitely"
    entry = [e for e in rep["definitely_lost"] if e["address"] == hid][0]
    assert entry["conservative"] == "reachable"
    assert hid not in _cats(res["leaks_conservative"])
    hidden = rep["comparison"]["lost_precise_reachable_conservative"]
    assert hid in [c["address"] for c in hidden["chunks"]]
    # an interior pointer only: possibly lost, with who points where
    pos = exp["possibly-lost"][0]
    assert cats.get(pos) == "possibly"
    pe = [e for e in rep["possibly_lost"] if e["address"] == pos][0]
    assert pe["interior"][0]["from"] == "global g_interior" and pe["interior"][0]["offset"] == 16
    # the totals: nothing else is lost (stdio buffers, the tcache, the DTV are not leaks)
    s = rep["summary"]
    assert s["definitely"]["count"] == 4 and s["indirectly"]["count"] == 11 and s["possibly"]["count"] == 1, s
    assert res["leaks_conservative"]["summary"]["definitely"]["count"] == 3
    for a in exp["reachable"]:
        assert a not in cats, hex(a)
    # findings: one per definitely lost chunk, the list head carrying its 9 indirect chunks
    f = [x for x in rep["findings"] if x["check"] == "trace-leak"]
    assert len(f) == 4 and all(x["kind"] == "leak" for x in f)
    assert any("and 9 more chunk(s)" in x["message"] for x in f)


@pytest.mark.gdb
@pytest.mark.parametrize("where", ["live", "core"])
def test_why_chains(leaks_runs, where):
    run = leaks_runs[where]
    res, exp = _trace(run), _expect(run)
    w = res["why"][str(exp["why-value"][0])]
    c = w["chains"][0]
    assert c["steps"] == ["global g_cache", "entries[3]", "->next", "->value"], c["steps"]
    assert c["how"] == "precise" and c["expression"] == "g_cache.entries[3]->next->value"
    assert w["type"] == "char[] (text)" and w["category"] == "reachable"
    steps = {a: res["why"][str(a)]["chains"][0]["steps"] for a in exp["reachable"]}
    assert ["global g_holder", "buf"] in steps.values()
    assert ["global g_table", "slots", "[4]"] in steps.values()                 # array sized by chunk
    assert any(s[:2] == ["global g_tagged", "u.n (union)"] for s in steps.values())
    assert any(s[0] == "global g_box" and "conservative" in s[-1] for s in steps.values())   # void *
    assert any(s[0].startswith("local local_list (main, thread 1") and s[1:] == ["->next"] * 3
               for s in steps.values())
    for a in exp["definitely-lost"] + exp["cycle-lost"]:
        assert res["why"][str(a)]["chains"] == [] and not res["why"][str(a)]["reachable"]
    # a stale pointer: the chain ends in the freed chunk, and it is a use-after-free finding
    st = res["why"][str(exp["stale"][0])]
    assert st["chains"][0]["steps"] == ["global g_stale_holder", "->name"]
    assert st["chunk"]["state"] in ("free", "cached")
    uaf = [f for f in res["stale"] if f["address"] == exp["stale"][0]]
    assert uaf and uaf[0]["kind"] == "use-after-free" and uaf[0]["variable"]["name"] == "g_stale_holder->name"


@pytest.mark.gdb
def test_exports(leaks_runs):
    res = _trace(leaks_runs["live"])
    dot = res["dot_around"]
    assert dot.startswith("digraph heap {") and '[label="->next"' in dot
    js = res["json_around"]
    assert js["counts"]["nodes"] == len(js["nodes"]) > 1
    kinds = {n["kind"] for n in js["nodes"]}
    assert "chunk" in kinds
    assert all({"src", "dst", "how", "step"} <= set(e) for e in js["edges"])
    assert "digraph" in res["dot"] and res["graph_json_counts"]["edges"] > 20


@pytest.fixture(scope="module")
def busy_runs():
    out = {}
    for opt in ("-O0", "-O2"):
        exe = build("trace_busy", opt)
        live = run_live(exe, extra=[f"source {PROBE}"], gcore=(opt == "-O2"))
        out[opt] = live
        if opt == "-O2":
            out["core"] = run_core(exe, live.core, os.path.dirname(live.core), extra=[f"source {PROBE}"])
    return out


@pytest.mark.gdb
@pytest.mark.parametrize("which", ["-O0", "-O2", "core"])
def test_clean_busy_heap_has_no_leaks(busy_runs, which):
    res = _trace(busy_runs[which])
    for rep in (res["leaks"], res["leaks_conservative"]):
        s = rep["summary"]
        assert s["definitely"]["count"] == s["indirectly"]["count"] == s["possibly"]["count"] == 0, \
            (rep["mode"], rep["definitely_lost"][:3], rep["possibly_lost"][:3])
        assert s["reachable"]["count"] > 1500
    # held only from TLS and from the program's own mmapped memory: found, labelled conservative
    assert res["leaks"]["summary"]["reachable_conservatively_only"]["count"] >= 26
    kinds = {e["kind"] for e in res["roots"]["extra"]}
    assert {"tls", "data", "anon", "allocator", "runtime"} <= kinds
    assert res["stale"] == []
    if which != "-O0":
        # -O2: optimized-out locals are counted, and their frames fall back to a labelled scan
        st = res["roots"]["stats"]
        assert st["optimized_out"] >= 1 and st["frames_with_optimized_out"] >= 1
        assert any(e["kind"] == "stack" and "optimized out" in e["label"] for e in res["roots"]["extra"])
        assert res["leaks"]["roots"]["variables_optimized_out"] >= 1


# --- the engine on synthetic heaps (no debugger) ---------------------------------------------------
from common.heapindex import ALLOCATED, CACHED, HeapIndex              # noqa: E402
from common.memcache import CachedReader                                # noqa: E402
from common.snapshot import HeapSnapshot                                # noqa: E402
from common.target import PtrSlot, ReadError, Region, Target, TypeLayout, Variable, Variant   # noqa: E402
from common.trace import build_graph, leaks, to_dot, to_json, why       # noqa: E402

BASE = 0x10000000


class FakeHeap(Target):
    """A glibc-shaped heap in a bytearray: malloc() lays chunks out one after another."""
    kind = "core"

    def __init__(self, size=1 << 20):
        self.mem = bytearray(size)
        self.next = BASE
        self.chunks = []            # (start, size, state)
        self.globals_at = BASE + size - 65536
        self.gnext = self.globals_at

    def malloc(self, n, state=ALLOCATED):
        csize = max(32, (n + 8 + 15) & ~15)
        start = self.next
        self.next += csize
        self.chunks.append((start, csize, state))
        return start + 16

    def put(self, addr, *words):
        for i, w in enumerate(words):
            struct.pack_into("<Q", self.mem, addr - BASE + 8 * i, w)

    def put_bytes(self, addr, data):
        self.mem[addr - BASE:addr - BASE + len(data)] = data

    def glob(self, n=8):
        a = self.gnext
        self.gnext += (n + 7) & ~7
        return a

    def read(self, addr, size):
        if addr < BASE or addr + size > BASE + len(self.mem):
            raise ReadError(addr, size)
        return bytes(self.mem[addr - BASE:addr - BASE + size])

    def regions(self):
        return [Region(BASE, BASE + len(self.mem), "rw-p", "[heap]")]

    def snapshot(self):
        s = [c[0] for c in self.chunks]
        idx = HeapIndex(s, [c[1] for c in self.chunks], [c[2] for c in self.chunks], [0] * len(s),
                        [-1] * len(s), [-1] * len(s))
        return HeapSnapshot("glibc", idx, [], [], [], [])


def ptr(name, off, target, size=None, amb=False):
    return PtrSlot(name, off, f"{target} *" if target else "void *", size, target, amb)


NODE = TypeLayout("struct node", 16, (ptr(".next", 0, "struct node", 16),))


def graph(h, roots, types, **kw):
    return build_graph([h.snapshot()], roots, types.get, CachedReader(h), **kw)


def gvar(h, name, lay, *words):
    a = h.glob(max(lay.size, 8 * len(words)))
    h.put(a, *words)
    return Variable(name, "global", lay, address=a)


def test_long_list_and_cycle_synthetic():
    """A 20000-node list (the worst case for a level-by-level walk) is reached precisely, and a
    lost cycle has exactly one definitely lost member."""
    h = FakeHeap(4 << 20)
    nodes = [h.malloc(16) for _ in range(20000)]
    for a, b in zip(nodes, nodes[1:]):
        h.put(a, b, 7)
    cyc = [h.malloc(16) for _ in range(4)]
    for a, b in zip(cyc, cyc[1:] + cyc[:1]):
        h.put(a, b)
    root = gvar(h, "g_head", TypeLayout("struct node *", 8, (ptr("", 0, "struct node", 16),)), nodes[0])
    g = graph(h, [root], {"struct node": NODE})
    assert g.stats["objects_precise"] + g.stats["objects_vectorised"] >= 20000
    rep = leaks(g)
    assert rep["summary"]["reachable"]["count"] == 20000
    assert rep["summary"]["definitely"]["count"] == 1 and rep["summary"]["indirectly"]["count"] == 3
    w = why(g, nodes[5])
    assert w["chains"][0]["steps"] == ["global g_head"] + ["->next"] * 5
    assert w["type"] == "struct node"


def test_array_sized_by_chunk_tail_and_variants():
    h = FakeHeap()
    items = [h.malloc(24) for _ in range(6)]
    arr = h.malloc(6 * 8)                       # struct item **: 6 pointers (usable 56: 7 slots)
    h.put(arr, *items)
    # a flexible array member: struct bag { long n; struct item *items[]; }
    bag = h.malloc(8 + 5 * 8)
    tail_items = [h.malloc(24) for _ in range(5)]
    h.put(bag, 5, *tail_items)
    # a discriminated union (a Rust enum): kind 0 holds a pointer at +8, kind 1 an integer
    e0, e1 = h.malloc(16), h.malloc(16)
    target0 = h.malloc(24)
    secret = h.malloc(40)
    h.put(e0, 0, target0)
    h.put(e1, 1, secret)
    ITEM = TypeLayout("struct item", 24, ())
    BAG = TypeLayout("struct bag", 8, (), tail=(8, 8, (ptr("", 0, "struct item", 24),)))
    ENUM = TypeLayout("enum E", 16, (), discr_offset=0, discr_size=8,
                      variants=(Variant(0, (ptr(".0", 8, "struct item", 24),)), Variant(1, ())))
    types = {"struct item": ITEM, "struct bag": BAG, "enum E": ENUM}
    roots = [gvar(h, "g_arr", TypeLayout("struct item **", 8, (PtrSlot("", 0, "struct item **", 8, None),)), arr),
             gvar(h, "g_bag", TypeLayout("struct bag *", 8, (ptr("", 0, "struct bag", 8),)), bag),
             gvar(h, "g_e", TypeLayout("enum E *", 8, (ptr("", 0, "enum E", 16),)), e0),
             gvar(h, "g_e1", TypeLayout("enum E *", 8, (ptr("", 0, "enum E", 16),)), e1)]
    g = graph(h, roots, types)
    rep = leaks(g)
    lost = _cats(rep)
    assert set(lost) == {secret}                # the integer variant is not a pointer
    assert why(g, items[4])["chains"][0]["steps"] == ["global g_arr", "[4]"]
    assert why(g, tail_items[3])["chains"][0]["steps"] == ["global g_bag", "->tail[3]"]
    assert why(g, target0)["chains"][0]["steps"] == ["global g_e", "->0"]
    assert why(g, items[0])["type"] == "struct item"
    gc = graph(h, roots, types, conservative=True)
    assert _cats(leaks(gc)) == {}               # guessing: the integer looks like a pointer


def test_text_interior_stale_and_exports():
    h = FakeHeap()
    s = h.malloc(32)
    h.put_bytes(s, b"hello, world\0")
    junk = h.malloc(32)
    other = h.malloc(48)
    h.put(junk, 0x0101, other)                  # char * to non-text: scanned conservatively
    big = h.malloc(64)
    freed = h.malloc(40, state=CACHED)
    holder = h.malloc(16)
    h.put(holder, freed)
    # a typed pointer out of the heap into a struct in writable memory (an "extern" object),
    # whose own pointer leads back to a chunk nothing else holds
    ext = h.glob(16)
    back = h.malloc(24)
    h.put(ext, back)
    via = h.malloc(16)
    h.put(via, ext)
    CH = "char"
    roots = [gvar(h, "g_s", TypeLayout("char *", 8, (PtrSlot("", 0, "char *", None, None),)), s),
             gvar(h, "g_j", TypeLayout("char *", 8, (PtrSlot("", 0, "char *", None, None),)), junk),
             gvar(h, "g_mid", TypeLayout("char *", 8, (PtrSlot("", 0, "char *", None, None),)), big + 8),
             gvar(h, "g_h", TypeLayout("struct node *", 8, (ptr("", 0, "struct node", 16),)), holder),
             gvar(h, "g_v", TypeLayout("struct node *", 8, (ptr("", 0, "struct node", 16),)), via)]
    g = graph(h, roots, {"struct node": NODE})
    assert why(g, back)["chains"][0]["steps"] == ["global g_v", "->next", "->next"]
    assert g.stats["extern_objects"] == 1
    assert CH and g.text[g.chunks.find(s)] and not g.text[g.chunks.find(junk)]
    rep = leaks(g)
    assert _cats(rep) == {big: "possibly"}
    assert why(g, other)["chains"][0]["how"] == "conservative"
    w = why(g, freed)
    assert w["chunk"]["state"] == "cached" and w["chains"][0]["steps"] == ["global g_h", "->next"]
    from common.trace import stale_findings
    st = stale_findings(g)
    assert len(st) == 1 and st[0].variable["name"] == "g_h->next"
    js = to_json(g, around=holder, depth=1)
    assert {n.get("address") for n in js["nodes"]} >= {holder, freed}
    assert "->next" in to_dot(g)


def test_bad_input_never_raises():
    """A resolver that raises, garbage layouts and an unreadable root: notes, no traceback."""
    h = FakeHeap()
    a = h.malloc(32)
    h.put(a, 0xdeadbeef, a + 8)

    def resolve(name):
        raise RuntimeError("DWARF that cannot be read")
    roots = [gvar(h, "g_a", TypeLayout("struct x *", 8, (ptr("", 0, "struct x", 32),)), a),
             Variable("g_far", "global", TypeLayout("struct x *", 8, (ptr("", 0, "struct x", 32),)),
                      address=0x10),
             Variable("g_gone", "local", NODE, optimized_out=True)]
    # a variable whose layout the debugger cut short (4096 slots): the rest is scanned
    far = h.malloc(24)
    big = h.glob(8 * 5000)
    h.put(big + 8 * 4500, far)
    cut = TypeLayout("void *[5000]", 8 * 5000, tuple(PtrSlot(f"[{i}]", 8 * i, "void *", None, None)
                                                      for i in range(4096)))
    roots.append(Variable("g_big", "global", cut, address=big))
    g = build_graph([h.snapshot()], roots, resolve, CachedReader(h))
    assert any("DWARF that cannot be read" in n for n in g.notes)
    rep = leaks(g)
    assert rep["summary"]["reachable"]["count"] == 2
    assert "conservative" in why(g, far)["chains"][0]["steps"][0]
    assert rep["roots"]["variables_optimized_out"] == 1
    assert why(g, 0x1234)["chains"] == [] and "error" in why(g, 0x1234)
    empty = build_graph([], [], None, CachedReader(h))
    assert leaks(empty)["summary"]["definitely"]["count"] == 0 and to_json(empty)["nodes"] == []


def test_wide_and_narrow_reach_agree():
    """The hybrid traversal gives the same answer as a plain BFS on a random graph."""
    from collections import deque
    from common.trace.reach import CSR, reach
    rng = np.random.default_rng(1)
    n = 5000
    src = rng.integers(0, n, 12000)
    dst = rng.integers(0, n, 12000)
    chain = np.arange(n - 1)                   # plus a long chain through everything
    src, dst = np.concatenate([src, chain]), np.concatenate([dst, chain + 1])
    keep = rng.random(src.size) < 0.5
    g = CSR(n, src[keep], dst[keep])
    seen, _ = reach(g, np.array([0, 17]))
    adj = [[] for _ in range(n)]
    for a, b in zip(src[keep].tolist(), dst[keep].tolist()):
        adj[a].append(b)
    ref = np.zeros(n, dtype=bool)
    q = deque([0, 17])
    ref[[0, 17]] = True
    while q:
        u = q.popleft()
        for v in adj[u]:
            if not ref[v]:
                ref[v] = True
                q.append(v)
    assert np.array_equal(seen, ref)


# --- the user commands (heap-leaks, heap-why, heap-trace) ---------------------------------------
@pytest.mark.gdb
@pytest.mark.parametrize("where", ["live", "core"])
def test_commands_heap_leaks_why_trace(tmp_path, where):
    import json as _json
    from harness import run_core, run_live
    exe = build("trace_leaks")
    j = lambda n: str(tmp_path / n)
    cmds = [f"heap-leaks --conservative --json {j('leaks.json')}", f"heap-why g_cache.entries[3]->next->value "
            f"--json {j('why.json')}", f"heap-trace --json {j('trace.json')} --dot {j('g.dot')} --around g_cache "
            f"--depth 2", "heap-leaks --bogus"]
    live = run_live(exe, extra=cmds)
    run = live if where == "live" else run_core(exe, live.core, os.path.dirname(live.core), extra=cmds)
    rep = _json.load(open(j("leaks.json")))
    assert rep["schema"] == "heaplens/1" and rep["command"] == "heap-leaks" and rep["mode"] == "precise"
    sm = rep["summary"]
    assert (sm["definitely"]["count"], sm["indirectly"]["count"], sm["possibly"]["count"]) == (4, 11, 1)
    cons = rep["conservative_report"]["summary"]
    assert cons["definitely"]["count"] < sm["definitely"]["count"]      # the integer-held chunk "reachable"
    assert any(f["kind"] == "leak" for f in rep["findings"]) and any(f["kind"] == "use-after-free"
                                                                     for f in rep["findings"])
    w = _json.load(open(j("why.json")))
    assert w["chains"] and w["chains"][0]["steps"][0] == "global g_cache"
    assert "entries[3]" in w["chains"][0]["text"] and "value" in w["chains"][0]["text"]
    t = _json.load(open(j("trace.json")))
    assert t["graph"]["nodes"] and t["graph"]["edges"]
    assert open(j("g.dot")).read().startswith("digraph")
    assert "unknown option --bogus" in run.texts["heap-leaks --bogus"]


ALLOCATOR_LIBS = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}


@pytest.mark.gdb
@pytest.mark.parametrize("alloc", sorted(ALLOCATOR_LIBS))
def test_leaks_under_jemalloc_and_tcmalloc(tmp_path, alloc):
    """The tracer's allocated set comes from whichever walker ran: the same program's leaks are
    found exactly under jemalloc and tcmalloc, live and on the core. The allocators' own chunks
    (jemalloc's tcache stacks, whose stale slots still hold handed-out addresses) and metadata
    (extent records pointing at slabs) must not make lost chunks look reachable."""
    import json as _json
    from harness import run_core, run_live
    lib = ALLOCATOR_LIBS[alloc]
    if not os.path.exists(lib):
        pytest.skip(f"{lib} is not installed")
    exe = build("trace_leaks", extra=("-DTRUTH_ANY_ALLOCATOR",))       # no glibc chunk headers
    live = run_live(exe, preload=lib, extra=[f"heap-leaks --json {tmp_path}/live.json"])
    assert live.core, live.stdout[-2000:]
    run_core(exe, live.core, os.path.dirname(live.core), extra=[f"heap-leaks --json {tmp_path}/core.json"])
    os.unlink(live.core)
    exp = _expect(live)
    expected = set().union(*exp.values())
    mine = set(live.truth.live) | expected      # every allocation the program made and did not free
    for where in ("live", "core"):
        rep = _json.load(open(tmp_path / f"{where}.json"))
        assert rep["allocator"] == alloc
        cats = _cats(rep)
        for kind, want in (("definitely-lost", "definitely"), ("indirectly-lost", "indirectly"),
                           ("possibly-lost", "possibly")):
            assert all(cats.get(a) == want for a in exp[kind]), (where, kind, [(hex(a), cats.get(a)) for a in exp[kind]])
        assert sorted(cats.get(a) for a in exp["cycle-lost"]) == ["definitely", "indirectly", "indirectly"]
        assert not [a for a in exp["reachable"] if a in cats], where
        sm = rep["summary"]
        assert (sm["indirectly"]["count"], sm["possibly"]["count"]) == (11, 1), (where, sm)
        # nothing the program still holds is called lost; a library's own lost object may be
        # (tcmalloc's 8-byte one: no word anywhere in the process points at it)
        assert not [a for a in cats if a in mine and a not in expected], where
        extra = [e for e in rep["definitely_lost"] if e["address"] not in mine]
        assert sm["definitely"]["count"] == 4 + len(extra) and len(extra) <= 1, (where, extra)
        if alloc == "jemalloc":
            assert not extra


def _rustc():
    import shutil
    return shutil.which("rustc") or (os.path.exists("/root/.cargo/bin/rustc") and "/root/.cargo/bin/rustc")


@pytest.mark.gdb
@pytest.mark.skipif(not _rustc(), reason="no rustc (scripts/setup.sh installs Debian's rustc)")
@pytest.mark.parametrize("where", ["live", "core"])
def test_rust_rc_cycle_and_box_leak(tmp_path, where):
    import json as _json
    import subprocess
    from harness import BUILD, ROOT, run_core, run_live
    src = os.path.join(ROOT, "tests", "programs", "rust_leaks.rs")
    exe = os.path.join(BUILD, "rust_leaks")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(BUILD, exist_ok=True)
        tmp = f"{exe}.{os.getpid()}.tmp"
        subprocess.run([_rustc(), "-g", "-C", "opt-level=0", "-o", tmp, src], check=True, capture_output=True)
        os.replace(tmp, exe)
    out = str(tmp_path / "leaks.json")
    live = run_live(exe, extra=[f"heap-leaks --json {out}"])
    run = live if where == "live" else run_core(exe, live.core, os.path.dirname(live.core),
                                                extra=[f"heap-leaks --json {out}"])
    rep = _json.load(open(out))
    want = dict(run.truth.expect)
    lost = {e["address"]: e for e in rep["definitely_lost"]}
    ind = {e["address"] for e in rep["indirectly_lost"]}
    assert rep["summary"]["definitely"]["count"] == 2, rep["summary"]
    assert rep["summary"]["indirectly"]["count"] == 3 and rep["summary"]["possibly"]["count"] == 0
    # Rc::as_ptr points at the value inside the RcBox (after the two counts)
    rc = want["rc-cycle"] - 16
    assert rc in lost or rc in ind, (hex(rc), list(map(hex, lost)), list(map(hex, ind)))
    assert want["box-leak"] in lost and lost[want["box-leak"]]["size"] >= 100
    assert any(n.startswith("roots placed by the DWARF maps") for n in rep["notes"])


@pytest.mark.gdb
def test_heap_leaks_without_debug_info_and_at_O2(tmp_path):
    """No -g: one sentence naming what is missing, a labelled conservative trace, no traceback.
    -O2: the roots the maps could not place are counted and covered by the fallback: no false leak."""
    import subprocess
    from harness import BUILD, run_live
    src = os.path.join(os.path.dirname(__file__), "programs", "trace_leaks.c")
    exe = os.path.join(BUILD, "trace_leaks-nodebug")
    subprocess.run(["gcc", "-O0", "-pthread", "-o", exe, src], check=True, capture_output=True)
    run = run_live(exe, extra=["heap-leaks"], gcore=False)
    text = run.texts["heap-leaks"]
    assert "has no DWARF debug info: build with -g" in text
    assert "(no debug info for any variable: conservative trace)" in text
    busy = run_live(build("trace_busy", "-O2"), extra=[f"heap-leaks --json {tmp_path}/b.json"], gcore=False)
    import json as _json
    rep = _json.load(open(f"{tmp_path}/b.json"))
    assert rep["summary"]["definitely"]["count"] == 0 and rep["summary"]["indirectly"]["count"] == 0
    assert rep["roots"]["variables_optimized_out"] >= 1
    assert any("optimized out" in n for n in rep["notes"])
