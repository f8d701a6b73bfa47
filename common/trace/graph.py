"""The typed pointer graph of one snapshot.

Nodes are the heap's chunks (ids 0..N-1, in address order, every state) and, after them, the
roots (variables, conservatively scanned memory) and the non-heap objects typed pointers led to
("extern" nodes: a struct on a stack or in the program's own mmapped memory). Edges are columns
of numpy arrays, one row per pointer found:

    src, soff   the node holding the pointer and the pointer's byte offset in it
    dst, doff   the node pointed to and the offset inside it (0: its start; else interior)
    sid, elem   the slot (TypeTable.slots) and array/tail element, -1 for word-scan edges
    how         PRECISE, AMBIGUOUS (a union's slot), CONSERVATIVE (a word that is a chunk's
                address), plus SLACK when the slot lies in the last bytes of a chunk that may be
                malloc's rounding rather than the program's array

Only allocated and mmapped chunks are objects; an edge into a free, cached or top chunk is a
stale pointer (a use-after-free in waiting), kept but never followed.

The precise traversal is a worklist of (chunk, offset, type). Objects are grouped by type;
a group large enough is processed vectorised (numpy gathers of every slot of every element),
a small one object by object with memoryviews (a linked list is a chain of groups of one).
Chunks reached only through `void *`, non-text `char *` or unions, chunks of unknown type and
the chunks nobody reaches are scanned word by word afterwards (vectorised), and those words
that are the addresses of allocated chunks become CONSERVATIVE edges.
"""
from __future__ import annotations

import bisect
import time
from array import array
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..target import ReadError, Variable
from .chunks import Chunks
from .image import GAP, SLOW_GAP, HeapImage, merge_ranges
from .roots import ExtraRoot
from .types import CHAR, CType, SlotGroup, TypeTable

U64 = np.uint64
PRECISE, AMBIGUOUS, CONSERVATIVE = 0, 1, 2
SLACK = 4
HOW_NAMES = {PRECISE: "precise", AMBIGUOUS: "ambiguous", CONSERVATIVE: "conservative"}

VEC_MIN = 48                 # objects of one type processed together, vectorised
SCALAR_CELLS = 96            # an object with more slot reads than this goes the vectorised way
BLOCK_CELLS = 1 << 20        # slot reads per numpy block (bounds the temporaries: ~40 MB)
MAX_ROOT_BYTES = 64 << 20    # bytes of one root variable read
MAX_EXTERN = 100_000         # non-heap objects followed
MAX_EXTERN_BYTES = 1 << 16   # bytes of one non-heap object read
MAX_SECONDARY = 8            # types one chunk is scanned as, at most
SCAN_BLOCK = 1 << 20         # words per conservative scan block
TEXT_PROBE = 4096            # bytes of a char * chunk examined to decide it holds text
MALLOC_SLACK = 15            # last bytes of a chunk that may be malloc's rounding, not the request


def _certain(usable: int) -> int:
    """Bytes of a chunk certainly requested by the program: glibc gives `usable` bytes for any
    request in [usable - 15, usable] (a minimum chunk, 24 bytes, for any request up to 24).
    An array element starting at or past this may be rounding: its edges are marked SLACK."""
    return usable - MALLOC_SLACK if usable > 24 else 1


def _certain_vec(usable: np.ndarray) -> np.ndarray:
    return np.where(usable > 24, usable - MALLOC_SLACK, 1)


@dataclass
class Node:
    """A node that is not a heap chunk: a root or a non-heap object."""
    id: int
    kind: str                       # arg, local, global, register-var, registers, stack, data, tls,
                                    # anon, allocator, extern
    name: str
    label: str                      # for chains: "global g_cache", "local p (main, thread 1, frame 0)"
    precise: bool                   # its pointers are known from debug info
    address: Optional[int] = None
    size: int = 0
    type: str = ""
    thread: Optional[int] = None
    frame: Optional[int] = None
    function: Optional[str] = None
    var: Optional[Variable] = None
    extra: Optional[ExtraRoot] = None
    tid: int = -1                   # extern objects: their type

    def json(self) -> dict:
        d = {"id": self.id, "kind": self.kind, "name": self.name, "label": self.label,
             "precise": self.precise}
        for k in ("address", "type", "thread", "frame", "function"):
            v = getattr(self, k)
            if v not in (None, ""):
                d[k] = v
        if self.size:
            d["size"] = self.size
        return d


@dataclass
class Graph:
    chunks: Chunks
    types: TypeTable
    nodes: List[Node]
    src: np.ndarray
    soff: np.ndarray
    dst: np.ndarray
    doff: np.ndarray
    sid: np.ndarray
    elem: np.ndarray
    how: np.ndarray
    ctype: np.ndarray               # primary type id of each chunk (pointed to at its start), -1
    itypes: Dict[int, List[Tuple[int, int]]]   # chunk -> [(offset, type id)] other typed views
    text: np.ndarray                # chunks judged to hold text (reached through char *)
    scanned: np.ndarray             # chunks whose words were scanned conservatively
    internal: np.ndarray            # allocator-internal chunks (never leaks)
    conservative: bool
    stats: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    _cache: Dict[str, object] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of chunk nodes."""
        return self.chunks.n

    @property
    def n_nodes(self) -> int:
        return self.chunks.n + len(self.nodes)

    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    def node(self, nid: int) -> Node:
        return self.nodes[nid - self.chunks.n]

    def live_edges(self) -> np.ndarray:
        """Mask of edges into objects (allocated/mmapped chunks, non-heap nodes)."""
        m = self._cache.get("live")
        if m is None:
            d = self.dst
            isch = d < self.n
            obj = np.ones(d.shape, dtype=bool)
            obj[isch] = self.chunks.obj[d[isch]]
            m = obj
            self._cache["live"] = m
        return m


class _Builder:
    def __init__(self, snaps, roots: Sequence[Variable], resolve, reader, conservative: bool,
                 extra: Sequence[ExtraRoot], image_budget: Optional[int]):
        self.t0 = time.perf_counter()
        self.reader = reader
        self.target = reader.target
        self.conservative = conservative
        self.notes: List[str] = []
        self.stats: Dict[str, float] = {}
        self.snaps = list(snaps)
        self.ch = ch = Chunks(snaps)
        self.N = ch.n
        self.types = TypeTable(resolve)
        self.nodes: List[Node] = []
        self.roots = list(roots)
        self.extra = list(extra)
        # per-chunk state (numpy truth, memoryviews for scalar access)
        self.ctype = np.full(self.N, -1, dtype=np.int32)
        self.charred = np.zeros(self.N, dtype=np.uint8)
        self.itypes: Dict[int, List[Tuple[int, int]]] = {}
        self.seen_views = set()
        self.internal = np.zeros(self.N, dtype=bool)
        self.mark = np.zeros(self.N, dtype=np.int64)          # scratch for dedupe
        self.edges: List[Tuple[np.ndarray, ...]] = []        # vectorised batches
        self.flat = array("q")                              # scalar edges, 7 fields each
        self.pending: Dict[int, Tuple[list, list]] = {}
        self.ready: List[int] = []
        self.extern_seen: Dict[Tuple[int, int], int] = {}
        self.extern_q: List[Tuple[int, int, int]] = []      # (address, tid, node id)
        self.counts = {"objects_precise": 0, "objects_vectorised": 0, "stale_precise": 0,
                       "unaligned_slots": 0, "extern_objects": 0, "secondary_views": 0}
        self._setup_image(image_budget)
        self._setup_scalar()

    # --- set-up -------------------------------------------------------------------------------
    def _setup_image(self, budget):
        ch = self.ch
        objs = np.nonzero(ch.obj)[0]
        kw = {} if budget is None else {"budget": budget}
        slow = getattr(self.target, "slow_link", False)     # read fewer free bytes, in more requests
        ranges = merge_ranges(ch.user[objs], ch.end[objs], SLOW_GAP if slow else GAP)
        t = time.perf_counter()
        self.img = HeapImage(self.target, ranges, **kw)
        self.stats["read_seconds"] = round(time.perf_counter() - t, 4)
        self.stats["image_bytes"] = self.img.nbytes
        self.notes += self.img.notes
        w = self.img.index(ch.user)
        w[~ch.obj] = -1
        self.cword = w.astype(np.int64)

    def _setup_scalar(self):
        ch = self.ch
        self.u_list = array("Q", ch.user.tobytes())      # bisect over it: 8 bytes a chunk
        self.m_user = memoryview(ch.user)
        self.m_end = memoryview(ch.end)
        self.m_usable = memoryview(ch.usable)
        self.m_obj = memoryview(ch.obj.view(np.uint8))
        self.m_ctype = memoryview(self.ctype)
        self.m_char = memoryview(self.charred)
        self.m_cword = memoryview(self.cword)
        self.mv = self.img.mv
        self.lo, self.hi = ch.lo, ch.hi
        try:
            regs = [r for r in self.target.regions() if r.readable and r.writable]
        except Exception:
            regs = []
        self.w_starts = [r.start for r in regs]
        self.w_ends = [r.end for r in regs]
        # heap segments: a pointer there that is in no chunk is no object (a header, a gap)
        segs = sorted((lo, hi) for s in self.snaps for a in s.arenas for lo, hi in a.segments)
        self.h_starts = [a for a, _ in segs]
        self.h_ends = [b for _, b in segs]

    def add_node(self, **kw) -> Node:
        nd = Node(self.N + len(self.nodes), **kw)
        self.nodes.append(nd)
        return nd

    # --- the scalar path ----------------------------------------------------------------------
    def find(self, v: int) -> int:
        if v < self.lo or v >= self.hi:
            return -1
        j = bisect.bisect_right(self.u_list, v) - 1
        return j if j >= 0 and v < self.m_end[j] else -1

    def push(self, j: int, doff: int, tt: int) -> None:
        """A typed pointer reached chunk j at offset doff."""
        if doff == 0:
            c = self.m_ctype[j]
            if c == -1:
                self.m_ctype[j] = tt
            elif c == tt:
                return
            else:
                key = (j, 0, tt)
                if key in self.seen_views or len(self.itypes.get(j, ())) >= MAX_SECONDARY:
                    return
                self.seen_views.add(key)
                self.itypes.setdefault(j, []).append((0, tt))
                self.counts["secondary_views"] += 1
        else:
            key = (j, doff, tt)
            if key in self.seen_views or len(self.itypes.get(j, ())) >= MAX_SECONDARY:
                return
            self.seen_views.add(key)
            self.itypes.setdefault(j, []).append((doff, tt))
        p = self.pending.get(tt)
        if p is None:
            p = self.pending[tt] = ([], [])
        p[0].append(j)
        p[1].append(doff)
        if len(p[0]) == VEC_MIN:
            self.ready.append(tt)

    def value(self, src: int, soff: int, v: int, sid: int, elem: int, tt: int, amb: bool, how: int) -> None:
        """One pointer value found precisely (a slot of a root, chunk or extern object)."""
        j = self.find(v)
        if j < 0:
            if tt >= 0 and not amb and v and self.w_starts:
                self.extern(src, soff, v, sid, elem, tt, how)
            return
        doff = v - self.m_user[j]
        self.flat.extend((src, soff, j, doff, sid, elem, how))
        if not self.m_obj[j]:
            self.counts["stale_precise"] += 1
            return
        if amb:
            return
        if tt >= 0:
            self.push(j, doff, tt)
        elif tt == CHAR and doff == 0:
            self.m_char[j] = 1

    def extern(self, src, soff, v, sid, elem, tt, how) -> None:
        r = bisect.bisect_right(self.w_starts, v) - 1
        if r < 0 or v >= self.w_ends[r]:
            return
        r = bisect.bisect_right(self.h_starts, v) - 1
        if r >= 0 and v < self.h_ends[r]:
            return
        key = (v, tt)
        nid = self.extern_seen.get(key)
        if nid is None:
            if len(self.extern_seen) >= MAX_EXTERN:
                return
            ct = self.types.get(tt)
            if ct.opaque or not (ct.fixed and len(ct.fixed)) and ct.discr is None:
                nid = -1
            else:
                nd = self.add_node(kind="extern", name=f"{v:#x}", label=f"({ct.name} *){v:#x}", precise=True,
                                   address=v, size=ct.size, type=ct.name, tid=tt)
                nid = nd.id
                self.extern_q.append((v, tt, nid))
                self.counts["extern_objects"] += 1
            self.extern_seen[key] = nid
        if nid >= 0:
            self.flat.extend((src, soff, nid, 0, sid, elem, how))

    def scan_objects(self, cis, offs, ct: CType, t: int = -1) -> None:
        """Apply a type's slots to a few objects, one at a time (the hot loop of long chains:
        everything is a local, the common case -- a typed pointer to a chunk start -- inline).
        Goes on with objects of the same type pushed meanwhile while no group is wide."""
        fixed = ct.fixed.py if ct.fixed is not None else ()
        sz = ct.size
        cells = len(fixed) + (1 if ct.discr else 0)
        big = []
        m_usable, m_cword, m_end, m_user, m_obj = self.m_usable, self.m_cword, self.m_end, self.m_user, self.m_obj
        m_ctype, m_char, mv, u_list = self.m_ctype, self.m_char, self.mv, self.u_list
        lo, hi = self.lo, self.hi
        flat_extend = self.flat.extend
        pending, ready = self.pending, self.ready
        bis = bisect.bisect_right
        discr = ct.discr
        simple = ct.tail is None
        done = 0
        work = list(zip(cis, offs))
        # the common case: one element, every slot aligned and inside the chunk
        fast = tuple((so, sid, tt, amb, AMBIGUOUS if amb else PRECISE) for so, sid, tt, amb in fixed) \
            if discr is None and simple and all(so % 8 == 0 for so, _, _, _ in fixed) else None
        need = max((so + 8 for so, _, _, _ in fixed), default=0)
        w_starts = self.w_starts
        while work:
            ci, off = work.pop()
            usable = m_usable[ci]
            room = usable - off
            n = room // sz if (simple and sz > 0 and room >= 2 * sz) else 1
            w0 = m_cword[ci]
            if fast is not None and n == 1 and room >= need and not off & 7 and w0 >= 0:
                done += 1
                for so, sid, tt, amb, how in fast:
                    o = off + so
                    v = mv[w0 + (o >> 3)]
                    if not v:
                        continue
                    if lo <= v < hi:
                        # one edge: record it, type its target, queue it. Inlined here and in the
                        # tail-element loop below (the same rule, element k instead of 0): a call per
                        # edge costs ~0.15 s at 10^6 edges. Change both together.
                        j = bis(u_list, v) - 1
                        if j >= 0 and v < m_end[j]:
                            doff = v - m_user[j]
                            flat_extend((ci, o, j, doff, sid, 0, how))
                            if not m_obj[j]:
                                self.counts["stale_precise"] += 1
                            elif amb:
                                pass
                            elif tt >= 0:
                                if doff == 0 and m_ctype[j] == -1:
                                    m_ctype[j] = tt
                                    p = pending.get(tt)
                                    if p is None:
                                        p = pending[tt] = ([], [])
                                    p[0].append(j)
                                    p[1].append(0)
                                    if len(p[0]) == VEC_MIN:
                                        ready.append(tt)
                                elif doff or m_ctype[j] != tt:
                                    self.push(j, doff, tt)
                            elif tt == CHAR and doff == 0:
                                m_char[j] = 1
                            continue
                    if tt >= 0 and not amb and w_starts:
                        self.extern(ci, o, v, sid, 0, tt, how)
                if not work and t >= 0:
                    p = pending.get(t)
                    if p is not None and not ready and not self.extern_q and len(p[0]) < VEC_MIN:
                        del pending[t]
                        work = list(zip(p[0], p[1]))
                continue
            if n * cells > SCALAR_CELLS or not simple:
                big.append((ci, off))
                continue
            if w0 < 0:
                continue
            done += 1
            cert = usable - MALLOC_SLACK if usable > 24 else 1
            for k in range(n):
                eb = off + k * sz
                slots = fixed
                if discr is not None:
                    g = self._variant_scalar(ct, w0, eb, usable)
                    if g is not None:
                        slots = fixed + g.py
                slack = SLACK if (k and eb >= cert) else 0
                for so, sid, tt, amb in slots:
                    o = eb + so
                    if o + 8 > usable:
                        break
                    if o & 7:
                        self.counts["unaligned_slots"] += 1
                        continue
                    v = mv[w0 + (o >> 3)]
                    if not v:
                        continue
                    how = (AMBIGUOUS if amb else PRECISE) | slack
                    if lo <= v < hi:
                        j = bis(u_list, v) - 1
                        if j >= 0 and v < m_end[j]:
                            doff = v - m_user[j]
                            flat_extend((ci, o, j, doff, sid, k, how))
                            if not m_obj[j]:
                                self.counts["stale_precise"] += 1
                            elif amb:
                                pass
                            elif tt >= 0:
                                if doff == 0 and m_ctype[j] == -1:
                                    m_ctype[j] = tt
                                    p = pending.get(tt)
                                    if p is None:
                                        p = pending[tt] = ([], [])
                                    p[0].append(j)
                                    p[1].append(0)
                                    if len(p[0]) == VEC_MIN:
                                        ready.append(tt)
                                elif doff or m_ctype[j] != tt:
                                    self.push(j, doff, tt)
                            elif tt == CHAR and doff == 0:
                                m_char[j] = 1
                            continue
                    if tt >= 0 and not amb and self.w_starts:
                        self.extern(ci, o, v, sid, k, tt, how)
            if not work and t >= 0:
                # a chain (a linked list): go on with the same type while nothing is wide
                p = pending.get(t)
                if p is not None and not ready and not self.extern_q and len(p[0]) < VEC_MIN:
                    del pending[t]
                    work = list(zip(p[0], p[1]))
        self.counts["objects_precise"] += done
        if big:
            self.scan_batch(ct, np.array([b[0] for b in big], dtype=np.int64),
                            np.array([b[1] for b in big], dtype=np.int64))

    def _variant_scalar(self, ct: CType, w0: int, eb: int, usable: int) -> Optional[SlotGroup]:
        doff, dsz = ct.discr
        o = eb + doff
        if o + dsz > usable:
            return None
        word = self.mv[w0 + (o >> 3)]
        d = (word >> (8 * (o & 7))) & ((1 << (8 * dsz)) - 1)
        if (o & 7) + dsz > 8:
            return ct.default
        return ct.variants.get(d, ct.default)

    # --- the vectorised path ------------------------------------------------------------------
    def scan_batch(self, ct: CType, cis: np.ndarray, offs: np.ndarray) -> None:
        """Apply a type's slots to many objects at once."""
        ch = self.ch
        keep = self.cword[cis] >= 0
        cis, offs = cis[keep], offs[keep]
        if cis.size == 0:
            return
        self.counts["objects_vectorised"] += int(cis.size)
        usable = ch.usable[cis]
        room = usable - offs
        sz = ct.size
        if ct.tail is None and sz > 0:
            n = np.where(room >= 2 * sz, room // sz, 1)
        else:
            n = np.ones(cis.size, dtype=np.int64)
        groups = [g for g in [ct.fixed] if g is not None and len(g)]
        has_var = ct.discr is not None
        cells = max(1, sum(len(g) for g in groups) + (1 if has_var else 0))
        # blocks of objects so that elements x slots stays bounded
        cum = np.cumsum(n * cells)
        start = 0
        while start < cis.size:
            stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + BLOCK_CELLS, side="right"))
            stop = max(stop, start + 1)
            self._batch_block(ct, cis[start:stop], offs[start:stop], n[start:stop], usable[start:stop])
            start = stop
        if ct.tail is not None:
            self._tail(ct, cis, offs, usable)

    def _elements(self, cis, offs, n, sz):
        tot = int(n.sum())
        obj = np.repeat(np.arange(cis.size), n)
        first = np.cumsum(n) - n
        k = np.arange(tot, dtype=np.int64) - np.repeat(first, n)
        eb = offs[obj] + k * sz
        return obj, k, eb

    def _batch_block(self, ct: CType, cis, offs, n, usable) -> None:
        sz = max(ct.size, 0)
        obj, k, eb = self._elements(cis, offs, n, sz)
        e_ci = cis[obj]
        e_us = usable[obj]
        slack = (k > 0) & (eb >= _certain_vec(e_us))
        if ct.fixed is not None and len(ct.fixed):
            self._apply(ct.fixed, e_ci, eb, k, e_us, slack)
        if ct.discr is not None:
            doff, dsz = ct.discr
            o = eb + doff
            ok = (o + dsz <= e_us) & (((o & 7) + dsz) <= 8)
            w = self.cword[e_ci] + (o >> 3)
            word = np.where(ok, self.img.words[np.where(ok, w, 0)], U64(0))
            d = (word >> ((o & 7) * 8).astype(U64)) & U64((1 << (8 * dsz)) - 1) if dsz < 8 else word
            matched = np.zeros(d.shape, dtype=bool)
            for val, g in ct.variants.items():
                m = ok & (d == U64(val))
                matched |= m
                if m.any() and len(g):
                    self._apply(g, e_ci[m], eb[m], k[m], e_us[m], slack[m])
            if ct.default is not None and len(ct.default):
                m = ~matched
                if m.any():
                    self._apply(ct.default, e_ci[m], eb[m], k[m], e_us[m], slack[m])

    def _tail(self, ct: CType, cis, offs, usable) -> None:
        toff, tsz, g = ct.tail
        if not len(g):
            return
        room = usable - offs - toff
        n = np.where(room >= tsz, np.minimum(room // tsz, 1 << 20), 0)
        sel = n > 0
        if not sel.any():
            return
        cis, offs, n, usable = cis[sel], offs[sel], n[sel], usable[sel]
        obj, k, eb = self._elements(cis, offs + toff, n, tsz)
        e_us = usable[obj]
        self._apply(g, cis[obj], eb, k, e_us, (k > 0) & (eb >= _certain_vec(e_us)))

    def _apply(self, g: SlotGroup, e_ci, eb, k, e_us, slack) -> None:
        """Read every slot of g in every element; record edges; push typed targets."""
        S = len(g)
        o = (eb[:, None] + g.off[None, :])                     # (E, S) offsets in the chunk
        valid = o + 8 <= e_us[:, None]
        unal = (o & 7) != 0
        if unal.any():
            self.counts["unaligned_slots"] += int((unal & valid).sum())
            valid &= ~unal
        w = self.cword[e_ci][:, None] + (o >> 3)
        words = self.img.words[np.where(valid, w, 0)]
        words = np.where(valid, words, U64(0))
        nz = np.nonzero(words.ravel())[0]
        if nz.size == 0:
            return
        vals = words.ravel()[nz]
        e_idx, s_idx = np.divmod(nz, S)
        j, doff = self.ch.lookup(vals)
        hit = j >= 0
        tt = g.tt[s_idx]
        amb = g.amb[s_idx]
        # non-heap targets of typed pointers: maybe objects in writable memory (scalar, rare)
        miss = ~hit & (tt >= 0) & ~amb
        if miss.any() and self.w_starts:
            for q in np.nonzero(miss)[0][:MAX_EXTERN].tolist():
                ei, si = int(e_idx[q]), int(s_idx[q])
                self.extern(int(e_ci[ei]), int(o[ei, si]), int(vals[q]), int(g.sid[si]), int(k[ei]),
                            int(tt[q]), int(AMBIGUOUS if amb[q] else PRECISE) | (SLACK if slack[ei] else 0))
        if not hit.any():
            return
        e_idx, s_idx, j, doff, tt, amb = e_idx[hit], s_idx[hit], j[hit], doff[hit], tt[hit], amb[hit]
        how = np.where(amb, AMBIGUOUS, PRECISE).astype(np.uint8) | np.where(slack[e_idx], SLACK, 0).astype(np.uint8)
        self.edges.append((e_ci[e_idx].astype(np.int64), o[e_idx, s_idx].astype(np.int64), j.astype(np.int64),
                           doff.astype(np.int64), g.sid[s_idx].astype(np.int32), k[e_idx].astype(np.int32), how))
        isobj = self.ch.obj[j]
        self.counts["stale_precise"] += int((~isobj).sum())
        ch_m = isobj & (tt == CHAR) & (doff == 0)
        if ch_m.any():
            self.charred[j[ch_m]] = 1
        tm = isobj & (tt >= 0) & ~amb
        if tm.any():
            self._push_many(j[tm], doff[tm], tt[tm])

    def _push_many(self, j, doff, tt) -> None:
        start = doff == 0
        if start.any():
            js, ts = j[start], tt[start]
            fresh = self.ctype[js] == -1
            if fresh.any():
                fj, ft = js[fresh], ts[fresh]
                self.mark[fj] = np.arange(fj.size, dtype=np.int64)
                one = self.mark[fj] == np.arange(fj.size, dtype=np.int64)      # one occurrence each
                uj, ut = fj[one], ft[one]
                self.ctype[uj] = ut
                for t in np.unique(ut).tolist():
                    sel = uj[ut == t]
                    p = self.pending.get(t)
                    if p is None:
                        p = self.pending[t] = ([], [])
                    before = len(p[0])
                    p[0].extend(sel.tolist())
                    p[1].extend([0] * sel.size)
                    if before < VEC_MIN <= len(p[0]):
                        self.ready.append(t)
            other = self.ctype[js] != ts
            for a, b in zip(js[other].tolist(), ts[other].tolist()):
                self.push(a, 0, b)
        inner = ~start
        if inner.any():
            for a, d, b in zip(j[inner].tolist(), doff[inner].tolist(), tt[inner].tolist()):
                self.push(a, d, b)

    # --- the worklist -------------------------------------------------------------------------
    def drain(self) -> None:
        pending, ready, types = self.pending, self.ready, self.types
        while pending or self.extern_q:
            while ready:
                t = ready.pop()
                p = pending.pop(t, None)
                if p is None or not p[0]:
                    continue
                ct = types.get(t)
                if ct.opaque:
                    continue
                self.scan_batch(ct, np.array(p[0], dtype=np.int64), np.array(p[1], dtype=np.int64))
            if self.extern_q:
                q, self.extern_q = self.extern_q, []
                for addr, t, nid in q:
                    self.scan_extern(addr, t, nid)
                continue
            if not pending:
                break
            t, (cis, offs) = pending.popitem()
            ct = types.get(t)
            if ct.opaque:
                continue
            if len(cis) >= VEC_MIN:
                self.scan_batch(ct, np.array(cis, dtype=np.int64), np.array(offs, dtype=np.int64))
                continue
            self.scan_objects(cis, offs, ct, t)

    def scan_extern(self, addr: int, t: int, nid: int) -> None:
        ct = self.types.get(t)
        size = min(max(ct.size, 8), MAX_EXTERN_BYTES)
        try:
            raw = self.reader.read(addr, size)
        except ReadError:
            return
        self.slots_from_bytes(nid, raw, ct.fixed.py if ct.fixed else (), ct, -1)

    def slots_from_bytes(self, src: int, raw: bytes, slots, ct: Optional[CType], elem: int) -> None:
        """Pointer slots of an object whose bytes were read (a root, an extern object)."""
        n = len(raw)
        if ct is not None and ct.discr is not None:
            doff, dsz = ct.discr
            if doff + dsz <= n:
                d = int.from_bytes(raw[doff:doff + dsz], "little")
                g = ct.variants.get(d, ct.default)
                if g is not None:
                    slots = tuple(slots) + g.py
        if len(slots) > 256:
            self._slots_vec(src, raw, slots, elem)
            return
        for so, sid, tt, amb in slots:
            if so + 8 > n:
                continue
            v = int.from_bytes(raw[so:so + 8], "little")
            if v:
                self.value(src, so, v, sid, elem, tt, amb, AMBIGUOUS if amb else PRECISE)

    def _slots_vec(self, src, raw, slots, elem):
        off = np.array([s[0] for s in slots], dtype=np.int64)
        ok = off + 8 <= len(raw)
        off = off[ok]
        b = np.frombuffer(raw, dtype=np.uint8)
        idx = off[:, None] + np.arange(8)[None, :]
        vals = b[idx].copy().view("<u8").ravel()
        sl = [s for s, k in zip(slots, ok.tolist()) if k]
        nz = np.nonzero(vals)[0]
        j, doff = self.ch.lookup(vals[nz])
        for q in np.nonzero(j >= 0)[0].tolist():
            so, sid, tt, amb = sl[int(nz[q])]
            self.value(src, so, int(vals[nz[q]]), sid, elem, tt, amb, AMBIGUOUS if amb else PRECISE)
        for q in np.nonzero(j < 0)[0].tolist():          # extern candidates
            so, sid, tt, amb = sl[int(nz[q])]
            if tt >= 0 and not amb:
                self.value(src, so, int(vals[nz[q]]), sid, elem, tt, amb, PRECISE)

    # --- roots ------------------------------------------------------------------------------------
    def precise_roots(self) -> None:
        types = self.types
        stats = {"variables": 0, "optimized_out": 0, "unreadable": 0, "register_values": 0}
        for var in self.roots:
            stats["variables"] += 1
            lay = var.layout
            label = _var_label(var)
            nd = self.add_node(kind=var.kind if var.address is not None or var.optimized_out else "register-var",
                               name=var.name, label=label, precise=not var.optimized_out,
                               address=var.address, size=int(lay.size or 0), type=lay.name,
                               thread=var.thread, frame=var.frame, function=var.function, var=var)
            if var.optimized_out:
                stats["optimized_out"] += 1
                continue
            g = types.group(-1, lay.slots, "root")
            if var.address is None:
                if var.value is None or not g.py:
                    continue
                stats["register_values"] += 1
                so, sid, tt, amb = g.py[0]
                if var.value:
                    self.value(nd.id, 0, var.value, sid, -1, tt, amb, AMBIGUOUS if amb else PRECISE)
                continue
            if not g.py and lay.discr_offset is None:
                continue
            size = min(max(int(lay.size or 0), max((s[0] + 8 for s in g.py), default=0)), MAX_ROOT_BYTES)
            try:
                raw = self.reader.read(var.address, size)
            except ReadError:
                stats["unreadable"] += 1
                continue
            ct = None
            if lay.discr_offset is not None and lay.variants:
                ct = types.get(types.tid(lay.name)) if lay.name else None
            self.slots_from_bytes(nd.id, raw, g.py, ct, -1)
            if _cut_short(lay):
                # the debugger gave only the first slots of a big variable: the rest of its
                # storage is scanned conservatively rather than ignored
                stats["cut_short"] = stats.get("cut_short", 0) + 1
                size = min(int(lay.size or 0), MAX_ROOT_BYTES)
                if size > len(raw):
                    try:
                        raw = self.reader.read(var.address, size)
                    except ReadError:
                        raw = raw
                vals = np.frombuffer(raw[:len(raw) - len(raw) % 8], dtype="<u8").copy()
                if var.address % 8 == 0 and vals.size:
                    offs = np.arange(vals.size, dtype=np.int64) * 8
                    covered = np.zeros(vals.size, dtype=bool)
                    so = np.array([s[0] for s in g.py if s[0] % 8 == 0], dtype=np.int64) // 8
                    covered[so[so < vals.size]] = True
                    cn = self.add_node(kind=var.kind, name=var.name,
                                       label=f"{label} [beyond its {len(lay.slots)} described slots: conservative]",
                                       precise=False, address=var.address, size=size, type=lay.name,
                                       thread=var.thread, frame=var.frame, function=var.function)
                    self._words_edges(cn.id, offs[~covered], vals[~covered], False)
        self.stats.update({f"roots_{k}": v for k, v in stats.items()})

    def conservative_variable_roots(self) -> None:
        """Conservative mode: every word of every variable's storage."""
        for var in self.roots:
            lay = var.layout
            nd = self.add_node(kind=var.kind, name=var.name, label=_var_label(var), precise=False,
                               address=var.address, size=int(lay.size or 0), type=lay.name,
                               thread=var.thread, frame=var.frame, function=var.function, var=var)
            if var.optimized_out:
                continue
            if var.address is None:
                if var.value:
                    self._words_edges(nd.id, np.array([0], dtype=np.int64),
                                      np.array([var.value], dtype=U64), True)
                continue
            size = min(int(lay.size or 8), MAX_ROOT_BYTES)
            try:
                raw = self.reader.read(var.address & ~7, ((var.address + size + 7) & ~7) - (var.address & ~7))
            except ReadError:
                continue
            vals = np.frombuffer(raw, dtype="<u8")
            self._words_edges(nd.id, np.arange(vals.size, dtype=np.int64) * 8, vals, True)

    def extra_roots(self) -> None:
        total = 0
        for ex in self.extra:
            nd = self.add_node(kind=ex.kind, name=ex.label, label=ex.label, precise=ex.precise,
                               thread=ex.thread, frame=ex.frame, function=ex.function, extra=ex)
            interior = ex.interior or self.conservative
            if ex.values:
                vals = np.array([v & 0xFFFFFFFFFFFFFFFF for _, v in ex.values], dtype=U64)
                self._words_edges(nd.id, np.arange(vals.size, dtype=np.int64), vals, interior,
                                  how=PRECISE if ex.precise else CONSERVATIVE)
            for lo, hi in ex.ranges:
                nd.address = lo if nd.address is None else nd.address
                nd.size += hi - lo
                a = lo
                while a < hi:
                    m = min(hi - a, 8 << 20)
                    m -= m % 8
                    if m <= 0:
                        break
                    try:
                        raw = self.target.read(a, m)
                    except ReadError:
                        raw = self._read_pages(a, m)
                    if raw:
                        vals = np.frombuffer(raw, dtype="<u8")
                        # a range root's edges carry the absolute address of the word
                        self._words_edges(nd.id, a + np.arange(vals.size, dtype=np.int64) * 8, vals,
                                          interior)
                        total += m
                    a += m
        self.stats["conservative_root_bytes"] = total

    def _read_pages(self, a: int, m: int) -> bytes:
        out = bytearray()
        while m > 0:
            k = min(m, 4096 - (a % 4096))
            try:
                out += self.target.read(a, k)
            except ReadError:
                out += bytes(k)
            a += k
            m -= k
        return bytes(out)

    def _words_edges(self, src: int, soffs: np.ndarray, vals: np.ndarray, interior: bool,
                     how: int = CONSERVATIVE) -> None:
        if vals.size == 0:
            return
        cand = (vals >= U64(self.lo)) & (vals < U64(self.hi))
        if not cand.any():
            return
        idx = np.nonzero(cand)[0]
        j, doff = self.ch.lookup(vals[idx])
        ok = j >= 0
        ok &= self.ch.obj[np.maximum(j, 0)]
        if not interior:
            ok &= doff == 0
        if not ok.any():
            return
        sel = idx[ok]
        m = int(sel.size)
        self.edges.append((np.full(m, src, dtype=np.int64), soffs[sel].astype(np.int64), j[ok].astype(np.int64),
                           doff[ok].astype(np.int64), np.full(m, -1, dtype=np.int32), np.full(m, -1, dtype=np.int32),
                           np.full(m, how, dtype=np.uint8)))

    def allocator_internal(self) -> None:
        for ex in self.extra:
            if ex.kind == "allocator":
                for _, v in ex.values:
                    j = self.find(v)
                    if j >= 0:
                        self.internal[j] = True

    # --- conservative scan of chunk contents -----------------------------------------------------
    def text_check(self) -> np.ndarray:
        """Chunks reached through char * whose bytes are text: left alone."""
        text = np.zeros(self.N, dtype=bool)
        cand = np.nonzero((self.charred == 1) & (self.ctype == -1) & (self.cword >= 0))[0]
        if cand.size == 0:
            return text
        raw8 = self.img.words.view(np.uint8)
        ok_byte = np.zeros(256, dtype=bool)
        ok_byte[0x20:0x7F] = True
        ok_byte[[9, 10, 13]] = True
        # the first 32 bytes of many candidates at once: text = printable up to a NUL
        W = 32
        col = np.arange(W, dtype=np.int64)[None, :]
        longs = []
        for s in range(0, cand.size, 1 << 15):
            cb = cand[s:s + (1 << 15)]
            n = np.minimum(self.ch.usable[cb], W)
            inside = col < n[:, None]
            b = raw8[np.where(inside, self.cword[cb][:, None] * 8 + col, 0)]
            b[~inside] = 0
            z = b == 0
            has_nul = z.any(axis=1)
            first = np.where(has_nul, z.argmax(axis=1), n)
            good = (ok_byte[b] | (col >= first[:, None])).all(axis=1)
            text[cb] = good & (first > 0) & (has_nul | (n < W))
            longs.append(cb[~has_nul & (n == W) & good])
        # long strings (no NUL in the first bytes of a bigger chunk): byte by byte
        printable = bytes(range(0x20, 0x7F)) + b"\t\n\r"
        for ci in np.concatenate(longs).tolist():
            b0 = int(self.cword[ci]) * 8
            raw = raw8[b0:b0 + min(int(self.ch.usable[ci]), TEXT_PROBE)].tobytes()
            zi = raw.find(b"\0")
            s = raw if zi < 0 else raw[:zi]
            text[ci] = bool(s) and not s.translate(None, printable)
        return text

    def scan_chunks(self, sel: np.ndarray) -> int:
        """Conservative edges out of the chunks in `sel` (bool mask): every aligned word that is
        the address of (a place in) an allocated chunk. Returns the words examined."""
        ch, img = self.ch, self.img
        idx = np.nonzero(sel & (self.cword >= 0))[0]
        if idx.size == 0:
            return 0
        nwords = ch.usable[idx] // 8
        total = int(nwords.sum())
        lo, hi = U64(self.lo), U64(self.hi)
        if total * 2 < img.words.size:
            # few chunks: gather exactly their words
            cum = np.cumsum(nwords)
            start = 0
            while start < idx.size:
                stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + SCAN_BLOCK, side="right"))
                stop = max(stop, start + 1)
                part, nw = idx[start:stop], nwords[start:stop]
                own = np.repeat(part, nw)
                first = np.cumsum(nw) - nw
                wk = np.arange(int(nw.sum()), dtype=np.int64) - np.repeat(first, nw)
                vals = img.words[self.cword[own] + wk]
                cand = (vals >= lo) & (vals < hi)
                if cand.any():
                    self._chunk_word_edges(own[cand], wk[cand] * 8, vals[cand])
                start = stop
            return total
        # most of the heap: stream the whole image, keep words owned by selected chunks
        for r, (a, b) in enumerate(img.ranges):
            w0 = int(img.roff[r])
            nw = (b - a) // 8
            for s in range(0, nw, SCAN_BLOCK):
                e = min(nw, s + SCAN_BLOCK)
                vals = img.words[w0 + s:w0 + e]
                cand = np.nonzero((vals >= lo) & (vals < hi))[0]
                if cand.size == 0:
                    continue
                addr = U64(a) + (cand + s).astype(U64) * U64(8)
                own, off = ch.lookup(addr)
                ok = own >= 0
                ok &= sel[np.maximum(own, 0)]
                if ok.any():
                    self._chunk_word_edges(own[ok], off[ok], vals[cand[ok]])
        return total

    def _chunk_word_edges(self, own, soff, vals) -> None:
        j, doff = self.ch.lookup(vals)
        ok = j >= 0
        ok &= self.ch.obj[np.maximum(j, 0)]
        ok &= j != own                                   # a chunk pointing into itself: no edge
        if not ok.any():
            return
        m = int(ok.sum())
        self.edges.append((own[ok].astype(np.int64), soff[ok].astype(np.int64), j[ok].astype(np.int64),
                           doff[ok].astype(np.int64), np.full(m, -1, dtype=np.int32),
                           np.full(m, -1, dtype=np.int32), np.full(m, CONSERVATIVE, dtype=np.uint8)))

    # --- assembly -----------------------------------------------------------------------------------
    def finish(self, text, scanned) -> Graph:
        parts = list(self.edges)
        if len(self.flat):
            f = np.frombuffer(self.flat, dtype=np.int64).reshape(-1, 7)
            parts.append((f[:, 0].copy(), f[:, 1].copy(), f[:, 2].copy(), f[:, 3].copy(),
                          f[:, 4].astype(np.int32), f[:, 5].astype(np.int32), f[:, 6].astype(np.uint8)))
        if parts:
            cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
        else:
            cols = [np.zeros(0, dtype=d) for d in (np.int64, np.int64, np.int64, np.int64, np.int32, np.int32,
                                                   np.uint8)]
        self.edges, self.flat = [], array("q")
        src, soff, dst, doff, sid, elem, how = cols
        idt = np.int32 if self.N + len(self.nodes) < (1 << 31) else np.int64   # node ids: 4 bytes
        g = Graph(self.ch, self.types, self.nodes, src.astype(idt), soff, dst.astype(idt), doff, sid,
                  elem, how, self.ctype, self.itypes, text, scanned, self.internal, self.conservative)
        g.notes = self.notes + [f"type resolver: {e}" for e in self.types.errors]
        g.stats = dict(self.stats)
        g.stats.update(self.counts)
        g.stats.update({"chunks": self.N, "objects": int(self.ch.obj.sum()), "edges": g.n_edges,
                        "nodes": g.n_nodes, "types": len(self.types.types)})
        return g


def _cut_short(lay) -> bool:
    """A layout the debugger adapter truncated (gdb_plugin caps: 4096 slots, 1024 elements)."""
    s = lay.slots
    if not s or not lay.size:
        return False
    if len(s) >= 4096:
        return True
    last = max(x.offset for x in s)
    return last + 8 < lay.size and any("[1023]" in x.path for x in s[-64:])


def _var_label(var: Variable) -> str:
    if var.kind == "global":
        return f"global {var.name}"
    if var.kind in ("arg", "local"):
        return f"{var.kind} {var.name} ({var.function or '??'}, thread {var.thread}, frame {var.frame})"
    where = f" (thread {var.thread})" if var.thread is not None else ""
    return f"{var.kind} {var.name}{where}"


def build_graph(snaps, roots: Sequence[Variable], resolve, reader, conservative: bool = False,
                extra_roots: Sequence[ExtraRoot] = (), image_budget: Optional[int] = None) -> Graph:
    """The pointer graph of the snapshots.

    snaps: the HeapSnapshots (every allocator in use); roots: program variables (their layouts
    say where their pointers are; optimized-out ones are only counted: pass their frames'
    registers and stack as extra_roots); resolve(type name) -> TypeLayout or None; reader: a
    CachedReader (its target's bulk read is used for the heap); conservative: the guessing
    approach (every word of every root and every reachable chunk), for comparison.
    """
    b = _Builder(snaps, roots, resolve, reader, conservative, extra_roots, image_budget)
    b.allocator_internal()
    t = time.perf_counter()
    if conservative:
        b.conservative_variable_roots()
        b.extra_roots()
        b.stats["root_seconds"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        scanned = b.ch.obj & ~b.internal       # the allocator's own chunks hold its pointers, not ours
        b.stats["words_scanned"] = b.scan_chunks(scanned)
        text = np.zeros(b.N, dtype=bool)
        b.stats["scan_seconds"] = round(time.perf_counter() - t, 4)
    else:
        b.precise_roots()
        b.extra_roots()
        b.stats["root_seconds"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        b.drain()
        b.stats["precise_seconds"] = round(time.perf_counter() - t, 4)
        t = time.perf_counter()
        text = b.text_check()
        opaque = np.array([ct.opaque for ct in b.types.types] + [True], dtype=bool)
        typed = b.ctype >= 0
        typed[typed] = ~opaque[b.ctype[typed]]
        scanned = b.ch.obj & ~typed & ~text & ~b.internal
        b.stats["words_scanned"] = b.scan_chunks(scanned)
        b.stats["scan_seconds"] = round(time.perf_counter() - t, 4)
    g = b.finish(text, scanned)
    g.stats["build_seconds"] = round(time.perf_counter() - b.t0, 4)
    if not any(v.layout.slots for v in roots):
        g.notes.append("no program variables with debug info: only registers, stacks and data were scanned, "
                       "conservatively (build the program with -g, or install its debug info)")
    if b.types.errors:
        g.notes.append("some types could not be resolved: chunks of those types were scanned conservatively")
    return g
