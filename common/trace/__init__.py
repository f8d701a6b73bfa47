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


def trace_target(target, snaps=None, conservative: bool = False, stack: str = "frames", roots=None):
    """Everything at once for a Target: (graph, RootSet). snaps default to the session's walk."""
    from ..memcache import CachedReader
    if snaps is None:
        from ..session import snapshots
        snaps = snapshots(target)[0]
    rs = roots if roots is not None else target_roots(target, snaps, stack=stack, conservative=conservative)
    g = build_graph(snaps, rs.variables, target.type_layout, CachedReader(target), conservative=conservative,
                    extra_roots=rs.extra)
    g.notes = list(rs.notes) + g.notes
    g.stats.update({f"roots_{k}": v for k, v in rs.stats.items()})
    return g, rs
