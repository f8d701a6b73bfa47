"""Runs inside lldb (`command script import tests/lldb_probe.py`, by tests/test_lldb.py) at the
program's checkpoint or on a core: types the user commands exactly as a person would and
collects their JSON into HL_OUT, like tests/gdb_probe.py does in gdb.

Environment: HL_OUT (directory), HL_TRUTH (truth file, optional), HL_EXTRA (';'-separated
extra commands, their output kept under texts), HL_DUMP (set: also write program.json, the
Target's frames with registers, variables, globals and stop, see dump_program).
Also writes threads.json: what LldbTarget reports for each thread (tid, fs_base).

dump_program() is debugger-neutral: tests/test_lldb.py runs it in gdb too, on GdbTarget.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from truth import addresses, read_truth  # noqa: E402


def _layout(lay):
    if lay is None:
        return None
    return {"name": lay.name, "size": lay.size,
            "slots": [[s.path, s.offset, s.type_name, s.target_size, s.target_type, s.ambiguous] for s in lay.slots]}


def _var(v):
    return {"name": v.name, "kind": v.kind, "address": v.address, "value": v.value, "thread": v.thread,
            "tid": v.tid, "frame": v.frame, "function": v.function, "optimized_out": v.optimized_out,
            "layout": _layout(v.layout)}


def dump_program(t) -> dict:
    """What a Target says about the program: stop, every frame (registers=True), globals, the
    layouts of the types their pointers lead to, and frame_registers of each frame."""
    stop = t.stop_info()
    frames = t.frames(registers=True)
    glob = t.globals()
    types = {}
    for v in [v for f in frames for v in f.variables] + glob:
        for s in v.layout.slots:
            if s.target_type and s.target_type not in types and len(types) < 200:
                types[s.target_type] = _layout(t.type_layout(s.target_type))
    return {"stop": {"thread": stop.thread, "signal": stop.signal, "fault_address": stop.fault_address},
            "threads": {str(th.num): th.tid for th in t.threads()},
            "frames": [{"thread": f.thread, "tid": f.tid, "level": f.level, "pc": f.pc, "function": f.function,
                        "file": f.file, "line": f.line, "objfile": f.objfile, "cfa": f.cfa,
                        "registers": f.registers, "saved": t.frame_registers(f.thread, f.level),
                        "variables": [_var(v) for v in f.variables]} for f in frames],
            "globals": [_var(v) for v in glob], "types": types}


def __lldb_init_module(debugger, internal_dict):
    import lldb
    out = os.environ["HL_OUT"]
    ci = debugger.GetCommandInterpreter()

    def run(cmd):
        res = lldb.SBCommandReturnObject()
        ci.HandleCommand(cmd, res)
        if res.Succeeded():
            return res.GetOutput() or ""
        return (res.GetOutput() or "") + "ERROR: " + (res.GetError() or "").strip()

    texts = {"heap-check": run(f"heap-check --json {out}/check.json"),
             "heap-stats": run(f"heap-stats --json {out}/stats.json")}
    infos = {}
    truth = os.environ.get("HL_TRUTH")
    if truth and os.path.exists(truth):
        for a in addresses(read_truth(truth)):
            res = run(f"info alloc {a:#x} --json {out}/info.json")
            infos[str(a)] = json.load(open(f"{out}/info.json")) if "ERROR: " not in res else {"error": res}
    from lldb_plugin.target import LldbTarget
    t = LldbTarget(debugger.GetSelectedTarget())
    threads = [{"num": th.num, "tid": th.tid, "fs_base": th.fs_base} for th in t.threads()]
    json.dump({"kind": t.kind, "threads": threads}, open(f"{out}/threads.json", "w"))
    if os.environ.get("HL_DUMP"):
        proc = debugger.GetSelectedTarget().GetProcess()
        before = (proc.GetSelectedThread().GetIndexID(), proc.GetSelectedThread().GetSelectedFrame().GetFrameID())
        dump = dump_program(t)
        dump["selection_kept"] = before == (proc.GetSelectedThread().GetIndexID(),
                                            proc.GetSelectedThread().GetSelectedFrame().GetFrameID())
        json.dump(dump, open(f"{out}/program.json", "w"))
    t.close()
    for cmd in filter(None, os.environ.get("HL_EXTRA", "").split(";")):
        texts[cmd] = run(cmd)
    json.dump({"infos": infos, "texts": texts}, open(f"{out}/probe.json", "w"))
