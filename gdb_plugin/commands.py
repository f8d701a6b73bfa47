"""gdb commands: thin wrappers that build a GdbTarget, call common.commands, print."""
from __future__ import annotations

import traceback

import gdb

from common import commands as C
from common import tracecmds as _t
from common.allocators import NoAllocator
from common.target import TargetError

from .target import cache_key as _cache_key
from .target import current_target

LOG = "/tmp/heaplens-error.log"


def _emit(res: C.Result):
    if res.text and res.json_out is None:        # `--json -` prints only JSON: parseable
        gdb.write(res.text)
    if res.json_out:
        gdb.write(res.json_out + "\n")
    for e in res.errors:
        gdb.write(f"heaplens: {e}\n")
    if res.fail:
        raise gdb.GdbError(res.fail)


def guarded(name):
    """Run a command body; known problems become one sentence, nothing becomes a traceback."""
    def wrap(fn):
        def run(self, arg, from_tty):
            target = current_target                    # made after the arguments are checked
            try:
                fn(self, target, arg or "")
            except gdb.GdbError:
                raise
            except C.UsageError as e:
                raise gdb.GdbError(f"{name}: {e}")
            except (TargetError, NoAllocator) as e:
                raise gdb.GdbError(f"{name}: {e}")
            except KeyboardInterrupt:
                raise gdb.GdbError(f"{name}: interrupted")
            except Exception as e:                      # a bug of ours: say so, log the details
                try:
                    with open(LOG, "a") as f:
                        f.write(f"--- {name} {arg!r}\n{traceback.format_exc()}\n")
                except OSError:
                    pass
                raise gdb.GdbError(f"{name}: internal error ({type(e).__name__}: {e}); "
                                   f"details in {LOG} — please report it")
        return run
    return wrap


def _command_class(spec: C.CommandSpec):
    """A gdb command for a spec of common.commands.COMMANDS: parse, make the target, run, print."""

    class Cmd(gdb.Command):
        __doc__ = spec.help

        def __init__(self):
            super().__init__(spec.name, gdb.COMMAND_DATA)

        @guarded(spec.name)
        def invoke(self, target, arg):
            args = spec.parse(arg)
            t = target()
            _emit(spec.run(t, args, _cache_key(t)))
    return Cmd


class InfoAlloc(gdb.Command):
    __doc__ = C.INFO_ALLOC_HELP

    def __init__(self):
        super().__init__("info alloc", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @guarded("info alloc")
    def invoke(self, target, arg):
        args = C.parse_info_alloc(arg)
        t = target()
        ptr = evaluate_pointer(args.rest)
        _emit(C.run_info_alloc(t, ptr, args, _cache_key(t)))


class HeapWhy(gdb.Command):
    __doc__ = _t.HEAP_WHY_HELP

    def __init__(self):
        super().__init__("heap-why", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    @guarded("heap-why")
    def invoke(self, target, arg):
        args = _t.parse_heap_why(arg)
        t = target()
        ptr = evaluate_pointer(args.rest)
        _emit(_t.run_heap_why(t, ptr, args, _cache_key(t)))


def evaluate_pointer(expr: str) -> C.Pointer:
    try:
        v = gdb.parse_and_eval(expr)
    except gdb.error as e:
        raise C.UsageError(f"cannot evaluate '{expr}': {e}")
    t = v.type.strip_typedefs()
    type_name, tsize = str(v.type), None
    try:
        if t.code == gdb.TYPE_CODE_PTR:
            target = t.target().strip_typedefs()
            if target.code not in (gdb.TYPE_CODE_VOID, gdb.TYPE_CODE_FUNC):
                tsize = target.sizeof
            addr = int(v)
        elif t.code == gdb.TYPE_CODE_ARRAY:
            addr = int(v.address) if v.address is not None else int(v.cast(t.target().pointer()))
        elif t.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_CHAR, gdb.TYPE_CODE_BOOL):
            addr = int(v)
            type_name = None
        else:
            raise C.UsageError(f"'{expr}' is a {v.type}, not a pointer or an address "
                               f"(try &{expr} for the object's own address)")
    except gdb.error as e:
        raise C.UsageError(f"cannot use '{expr}' as an address: {e}")
    if tsize is not None and t.target().strip_typedefs().code == gdb.TYPE_CODE_INT and tsize == 1:
        tsize = None                                   # char *: a byte buffer, not a typed object
    return C.Pointer(addr & 0xFFFFFFFFFFFFFFFF, expr, type_name, tsize)


def register():
    for spec in C.COMMANDS:
        _command_class(spec)()
    InfoAlloc()
    HeapWhy()
    from .scripting import register as register_scripting
    register_scripting()
