"""Runs inside gdb (sourced by tests/harness.py) at the program's checkpoint: exercises the
user commands exactly as a person would type them, and collects their JSON into HL_OUT.

Environment: HL_OUT (directory), HL_TRUTH (truth file, optional), HL_GCORE (path: also save a
core there), HL_EXTRA (';'-separated extra commands whose output goes to extra.txt).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from truth import addresses, read_truth  # noqa: E402

import gdb

out = os.environ["HL_OUT"]


def run(cmd):
    """A command's console output; a gdb error becomes 'ERROR: ...' text (tests assert on it)."""
    try:
        return gdb.execute(cmd, to_string=True)
    except gdb.error as e:
        return f"ERROR: {e}"


texts = {"heap-check": run(f"heap-check --json {out}/check.json"),
         "heap-stats": run(f"heap-stats --json {out}/stats.json")}
infos = {}
truth = os.environ.get("HL_TRUTH")
if truth and os.path.exists(truth):
    for a in addresses(read_truth(truth)):
        res = run(f"info alloc {a:#x} --json {out}/info.json")
        infos[str(a)] = json.load(open(f"{out}/info.json")) if not res.startswith("ERROR") else {"error": res}
for cmd in filter(None, os.environ.get("HL_EXTRA", "").split(";")):
    texts[cmd] = run(cmd)
json.dump({"infos": infos, "texts": texts}, open(f"{out}/probe.json", "w"))
if os.environ.get("HL_GCORE"):
    run(f"gcore {os.environ['HL_GCORE']}")
