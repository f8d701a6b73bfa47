"""Leaks in the categories valgrind users know, and stale pointers found while tracing.

- reachable: a chain of pointers to chunk starts leads from a root to it;
- possibly lost: reached from the roots, but every chain has an interior pointer in it;
- definitely lost: no root reaches it and no other lost chunk points to it (for a cycle of lost
  chunks, valgrind's rule: the first in address order stands for the cycle);
- indirectly lost: no root reaches it, but a lost chunk points to it.

Every chunk has the type a typed pointer gave it, when one did. Nothing reachable points to a
lost chunk, so its type can only be guessed: from its size against the types met while tracing
(one candidate only), then along the guessed type's own pointer fields into the chunks it
loses with it. Guesses say so ("how": "size" / "guessed owner").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ..report import Finding, fmt_size
from .graph import CONSERVATIVE, SLACK, Graph
from .reach import CSR, cliques, reach_bits

MAX_LISTED = 200            # chunks listed per category
MAX_FINDINGS = 50
MAX_GUESSED = 200_000       # lost chunks typed by guessing at most


@dataclass
class Classes:
    roots: np.ndarray           # root node ids
    reach_any: np.ndarray       # bool per node
    reach_start: np.ndarray
    reach_precise: np.ndarray
    lost: np.ndarray            # bool per chunk
    leader: np.ndarray          # bool per node: definitely lost
    owner: np.ndarray           # clique leader per node (-1)
    possibly: np.ndarray        # bool per chunk
    objects: np.ndarray         # bool per chunk: counted objects (not allocator-internal)
    csr: CSR


def classify(g: Graph) -> Classes:
    c = g._cache.get("classes")
    if c is not None:
        return c
    N, n = g.n, g.n_nodes
    live = g.live_edges()
    csr = CSR(n, g.src, g.dst, live)
    rn = [nd for nd in g.nodes if nd.kind != "extern"]
    roots = np.array([nd.id for nd in rn], dtype=np.int64)
    # one walk, three questions: bit 0 reached at all, bit 1 through chunk starts only,
    # bit 2 through precise pointers from precise roots only
    ebits = (1 | ((g.doff == 0).astype(np.uint8) << 1)
             | (((g.how & 3) != CONSERVATIVE).astype(np.uint8) << 2)).astype(np.uint8)
    sbits = np.array([3 | (4 if nd.precise else 0) for nd in rn], dtype=np.uint8)
    state = reach_bits(csr, roots, sbits, ebits)
    any_, start, precise = (state & 1) != 0, (state & 2) != 0, (state & 4) != 0
    objects = g.chunks.obj & ~g.internal
    lost = np.zeros(n, dtype=bool)
    lost[:N] = objects & ~any_[:N]
    leader, owner = cliques(csr, lost, np.arange(N, dtype=np.int64))
    possibly = objects & any_[:N] & ~start[:N]
    c = Classes(roots, any_, start, precise, lost[:N], leader[:N] & lost[:N], owner[:N], possibly, objects, csr)
    g._cache["classes"] = c
    return c


def category(g: Graph, ci: int) -> str:
    c = classify(g)
    if not c.objects[ci]:
        return "allocator" if g.internal[ci] else g.chunks.state_name(ci)
    if c.leader[ci]:
        return "definitely"
    if c.lost[ci]:
        return "indirectly"
    if c.possibly[ci]:
        return "possibly"
    return "reachable"


# --- type guesses for lost chunks ------------------------------------------------------------
def guess_types(g: Graph) -> Dict[int, tuple]:
    """chunk -> (type name, how) for lost chunks: ("struct node", "size") or ("...", "guessed owner")."""
    cached = g._cache.get("guesses")
    if cached is not None:
        return cached
    c = classify(g)
    out: Dict[int, tuple] = {}
    cands = []
    for ct in g.types.types:
        if ct.compiled and not ct.opaque and not ct.synthetic and ct.size > 0 and ct.fixed is not None \
                and len(ct.fixed) and ct.simple:
            cands.append(ct)
    if not cands:
        g._cache["guesses"] = out
        return out
    sizes = np.array([ct.size for ct in cands], dtype=np.int64)
    lost = np.nonzero(c.lost)[0][:MAX_GUESSED]
    us = g.chunks.usable[lost]
    fit = (sizes[None, :] <= us[:, None]) & (us[:, None] - sizes[None, :] < 24) if lost.size else None
    if fit is None:
        g._cache["guesses"] = out
        return out
    nfit = fit.sum(axis=1)
    one = np.nonzero(nfit == 1)[0]
    which = fit[one].argmax(axis=1)
    tid_of: Dict[int, int] = {}
    for ci, k in zip(lost[one].tolist(), which.tolist()):
        out[ci] = (cands[k].name, "size")
        tid_of[ci] = cands[k].tid
    # along the guessed types' pointer fields, into the chunks lost with them
    csr = c.csr
    stack = list(tid_of.items())
    seen = set(tid_of)
    while stack and len(seen) < MAX_GUESSED:
        ci, t = stack.pop()
        ct = g.types.get(t)
        slots = {so: tt for so, _, tt, amb in ct.fixed.py if not amb}
        for p in range(int(csr.indptr[ci]), int(csr.indptr[ci + 1])):
            e = int(csr.eid[p])
            d = int(g.dst[e])
            if d >= g.n or not c.lost[d] or g.doff[e] != 0:
                continue
            so = int(g.soff[e])
            tt = slots.get(so)
            if tt is None or tt < 0:
                continue
            name = g.types.name(tt)
            prev = out.get(d)
            if prev is None or (prev[1] == "size" and d not in seen):
                out[d] = (name, "guessed owner")
                if d not in seen:
                    seen.add(d)
                    stack.append((d, tt))
    g._cache["guesses"] = out
    return out


def type_info(g: Graph, ci: int):
    """(type name or None, how): how is "pointer", "interior pointer", "text", "size", "guessed owner"."""
    t = int(g.ctype[ci])
    if t >= 0:
        return g.types.name(t), "pointer"
    views = g.itypes.get(ci)
    if views:
        off, t = views[0]
        return (g.types.name(t) + (f" (at +{off})" if off else "")), "interior pointer" if off else "pointer"
    if g.text[ci]:
        return "char[] (text)", "text"
    gs = guess_types(g).get(ci)
    if gs is not None:
        return gs
    return None, None


# --- the report ---------------------------------------------------------------------------------
def _chunk_entry(g: Graph, ci: int) -> dict:
    ch = g.chunks
    name, how = type_info(g, ci)
    d = {"address": int(ch.user[ci]), "size": int(ch.usable[ci]), "chunk": ch.chunk_json(ci), "type": name}
    if how:
        d["type_how"] = how
    return d


def _interior_refs(g: Graph, ci: int, c: Classes, k: int = 3, edges=None) -> List[dict]:
    if edges is None:
        edges = np.nonzero((g.dst == ci) & (g.doff != 0))[0]
    out = []
    for e in list(edges)[:k]:
        s = int(g.src[e])
        if not c.reach_any[s]:
            continue
        out.append({"from": _holder(g, s), "offset": int(g.doff[e]), "how": _how(int(g.how[e]))})
    return out


def _interior_index(g: Graph, chunks: np.ndarray) -> Dict[int, List[int]]:
    """chunk -> edges pointing into its middle, for the chunks listed (one pass over the edges)."""
    if chunks.size == 0:
        return {}
    want = np.zeros(g.n_nodes, dtype=bool)
    want[chunks] = True
    idx = np.nonzero(want[g.dst] & (g.doff != 0))[0]
    out: Dict[int, List[int]] = {}
    for e, d in zip(idx.tolist(), g.dst[idx].tolist()):
        lst = out.setdefault(d, [])
        if len(lst) < 8:
            lst.append(e)
    return out


def _holder(g: Graph, nid: int) -> str:
    if nid < g.n:
        name, _ = type_info(g, nid)
        return f"chunk {int(g.chunks.user[nid]):#x}" + (f" ({name})" if name else "")
    return g.node(nid).label


def _how(h: int) -> str:
    base = {0: "precise", 1: "ambiguous", 2: "conservative"}.get(h & 3, "?")
    return base + (" (slack)" if h & SLACK else "")


def leaks(g: Graph, baseline: Optional[Graph] = None, limit: int = MAX_LISTED) -> dict:
    """The leak report: summary, chunks per category (largest first, `limit` each), totals by
    type, findings. `baseline`: another graph of the same snapshot (conservative=True) to
    compare with: each chunk then says what the other approach concluded."""
    c = classify(g)
    ch = g.chunks
    N = g.n
    definitely = c.leader
    indirectly = c.lost & ~c.leader
    cats = {"definitely": definitely, "indirectly": indirectly, "possibly": c.possibly}
    usable = ch.usable
    bclass = classify(baseline) if baseline is not None else None
    same = baseline is not None and baseline.n == N and bool(np.array_equal(baseline.chunks.user, ch.user))

    def other(ci):
        if bclass is None or not same:
            return None
        return category(baseline, ci)

    # indirect counts per leader
    own = c.owner
    ind_cnt = np.bincount(own[indirectly], minlength=N) if indirectly.any() else np.zeros(N, dtype=np.int64)
    ind_bytes = np.bincount(own[indirectly], weights=usable[indirectly], minlength=N) if indirectly.any() \
        else np.zeros(N)
    out = {"mode": "conservative" if g.conservative else "precise"}
    summary = {}
    lists = {}
    tops = {}
    for name, m in cats.items():
        idx = np.nonzero(m)[0]
        summary[name] = {"count": int(idx.size), "bytes": int(usable[idx].sum())}
        weight = usable[idx] + (ind_bytes[idx].astype(np.int64) if name == "definitely" else 0)
        tops[name] = idx[np.argsort(-weight, kind="stable")[:limit]]
    inward = _interior_index(g, tops["possibly"])
    for name in cats:
        top = tops[name]
        entries = []
        for ci in top.tolist():
            e = _chunk_entry(g, ci)
            if name == "definitely":
                e["indirect"] = {"count": int(ind_cnt[ci]), "bytes": int(ind_bytes[ci])}
            elif name == "indirectly":
                ld = int(own[ci])
                if ld >= 0:
                    e["leader"] = int(ch.user[ld])
            else:
                e["interior"] = _interior_refs(g, ci, c, edges=inward.get(ci, []))
            o = other(ci)
            if o is not None:
                e["conservative" if not g.conservative else "precise"] = o
            entries.append(e)
        lists[name] = entries
    held = c.objects & c.reach_any[:N] & ~c.possibly
    summary["reachable"] = {"count": int(held.sum()), "bytes": int(usable[held].sum())}
    if not g.conservative:
        cons_only = c.objects & c.reach_any[:N] & ~c.reach_precise[:N]
        summary["reachable_conservatively_only"] = {"count": int(cons_only.sum()),
                                                    "bytes": int(usable[cons_only].sum())}
    summary["allocator_internal"] = {"count": int(g.internal.sum()), "bytes": int(usable[g.internal].sum())}
    out["summary"] = summary
    out["definitely_lost"] = lists["definitely"]
    out["indirectly_lost"] = lists["indirectly"]
    out["possibly_lost"] = lists["possibly"]
    out["by_type"] = _by_type(g, cats)
    if bclass is not None and same:
        out["comparison"] = _compare(g, baseline, c, bclass, limit)
    out["findings"] = [f.to_json() for f in leak_findings(g, limit=MAX_FINDINGS)]
    out["roots"] = root_summary(g)
    out["stats"] = dict(g.stats)
    out["notes"] = list(g.notes)
    return out


def _by_type(g: Graph, cats) -> List[dict]:
    """Counts and bytes per (category, inferred type), vectorised over the chunks."""
    usable = g.chunks.usable
    names: List[tuple] = [("?", None)]
    index: Dict[tuple, int] = {("?", None): 0}

    def code(key) -> int:
        k = index.get(key)
        if k is None:
            k = index[key] = len(names)
            names.append(key)
        return k
    N = g.n
    tcode = np.zeros(N, dtype=np.int64)
    typed = np.nonzero(g.ctype >= 0)[0]
    if typed.size:
        tids = np.unique(g.ctype[typed])
        lut = np.zeros(int(tids.max()) + 1, dtype=np.int64)
        for t in tids.tolist():
            lut[t] = code((g.types.name(t), "pointer"))
        tcode[typed] = lut[g.ctype[typed]]
    rest = set()
    for m in cats.values():
        rest.update(np.nonzero(m & (g.ctype < 0))[0].tolist())
    for ci in rest:
        t, how = type_info(g, ci)
        if t is not None:
            tcode[ci] = code((t, how))
    out = []
    for cname, m in cats.items():
        idx = np.nonzero(m)[0]
        if idx.size == 0:
            continue
        cnt = np.bincount(tcode[idx], minlength=len(names))
        byt = np.bincount(tcode[idx], weights=usable[idx], minlength=len(names))
        for k in np.nonzero(cnt)[0].tolist():
            t, how = names[k]
            out.append({"category": cname, "type": t, "type_how": how, "count": int(cnt[k]), "bytes": int(byt[k])})
    out.sort(key=lambda r: (-r["bytes"], r["category"], r["type"]))
    return out


def _compare(g: Graph, b: Graph, c: Classes, bc: Classes, limit: int) -> dict:
    """Chunks the two approaches disagree on."""
    lost_a = c.lost | c.possibly
    lost_b = bc.lost | bc.possibly
    only_a = np.nonzero(lost_a & ~lost_b & c.objects)[0]
    only_b = np.nonzero(lost_b & ~lost_a & c.objects)[0]
    me, them = ("precise", "conservative") if not g.conservative else ("conservative", "precise")
    return {f"lost_{me}_reachable_{them}": {"count": int(only_a.size), "bytes": int(g.chunks.usable[only_a].sum()),
                                           "chunks": [_chunk_entry(g, ci) for ci in only_a[:limit].tolist()]},
            f"lost_{them}_reachable_{me}": {"count": int(only_b.size), "bytes": int(g.chunks.usable[only_b].sum()),
                                           "chunks": [_chunk_entry(g, ci) for ci in only_b[:limit].tolist()]}}


def root_summary(g: Graph) -> dict:
    kinds: Dict[str, int] = {}
    for nd in g.nodes:
        if nd.kind != "extern":
            kinds[nd.kind] = kinds.get(nd.kind, 0) + 1
    opt = sum(1 for nd in g.nodes if nd.var is not None and nd.var.optimized_out)
    placed = sum(1 for nd in g.nodes if nd.var is not None and not nd.var.optimized_out)
    return {"by_kind": kinds, "variables_placed": placed, "variables_optimized_out": opt,
            "conservative_roots": sum(1 for nd in g.nodes if nd.extra is not None and not nd.precise)}


# --- findings --------------------------------------------------------------------------------------
def leak_findings(g: Graph, limit: int = MAX_FINDINGS) -> List[Finding]:
    c = classify(g)
    ch = g.chunks
    usable = ch.usable
    out: List[Finding] = []
    lead = np.nonzero(c.leader)[0]
    ind = c.lost & ~c.leader
    own = c.owner
    ind_cnt = np.bincount(own[ind], minlength=g.n) if ind.any() else np.zeros(g.n, dtype=np.int64)
    ind_bytes = np.bincount(own[ind], weights=usable[ind], minlength=g.n) if ind.any() else np.zeros(g.n)
    weight = usable[lead] + ind_bytes[lead].astype(np.int64)
    order = lead[np.argsort(-weight, kind="stable")]
    mode = "conservative scan" if g.conservative else "precise tracing"
    for ci in order[:limit].tolist():
        name, how = type_info(g, ci)
        t = f" {name}" if name else ""
        guess = " (type guessed from its size)" if how in ("size", "guessed owner") else ""
        extra = (f", and {int(ind_cnt[ci])} more chunk(s) ({fmt_size(int(ind_bytes[ci]))}) reachable only "
                 f"through it") if ind_cnt[ci] else ""
        ev = [f"no pointer from a root reaches it ({mode})",
              "nothing else points to it" if not _has_lost_in(g, ci, c) else
              "only other lost chunks point to it (a cycle: it stands for the cycle)"]
        if guess:
            ev.append(f"type{t}{guess}")
        out.append(Finding("leak", "warning", int(ch.user[ci]),
                           f"definitely lost: {fmt_size(int(usable[ci]))}{t} at {int(ch.user[ci]):#x}{extra}",
                           ev, ch.chunk_json(ci), None, "trace-leak"))
    if lead.size > limit:
        out.append(Finding("leak", "info", None, f"{lead.size - limit} more definitely lost chunk(s) not listed",
                           [], None, None, "cap"))
    pos = np.nonzero(c.possibly)[0]
    for ci in pos[np.argsort(-usable[pos], kind="stable")][:max(0, limit // 5)].tolist():
        refs = _interior_refs(g, ci, c, 1)
        name, _ = type_info(g, ci)
        ev = ["reached from the roots only through pointers into its middle"]
        if refs:
            ev.append(f"{refs[0]['from']} points {refs[0]['offset']} bytes into it ({refs[0]['how']})")
        out.append(Finding("leak", "info", int(ch.user[ci]),
                           f"possibly lost: {fmt_size(int(usable[ci]))}{' ' + name if name else ''} at "
                           f"{int(ch.user[ci]):#x}", ev, ch.chunk_json(ci), None, "trace-possible"))
    return out


def _has_lost_in(g: Graph, ci: int, c: Classes) -> bool:
    m = g.dst == ci
    if not m.any():
        return False
    s = g.src[m]
    s = s[s < g.n]
    return bool(c.lost[s].any()) if s.size else False


def stale_findings(g: Graph, limit: int = MAX_FINDINGS) -> List[Finding]:
    """use-after-free: precise pointers (field paths) into free, cached or top chunks, held by
    something the roots reach."""
    from .why import chain_steps, expression, holder_edges, render
    c = classify(g)
    ch = g.chunks
    d = g.dst
    isch = d < g.n
    stale = np.zeros(g.n_edges, dtype=bool)
    stale[isch] = ~ch.obj[d[isch]]
    stale &= (g.how & 3) != CONSERVATIVE
    stale &= c.reach_any[g.src]
    idx = np.nonzero(stale)[0]
    out: List[Finding] = []
    for e in idx[:limit].tolist():
        ci = int(d[e])
        h = int(g.how[e])
        chain = holder_edges(g, e)
        path = chain_steps(g, chain)
        state = ch.state_name(ci)
        where = ch.where(ci)
        sev = "info" if (h & 3) == 1 or h & SLACK else "warning"
        expr = expression(g, chain)
        who = _who(g, chain, expr) or render(path)
        ev = [f"{render(path)} = {int(ch.user[ci]) + int(g.doff[e]):#x}", f"the chunk is {state}: {where}"]
        if (h & 3) == 1:
            ev.append("held in a union: it may not be a pointer at all")
        if h & SLACK:
            ev.append("read from the chunk's last bytes, which may be malloc's rounding rather than the program's")
        var = None
        first = int(g.src[chain[0]])
        if first >= g.n and g.node(first).var is not None:
            v = g.node(first).var
            var = {"name": expr or v.name, "kind": v.kind, "thread": v.thread, "tid": v.tid,
                   "frame": v.frame, "function": v.function}
        out.append(Finding("use-after-free", sev, int(ch.user[ci]),
                           f"{who} points to freed memory [{state}: {where}]",
                           ev, ch.chunk_json(ci), var,
                           "trace-stale"))
    if idx.size > limit:
        out.append(Finding("use-after-free", "info", None, f"{idx.size - limit} more stale pointers not listed",
                           [], None, None, "cap"))
    return out


def _who(g: Graph, chain: List[int], expr: Optional[str]) -> Optional[str]:
    """program.check's wording: "global g->p" or "p->next (local of main, thread 1, frame 0)"."""
    if not expr:
        return None
    v = g.node(int(g.src[chain[0]])).var
    if v.kind == "global":
        return f"global {expr}"
    return f"{expr} ({v.kind} of {v.function or '??'}, thread {v.thread}, frame {v.frame})"
