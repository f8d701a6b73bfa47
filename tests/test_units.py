"""Fast unit tests of the core (no gdb): glibc layouts and size classes, argument parsing, the
ELF core reader, the page cache, /proc/PID/maps parsing, report helpers, and a hand-built
glibc heap walked through a fake Target."""
from __future__ import annotations

import glob
import json
import os
import random
import resource
import shutil
import struct
import subprocess
from typing import Dict, List, Optional

import numpy as np
import pytest

from common import commands as C
from common.allocators import glibc_layout as L
from common.elfcore import CoreFile
from common.memcache import PAGE, CachedReader
from common.procmaps import parse_maps
from common.report import Finding, dumps, fmt_size, make_report, severity_rank, sort_findings, write_json
from common.target import ObjFile, ReadError, Region, StructLayout, Target, TargetError, ThreadInfo

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


# =============================================================================================
# glibc layouts (shared/notes/ALLOCATORS.md §4: `ptype/o` of glibc 2.36 with libc6-dbg)
# =============================================================================================
def test_layout_2_36_matches_ptype_o():
    lay = L.table_layout((2, 36))
    assert lay.source == "built-in table for glibc 2.36" and lay.version_str == "2.36"
    # struct malloc_state: 2200 bytes
    assert (lay.ms_size, lay.ms_fastbins, lay.ms_top, lay.ms_bins) == (2200, 16, 96, 112)
    assert (lay.ms_next, lay.ms_attached_threads, lay.ms_system_mem) == (2160, 2176, 2184)
    assert lay.ms_last_remainder == 104 and lay.ms_max_system_mem == 2192
    assert lay.ms_fastbins + 8 * L.NFASTBINS == lay.ms_top          # fastbinsY[10], then top
    assert lay.ms_bins + 8 * (2 * L.NBINS - 2) == 2144               # bins[254], then binmap @2144
    # struct malloc_par (2.35+: thp_pagesize, hp_pagesize, hp_flags): 136 bytes, tcache @104..128
    assert lay.mp_size == 136 and lay.mp_tcache_bins == 104
    assert (lay.mp_tcache_max_bytes, lay.mp_tcache_count) == (112, 120)
    # tcache_perthread_struct {uint16_t counts[64]; tcache_entry *entries[64]}: 640 bytes, chunk 0x290
    assert lay.tcache_count_size == 2 and lay.tcache_struct_size == 640 and lay.tcache_chunk_size == 0x290
    assert lay.hi_sizeof == 48 and lay.heap_max_size == 64 << 20
    assert lay.safe_linking and lay.random_tcache_key


@pytest.mark.parametrize("version,changes", [
    ((2, 26), dict(ms_fastbins=8, ms_top=88, ms_bins=104, ms_next=2152, ms_system_mem=2176, ms_size=2192,
                   mp_tcache_bins=80, mp_size=112, hi_sizeof=32, tcache_count_size=1, safe_linking=False,
                   random_tcache_key=False)),
    ((2, 27), dict(ms_fastbins=16, ms_top=96, ms_size=2200, mp_tcache_bins=80, tcache_count_size=1,
                   safe_linking=False)),
    ((2, 29), dict(tcache_count_size=1, safe_linking=False, random_tcache_key=False, mp_size=112)),
    ((2, 30), dict(tcache_count_size=2, safe_linking=False, random_tcache_key=False)),
    ((2, 31), dict(safe_linking=False, random_tcache_key=False)),
    ((2, 32), dict(safe_linking=True, random_tcache_key=False)),
    ((2, 33), dict(safe_linking=True, random_tcache_key=False, mp_tcache_bins=80, hi_sizeof=32)),
    ((2, 34), dict(random_tcache_key=True, mp_tcache_bins=80, mp_n_mmaps=40, mp_sbrk_base=72)),
    ((2, 35), dict(mp_tcache_bins=104, mp_size=136, hi_sizeof=48, mp_n_mmaps=60, mp_sbrk_base=96)),
    ((2, 40), dict(ms_size=2200, mp_size=136)),
])
def test_layout_older_versions_as_documented(version, changes):
    lay = L.table_layout(version)
    assert lay.version == version
    for k, v in changes.items():
        assert getattr(lay, k) == v, (version, k, getattr(lay, k), v)
    # the struct shifts by have_fastchunks (2.27) only: the offsets inside keep their spacing
    assert lay.ms_size - lay.ms_bins == 2200 - 112
    assert lay.ms_next - lay.ms_top == 2160 - 96


def test_layout_tcache_chunk_sizes_by_version():
    assert L.table_layout((2, 26)).tcache_struct_size == 64 + 64 * 8      # char counts[64]
    assert L.table_layout((2, 26)).tcache_chunk_size == 0x250
    assert L.table_layout((2, 29)).tcache_chunk_size == 0x250
    assert L.table_layout((2, 30)).tcache_chunk_size == 0x290
    assert L.table_layout((2, 36)).tcache_chunk_size == 0x290


def test_layout_clamps_unknown_versions():
    old = L.table_layout((2, 17))
    assert old.version == (2, 17) and old.source.endswith("glibc 2.26")
    assert old.ms_fastbins == L.table_layout((2, 26)).ms_fastbins
    new = L.table_layout((2, 45))
    assert new.version == (2, 45) and new.source.endswith("glibc 2.40")
    ref = L.table_layout((2, 36))
    for f in ("ms_size", "ms_top", "ms_bins", "ms_next", "mp_size", "mp_tcache_bins", "tcache_chunk_size"):
        assert getattr(new, f) == getattr(ref, f), f
    assert L.table_layout((3, 0)).source.endswith("glibc 2.40")


def test_layout_with_debug_info_overrides_table():
    lay = L.table_layout((2, 36))
    assert L.with_debug_info(lay, None, None) is lay
    ms = StructLayout("malloc_state", 2208, {"fastbinsY": 24, "top": 104, "bins": 120, "next": 2168,
                                             "system_mem": 2192})
    mp = StructLayout("malloc_par", 144, {"tcache_bins": 112, "n_mmaps": 64})
    d = L.with_debug_info(lay, ms, mp)
    assert d.source == "debug info"
    assert (d.ms_fastbins, d.ms_top, d.ms_bins, d.ms_next, d.ms_system_mem, d.ms_size) == (24, 104, 120, 2168, 2192, 2208)
    assert (d.mp_tcache_bins, d.mp_n_mmaps, d.mp_size) == (112, 64, 144)
    assert d.ms_last_remainder == lay.ms_last_remainder          # fields debug info did not name stay
    assert d.mp_sbrk_base == lay.mp_sbrk_base


# --- size classes: the malloc.c 2.36 macros, written out independently ------------------------------
MINSIZE, ALIGN = 32, 16


def ref_csize2tidx(x):                 # csize2tidx
    return (x - MINSIZE + ALIGN - 1) // ALIGN


def ref_fastbin_index(sz):             # ((((unsigned int) (sz)) >> 4) - 2)
    return ((sz & 0xFFFFFFFF) >> 4) - 2


def ref_largebin_index_64(sz):
    for shift, limit, base in ((6, 48, 48), (9, 20, 91), (12, 10, 110), (15, 4, 119), (18, 2, 124)):
        if (sz >> shift) <= limit:
            return base + (sz >> shift)
    return 126


def ref_bin_index(sz):                 # in_smallbin_range: sz < MIN_LARGE_SIZE = 64 * 16
    return sz >> 4 if sz < 64 * 16 else ref_largebin_index_64(sz)


BIN_BOUNDARIES = {0x20: 2, 0x30: 3, 0x3f0: 63, 0x400: 64, 0x430: 64, 0x440: 65, 0xbf0: 95, 0xc00: 96,
                  0xc40: 97, 0xe00: 98, 0x29f0: 111, 0x2a00: 112, 0xaff0: 120, 0xb000: 120, 0x27ff0: 123,
                  0x28000: 124, 0xbfff0: 126, 0xc0000: 126, 1 << 40: 126}


def test_bin_index_boundaries():
    for sz, want in BIN_BOUNDARIES.items():
        assert L.bin_index(sz) == want == ref_bin_index(sz), hex(sz)
    assert L.smallbin_index(0x3f0) == 63 and L.largebin_index(0x400) == 64


def test_size_class_helpers_against_malloc_c_macros():
    sizes = list(range(0x20, 0x3000, 0x10)) + [random.Random(1).randrange(0x20, 1 << 24) & ~15 for _ in range(3000)]
    sizes += list(BIN_BOUNDARIES)
    for sz in sizes:
        assert L.bin_index(sz) == ref_bin_index(sz), hex(sz)
        assert L.tcache_index(sz) == ref_csize2tidx(sz), hex(sz)
        if sz <= 0xb0:
            assert L.fastbin_index(sz) == ref_fastbin_index(sz), hex(sz)
    # table edges
    assert L.tcache_index(0x20) == 0 and L.tcache_index(0x30) == 1 and L.tcache_index(0x410) == 63
    assert L.tcache_index(0x420) == L.TCACHE_MAX_BINS                 # 1032-byte requests are the last class
    assert L.fastbin_index(0x20) == 0 and L.fastbin_index(0xb0) == L.NFASTBINS - 1
    # NFASTBINS = fastbin_index(request2size(MAX_FAST_SIZE = 80 * SIZE_SZ / 4)) + 1
    assert ref_fastbin_index((160 + 8 + 15) & ~15) + 1 == L.NFASTBINS
    assert L.bin_name(1) == "unsorted" and L.bin_name(2) == "smallbin[2]" and L.bin_name(64) == "largebin[64]"


def test_vectorised_bin_index_matches_scalar():
    from common.allocators.glibc_layout import bin_index_vec as _bin_index_vec
    sizes = np.array(sorted(set(list(range(0x20, 0x40000, 0x10)) + list(BIN_BOUNDARIES))), dtype=np.uint64)
    got = _bin_index_vec(sizes)
    want = np.array([L.bin_index(int(s)) for s in sizes])
    bad = np.nonzero(got != want)[0]
    assert not len(bad), [(hex(int(sizes[i])), int(got[i]), int(want[i])) for i in bad[:5]]


def test_reveal_round_trip():
    rng = random.Random(7)
    for _ in range(2000):
        pos = rng.getrandbits(47) & ~15
        ptr = rng.getrandbits(47) & ~15
        stored = (pos >> 12) ^ ptr                                     # PROTECT_PTR(pos, ptr)
        assert L.reveal(pos, stored) == ptr
        assert L.reveal(pos, L.reveal(pos, ptr)) == ptr                # an involution
    assert L.reveal(0x5555555aa750, 0x5555555aa) == 0                  # the end of a list is NULL protected
    assert L.reveal(0x5555555aa760, 0x55500000ff1a) == (0x5555555aa760 >> 12) ^ 0x55500000ff1a


# =============================================================================================
# commands.parse_args
# =============================================================================================
def _info(s):
    return C.parse_args(s, True, False, C.INFO_ALLOC_USAGE)


def _check(s):
    return C.parse_args(s, False, True, C.HEAP_CHECK_USAGE)


def test_parse_args_flags_anywhere():
    a = _info("p->next --json x")
    assert (a.rest, a.json, a.fail_on) == ("p->next", "x", None)
    a = _info("--json x p->next")
    assert (a.rest, a.json) == ("p->next", "x")
    a = _info("*(struct conn *) ptr --json=/tmp/o.json")
    assert (a.rest, a.json) == ("*(struct conn *) ptr", "/tmp/o.json")
    a = _info("arr[i + 1]->buf")
    assert a.rest == "arr[i + 1]->buf" and a.json is None
    a = _check("--fail-on warning --json -")
    assert (a.rest, a.json, a.fail_on) == ("", "-", "warning")
    a = _check("")
    assert (a.rest, a.json, a.fail_on) == ("", None, None)
    a = _check("   --json   out.json   ")
    assert a.json == "out.json"


def test_parse_args_quoted_paths():
    assert _check('--json "/tmp/my dir/out.json"').json == "/tmp/my dir/out.json"
    assert _check("--json '/tmp/my dir/out.json'").json == "/tmp/my dir/out.json"
    assert _check('--json="/tmp/a b.json" --fail-on critical').json == "/tmp/a b.json"
    a = _info("p --json '/tmp/x y.json'")
    assert (a.rest, a.json) == ("p", "/tmp/x y.json")


@pytest.mark.parametrize("argstr", ["--fail-on bogus", "--fail-on=CRITICAL", "--bogus", "--json x --verbose",
                                    "extra", "--fail-on"])
def test_parse_args_heap_check_errors(argstr):
    with pytest.raises(C.UsageError) as e:
        _check(argstr)
    assert str(e.value)


def test_parse_args_messages():
    with pytest.raises(C.UsageError, match="--fail-on takes one of critical, warning, info"):
        _check("--fail-on bogus")
    with pytest.raises(C.UsageError, match="unknown option --bogus"):
        _check("--bogus")
    with pytest.raises(C.UsageError, match="unexpected argument 'extra'"):
        _check("extra")
    with pytest.raises(C.UsageError):              # info alloc needs an EXPR
        _info("")
    with pytest.raises(C.UsageError):
        _info("--json out.json")
    with pytest.raises(C.UsageError):              # info alloc takes no --fail-on
        _info("p --fail-on critical")
    with pytest.raises(C.UsageError):
        C.parse_args("x", False, False, C.HEAP_STATS_USAGE)


def test_parse_args_expression_keeps_minus_signs():
    assert _info("p - 1").rest == "p - 1"
    assert _info("a->b-->c").rest == "a->b-->c"
    assert _info("(char *)p - -16").rest == "(char *)p - -16"


# =============================================================================================
# elfcore.CoreFile
# =============================================================================================
def test_corefile_rejects_non_elf_and_empty(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not an ELF core file\n" * 10)
    with pytest.raises(TargetError, match="not a 64-bit little-endian ELF core"):
        CoreFile(str(text))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(TargetError, match="cannot open core file"):
        CoreFile(str(empty))
    with pytest.raises(TargetError):
        CoreFile(str(tmp_path / "missing"))
    with pytest.raises(TargetError):
        CoreFile(str(tmp_path))                      # a directory
    with pytest.raises(TargetError, match="not a 64-bit"):
        CoreFile(LIBC)                               # ELF, but a shared object, not a core


@pytest.mark.parametrize("n", [4, 18, 40, 60])
def test_corefile_cut_inside_elf_header_is_a_target_error(tmp_path, n):
    p = tmp_path / "cut"
    p.write_bytes(_core_header()[:n])
    with pytest.raises(TargetError):
        CoreFile(str(p))


def _core_header() -> bytes:
    hdr = bytearray(64)
    hdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HH", hdr, 16, 4, 62)          # ET_CORE, EM_X86_64
    struct.pack_into("<Q", hdr, 0x20, 64)
    struct.pack_into("<HHH", hdr, 0x36, 56, 3, 64)   # 3 program headers right after the header
    return bytes(hdr)


@pytest.mark.parametrize("n", [64, 64 + 56 + 20])
def test_corefile_cut_inside_program_headers_is_truncated(tmp_path, n):
    p = tmp_path / "cut"
    p.write_bytes(_core_header()[:n] + b"\0" * max(0, n - 64))
    cf = CoreFile(str(p))
    assert cf.truncated and cf.threads == []
    cf.close()


def test_corefile_garbage_program_headers(tmp_path):
    """A header claiming 65535 program headers far beyond the file: truncated, no exception."""
    hdr = bytearray(64)
    hdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HH", hdr, 16, 4, 62)
    struct.pack_into("<Q", hdr, 0x20, 1 << 40)
    struct.pack_into("<HH", hdr, 0x36, 56, 0xFFFF)
    p = tmp_path / "garbage"
    p.write_bytes(bytes(hdr) + b"\0" * 200)
    cf = CoreFile(str(p))
    assert cf.truncated and cf.segments == [] and cf.threads == []
    with pytest.raises(ReadError):
        cf.read(0x1000, 8)
    cf.close()


KC_SRC = r"""
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static pthread_barrier_t b;
static void *worker(void *a) {
    void *p = malloc(100); memset(p, 0x11, 100);
    free(malloc(40));
    pthread_barrier_wait(&b); pause(); return p;
}
int main(void) {
    pthread_t t[2];
    pthread_barrier_init(&b, 0, 3);
    for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, worker, 0);
    void *keep = malloc(1000); memset(keep, 0x22, 1000);
    free(malloc(200)); free(malloc(3000)); (void)keep;
    pthread_barrier_wait(&b);
    abort();
}
"""


def _set_core_limit():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.fixture(scope="module")
def kernel_core(tmp_path_factory):
    """A core the kernel dumps (notes first) of a small threaded program: no gdb needed."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    try:
        pattern = open("/proc/sys/kernel/core_pattern").read().strip()
    except OSError:
        pattern = "?"
    if pattern.startswith("|"):
        pytest.skip(f"core dumps go to a program ({pattern}), not a file")
    d = tmp_path_factory.mktemp("kcore")
    src, exe = d / "kc.c", d / "kc"
    src.write_text(KC_SRC)
    subprocess.run(["gcc", "-g", "-O0", "-pthread", "-o", str(exe), str(src)], check=True, capture_output=True)
    subprocess.run([str(exe)], cwd=str(d), preexec_fn=_set_core_limit, capture_output=True, timeout=60)
    cores = [c for c in glob.glob(str(d / "core*")) if os.path.isfile(c)]
    if not cores:
        pytest.skip(f"the kernel wrote no core file (core_pattern {pattern!r})")
    yield cores[0]
    shutil.rmtree(str(d), ignore_errors=True)


def test_corefile_real_core(kernel_core):
    cf = CoreFile(kernel_core)
    assert not cf.truncated
    assert len(cf.threads) == 3
    assert all(t.fs_base and t.tid > 0 for t in cf.threads)
    assert len({t.fs_base for t in cf.threads}) == 3
    assert all(t.regs["rsp"] for t in cf.threads)
    regs = cf.regions()
    assert regs == sorted(regs, key=lambda r: r.start)
    assert all(a.end <= b.start for a, b in zip(regs, regs[1:]))
    assert any(r.path.endswith("/kc") for r in regs) and any("libc.so.6" in r.path for r in regs)
    # a read across two adjacent segments equals the two halves read apart
    pairs = [(a, b) for a, b in zip(regs, regs[1:]) if a.end == b.start and a.readable and b.readable]
    assert pairs
    done = 0
    for a, b in pairs:
        try:
            whole = cf.read(a.end - 24, 48)
        except ReadError:
            continue
        assert whole == cf.read(a.end - 24, 24) + cf.read(b.start, 24)
        done += 1
    assert done
    # unmapped addresses
    gap = next(a.end for a, b in zip(regs, regs[1:]) if a.end < b.start)
    for addr in (0, 0x1000, gap, regs[-1].end + 0x1000):
        with pytest.raises(ReadError):
            cf.read(addr, 8)
    with pytest.raises(ReadError):                     # runs off the end of a mapping into a hole
        cf.read(gap - 8, 16)
    cf.close()


def test_corefile_left_out_pages_come_from_the_file(kernel_core):
    """The kernel leaves out file-backed text; CoreFile reads it from the file on disk."""
    cf = CoreFile(kernel_core)
    out = [r for r in cf.regions() if not r.in_snapshot and r.path == LIBC]
    assert out, "the kernel dumped libc's text: nothing to test"
    r = out[0]
    with open(LIBC, "rb") as f:
        f.seek(r.offset)
        want = f.read(64)
    assert cf.read(r.start, 64) == want
    cf.close()


def test_corefile_truncated_kernel_core(kernel_core, tmp_path):
    size = os.path.getsize(kernel_core)
    cut = tmp_path / "cut"
    with open(kernel_core, "rb") as f:
        cut.write_bytes(f.read(size // 2))
    full, half = CoreFile(kernel_core), CoreFile(str(cut))
    assert half.truncated and len(half.threads) == 3 and half.files == full.files   # notes come first
    lost = [r for r in half.regions() if not r.in_snapshot and not r.path]
    assert lost
    with pytest.raises(ReadError):
        half.read(lost[-1].start, 8)
    full.close()
    half.close()


def test_glibc_walk_of_kernel_core(kernel_core):
    """A kernel core walks without gdb: both threads' tcaches and the main thread's are found."""
    from common.allocators import glibc
    from common.coretarget import CoreTarget
    snap = glibc.walk(CoreTarget(kernel_core, use_debug_files=False))
    assert not [f for f in snap.findings if f.severity != "info"], snap.findings
    assert len(snap.thread_cache) == 3 and len(snap.arenas) >= 2
    counts = snap.index.counts()
    assert counts["cached"] >= 3 and counts["allocated"] >= 3


def test_elfinfo_symbol_lookup_in_libc():
    from common.elfinfo import elf_info
    info = elf_info(LIBC)
    assert info is not None and info.build_id
    assert info.symbol("malloc") is not None
    assert info.symbol("no_such_symbol_in_libc") is None
    assert elf_info("/nonexistent/libc.so.6") is None
    assert elf_info(__file__) is None                       # not ELF


def _libc_debug_file() -> Optional[str]:
    from common.elfinfo import elf_info
    from common.objfiles import debug_file_for
    info = elf_info(LIBC)
    return debug_file_for(info.build_id) if info else None


@pytest.mark.skipif(_libc_debug_file() is None, reason="libc6-dbg is not installed")
def test_elfinfo_symbol_missing_from_debug_file_is_none():
    from common.elfinfo import elf_info
    info = elf_info(_libc_debug_file())
    assert info.symbol("main_arena") is not None
    assert info.symbol("no_such_symbol_in_libc") is None


# =============================================================================================
# memcache.CachedReader
# =============================================================================================
class FakeTarget(Target):
    """Memory from a dict {start: bytes}; counts the reads that reach it."""
    kind = "core"

    def __init__(self, mem: Dict[int, bytes]):
        self.mem = dict(mem)
        self.calls: List[tuple] = []

    def read(self, addr, size):
        self.calls.append((addr, size))
        out = bytearray()
        while size > 0:
            for s, b in self.mem.items():
                if s <= addr < s + len(b):
                    n = min(size, s + len(b) - addr)
                    out += b[addr - s:addr - s + n]
                    addr += n
                    size -= n
                    break
            else:
                raise ReadError(addr, size)
        return bytes(out)

    def regions(self):
        return sorted(Region(s, s + len(b)) for s, b in self.mem.items())


def _pattern(start, n):
    return bytes(((a * 7) >> 3) & 0xFF for a in range(start, start + n))


def test_cachedreader_serves_small_reads_from_pages():
    base = 0x100000
    t = FakeTarget({base: _pattern(base, 4 * PAGE)})
    r = CachedReader(t)
    for off in (0, 8, 100, PAGE - 8, 3 * PAGE + 5):
        assert r.read(base + off, 8) == _pattern(base + off, 8)
    assert r.read(base + PAGE - 4, 8) == _pattern(base + PAGE - 4, 8)    # spans two pages
    assert r.read(base + 2 * PAGE - 100, 300) == _pattern(base + 2 * PAGE - 100, 300)
    assert len(t.calls) == 4 and all(n == PAGE for _, n in t.calls)      # one bulk read per page
    assert r.u64(base + 16) == struct.unpack("<Q", _pattern(base + 16, 8))[0]
    assert r.words(base, 3) == struct.unpack("<3Q", _pattern(base, 24))
    big = r.read(base + 10, 2 * PAGE)                                     # large reads bypass the cache
    assert big == _pattern(base + 10, 2 * PAGE) and t.calls[-1] == (base + 10, 2 * PAGE)
    assert r.read(base, 0) == b""


def test_cachedreader_near_unmapped_boundaries():
    base = 0x200000
    half = PAGE // 2
    t = FakeTarget({base: _pattern(base, PAGE + half)})        # ends in the middle of its second page
    r = CachedReader(t)
    end = base + PAGE + half
    assert r.read(end - 8, 8) == _pattern(end - 8, 8)            # page read fails, exact read works
    assert r.read(base + PAGE - 8, 16) == _pattern(base + PAGE - 8, 16)
    with pytest.raises(ReadError):
        r.read(end - 4, 8)
    with pytest.raises(ReadError):
        r.read(base - 8, 16)
    assert r.try_u64(end - 8) is not None
    assert r.try_u64(end - 4) is None and r.try_u64(end) is None and r.try_u64(0) is None
    with pytest.raises(ReadError):
        r.u64(end)
    with pytest.raises(ReadError):
        r.read(-8, 8)
    with pytest.raises(ReadError):
        r.read((1 << 64) - 4, 8)
    calls = len(t.calls)
    r.read(end - 16, 8)                                          # the failed page is not re-read in bulk
    assert all(n != PAGE or a != base + PAGE for a, n in t.calls[calls:])


def test_cachedreader_lru_bound():
    base = 0x1000000
    npages = 40
    t = FakeTarget({base: _pattern(base, npages * PAGE)})
    r = CachedReader(t, max_bytes=8 * PAGE)
    for k in range(npages):
        r.read(base + k * PAGE + 64, 8)
    assert len(r._pages) <= 8
    before = len(t.calls)
    r.read(base + (npages - 1) * PAGE, 8)                         # recent: cached
    assert len(t.calls) == before
    r.read(base, 8)                                              # evicted: read again
    assert len(t.calls) == before + 1
    r.read(base + (npages - 2) * PAGE, 8)                         # touched order keeps recent pages
    assert len(t.calls) == before + 1
    tiny = CachedReader(t, max_bytes=1)
    for k in range(20):
        tiny.read(base + k * PAGE, 8)
    assert len(tiny._pages) <= 4


# =============================================================================================
# procmaps.parse_maps
# =============================================================================================
MAPS = """\
7ffff7fc3000-7ffff7fc7000 r--p 00000000 00:00 0                          [vvar]
555555554000-555555555000 r--p 00000000 fe:01 1049090                    /tmp/prog
555555555000-555555556000 r-xp 00001000 fe:01 1049090                    /tmp/prog
555555559000-55555557a000 rw-p 00000000 00:00 0                          [heap]
7ffff7dd5000-7ffff7dfb000 r--p 00000000 fe:01 655551                     /usr/lib/x86_64-linux-gnu/libc.so.6
7ffff7a00000-7ffff7c00000 rw-p 00000000 00:00 0
7ffff7c00000-7ffff7c01000 rw-s 00000000 00:01 42                         /tmp/my file with spaces (deleted)
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]

garbage line
zzzz-yyyy r--p 00000000 00:00 0
7ffff0000000 r--p 00000000 00:00 0
1000-2000-3000 r--p 00000000 00:00 0
1000-2000 r--p nothex 00:00 0
1000-2000 r--p
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_parse_maps():
    regs = parse_maps(MAPS)
    assert [r.start for r in regs] == sorted(r.start for r in regs)
    assert len(regs) == 9
    by = {r.start: r for r in regs}
    heap = by[0x555555559000]
    assert (heap.end, heap.perms, heap.path, heap.offset) == (0x55555557a000, "rw-p", "[heap]", 0)
    assert heap.anonymous and heap.writable and heap.readable
    text = by[0x555555555000]
    assert text.path == "/tmp/prog" and text.offset == 0x1000 and text.perms == "r-xp" and not text.anonymous
    anon = by[0x7ffff7a00000]
    assert anon.path == "" and anon.anonymous
    assert by[0x7ffff7c00000].path == "/tmp/my file with spaces (deleted)"
    assert by[0xffffffffff600000].perms == "--xp" and not by[0xffffffffff600000].readable
    assert parse_maps("") == [] and parse_maps("\n\n") == []


# =============================================================================================
# report
# =============================================================================================
def _f(sev, kind="metadata-corruption", addr=None, check=""):
    return Finding(kind, sev, addr, f"{kind} {sev}", [], None, None, check)


def test_sort_findings_worst_first():
    fs = [_f("info", addr=1), _f("warning", "double-free", 5), _f("critical", "metadata-corruption", 9),
          _f("bogus"), _f("critical", "double-free", None), _f("warning", "double-free", 2),
          _f("critical", "double-free", 3)]
    out = sort_findings(fs)
    assert [f.severity for f in out] == ["critical"] * 3 + ["warning"] * 2 + ["info", "bogus"]
    assert [(f.kind, f.address) for f in out[:3]] == [("double-free", None), ("double-free", 3),
                                                       ("metadata-corruption", 9)]
    assert [f.address for f in out[3:5]] == [2, 5]
    assert severity_rank("critical") < severity_rank("warning") < severity_rank("info") < severity_rank("x")
    assert sort_findings([]) == []


def test_write_json_errors_are_sentences(tmp_path):
    rep = make_report("heap-check", "glibc", {"findings": [_f("critical", addr=np.uint64(0x10)).to_json()],
                                              "n": np.int64(3)})
    assert rep["schema"] == "heaplens/1" and rep["command"] == "heap-check" and rep["allocator"] == "glibc"
    for bad in (str(tmp_path / "no" / "such" / "dir" / "x.json"), str(tmp_path)):
        err = write_json(rep, bad)
        assert isinstance(err, str) and err.startswith("could not write JSON to ") and "\n" not in err
    good = tmp_path / "ok.json"
    assert write_json(rep, str(good)) is None
    back = json.loads(good.read_text())
    assert back["findings"][0]["address"] == 0x10 and back["n"] == 3 and isinstance(back["n"], int)
    out = []
    assert write_json(rep, "-", out.append) is None and json.loads(out[0]) == back
    assert json.loads(dumps(rep)) == back


def test_fmt_size():
    assert fmt_size(None) == "-" and fmt_size(0) == "0 B" and fmt_size(10239) == "10239 B"
    assert fmt_size(10 << 10) == "10.0 KiB" and fmt_size(20 << 20) == "20.0 MiB" and fmt_size(30 << 30) == "30.0 GiB"


# =============================================================================================
# a hand-built glibc heap, walked through a fake Target over the real libc file
# =============================================================================================
class SyntheticProcess(Target):
    """Memory pages built by hand; libc.so.6 is "loaded" at a fake base (its file is read by the
    core for the structure search; its memory here holds only what the test writes)."""
    kind = "core"

    def __init__(self, libc_base: int):
        self.libc_base = libc_base
        self.mem: Dict[int, bytearray] = {}        # region start -> bytes
        self.reg: List[Region] = []
        self.tls: List[int] = []

    def map(self, start, size, perms="rw-p", path=""):
        self.mem[start] = bytearray(size)
        self.reg.append(Region(start, start + size, perms, path, 0))
        self.reg.sort(key=lambda r: r.start)

    def w64(self, addr, *vals):
        for k, v in enumerate(vals):
            self._put(addr + 8 * k, struct.pack("<Q", v & ((1 << 64) - 1)))

    def _put(self, addr, data):
        for s, b in self.mem.items():
            if s <= addr and addr + len(data) <= s + len(b):
                b[addr - s:addr - s + len(data)] = data
                return
        raise AssertionError(f"write outside the fake memory at {addr:#x}")

    def read(self, addr, size):
        for s, b in self.mem.items():
            if s <= addr and addr + size <= s + len(b):
                return bytes(b[addr - s:addr - s + size])
        raise ReadError(addr, size)

    def regions(self):
        return list(self.reg)

    def threads(self):
        return [ThreadInfo(k + 1, 1000 + k, fs, selected=k == 0) for k, fs in enumerate(self.tls)]

    def objfiles(self):
        return [ObjFile(LIBC, self.libc_base)]


def _synthetic_heap():
    """main_arena with a tcache double free, a fastbin entry and a smallbin chunk; one thread."""
    from common.elfinfo import elf_info
    from common.allocators.glibc_locate import _find_mp, _main_arena_candidates
    info = elf_info(LIBC)
    if info is None:
        pytest.skip(f"{LIBC} is not readable ELF")
    lay = L.table_layout((2, 36))
    cands = _main_arena_candidates(info, lay)
    mp_off = _find_mp(info, lay)
    tpoffs = info.tpoff_slots()
    if len(cands) != 1 or mp_off is None or not tpoffs:
        pytest.skip("this libc does not have the structure the search expects")
    base = 0x7f0000000000
    p = SyntheticProcess(base)
    # libc: one rw mapping covering main_arena, mp_ and the TLS GOT slots, at their link-time offsets
    lo = min([cands[0], mp_off] + [s for s, _ in tpoffs]) & ~0xFFF
    hi = (max([cands[0] + lay.ms_size, mp_off + lay.mp_size] + [s + 8 for s, _ in tpoffs]) + 0xFFF) & ~0xFFF
    p.map(base + lo, hi - lo, "rw-p", LIBC)
    ma = base + cands[0]
    mp = base + mp_off
    # TLS: one thread; every TPOFF64 slot says -0x48 .. so the tcache slot is found among them
    tp = 0x7f1000010000
    p.map(tp - 0x1000, 0x2000)
    p.tls = [tp]
    for k, (slot, _) in enumerate(tpoffs):
        p.w64(base + slot, -0x48 - 0x100 * k)
    # the heap: [tcache struct 0x290][A 0x30 tcached][B 0x30 tcached][F 0x30 fastbin][G 0x20 guard]
    #           [S 0x110 smallbin][G2 0x20 guard][top]
    heap = 0x555555559000
    size = 0x21000
    p.map(heap, size, "rw-p", "[heap]")
    tc_chunk = heap + 0x10 - 0x10                  # sbrk_base 16-aligned: first chunk at heap
    tc = tc_chunk + 16
    A, B, F, G, S, G2 = (tc_chunk + 0x290, tc_chunk + 0x2c0, tc_chunk + 0x2f0, tc_chunk + 0x320,
                         tc_chunk + 0x340, tc_chunk + 0x450)
    top = G2 + 0x20
    p.w64(tc_chunk, 0, 0x291)
    key = 0x1122334455667788
    # tcache[1] (0x30): A -> B -> A ... a double free loop; counts[1] = 3
    p._put(tc + 2 * 1, struct.pack("<H", 3))
    p.w64(tc + 128 + 8 * 1, A + 16)
    p.w64(A, 0, 0x31, ((A + 16) >> 12) ^ (B + 16), key)
    p.w64(B, 0, 0x31, ((B + 16) >> 12) ^ (A + 16), key)
    p.w64(F, 0, 0x31, ((F + 16) >> 12) ^ 0, 0)     # fastbin[1] of main_arena: F alone
    p.w64(G, 0, 0x21)
    p.w64(S, 0, 0x111, 0, 0)                       # smallbin[17] (0x110): S alone
    p.w64(G2, 0x110, 0x20)                         # PREV_INUSE clear: S before it is free
    p.w64(top, 0, (heap + size - top) | 1)
    # main_arena
    for i in range(1, 128):                        # every bin empty: fd = bk = the bin itself
        b = ma + lay.ms_bins + (i - 1) * 16 - 16
        p.w64(ma + lay.ms_bins + (i - 1) * 16, b, b)
    b17 = ma + lay.ms_bins + 16 * 16 - 16
    p.w64(ma + lay.ms_bins + 16 * 16, S, S)
    p.w64(S + 16, b17, b17)
    p.w64(ma + lay.ms_fastbins + 8 * 1, F)
    p.w64(ma + lay.ms_top, top)
    p.w64(ma + lay.ms_next, ma)
    p.w64(ma + lay.ms_attached_threads, 1)
    p.w64(ma + lay.ms_system_mem, size)
    p.w64(ma + lay.ms_max_system_mem, size)
    # mp_
    p.w64(mp + lay.mp_sbrk_base, heap)
    p.w64(mp + lay.mp_tcache_bins, 64, 1032, 7)
    p._put(mp + lay.mp_n_mmaps, struct.pack("<i", 0))
    # the thread's tcache pointer: fs_base - 0x48
    p.w64(tp - 0x48, tc)
    return p, dict(tc=tc, A=A, B=B, F=F, G=G, S=S, G2=G2, top=top, main_arena=ma, key=key)


def test_synthetic_heap_walk():
    from common.allocators import glibc
    from common.heapindex import ALLOCATED, CACHED, FREE, TOP
    p, at = _synthetic_heap()
    snap = glibc.walk(p)
    assert snap.meta["main_arena"] == at["main_arena"]
    assert snap.thread_cache == {1: at["tc"]}, (snap.thread_cache, snap.notes)
    idx = snap.index
    state = {int(idx.start[i]): int(idx.state[i]) for i in range(len(idx))}
    assert state[at["A"]] == CACHED and state[at["B"]] == CACHED
    assert state[at["F"]] == FREE and state[at["S"]] == FREE
    assert state[at["G"]] == ALLOCATED and state[at["G2"]] == ALLOCATED and state[at["top"]] == TOP
    dfs = [f for f in snap.findings if f.kind == "double-free"]
    assert len(dfs) == 1 and dfs[0].address in (at["A"] + 16, at["B"] + 16), snap.findings
    assert "tcache[1] (0x30) of thread 1" in dfs[0].message
    assert [f.kind for f in snap.findings if f.severity != "info"] == ["double-free"], snap.findings
    info = C.alloc_info([snap], C.Pointer(at["S"] + 16 + 8))
    assert info["state"] == "free" and info["offset"] == 8 and "smallbin" in info["bin"]


def test_synthetic_heap_smashed_size_is_found_and_walk_resumes():
    from common.allocators import glibc
    from common.heapindex import FREE, TOP
    p, at = _synthetic_heap()
    p.w64(at["G"] + 8, 0x4141414141414141)         # overflow from F into G's size field
    snap = glibc.walk(p)
    bad = [f for f in snap.findings if f.kind == "metadata-corruption" and f.chunk
           and f.chunk.get("start") == at["G"]]
    assert bad and "0x4141414141414141" in bad[0].message, snap.findings
    idx = snap.index
    state = {int(idx.start[i]): int(idx.state[i]) for i in range(len(idx))}
    assert state.get(at["S"]) == FREE and state.get(at["top"]) == TOP    # resumed from the smallbin entry


def test_synthetic_heap_smallbin_back_link_corrupt():
    from common.allocators import glibc
    p, at = _synthetic_heap()
    p.w64(at["S"] + 24, 0x4141414141414140)        # S->bk no longer points back at the bin
    snap = glibc.walk(p)
    bad = [f for f in snap.findings if f.kind == "metadata-corruption" and f.address == at["S"] + 16]
    assert bad and "0x4141414141414140" in bad[0].message, snap.findings
    assert any("smallbin[17]" in e for e in bad[0].evidence)


def test_synthetic_heap_tcache_key_overwritten():
    from common.allocators import glibc
    p, at = _synthetic_heap()
    tc, A, B, G, key = at["tc"], at["A"], at["B"], at["G"], at["key"]
    p.w64(B + 16, ((B + 16) >> 12) ^ 0)            # tcache[1]: A -> B (no loop), 2 entries
    p._put(tc + 2 * 1, struct.pack("<H", 2))
    p._put(tc + 2 * 0, struct.pack("<H", 1))        # tcache[0]: G, so the key has a majority
    p.w64(tc + 128, G + 16)
    p.w64(G + 16, ((G + 16) >> 12) ^ 0, key)
    p.w64(B + 24, 0xdeadbeef)                      # B's key overwritten: a write after free
    snap = glibc.walk(p)
    assert not [f for f in snap.findings if f.kind == "double-free"], snap.findings
    kw = [f for f in snap.findings if f.address == B + 16 and f.kind == "metadata-corruption"]
    assert kw and "key" in kw[0].message and kw[0].severity == "warning", snap.findings
    assert [f.address for f in snap.findings if f.severity != "info"] == [B + 16], snap.findings


def test_synthetic_heap_tcache_count_mismatch():
    from common.allocators import glibc
    p, at = _synthetic_heap()
    p.w64(at["B"] + 16, ((at["B"] + 16) >> 12) ^ 0)  # break the loop: A -> B -> NULL, but counts[1] = 3
    snap = glibc.walk(p)
    assert not [f for f in snap.findings if f.kind == "double-free"]
    cnt = [f for f in snap.findings if "counts[] says 3" in f.message]
    assert cnt, snap.findings
