"""Graph traversals over edge columns, fast on wide graphs and on long chains alike.

A wide frontier (a tree's level, a hash table's buckets) is expanded with numpy; a narrow one
(a linked list: one node per level) with a plain Python loop over memoryviews, because a numpy
call per node would cost tens of microseconds where a Python step costs one.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

WIDE = 64                # frontier size from which numpy takes over
PY_BUDGET = 1 << 16      # nodes the Python loop visits before looking at numpy again


class CSR:
    """Adjacency of n nodes from edge columns (src -> dst), with each entry's edge index."""

    def __init__(self, n: int, src: np.ndarray, dst: np.ndarray, mask: Optional[np.ndarray] = None):
        eid = np.arange(src.shape[0], dtype=np.int64)
        if mask is not None:
            eid = eid[mask]
            src, dst = src[mask], dst[mask]
        order = np.argsort(src, kind="stable")
        self.n = n
        self.nbr = dst[order].astype(np.int64)
        self.eid = eid[order]
        counts = np.bincount(src, minlength=n) if src.size else np.zeros(n, dtype=np.int64)
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts[:n], out=self.indptr[1:])
        self._ip = memoryview(self.indptr)
        self._nb = memoryview(self.nbr)

    def gather(self, nodes: np.ndarray, sources: bool = False):
        """(neighbour, position in nbr) of every out-edge of `nodes` (and, with sources, the
        node each edge leaves)."""
        a = self.indptr[nodes]
        cnt = self.indptr[nodes + 1] - a
        tot = int(cnt.sum())
        if tot == 0:
            e = np.zeros(0, dtype=np.int64)
            return (e, e, e) if sources else (e, e)
        first = np.cumsum(cnt) - cnt
        pos = np.repeat(a - first, cnt) + np.arange(tot, dtype=np.int64)
        if sources:
            return self.nbr[pos], pos, np.repeat(nodes, cnt)
        return self.nbr[pos], pos

    def reverse(self) -> "CSR":
        src = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
        r = CSR.__new__(CSR)
        order = np.argsort(self.nbr, kind="stable")
        r.n = self.n
        r.nbr = src[order]
        r.eid = self.eid[order]
        counts = np.bincount(self.nbr, minlength=self.n) if self.nbr.size else np.zeros(self.n, dtype=np.int64)
        r.indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(counts[:self.n], out=r.indptr[1:])
        r._ip = memoryview(r.indptr)
        r._nb = memoryview(r.nbr)
        return r


def reach(g: CSR, seeds: np.ndarray, allowed: Optional[np.ndarray] = None,
          labels: bool = False, emask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Nodes reachable from seeds (bool array); with labels, also which seed reached each
    first (int64 array, -1 where unreached). `allowed` (bool per node) restricts the walk;
    `emask` (bool per original edge) the edges taken."""
    pmask = emask[g.eid] if emask is not None else None
    n = g.n
    seen = np.zeros(n, dtype=bool)
    owner = np.full(n, -1, dtype=np.int64) if labels else None
    seeds = np.unique(np.asarray(seeds, dtype=np.int64))
    if allowed is not None:
        seeds = seeds[allowed[seeds]]
    if seeds.size == 0:
        return seen, owner
    seen[seeds] = True
    mark = np.zeros(n, dtype=np.int64)
    if labels:
        owner[seeds] = seeds
    frontier = seeds
    m_seen = memoryview(seen.view(np.uint8))
    m_owner = memoryview(owner) if labels else None
    m_allowed = memoryview(allowed.view(np.uint8)) if allowed is not None else None
    m_pmask = memoryview(pmask.view(np.uint8)) if pmask is not None else None
    ip, nb = g._ip, g._nb
    while frontier.size:
        if frontier.size >= WIDE:
            nbrs, pos, src_of = g.gather(frontier, sources=True)
            if nbrs.size == 0:
                break
            keep = ~seen[nbrs]
            if allowed is not None:
                keep &= allowed[nbrs]
            if pmask is not None:
                keep &= pmask[pos]
            nbrs = nbrs[keep]
            mark[nbrs] = np.arange(nbrs.size)
            one = mark[nbrs] == np.arange(nbrs.size)             # one occurrence of each
            if labels:
                owner[nbrs[one]] = owner[src_of[keep][one]]
            nbrs = nbrs[one]
            seen[nbrs] = True
            frontier = nbrs
            continue
        # narrow: depth-first in Python until the stack grows wide or the budget is spent
        stack = frontier.tolist()
        steps = 0
        while stack and steps < PY_BUDGET and len(stack) < 4 * WIDE:
            u = stack.pop()
            steps += 1
            lab = m_owner[u] if labels else 0
            for e in range(ip[u], ip[u + 1]):
                v = nb[e]
                if m_seen[v] or (m_allowed is not None and not m_allowed[v]) \
                        or (m_pmask is not None and not m_pmask[e]):
                    continue
                m_seen[v] = 1
                if labels:
                    m_owner[v] = lab
                stack.append(v)
        frontier = np.array(stack, dtype=np.int64)
    return seen, owner


def reach_bits(g: CSR, seeds: np.ndarray, seed_bits: np.ndarray, ebits: np.ndarray) -> np.ndarray:
    """Several reachability questions in one walk: each node's state is a set of bits; an
    edge passes on the bits its holder has that the edge allows (ebits, per original edge):
    a node is re-walked only when it gains a bit. Returns the state (uint8) of every node."""
    n = g.n
    state = np.zeros(n, dtype=np.uint8)
    seeds = np.asarray(seeds, dtype=np.int64)
    if seeds.size == 0:
        return state
    np.bitwise_or.at(state, seeds, np.asarray(seed_bits, dtype=np.uint8))
    pbits = np.ascontiguousarray(ebits[g.eid], dtype=np.uint8)
    mark = np.zeros(n, dtype=np.int64)
    frontier = np.unique(seeds)
    st, pb = memoryview(state), memoryview(pbits)
    ip, nb = g._ip, g._nb
    while frontier.size:
        if frontier.size >= WIDE:
            nbrs, pos, src = g.gather(frontier, sources=True)
            if nbrs.size == 0:
                break
            new = state[src] & pbits[pos] & ~state[nbrs]
            sel = new != 0
            nbrs, new = nbrs[sel], new[sel]
            if nbrs.size == 0:
                break
            np.bitwise_or.at(state, nbrs, new)
            mark[nbrs] = np.arange(nbrs.size)
            frontier = nbrs[mark[nbrs] == np.arange(nbrs.size)]
            continue
        stack = frontier.tolist()
        steps = 0
        while stack and steps < PY_BUDGET and len(stack) < 4 * WIDE:
            u = stack.pop()
            steps += 1
            su = st[u]
            for e in range(ip[u], ip[u + 1]):
                b = su & pb[e]
                if b:
                    v = nb[e]
                    sv = st[v]
                    if b & ~sv:
                        st[v] = sv | b
                        stack.append(v)
        frontier = np.array(stack, dtype=np.int64)
    return state


def bfs_dist(g: CSR, seeds: np.ndarray, allowed: Optional[np.ndarray] = None,
             stop: Optional[np.ndarray] = None, emask: Optional[np.ndarray] = None,
             max_depth: int = 1 << 30) -> np.ndarray:
    """Breadth-first distances from seeds (int32, -1 unreached). `stop`: nodes whose
    distance is wanted (the walk ends once every one of them has one); `emask`: edges taken.
    Narrow levels run in plain Python, wide ones with numpy."""
    n = g.n
    dist = np.full(n, -1, dtype=np.int32)
    seeds = np.unique(np.asarray(seeds, dtype=np.int64))
    if seeds.size == 0:
        return dist
    pmask = np.ascontiguousarray(emask[g.eid]).view(np.uint8) if emask is not None else None
    dist[seeds] = 0
    want = set(np.asarray(stop, dtype=np.int64).tolist()) if stop is not None else None
    left = len(want) if want is not None else -1
    if want is not None:
        left -= sum(1 for s in seeds.tolist() if s in want)
    m_dist = memoryview(dist)
    m_allowed = memoryview(np.ascontiguousarray(allowed).view(np.uint8)) if allowed is not None else None
    m_pmask = memoryview(pmask) if pmask is not None else None
    ip, nb = g._ip, g._nb
    cur = seeds.tolist()
    d = 0
    while cur and d < max_depth and left != 0:
        d += 1
        if len(cur) >= WIDE:
            fr = np.array(cur, dtype=np.int64)
            nbrs, pos = g.gather(fr)
            keep = dist[nbrs] < 0
            if allowed is not None:
                keep &= allowed[nbrs]
            if pmask is not None:
                keep &= pmask[pos] != 0
            nbrs = np.unique(nbrs[keep])
            dist[nbrs] = d
            cur = nbrs.tolist()
            if want is not None:
                left -= sum(1 for v in cur if v in want)
            continue
        nxt = []
        for u in cur:
            for e in range(ip[u], ip[u + 1]):
                v = nb[e]
                if m_dist[v] < 0 and (m_allowed is None or m_allowed[v]) and (m_pmask is None or m_pmask[e]):
                    m_dist[v] = d
                    nxt.append(v)
                    if want is not None and v in want:
                        left -= 1
        cur = nxt
    return dist


def cliques(g: CSR, lost: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """valgrind's leak cliques over the lost nodes: (leader mask, clique leader per node).

    A lost node nothing else lost points to leads a clique: it is definitely lost, and what it
    reaches is indirectly lost. Nodes left over lie on cycles (or hang from one): taken in
    address order, the first of each becomes a leader and absorbs what it reaches, including
    earlier leaders (a cycle has exactly one definitely lost node)."""
    n = g.n
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(g.indptr))
    inside = lost[src] & lost[g.nbr] & (src != g.nbr)
    indeg = np.bincount(g.nbr[inside], minlength=n)
    leader = lost & (indeg[:n] == 0)
    seen, owner = reach(g, np.nonzero(leader)[0], allowed=lost, labels=True)
    rest = lost & ~seen
    if rest.any():
        m_owner = memoryview(owner)
        m_rest = memoryview(rest.view(np.uint8))
        state = {}                                   # node -> 1 absorbed, 2 leader
        ip, nb = g._ip, g._nb
        parent = {}
        for c in order[rest[order]].tolist():
            if c in state:
                continue
            state[c] = 2
            parent[c] = c
            stack = [c]
            while stack:
                u = stack.pop()
                for e in range(ip[u], ip[u + 1]):
                    v = nb[e]
                    if v == c or not m_rest[v]:
                        continue
                    s = state.get(v)
                    if s is None:
                        state[v] = 1
                        parent[v] = c
                        stack.append(v)
                    elif s == 2:                     # an earlier leader: absorbed into c
                        state[v] = 1
                        parent[v] = c
        for v, p in parent.items():
            while parent[p] != p:
                p = parent[p]
            m_owner[v] = p
        for v, s in state.items():
            if s == 2:
                leader[v] = True
    return leader, owner


def bfs_tree(g: CSR, seeds: np.ndarray, allowed: Optional[np.ndarray] = None) -> np.ndarray:
    """For each node reached, the position (in g.nbr / g.eid) of the edge that first reached it
    breadth-first (-1 for seeds, -2 unreached): shortest paths from the seeds."""
    n = g.n
    via = np.full(n, -2, dtype=np.int64)
    seeds = np.unique(np.asarray(seeds, dtype=np.int64))
    via[seeds] = -1
    frontier = seeds
    m_via = memoryview(via)
    ip, nb = g._ip, g._nb
    while frontier.size:
        if frontier.size >= WIDE:
            nbrs, pos = g.gather(frontier)
            keep = via[nbrs] == -2
            if allowed is not None:
                keep &= allowed[nbrs]
            nbrs, pos = nbrs[keep], pos[keep]
            uq, first = np.unique(nbrs, return_index=True)
            via[uq] = pos[first]
            frontier = uq
        else:
            nxt = []
            for u in frontier.tolist():
                for e in range(ip[u], ip[u + 1]):
                    v = nb[e]
                    if m_via[v] == -2 and (allowed is None or allowed[v]):
                        m_via[v] = e
                        nxt.append(v)
            frontier = np.array(nxt, dtype=np.int64)
    return via


__all__ = ["CSR", "reach", "reach_bits", "bfs_dist", "bfs_tree", "cliques"]
