"""The type map: every type of one ELF file's DWARF, as compact columns, and the pointer
layout of any of them (common.target.TypeLayout), computed on demand and memoised.

A type is named by the offset of its DIE in .debug_info; its key, what PtrSlot.target_type
holds and what `TypeMap.layout_of_key` / `ProgramMaps.type_layout` take, is
"dwarf:<file id>:<die offset>". Layouts mirror what gdb_plugin/program.py derives from gdb's
types (same slot paths, offsets, pointee sizes, caps), plus what gdb's view lacks: Rust enum
variants (TypeLayout.variants), flexible array tails (TypeLayout.tail) and C++ references.
"""
from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Tuple

from ..target import PtrSlot, TypeLayout, Variant

MAX_SLOTS = 4096          # pointer slots expanded per type (as gdb_plugin/program.py)
MAX_ARRAY = 1024          # elements of one array expanded
MAX_DEPTH = 12            # nesting of members/arrays followed
MAX_NAME = 400            # characters of a type name (template-heavy C++ names are cut)

# kinds
K_BASE, K_PTR, K_TYPEDEF, K_QUAL, K_STRUCT, K_UNION, K_ENUM, K_ARRAY, K_FUNC, K_VOID, K_OTHER = range(1, 12)
KIND_NAMES = {K_BASE: "base", K_PTR: "pointer", K_TYPEDEF: "typedef", K_QUAL: "qualified", K_STRUCT: "struct",
              K_UNION: "union", K_ENUM: "enum", K_ARRAY: "array", K_FUNC: "function", K_VOID: "void",
              K_OTHER: "other"}

# type flags
F_DECL = 1            # a declaration (incomplete): see `definition`
F_CONST, F_VOLATILE, F_RESTRICT, F_ATOMIC = 2, 4, 8, 16
F_BOOL = 32           # a boolean base type (a 1-byte bool * still has a pointee size)
F_CHAR1 = 64          # a 1-byte integer/char: T * is a byte buffer (no pointee size, like gdb)
F_REF = 128           # a C++ reference (&)
F_RVALUE = 256        # a C++ rvalue reference (&&)
F_PROTOTYPED = 512    # a prototyped function type
F_VARARGS = 1024      # function type with ...
F_CLASS = 2048        # C++ class (printed like a struct)
F_LANG_SHIFT = 12     # 2 bits: 0 C, 1 C++, 2 Rust, 3 other
F_NAMED_PTR = 1 << 14  # a pointer type with its own DW_AT_name (Rust: "*const u8", "&str")
F_ANON = 1 << 15      # an anonymous struct/union/enum
LANG_C, LANG_CXX, LANG_RUST, LANG_OTHER = 0, 1, 2, 3

# member flags
M_BITFIELD, M_BASE, M_VIRTUAL, M_ARTIFICIAL, M_DYNAMIC = 1, 2, 4, 8, 16

# member variant field
V_NONE = -1           # an ordinary member
V_AMBIGUOUS = -2      # in a variant part that cannot be decoded (second part, DW_AT_discr_list)

# variant kinds
VV_VALUE, VV_DEFAULT, VV_LIST = 0, 1, 2


class TypeMap:
    """Columns (parallel lists, index = type number, sorted by DIE offset):

    off, kind, flags, size (-1 unknown), ref (type index of the target/element/return type;
    -1 void or none), name (readable, gdb-like), astart/acount (rows of the member table:
    members of a struct/union, dimensions of an array (m_off = element count, -1 unknown),
    parameter types of a function), definition (for a declaration: index of the complete
    type of the same name in this file, or -1).
    Member table: m_name, m_off (-1: dynamic, not followed), m_type, m_flags, m_var.
    Variant parts: vp_type (owner index), vp_doff / vp_dsize (discriminant), vp_start /
    vp_count into vv_value / vv_kind (one row per variant, in member m_var order)."""

    COLUMNS = ("off", "kind", "flags", "size", "ref", "astart", "acount", "definition",
               "m_off", "m_type", "m_flags", "m_var",
               "vp_type", "vp_doff", "vp_dsize", "vp_start", "vp_count", "vv_value", "vv_kind")
    STRINGS = ("name", "m_name")

    def __init__(self, fid: str, cols: Dict[str, list]):
        self.fid = fid
        for c in self.COLUMNS + self.STRINGS:
            setattr(self, c, cols.get(c, []))
        self._vp: Optional[Dict[int, int]] = None
        self._layouts: Dict[int, TypeLayout] = {}
        self._by_name: Optional[Dict[str, int]] = None

    # --- identity -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.off)

    def index_of(self, die_offset: int) -> Optional[int]:
        i = bisect.bisect_left(self.off, die_offset)
        if i < len(self.off) and self.off[i] == die_offset:
            return i
        return None

    def key(self, i: int) -> str:
        return f"dwarf:{self.fid}:{self.off[i]}"

    def index_of_key(self, key: str) -> Optional[int]:
        try:
            pre, fid, off = key.split(":")
        except ValueError:
            return None
        if pre != "dwarf" or fid != self.fid:
            return None
        try:
            return self.index_of(int(off))
        except ValueError:
            return None

    def find(self, name: str) -> Optional[int]:
        """A complete type by its readable name ("struct node", "Node", "alloc::rc::RcBox<i32>",
        a typedef name): the first definition in DIE order."""
        if self._by_name is None:
            by: Dict[str, int] = {}
            for i, n in enumerate(self.name):
                if n not in by and not self.flags[i] & F_DECL:
                    by[n] = i
            self._by_name = by
        return self._by_name.get(name)

    # --- type algebra ---------------------------------------------------------------------
    def strip(self, i: int) -> int:
        """Through typedefs and qualifiers; a declaration becomes its definition when known."""
        seen = 0
        while i >= 0 and self.kind[i] in (K_TYPEDEF, K_QUAL) and seen < 64:
            i = self.ref[i]
            seen += 1
        if i >= 0 and self.flags[i] & F_DECL and self.definition[i] >= 0:
            i = self.definition[i]
        return i

    def sizeof(self, i: int) -> Optional[int]:
        i = self.strip(i)
        if i < 0:
            return None
        s = self.size[i]
        if s >= 0:
            return s
        k = self.kind[i]
        if k == K_ARRAY:
            e = self.sizeof(self.ref[i])
            if e is None:
                return None
            n = 1
            for r in range(self.astart[i], self.astart[i] + self.acount[i]):
                c = self.m_off[r]
                if c < 0:
                    return None
                n *= c
            return n * e
        if k == K_PTR:
            return 8
        return None

    def pointee(self, ptr: int) -> Tuple[Optional[int], Optional[int]]:
        """(sizeof *p or None, index of the stripped pointee or None) for a pointer type, with
        gdb_plugin's rules: void, functions and 1-byte integers have no pointee size; nor have
        incomplete types."""
        t = self.strip(self.ref[ptr]) if ptr >= 0 else -1
        if t < 0:
            return None, None
        k = self.kind[t]
        if k in (K_VOID, K_FUNC):
            return None, None
        if k == K_BASE and self.flags[t] & F_CHAR1:
            return None, None
        if self.flags[t] & F_DECL:
            return None, None
        size = self.sizeof(t)
        if not size:
            return None, None
        return size, t

    def _variant_part(self, i: int) -> Optional[int]:
        if self._vp is None:
            self._vp = {t: k for k, t in enumerate(self.vp_type)}
        return self._vp.get(i)

    # --- layouts --------------------------------------------------------------------------
    def layout(self, i: int) -> TypeLayout:
        """Pointer layout of type i (memoised). Never raises on odd DWARF: a type it cannot
        follow has fewer slots, not an exception."""
        lay = self._layouts.get(i)
        if lay is None:
            try:
                lay = _Walker(self).layout(i)
            except (IndexError, TypeError, ValueError):    # inconsistent columns: no slots, no crash
                lay = TypeLayout(self.name[i] if 0 <= i < len(self.name) else "?", 0)
            self._layouts[i] = lay
        return lay

    def layout_of_key(self, key: str) -> Optional[TypeLayout]:
        i = self.index_of_key(key)
        return None if i is None else self.layout(i)

    def has_pointers(self, i: int) -> bool:
        lay = self.layout(i)
        return bool(lay.slots or lay.variants or lay.tail)


class _Walker:
    """One layout computation: mirrors gdb_plugin/program.py's _slots (paths, offsets, caps),
    plus variant parts (the first one, outside arrays, becomes the layout's variants; any other
    is flattened with its slots flagged ambiguous) and the flexible array tail."""

    def __init__(self, tm: TypeMap):
        self.tm = tm
        self.variants: Optional[Tuple[int, int, List[Tuple[Optional[int], List[PtrSlot]]]]] = None
        self.tail: Optional[Tuple[int, int, Tuple[PtrSlot, ...]]] = None

    def layout(self, i: int) -> TypeLayout:
        tm = self.tm
        out: List[PtrSlot] = []
        try:
            self.slots(i, "", 0, out, False, 0, True)
        except RecursionError:
            pass
        size = tm.sizeof(i)
        variants = ()
        doff, dsize = None, 0
        if self.variants is not None:
            doff, dsize, vs = self.variants
            variants = tuple(Variant(v, tuple(s)) for v, s in vs)
        return TypeLayout(tm.name[i] if i >= 0 else "void", size or 0, tuple(out), doff, dsize, variants, self.tail)

    def slots(self, t: int, path: str, off: int, out: List[PtrSlot], amb: bool, depth: int, top: bool) -> None:
        tm = self.tm
        if len(out) >= MAX_SLOTS or depth > MAX_DEPTH or t < 0:
            return
        st = tm.strip(t)
        if st < 0:
            return
        k = tm.kind[st]
        if k == K_PTR:
            size, target = tm.pointee(st)
            out.append(PtrSlot(path, off, tm.name[t], size, tm.key(target) if target is not None else None, amb))
        elif k in (K_STRUCT, K_UNION):
            self.members(st, path, off, out, amb or k == K_UNION, depth, top)
        elif k == K_ARRAY:
            self.array(st, 0, path, off, out, amb, depth, top)

    def members(self, st: int, path: str, off: int, out: List[PtrSlot], amb: bool, depth: int, top: bool) -> None:
        tm = self.tm
        a0, n = tm.astart[st], tm.acount[st]
        vp = tm._variant_part(st)
        per_variant: Optional[List[List[PtrSlot]]] = None
        take_variants = vp is not None and top and self.variants is None
        if take_variants:
            per_variant = [[] for _ in range(tm.vp_count[vp])]
        last_real = -1
        for r in range(a0, a0 + n):
            if tm.m_var[r] == V_NONE and not tm.m_flags[r] & (M_BITFIELD | M_VIRTUAL | M_DYNAMIC):
                last_real = r
        for r in range(a0, a0 + n):
            fl = tm.m_flags[r]
            if fl & (M_BITFIELD | M_VIRTUAL | M_DYNAMIC) or tm.m_off[r] < 0:
                continue
            name = tm.m_name[r]
            sub = path if fl & M_BASE or not name else f"{path}.{name}"
            moff = off + tm.m_off[r]
            var = tm.m_var[r]
            if var == V_NONE:
                if r == last_real and top and self._flexible(tm.m_type[r], sub, moff, amb, depth):
                    continue
                self.slots(tm.m_type[r], sub, moff, out, amb, depth + 1, top and tm.kind[st] != K_UNION)
            elif per_variant is not None and 0 <= var < len(per_variant):
                if tm.vv_kind[tm.vp_start[vp] + var] == VV_LIST:
                    self.slots(tm.m_type[r], sub, moff, out, True, depth + 1, False)
                else:
                    self.slots(tm.m_type[r], sub, moff, per_variant[var], amb, depth + 1, False)
            else:                                   # a variant we cannot select: maybe a pointer
                self.slots(tm.m_type[r], sub, moff, out, True, depth + 1, False)
        if per_variant is not None:
            rows = range(tm.vp_start[vp], tm.vp_start[vp] + tm.vp_count[vp])
            vs = [(None if tm.vv_kind[row] == VV_DEFAULT else tm.vv_value[row], per_variant[j])
                  for j, row in enumerate(rows) if tm.vv_kind[row] != VV_LIST]
            if tm.vp_doff[vp] >= 0:
                self.variants = (off + tm.vp_doff[vp], tm.vp_dsize[vp], vs)
            else:                                   # no discriminant: every variant may apply
                for _, s in vs:
                    out.extend(PtrSlot(p.path, p.offset, p.type_name, p.target_size, p.target_type, True) for p in s)

    def _flexible(self, t: int, path: str, off: int, amb: bool, depth: int) -> bool:
        """A trailing T x[] / T x[0]: becomes the tail (when T holds pointers). True when
        handled (nothing to expand in the fixed part)."""
        tm = self.tm
        st = tm.strip(t)
        if st < 0 or tm.kind[st] != K_ARRAY or tm.acount[st] < 1:
            return False
        first = tm.m_off[tm.astart[st]]
        if first > 0:
            return False
        esz = self._elem_size(st, 1)
        if not esz:
            return True
        probe: List[PtrSlot] = []
        self.array_elem(st, 1, "", 0, probe, amb, depth + 1)
        if probe and self.tail is None:
            self.tail = (off, esz, tuple(PtrSlot(f"{path}[]{p.path}", p.offset, p.type_name, p.target_size,
                                                 p.target_type, p.ambiguous) for p in probe))
        return True

    def _elem_size(self, arr: int, dim: int) -> Optional[int]:
        tm = self.tm
        e = tm.sizeof(tm.ref[arr])
        if e is None:
            return None
        for r in range(tm.astart[arr] + dim, tm.astart[arr] + tm.acount[arr]):
            c = tm.m_off[r]
            if c < 0:
                return None
            e *= c
        return e

    def array_elem(self, arr: int, dim: int, path: str, off: int, out: List[PtrSlot], amb: bool, depth: int) -> None:
        """Slots of one element of dimension `dim` (the next dimension, or the element type)."""
        tm = self.tm
        if dim < tm.acount[arr]:
            self.array(arr, dim, path, off, out, amb, depth, False)
        else:
            self.slots(tm.ref[arr], path, off, out, amb, depth, False)

    def array(self, arr: int, dim: int, path: str, off: int, out: List[PtrSlot], amb: bool, depth: int,
              top: bool) -> None:
        tm = self.tm
        if len(out) >= MAX_SLOTS or depth > MAX_DEPTH:
            return
        count = tm.m_off[tm.astart[arr] + dim] if dim < tm.acount[arr] else 0
        esz = self._elem_size(arr, dim + 1)
        if not esz or count <= 0:
            return
        probe: List[PtrSlot] = []
        self.array_elem(arr, dim + 1, "", 0, probe, amb, depth + 1)
        if not probe:
            return
        for i in range(min(count, MAX_ARRAY)):
            for p in probe:
                if len(out) >= MAX_SLOTS:
                    return
                out.append(PtrSlot(f"{path}[{i}]{p.path}", off + i * esz + p.offset, p.type_name,
                                   p.target_size, p.target_type, p.ambiguous))


# --- names ----------------------------------------------------------------------------------
def compute_names(kind, flags, ref, own, scope, astart, acount, m_off, m_type) -> List[str]:
    """Readable names for every type, close to gdb's str(type): "struct node *", "char **",
    "int (*)(int, char *)", "const char *", "char * const", "int [10]", "Node" (C++),
    "alloc::rc::RcBox<i32>" (Rust; Rust pointer types keep their own names: "*const u8")."""
    n = len(kind)
    memo: Dict[int, str] = {}

    def base(i: int) -> str:
        k, f = kind[i], flags[i]
        lang = (f >> F_LANG_SHIFT) & 3
        nm = own[i]
        if k in (K_STRUCT, K_UNION, K_ENUM):
            word = "union" if k == K_UNION else "enum" if k == K_ENUM else ("class" if f & F_CLASS else "struct")
            if not nm:
                return f"{word} {{...}}"
            if lang == LANG_C:
                return f"{word} {nm}"
            return scope[i] + nm
        if k == K_TYPEDEF:
            return (scope[i] + nm) if lang != LANG_C and nm else (nm or "?")
        if k == K_VOID:
            return nm or "void"
        return nm or "?"

    def decl(i: int, inner: str, depth: int) -> str:
        if depth > 24:
            return "..." + (" " + inner if inner else "")
        if i < 0:
            return "void" + (" " + inner if inner else "")
        k = kind[i]
        if k == K_PTR:
            if flags[i] & F_NAMED_PTR and own[i]:
                return own[i] + (" " + inner if inner else "")
            star = "&&" if flags[i] & F_RVALUE else "&" if flags[i] & F_REF else "*"
            t = ref[i]
            if t >= 0 and kind[t] in (K_FUNC, K_ARRAY):
                return decl(t, f"({star}{inner})", depth + 1)
            return decl(t, star + inner, depth + 1)
        if k == K_QUAL:
            quals = []
            t = i
            while t >= 0 and kind[t] == K_QUAL and len(quals) < 8:
                f = flags[t]
                for bit, word in ((F_CONST, "const"), (F_VOLATILE, "volatile"), (F_RESTRICT, "restrict"),
                                  (F_ATOMIC, "_Atomic")):
                    if f & bit and word not in quals:
                        quals.append(word)
                t = ref[t]
            q = " ".join(quals)
            if t >= 0 and kind[t] == K_PTR and not (flags[t] & F_NAMED_PTR and own[t]):
                star = "&&" if flags[t] & F_RVALUE else "&" if flags[t] & F_REF else "*"
                tt = ref[t]
                body = f"{star} {q}" + (" " + inner if inner else "")
                if tt >= 0 and kind[tt] in (K_FUNC, K_ARRAY):
                    return decl(tt, f"({body})", depth + 1)
                return decl(tt, body, depth + 1)
            return q + " " + decl(t, inner, depth + 1)
        if k == K_ARRAY:
            dims = "".join(f"[{m_off[r]}]" if m_off[r] >= 0 else "[]"
                           for r in range(astart[i], astart[i] + acount[i]))
            return decl(ref[i], (inner + dims) if inner else dims, depth + 1)
        if k == K_FUNC:
            ps = [decl(m_type[r], "", depth + 1) for r in range(astart[i], astart[i] + min(acount[i], 32))]
            if ps and flags[i] & F_VARARGS:
                ps.append("...")
            elif not ps and (flags[i] & F_PROTOTYPED or (flags[i] >> F_LANG_SHIFT) & 3 == LANG_CXX):
                ps = ["void"]                           # as gdb: int (*)(void), C++ f() too
            return decl(ref[i], f"{inner}({', '.join(ps)})", depth + 1)
        b = base(i)
        return b + (" " + inner if inner else "")

    out = []
    for i in range(n):
        s = memo.get(i)
        if s is None:
            try:
                s = decl(i, "", 0)
            except RecursionError:
                s = "?"
            if len(s) > MAX_NAME:
                s = s[:MAX_NAME - 3] + "..."
            memo[i] = s
        out.append(s)
    return out
