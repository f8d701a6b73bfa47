"""Who points to a chunk: the shortest chains of pointers from a root to it, with field paths.

    why(g, p)["chains"][0]["steps"] == ["global g_cache", "entries[3]", "->next", "->value"]

Precise chains (typed slots from roots with debug info) are preferred; when none exists, the
chains may use conservative edges (a register, a stack word, a word of an untyped chunk) and
say so. A chunk that is free has chains too: they end in the stale pointer.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .graph import AMBIGUOUS, CONSERVATIVE, PRECISE, SLACK, Graph
from .reach import CSR, bfs_dist, bfs_tree

MAX_CHAINS = 3
MAX_STEPS = 64              # a longer chain shows its first and last hops, and how many between


def _all_csr(g: Graph):
    c = g._cache.get("csr_all")
    if c is None:
        c = CSR(g.n_nodes, g.src, g.dst)
        g._cache["csr_all"] = c
        g._cache["csr_all_rev"] = c.reverse()
    return c, g._cache["csr_all_rev"]


def _is_array(g: Graph, ci: int, tid: int) -> bool:
    if tid < 0:
        return False
    ct = g.types.get(tid)
    return ct.arrayable and ci < g.n and int(g.chunks.usable[ci]) >= 2 * ct.size


def step(g: Graph, e: int) -> Optional[str]:
    """The text of one hop: "->next", "[3].next", "entries[3]" (a root's field), "rbx"."""
    s, sid, h = int(g.src[e]), int(g.sid[e]), int(g.how[e])
    doff = int(g.doff[e])
    if sid >= 0:
        info = g.types.slots[sid]
        if s >= g.n and g.node(s).kind != "extern":
            p = info.slot.path
            text = p[1:] if p.startswith(".") else p
            text = text or None
        else:
            p = g.types.path(sid, int(g.elem[e]), _is_array(g, s, info.owner))
            if p.startswith("."):
                text = "->" + p[1:]
            elif p.startswith("["):
                text = p
            elif p == "":
                text = "*"
            else:
                text = "->" + p
    else:
        if s < g.n:
            text = f"->(word +{int(g.soff[e])}, conservative)"
        else:
            nd = g.node(s)
            ex = nd.extra
            if ex is not None and ex.values and not ex.ranges:
                k = int(g.soff[e])
                text = ex.values[k][0] if 0 <= k < len(ex.values) else f"value {k}"
            elif ex is not None:
                text = f"(word at {int(g.soff[e]):#x})"
            else:
                text = f"(word +{int(g.soff[e])})"
            if not nd.precise:
                text += " [conservative]" if "conservative" not in text else ""
    extra = []
    if doff:
        extra.append(f"+{doff}")
    if (h & 3) == AMBIGUOUS:
        extra.append("union")
    if h & SLACK:
        extra.append("slack")
    if extra:
        text = f"{text} ({', '.join(extra)})" if text else f"({', '.join(extra)})"
    return text


def render(steps: List[str]) -> str:
    """One line for a chain: "global g_cache.entries[3]->next->value"."""
    if not steps:
        return ""
    out = steps[0]
    for s in steps[1:]:
        if s.startswith(("->", "[", "*")):
            out += s
        elif s.startswith("("):
            out += " " + s
        else:
            out += "." + s if out and not out.endswith(")") else " " + s
    return out


def chain_steps(g: Graph, edges: List[int]) -> List[str]:
    if not edges:
        return []
    first = int(g.src[edges[0]])
    out = [g.node(first).label if first >= g.n else f"chunk {int(g.chunks.user[first]):#x}"]
    for e in edges:
        t = step(g, e)
        if t:
            out.append(t)
    return out


def _edge_json(g: Graph, e: int) -> dict:
    s, d = int(g.src[e]), int(g.dst[e])
    h = int(g.how[e])
    return {"from": _node_ref(g, s), "to": _node_ref(g, d), "offset": int(g.soff[e]), "target_offset": int(g.doff[e]),
            "how": {PRECISE: "precise", AMBIGUOUS: "ambiguous", CONSERVATIVE: "conservative"}[h & 3],
            "slack": bool(h & SLACK), "step": step(g, e)}


def _node_ref(g: Graph, nid: int) -> dict:
    if nid < g.n:
        from .leaks import type_info
        t, _ = type_info(g, nid)
        return {"chunk": int(g.chunks.user[nid]), "size": int(g.chunks.usable[nid]), "type": t,
                "state": g.chunks.state_name(nid)}
    nd = g.node(nid)
    return {"root" if nd.kind != "extern" else "object": nd.label, "kind": nd.kind}


def _choose(g: Graph, fwd: CSR, u: int, dist: np.ndarray, want: int, emask) -> int:
    """The best edge out of u to a node at distance `want` from the target."""
    best, key = -1, None
    for p in range(int(fwd.indptr[u]), int(fwd.indptr[u + 1])):
        v = int(fwd.nbr[p])
        e = int(fwd.eid[p])
        if dist[v] != want or (emask is not None and not emask[e]):
            continue
        h = int(g.how[e])
        k = ((h & 3), bool(h & SLACK), int(g.doff[e]) != 0, int(g.soff[e]))
        if key is None or k < key:
            best, key = e, k
    return best


def why(g: Graph, address: int, limit: int = MAX_CHAINS) -> Dict:
    """Shortest chains from roots to the chunk holding `address` (user pointer, interior
    address or chunk address)."""
    from .leaks import category, classify, type_info
    ch = g.chunks
    ci = ch.find_loose(address)
    out: Dict = {"address": address}
    if ci < 0:
        out["error"] = f"{address:#x} is not inside any heap chunk"
        out["chains"] = []
        return out
    t, how = type_info(g, ci)
    out.update({"chunk": ch.chunk_json(ci), "user": int(ch.user[ci]), "size": int(ch.usable[ci]), "type": t,
                "type_how": how, "offset": address - int(ch.user[ci]), "category": category(g, ci)})
    fwd, rev = _all_csr(g)
    obj = np.ones(g.n_nodes, dtype=bool)
    obj[:g.n] = ch.obj
    obj[ci] = True
    roots = [nd for nd in g.nodes if nd.kind != "extern"]
    chains = []
    for precise in (True, False):
        emask = (g.how & 3) != CONSERVATIVE if precise else None
        cand = [nd for nd in roots if nd.precise or not precise]
        dist = bfs_dist(rev, np.array([ci]), allowed=obj, emask=emask,
                        stop=np.array([nd.id for nd in cand], dtype=np.int64))
        found = sorted((int(dist[nd.id]), nd.id) for nd in cand if dist[nd.id] > 0)
        for d, r in found[:limit]:
            edges, u, ok = [], r, True
            while u != ci:
                e = _choose(g, fwd, u, dist, int(dist[u]) - 1, emask)
                if e < 0:
                    ok = False
                    break
                edges.append(e)
                u = int(g.dst[e])
            if not ok:
                continue
            hows = {int(g.how[e]) & 3 for e in edges}
            shown = edges
            if len(edges) > MAX_STEPS:              # a chain down a long list: its ends
                h = MAX_STEPS // 2
                shown = edges[:h] + edges[-h:]
            steps = chain_steps(g, shown)
            if len(shown) < len(edges):
                k = MAX_STEPS // 2 + 1
                steps = steps[:k] + [f"... ({len(edges) - len(shown)} more steps) ..."] + steps[k:]
            chains.append({"root": g.node(r).label, "steps": steps, "text": render(steps),
                           "expression": expression(g, edges) if len(edges) <= MAX_STEPS else None,
                           "how": "conservative" if CONSERVATIVE in hows or not g.node(r).precise
                           else ("ambiguous" if AMBIGUOUS in hows else "precise"),
                           "length": len(edges), "edges": [_edge_json(g, e) for e in shown]})
        if chains:
            break
    out["chains"] = chains
    out["reachable"] = bool(classify(g).reach_any[ci])
    if not chains:
        incoming = np.nonzero(g.dst == ci)[0][:10].tolist()
        out["pointed_to_by"] = [_edge_json(g, e) for e in incoming]
    return out


def _tree(g: Graph):
    t = g._cache.get("tree")
    if t is None:
        from .leaks import classify
        c = classify(g)
        t = (c.csr, bfs_tree(c.csr, c.roots))
        g._cache["tree"] = t
    return t


def holder_path(g: Graph, e: int) -> List[str]:
    """Steps from a root to the holder of edge e, then e's own step (a shortest chain)."""
    return chain_steps(g, holder_edges(g, e))


def expression(g: Graph, edges: List[int]) -> Optional[str]:
    """A C-like expression for a chain that starts at a variable: "g_cache.entries[3]->next"."""
    if not edges:
        return None
    s = int(g.src[edges[0]])
    if s < g.n or g.node(s).var is None:
        return None
    nd = g.node(s)
    sid = int(g.sid[edges[0]])
    text = nd.var.name + (g.types.slots[sid].slot.path if sid >= 0 else "")
    for e in edges[1:]:
        t = step(g, e)
        if t:
            text += t.split(" (")[0]
    return text


def holder_edges(g: Graph, e: int) -> List[int]:
    """The edges of a shortest chain from a root to edge e's holder, then e."""
    csr, via = _tree(g)
    edges = [e]
    u = int(g.src[e])
    guard = 0
    while u < g.n_nodes and via[u] >= 0 and guard < 10_000:
        pe = int(csr.eid[via[u]])
        edges.append(pe)
        u = int(g.src[pe])
        guard += 1
    edges.reverse()
    return edges
