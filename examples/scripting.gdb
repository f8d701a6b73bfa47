# heaplens scripting examples for gdb. Use:  gdb -x gdb_plugin/gdbinit.py -x examples/scripting.gdb PROG
# (or put the lines you want in ~/.gdbinit after `source <checkout>/gdb_plugin/gdbinit.py`).

# 1. Catch a double free the moment it happens, with no sanitizer and no rebuild:
#    stop in free() only when its argument already points to a free or thread-cached chunk.
break free if $heap_is_free($rdi)

# 2. Show each heap pointer's state wherever gdb prints pointers (bt, bt full, info locals, print).
set heaplens annotate-frames on

# 3. A command of your own: after every stop, print a one-line heap summary from the Python API.
python
import gdb
from common import api
from gdb_plugin.api import target

def heap_summary(event):
    try:
        rep = api.check(target())
    except Exception as e:                 # not a glibc program, no process...: stay quiet
        return
    worst = rep["findings"][0] if rep["findings"] else None
    s = rep["summary"][0]
    gdb.write(f"[heaplens] {s['chunks']} chunks, {len(rep['findings'])} finding(s)"
              + (f"; worst: {worst['severity']} {worst['kind']} at {worst['address']:#x}" if worst and worst['address'] else "")
              + "\n")

gdb.events.stop.connect(heap_summary)
end
