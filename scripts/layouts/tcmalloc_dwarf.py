#!/usr/bin/env python3
"""Extract the struct layouts heaplens' tcmalloc walker needs from the DWARF of a `-g` build of
gperftools, and write them as the shipped table (common/allocators/data/tcmalloc-*.json).

Usage: tcmalloc_dwarf.py --version 2.10 --package "google-perftools 2.10-1" --out FILE \
           NAME=REBUILT_SO=INSTALLED_SO [NAME=...]
NAME names the layout (libtcmalloc_minimal, libtcmalloc); REBUILT_SO is the library built with
debug info (its types are read); INSTALLED_SO is the distribution's stripped library whose
build-id keys the table (its code is not the rebuild's, but its types are the same source's).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, Optional

from elftools.elf.elffile import ELFFile

# (qualified type name, members wanted). A member may be an array (its length is recorded as
# "NAME[]") or a bit field (recorded as [bit offset, bit width]).
WANTED = {
    "tcmalloc::Span": ["start", "length", "next", "prev", "refcount", "sizeclass", "location", "sample"],
    "tcmalloc::SizeMap": ["class_array_", "num_objects_to_move_", "class_to_size_", "class_to_pages_",
                          "num_size_classes"],
    "tcmalloc::CentralFreeList": ["lock_", "size_class_", "empty_", "nonempty_", "num_spans_", "counter_",
                                  "tc_slots_", "used_slots_", "cache_size_", "max_cache_size_"],
    "tcmalloc::CentralFreeListPadded": [],
    "tcmalloc::ThreadCache": ["list_", "size_", "max_size_", "tid_", "next_", "prev_"],
    "tcmalloc::ThreadCache::FreeList": ["list_", "length_", "lowater_", "max_length_", "length_overages_",
                                        "size_"],
    "tcmalloc::PageHeap": ["pagemap_cache_", "pagemap_", "large_normal_", "large_returned_", "free_",
                           "stats_"],
    "tcmalloc::PageHeap::SpanList": ["normal", "returned"],
    "tcmalloc::PageHeap::Stats": ["system_bytes", "free_bytes", "unmapped_bytes", "committed_bytes"],
    "TCMalloc_PageMap2<35>": ["root_"],
    "TCMalloc_PageMap2<35>::Leaf": ["values"],
    "SpinLock": ["lockword_"],
}
SHORT = {"tcmalloc::ThreadCache::FreeList": "FreeList", "tcmalloc::PageHeap::SpanList": "SpanList",
         "tcmalloc::PageHeap::Stats": "PageHeapStats", "TCMalloc_PageMap2<35>": "PageMap",
         "TCMalloc_PageMap2<35>::Leaf": "PageMapLeaf"}
STRUCT_TAGS = ("DW_TAG_structure_type", "DW_TAG_class_type", "DW_TAG_union_type")


def _name(die) -> Optional[str]:
    a = die.attributes.get("DW_AT_name")
    return a.value.decode() if a else None


def _resolve(die):
    """Follow typedefs and cv-qualifiers to the underlying type DIE."""
    for _ in range(16):
        if die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type") \
                and "DW_AT_type" in die.attributes:
            die = die.get_DIE_from_attribute("DW_AT_type")
        else:
            break
    return die


def _array_len(die) -> Optional[int]:
    die = _resolve(die)
    if die.tag != "DW_TAG_array_type":
        return None
    for sub in die.iter_children():
        if sub.tag == "DW_TAG_subrange_type":
            if "DW_AT_count" in sub.attributes:
                return sub.attributes["DW_AT_count"].value
            if "DW_AT_upper_bound" in sub.attributes:
                return sub.attributes["DW_AT_upper_bound"].value + 1
    return None


def _members(die, base: int, out: Dict[str, object]):
    """Members of a struct (anonymous unions and structs flattened, base classes inlined)."""
    for m in die.iter_children():
        if m.tag == "DW_TAG_inheritance":
            loc = m.attributes.get("DW_AT_data_member_location")
            _members(_resolve(m.get_DIE_from_attribute("DW_AT_type")), base + (loc.value if loc else 0), out)
            continue
        if m.tag != "DW_TAG_member" or "DW_AT_external" in m.attributes or "DW_AT_declaration" in m.attributes:
            continue
        loc = m.attributes.get("DW_AT_data_member_location")
        off = base + (loc.value if loc is not None else 0)
        name = _name(m)
        t = m.get_DIE_from_attribute("DW_AT_type")
        if name is None:
            rt = _resolve(t)
            if rt.tag in STRUCT_TAGS:
                _members(rt, off, out)
            continue
        if "DW_AT_bit_size" in m.attributes:
            width = m.attributes["DW_AT_bit_size"].value
            if "DW_AT_data_bit_offset" in m.attributes:
                bit = base * 8 + m.attributes["DW_AT_data_bit_offset"].value
            else:                              # DWARF <= 4, little-endian storage unit
                size = m.attributes["DW_AT_byte_size"].value
                bit = off * 8 + size * 8 - m.attributes["DW_AT_bit_offset"].value - width
            out[name] = [bit, width]
            continue
        out[name] = off
        n = _array_len(t)
        if n is not None:
            out[name + "[]"] = n


def extract(path: str) -> Dict[str, Dict[str, object]]:
    found: Dict[str, Dict[str, object]] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info():
            sys.exit(f"{path} has no DWARF: build it with -g")
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            stack = [(cu.get_top_DIE(), "")]
            while stack and len(found) < len(WANTED):
                die, prefix = stack.pop()
                for child in die.iter_children():
                    name = _name(child)
                    if child.tag == "DW_TAG_namespace":
                        stack.append((child, f"{prefix}{name}::" if name else prefix))
                    elif child.tag in STRUCT_TAGS and name:
                        q = prefix + name
                        if "DW_AT_declaration" not in child.attributes and q in WANTED and q not in found:
                            members: Dict[str, object] = {}
                            _members(child, 0, members)
                            members["size"] = child.attributes["DW_AT_byte_size"].value
                            found[q] = members
                        stack.append((child, q + "::"))
            if len(found) == len(WANTED):
                break
    missing = [q for q in WANTED if q not in found]
    if missing:
        sys.exit(f"{path}: types not found in DWARF: {', '.join(missing)}")
    out: Dict[str, Dict[str, object]] = {}
    for q, want in WANTED.items():
        have = found[q]
        lost = [m for m in want if m not in have]
        if lost:
            sys.exit(f"{path}: {q} lacks members {lost}")
        keep = {"size": have["size"]}
        for m in want:
            keep[m] = have[m]
            if m + "[]" in have:
                keep[m + "[]"] = have[m + "[]"]
        # Span.objects lives in an anonymous union right after prev
        if q == "tcmalloc::Span":
            keep["objects"] = have.get("objects", keep["prev"] + 8)
        out[SHORT.get(q, q.split("::")[-1])] = keep
    return out


def build_id(path: str) -> str:
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
    sys.exit(f"{path} has no build-id")


def package_of(path: str) -> str:
    try:
        p = subprocess.run(["dpkg-query", "-S", os.path.realpath(path)], capture_output=True, text=True)
        pkg = p.stdout.split(":")[0].strip()
        v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        return f"{pkg} {v.stdout.strip()}" if pkg and v.returncode == 0 else "?"
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True)
    ap.add_argument("--package", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("libs", nargs="+", help="NAME=REBUILT_SO=INSTALLED_SO")
    a = ap.parse_args()
    table = {"comment": "Struct layouts of gperftools tcmalloc for heaplens, keyed by the build-id of the "
                        "distribution's stripped library. Generated by scripts/layouts/tcmalloc.sh from the "
                        "DWARF of a -g rebuild of the same source package; do not edit by hand.",
             "gperftools": a.version, "source_package": a.package, "libraries": {}, "layouts": {}}
    for spec in a.libs:
        name, rebuilt, installed = spec.split("=")
        lay = extract(rebuilt)
        table["layouts"][name] = lay
        table["libraries"][build_id(installed)] = {
            "file": os.path.basename(os.path.realpath(installed)), "package": package_of(installed),
            "layout": name, "rebuild_build_id": build_id(rebuilt)}
        print(f"{name}: {len(lay)} types from {rebuilt}; key {build_id(installed)} ({installed})")
    names = list(table["layouts"])
    for n in names[1:]:
        same = table["layouts"][n] == table["layouts"][names[0]]
        print(f"layout {n} {'equals' if same else 'DIFFERS FROM'} {names[0]}")
    with open(a.out, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
