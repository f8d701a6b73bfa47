"""The graph as JSON (plain dicts: nodes, edges) and as Graphviz DOT, whole or around one chunk.

`around`: an address (the chunk holding it), or a root's name ("g_cache", "global g_cache");
`depth`: hops from it, following edges both ways (default 2 with `around`). Without `around`
the whole graph is exported, up to `max_nodes` nodes (the roots first, then chunks in address
order) with a note when it was cut.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import numpy as np

from .graph import Graph
from .why import _edge_json, step

DEFAULT_DEPTH = 2
MAX_NODES_JSON = 200_000
MAX_NODES_DOT = 5_000


def _seeds(g: Graph, around) -> List[int]:
    if isinstance(around, (int, np.integer)):
        ci = g.chunks.find_loose(int(around))
        if ci >= 0:
            return [ci]
        return [nd.id for nd in g.nodes if nd.address is not None and nd.address <= int(around) < nd.address
                + max(nd.size, 1)]
    name = str(around)
    return [nd.id for nd in g.nodes if nd.name == name or nd.label == name
            or nd.label.split(" (")[0] == name]


def select(g: Graph, around=None, depth: Optional[int] = None, max_nodes: int = MAX_NODES_JSON):
    """(node ids, edge indices, notes) of the part of the graph wanted."""
    notes = []
    n = g.n_nodes
    if around is None:
        roots = [nd.id for nd in g.nodes]
        keep_ch = np.nonzero(g.chunks.obj | np.isin(np.arange(g.n), g.dst[g.dst < g.n]))[0]
        nodes = np.concatenate([np.array(roots, dtype=np.int64), keep_ch.astype(np.int64)])
        if nodes.size > max_nodes:
            notes.append(f"graph cut to {max_nodes} of {nodes.size} nodes (use --around ADDRESS --depth N)")
            nodes = nodes[:max_nodes]
    else:
        seeds = _seeds(g, around)
        if not seeds:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), \
                [f"nothing in the graph matches {around if isinstance(around, str) else hex(int(around))}"]
        depth = DEFAULT_DEPTH if depth is None else max(0, int(depth))
        dist = np.full(n, -1, dtype=np.int32)
        dist[seeds] = 0
        frontier = np.array(seeds, dtype=np.int64)
        for d in range(1, depth + 1):
            fm = np.zeros(n, dtype=bool)
            fm[frontier] = True
            out_n = g.dst[fm[g.src]]
            in_n = g.src[fm[g.dst]]
            nb = np.unique(np.concatenate([out_n, in_n]))
            nb = nb[dist[nb] < 0]
            if nb.size == 0:
                break
            dist[nb] = d
            frontier = nb
            if int((dist >= 0).sum()) > max_nodes:
                notes.append(f"neighbourhood cut at depth {d} ({max_nodes} nodes at most)")
                break
        nodes = np.nonzero(dist >= 0)[0]
    inset = np.zeros(n, dtype=bool)
    inset[nodes] = True
    edges = np.nonzero(inset[g.src] & inset[g.dst])[0]
    return nodes, edges, notes


def _node_json(g: Graph, nid: int, cat=None) -> Dict:
    from .leaks import category, type_info
    if nid < g.n:
        ch = g.chunks
        t, how = type_info(g, nid)
        d = {"id": nid, "kind": "chunk", "address": int(ch.user[nid]), "size": int(ch.usable[nid]),
             "state": ch.state_name(nid), "type": t}
        if how:
            d["type_how"] = how
        if ch.obj[nid]:
            d["category"] = category(g, nid)
        return d
    return g.node(nid).json()


def to_json(g: Graph, around: Union[int, str, None] = None, depth: Optional[int] = None,
            max_nodes: int = MAX_NODES_JSON) -> Dict:
    nodes, edges, notes = select(g, around, depth, max_nodes)
    out_nodes = [_node_json(g, int(i)) for i in nodes.tolist()]
    out_edges = []
    for e in edges.tolist():
        d = _edge_json(g, e)
        d["src"], d["dst"] = int(g.src[e]), int(g.dst[e])
        del d["from"], d["to"]
        out_edges.append(d)
    return {"nodes": out_nodes, "edges": out_edges, "around": around, "depth": depth,
            "counts": {"nodes": len(out_nodes), "edges": len(out_edges), "graph_nodes": g.n_nodes,
                       "graph_edges": g.n_edges},
            "stats": dict(g.stats), "notes": notes + list(g.notes)}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_COLOR = {"definitely": "red", "indirectly": "orange", "possibly": "gold", "reachable": "black",
          "free": "gray", "cached": "gray", "top": "gray", "allocator": "blue"}


def to_dot(g: Graph, around: Union[int, str, None] = None, depth: Optional[int] = None,
           max_nodes: int = MAX_NODES_DOT) -> str:
    from .leaks import category, type_info
    nodes, edges, notes = select(g, around, depth, max_nodes)
    lines = ["digraph heap {", "  rankdir=LR;", '  node [fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=9];']
    for n in notes:
        lines.append(f"  // {n}")
    for nid in nodes.tolist():
        if nid < g.n:
            ch = g.chunks
            t, _ = type_info(g, nid)
            cat = category(g, nid) if ch.obj[nid] else ch.state_name(nid)
            label = f"{int(ch.user[nid]):#x}\n{t or '?'}\n{int(ch.usable[nid])} B"
            if cat != "reachable":
                label += f"\n{cat}"
            style = ', style=dashed' if not ch.obj[nid] else ""
            lines.append(f"  n{nid} [shape=box, label={_q(label)}, color={_COLOR.get(cat, 'black')}{style}];")
        else:
            nd = g.node(nid)
            shape = "ellipse" if nd.kind != "extern" else "box"
            style = ", style=dashed" if not nd.precise else ""
            lines.append(f"  n{nid} [shape={shape}, label={_q(nd.label)}{style}];")
    for e in edges.tolist():
        lab = step(g, e) or ""
        h = int(g.how[e]) & 3
        style = {0: "solid", 1: "dotted", 2: "dashed"}[h]
        d = int(g.dst[e])
        color = "gray" if d < g.n and not g.chunks.obj[d] else "black"
        lines.append(f"  n{int(g.src[e])} -> n{d} [label={_q(lab)}, style={style}, color={color}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
