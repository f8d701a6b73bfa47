"""Self-checks of tcmalloc's span metadata and the allocator-native totals (a mixin of the walker).

- every real span: no overlap with the next, its last page maps back to it, a valid location
  and size class, a small span as long as its class says and mapped on every page;
- no page-map entry on a page that no span covers;
- every small span: objects − free-list length == refcount (the count of objects handed out);
- page-heap free lists (free_[n], spans of n+1 pages) hold free spans of that length;
- totals recomputed from the walk, beside tcmalloc's own counters.
"""
from __future__ import annotations

import struct
from typing import Dict

import numpy as np

from ..target import ReadError

IN_USE, ON_NORMAL, ON_RETURNED = 0, 1, 2
LOCATIONS = ("in use", "on the normal free list", "returned to the OS")


class Checks:
    def _corrupt(self, address, message, evidence=(), check="span", severity="critical"):
        self.find("metadata-corruption", severity, address, message, evidence, check)

    def _span_checks(self):
        sp, lay, sz, pm = self.spans, self.lay, self.sizes, self.pm
        ps = lay.page_shift
        self.span_walk: Dict[int, object] = {}
        self.on_ring: set = set()
        n = len(sp)
        usable = np.ones(n, dtype=bool)
        end = sp.start + sp.length
        # a span whose last page does not map back has an untrustworthy length: judged first, so
        # that one smashed length cannot make every later span look overlapped
        last_ok = pm.lookup(end - np.uint64(1)) == sp.addr
        for k in np.nonzero(~last_ok)[0][:25].tolist():
            self._corrupt(int(sp.start[k]) << ps,
                          f"span {int(sp.addr[k]):#x}: the page map entry of its last page "
                          f"({int(end[k]) - 1:#x}) does not point back at it (length {int(sp.length[k])} is wrong?)",
                          ["tcmalloc records both ends of every span in the page map; the span is not walked"])
        usable &= last_ok
        ok = np.nonzero(usable)[0]
        if len(ok) > 1:
            reach = np.maximum.accumulate(end[ok])         # the furthest page any earlier span covers
            over = np.nonzero(sp.start[ok[1:]] < reach[:-1])[0] + 1
            usable[ok[over]] = False
            for k in over[:25].tolist():
                b = int(ok[k])
                a = int(ok[np.nonzero(end[ok[:k]] > sp.start[b])[0][-1]])    # an earlier span it runs into
                self._corrupt(int(sp.start[b]) << ps,
                              f"span {int(sp.addr[b]):#x} (pages {int(sp.start[b]):#x}+{int(sp.length[b])}) overlaps "
                              f"span {int(sp.addr[a]):#x} (pages {int(sp.start[a]):#x}+{int(sp.length[a])})",
                              ["two spans claim the same memory; the second is not walked"])
        for k in np.nonzero(sp.location > ON_RETURNED)[0].tolist():
            usable[k] = False
            self._corrupt(int(sp.start[k]) << ps, f"span {int(sp.addr[k]):#x} has an invalid location "
                          f"{int(sp.location[k])}", [])
        cls = sp.sizeclass
        inuse = sp.location == IN_USE
        for k in np.nonzero(inuse & (cls >= sz.num_classes))[0].tolist():
            usable[k] = False
            self._corrupt(int(sp.start[k]) << ps, f"span {int(sp.addr[k]):#x} has size class {int(cls[k])}, "
                          f"beyond the {sz.num_classes - 1} classes in use", [])
        small = inuse & (cls > 0) & (cls < sz.num_classes) & usable
        pages_of = np.array(sz.pages, dtype=np.int64)
        wrong_len = small & (sp.length.astype(np.int64) != pages_of[np.where(small, cls, 0)])
        for k in np.nonzero(wrong_len)[0].tolist():
            self._corrupt(int(sp.start[k]) << ps,
                          f"span {int(sp.addr[k]):#x} of {self.class_name(int(cls[k]))} is {int(sp.length[k])} pages "
                          f"long; the class uses {sz.pages[int(cls[k])]}", ["its objects are not walked"])
        small &= ~wrong_len
        self.usable = usable                           # spans trusted enough to index
        for k in np.nonzero(~inuse & (cls != 0) & usable)[0].tolist():
            self._corrupt(int(sp.start[k]) << ps, f"free span {int(sp.addr[k]):#x} still has size class "
                          f"{int(cls[k])} (tcmalloc clears it when a span is freed)", [], severity="warning")
        self.small = np.nonzero(small)[0]
        self.small_class = cls[self.small].astype(np.int64)
        sizes = np.array(sz.size, dtype=np.int64)
        self.small_csize = sizes[self.small_class]
        self.small_nobjs = (sp.length[self.small].astype(np.int64) << ps) // self.small_csize
        small_of = np.full(len(sp), -1, dtype=np.int64)
        small_of[self.small] = np.arange(len(self.small))
        self.small_of = small_of.tolist()               # span row -> small-span row (-1: not small)
        self.small_class_l = self.small_class.tolist()
        self._page_coverage(small)

    def _page_coverage(self, small: np.ndarray):
        """Every page of a small span maps to it; every mapped page lies in some span."""
        sp, pm, ps = self.spans, self.pm, self.lay.page_shift
        if not len(pm.pages) or not len(sp):
            return
        pos = np.searchsorted(sp.start, pm.pages, side="right") - 1
        posc = np.maximum(pos, 0)
        covered = (pos >= 0) & (pm.pages < sp.start[posc] + sp.length[posc])
        for k in np.nonzero(~covered)[0][:5].tolist():
            self._corrupt(None, f"page map: page {int(pm.pages[k]):#x} ({int(pm.pages[k]) << ps:#x}) points at "
                          f"{int(pm.ptrs[k]):#x}, but no span covers that page", ["a stray page-map entry"],
                          check="pagemap")
        mine = covered & (pm.ptrs == sp.addr[posc]) & small[posc]
        got = np.bincount(posc[mine], minlength=len(sp))
        short = np.nonzero(small & (got != sp.length.astype(np.int64)))[0]
        for k in short[:25].tolist():
            self._corrupt(int(sp.start[k]) << ps,
                          f"span {int(sp.addr[k]):#x} ({self.class_name(int(sp.sizeclass[k]))}): only {int(got[k])} of "
                          f"its {int(sp.length[k])} pages map to it in the page map",
                          ["tcmalloc maps every page of a small span to it (RegisterSizeClass)"], check="pagemap")

    def _refcounts(self):
        """objects − free-list length == refcount for every small span."""
        sp = self.spans
        for row, srow in enumerate(self.small.tolist()):
            w = self.span_walk.get(row)
            if w is not None and w.end in ("loop", "bad", "unread"):
                continue                           # already reported, or not knowable
            nobjs = int(self.small_nobjs[row])
            walked = len(w.seq) if w is not None else 0
            ref = int(sp.refcount[srow])
            if nobjs - walked == ref:
                continue
            cl = int(self.small_class[row])
            ev = [f"{nobjs} objects, {walked} on the span's free list, refcount {ref} "
                  f"(expected {nobjs - walked})"]
            culprit = next((i for i in (w.seq if w is not None else ()) if i in self.double_freed), None)
            if culprit is not None and self.consequence(
                    culprit, f"span {int(sp.addr[srow]):#x}: refcount {ref} no longer matches its free list "
                             f"({nobjs} objects − {walked} free): the second free rewrote a link"):
                continue
            severity = "critical"
            if cl in self.central_locked or self.pageheap_locked:
                severity = "warning"
                ev.append("a thread holds this class's central lock: the span may be mid-update")
            if ref > nobjs:
                ev.append("refcount exceeds the span's capacity")
            self._corrupt(int(sp.start[srow]) << self.lay.page_shift,
                          f"span {int(sp.addr[srow]):#x} ({self.class_name(cl)}): refcount {ref} disagrees with its "
                          f"free list ({nobjs} objects − {walked} free = {nobjs - walked})", ev, "refcount", severity)

    def free_span_recency(self, free_rows: np.ndarray) -> np.ndarray:
        """Position of each free span in what tcmalloc reuses next: spans up to kMaxPages pages in
        the free_[n] list of their length (checked), longer ones in best-fit order (length,
        address), as the page heap's sets keep them."""
        sp, lay = self.spans, self.lay
        rec = np.full(len(free_rows), -1, dtype=np.int64)
        if not len(free_rows):
            return rec
        pos_of: Dict[int, int] = {}
        try:
            raw = self.r.read(self.roots.pageheap + lay.ph_free, lay.ph_nfree * lay.spanlist_size)
        except ReadError:
            raw = None
        if raw is not None:
            bound = len(free_rows) + 1
            for i in range(lay.ph_nfree):
                for loc, off in ((ON_NORMAL, lay.sl_normal), (ON_RETURNED, lay.sl_returned)):
                    o = i * lay.spanlist_size + off
                    head = self.roots.pageheap + lay.ph_free + o
                    nxt = struct.unpack_from("<Q", raw, o + lay.span_next)[0]
                    k = 0
                    while nxt != head and k < bound:
                        row = sp.row_of(nxt)
                        if row < 0 or int(sp.location[row]) != loc or int(sp.length[row]) != i + 1 or row in pos_of:
                            what = ("is not a span record" if row < 0 else "was seen before" if row in pos_of else
                                    f"is {int(sp.length[row])} pages, {LOCATIONS[min(int(sp.location[row]), 2)]}")
                            self._corrupt(None, f"page heap free_[{i}] ({i + 1}-page spans, "
                                          f"{'normal' if loc == ON_NORMAL else 'returned'}): link {nxt:#x} {what}",
                                          ["the rest of that list is not walked"], check="pageheap-list")
                            break
                        pos_of[row] = k
                        k += 1
                        nxt = int(sp.next[row])
        rows = free_rows.tolist()
        for j, row in enumerate(rows):
            if row in pos_of:
                rec[j] = pos_of[row]
            elif raw is not None and int(sp.length[row]) <= lay.ph_nfree:
                self._corrupt(int(sp.start[row]) << lay.page_shift,
                              f"free span {int(sp.addr[row]):#x} ({int(sp.length[row])} pages) is on no page-heap free "
                              f"list", ["tcmalloc can never reuse it"], check="pageheap-list", severity="warning")
        big = [j for j, row in enumerate(rows) if int(sp.length[row]) > lay.ph_nfree]
        for loc in (ON_NORMAL, ON_RETURNED):
            sel = [j for j in big if int(sp.location[rows[j]]) == loc]
            sel.sort(key=lambda j: (int(sp.length[rows[j]]), int(sp.start[rows[j]])))
            for rank, j in enumerate(sel):
                rec[j] = rank
        return rec

    def _stats(self):
        """Totals recomputed from the walk, named as MallocExtension names them, beside the
        counters tcmalloc keeps itself."""
        sp, ps, o = self.spans, self.lay.page_shift, self.objs
        span_bytes = sp.length.astype(np.int64) << ps
        heap = int(span_bytes.sum())
        free_b = int(span_bytes[sp.location == ON_NORMAL].sum())
        unmapped = int(span_bytes[sp.location == ON_RETURNED].sum())
        size = o.size.astype(np.int64)
        # what each list holds, counted per list as tcmalloc counts it (length x the list's class size)
        held = {"thread cache": 0, "transfer cache": 0, "central free list": 0}
        for w in self.walks:
            held[self.lists[w.lid].kind] += w.length * self.sizes.size[w.cls]
        cached, transfer, central_objs = held["thread cache"], held["transfer cache"], held["central free list"]
        tail = int(((self.spans.length[self.small].astype(np.int64) << ps) - self.small_nobjs * self.small_csize).sum())
        central = central_objs + tail
        large = (sp.location == IN_USE) & (sp.sizeclass == 0)
        alloc_small = int(size[self.state == 0].sum())
        self.stats = {
            "generic.heap_size": heap,
            "generic.current_allocated_bytes": heap - cached - central - transfer - free_b - unmapped,
            "tcmalloc.current_total_thread_cache_bytes": cached,
            "tcmalloc.central_cache_free_bytes": central,
            "tcmalloc.transfer_cache_free_bytes": transfer,
            "tcmalloc.pageheap_free_bytes": free_b,
            "tcmalloc.pageheap_unmapped_bytes": unmapped,
            "allocated_small_bytes": alloc_small,
            "allocated_large_bytes": int(span_bytes[large].sum()),
            "span_tail_bytes": tail,
            "heap_size_counts": "bytes of every span in the page map (in use, free and returned pages)",
            "tcmalloc_counters": self._own_counters(),
        }
        self.stats["heap_size"] = heap
        own = self.stats["tcmalloc_counters"]
        pairs = (("generic.heap_size", "pageheap.system_bytes"), ("tcmalloc.pageheap_free_bytes", "pageheap.free_bytes"),
                 ("tcmalloc.pageheap_unmapped_bytes", "pageheap.unmapped_bytes"),
                 ("tcmalloc.current_total_thread_cache_bytes", "thread caches size_"))
        for mine, theirs in pairs:
            if own.get(theirs) is not None and own[theirs] != self.stats[mine]:
                self.notes.append(f"{mine}: the walk finds {self.stats[mine]:,} bytes, tcmalloc's counter "
                                  f"{theirs} says {own[theirs]:,}")

    def _own_counters(self) -> Dict[str, int]:
        lay = self.lay
        out: Dict[str, int] = {"thread caches size_": self.cache_bytes_claimed}
        try:
            raw = self.r.read(self.roots.pageheap + lay.ph_stats, max(lay.stats_off.values()) + 8)
            for k, off in lay.stats_off.items():
                out["pageheap." + k] = struct.unpack_from("<Q", raw, off)[0]
        except ReadError:
            pass
        raw = self.central_raw
        if raw is not None:
            central = transfer = 0
            for cl in range(1, self.sizes.num_classes):
                b = cl * lay.cf_stride
                counter = struct.unpack_from("<Q", raw, b + lay.cf_counter)[0]
                used = struct.unpack_from("<i", raw, b + lay.cf_used_slots)[0]
                central += counter * self.sizes.size[cl]
                transfer += max(used, 0) * self.sizes.to_move[cl] * self.sizes.size[cl]
            out["central counter_ bytes"] = central
            out["transfer used_slots_ bytes"] = transfer
        return out
