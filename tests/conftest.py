import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
    if shutil.which("gdb") is None:
        skip = pytest.mark.skip(reason="gdb is not installed (run scripts/setup.sh)")
        for item in items:
            if "gdb" in item.keywords:
                item.add_marker(skip)
