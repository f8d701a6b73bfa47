"""Scripting helpers for lldb: pointer annotations (`heaplens-annotate on`) and functions for
breakpoint callbacks, lldb's form of gdb's `break free if $heap_is_free($rdi)`.

lldb has no convenience functions ($heap_state...); a breakpoint's Python callback decides
whether to stop (return False: continue):

    breakpoint set -n free
    breakpoint command add -s python -o "return lldb_plugin.heap_is_free(frame, frame.FindRegister('rdi').unsigned)"

heap_state(frame, ptr), heap_is_free(frame, ptr) and heap_size(frame, ptr) take the SBFrame
(or SBTarget/SBValue) the callback gets and a pointer value. The heap is walked once per stop.

Annotations: lldb's form of gdb's pretty-printer is a type summary. `heaplens-annotate on`
enables a summary for every pointer type (the category `heaplens`, regex `\\*$`) that shows the
state of the heap chunk the pointer points into wherever lldb prints values: `frame variable`,
`bt` (arguments), `expression`, `p`:
    (char *) response = 0x... "YUUU\\x05" [cached: tcache[6] (0x80) of thread 1, 120 B, freed last]
"""
from __future__ import annotations

import lldb

from common import commands as C

from .target import LldbTarget, generation_of

CATEGORY = "heaplens"
POINTER_TYPES = r"\*( const| volatile| restrict)*$"
_current = [None, None]           # (key, LldbTarget): one target per stop
_busy = [False]
_MASK = (1 << 64) - 1


def _sbtarget(where):
    """An SBTarget from an SBFrame, SBValue, SBThread, SBProcess or SBTarget."""
    if isinstance(where, lldb.SBTarget):
        return where
    for name in ("GetTarget",):
        get = getattr(where, name, None)
        if get is not None:
            t = get()
            if t is not None and t.IsValid():
                return t
    thread = getattr(where, "GetThread", None)
    if thread is not None:
        return thread().GetProcess().GetTarget()
    return lldb.debugger.GetSelectedTarget()


def current_target(sbtarget) -> LldbTarget:
    """The LldbTarget for this stop of this process, made once per stop (memory handle,
    mappings, core): summaries run for every pointer printed."""
    proc = sbtarget.GetProcess()
    key = (proc.GetUniqueID(), generation_of(sbtarget, proc))
    k, t = _current
    if t is not None and k == key and t.target == sbtarget:
        return t
    if t is not None:
        t.close()
        _current[1] = None
    t = LldbTarget(sbtarget)
    _current[0], _current[1] = key, t
    return t


def state(where, ptr: int) -> dict:
    """info alloc's answer for a pointer (state, size, bin, thread...)."""
    t = current_target(_sbtarget(where))
    return C.pointer_state(t, int(ptr) & _MASK, t.cache_key())


def heap_state(where, ptr: int) -> str:
    """"allocated", "free", "cached", "top", "mmapped", "not-heap" or "unknown"."""
    return state(where, ptr)["state"]


def heap_is_free(where, ptr: int) -> bool:
    """True if ptr points into a free or thread-cached chunk: in a breakpoint callback on free,
    stop only at a double free."""
    try:
        return heap_state(where, ptr) in ("free", "cached")
    except Exception as e:                    # a callback must not blow up: stop and say why
        print(f"heaplens: heap_is_free: {e}")
        return True


def heap_size(where, ptr: int) -> int:
    """Usable bytes of the chunk ptr points into, or -1 if it is no chunk."""
    s = state(where, ptr)["size"]
    return -1 if s is None else s


# --- annotations -----------------------------------------------------------------------------------
def _c_string(valobj, addr: int) -> str:
    """What lldb shows for a char pointer (our summary replaces lldb's own)."""
    pt = valobj.GetType().GetCanonicalType().GetPointeeType().GetCanonicalType().GetUnqualifiedType()
    if pt.GetBasicType() not in (lldb.eBasicTypeChar, lldb.eBasicTypeSignedChar, lldb.eBasicTypeUnsignedChar):
        return ""
    err = lldb.SBError()
    raw = valobj.GetProcess().ReadMemory(addr, 32, err) if addr else None
    if not err.Success() or raw is None:
        return ""
    raw = bytes(raw).split(b"\0", 1)[0]
    text = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else
                   {34: '\\"', 92: "\\\\", 10: "\\n", 9: "\\t"}.get(b, f"\\x{b:02x}") for b in raw)
    return f'"{text}"'


def pointer_summary(valobj, internal_dict, options=None):
    """Summary for pointer types: the chunk state of heap pointers, the string of char ones."""
    if _busy[0]:
        return None
    _busy[0] = True
    try:
        if not valobj.GetType().GetCanonicalType().IsPointerType():
            return None
        err = lldb.SBError()
        addr = valobj.GetValueAsUnsigned(err, 0)
        if err.Fail():
            return None
        text = _c_string(valobj, addr)
        note = ""
        if addr:
            t = current_target(valobj.GetTarget())
            note = C.pointer_note(t, addr & _MASK, t.cache_key())
        return " ".join(x for x in (text, note) if x)
    except Exception:                      # annotations are a convenience: never break printing
        return None
    finally:
        _busy[0] = False


def set_annotations(debugger, on: bool, package: str) -> None:
    cat = debugger.GetCategory(CATEGORY)
    if not cat.IsValid():
        cat = debugger.CreateCategory(CATEGORY)
    spec = lldb.SBTypeNameSpecifier(POINTER_TYPES, True)
    if not cat.GetSummaryForType(spec).IsValid():
        summary = lldb.SBTypeSummary.CreateWithFunctionName(f"{package}.scripting.pointer_summary")
        cat.AddTypeSummary(spec, summary)
    cat.SetEnabled(on)


def annotations_on(debugger) -> bool:
    cat = debugger.GetCategory(CATEGORY)
    return cat.IsValid() and cat.GetEnabled()
