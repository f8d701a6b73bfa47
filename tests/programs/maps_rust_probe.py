"""Sourced inside gdb by tests/test_maps.py for maps_rust.rs, stopped at heaplens_checkpoint:
for each Rust enum value below, the variant and pointer common.maps selects (discriminant read
from memory through TypeLayout.discr_offset/variants) next to the variant gdb's own Rust
support says is active and the pointer in it. Writes JSON to $HL_MAPS_OUT."""
import json
import os
import sys

import gdb

ROOT = os.environ["HL_ROOT"]
sys.path.insert(0, ROOT)
from common.bootstrap import setup_path  # noqa: E402

setup_path(ROOT)

from common.objfiles import objfiles_from_regions  # noqa: E402
from common.procmaps import read_maps  # noqa: E402
from common.target import FrameInfo  # noqa: E402
from common.maps.program import ProgramMaps  # noqa: E402

inf = gdb.selected_inferior()
fd = os.open(f"/proc/{inf.pid}/mem", os.O_RDONLY)


def read(addr, n):
    return os.pread(fd, n, addr)


def u(addr, n=8):
    return int.from_bytes(read(addr, n), "little")


exe = inf.progspace.filename
objs = [o for o in objfiles_from_regions(read_maps(inf.pid)) if os.path.realpath(o.path) == os.path.realpath(exe)]
pm = ProgramMaps.load(objs, cache_dir=os.environ.get("HL_CACHE"))


def pick(layout, addr):
    """(variant name, pointer value, slot path) chosen by the discriminant in memory."""
    d = u(addr + layout.discr_offset, layout.discr_size)
    chosen = None
    for v in layout.variants:
        if v.discr_value == d:
            chosen = v
            break
        if v.discr_value is None and chosen is None:
            chosen = v
    if chosen is None:
        return None, None, None, d
    if not chosen.slots:
        return "(no pointer)", None, None, d
    s = chosen.slots[0]
    return s.path, u(addr + s.offset), s.path, d


def gdb_active(expr, fields):
    v = gdb.parse_and_eval(expr)
    active = v.type.fields()[1]
    x = v[active]
    for f in fields:
        x = x[f]
    return active.name, int(x) & 0xFFFFFFFFFFFFFFFF


# frames as gdb unwinds them, with registers and the CFA left to the maps (unwind tables)
frames = []
f = gdb.newest_frame()
level = 0
while f is not None:
    regs = {}
    for r in ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
              "r14", "r15", "rip"):
        try:
            val = f.read_register(r)
            if not val.is_optimized_out:
                regs[r] = int(val) & 0xFFFFFFFFFFFFFFFF
        except gdb.error:
            pass
    fi = FrameInfo(1, inf.pid, level, f.pc(), f.name() or "")
    fi.registers = regs
    frames.append(fi)
    f = f.older()
    level += 1
pm.frame_variables(frames, read)
mine = {}
for fi in frames:
    for v in fi.variables:
        mine[(fi.function, v.name)] = v
glob = {v.name: v for v in pm.globals()}

# (frame function, variable, how to reach the enum from it, gdb expression, field path in the variant)
CASES = [
    ("maps_rust::inspect", "boxed", "self", "boxed", ["__0"]),
    ("maps_rust::inspect", "a", "deref", "*a", ["__0"]),
    ("maps_rust::inspect", "b", "deref", "*b", ["__0", "ptr", "pointer"]),
    ("maps_rust::inspect", "o", "deref.h", "o.h", ["__1"]),
    ("maps_rust::main", "a", "self", "a", ["__0"]),
    ("maps_rust::main", "b", "self", "b", ["__0", "ptr", "pointer"]),
    ("maps_rust::main", "o", "self.h", "o.h", ["__1"]),
]
results = []
level_of = {fi.function: fi.level for fi in frames}
for fn, name, how, gexpr, gfields in CASES:
    rec = {"function": fn, "name": name, "expr": gexpr}
    var = mine.get((fn, name))
    if var is None or var.address is None:
        rec["error"] = "variable not placed"
        results.append(rec)
        continue
    lay, addr = var.layout, var.address
    if how.startswith("deref"):
        s = lay.slots[0]
        addr = u(addr)
        lay = pm.type_layout(s.target_type)
    rec["layout"] = lay.name
    rec["mine"] = pick(lay, addr)
    gdb.execute(f"frame {level_of[fn]}", to_string=True)
    try:
        rec["gdb"] = gdb_active(gexpr, gfields)
    except (gdb.error, RuntimeError) as e:
        rec["gdb_error"] = str(e)
    results.append(rec)
g = glob.get("maps_rust::G_HOLDER")
if g is not None:
    rec = {"name": "maps_rust::G_HOLDER", "mine": pick(g.layout, g.address), "address": g.address,
           "gdb_address": int(gdb.parse_and_eval("&maps_rust::G_HOLDER"))}
    rec["gdb"] = gdb_active("maps_rust::G_HOLDER", ["__0"])
    results.append(rec)
json.dump({"results": results, "stats": pm.stats, "messages": pm.messages,
           "file_stats": [fm.stats for _, fm in pm.files]}, open(os.environ["HL_MAPS_OUT"], "w"), indent=1,
          default=str)
os.close(fd)
