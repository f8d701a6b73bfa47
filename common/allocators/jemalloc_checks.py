"""Checks of the jemalloc walker that need the whole classified heap: thread-cache entries against
the regions (double frees, interior pointers, wrong bins, entries outside every extent) and
jemalloc's own counters against the walk. A mixin of common.allocators.jemalloc._Walker.

jemalloc 5.3 as Debian builds it checks nothing on free(): the pointer's size class comes from
the rtree and the pointer is pushed on the thread's cache bin, so a second free of the same
pointer, or a pointer into the middle of a region, sits in the cache until malloc hands it out
again. These checks find them there.
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..checks import freelists
from ..heapindex import CACHED, FREE, FreeList

U64 = np.uint64


class JeChecks:
    def _cache_lists(self):
        """One FreeList per non-empty cache bin; rows (pointer, list, position, bin)."""
        ptr, lid, pos, binn = [], [], [], []
        for tc in self.tcaches:
            apos = self.arena_pos.get(tc.arena_ptr)
            who = f"thread {tc.thread}" if tc.thread is not None else f"tcache {tc.addr:#x}"
            for b, _, items in tc.bins:
                l = len(self.lists)
                self.lists.append(FreeList("tcache", b, f"tcache bin {b} ({self.size_of(b):#x}) of {who}",
                                           apos, tc.thread, tc.tid, True))
                ptr.append(items.astype(U64))
                lid.append(np.full(len(items), l, np.int32))
                pos.append(np.arange(len(items), dtype=np.int32))
                binn.append(np.full(len(items), b, np.int64))
        if not ptr:
            e = np.zeros(0, np.int64)
            return e.astype(U64), e.astype(np.int32), e.astype(np.int32), e
        return np.concatenate(ptr), np.concatenate(lid), np.concatenate(pos), np.concatenate(binn)

    def _where_desc(self, lid: int, pos: int) -> str:
        fl = self.lists[lid]
        lwp = f" (LWP {fl.tid})" if fl.tid is not None else ""
        return f"in {fl.name}{lwp} at position {pos}" + (" (next to be reused)" if pos == 0 else "")

    def _classify_cached(self):
        idx = self.index
        ptr, lid, pos, binn = self._cache_lists()
        self.stats["cached_entries"] = int(len(ptr))
        if not len(ptr):
            self._finish_stats()
            return
        n = len(idx)
        j = np.searchsorted(idx.start, ptr, side="right").astype(np.int64) - 1
        jj = np.clip(j, 0, max(n - 1, 0))
        inside = (j >= 0) & (ptr < idx.start[jj] + idx.size[jj]) if n else np.zeros(len(ptr), bool)
        exact = inside & (idx.start[jj] == ptr)
        # outside every extent
        for k in np.nonzero(~inside)[0][:self.MAX_LISTED].tolist():
            p = int(ptr[k])
            self.corrupt(None, f"{self.lists[lid[k]].name} holds {p:#x}, which is in no jemalloc extent",
                         [self._where_desc(int(lid[k]), int(pos[k])),
                          "the cache bin's stack was overwritten, or a pointer jemalloc never returned was freed"],
                         "tcache-entry")
        # interior pointers: free(p + k) is pushed on the bin unchecked
        for k in np.nonzero(inside & ~exact)[0][:self.MAX_LISTED].tolist():
            p, c = int(ptr[k]), int(jj[k])
            st, sz = int(idx.start[c]), int(idx.size[c])
            self.find("invalid-free", "critical", p,
                      f"{p:#x} was freed but is not the start of a region: it is {p - st} bytes into the "
                      f"{sz}-byte region at {st:#x}",
                      [self._where_desc(int(lid[k]), int(pos[k])),
                       "jemalloc's free() caches any pointer of the size class unchecked: the next malloc of "
                       f"this size returns {p:#x}, overlapping the region at {st:#x}"],
                      "tcache-interior", chunk=idx.chunk_json(c))
        ex_k = np.nonzero(exact)[0]
        # cached while its slab bitmap (or extent) says free: freed twice, once back to the slab
        # (a tcache flush), once more into a cache
        fr = idx.state[jj[ex_k]] == FREE
        for k in ex_k[fr][:self.MAX_LISTED].tolist():
            cc = int(jj[k])
            fl = self.lists[int(idx.where[cc])] if idx.where[cc] >= 0 else None
            slab = fl is None or fl.kind == "slab"
            self.find("double-free", "critical", int(ptr[k]),
                      f"{int(ptr[k]):#x} was freed twice: it is in {self.lists[lid[k]].name} while "
                      + ("its slab's bitmap says free" if slab else
                         f"its memory is a {fl.kind[7:]} extent (its slab was released)"),
                      [self._where_desc(int(lid[k]), int(pos[k])),
                       f"also {fl.name}" if fl is not None else "free in its slab",
                       "the next malloc of this size returns memory jemalloc will also hand out elsewhere"],
                      "cached-but-free", chunk={"start": int(idx.start[cc]), "size": int(idx.size[cc]),
                                                "state": "free"})
        ex_k = ex_k[~fr]
        # wrong bin for the region's size class
        wrong = self.i_szind[jj[ex_k]] != binn[ex_k]
        for k in ex_k[wrong][:self.MAX_LISTED].tolist():
            cc = int(jj[k])
            self.corrupt(int(ptr[k]), f"{int(ptr[k]):#x} is in {self.lists[lid[k]].name} but its region is of size "
                         f"class {int(self.i_szind[cc])} ({int(idx.size[cc]):#x} bytes)",
                         [self._where_desc(int(lid[k]), int(pos[k])),
                          "free() files a pointer under the size class the rtree gives; a sized deallocation "
                          "(sdallocx, sized delete) with a wrong size, or an overwritten cache stack, puts it elsewhere"],
                         "tcache-bin-class", chunk=idx.chunk_json(cc))
        live = ex_k[~wrong]
        # a region in caches more than once
        pref = np.ones(len(self.lists), dtype=bool)
        uniq, ulid, upos, dups = freelists.resolve(jj[live], lid[live], pos[live], pref)
        idx.state[uniq] = CACHED
        idx.where[uniq] = ulid
        idx.recency[uniq] = upos
        for u, ms in dups:
            self._double_free(int(u), ms)
        self._finish_stats()

    MAX_LISTED = 25

    def _double_free(self, u: int, ms):
        idx = self.index
        p = int(idx.start[u])
        names = [self.lists[l].name for l, _ in ms]
        threads = sorted({self.lists[l].thread for l, _ in ms if self.lists[l].thread is not None})
        if len(set(names)) == 1:
            msg = f"{p:#x} was freed twice: it is in {names[0]} {len(ms)} times"
        else:
            msg = f"{p:#x} was freed twice: it is in {' and '.join(dict.fromkeys(names))}"
            if len(threads) > 1:
                msg += f" (freed by thread {' and by thread '.join(map(str, threads))})"
        ev = [self._where_desc(l, q) for l, q in ms] + \
             ["jemalloc does not check frees: the next mallocs of this size will return it twice"]
        self.find("double-free", "critical", p, msg, ev, "tcache-duplicate",
                  chunk={"start": p, "size": int(idx.size[u]), "state": "cached"})

    # --- jemalloc's own numbers ----------------------------------------------------------------------
    def _finish_stats(self):
        idx, st = self.index, self.stats
        size = idx.size.astype(np.int64)
        small = (self.i_szind >= 0) & (self.i_szind < self.nbins)
        large = self.i_szind >= self.nbins
        live = idx.state == 0
        cached = idx.state == CACHED
        st["live_bytes"] = int(size[live].sum())
        st["cached_bytes"] = int(size[cached].sum())
        st["allocated"] = st["live_bytes"] + st["cached_bytes"]    # what jemalloc counts as allocated
        st["small_allocated"] = int(size[small & (live | cached)].sum())
        st["large_allocated"] = int(size[large & (live | cached)].sum())
        st["live_regions"] = int((small & live).sum())
        st["cached_regions"] = int((small & cached).sum())
        st["free_regions"] = int((small & (idx.state == FREE)).sum())
        st["large_live"] = int((large & live).sum())
        st["large_cached"] = int((large & cached).sum())
        st["active"] = st["active_bytes"]
        c = self.counters
        st["mapped"] = c.get("base_mapped", 0) + st["active_bytes"] + st["dirty_bytes"] + st["muzzy_bytes"]
        st["resident"] = c.get("base_resident", 0) + st["active_bytes"] + st["dirty_bytes"]
        st["metadata"] = c.get("base_allocated", 0) + c.get("internal", 0)   # as stats.metadata counts it

    def _compare_counters(self):
        """jemalloc's counters (bin curregs/curslabs, large nmalloc-ndalloc, arena nactive and
        dirty/muzzy pages) against the walk. A difference is reported at 'info': a thread stopped
        inside jemalloc may hold them half-updated."""
        idx, st, lay = self.index, self.stats, self.lay
        page = lay.page
        c = self.counters
        nar = len(self.arenas)
        used = (idx.state == 0) | (idx.state == CACHED)
        small = (self.i_szind >= 0) & (self.i_szind < self.nbins)
        walked_regs = np.zeros((nar, self.nbins), np.int64)
        m = small & used & (idx.arena >= 0)
        np.add.at(walked_regs, (idx.arena[m].astype(np.int64), self.i_szind[m]), 1)
        walked_slabs = np.zeros((nar, self.nbins), np.int64)
        ok = self.slab_apos >= 0
        np.add.at(walked_slabs, (self.slab_apos[ok], self.slab_szind[ok]), 1)
        nl = lay.nsizes - self.nbins
        walked_large = np.zeros((nar, nl), np.int64)
        m = (self.i_szind >= self.nbins) & used & (idx.arena >= 0)
        np.add.at(walked_large, (idx.arena[m].astype(np.int64), self.i_szind[m] - self.nbins), 1)
        known = self.bin_curregs >= 0
        c["curregs"] = int(self.bin_curregs[known].sum())
        c["curslabs"] = int(self.bin_curslabs[known].sum())
        c["large_extents"] = int(self.large_cur.sum())
        c["allocated"] = int((self.bin_curregs * np.where(known, self.reg_size[None, :], 0)).sum()
                             + (self.large_cur * self.sz_tab[None, self.nbins:]).sum())
        st["walked_curregs"] = int(walked_regs[known].sum())
        st["walked_curslabs"] = int(walked_slabs[known].sum())
        diffs: List[str] = []
        for pos, b in zip(*np.nonzero(known & (walked_regs != self.bin_curregs))):
            diffs.append(f"{self.arenas[pos].name} bin {b} ({self.size_of(int(b)):#x}): jemalloc counts "
                         f"{int(self.bin_curregs[pos, b])} regions in use, the walk finds {int(walked_regs[pos, b])}")
        for pos, b in zip(*np.nonzero(known & (walked_slabs != self.bin_curslabs))):
            diffs.append(f"{self.arenas[pos].name} bin {b}: jemalloc counts {int(self.bin_curslabs[pos, b])} slabs, "
                         f"the walk finds {int(walked_slabs[pos, b])}")
        for pos, l in zip(*np.nonzero(walked_large != self.large_cur)):
            diffs.append(f"{self.arenas[pos].name} large class {int(l) + self.nbins} "
                         f"({self.size_of(int(l) + self.nbins):#x}): jemalloc counts {int(self.large_cur[pos, l])}, "
                         f"the walk finds {int(walked_large[pos, l])}")
        if c.get("active_pages") is not None and c["active_pages"] * page != st["active_bytes"]:
            diffs.append(f"active pages: jemalloc counts {c['active_pages']} ({c['active_pages'] * page} bytes), "
                         f"the walk finds {st['active_bytes']} bytes in active extents")
        for s in ("dirty", "muzzy"):
            k = f"{s}_pages"
            if k in c and c[k] * page != st[f"{s}_bytes"]:
                diffs.append(f"{s} pages: jemalloc counts {c[k]}, the walk finds {st[f'{s}_bytes'] // page}")
        st["counter_mismatches"] = len(diffs)
        if diffs:
            self.find("metadata-corruption", "info", None,
                      f"jemalloc's own counters disagree with the walk in {len(diffs)} place(s)",
                      diffs[:10] + (["..."] if len(diffs) > 10 else []) +
                      ["a thread stopped inside malloc/free may hold a counter half-updated; otherwise metadata "
                       "was overwritten"], "counters")
