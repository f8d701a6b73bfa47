"""heaplens loader for gdb: `gdb -x <checkout>/gdb_plugin/gdbinit.py` or `source` it in ~/.gdbinit.

Works from any directory with gdb's embedded Python: puts the checkout and the checkout's
virtual environment (.venv, made by scripts/setup.sh with /usr/bin/python3) on sys.path.
Loading twice is harmless: commands are registered once.
"""
import glob
import os
import sys

import gdb


def _setup_path():
    here = os.path.dirname(os.path.realpath(os.path.expanduser(__file__)))
    root = os.path.dirname(here)
    paths = [root]
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths += glob.glob(os.path.join(root, ".venv", "lib", ver, "site-packages"))
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    return root


def _load():
    root = _setup_path()
    if getattr(gdb, "_heaplens_loaded", False):
        return
    try:
        import numpy  # noqa: F401
        import elftools  # noqa: F401
    except ImportError as e:
        gdb.write(f"heaplens: not loaded: {e.name} is missing for gdb's Python "
                  f"({sys.executable or 'embedded'} {sys.version.split()[0]}); run {root}/scripts/setup.sh\n")
        return
    from gdb_plugin.commands import register
    register()
    gdb._heaplens_loaded = True


_load()
