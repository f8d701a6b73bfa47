"""heaplens for lldb: `command script import <checkout>/lldb_plugin`, or that line in ~/.lldbinit.

Works from any directory with lldb-16's embedded Python: puts the checkout and the checkout's
virtual environment (.venv, made by scripts/setup.sh with /usr/bin/python3) on sys.path.
Importing twice is harmless: the commands are registered again over themselves.
Nothing here imports numpy or the core, so a missing dependency or an unusable lldb gives
one sentence instead of a traceback.
"""
import os
import re
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(os.path.expanduser(__file__))))
MIN_LLDB = 16


def _lldb_problem(lldb_module) -> str:
    if not hasattr(lldb_module, "SBDebugger"):
        return ("heaplens: not loaded: this lldb's Python module is broken (no lldb.SBDebugger; "
                "Debian's default lldb 14 is): use lldb-16 (run scripts/setup.sh, then start lldb-16)")
    try:
        ver = lldb_module.SBDebugger.GetVersionString() or ""
    except Exception:
        ver = ""
    m = re.search(r"lldb version (\d+)", ver)
    if m is None or int(m.group(1)) < MIN_LLDB:
        first = ver.splitlines()[0] if ver else "this lldb"
        return (f"heaplens: not loaded: {first} is not supported (its Python module is broken on "
                f"Debian 12); use lldb-{MIN_LLDB} or newer (run {_ROOT}/scripts/setup.sh, then start "
                f"lldb-{MIN_LLDB})")
    return ""


def __lldb_init_module(debugger, internal_dict):
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from common.bootstrap import missing_dependency, setup_path
    setup_path(_ROOT)
    try:
        import lldb
    except ImportError as e:
        print(f"heaplens: not loaded: lldb's Python module cannot be imported ({e}): use lldb-{MIN_LLDB}")
        return
    problem = _lldb_problem(lldb) or missing_dependency(_ROOT, "lldb")
    if problem:
        print(problem)
        return
    from .commands import register
    register(debugger, __name__)


# For breakpoint callbacks (lldb's form of gdb's `break free if $heap_is_free($rdi)`):
#   breakpoint command add -s python -o "return lldb_plugin.heap_is_free(frame, frame.FindRegister('rdi').unsigned)"
# `where` is the SBFrame (or SBValue, SBTarget) the callback has. See lldb_plugin/scripting.py.
def heap_state(where, ptr):
    from .scripting import heap_state as f
    return f(where, ptr)


def heap_is_free(where, ptr):
    from .scripting import heap_is_free as f
    return f(where, ptr)


def heap_size(where, ptr):
    from .scripting import heap_size as f
    return f(where, ptr)
