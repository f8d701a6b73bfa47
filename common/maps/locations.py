"""The location map: for each function of one ELF file, its pc ranges, frame base, nested
scopes (lexical blocks with their own ranges, inlined subroutines with their abstract origin's
names) and the parameters and locals of each scope with their DWARF locations (a single
expression, a location list already resolved to link-time pc ranges, or a constant), plus the
call sites (return pc -> parameter register -> value expression) that resolve
DW_OP_entry_value the way gdb does.

Addresses here are link-time (file) addresses: the consumer subtracts the load bias from a
runtime pc before a lookup, and `exprs.Context.bias` adds it back for DW_OP_addr.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import exprs
from .exprs import Context, Loc

S_FUNCTION, S_BLOCK, S_INLINE = 0, 1, 2
V_ARG, V_LOCAL, V_STATIC = 0, 1, 2
L_NONE, L_EXPR, L_LIST, L_CONST, L_BYTES = 0, 1, 2, 3, 4
KIND_WORDS = {V_ARG: "arg", V_LOCAL: "local", V_STATIC: "local"}


@dataclass
class ScopeVars:
    """One (virtual) frame's variables at a pc: an inlined subroutine or the function itself."""
    scope: int                   # index of the inline/function scope
    function: str
    inlined: bool
    variables: List[int]         # variable indices, innermost block first, deduplicated by name


class LocationMap:
    COLUMNS = ("f_scope0", "f_scope1", "f_fb_kind", "f_fb", "f_die", "f_lo",
               "r_lo", "r_hi", "r_func",
               "s_kind", "s_parent", "s_rstart", "s_rcount", "sr_lo", "sr_hi", "s_vstart", "s_vcount",
               "v_type", "v_kind", "v_lkind", "v_loc",
               "l_start", "l_count", "e_lo", "e_hi", "e_expr",
               "c_pc", "c_pstart", "c_pcount", "cp_reg", "cp_expr",
               "cf_lo", "cf_hi", "cf_reg", "cf_off")
    STRINGS = ("s_name", "v_name", "c_target")

    def __init__(self, cols: Dict[str, list], blobs: List[bytes]):
        for c in self.COLUMNS + self.STRINGS:
            setattr(self, c, cols.get(c, []))
        self.blobs = blobs
        self._calls: Optional[Dict[int, int]] = None

    # --- lookups --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.f_scope0)

    @property
    def variable_count(self) -> int:
        return len(self.v_name)

    def function_at(self, link_pc: int) -> Optional[int]:
        """The function whose ranges contain link_pc (ranges do not overlap in sane DWARF; with
        overlap, the one with the latest start wins)."""
        i = bisect.bisect_right(self.r_lo, link_pc) - 1
        for j in range(i, max(i - 8, -1), -1):      # a few back: ranges may nest (GNU C nested functions)
            if self.r_lo[j] <= link_pc < self.r_hi[j]:
                return self.r_func[j]
        return None

    def function_name(self, f: int) -> str:
        return self.s_name[self.f_scope0[f]]

    def _in(self, s: int, pc: int) -> bool:
        a = self.s_rstart[s]
        for r in range(a, a + self.s_rcount[s]):
            if self.sr_lo[r] <= pc < self.sr_hi[r]:
                return True
        return False

    def scope_chain(self, f: int, link_pc: int) -> List[int]:
        """Scopes of function f containing link_pc, outermost (the function) first."""
        chain = [self.f_scope0[f]]
        inside = {chain[0]}
        for s in range(self.f_scope0[f] + 1, self.f_scope1[f]):
            if self.s_parent[s] in inside and self._in(s, link_pc):
                chain.append(s)
                inside.add(s)
        return chain

    def frames_at(self, link_pc: int) -> List[ScopeVars]:
        """The virtual frames at link_pc, innermost first (inlined subroutines, then the function),
        each with the variables gdb would list for it: its own blocks' variables from the
        innermost block outwards, a name shadowing the same name further out."""
        f = self.function_at(link_pc)
        if f is None:
            return []
        chain = self.scope_chain(f, link_pc)
        out: List[ScopeVars] = []
        level: List[int] = []
        for s in reversed(chain):
            level.append(s)
            if self.s_kind[s] in (S_FUNCTION, S_INLINE):
                seen = set()
                vars_: List[int] = []
                for sc in level:
                    a = self.s_vstart[sc]
                    for v in range(a, a + self.s_vcount[sc]):
                        nm = self.v_name[v]
                        if nm in seen:
                            continue
                        seen.add(nm)
                        vars_.append(v)
                out.append(ScopeVars(s, self.s_name[s], self.s_kind[s] == S_INLINE, vars_))
                level = []
        return out

    def _pick(self, kind: int, idx: int, link_pc: int) -> Optional[bytes]:
        if kind == L_EXPR:
            return self.blobs[idx]
        if kind == L_LIST:
            a = self.l_start[idx]
            default = None
            for e in range(a, a + self.l_count[idx]):
                lo = self.e_lo[e]
                if lo < 0:
                    default = self.blobs[self.e_expr[e]]
                elif lo <= link_pc < self.e_hi[e]:
                    return self.blobs[self.e_expr[e]]
            return default
        return None

    def frame_base_expr(self, f: int, link_pc: int) -> Optional[bytes]:
        return self._pick(self.f_fb_kind[f], self.f_fb[f], link_pc)

    def var_location(self, v: int, link_pc: int, ctx: Context) -> Loc:
        """Where variable v is at link_pc, evaluated with ctx (registers, CFA, memory)."""
        lk = self.v_lkind[v]
        if lk == L_NONE:
            return exprs.optimized_out("no location (optimized out)")
        if lk == L_CONST:
            return Loc("value", value=self.v_loc[v] & exprs.M64)
        if lk == L_BYTES:
            return Loc("implicit", data=self.blobs[self.v_loc[v]])
        e = self._pick(lk, self.v_loc[v], link_pc)
        if e is None:
            return exprs.optimized_out("no location at this pc")
        return exprs.evaluate(e, ctx)

    def call_site(self, link_return_pc: int) -> Optional[int]:
        if self._calls is None:
            self._calls = {pc: i for i, pc in enumerate(self.c_pc)}
        return self._calls.get(link_return_pc)

    def call_site_value(self, c: int, regno: int) -> Optional[bytes]:
        a = self.c_pstart[c]
        for p in range(a, a + self.c_pcount[c]):
            if self.cp_reg[p] == regno:
                return self.blobs[self.cp_expr[p]]
        return None

    def cfa_rule(self, link_pc: int) -> Optional[Tuple[int, int]]:
        """(DWARF register, offset) of the CFA rule at link_pc from the unwind tables (.eh_frame),
        or None (no FDE, or an expression rule)."""
        i = bisect.bisect_right(self.cf_lo, link_pc) - 1
        if i < 0 or not link_pc < self.cf_hi[i] or self.cf_reg[i] < 0:
            return None
        return self.cf_reg[i], self.cf_off[i]

    def describe_var(self, v: int) -> Tuple[str, str]:
        return self.v_name[v], KIND_WORDS.get(self.v_kind[v], "local")
