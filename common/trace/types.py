"""Type layouts compiled for tracing: where each type's pointers are, as arrays (for batches
of objects) and tuples (for one object at a time), with every pointee resolved to a type id.

A slot's pointee is a type id (>= 0), UNTYPED (void *, function pointers, types nobody can
resolve: the pointee's words are scanned conservatively) or CHAR (char *: a text string is left
alone, anything else is scanned conservatively). Pointer-to-pointer pointees whose layout the
resolver does not know (`struct node **`) are made here: one pointer slot of the inner type.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..target import PtrSlot, TypeLayout

UNTYPED, CHAR = -1, -2
_CHARS = {"char", "signed char", "unsigned char", "int8_t", "uint8_t", "gchar", "guchar", "u8", "i8",
          "char8_t", "std::byte", "byte"}
_QUAL = re.compile(r"\b(const|volatile|restrict|__restrict|_Atomic)\b")
MAX_TAIL = 1 << 20          # flexible-array elements applied per object at most


def _norm(name: str) -> str:
    """`const struct node * const *` -> `struct node **` (gdb's spelling, qualifiers dropped)."""
    s = re.sub(r"\s*\*\s*", "*", " ".join(_QUAL.sub(" ", name).split()))
    return re.sub(r"(?<=[^\s*])\*", " *", s, count=1).strip()


def pointee_key(slot: PtrSlot):
    """The pointee of a pointer slot: a type key (str), UNTYPED or CHAR."""
    if slot.target_type:
        return slot.target_type
    tn = _norm(slot.type_name or "")
    if not tn or "(" in tn or not tn.endswith("*"):
        return UNTYPED
    inner = tn[:-1].strip()
    if inner in ("void", ""):
        return UNTYPED
    if inner in _CHARS:
        return CHAR
    return inner


@dataclass
class SlotGroup:
    off: np.ndarray                  # int64 offsets inside the element
    sid: np.ndarray                  # int32 slot ids (TypeTable.slots)
    tt: np.ndarray                   # int32 pointee type ids / UNTYPED / CHAR
    amb: np.ndarray                  # bool: inside a union
    py: Tuple[Tuple[int, int, int, bool], ...] = ()

    def __len__(self):
        return len(self.py)


@dataclass
class CType:
    tid: int
    name: str
    size: int = 0
    layout: Optional[TypeLayout] = None
    opaque: bool = True              # nothing known about its pointers: scan conservatively
    fixed: Optional[SlotGroup] = None
    discr: Optional[Tuple[int, int]] = None                     # (offset, size)
    variants: Dict[int, SlotGroup] = field(default_factory=dict)
    default: Optional[SlotGroup] = None
    tail: Optional[Tuple[int, int, SlotGroup]] = None           # (offset, element size, slots)
    compiled: bool = False
    synthetic: bool = False          # made here (pointer-to-pointer), not by the resolver

    @property
    def simple(self) -> bool:
        return self.discr is None and self.tail is None

    @property
    def arrayable(self) -> bool:
        return self.size > 0 and self.tail is None


@dataclass(frozen=True)
class SlotInfo:
    owner: int                       # type id, or -1 for a root's own layout
    slot: PtrSlot
    context: str                     # "field", "variant", "tail", "root"


class TypeTable:
    def __init__(self, resolve: Optional[Callable[[str], Optional[TypeLayout]]]):
        self.resolve = resolve
        self.types: List[CType] = []
        self.by_key: Dict[str, int] = {}
        self.by_sig: Dict[tuple, int] = {}
        self.slots: List[SlotInfo] = []
        self.errors: List[str] = []

    # --- registry ----------------------------------------------------------------------------
    def tid(self, key: str) -> int:
        """The type id of a type key; keys that resolve to the same layout (a name and a DWARF
        handle for one struct) share one id. Resolves at once; compiles slots on first use (get)."""
        t = self.by_key.get(key)
        if t is not None:
            return t
        lay = self._resolve(key)
        synthetic = False
        if lay is None:
            inner = _norm(key)
            if inner.endswith("*"):      # a pointer: one slot of the pointer type itself
                lay = TypeLayout(inner, 8, (PtrSlot("", 0, inner, 8, None),))
                synthetic = True
        sig = None
        if lay is not None:
            try:
                sig = (lay.name, lay.size, lay.slots, lay.discr_offset, lay.discr_size, lay.variants, lay.tail)
                hash(sig)
            except TypeError:
                sig = None
            t = self.by_sig.get(sig) if sig is not None else None
            if t is not None:
                self.by_key[key] = t
                return t
        t = len(self.types)
        # named as people write it: the layout's own name when the key is an opaque handle
        # (the DWARF maps key types by "dwarf:<file>:<offset>")
        name = lay.name if lay is not None and lay.name and not synthetic else key
        ct = CType(t, name, layout=lay, synthetic=synthetic)
        self.types.append(ct)
        self.by_key[key] = t
        if sig is not None:
            self.by_sig[sig] = t
        return t

    def slot_target(self, slot: PtrSlot) -> int:
        k = pointee_key(slot)
        return k if isinstance(k, int) else self.tid(k)

    def get(self, tid: int) -> CType:
        ct = self.types[tid]
        if not ct.compiled:
            self._compile(ct)
        return ct

    def name(self, tid: int) -> str:
        return self.types[tid].name if 0 <= tid < len(self.types) else ""

    # --- compilation -----------------------------------------------------------------------------
    def _resolve(self, key: str) -> Optional[TypeLayout]:
        if self.resolve is None:
            return None
        try:
            return self.resolve(key)
        except Exception as e:          # a resolver problem is a note, never a traceback
            if len(self.errors) < 10:
                self.errors.append(f"type {key}: {type(e).__name__}: {e}")
            return None

    def _compile(self, ct: CType) -> None:
        ct.compiled = True
        lay = ct.layout
        if lay is None:
            return                       # opaque: its chunks are scanned conservatively
        if lay.size <= 0 and not lay.slots and lay.tail is None:
            return
        ct.layout = lay
        ct.size = int(lay.size)
        ct.opaque = False
        ct.fixed = self.group(ct.tid, lay.slots, "field")
        if lay.discr_offset is not None and lay.variants and lay.discr_size in (1, 2, 4, 8):
            ct.discr = (int(lay.discr_offset), int(lay.discr_size))
            for v in lay.variants:
                g = self.group(ct.tid, v.slots, "variant")
                if v.discr_value is None:
                    ct.default = g
                else:
                    ct.variants[int(v.discr_value) & ((1 << (8 * lay.discr_size)) - 1)] = g
        if lay.tail is not None:
            toff, tsz, tslots = lay.tail
            if tsz > 0:
                ct.tail = (int(toff), int(tsz), self.group(ct.tid, tslots, "tail"))

    def group(self, owner: int, slots, context: str) -> SlotGroup:
        py = []
        for s in slots:
            sid = len(self.slots)
            self.slots.append(SlotInfo(owner, s, context))
            py.append((int(s.offset), sid, self.slot_target(s), bool(s.ambiguous)))
        py.sort()
        return SlotGroup(np.array([p[0] for p in py], dtype=np.int64),
                         np.array([p[1] for p in py], dtype=np.int32),
                         np.array([p[2] for p in py], dtype=np.int32),
                         np.array([p[3] for p in py], dtype=bool), tuple(py))

    # --- paths ---------------------------------------------------------------------------------
    def path(self, sid: int, elem: int, array: bool) -> str:
        """The field path of a slot inside a heap object: ".next", "[3].next", "[3]", "items[2].p"."""
        info = self.slots[sid]
        p = info.slot.path
        if info.context == "tail":
            if "[]" in p:                       # ".items[]" / ".items[].next": the member's name
                return p.replace("[]", f"[{elem}]", 1)
            lay = self.types[info.owner].layout if info.owner >= 0 else None
            return f"<tail>[{elem}]{p}" if lay is None else f"{_tail_name(lay)}[{elem}]{p}"
        if array or elem > 0:
            return f"[{elem}]{p}"
        return p


def _tail_name(lay: TypeLayout) -> str:
    return getattr(lay, "tail_name", None) or "tail"
