"""gperftools tcmalloc (2.10) walker: page map, spans, size classes, central free lists and their
transfer caches, every thread cache; each object classified and the lists cross-checked.

Flow (bulk reads only; nothing read from the heap is trusted):
1. roots (tcmalloc_locate): the library, its layout, sizemap_/central_cache_/pageheap_ from
   InitStaticVars() or debug info, thread_heaps_;
2. the page map's leaves -> the real spans (tcmalloc_spans), read in batches;
3. every object of every small span, with its first word (tcmalloc_objects);
4. free lists (tcmalloc_lists): span `objects` lists in central-ring order, transfer-cache slots,
   thread caches; then the judgement: an object in two lists or a list looping back is a double
   free, an entry inside an object or of another size class an invalid free, a link to no object
   corruption; span and ring self-checks (tcmalloc_checks);
5. the HeapIndex: small objects (allocated / free / cached), large spans, free page runs.
"""
from __future__ import annotations

import struct
import time
from typing import Dict, List, Optional

import numpy as np

from ..heapindex import ALLOCATED, CACHED, FREE, Arena, FreeList, HeapIndex
from ..memcache import CachedReader
from ..report import Finding
from ..snapshot import HeapSnapshot
from ..target import ReadError, Target
from .base import MAX_PER_CHECK, WalkerBase
from .tcmalloc_checks import Checks
from .tcmalloc_lists import Chaser, Walk, assign, meeting_points, owner
from .tcmalloc_locate import NotTcmalloc, TcRoots, locate
from .tcmalloc_objects import Objects
from .tcmalloc_spans import read_pagemap, real_spans

__all__ = ["walk", "NotTcmalloc"]

MAX_CACHES = 1 << 16             # thread caches followed on thread_heaps_
PTHREAD_TID = 0x2d0              # glibc 2.36 x86-64: struct pthread.tid (pthread_t is its address)
IN_USE, ON_NORMAL, ON_RETURNED = 0, 1, 2


def walk(target: Target, reader: Optional[CachedReader] = None) -> HeapSnapshot:
    reader = reader or CachedReader(target)
    roots = locate(target, reader)
    return _Walker(target, reader, roots).run()


class _Walker(Checks, WalkerBase):
    def __init__(self, target: Target, reader: CachedReader, roots: TcRoots):
        super().__init__(target, reader, roots)
        self.sizes = roots.sizes
        self.walks: List[Walk] = []
        self.thread_cache: Dict[int, int] = {}
        self._list_ids: Dict[tuple, int] = {}

    # --- findings ----------------------------------------------------------------------------
    def obj_chunk(self, i: int) -> Dict:
        o = self.objs
        st = ("allocated", "free", "cached")[int(self.state[i])] if hasattr(self, "state") else None
        return {"start": int(o.addr[i]), "size": int(o.size[i]), "state": st}

    def class_name(self, cl: int) -> str:
        size = self.sizes.size[cl] if 0 <= cl < self.sizes.num_classes else 0
        return f"class {cl} ({size} B)"

    def list_id(self, key: tuple, make) -> int:
        lid = self._list_ids.get(key)
        if lid is None:
            lid = self._list_ids[key] = len(self.lists)
            self.lists.append(make())
        return lid

    # --- run ---------------------------------------------------------------------------------
    def run(self) -> HeapSnapshot:
        t0 = time.perf_counter()
        lay = self.lay
        self._locks()
        try:
            self.pm = read_pagemap(self.r, lay, self.roots.pageheap)
        except ReadError:
            raise NotTcmalloc(f"tcmalloc's page map (in PageHeap at {self.roots.pageheap:#x}) is not in the snapshot"
                              + (f": {self.t.warnings()[0]}" if self.t.warnings() else ""))
        for p in self.pm.problems:
            self.find("metadata-corruption", "critical", None, f"page map: {p}", [], "pagemap")
        self.spans, bad = real_spans(self.pm, lay, self.r)
        for a in bad[:MAX_PER_CHECK]:
            self.find("metadata-corruption", "critical", None,
                      f"the page map points at a span record {a:#x} that is unreadable", [], "pagemap")
        self._span_checks()                       # also chooses the small spans
        self.objs = Objects(self.t, self.r, self.spans, self.small, self.small_csize, self.small_nobjs,
                            lay.page_shift)
        unread = self.objs.unread
        if unread:
            self.notes.append(f"{sum(h - l for l, h in unread):,} bytes of span memory in {len(unread)} range(s) "
                              f"(first {unread[0][0]:#x}-{unread[0][1]:#x}) are not in the snapshot: free lists "
                              "through them are not followed, so their free objects may show as allocated")
        t_objs = time.perf_counter()
        self.chaser = Chaser(self.objs, self.r)
        self._span_heads()
        self._central()
        self._foreign_span_entries()
        self._thread_caches()
        t_lists = time.perf_counter()
        self._judge()
        self._refcounts()
        index = self._index()
        self._stats()
        t_end = time.perf_counter()
        self.summarise_overflow()
        meta = {"version": f"gperftools {self.roots.version}", "layout": lay.source,
                "found_by": dict(self.roots.how), "library": self.roots.lib.path,
                "roots": {"sizemap_": self.roots.sizemap, "central_cache_": self.roots.central_cache,
                          "pageheap_": self.roots.pageheap, "thread_heaps_": self.roots.thread_heaps},
                "small_max": max(self.sizes.size), "size_classes": self.sizes.num_classes - 1,
                "page_size": 1 << lay.page_shift, "spans": len(self.spans), "objects": self.objs.n,
                "stats": self.stats,
                "walk_seconds": round(t_objs - t0, 4), "lists_seconds": round(t_lists - t_objs, 4),
                "total_seconds": round(t_end - t0, 4)}
        arena = Arena(0, self.roots.pageheap, "page heap", system_mem=self.stats["heap_size"],
                      segments=self._segments(), threads=sorted(self.thread_cache))
        return HeapSnapshot("tcmalloc", index, self.lists, [arena], self.findings, self.threads, self.notes,
                            meta, dict(self.thread_cache), {n: 0 for n in self.thread_cache}, list(self.objs.unread))

    # --- locks -------------------------------------------------------------------------------
    def _locks(self):
        """A held lock means some thread was inside tcmalloc when the program stopped: its lists
        may be mid-update, which explains (but does not excuse) inconsistent counters."""
        self.pageheap_locked = False
        if self.roots.pageheap_lock is not None:
            v = self.r.try_u64(self.roots.pageheap_lock)
            if v is not None and v & 0xFFFFFFFF:
                self.pageheap_locked = True
                self.notes.append("tcmalloc's page heap lock is held: a thread was inside the allocator when the "
                                  "program stopped, so span metadata may be mid-update")

    # --- central free lists --------------------------------------------------------------------
    def _central(self):
        lay, sz = self.lay, self.sizes
        ncl = sz.num_classes
        try:
            raw = self.r.read(self.roots.central_cache, ncl * lay.cf_stride)
        except ReadError:
            self.notes.append(f"tcmalloc's central cache at {self.roots.central_cache:#x} is unreadable: central and "
                              "transfer-cache free lists are not walked")
            raw = None
        self.central_locked = set()
        self.central_raw = raw
        # a small span may be on no ring (corrupt) and is then walked after the ring's spans
        by_class: Dict[int, List[int]] = {}
        for row, cl in enumerate(self.small_class.tolist()):
            by_class.setdefault(cl, []).append(row)
        for cl in range(1, ncl):
            base = cl * lay.cf_stride
            ring_rows: List[int] = []
            if raw is not None:
                lock = struct.unpack_from("<I", raw, base + lay.cf_lock)[0]
                if lock:
                    self.central_locked.add(cl)
                got = struct.unpack_from("<Q", raw, base + lay.cf_size_class)[0]
                if got != cl:
                    self.find("metadata-corruption", "critical", None,
                              f"central free list {cl} says it is for size class {got}",
                              [f"CentralFreeList at {self.roots.central_cache + base:#x}"], "central")
                head = self.roots.central_cache + base
                ring_rows = self._ring(cl, head + lay.cf_nonempty, raw, base + lay.cf_nonempty, True) + \
                    self._ring(cl, head + lay.cf_empty, raw, base + lay.cf_empty, False)
            self._span_lists(cl, ring_rows, by_class.get(cl, []))
            if raw is not None:
                self._transfer(cl, raw, base)

    def _span_lists(self, cl: int, ring_rows: List[int], rows: List[int]):
        seen = set(ring_rows)
        order = ring_rows + [r for r in rows if r not in seen]
        if not order:
            return
        lid = self.list_id(("central", cl), lambda: FreeList("central free list", cl,
                                                               f"central free list {self.class_name(cl)}", arena=0))
        offset = 0
        heads, head_idx, nobjs_l, expect_l = self.span_heads, self.span_head_idx, self.nobjs_l, self.span_expect
        walk = self.chaser.walk
        for row in order:
            nobjs = nobjs_l[row]
            w = Walk(lid, FREE, cl, nobjs, expect=expect_l[row], offset=offset, span=row)
            if heads[row]:
                walk(w, heads[row], allow_interior=False, head_idx=head_idx[row])
            self.walks.append(w)
            self.span_walk[row] = w
            offset += len(w.seq)

    def _span_heads(self):
        """Per small span: its free-list head, the head's object index, capacity, expected free."""
        sp, o = self.spans, self.objs
        heads = sp.objects[self.small]
        idx = np.searchsorted(o.addr, heads) if o.n else np.zeros(len(heads), np.int64)
        idxc = np.minimum(idx, max(o.n - 1, 0))
        hit = (o.addr[idxc] == heads) if o.n else np.zeros(len(heads), bool)
        self.span_heads = heads.tolist()
        self.span_head_idx = np.where(hit, idxc, -2).tolist()
        self.nobjs_l = self.small_nobjs.tolist()
        self.span_expect = (self.small_nobjs - sp.refcount[self.small]).tolist()

    def _foreign_span_entries(self):
        """A span's free list may only hold objects of that span: cut each list at its first
        entry from elsewhere (one vectorised test over all span walks)."""
        walks = [w for w in self.walks if w.span >= 0 and w.seq]
        if not walks:
            return
        lens = [len(w.seq) for w in walks]
        objs = np.fromiter((i for w in walks for i in w.seq), dtype=np.int64, count=sum(lens))
        own = np.repeat(np.array([w.span for w in walks], dtype=np.int64), lens)
        bad = np.nonzero(self.objs.span_of[objs] != own)[0]
        if not len(bad):
            return
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        cut = {}
        for e in bad.tolist():
            k = int(np.searchsorted(starts, e, side="right")) - 1
            cut.setdefault(k, e - int(starts[k]))
        for k, pos in cut.items():
            w = walks[k]
            w.end, w.end_addr = "bad", int(self.objs.addr[w.seq[pos]])
            del w.seq[pos:]

    def _transfer(self, cl: int, raw: bytes, base: int):
        lay = self.lay
        used = struct.unpack_from("<i", raw, base + lay.cf_used_slots)[0]
        if used == 0:
            return
        where = f"transfer cache of {self.class_name(cl)}"
        if not 0 < used <= lay.cf_nslots:
            self.find("metadata-corruption", "critical", None,
                      f"{where}: used_slots_ = {used} is outside 0..{lay.cf_nslots}; its slots are not walked",
                      [], "transfer")
            return
        batch = self.sizes.to_move[cl]
        lid = self.list_id(("transfer", cl), lambda: FreeList("transfer cache", cl,
                                                                f"transfer cache {self.class_name(cl)}", arena=0))
        offset = 0
        for slot in range(used - 1, -1, -1):         # the last used slot is handed out first
            h, tail = struct.unpack_from("<QQ", raw, base + lay.cf_slots + 16 * slot)
            w = Walk(lid, FREE, cl, batch, expect=batch, offset=offset, tail=tail, slot=slot)
            self.chaser.walk(w, h)
            self.walks.append(w)
            offset += w.length

    def _ring(self, cl: int, head: int, raw: bytes, off: int, nonempty: bool) -> List[int]:
        """Rows (in the small-span table) of the spans on one of a central list's span rings
        (a doubly linked ring through Span.next/prev, headed by a dummy Span in the list)."""
        lay, sp = self.lay, self.spans
        nxt = struct.unpack_from("<Q", raw, off + lay.span_next)[0]
        rows: List[int] = []
        prev = head
        bound = len(sp) + 1
        small_of, small_class, on_ring = self.small_of, self.small_class_l, self.on_ring
        while nxt != head and len(rows) < bound:
            row_all = sp.row_by_addr.get(nxt, -1)
            small_row = small_of[row_all] if row_all >= 0 else -1
            if small_row < 0 or small_class[small_row] != cl or sp.prev_l[row_all] != prev \
                    or nonempty != bool(sp.objects_l[row_all]) or small_row in on_ring:
                if not self._ring_problem(cl, nonempty, nxt, prev, row_all, small_row):
                    break
            on_ring.add(small_row)
            rows.append(small_row)
            prev, nxt = nxt, sp.next_l[row_all]
        return rows

    def _ring_problem(self, cl, nonempty, nxt, prev, row_all, small_row) -> bool:
        """Report what is wrong with a ring element; True if the walk may go on past it."""
        lay, sp = self.lay, self.spans
        name = f"central free list {self.class_name(cl)} {'nonempty_' if nonempty else 'empty_'} ring"
        if small_row < 0:
            why = ("is not a span record" if row_all < 0 else
                   f"is a span of {'size class ' + str(int(sp.sizeclass[row_all])) if sp.sizeclass[row_all] else 'no size class'}"
                   f" ({('in use', 'free', 'returned')[min(int(sp.location[row_all]), 2)]})")
            self.find("metadata-corruption", "critical", None, f"{name}: link {nxt:#x} {why}; the rest of the ring "
                      "is not walked", [f"after {prev:#x}"], "central-ring")
            return False
        at = int(sp.start[row_all]) << lay.page_shift
        if small_row in self.on_ring:
            self.find("metadata-corruption", "critical", at, f"{name}: span {nxt:#x} is on a central ring twice",
                      [], "central-ring")
            return False
        if self.small_class_l[small_row] != cl:
            self.find("metadata-corruption", "critical", at,
                      f"{name} holds a span of size class {self.small_class_l[small_row]}", [f"span record {nxt:#x}"],
                      "central-ring")
        if sp.prev_l[row_all] != prev:
            self.find("metadata-corruption", "warning", at,
                      f"{name}: span {nxt:#x} has prev {sp.prev_l[row_all]:#x}, expected {prev:#x}", [], "central-ring")
        if nonempty != bool(sp.objects_l[row_all]):
            self.find("metadata-corruption", "warning", at,
                      f"{name} holds span {nxt:#x} whose free list is {'empty' if nonempty else 'not empty'}",
                      [], "central-ring")
        return True

    # --- thread caches -----------------------------------------------------------------------
    def _thread_caches(self):
        lay = self.lay
        by_fs = {t.fs_base: t for t in self.threads if t.fs_base}
        by_tid = {t.tid: t for t in self.threads}
        addr = self.r.try_u64(self.roots.thread_heaps)
        seen = set()
        self.cache_bytes_claimed = 0
        matched_by = set()
        while addr and len(seen) < MAX_CACHES:
            if addr in seen or addr & 7:
                self.find("metadata-corruption", "critical", None,
                          f"thread cache list (ThreadCache::thread_heaps_) {'loops back to' if addr in seen else 'has a bad link'} "
                          f"{addr:#x}; later caches are not walked", [], "thread-caches")
                break
            seen.add(addr)
            try:
                raw = self.r.read(addr, lay.tc_size)
            except ReadError:
                self.find("metadata-corruption", "critical", None,
                          f"thread cache at {addr:#x} (on ThreadCache::thread_heaps_) is unreadable", [], "thread-caches")
                break
            tid_ = struct.unpack_from("<Q", raw, lay.tc_tid)[0]
            t = by_fs.get(tid_)
            if t is not None:
                matched_by.add("ThreadCache.tid_ (pthread_self) = the thread's fs_base")
            else:
                kt = self.r.try_u64(tid_ + PTHREAD_TID) if tid_ else None
                t = by_tid.get(kt & 0xFFFFFFFF) if kt is not None else None
                if t is not None:
                    matched_by.add(f"the kernel tid in glibc's struct pthread at ThreadCache.tid_ + {PTHREAD_TID:#x}")
            if t is not None:
                self.thread_cache[t.num] = addr
                owner_name, tnum, ttid = f"thread {t.num}", t.num, t.tid
            else:
                owner_name, tnum, ttid = f"pthread {tid_:#x} (not a thread the debugger lists)", None, None
            self.cache_bytes_claimed += struct.unpack_from("<i", raw, lay.tc_bytes)[0]
            for cl in range(1, self.sizes.num_classes):
                off = lay.tc_list + cl * lay.fl_size
                head, length = struct.unpack_from("<QI", raw, off)
                if not head and not length:
                    continue
                name = f"thread cache {self.class_name(cl)} of {owner_name}"
                lid = self.list_id(("thread", addr, cl),
                                   lambda: FreeList("thread cache", cl, name, arena=0, thread=tnum, tid=ttid))
                # tcmalloc pops until the link is NULL (length_ only decides when to release), so the
                # chain is walked to its end; a chain longer than length_ is judged afterwards
                w = Walk(lid, CACHED, cl, self.chaser.budget(length), expect=length)
                self.chaser.walk(w, head)
                self.walks.append(w)
            addr = struct.unpack_from("<Q", raw, lay.tc_next)[0]
        self._cache_count(len(seen))
        self.roots.how["threads"] = "; ".join(sorted(matched_by)) or "no thread cache matched a thread"
        if not self.thread_cache and seen:
            self.notes.append("no thread cache could be matched to a thread (the debugger gives no thread pointers, "
                              "and glibc's struct pthread could not be read): cached objects name no thread")

    def _cache_count(self, walked: int):
        """tcmalloc counts its thread caches (ThreadCache::thread_heap_count_): a list that yields
        fewer was cut (a smashed head or next_), and the objects of the lost caches show as allocated."""
        if self.roots.thread_heap_count is None:
            return
        raw = self.r.try_u64(self.roots.thread_heap_count)
        count = raw & 0xFFFFFFFF if raw is not None else None
        if count is not None and count != walked:
            self.find("metadata-corruption", "critical" if walked < count else "warning", None,
                      f"tcmalloc counts {count} thread caches (ThreadCache::thread_heap_count_) but the list "
                      f"ThreadCache::thread_heaps_ yields {walked}",
                      ["objects cached by the caches not reached show as allocated" if walked < count else
                       "the list holds caches tcmalloc does not count"], "thread-caches")

    # --- judgement -----------------------------------------------------------------------------
    def _judge(self):
        o, walks = self.objs, self.walks
        state, where, recency, dups, entries = assign(walks, o.n)
        self.state, self.where, self.recency = state, where, recency
        meets = meeting_points(walks, dups)
        for obj, occ in dups.items():
            w, p = owner(walks, occ)
            state[obj], where[obj], recency[obj] = walks[w].state, walks[w].lid, walks[w].offset + p
        self.double_freed: Dict[int, Finding] = {}
        explained: Dict[int, int] = {}             # walk -> the double-freed object that explains it
        for obj, occ in meets.items():
            for w, _ in occ:
                explained.setdefault(w, obj)
            self._double_free(obj, [(walks[w], p) for w, p in occ], None)
        for wi, w in enumerate(walks):
            if w.end == "loop":
                explained.setdefault(wi, w.loop_obj)
                first = w.seq.index(w.loop_obj)
                self._double_free(w.loop_obj, [(w, first)], (w, len(w.seq)))
        for w in walks:
            if w.interior:
                self._interior(w)
        self._wrong_class(*entries)
        self.unread_walks = 0
        for wi, w in enumerate(walks):
            self._length(wi, w, explained)
        if self.unread_walks > 1:
            self.notes.append(f"{self.unread_walks} free lists stopped at memory that is not in the snapshot")

    def consequence(self, obj: int, text: str) -> bool:
        """Add `text` to the double-free finding of obj (a symptom it explains); False if none."""
        f = self.double_freed.get(obj)
        if f is None:
            return False
        if text not in f.evidence:
            f.evidence.insert(len(f.evidence) - 1, text)
        return True

    def _where(self, w: Walk, pos: int) -> str:
        return f"in {self.lists[w.lid].name} at position {w.offset + pos}"

    def _double_free(self, obj: int, occ, loop):
        o = self.objs
        a = int(o.addr[obj])
        places = [self._where(w, p) for w, p in occ]
        if loop is not None:
            w, p = loop
            msg = (f"object {a:#x} ({int(o.size[obj])} B) was freed twice: {self.lists[w.lid].name} "
                   f"reaches it at positions {w.offset + occ[0][1]} and {w.offset + p} (the list loops)")
            places.append(f"{self._where(w, p)} again: the list loops back here")
        else:
            msg = (f"object {a:#x} ({int(o.size[obj])} B) was freed twice: it is "
                   + " and ".join(f"in {self.lists[w.lid].name}" for w, _ in occ))
        ev = places + ["tcmalloc does not detect double frees: the next allocations of this size class "
                       "hand this memory out twice"]
        f = self.double_freed.get(obj)              # one finding per object, evidence merged
        if f is not None:
            f.evidence[:0] = [e for e in places if e not in f.evidence]
            return
        self.find("double-free", "critical", a, msg, ev, "double-free", self.obj_chunk(obj))
        if self.findings and self.findings[-1].address == a and self.findings[-1].check == "double-free":
            self.double_freed[obj] = self.findings[-1]

    def _interior(self, w: Walk):
        """Entries inside an object: free() was given p+off."""
        o = self.objs
        fl = self.lists[w.lid]
        for pos, addr, j in w.interior:
            start = int(o.addr[j])
            jcl = int(self.small_class[int(o.span_of[j])])
            self.find("invalid-free", "critical", addr,
                      f"{addr:#x} is {addr - start} bytes into the {int(o.size[j])}-byte object {start:#x}, yet it is "
                      f"{self._where(w, pos)}: free() was given a pointer that malloc never returned",
                      [f"{fl.name}, position {w.offset + pos}",
                       f"object {start:#x} is {self.class_name(jcl)}; tcmalloc's free() takes interior pointers unchecked",
                       f"the next malloc of {self.sizes.size[w.cls]} B from this list returns {addr:#x}, overlapping "
                       f"the object"], "invalid-free", self.obj_chunk(j))

    def _wrong_class(self, objs: np.ndarray, wk: np.ndarray, pos: np.ndarray):
        """Objects on a list of another size class (one vectorised test over every entry)."""
        if not len(objs):
            return
        o, walks = self.objs, self.walks
        cls = self.small_class[o.span_of[objs]]
        want = np.array([w.cls for w in walks], dtype=np.int64)[wk]
        for e in np.nonzero(cls != want)[0][:MAX_PER_CHECK].tolist():
            w, k, j = walks[int(wk[e])], int(pos[e]), int(objs[e])
            a, c = int(o.addr[j]), int(cls[e])
            self.find("invalid-free", "critical", a,
                      f"object {a:#x} of {self.class_name(c)} is {self._where(w, k)}, a list of "
                      f"{self.class_name(w.cls)}: it was freed with the wrong size (sized delete) or the list is corrupt",
                      [f"{self.lists[w.lid].name}, position {w.offset + k}",
                       f"its span holds {self.class_name(c)} objects"], "wrong-class", self.obj_chunk(j))

    def _length(self, wi: int, w: Walk, explained: set):
        """The walk's end against the allocator's own count, and links to nowhere."""
        fl = self.lists[w.lid]
        name = fl.name if w.span < 0 else f"free list of span {int(self.spans.addr[int(self.small[w.span])]):#x} " \
                                              f"({self.class_name(w.cls)})"
        if w.tail is not None:
            name = f"{fl.name} slot {w.slot}"
        if w.end == "unread":
            self.unread_walks += 1
            if self.unread_walks == 1:
                self.notes.append(f"{name}: the walk stopped at {w.end_addr:#x}, which is not in the snapshot "
                                  "(and so may other lists: see the count below)")
            return
        last = int(self.objs.addr[w.seq[-1]]) if w.seq else None
        if w.end == "bad":
            if not (w.seq and self.consequence(w.seq[-1], f"{name}: the link after it now leads to {w.end_addr:#x}, "
                                                          "outside the list (the second free rewrote it)")):
                self._bad_link(w, name)
            return
        if wi in explained:
            if w.span < 0 and w.tail is None and w.length != w.expect:
                self.consequence(explained[wi], f"{name}: length_ says {w.expect}, the chain holds {w.length}")
            return
        if w.tail is not None:
            if w.end == "limit" and w.end_addr or w.end == "null" and w.length != w.expect or \
                    (last is not None and last != w.tail):
                self.find("metadata-corruption", "critical", last,
                          f"{name}: the chain does not match its batch (walked {w.length} of {w.expect} objects, "
                          f"ends at {last or 0:#x}, recorded tail {w.tail:#x})", [], "transfer")
            return
        if w.span >= 0:
            return                                     # span lists are judged with the span's refcount
        if w.end == "limit" and w.end_addr:
            self.find("metadata-corruption", "critical", last,
                      f"{name}: length_ says {w.expect} but the list continues past {w.length} entries "
                      f"(next {w.end_addr:#x})", ["ThreadCache::FreeList.length_ against the walked list"],
                      "thread-cache-length")
        elif w.end == "null" and w.length != w.expect:
            self.find("metadata-corruption", "critical", last,
                      f"{name}: length_ says {w.expect} but the list ends after {w.length} entries",
                      ["ThreadCache::FreeList.length_ against the walked list: tcmalloc will pop a NULL"],
                      "thread-cache-length")

    def _bad_link(self, w: Walk, name: str):
        a = w.end_addr
        o, sp = self.objs, self.spans
        prev = int(o.addr[w.seq[-1]]) if w.seq else None
        row = sp.find_page(a >> self.lay.page_shift)
        if row < 0:
            where = "outside tcmalloc's heap (no span covers it)"
        elif int(sp.location[row]) != IN_USE:
            where = f"inside a free span ({int(sp.start[row]) << self.lay.page_shift:#x}, {int(sp.length[row])} pages)"
        elif int(sp.sizeclass[row]) == 0:
            where = f"inside a large allocation ({int(sp.start[row]) << self.lay.page_shift:#x})"
        elif w.span >= 0:
            where = "an object of another span"
        else:
            where = "not an object start"
        ev = [f"{name}: the walk stopped after {w.length} entries; the rest of the list is lost (shown as allocated)"]
        if prev is not None:
            ev.append(f"the link is the first word of {prev:#x}: a write after free there is the likely cause")
        else:
            ev.append("the list head itself holds this value")
        self.find("metadata-corruption", "critical", prev, f"{name}: a link points to {a:#x}, {where}", ev,
                  "free-list-link", self.obj_chunk(w.seq[-1]) if w.seq else None)

    # --- the index -----------------------------------------------------------------------------
    def _index(self) -> HeapIndex:
        o, sp, ps = self.objs, self.spans, self.lay.page_shift
        large = np.nonzero((sp.location == IN_USE) & (sp.sizeclass == 0) & self.usable)[0]
        free = np.nonzero((sp.location != IN_USE) & self.usable)[0]
        fl_normal = self.list_id(("pageheap", 1), lambda: FreeList("page heap", 1, "page heap free spans",
                                                                   arena=0, lifo=False))
        fl_returned = self.list_id(("pageheap", 2), lambda: FreeList("page heap", 2,
                                                                     "page heap spans returned to the OS",
                                                                     arena=0, lifo=False))
        free_where = np.where(sp.location[free] == ON_RETURNED, fl_returned, fl_normal).astype(np.int32)
        # objects in memory the snapshot lacks are left out (info alloc says "unknown" there)
        # unless a list that was read names them
        known = o.readable | (self.where >= 0)
        start = np.concatenate([o.addr[known], sp.start[large] << np.uint64(ps), sp.start[free] << np.uint64(ps)])
        size = np.concatenate([o.size[known], sp.length[large] << np.uint64(ps), sp.length[free] << np.uint64(ps)])
        state = np.concatenate([self.state[known], np.full(len(large), ALLOCATED, np.uint8),
                                np.full(len(free), FREE, np.uint8)])
        where = np.concatenate([self.where[known], np.full(len(large), -1, np.int32), free_where])
        recency = np.concatenate([self.recency[known], np.full(len(large), -1, np.int32),
                                  self.free_span_recency(free).astype(np.int32)])
        arena = np.zeros(len(start), dtype=np.int16)
        return HeapIndex(start, size, state, arena, where, recency, user_offset=0, usable_delta=0)

    def _segments(self) -> List[tuple]:
        sp, ps = self.spans, self.lay.page_shift
        out: List[tuple] = []
        for s, n in zip(sp.start.tolist(), sp.length.tolist()):
            lo, hi = s << ps, (s + n) << ps
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out
