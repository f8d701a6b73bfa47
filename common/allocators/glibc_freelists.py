"""glibc freelists: each thread's tcache, fastbins, unsorted/small/large bins, followed the way
malloc follows them (safe-linking decoded), with glibc's own link checks; then every entry is
validated against the walked chunks, chunks are classified, and a chunk in two lists (or a
list looping back to it) is a double free.

A mixin of the glibc walker (common.allocators.glibc._Walker): it reads the walker's chunk
table (self.tab, self.S...) and reports through its corrupt()/find().
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..checks import freelists
from ..heapindex import CACHED, FREE, TOP, Arena, FreeList
from ..target import ReadError
from . import glibc_layout as L
from .glibc_shared import _KIND_CODE, _M64, _U12, _U16, MAX_PER_CHECK


class FreelistWalk:
    # --- freelists -----------------------------------------------------------------------------
    def _new_list(self, **kw) -> int:
        self.lists.append(FreeList(**kw))
        return len(self.lists) - 1

    # How each list kind links chunks: chunk address -> next chunk address, given the raw first
    # word (fd / tcache next). Safe-linking stores next as (address of the field >> 12) ^ ptr.
    def _link(self, kind: str):
        sl = self.lay.safe_linking
        if kind == "tcache":          # the link holds the next *user* pointer (chunk + 16)
            if sl:
                return (lambda c, raw: ((((c + 16) >> 12) ^ raw) - 16) & _M64,
                        lambda S, W: ((S + _U16) >> _U12 ^ W) - _U16)
            return (lambda c, raw: (raw - 16) & _M64, lambda S, W: W - _U16)
        if kind == "fastbin" and sl:
            return (lambda c, raw: ((c + 16) >> 12) ^ raw, lambda S, W: (S + _U16) >> _U12 ^ W)
        return (lambda c, raw: raw, lambda S, W: W)

    def _follow(self, lid: int, first: int, kind: str, end: int, bound: int):
        """Follow one list from chunk address `first` until the chunk address `end`.
        Returns (chunk addresses in order, outcome, detail); outcome is 'ok', 'cycle' (detail:
        the repeated chunk), 'bad' (detail: the offending link target), or 'bound'."""
        scalar, vector = self._link(kind)
        nxt = self.tab.next_index(kind, vector)
        S, W2 = self.S, self.S2
        order: List[int] = []
        seen = set()
        c = first
        while True:
            if c == end:
                return order, "ok", None
            if c & 15 or not c:
                return order, "bad", c
            i = self.tab.idx(c)
            if i >= 0:
                app = order.append
                last = i
                while i >= 0 and len(order) < bound:        # the hot path: walked chunks only
                    if i in seen:
                        return order, "cycle", int(S[i])
                    seen.add(i)
                    app(i)
                    last = i
                    i = nxt[last]
                if i >= 0:
                    return order, "bound", None
                c = scalar(int(S[last]), int(W2[last]))
                continue
            if c in seen or len(order) >= bound:             # off the walked table: read it
                return order, ("cycle" if c in seen else "bound"), c
            if self._arena_of_addr(c) is None:               # outside every heap: a smashed link
                return order, "bad", c
            try:
                raw = self.r.u64(c + 16)
            except ReadError:
                return order, "bad", c
            seen.add(c)
            order.append(~len(self._off))
            self._off.append(c)
            c = scalar(c, raw)

    def _addrs(self, order: List[int]) -> np.ndarray:
        o = np.array(order, dtype=np.int64)
        out = self.S[np.maximum(o, 0)] if self.tab.n else np.zeros(len(o), dtype=np.uint64)
        neg = o < 0
        if neg.any():
            out = out.copy()
            out[neg] = np.array([self._off[~k] for k in o[neg]], dtype=np.uint64)
        return out

    def _record(self, lid: int, addrs: np.ndarray):
        self.m_addr.append(addrs)
        self.m_lid.append(np.full(len(addrs), lid, dtype=np.int32))
        self.m_pos.append(np.arange(len(addrs), dtype=np.int32))

    def _lists(self):
        self._off: List[int] = []
        self.m_addr, self.m_lid, self.m_pos = [], [], []
        self._tcaches()
        for a, raw in zip(self.arenas, self.arena_raw):
            self._fastbins(a, raw)
            self._bins(a, raw)

    def _tcaches(self):
        lay = self.lay
        cs = lay.tcache_count_size
        cached = []
        for t in self.threads:
            tc = self.tcache_of.get(t.num)
            if not tc:
                continue
            try:
                raw = self.r.read(tc, lay.tcache_struct_size)
            except ReadError:
                continue
            counts = np.frombuffer(raw, dtype="<u2" if cs == 2 else "u1", count=L.TCACHE_MAX_BINS)
            heads = np.frombuffer(raw, dtype="<u8", count=L.TCACHE_MAX_BINS, offset=L.TCACHE_MAX_BINS * cs)
            for b in np.nonzero((counts != 0) | (heads != 0))[0]:
                b, head, count = int(b), int(heads[b]), int(counts[b])
                csize = L.MINSIZE + b * L.MALLOC_ALIGNMENT
                name = f"tcache[{b}] ({csize:#x}) of thread {t.num}"
                lid = self._new_list(kind="tcache", index=b, name=name,
                                     arena=self.thread_arena.get(t.num), thread=t.num, tid=t.tid)
                bound = max(count, self.tcache_count or 7, 7) * 2 + 16
                order, outcome, detail = self._follow(lid, (head - 16) & _M64, "tcache", _M64 - 15, bound)
                addrs = self._addrs(order)
                self._record(lid, addrs)
                last = int(addrs[-1]) if len(addrs) else None
                if outcome == "bad":
                    self.corrupt(last, f"{name}: link to invalid address {(detail + 16) & _M64:#x} after "
                                 f"{len(addrs)} entries", [f"{name}, position {len(addrs)}",
                                 f"{(detail + 16) & _M64:#x} is {self._where(detail + 16)}",
                                 "glibc aborts with 'malloc(): unaligned tcache chunk detected'"],
                                 "tcache-link", state="cached")
                elif outcome == "cycle":
                    self._record(lid, np.array([detail], dtype=np.uint64))   # the repeat: a duplicate
                elif outcome == "bound":
                    self.corrupt(None, f"{name}: chain longer than {bound} entries (count {count})", [],
                                 "tcache-count")
                elif len(addrs) != count:
                    self.corrupt(None, f"{name}: counts[] says {count} entries but the chain has {len(addrs)}",
                                 ["glibc trusts counts[]: it would hand out a wild pointer or lose entries"],
                                 "tcache-count")
                cached.append(addrs)
        if not cached or not lay.random_tcache_key:
            return
        addrs = np.concatenate(cached)
        idx = self.tab.lookup(addrs)
        keys = np.where(idx >= 0, self.S3[np.maximum(idx, 0)], np.uint64(0)) if self.tab.n else addrs * 0
        key = self.roots.tcache_key
        if key is None:
            vals, cnt = np.unique(keys[idx >= 0], return_counts=True)
            if len(vals) == 0 or (cnt.max() < 2 and len(vals) > 1):
                return
            key = int(vals[np.argmax(cnt)])
        for j in self.capped("tcache-key", np.nonzero((idx >= 0) & (keys != np.uint64(key)))[0]):
            chunk, k = int(addrs[j]), int(keys[j])
            self.corrupt(chunk, f"tcache entry {chunk + 16:#x} has its key overwritten ({k:#x})",
                         [f"every tcache entry's key field ({chunk + 24:#x}) holds tcache_key {key:#x}",
                          "a write through a pointer after free() is the likely cause",
                          "glibc's tcache double-free check relies on this key"],
                         "tcache-key", severity="warning", state="cached")

    def _fastbins(self, a: Arena, raw: bytes):
        heads = np.frombuffer(raw, dtype="<u8", count=L.NFASTBINS, offset=self.lay.ms_fastbins)
        for b in np.nonzero(heads)[0]:
            b = int(b)
            csize = (b + 2) << 4
            name = f"fastbin[{b}] ({csize:#x}) of {a.name}"
            lid = self._new_list(kind="fastbin", index=b, name=name, arena=a.number)
            order, outcome, detail = self._follow(lid, int(heads[b]), "fastbin", 0, self.tab.n + 1)
            addrs = self._addrs(order)
            self._record(lid, addrs)
            if outcome == "bad":
                last = int(addrs[-1]) if len(addrs) else None
                self.corrupt(last, f"{name}: link to invalid address {detail:#x} after {len(addrs)} entries",
                             [f"{name}, position {len(addrs)}", f"{detail:#x} is {self._where(detail)}",
                              "glibc aborts with 'malloc(): unaligned fastbin chunk detected'"],
                             "fastbin-link", state="free")
            elif outcome == "cycle":
                self._record(lid, np.array([detail], dtype=np.uint64))

    def _bins(self, a: Arena, raw: bytes):
        lay = self.lay
        bins = np.frombuffer(raw, dtype="<u8", count=254, offset=lay.ms_bins)
        base = a.address + lay.ms_bins - 16
        heads = base + np.arange(1, L.NBINS, dtype=np.uint64) * np.uint64(16) - np.uint64(16)
        fds, bks = bins[0::2], bins[1::2]
        for k in np.nonzero((fds != heads) | (bks != heads))[0]:
            i = int(k) + 1
            b, fd0, bk0 = int(heads[k]), int(fds[k]), int(bks[k])
            kind = "unsorted" if i == 1 else "smallbin" if i < L.NSMALLBINS else "largebin"
            csize = i << 4 if kind == "smallbin" else None
            nm = L.bin_name(i) + (f" ({csize:#x})" if csize else "") + f" of {a.name}"
            lid = self._new_list(kind=kind, index=i, name=nm, arena=a.number)
            if (fd0 == b) != (bk0 == b):
                self.corrupt(None, f"{nm}: head fd {fd0:#x} / bk {bk0:#x} disagree about emptiness",
                             ["glibc aborts with 'corrupted double-linked list'"], "bin-link")
            order, outcome, detail = self._follow(lid, fd0, "bin", b, self.tab.n + 1)
            addrs = self._addrs(order)
            self._record(lid, addrs)
            n = len(addrs)
            last = int(addrs[-1]) if n else None
            if outcome == "bad":
                self.corrupt(last, f"{nm}: fd of {'chunk %#x' % last if n else 'the bin head'} is {detail:#x}, "
                             "not a chunk", [f"{nm}, position {n}", f"{detail:#x} is {self._where(detail)}",
                                             "glibc aborts with 'malloc(): smallbin "
                             "double linked list corrupted' or 'unsorted double linked list corrupted'"],
                             "bin-link", state="free")
            elif outcome == "cycle":
                self._record(lid, np.array([detail], dtype=np.uint64))
                self.corrupt(detail, f"{nm}: the list loops back to {detail:#x} without returning to the bin head",
                             [f"{nm}, position {n}"], "bin-link", state="free")
            elif outcome == "ok" and n and bk0 != last:
                self.corrupt(None, f"{nm}: bin's bk {bk0:#x} is not its last chunk {last:#x}",
                             ["glibc takes chunks from the bk end"], "bin-link")
            if n:
                self._check_backlinks(nm, b, addrs, kind)

    def _check_backlinks(self, nm, b, addrs, kind):
        """Every chunk's bk must point at the one before it (the head for the first)."""
        idx = self.tab.lookup(addrs)
        ok = idx >= 0
        bks = self.S3[np.maximum(idx, 0)] if self.tab.n else np.zeros(len(addrs), np.uint64)
        prev = np.concatenate([np.array([b], dtype=np.uint64), addrs[:-1]])
        for j in self.capped("bin-link", np.nonzero(ok & (bks != prev))[0]):
            p = int(addrs[j])
            self.corrupt(p, f"{nm}: corrupted double-linked list: chunk {p:#x} has bk {int(bks[j]):#x}, "
                         f"expected {int(prev[j]):#x}", [f"{nm}, position {int(j)}", "fd->bk must point back "
                         "(glibc: 'corrupted double-linked list')"], "bin-link", state="free")
        if kind == "largebin":
            self._check_nextsize(nm, addrs)
        if kind == "largebin" and ok.all() and len(addrs) > 1:
            sz = self.S1[idx] & np.uint64(~L.SIZE_BITS & _M64)
            for j in self.capped("bin-order", np.nonzero(sz[1:] > sz[:-1])[0]):
                p = int(addrs[j + 1])
                self.corrupt(p, f"{nm}: chunk {p:#x} (size {int(sz[j + 1]):#x}) breaks the bin's descending "
                             "size order", [f"{nm}, position {int(j) + 1}", "glibc keeps large bins sorted"],
                             "bin-order", severity="warning", state="free")

    def _check_nextsize(self, nm, addrs):
        """The size-skip list of a large bin: the first chunk of each size links to the next
        size's first (fd_nextsize) and back (bk_nextsize); glibc: 'largebin double linked list
        corrupted (nextsize)'."""
        firsts = []
        kept = self.nextsize                                   # read during the walk (slow links)
        for p in addrs.tolist():
            try:
                fdn, bkn = kept.get(p) or self.r.words(p + 32, 2)
            except ReadError:
                return
            if fdn or bkn:
                firsts.append((p, fdn, bkn))
        heads = {p for p, _, _ in firsts}
        for p, fdn, bkn in firsts[:MAX_PER_CHECK]:
            back = (kept[fdn][1] if fdn in kept else self.r.try_u64(fdn + 40)) if fdn in heads else None
            if fdn not in heads or back != p:
                self.corrupt(p, f"{nm}: chunk {p:#x}'s fd_nextsize {fdn:#x} " + (
                    "is not the first chunk of another size in this bin" if fdn not in heads else
                    f"points back (bk_nextsize) to {back:#x}, not to it"),
                    ["glibc: 'malloc(): largebin double linked list corrupted (nextsize)'"], "bin-nextsize",
                    state="free")

    def _validate_members(self):
        """Each freelist entry must be a walked chunk of the right size class and arena."""
        if self.m_addr:
            M = np.concatenate(self.m_addr)
            lid = np.concatenate(self.m_lid)
            pos = np.concatenate(self.m_pos)
        else:
            M, lid, pos = np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32)
        idx = self.tab.lookup(M)
        for j in self.capped("freelist-entry", np.nonzero(idx < 0)[0]):
            self._off_table_entry(int(M[j]), self.lists[int(lid[j])], int(pos[j]))
        good = idx >= 0
        tops = self.tab.lookup(np.array(sorted(self.top_addrs), dtype=np.uint64))
        for j in np.nonzero(good & np.isin(idx, tops))[0]:
            fl = self.lists[int(lid[j])]
            self.corrupt(int(M[j]), f"the top chunk {int(M[j]):#x} is in {fl.name}", [fl.name], "freelist-entry")
        kinds = np.array([_KIND_CODE[fl.kind] for fl in self.lists] or [0], dtype=np.int8)
        lindex = np.array([fl.index for fl in self.lists] or [0], dtype=np.int64)
        larena = np.array([fl.arena if fl.arena is not None else -1 for fl in self.lists] or [0], dtype=np.int64)
        gi, gl = idx[good], lid[good]
        cs = (self.S1[gi] & np.uint64(~L.SIZE_BITS & _M64)).astype(np.int64)
        k = kinds[gl]
        exp = np.where(k == 0, (cs - L.MINSIZE + 15) // 16,
                       np.where(k == 1, (cs >> 4) - 2, np.where(k == 2, 1, L.bin_index_vec(cs))))
        ok_unsorted = (cs >= L.MINSIZE)
        wrong = np.where(k == 2, ~ok_unsorted, exp != lindex[gl])
        for j in self.capped("bin-size", np.nonzero(wrong)[0]):
            fl, c, s = self.lists[int(gl[j])], int(self.S[gi[j]]), int(cs[j])
            want = {"tcache": f"tcache[{L.tcache_index(s)}]", "fastbin": f"fastbin[{L.fastbin_index(s)}]"
                    if s <= 0xB0 else "no fastbin"}.get(fl.kind, L.bin_name(L.bin_index(s)))
            self.corrupt(c, f"chunk {c:#x} in {fl.name} has size {s:#x}, which belongs in {want}",
                         [f"{fl.name}, position {int(pos[good][j])}", "a size field was overwritten after free, "
                          "or the link into this list was" + (" (glibc: 'malloc(): memory corruption (fast)')"
                                                              if fl.kind == "fastbin" else "")],
                         "bin-size", state="cached" if fl.kind == "tcache" else "free")
        wrong_arena = (k != 0) & (larena[gl] >= 0) & (self.SA[gi].astype(np.int64) != larena[gl])
        for j in self.capped("bin-arena", np.nonzero(wrong_arena)[0]):
            fl, c = self.lists[int(gl[j])], int(self.S[gi[j]])
            self.corrupt(c, f"chunk {c:#x} of {self.arenas[int(self.SA[gi[j]])].name} is in {fl.name}",
                         [f"{fl.name}, position {int(pos[good][j])}", "a bin holds only its own arena's chunks"],
                         "bin-arena", state="free")
        self.M_idx, self.M_lid, self.M_pos = gi, gl, pos[good]

    def _off_table_entry(self, chunk: int, fl: FreeList, pos: int):
        where = f"{fl.name}, position {pos}"
        j = self.tab.containing(chunk, self._csize)
        if j >= 0:
            host = int(self.S[j])
            self.corrupt(host, f"freelist entry {chunk:#x} lies inside chunk {host:#x} (size {self._csize(j):#x}):"
                         " a size field or a link is corrupt", [where, "overlapping chunks: the host's size was "
                         "enlarged by an overflow, or the link was overwritten"], "overlap")
        elif any(a <= chunk < b for a, b in self.unwalked):
            pass                                  # in bytes we could not walk: already reported
        elif self._arena_of_addr(chunk) is None:
            self.corrupt(None, f"{fl.name}: entry {chunk + 16:#x} is outside every heap",
                         [where, "a freelist link was overwritten (use-after-free write or overflow)"],
                         "freelist-entry")
        else:
            self.corrupt(None, f"{fl.name}: entry {chunk + 16:#x} is not a chunk boundary", [where],
                         "freelist-entry")

    # --- classification and cross-checks ------------------------------------------------------------
    def _classify(self):
        n = self.tab.n
        state = np.zeros(n, dtype=np.uint8)
        where = np.full(n, -1, dtype=np.int32)
        recency = np.full(n, -1, dtype=np.int32)
        tops = self.tab.lookup(np.array(sorted(self.top_addrs), dtype=np.uint64))
        state[tops[tops >= 0]] = TOP
        is_tc = np.array([fl.kind == "tcache" for fl in self.lists] or [False], dtype=bool)
        uniq, lid, pos, dups = freelists.resolve(self.M_idx, self.M_lid, self.M_pos, is_tc)
        state[uniq] = np.where(is_tc[lid], CACHED, FREE)
        where[uniq] = lid
        recency[uniq] = pos
        for u, ms in dups:
            self._double_free(int(self.S[u]), ms)
        return state, where, recency

    def _double_free(self, chunk, ms):
        descs = []
        for lid, pos in ms:
            fl = self.lists[lid]
            lwp = f" (LWP {fl.tid})" if fl.thread is not None else ""
            descs.append(f"in {fl.name}{lwp} at position {pos}" + (" (freed most recently)" if pos == 0 else ""))
        names = [self.lists[l].name for l, _ in ms]
        if len(set(names)) == 1:
            msg = f"{chunk + 16:#x} was freed twice: it is in {names[0]} twice (the list loops)"
        else:
            msg = f"{chunk + 16:#x} was freed twice: it is in {' and '.join(dict.fromkeys(names))}"
            owners = sorted({self.lists[l].thread for l, _ in ms if self.lists[l].thread is not None})
            if len(owners) > 1:      # a thread's tcache only takes what that thread frees
                msg += f" (freed by thread {' and by thread '.join(map(str, owners))})"
        ev = descs + ["the next two mallocs of this size will both return it"]
        self.find("double-free", "critical", chunk, msg, ev, "freelist-duplicate",
                  state="cached" if any(self.lists[l].kind == "tcache" for l, _ in ms) else "free")
