"""Runs inside lldb (`command script import tests/lldb_probe.py`, by tests/test_lldb.py) at the
program's checkpoint or on a core: types the user commands exactly as a person would and
collects their JSON into HL_OUT, like tests/gdb_probe.py does in gdb.

Environment: HL_OUT (directory), HL_TRUTH (truth file, optional), HL_EXTRA (';'-separated
extra commands, their output kept under texts).
Also writes threads.json: what LldbTarget reports for each thread (tid, fs_base).
"""
import json
import os

import lldb


def __lldb_init_module(debugger, internal_dict):
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
        addrs = []
        for line in open(truth):
            f = line.split()
            if f and f[0] in ("live", "freed", "mmapped"):
                addrs.append(int(f[1], 16))
            elif f and f[0] == "expect":
                addrs.append(int(f[2], 16))
        for a in addrs:
            res = run(f"info alloc {a:#x} --json {out}/info.json")
            infos[str(a)] = json.load(open(f"{out}/info.json")) if "ERROR: " not in res else {"error": res}
    from lldb_plugin.target import LldbTarget
    t = LldbTarget(debugger.GetSelectedTarget())
    threads = [{"num": th.num, "tid": th.tid, "fs_base": th.fs_base} for th in t.threads()]
    json.dump({"kind": t.kind, "threads": threads}, open(f"{out}/threads.json", "w"))
    for cmd in filter(None, os.environ.get("HL_EXTRA", "").split(";")):
        texts[cmd] = run(cmd)
    json.dump({"infos": infos, "texts": texts}, open(f"{out}/probe.json", "w"))
