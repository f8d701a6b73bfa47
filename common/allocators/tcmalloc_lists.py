"""Walking tcmalloc's free lists and judging what they say.

Every free list is a plain chain of `*(void**)` links, unchecked by tcmalloc: a span's `objects`
list, a transfer-cache slot (`tc_slots_[i]` head..tail), a thread cache's `list_[cl]`. Each walk
is bounded (span capacity, batch size; a thread cache is followed to its NULL, as tcmalloc pops
it, within an overall step budget), stops at a loop or at a link that is no object, and records
what it saw; the judgement comes after all lists are walked, because a double free across two
lists only shows when both are known: the object freed twice is where two lists meet (or where
one loops back), and the counts the allocator keeps (length_, refcount) are compared then.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .tcmalloc_objects import NOT_OBJECT, NULL, UNREAD

MAX_DUPLICATES = 10000           # objects found in two lists that are examined one by one
MAX_INTERIOR = 64                # entries inside objects followed in one list (they carry no loop stamp)


@dataclass
class Walk:
    lid: int                     # index of the FreeList
    state: int                   # heapindex FREE or CACHED: what its entries are
    cls: int                     # size class the list is for
    limit: int                   # entries walked at most
    expect: int = -1             # entries the allocator's counters say the list holds
    seq: List[int] = field(default_factory=list)        # object indices, head first
    offset: int = 0              # recency of seq[0] (lists that continue another)
    end: str = "null"            # null, limit, loop, bad, unread
    end_addr: int = 0            # limit: the link after the last entry; bad: the bad link
    loop_obj: int = -1           # loop: the object the list came back to
    interior: List[Tuple[int, int, int]] = field(default_factory=list)   # (position, address, object)
    span: int = -1               # span lists: row in the small-span table
    tail: Optional[int] = None   # transfer slots: the recorded tail
    slot: int = -1               # transfer slots: which one

    @property
    def length(self) -> int:
        return len(self.seq) + len(self.interior)


class Chaser:
    """Follows links through the object table (precomputed successors), with a per-walk stamp
    for loop detection; links that are no object start are resolved one by one."""

    def __init__(self, objs, reader):
        self.o, self.r = objs, reader
        self.succ = objs.succ.tolist()
        self.stamp = [0] * objs.n
        self.wid = 0
        self.steps = 0
        self.max_steps = 2 * objs.n + 100000   # shared tails of corrupt lists are walked once per list

    def budget(self, declared: int) -> int:
        """How far to follow a list that says it holds `declared` entries: to its end while the
        overall budget lasts, else only as far as declared."""
        left = self.max_steps - self.steps
        return min(max(declared, min(left, self.o.n + 1)), self.o.n + MAX_INTERIOR + 1)

    def walk(self, w: Walk, head: int, allow_interior: bool = True, head_idx: Optional[int] = None) -> Walk:
        """Follow the list from `head` (head_idx: its object index when already known, or
        NOT_OBJECT) into w."""
        self.wid += 1
        wid, succ, stamp, seq = self.wid, self.succ, self.stamp, w.seq
        o = self.o
        addr = head
        if head == 0:
            i = NULL
        elif head_idx is not None:
            i = head_idx
        else:
            i = o.index_of(head)
            if i < 0:
                i = NOT_OBJECT
        k, limit = 0, w.limit
        while True:
            if i == NULL:
                w.end = "null"
                break
            if k >= limit:
                w.end, w.end_addr = "limit", int(o.addr[i]) if i >= 0 else addr
                break
            if i >= 0:
                if stamp[i] == wid:
                    w.end, w.loop_obj = "loop", i
                    break
                stamp[i] = wid
                seq.append(i)
                k += 1
                n = succ[i]
                if n == NOT_OBJECT:
                    addr = int(o.next[i])
                elif n == UNREAD:
                    w.end, w.end_addr = "unread", int(o.addr[i])
                    break
                i = n
                continue
            if i == UNREAD:
                w.end, w.end_addr = "unread", addr
                break
            j = o.containing(addr) if allow_interior and len(w.interior) < MAX_INTERIOR else -1
            if j < 0:
                w.end, w.end_addr = "bad", addr
                break
            w.interior.append((k, addr, j))     # inside an object: free() took p+off unchecked
            k += 1
            nxt = self.r.try_u64(addr)
            if nxt is None:
                w.end, w.end_addr = "unread", addr
                break
            addr = nxt
            i = NULL if nxt == 0 else o.index_of(nxt)
            if nxt and i < 0:
                i = NOT_OBJECT
        self.steps += k
        return w


def assign(walks: List[Walk], n: int):
    """Classification arrays (state, where, recency) over n objects from the walks, the
    entries of objects seen in more than one walk {object: [(walk, position)]}, and the walks'
    entries concatenated (object, walk, position)."""
    state = np.zeros(n, dtype=np.uint8)
    where = np.full(n, -1, dtype=np.int32)
    recency = np.full(n, -1, dtype=np.int32)
    empty = np.zeros(0, np.int64)
    if not walks:
        return state, where, recency, {}, (empty, empty, empty)
    lens = [len(w.seq) for w in walks]
    objs = np.fromiter((i for w in walks for i in w.seq), dtype=np.int64, count=sum(lens))
    wk = np.repeat(np.arange(len(walks), dtype=np.int64), lens)
    pos = np.concatenate([np.arange(l, dtype=np.int64) for l in lens]) if objs.size else np.zeros(0, np.int64)
    st = np.array([w.state for w in walks], dtype=np.uint8)
    lid = np.array([w.lid for w in walks], dtype=np.int32)
    off = np.array([w.offset for w in walks], dtype=np.int64)
    state[objs] = st[wk]
    where[objs] = lid[wk]
    recency[objs] = (pos + off[wk]).astype(np.int32)
    counts = np.bincount(objs, minlength=n) if objs.size else np.zeros(n, np.int64)
    dup_mask = counts[objs] > 1
    dups: Dict[int, List[Tuple[int, int]]] = {}
    if dup_mask.any():
        sel = np.nonzero(dup_mask)[0][:MAX_DUPLICATES * 4]
        for e in sel.tolist():
            dups.setdefault(int(objs[e]), []).append((int(wk[e]), int(pos[e])))
    return state, where, recency, dups, (objs, wk, pos)


def meeting_points(walks: List[Walk], dups: Dict[int, List[Tuple[int, int]]]) -> Dict[int, List[Tuple[int, int]]]:
    """Of the objects in several lists, those where the lists meet: a shared tail after the
    meeting point follows one physical link and is not freed twice itself."""
    out = {}
    for obj, occ in dups.items():
        preds = {walks[w].seq[p - 1] if p > 0 else None for w, p in occ}
        if len(preds) > 1 or None in preds:
            out[obj] = occ
    return out


def owner(walks: List[Walk], occ: List[Tuple[int, int]]) -> Tuple[int, int]:
    """The occurrence to classify an object by: a list whose walk ended exactly as the allocator
    says (null at its count) is believed first, then the position nearest a head."""
    def clean(w: Walk) -> bool:
        return w.end == "null" and w.length == w.expect
    return min(occ, key=lambda wp: (not clean(walks[wp[0]]), wp[1]))

