"""heaplens loader for gdb: `gdb -x <checkout>/gdb_plugin/gdbinit.py` or `source` it in ~/.gdbinit.

Works from any directory with gdb's embedded Python: puts the checkout and the checkout's
virtual environment (.venv, made by scripts/setup.sh with /usr/bin/python3) on sys.path.
Loading twice is harmless: commands are registered once.
"""
import os
import sys

import gdb


def _load():
    root = os.path.dirname(os.path.dirname(os.path.realpath(os.path.expanduser(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    from common.bootstrap import missing_dependency, setup_path
    setup_path(root)
    if getattr(gdb, "_heaplens_loaded", False):
        return
    problem = missing_dependency(root, "gdb")
    if problem:
        gdb.write(problem + "\n")
        return
    from gdb_plugin.commands import register
    register()
    gdb._heaplens_loaded = True


_load()
