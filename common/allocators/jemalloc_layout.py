"""jemalloc 5.3 layouts: where they come from (debug info, else the shipped per-build-id tables in
data/jemalloc-*.json, made by scripts/layouts/jemalloc.sh) and the offsets the walker reads."""
from __future__ import annotations

import functools
import glob
import json
import os
from typing import Any, Dict, List, Optional

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SUPPORTED = ("5.3.",)          # the versions whose structures this walker knows


@functools.lru_cache(maxsize=1)
def tables() -> Dict[str, Dict[str, Any]]:
    """build-id -> layout dict, from every shipped table."""
    out: Dict[str, Dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(DATA, "jemalloc-*.json"))):
        try:
            with open(path) as f:
                for lay in json.load(f).get("layouts", []):
                    if lay.get("build_id"):
                        out[lay["build_id"]] = lay
        except (OSError, ValueError):
            continue          # a damaged table file: that build just has no table
    return out


class JeLayout:
    """Offsets and sizes of one jemalloc build, as attributes the walker uses directly."""

    def __init__(self, d: Dict[str, Any], source: str):
        self.d, self.source = d, source
        self.version = d.get("version") or "?"
        self.version_string = d.get("version_string") or self.version
        c = d["config"]
        self.lg_vaddr, self.lg_page = c["lg_vaddr"], c["lg_page"]
        self.page = 1 << self.lg_page
        self.nsizes, self.nbins = c["nsizes"], c["nbins"]
        self.tcache_nbins_max = c["tcache_nbins_max"]
        self.root_len = c["rtree_root_len"]
        self.leaf_compact = c["rtree_leaf_compact"]
        self.bitmap_groups = c["bitmap_groups"]
        self.ebits = {k: tuple(v) for k, v in c["edata_bits"].items()}
        self.levels = rtree_levels(self.lg_vaddr, self.lg_page)
        s = d["structs"]
        f = lambda t, n: s[t]["fields"][n][0]
        self.edata_size = s["edata_s"]["size"]
        self.e_bits, self.e_addr, self.e_size = f("edata_s", "e_bits"), f("edata_s", "e_addr"), f("edata_s", "e_size_esn")
        self.e_bitmap = f("edata_s", "e_slab_data")
        self.bin_info_size = s["bin_info_s"]["size"]
        self.bi_reg_size, self.bi_slab_size = f("bin_info_s", "reg_size"), f("bin_info_s", "slab_size")
        self.bi_nregs, self.bi_n_shards = f("bin_info_s", "nregs"), f("bin_info_s", "n_shards")
        self.cb_size = s["cache_bin_s"]["size"]
        self.cb_head, self.cb_full = f("cache_bin_s", "stack_head"), f("cache_bin_s", "low_bits_full")
        self.cb_empty = f("cache_bin_s", "low_bits_empty")
        self.cbi_size = s["cache_bin_info_s"]["size"]
        self.tc_slow, self.tc_bins = f("tcache_s", "tcache_slow"), f("tcache_s", "bins")
        self.tcache_size = s["tcache_s"]["size"]
        self.ts_link, self.ts_arena = f("tcache_slow_s", "link"), f("tcache_slow_s", "arena")
        self.ts_tcache, self.ts_dyn = f("tcache_slow_s", "tcache"), f("tcache_slow_s", "dyn_alloc")
        self.ts_size = s["tcache_slow_s"]["size"]
        self.tsd_size = s["tsd_s"]["size"]
        self.tsd_state, self.tsd_tcache = f("tsd_s", "state"), f("tsd_s", "tcache")
        self.tsd_tcache_slow, self.tsd_arena = f("tsd_s", "tcache_slow"), f("tsd_s", "arena")
        self.tsd_enabled = f("tsd_s", "tcache_enabled")
        self.tsd_link = f("tsd_s", "tsd_link")
        self.arena_size = s["arena_s"]["size"]          # up to the bins (a flexible array)
        self.a_ind, self.a_base = f("arena_s", "ind"), f("arena_s", "base")
        self.a_tcache_ql, self.a_bins = f("arena_s", "tcache_ql"), f("arena_s", "bins")
        pa = f("arena_s", "pa_shard")
        self.a_nactive = pa + f("pa_shard_s", "nactive")
        pac = pa + f("pa_shard_s", "pac")
        npages = f("ecache_s", "eset") + f("eset_s", "npages")
        self.a_npages = {st: pac + f("pac_s", "ecache_" + st) + npages for st in ("dirty", "muzzy", "retained")}
        st = f("arena_s", "stats")
        self.a_lstats = st + f("arena_stats_s", "lstats")
        self.a_internal = st + f("arena_stats_s", "internal")
        self.lstats_size = s["arena_stats_large_s"]["size"]
        self.ls_nmalloc, self.ls_ndalloc = f("arena_stats_large_s", "nmalloc"), f("arena_stats_large_s", "ndalloc")
        self.bin_size = s["bin_s"]["size"]
        bs = f("bin_s", "stats")
        self.b_curregs, self.b_curslabs = bs + f("bin_stats_s", "curregs"), bs + f("bin_stats_s", "curslabs")
        self.b_slabcur = f("bin_s", "slabcur")
        self.base_allocated, self.base_resident = f("base_s", "allocated"), f("base_s", "resident")
        self.base_mapped = f("base_s", "mapped")
        # base blocks: jemalloc's own metadata (arenas, edata, rtree nodes), never program roots
        self.base_blocks = f("base_s", "blocks")
        self.bb_size, self.bb_next = f("base_block_s", "size"), f("base_block_s", "next")
        self.rtree_root = f("emap_s", "rtree") + f("rtree_s", "root")
        self.leaf_size = s["rtree_leaf_elm_s"]["size"]
        self.globals: Dict[str, List[int]] = d["globals"]

    def glob(self, name: str) -> Optional[int]:
        g = self.globals.get(name)
        return g[0] if g else None


def rtree_levels(lg_vaddr: int, lg_page: int) -> List[int]:
    """Key bits per rtree level, root first (rtree.h: RTREE_NSB split over 1-3 levels)."""
    nsb = lg_vaddr - lg_page
    if nsb <= 10:
        return [nsb]
    if nsb <= 36:
        return [nsb // 2, nsb // 2 + nsb % 2]
    return [nsb // 3, nsb // 3 + nsb % 3 // 2, nsb // 3 + nsb % 3 - nsb % 3 // 2]


def supported(version: Optional[str]) -> bool:
    return bool(version) and any(version.startswith(v) for v in SUPPORTED)
