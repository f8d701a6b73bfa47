"""Making a debugger's embedded Python ready for heaplens (used by the lldb loader; the gdb
loader can use it too). Imports nothing beyond the standard library, so it runs before the
dependencies are known to be there.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import Optional


def setup_path(root: str) -> None:
    """Put the checkout and its virtual environment's site-packages (scripts/setup.sh makes
    <root>/.venv with /usr/bin/python3, the interpreter gdb and lldb-16 embed) on sys.path."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    paths = [root] + sorted(glob.glob(os.path.join(root, ".venv", "lib", ver, "site-packages")))
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)


def missing_dependency(root: str, debugger: str) -> Optional[str]:
    """None when the core's dependencies import; else one sentence saying what to run."""
    try:
        import numpy  # noqa: F401
        import elftools  # noqa: F401
    except ImportError as e:
        name = e.name or str(e)
        return (f"heaplens: not loaded: {name} is missing for {debugger}'s Python "
                f"({sys.version.split()[0]}); run {root}/scripts/setup.sh")
    return None
