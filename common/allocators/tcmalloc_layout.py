"""Struct layouts of gperftools tcmalloc: from the debugger's debug info when it has some, else
from the shipped table (data/tcmalloc-2.10-debian.json, keyed by the library's build-id; made by
scripts/layouts/tcmalloc.sh from the DWARF of a -g rebuild of Debian's source package)."""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..target import Target

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tcmalloc-2.10-debian.json")
PAGE_SHIFT_BITS = 48            # PageMap2<48 - kPageShift> on x86-64: root bits + leaf bits + page shift


@dataclass
class TcLayout:
    raw: Dict[str, Dict[str, Any]]
    source: str                 # one sentence for meta["layout"]
    version: str                # gperftools version the layout is for

    def __post_init__(self):
        r = self.raw
        sp, sm, cf, tc, fl, ph = r["Span"], r["SizeMap"], r["CentralFreeList"], r["ThreadCache"], r["FreeList"], \
            r["PageHeap"]
        self.span_size = sp["size"]
        self.span_start, self.span_length = sp["start"], sp["length"]
        self.span_next, self.span_prev, self.span_objects = sp["next"], sp["prev"], sp["objects"]
        self.refcount, self.sizeclass, self.location, self.sample = (tuple(sp[k]) for k in
                                                                      ("refcount", "sizeclass", "location", "sample"))
        self.sm_size = sm["size"]
        self.sm_to_move, self.sm_class_size, self.sm_class_pages = \
            sm["num_objects_to_move_"], sm["class_to_size_"], sm["class_to_pages_"]
        self.sm_num_classes = sm["num_size_classes"]
        self.max_classes = sm["class_to_size_[]"]
        self.cf_stride = r["CentralFreeListPadded"]["size"]
        self.cf_lock, self.cf_size_class, self.cf_empty, self.cf_nonempty = \
            cf["lock_"], cf["size_class_"], cf["empty_"], cf["nonempty_"]
        self.cf_counter, self.cf_num_spans = cf["counter_"], cf["num_spans_"]
        self.cf_slots, self.cf_nslots, self.cf_used_slots = cf["tc_slots_"], cf["tc_slots_[]"], cf["used_slots_"]
        self.tc_size, self.tc_list, self.tc_nlists = tc["size"], tc["list_"], tc["list_[]"]
        self.tc_bytes, self.tc_tid, self.tc_next, self.tc_prev = tc["size_"], tc["tid_"], tc["next_"], tc["prev_"]
        self.fl_size, self.fl_list, self.fl_length, self.fl_max_length = \
            fl["size"], fl["list_"], fl["length_"], fl["max_length_"]
        self.ph_pagemap, self.ph_free, self.ph_nfree, self.ph_stats = \
            ph["pagemap_"], ph["free_"], ph["free_[]"], ph["stats_"]
        self.spanlist_size = r["SpanList"]["size"]
        self.sl_normal, self.sl_returned = r["SpanList"]["normal"], r["SpanList"]["returned"]
        st = r["PageHeapStats"]
        self.stats_off = {k: st[k] for k in ("system_bytes", "free_bytes", "unmapped_bytes", "committed_bytes")}
        pm = r["PageMap"]
        self.pm_root, self.root_len = pm["root_"], pm["root_[]"]
        self.leaf_len = r["PageMapLeaf"]["values[]"]
        self.leaf_bits = self.leaf_len.bit_length() - 1
        self.page_shift = PAGE_SHIFT_BITS - self.leaf_bits - (self.root_len.bit_length() - 1)
        self.lockword = r["SpinLock"]["lockword_"]


@functools.lru_cache(maxsize=1)
def _table() -> Dict[str, Any]:
    with open(TABLE) as f:
        return json.load(f)


def table_entry(build_id: Optional[str]) -> Optional[Dict[str, Any]]:
    """The table's record for a library build-id: {"file", "package", "layout", ...} or None."""
    try:
        return _table()["libraries"].get(build_id or "")
    except (OSError, ValueError, KeyError):
        return None


def from_table(build_id: Optional[str]) -> Optional[TcLayout]:
    entry = table_entry(build_id)
    if entry is None:
        return None
    t = _table()
    return TcLayout(t["layouts"][entry["layout"]],
                    f"built-in table for gperftools {t['gperftools']} ({entry['file']} build-id {build_id[:12]}…, "
                    f"{entry['package']})", t["gperftools"])


# (table struct, debugger type name) for the debug-info path
_DEBUG_TYPES = (("Span", "tcmalloc::Span"), ("SizeMap", "tcmalloc::SizeMap"),
                ("CentralFreeList", "tcmalloc::CentralFreeList"),
                ("CentralFreeListPadded", "tcmalloc::CentralFreeListPadded"),
                ("ThreadCache", "tcmalloc::ThreadCache"), ("FreeList", "tcmalloc::ThreadCache::FreeList"),
                ("PageHeap", "tcmalloc::PageHeap"), ("SpanList", "tcmalloc::PageHeap::SpanList"),
                ("PageHeapStats", "tcmalloc::PageHeap::Stats"))


def with_debug_info(target: Target, version: str) -> Optional[TcLayout]:
    """The layout from the debugger's debug info for tcmalloc's types (byte offsets and sizes),
    over the 2.10 table's shape for what byte offsets cannot say (array lengths, bit fields);
    None when the debugger has no such types."""
    try:
        base = json.loads(json.dumps(next(iter(_table()["layouts"].values()))))
    except (OSError, ValueError, StopIteration):
        return None
    got = 0
    for key, tname in _DEBUG_TYPES:
        sl = target.struct_layout(tname)
        if sl is None:
            continue
        got += 1
        d = base[key]
        d["size"] = sl.size
        for name, off in sl.fields.items():
            if name in d and not isinstance(d[name], list):
                d[name] = off
            elif name in d:                      # bit field: keep its bit within the byte
                d[name] = [off * 8 + d[name][0] % 8, d[name][1]]
    if got < 5:                                   # too little to trust: the types are not there
        return None
    d = base["CentralFreeList"]
    d["tc_slots_[]"] = (d["used_slots_"] - d["tc_slots_"]) // 16
    d = base["ThreadCache"]
    d["list_[]"] = (d["size_"] - d["list_"]) // base["FreeList"]["size"]
    d = base["SizeMap"]
    d["class_to_size_[]"] = (d["class_to_size_"] - d["num_objects_to_move_"]) // 4   # adjacent int32 arrays
    base["Span"]["objects"] = base["Span"]["prev"] + 8          # the anonymous union after prev
    return TcLayout(base, "debug info", version)
