"""Fuzzing the glibc walker on corrupted heap images: it never raises, never hangs, always
returns a report (CONTRACT.md, "Behaviour under bad input").

Real gcore cores of tests/programs/known_heap.c and busy_heap.c are made once per module; each
iteration walks one of them through a Target that overlays seeded random mutations on the
core's bytes (chunk headers, freelist links, arenas, tcache_perthread_structs, heap_info
headers, mp_, TLS slots, random heap bytes). No gdb is involved in the walks themselves.
A failure prints the seed; `FUZZ_SEED=<seed> pytest tests/test_fuzz.py -k survives` walks exactly
that image again (FUZZ_ITERATIONS and FUZZ_BASE_SEED change the run's size and seeds).
"""
from __future__ import annotations

import bisect
import json
import os
import random
import shutil
import signal
import struct
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import pytest

from harness import build, run_live

from common import commands as C
from common.allocators import glibc
from common.allocators import glibc_layout as L
from common.allocators.glibc_locate import NotGlibc
from common.coretarget import CoreTarget
from common.elfcore import CoreFile
from common.heapindex import CACHED, FREE
from common.report import SEVERITIES, Finding, dumps, make_report, sort_findings
from common.snapshot import HeapSnapshot
from common.target import ReadError, Target, TargetError

pytestmark = pytest.mark.gdb          # gdb makes the cores (the walks themselves need none)

M64 = (1 << 64) - 1
ITER_LIMIT_S = 5.0                    # asserted wall time of one walk + all rendering
ALARM_S = 30                          # hard guard against a hang (SIGALRM)
MAX_READ = 16 << 20                   # no single read may be larger (bulk windows are 8 MiB + 64)
MAX_TOTAL_READ = 512 << 20            # nor may one walk read more than this in all
KINDS = {"double-free", "invalid-free", "use-after-free", "size-mismatch", "metadata-corruption", "leak"}
BINNED = ("unsorted", "smallbin", "largebin")


# --- the mutating target ---------------------------------------------------------------------------
class MutatedTarget(Target):
    """A core file seen through an overlay of mutations: read() returns the core's bytes with
    every overlapping mutation applied, also for reads that cover only part of a mutated word."""

    kind = "core"

    def __init__(self, base: CoreTarget, overlay: List[Tuple[int, bytes]], symbols: Dict):
        self.base = base
        self.symbols = symbols                  # memo shared across iterations (symbols are on disk)
        # a negative "address" -1-k replaces thread k's fs_base (the thread pointer) instead
        self.fs = {-1 - a: struct.unpack("<Q", b)[0] for a, b in overlay if a < 0}
        overlay = [(a, b) for a, b in overlay if a >= 0]
        # later mutations win where they overlap earlier ones: apply in order
        self.overlay = sorted(((a, b, k) for k, (a, b) in enumerate(overlay)), key=lambda m: m[0])
        self.starts = [m[0] for m in self.overlay]
        self.maxlen = max((len(b) for _, b, _ in self.overlay), default=0)
        self.bytes_read = 0
        self.max_read = 0

    def read(self, addr: int, size: int) -> bytes:
        self.bytes_read += size
        self.max_read = max(self.max_read, size)
        data = self.base.read(addr, size)
        if not self.overlay:
            return data
        end = addr + size
        lo = bisect.bisect_left(self.starts, addr - self.maxlen)
        hi = bisect.bisect_left(self.starts, end)
        hits = [m for m in self.overlay[lo:hi] if m[0] + len(m[1]) > addr]
        if not hits:
            return data
        buf = bytearray(data)
        for a, b, _ in sorted(hits, key=lambda m: m[2]):
            s, e = max(a, addr), min(a + len(b), end)
            buf[s - addr:e - addr] = b[s - a:e - a]
        return bytes(buf)

    def threadsafe_reader(self):
        return self.read                        # pure: safe on the prefetch thread

    def regions(self):
        return self.base.regions()

    def threads(self):
        ts = self.base.threads()
        if self.fs:
            ts = [replace(t, fs_base=self.fs.get(k, t.fs_base)) for k, t in enumerate(ts)]
        return ts

    def objfiles(self):
        return self.base.objfiles()

    def symbol(self, name: str, objfile_hint: str = ""):
        key = (name, objfile_hint)
        if key not in self.symbols:
            self.symbols[key] = self.base.symbol(name, objfile_hint)
        return self.symbols[key]

    def struct_layout(self, name):
        return self.base.struct_layout(name)

    def describe(self) -> str:
        return "mutated " + self.base.describe()


def test_mutated_target_overlay_semantics(tmp_path):
    """The overlay itself: partial overlaps, later-wins, reads spanning several mutations."""
    class Flat(CoreTarget):
        def __init__(self):
            pass

        def read(self, addr, size):
            if addr < 0x1000 or addr + size > 0x2000:
                raise ReadError(addr, size)
            return bytes((a & 0xFF) for a in range(addr, addr + size))

    base = Flat()
    t = MutatedTarget(base, [(0x1010, b"\xAA" * 8), (0x1014, b"\xBB" * 8), (0x1100, b"\xCC")], {})
    assert t.read(0x1000, 16) == base.read(0x1000, 16)
    assert t.read(0x100c, 8) == base.read(0x100c, 4) + b"\xAA" * 4
    assert t.read(0x1012, 2) == b"\xAA\xAA"
    assert t.read(0x1010, 12) == b"\xAA" * 4 + b"\xBB" * 8      # the later mutation wins
    assert t.read(0x101a, 4) == b"\xBB\xBB" + base.read(0x101c, 2)
    whole = t.read(0x1000, 0x200)
    assert whole[0x100] == 0xCC and whole[0x101] == 0x01 and whole[0x10:0x14] == b"\xAA" * 4
    with pytest.raises(ReadError):
        t.read(0x1ff0, 0x20)


# --- cores and what a clean walk says about them ----------------------------------------------------
@dataclass
class Image:
    """One core and the facts a clean walk gives about it: the mutation targets."""
    name: str
    core: str
    bases: Dict[bool, CoreTarget]
    symbols: Dict[bool, Dict]
    clean: HeapSnapshot
    lay: L.GlibcLayout
    chunks: List[Tuple[int, int, int]] = field(default_factory=list)     # (start, size, state)
    members: List[Tuple[int, int, str]] = field(default_factory=list)    # (start, size, list kind)
    bin_heads: List[int] = field(default_factory=list)
    stack: List[int] = field(default_factory=list)
    tls: List[int] = field(default_factory=list)
    unmapped: List[int] = field(default_factory=list)
    segments: List[Tuple[int, int]] = field(default_factory=list)

    def target(self, overlay, debug=False) -> MutatedTarget:
        return MutatedTarget(self.bases[debug], overlay, self.symbols[debug])

    @property
    def main_arena(self) -> int:
        return self.clean.meta["main_arena"]

    @property
    def mp(self) -> Optional[int]:
        return self.clean.meta["mp_"]


def _image(name: str, core: str) -> Image:
    bases = {False: CoreTarget(core, use_debug_files=False), True: CoreTarget(core, use_debug_files=True)}
    clean = glibc.walk(bases[False])
    errors = [f for f in clean.findings if f.severity in ("critical", "warning")]
    assert not errors, f"the clean {name} core already has findings: {errors[:3]}"
    lay = L.table_layout(tuple(int(x) for x in clean.meta["glibc_version"].split(".")))
    img = Image(name, core, bases, {False: {}, True: {}}, clean, lay)
    idx = clean.index
    for i in range(len(idx)):
        st = int(idx.state[i])
        c, s = int(idx.start[i]), int(idx.size[i])
        img.chunks.append((c, s, st))
        w = int(idx.where[i])
        if st in (FREE, CACHED) and w >= 0:
            img.members.append((c, s, clean.lists[w].kind))
    for a in clean.arenas:
        img.bin_heads += [a.address + lay.ms_bins - 16 + 16 * k for k in (0, 1, 5, 40, 70)]
        img.segments += list(a.segments)
    for th in bases[False].core.threads:
        img.stack.append(th.regs["rsp"] & ~15)
        if th.fs_base:
            img.tls += [th.fs_base - 0x48, th.fs_base - 0x38]
    regions = bases[False].regions()
    for cand in (0x10000, 0x4141414141414140, 0xdead0000, regions[-1].end + (1 << 30), 1 << 47):
        if not any(r.contains(cand) for r in regions):
            img.unmapped.append(cand)
    assert img.members and len(clean.arenas) >= 4 and clean.thread_cache
    return img


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-cores")
    out = []
    for name in ("known_heap", "busy_heap"):
        run = run_live(build(name), workdir=str(work))
        assert run.core, f"gcore failed for {name}:\n{run.stdout[-2000:]}"
        out.append(_image(name, run.core))
    yield out
    for img in out:
        for t in img.bases.values():
            t.core.close()
    shutil.rmtree(work, ignore_errors=True)           # two cores are ~0.5 GB


# --- mutations ----------------------------------------------------------------------------------
@dataclass
class Mutation:
    addr: int
    data: bytes
    what: str                     # category:detail, for the failure message and the statistics


def _q(v: int) -> bytes:
    return struct.pack("<Q", v & M64)


def _rand_word(rng: random.Random) -> int:
    return rng.choice([rng.getrandbits(64), rng.getrandbits(48), rng.getrandbits(32), rng.getrandbits(16),
                       rng.getrandbits(64) & ~15, rng.getrandbits(47) & ~15])


def _word_or_byte(rng: random.Random, addr: int, what: str) -> Mutation:
    if rng.random() < 0.5:
        return Mutation(addr, _q(_rand_word(rng)), what + ":word")
    k = rng.randrange(8)
    return Mutation(addr + k, bytes([rng.randrange(256)]), what + f":byte{k}")


def _encode(kind: str, field_addr: int, target_chunk: int) -> int:
    """What a list kind stores in a chunk's first link word to point at target_chunk."""
    if kind == "tcache":
        return (field_addr >> 12) ^ (target_chunk + 16)
    if kind == "fastbin":
        return (field_addr >> 12) ^ target_chunk
    return target_chunk


def size_mutation(img: Image, rng: random.Random, c: int, s: int) -> Mutation:
    a = c + 8
    old = s | L.PREV_INUSE
    r = rng.random()
    if r < 0.35:
        return _word_or_byte(rng, a, "size")
    choice = rng.choice(["zero", "huge", "mmapped", "tiny", "unaligned", "grow", "shrink", "arena-bit"])
    v = {"zero": 0, "huge": rng.choice([1 << 40, 0x7FFFFFFFFFFFFFF0, M64 & ~7, s << 20]),
         "mmapped": old | L.IS_MMAPPED, "tiny": 0x11, "unaligned": old + 8, "grow": old + 16 * rng.randint(1, 64),
         "shrink": max(0x21, old - 16 * rng.randint(1, 8)), "arena-bit": old ^ L.NON_MAIN_ARENA}[choice]
    return Mutation(a, _q(v), "size:" + choice)


def link_mutation(img: Image, rng: random.Random, c: int, kind: str) -> Mutation:
    off = 16 if kind in ("tcache", "fastbin") or rng.random() < 0.6 else 24
    if kind == "largebin" and rng.random() < 0.2:
        off = rng.choice([32, 40])
    a = c + off
    if rng.random() < 0.3:
        return _word_or_byte(rng, a, f"link{off}")
    choice = rng.choice(["self", "stack", "unmapped", "bin-head", "other-chunk", "null", "misaligned"])
    tgt = {"self": c, "stack": rng.choice(img.stack), "unmapped": rng.choice(img.unmapped),
           "bin-head": rng.choice(img.bin_heads), "other-chunk": rng.choice(img.chunks)[0],
           "null": 0, "misaligned": c + 8}[choice]
    v = _encode(kind if off == 16 else "bin", a, tgt) if choice != "null" else 0
    return Mutation(a, _q(v), f"link{off}:{choice}")


CATEGORIES = {"size": 20, "prev_size": 6, "link": 18, "dup_link": 5, "arena": 8, "main_arena": 4, "mp": 3,
              "tcache_struct": 10, "heap_info": 6, "heap_bytes": 14, "tls": 3, "fs_base": 2}


def random_mutation(img: Image, rng: random.Random) -> Mutation:
    cat = rng.choices(list(CATEGORIES), weights=list(CATEGORIES.values()))[0]
    lay = img.lay
    if cat == "size":
        c, s, _ = rng.choice(img.chunks)
        return size_mutation(img, rng, c, s)
    if cat == "prev_size":
        c, s, _ = rng.choice(img.chunks)
        if rng.random() < 0.5:
            return _word_or_byte(rng, c, "prev_size")
        v = rng.choice([0, 16, s, s + 16, rng.choice(img.chunks)[1], 1 << 40])
        return Mutation(c, _q(v), "prev_size:value")
    if cat == "link":
        c, _, kind = rng.choice(img.members)
        return link_mutation(img, rng, c, kind)
    if cat == "dup_link":                 # a link to another member of a list of the same kind
        c, _, kind = rng.choice(img.members)
        same = [m for m in img.members if m[2] == kind]
        d = rng.choice(same)[0]
        return Mutation(c + 16, _q(_encode(kind, c + 16, d)), f"dup_link:{kind}")
    if cat in ("arena", "main_arena"):
        a = img.main_arena if cat == "main_arena" else rng.choice(img.clean.arenas).address
        if rng.random() < 0.6:
            fld = rng.choice(["top", "next", "fastbin", "bin", "system_mem", "last_remainder"])
            off = {"top": lay.ms_top, "next": lay.ms_next, "fastbin": lay.ms_fastbins + 8 * rng.randrange(10),
                   "bin": lay.ms_bins + 8 * rng.randrange(254), "system_mem": lay.ms_system_mem,
                   "last_remainder": lay.ms_last_remainder}[fld]
            c = rng.choice(img.chunks)[0]
            v = rng.choice([0, _rand_word(rng), a, c, c + 8, c + 16, rng.choice(img.stack),
                            rng.choice(img.unmapped), rng.choice(img.clean.arenas).address, a + off - 16,
                            rng.choice(img.clean.arenas).top, (rng.choice(img.segments)[1] - 32),
                            1 << 40, M64])
            return Mutation(a + off, _q(v), f"{cat}:{fld}")
        return _word_or_byte(rng, a + 8 * rng.randrange(lay.ms_size // 8), cat)
    if cat == "mp":
        if img.mp is None:
            return random_mutation(img, rng)
        if rng.random() < 0.5:
            fld = rng.choice(["sbrk_base", "n_mmaps", "tcache_bins", "tcache_count", "mmapped_mem"])
            off = getattr(lay, "mp_" + fld)
            v = rng.choice([0, _rand_word(rng), M64, 1 << 31, rng.choice(img.chunks)[0], 0xFFFFFFFF])
            return Mutation(img.mp + off, _q(v), f"mp:{fld}")
        return _word_or_byte(rng, img.mp + 8 * rng.randrange(lay.mp_size // 8), "mp")
    if cat == "tcache_struct":
        tc = rng.choice(list(img.clean.thread_cache.values()))
        b = rng.randrange(L.TCACHE_MAX_BINS)
        r = rng.random()
        if r < 0.35:
            return Mutation(tc + 2 * b, struct.pack("<H", rng.choice([0xFFFF, 0, 1, 7, rng.randrange(1 << 16)])),
                            "tcache_struct:count")
        ent = tc + L.TCACHE_MAX_BINS * lay.tcache_count_size + 8 * b
        if r < 0.8:
            c = rng.choice(img.chunks)[0]
            v = rng.choice([0, _rand_word(rng), tc, rng.choice(img.stack), rng.choice(img.unmapped),
                            c + 16, c + 24, c, rng.choice(img.clean.arenas).top + 16])
            return Mutation(ent, _q(v), "tcache_struct:entry")
        return _word_or_byte(rng, tc + 8 * rng.randrange(lay.tcache_struct_size // 8), "tcache_struct")
    if cat == "heap_info":
        a = rng.choice(img.clean.arenas[1:]).address
        h = a & ~(lay.heap_max_size - 1)
        fld = rng.choice(["ar_ptr", "prev", "size", "mprotect_size"])
        off = {"ar_ptr": lay.hi_ar_ptr, "prev": lay.hi_prev, "size": lay.hi_size, "mprotect_size": 24}[fld]
        other = rng.choice(img.clean.arenas[1:]).address & ~(lay.heap_max_size - 1)
        inside = [c - h for c, _, _ in img.chunks if h + 4096 < c < h + lay.heap_max_size] or [4096]
        v = rng.choice([0, _rand_word(rng), h, other, a, img.main_arena, 1 << 30, 4095, 4096,
                        rng.choice(inside), rng.choice(inside) + 8, rng.choice(inside) + 16,
                        rng.randrange(4096, lay.heap_max_size), rng.randrange(1, lay.heap_max_size >> 12) << 12,
                        lay.heap_max_size, h + 16, img.stack[0]])
        return Mutation(h + off, _q(v), f"heap_info:{fld}")
    if cat == "heap_bytes":
        lo, hi = rng.choice(img.segments)
        return _word_or_byte(rng, lo + rng.randrange(max(1, (hi - lo) // 8)) * 8, "heap_bytes")
    if cat == "fs_base":
        k = rng.randrange(len(img.stack))
        v = rng.choice([0, _rand_word(rng), img.stack[k], rng.choice(img.unmapped), img.main_arena,
                        rng.choice(img.chunks)[0], rng.choice(img.tls) + 0x48 + 8])
        return Mutation(-1 - k, _q(v), "fs_base")
    return _word_or_byte(rng, rng.choice(img.tls), "tls")       # the TLS tcache/thread_arena slots


def n_mutations(rng: random.Random) -> int:
    return rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50])


# --- running and checking one image -------------------------------------------------------------------
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"walk still running after {ALARM_S} s")


def check_snapshot(snap: HeapSnapshot, img: Image, rng: random.Random) -> None:
    """Everything a user command does with a snapshot must work on a corrupted one."""
    assert isinstance(snap, HeapSnapshot)
    assert isinstance(snap.findings, list) and isinstance(snap.notes, list)
    for f in snap.findings:
        assert isinstance(f, Finding)
        assert f.kind in KINDS and f.severity in SEVERITIES, f
        assert isinstance(f.message, str) and f.message and "\n" not in f.message, f
        assert all(isinstance(e, str) for e in f.evidence), f
        f.to_json()
    idx = snap.index
    n = len(idx)
    assert sum(idx.counts().values()) == n
    starts = idx.start
    assert n < 2 or bool((starts[1:] >= starts[:-1]).all()), "index is not sorted"
    probes = [c for c, _, _ in rng.sample(img.chunks, min(20, len(img.chunks)))]
    probes += [p + 16 for p in probes[:5]] + [p - 1 for p in probes[:3]]
    probes += [0, 1, img.main_arena, img.stack[0], img.unmapped[0], M64 & ~15, rng.getrandbits(47)]
    for a in probes:
        i = idx.find(a)
        assert -1 <= i < n
        if i >= 0:
            assert int(idx.start[i]) <= a < int(idx.start[i]) + int(idx.size[i])
    stats = C.heap_stats(snap)
    assert stats["totals"]["chunks"] == n
    text = C._render_stats(stats)
    findings = sort_findings(list(snap.findings))
    summary = [C._summary(snap)]
    text += C._render_check([snap], findings, summary, 0.0)
    for a in probes[:10]:
        info = C.alloc_info([snap], C.Pointer(a, f"{a:#x}", "struct x *", rng.choice([None, 8, 4096])))
        text += C._render_info(info)
    payload = {"summary": summary, "findings": [f.to_json() for f in findings], "notes": snap.notes,
               "stats": stats}
    json.loads(dumps(make_report("heap-check", "glibc", payload)))
    assert isinstance(text, str) and text


@dataclass
class Outcome:
    seed: int
    muts: List[Mutation]
    snap: Optional[HeapSnapshot]
    error: Optional[str]            # "NotGlibc: ..." or None
    seconds: float
    bytes_read: int
    max_read: int
    crash: Optional["Crash"] = None


def run_one(img: Image, muts: List[Mutation], seed: int, debug: bool, rng: random.Random) -> Outcome:
    """Walk one mutated image and exercise the snapshot. Any exception other than NotGlibc is
    returned in Outcome.crash (with its traceback) for the caller to judge."""
    t = img.target([(m.addr, m.data) for m in muts], debug)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    t0 = time.perf_counter()
    snap, err, crash = None, None, None
    try:
        try:
            snap = glibc.walk(t)
        except NotGlibc as e:
            err = f"NotGlibc: {e}"
        if snap is not None:
            check_snapshot(snap, img, rng)
    except BaseException as e:            # noqa: B902 - Hang and assertion errors included
        signal.alarm(0)
        crash = Crash(type(e).__name__, str(e), traceback.format_exc(), _frame(e))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return Outcome(seed, muts, snap, err, time.perf_counter() - t0, t.bytes_read, t.max_read, crash)


@dataclass
class Crash:
    type: str
    message: str
    traceback: str
    where: str                      # file:function of the innermost frame in common/

    @property
    def signature(self) -> str:
        return f"{self.type} in {self.where}"


def _frame(e: BaseException) -> str:
    where = "?"
    for fs in traceback.extract_tb(e.__traceback__):
        if "/common/" in fs.filename or "test_fuzz" in fs.filename:
            where = f"{os.path.relpath(fs.filename, os.path.dirname(os.path.dirname(__file__)))}:{fs.lineno} {fs.name}"
    return where


def _describe(muts: List[Mutation]) -> str:
    return "; ".join(f"{m.what}@{m.addr:#x}={m.data.hex()}" for m in muts[:12]) + \
        (f" ... ({len(muts)} in all)" if len(muts) > 12 else "")


def _hits_roots(img: Image, muts: List[Mutation]) -> bool:
    spans = [(img.main_arena, img.main_arena + img.lay.ms_size)]
    if img.mp is not None:
        spans.append((img.mp, img.mp + img.lay.mp_size))
    return any(lo < m.addr + len(m.data) and m.addr < hi for m in muts for lo, hi in spans)


def _changed(img: Image, m: Mutation) -> bool:
    try:
        return img.bases[False].read(m.addr, len(m.data)) != m.data
    except ReadError:
        return True


def _is_detected(snap: Optional[HeapSnapshot]) -> bool:
    return snap is None or any(f.kind in ("metadata-corruption", "double-free")
                               and f.severity in ("critical", "warning") for f in snap.findings)


def _check_outcome(img: Image, o: Outcome, debug: bool) -> None:
    where = f"{img.name} seed {o.seed} (debug files: {debug}); mutations: {_describe(o.muts)}"
    assert o.crash is None, f"{o.crash.signature}: {o.crash.message}: {where}\n{o.crash.traceback}"
    assert o.seconds < ITER_LIMIT_S, f"took {o.seconds:.2f} s: {where}"
    assert o.max_read <= MAX_READ, f"one read of {o.max_read} bytes: {where}"
    assert o.bytes_read <= MAX_TOTAL_READ, f"read {o.bytes_read} bytes in all: {where}"
    if o.error is not None:
        assert _hits_roots(img, o.muts), f"{o.error} although main_arena and mp_ are intact: {where}"
        assert len(o.error) > 30 and "\n" not in o.error.strip(), f"not one clear sentence: {o.error!r}"


# --- the tests ------------------------------------------------------------------------------------
BASE_SEED = int(os.environ.get("FUZZ_BASE_SEED", "20240601"))
N_RANDOM = int(os.environ.get("FUZZ_ITERATIONS", "360"))


def _replay_seed() -> Optional[int]:
    s = os.environ.get("FUZZ_SEED")
    return int(s, 0) if s else None


# Crashes of common/ already reported to the lead, as (exception type, function in common/, why).
# While one of these still happens the fuzz test is an expected failure naming it (and the
# deterministic reproductions below fail strictly); any other crash fails the test outright.
# Delete an entry once the bug is fixed.
KNOWN_BUGS = []     # (exception type, function, why): crashes still expected; none now


def _known(crash: "Crash") -> Optional[str]:
    for typ, func, why in KNOWN_BUGS:
        if crash.type == typ and crash.where.endswith(" " + func):
            return f"{typ} in {func}: {why}"
    return None


def test_fuzz_walker_survives_random_corruption(images):
    """>= 300 randomly corrupted images (1..50 mutations each): a report or a clean NotGlibc."""
    start = time.perf_counter()
    seeds = [_replay_seed()] if _replay_seed() is not None else [BASE_SEED + k for k in range(N_RANDOM)]
    stats = {"walked": 0, "notglibc": 0, "reported": 0, "slowest": 0.0, "max_read": 0}
    crashes: Dict[str, List[Outcome]] = {}
    for seed in seeds:
        rng = random.Random(seed)
        img = images[seed % len(images)]
        debug = seed % 5 == 0                 # every fifth walk resolves roots from debug files
        muts = [random_mutation(img, rng) for _ in range(n_mutations(rng))]
        o = run_one(img, muts, seed, debug, rng)
        stats["walked"] += 1
        if o.crash is not None:
            crashes.setdefault(o.crash.signature, []).append(o)
            continue
        _check_outcome(img, o, debug)
        stats["notglibc"] += o.error is not None
        stats["reported"] += o.snap is not None and bool(o.snap.findings)
        stats["slowest"] = max(stats["slowest"], o.seconds)
        stats["max_read"] = max(stats["max_read"], o.max_read)
    elapsed = time.perf_counter() - start
    print(f"fuzz: {stats}, crashes {[(k, len(v)) for k, v in crashes.items()]} in {elapsed:.1f} s")
    unknown = {k: v for k, v in crashes.items() if _known(v[0].crash) is None}
    assert not unknown, "\n\n".join(
        f"{len(v)} walk(s) crashed with {k} (seeds {[o.seed for o in v[:10]]}; rerun one with "
        f"FUZZ_SEED=<seed>):\n{v[0].crash.message}\nmutations: {_describe(v[0].muts)}\n{v[0].crash.traceback}"
        for k, v in unknown.items())
    if _replay_seed() is None:
        assert stats["walked"] >= 300
        assert elapsed < 60, f"{stats['walked']} iterations took {elapsed:.1f} s"
        # most corrupted images are reported as such (not silently 'clean')
        ok = stats["walked"] - sum(len(v) for v in crashes.values()) - stats["notglibc"]
        assert stats["reported"] >= 0.6 * ok, stats
    if crashes:
        pytest.xfail("known bugs in common/ still crash the walker: " + "; ".join(
            f"{_known(v[0].crash)} (seeds {[o.seed for o in v[:5]]})" for v in crashes.values()))


def _single_smash(img: Image, rng: random.Random) -> Mutation:
    """One mutation of a size field or a link of a chunk that is in a freelist."""
    kinds = sorted({k for _, _, k in img.members})
    while True:
        kind = rng.choice(kinds)             # every list kind equally, not 2/3 tcache
        c, s, _ = rng.choice([m for m in img.members if m[2] == kind])
        m = size_mutation(img, rng, c, s) if rng.random() < 0.5 else link_mutation(img, rng, c, kind)
        m.what = f"{kind}/{m.what}"
        if _changed(img, m):
            return m


def test_freelist_smashes_are_reported(images):
    """A single smashed size or link of a free/cached chunk is reported (metadata-corruption or
    double-free) in at least 80% of cases; the test fails if the checks stop firing."""
    per_kind: Dict[str, List[int]] = {}
    missed: List[str] = []
    n = 0
    for k in range(240):
        seed = BASE_SEED * 7 + k
        rng = random.Random(seed)
        img = images[k % len(images)]
        m = _single_smash(img, rng)
        o = run_one(img, [m], seed, False, rng)
        assert o.crash is None or _known(o.crash), f"{img.name} seed {seed}: {o.crash.traceback}"
        if o.crash:
            continue
        _check_outcome(img, o, False)
        hit = _is_detected(o.snap)
        n += 1
        key = ":".join(m.what.split(":")[:2])          # e.g. "smallbin/link24:self"
        per_kind.setdefault(key, [0, 0])
        per_kind[key][0] += hit
        per_kind[key][1] += 1
        if not hit:
            missed.append(f"{img.name} seed {seed}: {_describe([m])}")
    detected = sum(v[0] for v in per_kind.values())
    rate = detected / n
    table = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(per_kind.items()))
    print(f"freelist smashes detected: {detected}/{n} ({rate:.0%}); {table}")
    assert rate >= 0.8, f"only {detected}/{n} reported; per kind: {table}; missed e.g.: {missed[:10]}"


@pytest.mark.parametrize("what", ["tcache", "fastbin", "smallbin", "largebin", "unsorted"])
def test_structured_link_smashes_always_reported(images, what):
    """Deterministic worst cases on every list kind: a link to itself, into the stack, to unmapped
    memory, to the bin head; counts[] = 0xffff. Each must be reported, never raise."""
    rng = random.Random(what)
    for img in images:
        members = [(c, s, k) for c, s, k in img.members if k == what]
        if not members:
            continue
        c, s, kind = members[len(members) // 2]
        f = c + 16
        cases = {"self": _encode(kind, f, c), "stack": _encode(kind, f, img.stack[0]),
                 "unmapped": _encode(kind, f, img.unmapped[0]), "misaligned": _encode(kind, f, c + 8),
                 "size-zero": None, "size-huge": None, "size-mmapped": None}
        if kind in BINNED:
            cases["bin-head-bk"] = None
        for name, v in cases.items():
            if name == "size-zero":
                m = Mutation(c + 8, _q(0), name)
            elif name == "size-huge":
                m = Mutation(c + 8, _q(0x7FFFFFFFFFFFFFF1), name)
            elif name == "size-mmapped":
                m = Mutation(c + 8, _q(s | L.PREV_INUSE | L.IS_MMAPPED), name)
            elif name == "bin-head-bk":
                m = Mutation(c + 24, _q(rng.choice(img.bin_heads) + 16 * 60), name)
            else:
                m = Mutation(f, _q(v), name)
            o = run_one(img, [m], 0, False, rng)
            _check_outcome(img, o, False)
            if name == "size-mmapped" and kind in BINNED:
                continue                 # see the report: IS_MMAPPED on a binned chunk goes unnoticed
            assert _is_detected(o.snap), f"{img.name}: {what} chunk {c:#x}: {name} not reported; " \
                                         f"findings: {o.snap.findings[:3] if o.snap else None}"
    if what == "tcache":
        for img in images:
            for tc in img.clean.thread_cache.values():
                m = Mutation(tc + 2 * 3, struct.pack("<H", 0xFFFF), "counts=0xffff")
                o = run_one(img, [m], 0, False, rng)
                _check_outcome(img, o, False)
                assert _is_detected(o.snap), f"{img.name}: tcache counts[3]=0xffff at {tc:#x} not reported"


# --- deterministic reproductions of bugs the fuzzing found (see KNOWN_BUGS) ----------------------------
def _thread_heap(img: Image):
    """(arena, heap_info address, a chunk start more than 4 KiB into that heap) of arena 1."""
    a = img.clean.arenas[1]
    h = a.address & ~(img.lay.heap_max_size - 1)
    c = next(c for c, _, _ in img.chunks if h + 4096 < c < h + img.lay.heap_max_size)
    return a, h, c


def test_heap_info_size_8_mod_16_is_a_finding_not_a_crash(images):
    img = images[0]
    a, h, c = _thread_heap(img)
    m = Mutation(h + img.lay.hi_size, _q(c + 8 - h), "heap_info.size = chunk boundary + 8")
    o = run_one(img, [m], 0, False, random.Random(0))
    _check_outcome(img, o, False)
    assert any("heap_info" in f.message for f in o.snap.findings), o.snap.findings[:3]


def test_heap_info_size_not_8_aligned_is_a_finding_not_a_crash(images):
    img = images[0]
    a, h, c = _thread_heap(img)
    m = Mutation(h + img.lay.hi_size, _q(c + 4 - h), "heap_info.size = chunk boundary + 4")
    o = run_one(img, [m], 0, False, random.Random(0))
    _check_outcome(img, o, False)
    assert any("heap_info" in f.message for f in o.snap.findings), o.snap.findings[:3]


def test_one_corrupt_tcache_pointer_keeps_the_other_threads_tcaches(images):
    img = images[0]
    clean_cached = img.clean.index.counts()["cached"]
    fs = [t.fs_base for t in img.bases[False].threads() if t.fs_base]
    tpoff = -0x48                        # glibc 2.36 x86-64: tcache is at fs_base-0x48 (ALLOCATORS.md §4)
    m = Mutation(fs[1] + tpoff, _q(0x4141414141414140), "thread 2's tcache pointer")
    o = run_one(img, [m], 0, False, random.Random(0))
    _check_outcome(img, o, False)
    snap = o.snap
    assert len(snap.thread_cache) == len(fs) - 1, snap.thread_cache
    assert snap.index.counts()["cached"] > clean_cached // 2
    assert _is_detected(snap), "the wild tcache pointer of thread 2 is not reported"


def test_truncated_core_reports_missing_arena_as_missing_not_corrupt(images, tmp_path):
    img = images[0]
    full, heap_ranges = _notes_first_core(img, str(tmp_path / "kernel-style"))
    size = os.path.getsize(full)
    path = _truncated_copy(full, str(tmp_path / "cut"), (heap_ranges[0][0] + size) // 2)
    os.unlink(full)
    try:
        snap, err, _ = _walk_truncated(path, False)
    finally:
        os.unlink(path)
    assert snap is not None, err
    bad = [f.message for f in snap.findings if f.severity == "critical"
           and "snapshot" not in f.message and "truncat" not in f.message]
    assert not bad, bad


def test_largebin_nextsize_smash_is_reported(images):
    img = images[0]
    snap = img.clean
    tested = 0
    for lid, fl in enumerate(snap.lists):
        if fl.kind != "largebin":
            continue
        idx = snap.index
        members = sorted((int(idx.recency[i]), int(idx.start[i]), int(idx.size[i]))
                         for i in range(len(idx)) if int(idx.where[i]) == lid)
        sizes = {s for _, _, s in members}
        if len(sizes) < 2:
            continue
        c = members[0][1]                # the first chunk of a bin heads its size run: nextsize links set
        o = run_one(img, [Mutation(c + 32, _q(img.stack[0]), "fd_nextsize -> stack")], 0, False,
                    random.Random(0))
        _check_outcome(img, o, False)
        assert _is_detected(o.snap), f"{fl.name}: fd_nextsize of {c:#x} pointing into the stack not reported"
        tested += 1
    assert tested, "no large bin with two sizes in the known_heap core"


def test_main_arena_smashed_gives_a_sentence(images):
    """Wiping main_arena makes the roots unfindable: NotGlibc with a sentence, or a report."""
    img = images[0]
    lay = img.lay
    zeros = Mutation(img.main_arena + lay.ms_bins, b"\xFF" * (254 * 8), "main_arena bins")
    for debug in (False, True):
        o = run_one(img, [zeros], 1, debug, random.Random(1))
        _check_outcome(img, o, debug)
        if o.error:
            assert "main_arena" in o.error or "glibc" in o.error, o.error


# --- truncated cores --------------------------------------------------------------------------------
def _truncated_copy(src: str, dst: str, nbytes: int) -> str:
    with open(src, "rb") as f, open(dst, "wb") as g:
        left = nbytes
        while left > 0:
            chunk = f.read(min(left, 8 << 20))
            if not chunk:
                break
            g.write(chunk)
            left -= len(chunk)
    return dst


def _headers_end(core: str) -> int:
    """End of the ELF header, program headers and notes: where the first PT_LOAD's bytes start."""
    cf = CoreFile(core)
    try:
        return min(off for _, _, off, filesz, _ in cf.segments if filesz)
    finally:
        cf.close()


def _walk_truncated(path: str, debug: bool):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    t0 = time.perf_counter()
    try:
        try:
            t = CoreTarget(path, use_debug_files=debug)
        except TargetError as e:
            return None, f"TargetError: {e}", time.perf_counter() - t0
        try:
            return glibc.walk(t), None, time.perf_counter() - t0
        except NotGlibc as e:
            return None, f"NotGlibc: {e}", time.perf_counter() - t0
        except TargetError as e:
            return None, f"TargetError: {e}", time.perf_counter() - t0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check_truncated(img: Image, path: str, n: int, size: int, label: str):
    """Walk a truncated core both ways: a report saying bytes are missing, or one clean sentence."""
    outcomes = []
    for debug in (False, True):
        try:
            snap, err, secs = _walk_truncated(path, debug)
        except Exception as e:
            raise AssertionError(f"{img.name} cut to {n} of {size} bytes ({label}), debug files {debug}: "
                                 f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from None
        assert secs < ITER_LIMIT_S, f"{secs:.2f} s on a core cut to {label}"
        if snap is None:
            assert err and len(err) > 30 and "\n" not in err.strip(), err
        else:
            check_snapshot(snap, img, random.Random(n))
            text = " ".join(snap.notes) + " ".join(f.message for f in snap.findings)
            assert "not in the snapshot" in text or "truncated" in text, \
                f"a walk of {img.name} cut to {label} does not say bytes are missing: {snap.notes}"
        outcomes.append((snap, err))
    return outcomes


@pytest.mark.parametrize("fraction", [0.6, "headers", "half-headers"])
def test_truncated_gcore_core_gives_report_or_sentence(images, tmp_path, fraction):
    """gdb's gcore writes the notes (threads, file mappings) at the end of the core: any cut
    loses them. The walk must still end in a sentence (or a report), never a traceback."""
    for img in images:
        size = os.path.getsize(img.core)
        hdr = _headers_end(img.core)
        n = {"headers": hdr, "half-headers": hdr // 2}.get(fraction) if isinstance(fraction, str) \
            else int(size * fraction)
        path = _truncated_copy(img.core, str(tmp_path / f"{img.name}-{fraction}"), n)
        _check_truncated(img, path, n, size, str(fraction))
        os.unlink(path)


def test_truncated_gcore_core_sentence_names_the_truncation(images, tmp_path):
    img = images[0]
    size = os.path.getsize(img.core)
    path = _truncated_copy(img.core, str(tmp_path / "cut"), int(size * 0.6))
    try:
        snap, err, _ = _walk_truncated(path, False)
    finally:
        os.unlink(path)
    assert snap is not None or "truncated" in err or "not in the snapshot" in err, err


def _notes_first_core(img: Image, dst: str) -> Tuple[str, List[Tuple[int, int]]]:
    """Rewrite a gcore core the way the kernel lays one out (notes first), with the heap
    segments' bytes last, so that cutting the file loses heap bytes but keeps threads, file
    mappings and libc. Returns (path, file ranges of the heap segments)."""
    with open(img.core, "rb") as f:
        ehdr = bytearray(f.read(64))
        phoff, = struct.unpack_from("<Q", ehdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 0x36)
        f.seek(phoff)
        phdrs = [list(struct.unpack("<IIQQQQQQ", f.read(phentsize)[:56])) for _ in range(phnum)]
        heap = [(lo, hi) for lo, hi in img.segments]

        def is_heap(ph):
            return ph[0] == 1 and any(lo < ph[3] + ph[6] and ph[3] < hi for lo, hi in heap)
        order = [ph for ph in phdrs if ph[0] != 1] + [ph for ph in phdrs if ph[0] == 1 and not is_heap(ph)] + \
            [ph for ph in phdrs if is_heap(ph)]
        struct.pack_into("<Q", ehdr, 0x28, 0)              # no section headers
        struct.pack_into("<HHH", ehdr, 0x3A, 0, 0, 0)
        struct.pack_into("<Q", ehdr, 0x20, 64)
        struct.pack_into("<H", ehdr, 0x36, 56)
        off = 64 + 56 * len(order)
        layout, heap_ranges = [], []
        for ph in order:
            layout.append((ph, ph[2], off))
            if is_heap(ph):
                heap_ranges.append((off, off + ph[5]))
            off += ph[5]
        with open(dst, "wb") as g:
            g.write(ehdr)
            for ph, _, new in layout:
                g.write(struct.pack("<IIQQQQQQ", ph[0], ph[1], new, *ph[3:]))
            for ph, old, _ in layout:
                f.seek(old)
                left = ph[5]
                while left:
                    chunk = f.read(min(left, 8 << 20))
                    assert chunk, "core shorter than its headers"
                    g.write(chunk)
                    left -= len(chunk)
    return dst, heap_ranges


def test_truncated_core_with_notes_first_reports_missing_heap(images, tmp_path):
    """A kernel-style core (notes first) cut inside its heap segments: the walk reports what it
    could read and says which heap bytes are missing."""
    reports = 0
    for img in images:
        full, heap_ranges = _notes_first_core(img, str(tmp_path / f"{img.name}-kernel-style"))
        snap, err, _ = _walk_truncated(full, False)       # the rewrite itself is faithful
        assert snap is not None and err is None, err
        assert len(snap.index) == len(img.clean.index)
        assert not [f for f in snap.findings if f.severity != "info"], snap.findings[:3]
        size = os.path.getsize(full)
        first_heap = heap_ranges[0][0]
        cuts = {"first heap segment + 4 KiB": first_heap + 4096,
                "mid heap segments": (first_heap + size) // 2,
                "last 64 KiB cut": size - 65536,
                "60%": int(size * 0.6)}
        for label, n in cuts.items():
            path = _truncated_copy(full, str(tmp_path / f"{img.name}-cut"), n)
            for s, e in _check_truncated(img, path, n, size, label):
                reports += s is not None
            os.unlink(path)
        os.unlink(full)
    assert reports >= 4, "no truncated core produced a report: the truncation path is not exercised"


