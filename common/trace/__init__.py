"""Precise pointer tracing: the typed pointer graph of a heap snapshot, leaks, who points where.

    from common.trace import build_graph, leaks, why, to_dot, to_json, target_roots
    rs = target_roots(target, snaps)                       # roots from the debugger / maps
    g = build_graph(snaps, rs.variables, target.type_layout, CachedReader(target),
                    extra_roots=rs.extra)
    leaks(g)                 # definitely / indirectly / possibly lost, by type
    why(g, address)          # shortest chains from roots, with field paths
    to_json(g, around=address, depth=2), to_dot(g)

See graph.py for the model, roots.py for where tracing starts, leaks.py for the categories.
"""
from .graph import AMBIGUOUS, CONSERVATIVE, PRECISE, SLACK, Graph, Node, build_graph
from .leaks import category, classify, leak_findings, leaks, stale_findings, type_info
from .export import to_dot, to_json
from .roots import ExtraRoot, RootSet, target_roots
from .why import why

__all__ = ["build_graph", "leaks", "why", "to_dot", "to_json", "target_roots", "trace_target",
           "ExtraRoot", "RootSet", "Graph", "Node", "classify", "category", "leak_findings",
           "stale_findings", "type_info", "PRECISE", "AMBIGUOUS", "CONSERVATIVE", "SLACK"]


def trace_target(target, snaps=None, conservative: bool = False, stack: str = "frames", roots=None,
                 source: str = "maps"):
    """Everything at once for a Target: (graph, RootSet). snaps default to the session's walk.
    source="maps": roots placed by the program's DWARF maps (the debugger only unwinds);
    "debugger": the debugger's own view of variables and types (also the fallback when the
    program has no DWARF)."""
    from ..memcache import CachedReader
    if snaps is None:
        from ..session import snapshots
        snaps = snapshots(target)[0]
    reader = CachedReader(target)
    resolve, notes, mstats = target.type_layout, [], {}
    if roots is None:
        frames = glob = described = None
        if source == "maps":
            from .maproots import map_roots
            try:
                mr = map_roots(target, reader.read)
            except Exception as e:             # a decoder bug must not cost the report: say so, fall back
                mr = None
                notes.append(f"the DWARF maps could not be used ({type(e).__name__}: {e}); roots come from the "
                             "debugger's debug info instead")
            if mr is not None:
                frames, glob, resolve, mnotes, mstats, described = mr
                notes += mnotes
            elif not notes:
                notes.append("no DWARF maps for this program (no -g?): roots come from the debugger")
        roots = target_roots(target, snaps, frames=frames, globals_=glob, stack=stack, conservative=conservative,
                             described=described)
    g = build_graph(snaps, roots.variables, resolve, reader, conservative=conservative, extra_roots=roots.extra)
    g.notes = notes + list(roots.notes) + g.notes
    g.stats.update({f"roots_{k}": v for k, v in roots.stats.items()})
    g.stats.update({f"maps_{k}": v for k, v in mstats.items() if isinstance(v, (int, float, str))})
    return g, roots
