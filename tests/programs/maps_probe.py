"""Sourced inside gdb by tests/test_maps.py, stopped at heaplens_checkpoint: writes to
$HL_MAPS_OUT one JSON document with gdb's own view (type layouts from gdb_plugin.program's
layout_of, global and thread-local addresses, every frame's pc/registers/CFA and the pointer
arguments/locals gdb can read) next to what common.maps computes for the same stop from the
DWARF alone (registers and CFA as gdb unwound them, memory from /proc/PID/mem)."""
import json
import os
import re
import sys
import time

import gdb

ROOT = os.environ["HL_ROOT"]
sys.path.insert(0, ROOT)
from common.bootstrap import setup_path  # noqa: E402

setup_path(ROOT)

from common.objfiles import objfiles_from_regions  # noqa: E402
from common.procmaps import read_maps  # noqa: E402
from common.target import FrameInfo, ThreadInfo  # noqa: E402
from common.maps.program import ProgramMaps  # noqa: E402
from gdb_plugin.program import layout_of  # noqa: E402

REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
        "r14", "r15", "rip")
TYPES = [t for t in os.environ.get("HL_TYPES", "").split(";") if t]
GLOBALS = [t for t in os.environ.get("HL_GLOBALS", "").split(";") if t]
TLS = [t for t in os.environ.get("HL_TLS", "").split(";") if t]
out_path = os.environ["HL_MAPS_OUT"]

inf = gdb.selected_inferior()
pid = inf.pid
fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)


def read(addr, n):
    data = os.pread(fd, n, addr)
    if len(data) != n:
        raise OSError("short read")
    return data


def u64(addr):
    try:
        return int.from_bytes(read(addr, 8), "little")
    except OSError:
        return None


def slot_json(s):
    d = {"path": s.path, "offset": s.offset, "type_name": s.type_name, "target_size": s.target_size,
         "target_type": s.target_type, "ambiguous": s.ambiguous}
    if s.target_type and s.target_type.startswith("dwarf:"):
        lay = pm.type_layout(s.target_type)          # what the key resolves to
        d["target_name"] = lay.name if lay is not None else None
        d["target_layout_size"] = lay.size if lay is not None else None
    return d


def layout_json(lay):
    if lay is None:
        return None
    return {"name": lay.name, "size": lay.size, "slots": [slot_json(s) for s in lay.slots],
            "discr_offset": lay.discr_offset, "discr_size": lay.discr_size,
            "variants": [{"discr_value": v.discr_value, "slots": [slot_json(s) for s in v.slots]}
                         for v in lay.variants],
            "tail": None if lay.tail is None else [lay.tail[0], lay.tail[1], [slot_json(s) for s in lay.tail[2]]]}


exe = inf.progspace.filename
objs = objfiles_from_regions(read_maps(pid))
mine_objs = [o for o in objs if os.path.realpath(o.path) == os.path.realpath(exe)]
if os.environ.get("HL_ALL_OBJFILES"):
    mine_objs = mine_objs + [o for o in objs if o not in mine_objs]
t0 = time.perf_counter()
pm = ProgramMaps.load(mine_objs, cache_dir=os.environ.get("HL_CACHE"))
load_seconds = time.perf_counter() - t0

doc = {"exe": exe, "bases": {o.path: o.base for o in mine_objs}, "load_seconds": load_seconds, "messages": pm.messages, "types": {}, "globals": {},
       "tls": {}, "frames": [], "file_stats": [fm.stats for _, fm in pm.files]}

# --- types ----------------------------------------------------------------------------------
for name in TYPES:
    try:
        g = layout_json(layout_of(gdb.parse_and_eval(f"({name} *)0").type.target()))
    except gdb.error as e:
        g = {"error": str(e)}
    key = pm.type_key(name)
    doc["types"][name] = {"gdb": g, "mine": layout_json(pm.type_layout(key)) if key else None, "key": key}

# --- globals and thread-locals --------------------------------------------------------------
mine_globals = {v.name: v for v in pm.globals()}
for name in GLOBALS:
    try:
        addr = int(gdb.parse_and_eval(f"&{name}"))
    except gdb.error:
        addr = None
    v = mine_globals.get(name)
    doc["globals"][name] = {"gdb": addr, "mine": v.address if v else None,
                            "mine_layout": layout_json(v.layout) if v else None}
threads = []
for th in inf.threads():
    th.switch()
    try:
        fs = int(gdb.newest_frame().read_register("fs_base"))
    except gdb.error:
        fs = None
    threads.append(ThreadInfo(th.num, th.ptid[1], fs))
for tl in pm.thread_locals(threads):
    doc["tls"].setdefault(tl.name, {"mine": {}, "gdb": {}, "offset": tl.tls_offset})
    if tl.thread is not None:
        doc["tls"][tl.name]["mine"][str(tl.thread)] = tl.address
for th in inf.threads():
    th.switch()
    for name in TLS:
        try:
            doc["tls"].setdefault(name, {"mine": {}, "gdb": {}})["gdb"][str(th.num)] = \
                int(gdb.parse_and_eval(f"&{name}"))
        except gdb.error:
            pass


# --- frames ---------------------------------------------------------------------------------
def gdb_vars(f):
    out = {}
    try:
        block = f.block()
    except RuntimeError:
        return out
    while block is not None:
        for sym in block:
            if not (sym.is_argument or sym.is_variable) or sym.name in out:
                continue
            lay = layout_of(sym.type)
            if not lay.slots:
                continue
            rec = {"kind": "arg" if sym.is_argument else "local", "ptr_type": lay.slots[0].type_name}
            try:
                val = sym.value(f)
                if val.is_optimized_out:
                    rec["optimized_out"] = True
                else:
                    a = val.address
                    rec["address"] = int(a) if a is not None else None
                    if val.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
                        rec["value"] = int(val) & 0xFFFFFFFFFFFFFFFF
                    elif a is not None:
                        rec["value"] = u64(int(a) + lay.slots[0].offset)
            except (gdb.error, RuntimeError, ValueError) as e:
                rec["optimized_out"] = True
                rec["error"] = str(e)
            out[sym.name] = rec
        if block.function is not None:
            break
        block = block.superblock
    return out


frames = []
NO_CFA = bool(os.environ.get("HL_NO_CFA"))
for th in sorted(inf.threads(), key=lambda t: t.num):
    th.switch()
    f = gdb.newest_frame()
    level = 0
    first = None
    while f is not None and level < 64:
        f.select()
        regs = {}
        for r in REGS:
            try:
                v = f.read_register(r)
                if not v.is_optimized_out:
                    regs[r] = int(v) & 0xFFFFFFFFFFFFFFFF
            except (gdb.error, ValueError):
                pass
        older = f.older()
        cfa_older = None
        if older is not None:
            try:
                cfa_older = int(older.read_register("rsp")) & 0xFFFFFFFFFFFFFFFF
            except gdb.error:
                pass
        m = re.search(r"frame at (0x[0-9a-f]+)", gdb.execute("info frame", to_string=True))
        cfa_info = int(m.group(1), 16) if m else None
        sal = f.find_sal()
        objfile = sal.symtab.objfile.filename if sal is not None and sal.symtab is not None else ""
        rec = {"thread": th.num, "tid": th.ptid[1], "level": level, "pc": f.pc(), "function": f.name() or "",
               "type": int(f.type()), "objfile": objfile, "registers": regs, "cfa_older_rsp": cfa_older,
               "cfa_info_frame": cfa_info, "gdb_vars": gdb_vars(f)}
        frames.append(rec)
        if first is None:
            first = (f.pc(), regs.get("rsp"))
        caller = (f.pc(), regs.get("rsp")) != first
        rec["mine_cfa"] = pm.cfa_at(f.pc(), regs, caller, objfile)
        fi = FrameInfo(th.num, th.ptid[1], level, f.pc(), f.name() or "", objfile=objfile)
        fi.registers = regs
        fi.cfa = None if NO_CFA else cfa_info
        rec["_fi"] = fi
        rec["_frame"] = (th, f)
        f = older
        level += 1

pm.frame_variables([r["_fi"] for r in frames], read)
for rec in frames:
    fi = rec.pop("_fi")
    th, frame = rec.pop("_frame")
    mine = {}
    for v in fi.variables:
        d = {"kind": v.kind, "function": v.function, "frame": v.frame, "optimized_out": v.optimized_out,
             "address": v.address, "value": v.value}
        if v.address is not None and v.layout.slots:
            d["value"] = u64(v.address + v.layout.slots[0].offset)
        if v.name not in rec["gdb_vars"] and not v.optimized_out:
            # a piece of a split variable (arr[1], s.field): ask gdb for that expression
            try:
                th.switch()
                frame.select()
                val = gdb.parse_and_eval(v.name)
                d["gdb_expr"] = None if val.is_optimized_out else int(val) & 0xFFFFFFFFFFFFFFFF
            except (gdb.error, RuntimeError, ValueError) as e:
                d["gdb_expr_error"] = str(e)
        mine[v.name] = d
    rec["mine"] = mine
    doc["frames"].append(rec)
doc["stats"] = pm.stats
doc["unsupported_reasons"] = pm.unsupported_reasons
json.dump(doc, open(out_path, "w"), indent=1, default=str)
os.close(fd)
