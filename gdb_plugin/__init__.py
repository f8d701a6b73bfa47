"""heaplens for gdb. Load with `source <checkout>/gdb_plugin/gdbinit.py`."""
