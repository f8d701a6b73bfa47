"""Scripting helpers for gdb: convenience functions for breakpoint conditions, and the opt-in
pointer annotations in backtraces (`set heaplens annotate-frames on`)."""
from __future__ import annotations

import gdb

from common import commands as C

from .target import current_target, cache_key


def _state(ptr) -> dict:
    t = current_target()
    return C.pointer_state(t, int(ptr) & 0xFFFFFFFFFFFFFFFF, cache_key(t))


class HeapStateFn(gdb.Function):
    """$heap_state(PTR): the allocation state of what PTR points into, as a string:
"allocated", "free", "cached", "top", "mmapped", "not-heap" or "unknown"."""

    def __init__(self):
        super().__init__("heap_state")

    def invoke(self, ptr):
        try:
            return _state(ptr)["state"]
        except Exception as e:                       # a condition must not blow up: say why
            raise gdb.GdbError(f"$heap_state: {e}")


class HeapIsFreeFn(gdb.Function):
    """$heap_is_free(PTR): 1 if PTR points into a free or thread-cached chunk, else 0.
Example: break free if $heap_is_free($rdi)   (stops at a double free, as it happens)"""

    def __init__(self):
        super().__init__("heap_is_free")

    def invoke(self, ptr):
        try:
            return 1 if _state(ptr)["state"] in ("free", "cached") else 0
        except Exception as e:
            raise gdb.GdbError(f"$heap_is_free: {e}")


class HeapSizeFn(gdb.Function):
    """$heap_size(PTR): usable bytes of the chunk PTR points into, or -1 if it is no chunk."""

    def __init__(self):
        super().__init__("heap_size")

    def invoke(self, ptr):
        try:
            s = _state(ptr)["size"]
            return -1 if s is None else s
        except Exception as e:
            raise gdb.GdbError(f"$heap_size: {e}")


class _Settings(gdb.Parameter):
    """Annotate every pointer gdb prints (bt, bt full, info locals, print) with the state of
the heap chunk it points into, e.g. response=0x55555555a2a0 [cached: tcache[6] (0x80) of
thread 1, 120 B, freed last]. Off by default."""
    set_doc = "Set whether heaplens annotates heap pointers wherever gdb prints them."
    show_doc = "Show whether heaplens annotates heap pointers."

    def __init__(self):
        super().__init__("heaplens annotate-frames", gdb.COMMAND_DATA, gdb.PARAM_BOOLEAN)
        self.value = False

    def get_set_string(self):
        return "heaplens: pointer annotations " + ("on" if self.value else "off")

    def get_show_string(self, svalue):
        return f"heaplens annotates heap pointers: {svalue}"


class _Prefix(gdb.Command):
    """heaplens settings."""

    def __init__(self, name):
        super().__init__(name, gdb.COMMAND_DATA, prefix=True)


_busy = False


class _PointerPrinter:
    def __init__(self, val, note):
        self.val, self.note = val, note

    def to_string(self):
        addr = int(self.val) & 0xFFFFFFFFFFFFFFFF
        text = ""
        t = self.val.type.strip_typedefs().target().strip_typedefs()
        if t.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR) and t.sizeof == 1:
            try:
                s = self.val.string(length=32, errors="replace")
                text = ' "' + s.split("\0")[0].encode("unicode_escape").decode() + '"'
            except (gdb.error, gdb.MemoryError, UnicodeError):
                text = ""
        return f"{addr:#x}{text} {self.note}"


def _lookup(val):
    global _busy
    if _busy or not _SETTING.value:
        return None
    try:
        t = val.type.strip_typedefs()
        if t.code != gdb.TYPE_CODE_PTR or val.is_optimized_out:
            return None
        addr = int(val) & 0xFFFFFFFFFFFFFFFF
        if not addr:
            return None
        _busy = True
        tgt = current_target()
        note = C.pointer_note(tgt, addr, cache_key(tgt))
    except Exception:                    # annotations are a convenience: never break printing
        return None
    finally:
        _busy = False
    return _PointerPrinter(val, note) if note else None


_SETTING = None


def register():
    global _SETTING
    HeapStateFn()
    HeapIsFreeFn()
    HeapSizeFn()
    for name in ("set heaplens", "show heaplens"):
        _Prefix(name)
    _SETTING = _Settings()
    gdb.pretty_printers.append(_lookup)
