"""For scripts inside gdb: `from gdb_plugin.api import target` gives the Target of the
program gdb is stopped in, to pass to common.api functions."""
from .target import current_target as target  # noqa: F401
