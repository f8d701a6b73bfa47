#!/usr/bin/env python3
"""Write the jemalloc layout table for a distribution's stripped libjemalloc (run by jemalloc.sh).

  --debug     the rebuilt library with DWARF and .symtab (the build tree's lib/libjemalloc.so.2)
  --stripped  the rebuilt library as packaged (stripped)
  --system    the installed library the table is for
The rebuilt and installed libraries must be identical except for the build-id note and
.gnu_debuglink; only then are the rebuild's offsets and addresses valid for the installed one.
The table is keyed by the installed library's build-id and merged into
OUT/jemalloc-<version>-debian.json.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from common.allocators.jemalloc_dwarf import extract  # noqa: E402


def ignorable_ranges(path):
    """File ranges allowed to differ: the build-id note and .gnu_debuglink."""
    from elftools.elf.elffile import ELFFile
    out, bid = [], None
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for sec in elf.iter_sections():
            if sec.name in (".note.gnu.build-id", ".gnu_debuglink"):
                out.append((sec["sh_offset"], sec["sh_offset"] + sec["sh_size"]))
            if sec.name == ".note.gnu.build-id":
                for note in sec.iter_notes():
                    bid = note["n_desc"]
    return out, bid


def compare(stripped, system):
    a, b = open(stripped, "rb").read(), open(system, "rb").read()
    if len(a) != len(b):
        return f"sizes differ ({len(a)} vs {len(b)})", None
    ranges, _ = ignorable_ranges(system)
    diff = [i for i in range(len(a)) if a[i] != b[i]] if a != b else []
    bad = [i for i in diff if not any(lo <= i < hi for lo, hi in ranges)]
    if bad:
        return f"{len(bad)} bytes differ outside the build-id note and .gnu_debuglink (first at {bad[0]:#x})", None
    return None, len(diff)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--debug", required=True)
    ap.add_argument("--stripped", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--package-version", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    err, ndiff = compare(a.stripped, a.system)
    if err:
        sys.exit(f"the rebuild does not match {a.system}: {err}; its offsets would not be valid")
    lay = extract(a.debug)
    _, sys_bid = ignorable_ranges(a.system)
    lay["rebuilt_build_id"] = lay["build_id"]
    lay["build_id"] = sys_bid
    lay["library"] = os.path.basename(a.system)
    lay["source"] = (f"Debian libjemalloc2 {a.package_version} rebuilt with -g, --with-lg-vaddr=48; identical "
                     f"but for {ndiff} build-id/debuglink bytes")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"jemalloc-{lay['version']}-debian.json")
    table = {"layouts": []}
    if os.path.exists(path):
        table = json.load(open(path))
    table["comment"] = ("jemalloc layouts for Debian's stripped libjemalloc.so.2, keyed by build-id; made by "
                        "scripts/layouts/jemalloc.sh (do not edit by hand)")
    table["layouts"] = [t for t in table.get("layouts", []) if t.get("build_id") != sys_bid] + [lay]
    with open(path + ".tmp", "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: build-id {sys_bid}, jemalloc {lay['version_string']}, LG_VADDR {lay['config']['lg_vaddr']}")


if __name__ == "__main__":
    main()
