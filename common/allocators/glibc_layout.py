"""glibc malloc structure layouts (x86-64), one table row per version change.

Offsets come from debug info when the debugger has it (libc6-dbg) and from this table when
not. Each rule names the glibc release that introduced it, so a new version is a table edit.
Verified against `ptype/o` of glibc 2.36 (Debian 12): see shared/notes/ALLOCATORS.md §4.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from typing import Tuple

SIZE_SZ = 8
MALLOC_ALIGNMENT = 16
MINSIZE = 32
CHUNK_HDR_SZ = 16
PREV_INUSE, IS_MMAPPED, NON_MAIN_ARENA = 1, 2, 4
SIZE_BITS = 7
NFASTBINS = 10
NBINS = 128
NSMALLBINS = 64
TCACHE_MAX_BINS = 64

SUPPORTED = ((2, 26), (2, 40))      # tcache exists from 2.26; newer releases keep 2.40's layout


@dataclass(frozen=True)
class GlibcLayout:
    version: Tuple[int, int]
    source: str                      # "debug info" or "built-in table for glibc X.Y"
    # struct malloc_state
    ms_fastbins: int = 16
    ms_top: int = 96
    ms_last_remainder: int = 104
    ms_bins: int = 112
    ms_next: int = 2160
    ms_attached_threads: int = 2176
    ms_system_mem: int = 2184
    ms_max_system_mem: int = 2192
    ms_size: int = 2200
    # struct malloc_par (mp_)
    mp_mmap_threshold: int = 16
    mp_n_mmaps: int = 60
    mp_mmapped_mem: int = 80
    mp_sbrk_base: int = 96
    mp_tcache_bins: int = 104
    mp_tcache_max_bytes: int = 112
    mp_tcache_count: int = 120
    mp_size: int = 136
    # heap_info (thread arenas' heaps)
    hi_ar_ptr: int = 0
    hi_prev: int = 8
    hi_size: int = 16
    hi_sizeof: int = 48
    heap_max_size: int = 64 << 20   # 2 * DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
    # tcache
    tcache_count_size: int = 2      # uint16_t counts[] since 2.30, char before
    safe_linking: bool = True       # PROTECT_PTR on tcache/fastbin next since 2.32
    random_tcache_key: bool = True  # e->key is a random tcache_key since 2.34 (the tcache ptr before)

    @property
    def tcache_struct_size(self) -> int:
        return TCACHE_MAX_BINS * self.tcache_count_size + TCACHE_MAX_BINS * SIZE_SZ

    @property
    def tcache_chunk_size(self) -> int:
        return (self.tcache_struct_size + SIZE_SZ + MALLOC_ALIGNMENT - 1) & ~(MALLOC_ALIGNMENT - 1) \
            if self.tcache_struct_size + SIZE_SZ >= MINSIZE else MINSIZE

    @property
    def version_str(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def table_layout(version: Tuple[int, int]) -> GlibcLayout:
    """The built-in layout for a glibc version (clamped to the supported range)."""
    v = max(SUPPORTED[0], min(version, SUPPORTED[1]))
    lay = GlibcLayout(version=version, source=f"built-in table for glibc {v[0]}.{v[1]}")
    if v < (2, 27):                 # have_fastchunks added in 2.27
        d = -8
        lay = replace(lay, ms_fastbins=8, ms_top=96 + d, ms_last_remainder=104 + d, ms_bins=112 + d,
                      ms_next=2160 + d, ms_attached_threads=2176 + d, ms_system_mem=2184 + d,
                      ms_max_system_mem=2192 + d, ms_size=2200 + d)
    if v < (2, 35):                 # thp_pagesize, hp_pagesize, hp_flags added to malloc_par in 2.35
        lay = replace(lay, mp_n_mmaps=40, mp_mmapped_mem=56, mp_sbrk_base=72, mp_tcache_bins=80,
                      mp_tcache_max_bytes=88, mp_tcache_count=96, mp_size=112, hi_sizeof=32)
    if v < (2, 30):
        lay = replace(lay, tcache_count_size=1)
    if v < (2, 32):
        lay = replace(lay, safe_linking=False)
    if v < (2, 34):
        lay = replace(lay, random_tcache_key=False)
    return lay


def with_debug_info(lay: GlibcLayout, malloc_state, malloc_par) -> GlibcLayout:
    """Override table offsets with those from debug info (StructLayout or None each)."""
    changes = {}
    if malloc_state is not None:
        f = malloc_state.fields
        for attr, name in (("ms_fastbins", "fastbinsY"), ("ms_top", "top"),
                           ("ms_last_remainder", "last_remainder"), ("ms_bins", "bins"),
                           ("ms_next", "next"), ("ms_attached_threads", "attached_threads"),
                           ("ms_system_mem", "system_mem"), ("ms_max_system_mem", "max_system_mem")):
            if name in f:
                changes[attr] = f[name]
        changes["ms_size"] = malloc_state.size
    if malloc_par is not None:
        f = malloc_par.fields
        for attr, name in (("mp_mmap_threshold", "mmap_threshold"), ("mp_n_mmaps", "n_mmaps"),
                           ("mp_mmapped_mem", "mmapped_mem"), ("mp_sbrk_base", "sbrk_base"),
                           ("mp_tcache_bins", "tcache_bins"), ("mp_tcache_max_bytes", "tcache_max_bytes"),
                           ("mp_tcache_count", "tcache_count")):
            if name in f:
                changes[attr] = f[name]
        changes["mp_size"] = malloc_par.size
    if not changes:
        return lay
    return replace(lay, source="debug info", **changes)


# --- size-class arithmetic (malloc.c macros) ------------------------------------------------
def fastbin_index(csize: int) -> int:
    return (csize >> 4) - 2


def tcache_index(csize: int) -> int:
    return (csize - MINSIZE + MALLOC_ALIGNMENT - 1) // MALLOC_ALIGNMENT


def smallbin_index(csize: int) -> int:
    return csize >> 4


def largebin_index(csize: int) -> int:
    if (csize >> 6) <= 48:
        return 48 + (csize >> 6)
    if (csize >> 9) <= 20:
        return 91 + (csize >> 9)
    if (csize >> 12) <= 10:
        return 110 + (csize >> 12)
    if (csize >> 15) <= 4:
        return 119 + (csize >> 15)
    if (csize >> 18) <= 2:
        return 124 + (csize >> 18)
    return 126


def bin_index(csize: int) -> int:
    return smallbin_index(csize) if csize < NSMALLBINS * MALLOC_ALIGNMENT else largebin_index(csize)


def bin_index_vec(cs: np.ndarray) -> np.ndarray:
    """bin_index() of malloc.c over an array of chunk sizes."""
    return np.where(cs < NSMALLBINS * 16, cs >> 4,
           np.where((cs >> 6) <= 48, 48 + (cs >> 6),
           np.where((cs >> 9) <= 20, 91 + (cs >> 9),
           np.where((cs >> 12) <= 10, 110 + (cs >> 12),
           np.where((cs >> 15) <= 4, 119 + (cs >> 15),
           np.where((cs >> 18) <= 2, 124 + (cs >> 18), 126))))))


def bin_name(i: int) -> str:
    if i == 1:
        return "unsorted"
    return f"smallbin[{i}]" if i < NSMALLBINS else f"largebin[{i}]"


def reveal(pos: int, ptr: int) -> int:
    """REVEAL_PTR: safe-linked pointer stored at address `pos`."""
    return (pos >> 12) ^ ptr
