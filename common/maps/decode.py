"""One pass over every DIE of an ELF file's DWARF (pyelftools) building the three maps.

The pass is per compilation unit; a CU that pyelftools (or this decoder) cannot read is
skipped and counted, never fatal. Everything referenced across DIEs (types, abstract origins,
specifications, call-site targets) is recorded by DIE offset and resolved after the pass.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

from . import exprs
from . import typemap as T
from .globals import G_EXTERNAL, G_FUNC_STATIC, G_TLS, GlobalMap
from .locations import (L_BYTES, L_CONST, L_EXPR, L_LIST, L_NONE, S_BLOCK, S_FUNCTION, S_INLINE,
                        V_ARG, V_LOCAL, V_STATIC, LocationMap)
from .typemap import TypeMap

MAX_FAILURE_NOTES = 5

_TYPE_TAGS = {
    "DW_TAG_base_type": (T.K_BASE, 0),
    "DW_TAG_unspecified_type": (T.K_VOID, 0),
    "DW_TAG_pointer_type": (T.K_PTR, 0),
    "DW_TAG_reference_type": (T.K_PTR, T.F_REF),
    "DW_TAG_rvalue_reference_type": (T.K_PTR, T.F_RVALUE),
    "DW_TAG_ptr_to_member_type": (T.K_OTHER, 0),
    "DW_TAG_typedef": (T.K_TYPEDEF, 0),
    "DW_TAG_const_type": (T.K_QUAL, T.F_CONST),
    "DW_TAG_volatile_type": (T.K_QUAL, T.F_VOLATILE),
    "DW_TAG_restrict_type": (T.K_QUAL, T.F_RESTRICT),
    "DW_TAG_atomic_type": (T.K_QUAL, T.F_ATOMIC),
    "DW_TAG_immutable_type": (T.K_QUAL, 0),
    "DW_TAG_packed_type": (T.K_QUAL, 0),
    "DW_TAG_shared_type": (T.K_QUAL, 0),
    "DW_TAG_structure_type": (T.K_STRUCT, 0),
    "DW_TAG_class_type": (T.K_STRUCT, T.F_CLASS),
    "DW_TAG_interface_type": (T.K_STRUCT, 0),
    "DW_TAG_union_type": (T.K_UNION, 0),
    "DW_TAG_enumeration_type": (T.K_ENUM, 0),
    "DW_TAG_array_type": (T.K_ARRAY, 0),
    "DW_TAG_subroutine_type": (T.K_FUNC, 0),
    "DW_TAG_string_type": (T.K_OTHER, 0),
    "DW_TAG_set_type": (T.K_OTHER, 0),
    "DW_TAG_file_type": (T.K_OTHER, 0),
}
_CHILD_CTX_TYPES = (T.K_STRUCT, T.K_UNION, T.K_ENUM)

_LANG = {0x1: T.LANG_C, 0x2: T.LANG_C, 0xc: T.LANG_C, 0x1d: T.LANG_C, 0x2c: T.LANG_C,
         0x4: T.LANG_CXX, 0x1a: T.LANG_CXX, 0x1b: T.LANG_CXX, 0x21: T.LANG_CXX, 0x2a: T.LANG_CXX,
         0x2b: T.LANG_CXX, 0x1c: T.LANG_RUST}

_LOCAL_REF = ("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata")
_EXPR_FORMS = ("DW_FORM_exprloc", "DW_FORM_block", "DW_FORM_block1", "DW_FORM_block2", "DW_FORM_block4")
_CONST_FORMS = ("DW_FORM_data1", "DW_FORM_data2", "DW_FORM_data4", "DW_FORM_data8", "DW_FORM_sdata",
                "DW_FORM_udata", "DW_FORM_implicit_const", "DW_FORM_data16")
_WIDTH = {"DW_FORM_data1": 8, "DW_FORM_data2": 16, "DW_FORM_data4": 32, "DW_FORM_data8": 64}

# contexts (what the children of a DIE belong to)
C_CU, C_NS, C_TYPE, C_ARRAY, C_FUNCTYPE, C_VPART, C_VARIANT, C_SCOPE, C_ABSTRACT, C_CALL, C_SKIP = range(11)


class _Ctx:
    __slots__ = ("kind", "prefix", "owner", "scope", "func", "variant", "pops")

    def __init__(self, kind, prefix="", owner=-1, scope=-1, func=-1, variant=T.V_NONE, pops=None):
        self.kind, self.prefix, self.owner, self.scope, self.func = kind, prefix, owner, scope, func
        self.variant, self.pops = variant, pops


_C_BASE_NAMES = {"long unsigned int": "unsigned long", "long int": "long", "short int": "short",
                 "short unsigned int": "unsigned short", "long long int": "long long",
                 "long long unsigned int": "unsigned long long"}


def _str(attr) -> str:
    if attr is None:
        return ""
    v = attr.value
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else ""


class Decoder:
    """Collects the raw records of one file; `finish()` turns them into the three maps."""

    def __init__(self, fid: str):
        self.fid = fid
        # types: [off, kind, flags, size, ref_off, own name, scope prefix]
        self.types: List[list] = []
        self.aux: Dict[int, list] = {}          # type off -> members / dims / params
        self.vparts: Dict[int, list] = {}       # type off -> [discr die off, [[vv_kind, value], ...]]
        # names and types of DIEs that others refer to: off -> [name, type_off, prefix, next_ref]
        self.origin: Dict[int, list] = {}
        self.abstract_children: Dict[int, List[Tuple[int, bool]]] = {}   # off -> [(child, is_block)]
        self.scope_refs: Dict[int, set] = {}    # concrete scope -> abstract origins of its direct children
        # location map records
        self.functions: List[list] = []         # [scope0, scope1, fb_kind, fb, die_off, lo]
        self.scopes: List[list] = []            # [kind, parent, ranges, func, die_off, origin_off]
        self.scope_vars: Dict[int, List[list]] = {}   # scope -> [[name, type_off, kind, lkind, loc, origin]]
        self.loclists: List[List[Tuple[int, int, int]]] = []
        self.calls: List[list] = []             # [return pc, target off, [(reg, expr idx)]]
        self.blobs: List[bytes] = []
        self._blob_idx: Dict[bytes, int] = {}
        # global map records: [name, type_off, addr, flags, func name, die_off, spec_off]
        self.globals: List[list] = []
        self.stats = {"cus": 0, "cus_failed": 0, "dies": 0, "unsupported_refs": 0, "imported_units": 0,
                      "virtual_bases": 0, "dynamic_members": 0, "discr_lists": 0}
        self.failures: List[str] = []

    # --- helpers ----------------------------------------------------------------------------
    def blob(self, b) -> int:
        b = bytes(b)
        i = self._blob_idx.get(b)
        if i is None:
            i = self._blob_idx[b] = len(self.blobs)
            self.blobs.append(b)
        return i

    def ref(self, attr, cu_off: int) -> int:
        """Absolute DIE offset of a reference attribute, -1 when absent, -2 when unsupported
        (a type unit signature, a supplementary file)."""
        if attr is None:
            return -1
        f = attr.form
        if f in _LOCAL_REF:
            return attr.value + cu_off
        if f == "DW_FORM_ref_addr":
            return attr.value
        self.stats["unsupported_refs"] += 1
        return -2

    # --- the pass ---------------------------------------------------------------------------
    def decode(self, dwarf) -> None:
        self.dwarf = dwarf
        try:
            self.rl = dwarf.range_lists()
        except Exception:       # broken range sections: ranges via low/high pc still work
            self.rl = None
        try:
            self.ll = dwarf.location_lists()
        except Exception:
            self.ll = None
        for off, cu, err in _units(dwarf):
            self.stats["cus"] += 1
            if cu is None:
                self.stats["cus_failed"] += 1
                if len(self.failures) < MAX_FAILURE_NOTES:
                    self.failures.append(f"CU at {off:#x}: {err}"[:300])
                continue
            marks = (len(self.functions), len(self.scopes), len(self.loclists), len(self.calls),
                     len(self.globals))
            try:
                self.cu(cu)
            except Exception as e:        # pyelftools or DWARF trouble: skip this CU, count it
                self.stats["cus_failed"] += 1
                if len(self.failures) < MAX_FAILURE_NOTES:
                    self.failures.append(f"CU at {off:#x}: {type(e).__name__}: {e}"[:300])
                f, s, lo, c, g = marks
                del self.functions[f:], self.loclists[lo:], self.calls[c:], self.globals[g:]
                for k in range(s, len(self.scopes)):
                    self.scope_vars.pop(k, None)
                del self.scopes[s:]
            finally:
                try:                      # free the DIE cache of the CU: memory stays flat
                    cu._dielist = []
                    cu._diemap = []
                except AttributeError:
                    pass

    def cu(self, cu) -> None:
        top = cu.get_top_DIE()
        a = top.attributes
        lang_attr = a.get("DW_AT_language")
        self.lang = _LANG.get(lang_attr.value if lang_attr is not None else 0, T.LANG_OTHER)
        self.lang_flags = self.lang << T.F_LANG_SHIFT
        self.cu_off = cu.cu_offset
        self.version = cu["version"]
        lo = a.get("DW_AT_low_pc")
        self.base = lo.value if lo is not None and isinstance(lo.value, int) else 0
        self.cur_cu = cu
        if top.tag == "DW_TAG_partial_unit" or top.tag == "DW_TAG_type_unit":
            pass
        stack: List[_Ctx] = []
        root = _Ctx(C_CU)
        first = True
        n = 0
        for die in cu.iter_DIEs():
            n += 1
            tag = die.tag
            if tag is None:
                if stack:
                    c = stack.pop()
                    if c.pops is not None:
                        c.pops()
                continue
            if first:
                first = False
                if die.has_children:
                    stack.append(root)
                continue
            parent = stack[-1] if stack else root
            ctx = self.die(die, tag, parent)
            if die.has_children:
                stack.append(ctx if ctx is not None else _Ctx(C_SKIP, parent.prefix))
            elif ctx is not None and ctx.pops is not None:
                ctx.pops()
        self.stats["dies"] += n

    def die(self, die, tag: str, parent: _Ctx) -> Optional[_Ctx]:
        tt = _TYPE_TAGS.get(tag)
        if tt is not None:
            return self.type_die(die, tt, parent)
        pk = parent.kind
        if tag == "DW_TAG_member" or tag == "DW_TAG_inheritance":
            if pk in (C_TYPE, C_VPART, C_VARIANT):
                self.member(die, tag, parent)
            return None
        if tag == "DW_TAG_subrange_type":
            if pk == C_ARRAY:
                self.subrange(die, parent.owner)
                return None
            return self.type_die(die, (T.K_OTHER, 0), parent)
        if tag == "DW_TAG_formal_parameter" or tag == "DW_TAG_variable":
            self.variable(die, tag, parent)
            return None
        if tag == "DW_TAG_unspecified_parameters":
            if pk == C_FUNCTYPE:
                self.types[parent.variant][2] |= T.F_VARARGS
            return None
        if tag == "DW_TAG_subprogram":
            return self.subprogram(die, parent)
        if tag == "DW_TAG_lexical_block":
            return self.block(die, parent)
        if tag == "DW_TAG_inlined_subroutine":
            return self.inlined(die, parent)
        if tag in ("DW_TAG_call_site", "DW_TAG_GNU_call_site"):
            return self.call_site(die, parent)
        if tag in ("DW_TAG_call_site_parameter", "DW_TAG_GNU_call_site_parameter"):
            if pk == C_CALL:
                self.call_param(die, parent)
            return None
        if tag == "DW_TAG_variant_part":
            return self.variant_part(die, parent)
        if tag == "DW_TAG_variant":
            if pk == C_VPART:
                vp = self.vparts.get(parent.owner)
                if parent.variant == T.V_AMBIGUOUS or vp is None:
                    return _Ctx(C_VARIANT, parent.prefix, parent.owner, variant=T.V_AMBIGUOUS)
                a = die.attributes
                dv = a.get("DW_AT_discr_value")
                if dv is not None and isinstance(dv.value, int):
                    vp[1].append([T.VV_VALUE, dv.value])
                elif "DW_AT_discr_list" in a:
                    self.stats["discr_lists"] += 1
                    vp[1].append([T.VV_LIST, 0])
                else:
                    vp[1].append([T.VV_DEFAULT, 0])
                return _Ctx(C_VARIANT, parent.prefix, parent.owner, variant=len(vp[1]) - 1)
            return None
        if tag in ("DW_TAG_namespace", "DW_TAG_module"):
            nm = _str(die.attributes.get("DW_AT_name")) or "(anonymous namespace)"
            return _Ctx(C_NS, parent.prefix + nm + "::")
        if tag == "DW_TAG_imported_unit":
            self.stats["imported_units"] += 1
        return None

    # --- types ------------------------------------------------------------------------------
    def type_die(self, die, tt, parent: _Ctx) -> Optional[_Ctx]:
        a = die.attributes
        kind, flags = tt
        flags |= self.lang_flags
        name = _str(a.get("DW_AT_name"))
        bs = a.get("DW_AT_byte_size")
        size = bs.value if bs is not None and isinstance(bs.value, int) else -1
        ref = self.ref(a.get("DW_AT_type"), self.cu_off)
        if "DW_AT_declaration" in a:
            flags |= T.F_DECL
        if kind == T.K_BASE:
            if self.lang in (T.LANG_C, T.LANG_CXX):
                name = _C_BASE_NAMES.get(name, name)      # gdb's spelling: "unsigned long"
            enc = a.get("DW_AT_encoding")
            e = enc.value if enc is not None else 0
            if e == 0x02:
                flags |= T.F_BOOL
            elif size == 1 and e in (0x05, 0x06, 0x07, 0x08, 0x10):
                flags |= T.F_CHAR1
        elif kind == T.K_PTR:
            if size < 0:
                size = 8
            if name and self.lang == T.LANG_RUST:
                flags |= T.F_NAMED_PTR               # "*const u8", "&str" (gdb prints Rust's own)
        elif kind == T.K_FUNC:
            if "DW_AT_prototyped" in a or self.lang != T.LANG_C:
                flags |= T.F_PROTOTYPED
        elif kind in _CHILD_CTX_TYPES and not name:
            flags |= T.F_ANON
        prefix = parent.prefix if self.lang != T.LANG_C else ""
        rec = [die.offset, kind, flags, size, ref, name, prefix]
        idx = len(self.types)
        self.types.append(rec)
        if not die.has_children:
            return None
        if kind in _CHILD_CTX_TYPES:
            sub = (parent.prefix + (name or "{...}") + "::") if self.lang != T.LANG_C else ""
            return _Ctx(C_TYPE, sub, die.offset)
        if kind == T.K_ARRAY:
            return _Ctx(C_ARRAY, parent.prefix, die.offset)
        if kind == T.K_FUNC:
            return _Ctx(C_FUNCTYPE, parent.prefix, die.offset, variant=idx)
        return _Ctx(C_SKIP, parent.prefix)

    def member(self, die, tag: str, parent: _Ctx) -> None:
        a = die.attributes
        if tag == "DW_TAG_member" and ("DW_AT_declaration" in a or "DW_AT_external" in a):
            self.origin[die.offset] = [_str(a.get("DW_AT_name")), self.ref(a.get("DW_AT_type"), self.cu_off),
                                       parent.prefix, -1, False]
            return                                  # a static member: storage elsewhere
        fl = 0
        if tag == "DW_TAG_inheritance":
            fl |= T.M_BASE
            v = a.get("DW_AT_virtuality")
            if v is not None and v.value:
                fl |= T.M_VIRTUAL
                self.stats["virtual_bases"] += 1
        if "DW_AT_bit_size" in a:
            fl |= T.M_BITFIELD
        if "DW_AT_artificial" in a:
            fl |= T.M_ARTIFICIAL
        loc = a.get("DW_AT_data_member_location")
        off = 0
        if loc is None:
            dbo = a.get("DW_AT_data_bit_offset")
            if dbo is not None and isinstance(dbo.value, int):
                off = dbo.value // 8
        elif loc.form in _EXPR_FORMS:
            off = _member_offset_expr(bytes(loc.value))
            if off is None:
                off = -1
                fl |= T.M_DYNAMIC
                self.stats["dynamic_members"] += 1
        elif isinstance(loc.value, int):
            off = loc.value
        var = parent.variant if parent.kind == C_VARIANT else T.V_NONE
        if parent.kind == C_VPART and parent.variant == T.V_AMBIGUOUS:
            var = T.V_AMBIGUOUS
        self.aux.setdefault(parent.owner, []).append(
            [_str(a.get("DW_AT_name")), off, self.ref(a.get("DW_AT_type"), self.cu_off), fl, var, die.offset])

    def subrange(self, die, owner: int) -> None:
        a = die.attributes
        count = -1
        c = a.get("DW_AT_count")
        if c is not None:
            if c.form in _CONST_FORMS and isinstance(c.value, int):
                count = c.value
        else:
            ub = a.get("DW_AT_upper_bound")
            if ub is not None and ub.form in _CONST_FORMS and isinstance(ub.value, int):
                u = ub.value
                w = _WIDTH.get(ub.form)
                if w == 64 and u >= 1 << 63:
                    u -= 1 << 64
                lbv = a.get("DW_AT_lower_bound")
                lb = lbv.value if lbv is not None and isinstance(lbv.value, int) else 0
                count = max(0, u - lb + 1)
        self.aux.setdefault(owner, []).append(["", count, -1, 0, T.V_NONE, die.offset])

    def variant_part(self, die, parent: _Ctx) -> _Ctx:
        if parent.kind != C_TYPE:
            return _Ctx(C_SKIP, parent.prefix)
        if parent.owner in self.vparts:            # a second variant part: not selectable
            return _Ctx(C_VPART, parent.prefix, parent.owner, variant=T.V_AMBIGUOUS)
        d = self.ref(die.attributes.get("DW_AT_discr"), self.cu_off)
        self.vparts[parent.owner] = [d, []]
        return _Ctx(C_VPART, parent.prefix, parent.owner)

    # --- locations --------------------------------------------------------------------------
    def ranges(self, die) -> List[Tuple[int, int]]:
        return die_ranges(die, self.rl, self.base, self.cur_cu)

    def location(self, attr, die) -> Tuple[int, int]:
        """(lkind, payload) for a DW_AT_location / DW_AT_frame_base attribute."""
        if attr is None:
            return L_NONE, 0
        if attr.form in _EXPR_FORMS:
            return L_EXPR, self.blob(attr.value)
        if self.ll is None:
            return L_NONE, 0
        entries = []
        base = self.base
        for e in self.ll.get_location_list_at_offset(attr.value, die):
            if hasattr(e, "base_address"):
                base = e.base_address
            elif hasattr(e, "loc_expr"):
                if e.begin_offset == -1 and e.end_offset == -1 and e.is_absolute:
                    entries.append((-1, -1, self.blob(e.loc_expr)))
                elif e.is_absolute:
                    entries.append((e.begin_offset, e.end_offset, self.blob(e.loc_expr)))
                else:
                    entries.append((base + e.begin_offset, base + e.end_offset, self.blob(e.loc_expr)))
        self.loclists.append(entries)
        return L_LIST, len(self.loclists) - 1

    def subprogram(self, die, parent: _Ctx) -> _Ctx:
        a = die.attributes
        off = die.offset
        abstract = self.ref(a.get("DW_AT_abstract_origin"), self.cu_off)
        nxt = self.ref(a.get("DW_AT_specification"), self.cu_off)
        if nxt == -1:
            nxt = abstract
        self.origin[off] = [_str(a.get("DW_AT_name")), self.ref(a.get("DW_AT_type"), self.cu_off),
                            parent.prefix, nxt, False]
        rng = [] if "DW_AT_declaration" in a else self.ranges(die)
        if not rng:
            return _Ctx(C_ABSTRACT, parent.prefix, off)
        f = len(self.functions)
        s = len(self.scopes)
        self.scopes.append([S_FUNCTION, -1, rng, f, off, abstract])
        fbk, fb = self.location(a.get("DW_AT_frame_base"), die)
        rec = [s, s + 1, fbk, fb, off, min(r[0] for r in rng)]
        self.functions.append(rec)

        def done(rec=rec):
            rec[1] = len(self.scopes)
        return _Ctx(C_SCOPE, parent.prefix, off, scope=s, func=f, pops=done)

    def block(self, die, parent: _Ctx) -> _Ctx:
        a = die.attributes
        if parent.kind == C_SCOPE:
            rng = self.ranges(die)
            origin = self.ref(a.get("DW_AT_abstract_origin"), self.cu_off)
            if origin >= 0:
                self.scope_refs.setdefault(parent.scope, set()).add(origin)
            if not rng:                             # gdb: variables of a range-less block
                return _Ctx(C_SCOPE, parent.prefix, parent.owner, parent.scope, parent.func)
            s = len(self.scopes)
            self.scopes.append([S_BLOCK, parent.scope, rng, parent.func, die.offset, origin])
            return _Ctx(C_SCOPE, parent.prefix, die.offset, s, parent.func)
        if parent.kind == C_ABSTRACT:
            self.abstract_children.setdefault(parent.owner, []).append((die.offset, True))
            return _Ctx(C_ABSTRACT, parent.prefix, die.offset)
        return _Ctx(C_SKIP, parent.prefix)

    def inlined(self, die, parent: _Ctx) -> _Ctx:
        if parent.kind != C_SCOPE:
            return _Ctx(C_SKIP, parent.prefix)
        rng = self.ranges(die)
        if not rng:
            return _Ctx(C_SCOPE, parent.prefix, parent.owner, parent.scope, parent.func)
        s = len(self.scopes)
        origin = self.ref(die.attributes.get("DW_AT_abstract_origin"), self.cu_off)
        self.scopes.append([S_INLINE, parent.scope, rng, parent.func, die.offset, origin])
        return _Ctx(C_SCOPE, parent.prefix, die.offset, s, parent.func)

    def call_site(self, die, parent: _Ctx) -> Optional[_Ctx]:
        if parent.kind != C_SCOPE:
            return None
        a = die.attributes
        if "DW_AT_call_tail_call" in a or "DW_AT_GNU_tail_call" in a:
            return None
        pc = a.get("DW_AT_call_return_pc") or a.get("DW_AT_low_pc")
        if pc is None or not isinstance(pc.value, int):
            return None
        target = self.ref(a.get("DW_AT_call_origin") or a.get("DW_AT_abstract_origin"), self.cu_off)
        self.calls.append([pc.value, target, []])
        return _Ctx(C_CALL, parent.prefix, len(self.calls) - 1)

    def call_param(self, die, parent: _Ctx) -> None:
        a = die.attributes
        loc = a.get("DW_AT_location")
        val = a.get("DW_AT_call_value") or a.get("DW_AT_GNU_call_site_value")
        if loc is None or val is None or loc.form not in _EXPR_FORMS or val.form not in _EXPR_FORMS:
            return
        reg = exprs.simple_register(bytes(loc.value))
        if reg is not None:
            self.calls[parent.owner][2].append((reg, self.blob(val.value)))

    def variable(self, die, tag: str, parent: _Ctx) -> None:
        a = die.attributes
        pk = parent.kind
        off = die.offset
        if pk == C_FUNCTYPE:
            if tag == "DW_TAG_formal_parameter":
                self.aux.setdefault(parent.owner, []).append(
                    ["", 0, self.ref(a.get("DW_AT_type"), self.cu_off), 0, T.V_NONE, off])
            return
        name = _str(a.get("DW_AT_name"))
        typ = self.ref(a.get("DW_AT_type"), self.cu_off)
        nxt = self.ref(a.get("DW_AT_abstract_origin"), self.cu_off)
        spec = self.ref(a.get("DW_AT_specification"), self.cu_off)
        if nxt == -1:
            nxt = spec
        self.origin[off] = [name, typ, parent.prefix, nxt, tag == "DW_TAG_formal_parameter"]
        if pk == C_ABSTRACT:
            self.abstract_children.setdefault(parent.owner, []).append((off, False))
            return
        if pk == C_TYPE or "DW_AT_declaration" in a:
            return
        loc = a.get("DW_AT_location")
        static = tls = None
        if loc is not None and loc.form in _EXPR_FORMS:
            e = bytes(loc.value)
            static = exprs.static_address(e)
            if static is None:
                tls = exprs.tls_offset(e)
        if static is not None or tls is not None:
            fl = (G_TLS if tls is not None else 0) | (G_EXTERNAL if "DW_AT_external" in a else 0)
            if pk == C_SCOPE:
                fl |= G_FUNC_STATIC
            self.globals.append([name, typ, static if static is not None else tls, fl,
                                 parent.func if pk == C_SCOPE else -1, off, nxt, parent.prefix])
        if pk != C_SCOPE:
            return
        kind = V_ARG if tag == "DW_TAG_formal_parameter" else (V_STATIC if static is not None else V_LOCAL)
        if loc is not None:
            lk, payload = self.location(loc, die)
        else:
            cv = a.get("DW_AT_const_value")
            if cv is None:
                lk, payload = L_NONE, 0
            elif isinstance(cv.value, int):
                lk, payload = L_CONST, cv.value
            elif isinstance(cv.value, (list, bytes)):
                lk, payload = L_BYTES, self.blob(cv.value)
            else:
                lk, payload = L_NONE, 0
        self.scope_vars.setdefault(parent.scope, []).append([name, typ, kind, lk, payload, nxt])

    # --- after the pass ---------------------------------------------------------------------
    def resolve(self, off: int, field: int):
        """name (field 0) or type (field 1) of a DIE through its abstract origin /
        specification chain; with the prefix of the DIE that supplied it."""
        for _ in range(16):
            rec = self.origin.get(off)
            if rec is None:
                return None, ""
            v = rec[field]
            if (field == 0 and v) or (field == 1 and v != -1):
                return v, rec[2]
            off = rec[3]
            if off < 0:
                return None, ""
        return None, ""

    def qualified(self, off: int) -> str:
        name, prefix = self.resolve(off, 0)
        return (prefix + name) if name else ""

    def finish(self, tls=None) -> Tuple[TypeMap, LocationMap, GlobalMap]:
        return self.finish_types(), self.finish_locations(), self.finish_globals(tls)

    def finish_types(self) -> TypeMap:
        self.types.sort(key=lambda r: r[0])
        index = {r[0]: i for i, r in enumerate(self.types)}
        self.type_index = index
        kind = [r[1] for r in self.types]
        flags = [r[2] for r in self.types]
        size = [r[3] for r in self.types]
        ref = [index.get(r[4], -1) for r in self.types]
        astart, acount = [], []
        m_name, m_off, m_type, m_flags, m_var, m_die = [], [], [], [], [], []
        for r in self.types:
            rows = self.aux.get(r[0], ())
            astart.append(len(m_off))
            acount.append(len(rows))
            for nm, o, t, fl, v, d in rows:
                m_name.append(nm)
                m_off.append(o)
                m_type.append(index.get(t, -1))
                m_flags.append(fl)
                m_var.append(v)
                m_die.append(d)
        names = T.compute_names(kind, flags, ref, [r[5] for r in self.types], [r[6] for r in self.types],
                                astart, acount, m_off, m_type)
        definition = [-1] * len(kind)
        defs: Dict[Tuple[int, str], int] = {}
        for i, k in enumerate(kind):
            if k in _CHILD_CTX_TYPES and not flags[i] & (T.F_DECL | T.F_ANON) and size[i] >= 0:
                defs.setdefault((k, names[i]), i)
        for i, k in enumerate(kind):
            if flags[i] & T.F_DECL:
                definition[i] = defs.get((k, names[i]), -1)
        cols = dict(off=[r[0] for r in self.types], kind=kind, flags=flags, size=size, ref=ref, astart=astart,
                    acount=acount, definition=definition, m_off=m_off, m_type=m_type, m_flags=m_flags,
                    m_var=m_var, name=names, m_name=m_name,
                    vp_type=[], vp_doff=[], vp_dsize=[], vp_start=[], vp_count=[], vv_value=[], vv_kind=[])
        tm = TypeMap(self.fid, cols)
        for owner, (discr, variants) in sorted(self.vparts.items()):
            i = index.get(owner)
            if i is None:
                continue
            doff, dsize = -1, 0
            for r in range(astart[i], astart[i] + acount[i]):
                if m_die[r] == discr:
                    doff = m_off[r]
                    dsize = tm.sizeof(m_type[r]) or 0
            if not 0 < dsize <= 8:
                doff, dsize = -1, 0
            mask = (1 << (8 * dsize)) - 1 if dsize else (1 << 64) - 1
            cols["vp_type"].append(i)
            cols["vp_doff"].append(doff)
            cols["vp_dsize"].append(dsize)
            cols["vp_start"].append(len(cols["vv_value"]))
            cols["vp_count"].append(len(variants))
            for vk, val in variants:
                cols["vv_kind"].append(vk)
                cols["vv_value"].append(val & mask if vk == T.VV_VALUE else 0)
        return TypeMap(self.fid, cols)

    def type_offset(self, off: int) -> int:
        """A type DIE offset as stored in the location/global maps (-1: unknown)."""
        return off if off >= 0 and off in self.type_index else -1

    def finish_locations(self) -> LocationMap:
        cols: Dict[str, list] = {c: [] for c in LocationMap.COLUMNS + LocationMap.STRINGS}
        # scopes: names, ranges, inherited (abstract) variables, flattened variable rows
        for s, (kind, parent, rng, func, die_off, origin) in enumerate(self.scopes):
            if kind == S_BLOCK:
                name = ""
            else:
                name = self.qualified(origin if kind == S_INLINE else die_off) or "??"
            cols["s_kind"].append(kind)
            cols["s_parent"].append(parent)
            cols["s_name"].append(name)
            cols["s_rstart"].append(len(cols["sr_lo"]))
            cols["s_rcount"].append(len(rng))
            for lo, hi in rng:
                cols["sr_lo"].append(lo)
                cols["sr_hi"].append(hi)
            rows = self.scope_vars.get(s, [])
            abstract = origin
            if abstract >= 0 and abstract in self.abstract_children:
                # gdb's inherit_abstract_dies: the abstract origin's children that no concrete
                # child refers to are in scope, optimized out (range-less blocks flattened)
                have = {r[5] for r in rows if r[5] >= 0} | self.scope_refs.get(s, set())
                for child in self._abstract_vars(abstract, have):
                    rec = self.origin.get(child)
                    kindv = V_ARG if rec is not None and rec[4] else V_LOCAL
                    rows = rows + [["", -1, kindv, L_NONE, 0, child]]
            cols["s_vstart"].append(len(cols["v_name"]))
            count = 0
            for name_v, typ, kindv, lk, payload, nxt in rows:
                if not name_v and nxt >= 0:
                    name_v = self.resolve(nxt, 0)[0] or ""
                if typ == -1 and nxt >= 0:
                    t2 = self.resolve(nxt, 1)[0]
                    typ = t2 if t2 is not None else -1
                if not name_v:
                    continue
                cols["v_name"].append(name_v)
                cols["v_type"].append(self.type_offset(typ))
                cols["v_kind"].append(kindv)
                cols["v_lkind"].append(lk)
                cols["v_loc"].append(_i64(payload) if lk == L_CONST else payload)
                count += 1
            cols["s_vcount"].append(count)
        for f, (s0, s1, fbk, fb, die_off, lo) in enumerate(self.functions):
            cols["f_scope0"].append(s0)
            cols["f_scope1"].append(s1)
            cols["f_fb_kind"].append(fbk)
            cols["f_fb"].append(fb)
            cols["f_die"].append(die_off)
            cols["f_lo"].append(lo)
        rng = []
        for f, (s0, *_rest) in enumerate(self.functions):
            for lo, hi in self.scopes[s0][2]:
                rng.append((lo, hi, f))
        rng.sort()
        cols["r_lo"] = [r[0] for r in rng]
        cols["r_hi"] = [r[1] for r in rng]
        cols["r_func"] = [r[2] for r in rng]
        for entries in self.loclists:
            cols["l_start"].append(len(cols["e_lo"]))
            cols["l_count"].append(len(entries))
            for lo, hi, e in entries:
                cols["e_lo"].append(lo)
                cols["e_hi"].append(hi)
                cols["e_expr"].append(e)
        calls = sorted(self.calls, key=lambda c: c[0])
        for pc, target, params in calls:
            cols["c_pc"].append(pc)
            cols["c_target"].append(self.qualified(target) if target >= 0 else "")
            cols["c_pstart"].append(len(cols["cp_reg"]))
            cols["c_pcount"].append(len(params))
            for reg, e in params:
                cols["cp_reg"].append(reg)
                cols["cp_expr"].append(e)
        return LocationMap(cols, self.blobs)

    def _abstract_vars(self, off: int, have, depth: int = 0) -> List[int]:
        out = []
        for child, is_block in self.abstract_children.get(off, ()):
            if child in have:
                continue
            if is_block:
                if depth < 16:
                    out.extend(self._abstract_vars(child, (), depth + 1))
            else:
                out.append(child)
        return out

    def finish_globals(self, tls) -> GlobalMap:
        cols: Dict[str, list] = {c: [] for c in GlobalMap.COLUMNS + GlobalMap.STRINGS}
        seen = set()
        fnames = {}
        for name, typ, addr, fl, func, die_off, nxt, prefix in self.globals:
            if nxt >= 0:
                n2, p2 = self.resolve(nxt, 0)
                if not name and n2:
                    name, prefix = n2, p2
                if typ == -1:
                    t2 = self.resolve(nxt, 1)[0]
                    typ = t2 if t2 is not None else -1
            if not name:
                continue
            qual = (prefix + name) if prefix else name
            key = (qual, addr, fl & G_TLS)
            if key in seen:
                continue
            seen.add(key)
            fn = ""
            if func >= 0:
                fn = fnames.get(func)
                if fn is None:
                    fn = fnames[func] = self.qualified(self.functions[func][4]) if func < len(self.functions) else ""
            cols["g_name"].append(qual)
            cols["g_type"].append(self.type_offset(typ))
            cols["g_addr"].append(addr)
            cols["g_flags"].append(fl)
            cols["g_die"].append(die_off)
            cols["g_func"].append(fn)
        return GlobalMap(cols, tls)


def _units(dwarf):
    """(offset, CU or None, error) for every unit header in .debug_info: a header pyelftools
    rejects (unknown version, bad abbrev offset) is reported and skipped by its length field,
    so one bad unit costs that unit only."""
    import struct
    sec = dwarf.debug_info_sec
    if sec is None:
        return
    size = sec.size
    off = 0
    while off + 4 <= size:
        try:
            sec.stream.seek(off)
            head = sec.stream.read(12)
            length = struct.unpack_from("<I", head)[0]
            if length == 0xFFFFFFFF:
                total = 12 + struct.unpack_from("<Q", head, 4)[0]
            elif length >= 0xFFFFFFF0:
                yield off, None, f"reserved unit length {length:#x}: the rest of .debug_info skipped"
                return
            else:
                total = 4 + length
        except Exception as e:
            yield off, None, f"unreadable unit header ({type(e).__name__})"
            return
        if total <= 4 or off + total > size:
            yield off, None, f"unit length {total} runs past the end of .debug_info: the rest skipped"
            return
        try:
            cu = dwarf.get_CU_at(off)
            err = None
        except Exception as e:       # pyelftools rejects the header: skip this unit
            cu, err = None, f"{type(e).__name__}: {e}"
        yield off, cu, err
        off += total


def _i64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _member_offset_expr(e: bytes) -> Optional[int]:
    """DW_AT_data_member_location as an expression (DWARF 2 style): DW_OP_plus_uconst N or a
    constant; anything else (a virtual base's vtable lookup) is dynamic."""
    try:
        ops = exprs.decode(e)
    except exprs.ExprError:
        return None
    if len(ops) == 1:
        _, op, args = ops[0]
        if op == exprs.OP_PLUS_UCONST or op in (exprs.OP_CONSTU, exprs.OP_CONST1U, exprs.OP_CONST2U,
                                                exprs.OP_CONST4U, exprs.OP_CONST8U):
            return args[0]
        if exprs.OP_LIT0 <= op <= exprs.OP_LIT31:
            return op - exprs.OP_LIT0
    return None


def decode_dwarf(dwarf, fid: str, tls=None) -> Tuple[TypeMap, LocationMap, GlobalMap, dict, List[str]]:
    t0 = time.perf_counter()
    d = Decoder(fid)
    d.decode(dwarf)
    tm, lm, gm = d.finish(tls)
    st = dict(d.stats)
    st.update(types=len(tm), functions=len(lm), variables=lm.variable_count,
              globals=len(gm.statics()), thread_locals=len(gm.thread_locals()), call_sites=len(lm.c_pc),
              decode_seconds=round(time.perf_counter() - t0, 3))
    return tm, lm, gm, st, d.failures


def decode_cfa(dwarf) -> Tuple[Dict[str, list], int]:
    """CFA rules from the unwind tables (.eh_frame, else .debug_frame): rows (lo, hi, register,
    offset), sorted; register -1 for an expression rule. FDEs pyelftools cannot decode are
    skipped and counted."""
    from elftools.dwarf.callframe import FDE
    rows = []
    failed = 0
    try:
        if dwarf.has_EH_CFI():
            entries = dwarf.EH_CFI_entries()
        elif dwarf.has_CFI():
            entries = dwarf.CFI_entries()
        else:
            entries = []
    except Exception:
        return {"cf_lo": [], "cf_hi": [], "cf_reg": [], "cf_off": []}, 1
    for en in entries:
        if not isinstance(en, FDE):
            continue
        try:
            start = en.header["initial_location"]
            end = start + en.header["address_range"]
            table = en.get_decoded().table
        except Exception:
            failed += 1
            continue
        pcs = [r["pc"] for r in table]
        for k, r in enumerate(table):
            hi = pcs[k + 1] if k + 1 < len(pcs) else end
            c = r.get("cfa")
            if c is None or hi <= r["pc"]:
                continue
            if c.expr is not None or c.reg is None:
                rows.append((r["pc"], hi, -1, 0))
            else:
                rows.append((r["pc"], hi, c.reg, c.offset or 0))
    rows.sort()
    return {"cf_lo": [r[0] for r in rows], "cf_hi": [r[1] for r in rows], "cf_reg": [r[2] for r in rows],
            "cf_off": [r[3] for r in rows]}, failed


def die_ranges(die, rl, base: int, cu) -> List[Tuple[int, int]]:
    """A DIE's address ranges: DW_AT_low_pc/high_pc, else its DW_AT_ranges list read through
    `rl` (the file's range lists; base = its CU's DW_AT_low_pc). The split-DWARF index form
    (rnglistx) is not followed."""
    a = die.attributes
    lo = a.get("DW_AT_low_pc")
    hi = a.get("DW_AT_high_pc")
    if lo is not None and hi is not None and isinstance(lo.value, int) and isinstance(hi.value, int):
        h = hi.value if hi.form.startswith("DW_FORM_addr") else lo.value + hi.value
        return [(lo.value, h)] if h > lo.value else []
    r = a.get("DW_AT_ranges")
    if r is None or rl is None or r.form == "DW_FORM_rnglistx":
        return []
    out = []
    for e in rl.get_range_list_at_offset(r.value, cu=cu):
        if hasattr(e, "base_address"):
            base = e.base_address
        elif e.is_absolute:
            out.append((e.begin_offset, e.end_offset))
        else:
            out.append((base + e.begin_offset, base + e.end_offset))
    return [(x, y) for x, y in out if y > x]
