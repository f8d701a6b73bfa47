"""common/maps: the compiler-generated maps (type, location, global) decoded from DWARF with
pyelftools, checked against gdb on real programs (C at -O0/-O2, C++, Rust), live: type layouts
against gdb_plugin.program.layout_of, global and thread-local addresses, and every pointer
argument/local gdb can read in every frame against the DWARF location evaluator (registers and
CFA as gdb unwinds them, memory from /proc/PID/mem); then the cache and bad input.

HEAPLENS_SLOW=1 also runs the slow ones (libc's debug file: first decode, cached load, and
libc's own frames against gdb)."""
import json
import os
import shutil
import struct
import subprocess
import time

import pytest

from harness import BUILD, PROGRAMS, ROOT, build

from common.maps import exprs
from common.maps.exprs import Context
from common.maps.files import load_file_maps
from common.maps.program import PhysFrame, ProgramMaps
from common.target import ObjFile

SLOW = bool(os.environ.get("HEAPLENS_SLOW"))
slow = pytest.mark.skipif(not SLOW, reason="slow: set HEAPLENS_SLOW=1")
RUSTC = next((p for p in ("/root/.cargo/bin/rustc", shutil.which("rustc")) if p and os.path.exists(p)), None)
PROBE = os.path.join(PROGRAMS, "maps_probe.py")
RUST_PROBE = os.path.join(PROGRAMS, "maps_rust_probe.py")
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
KEYS = ("path", "offset", "target_size", "type_name", "ambiguous")

C_TYPES = ["struct node", "struct inner", "struct outer", "union value", "struct tagged", "struct flex",
           "struct flex0", "struct flex_rec", "struct bits", "struct quals", "struct has_opaque", "struct later",
           "struct matrix", "struct big", "struct tree", "node_t", "node_ptr", "list_head_t", "const_outer_p"]
C_GLOBALS = ["g_outer", "g_list", "g_heads", "g_val", "g_flex", "s_name", "g_big", "g_tagged", "g_quals",
             "g_opaque", "g_matrix", "g_bits", "g_tree", "g_flex0", "g_flex_rec"]
CXX_TYPES = ["zoo::Animal", "zoo::Pet", "zoo::Dog", "zoo::Box<zoo::Dog>", "zoo::Slot", "zoo::Kennel", "zoo::Tag"]
CXX_GLOBALS = ["g_kennel", "g_dog", "zoo::Animal::registry"]


# --- builds and gdb sessions ----------------------------------------------------------------
def _build_with(cmd, src, out):
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(BUILD, exist_ok=True)
        tmp = f"{out}.{os.getpid()}.tmp"
        subprocess.run(cmd + ["-o", tmp, src], check=True, capture_output=True, text=True)
        os.replace(tmp, out)
    return out


def build_cxx(opt="-O0"):
    return _build_with(["g++", "-g", opt], os.path.join(PROGRAMS, "maps_cxx.cpp"),
                       os.path.join(BUILD, f"maps_cxx{opt}"))


def build_rust():
    if RUSTC is None:
        pytest.skip("no rustc")
    return _build_with([RUSTC, "-g", "-C", "opt-level=0", "--crate-name", "maps_rust"],
                       os.path.join(PROGRAMS, "maps_rust.rs"), os.path.join(BUILD, "maps_rust"))


def gdb_probe(exe, probe, out, cache, extra_env=None, timeout=240):
    env = dict(os.environ, HL_ROOT=ROOT, HL_MAPS_OUT=out, HL_CACHE=cache, **(extra_env or {}))
    cmd = ["gdb", "-nx", "-q", "-batch", "-iex", "set debuginfod enabled off", "-iex", "set pagination off",
           "-ex", "break heaplens_checkpoint", "-ex", "run", "-ex", f"source {probe}", "-ex", "kill", exe]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    text = p.stdout + p.stderr
    assert "Traceback" not in text, text[-4000:]
    assert os.path.exists(out), f"the probe wrote nothing:\n{text[-4000:]}"
    return json.load(open(out))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache directory: these tests decode the programs they just built."""
    return str(tmp_path_factory.mktemp("maps-cache"))


_probes = {}


def c_probe(opt, cache, tmp_path_factory, cfa=True, extra=()):
    key = (opt, cfa, extra)
    if key not in _probes:
        exe = build("maps_prog", opt, extra=extra)
        out = str(tmp_path_factory.mktemp("probe") / "probe.json")
        env = {"HL_TYPES": ";".join(C_TYPES), "HL_GLOBALS": ";".join(C_GLOBALS), "HL_TLS": "t_node;t_label"}
        if not cfa:
            env["HL_NO_CFA"] = "1"
        _probes[key] = gdb_probe(exe, PROBE, out, cache, env)
    return _probes[key]


# --- comparisons ----------------------------------------------------------------------------
def slots(layout, skip_refs=False, within=None):
    out = []
    for s in layout["slots"]:
        if skip_refs and s["type_name"].endswith("&"):
            continue
        if within is not None and s["offset"] >= within:
            continue
        out.append(tuple(s[k] for k in KEYS))
    return out


def check_types(doc, names, skip_refs=False):
    for name in names:
        t = doc["types"][name]
        g, m = t["gdb"], t["mine"]
        assert g and "error" not in g, (name, g)
        assert m is not None, f"{name}: not in the type map"
        assert m["name"] == g["name"] and m["size"] == g["size"], (name, m["name"], g["name"], m["size"], g["size"])
        # gdb expands one phantom element of a flexible array (T x[]) past the end of the
        # struct; the maps give it as the layout's tail instead (checked separately)
        assert slots(m, skip_refs) == slots(g, within=g["size"] or None), name
        for gs, ms in zip([s for s in g["slots"] if s["offset"] < g["size"]],
                          [s for s in m["slots"] if not (skip_refs and s["type_name"].endswith("&"))]):
            if gs["target_size"] is not None:
                assert ms["target_type"], (name, ms)    # a key to expand the pointee with
            if gs["target_type"] and ms["target_type"]:  # gdb names struct/union pointees (qualified)
                unqualified = gs["target_type"].replace("const ", "").replace("volatile ", "")
                assert ms["target_name"] == unqualified, (name, gs, ms)
            if ms["target_type"]:
                assert ms["target_layout_size"] == ms["target_size"], (name, ms)


def frame_report(doc):
    """(gdb-readable variables compared, both optimized out, only mine optimized out, only
    gdb's optimized out, pieces checked) over the program's own frames; asserts every value."""
    exe = os.path.realpath(doc["exe"])
    readable = both_oo = mine_only_oo = gdb_only_oo = pieces = 0
    for fr in doc["frames"]:
        if not fr["objfile"] or os.path.realpath(fr["objfile"]) != exe:
            continue
        where = f"frame #{fr['level']} {fr['function']} of thread {fr['thread']}"
        mine = fr["mine"]
        for name, g in fr["gdb_vars"].items():
            m = mine.get(name)
            if g.get("optimized_out"):
                if m is None or m["optimized_out"]:
                    both_oo += 1
                else:
                    gdb_only_oo += 1
                continue
            if m is None:
                # split over registers (DW_OP_piece): the maps give one variable per pointer
                parts = {k: v for k, v in mine.items() if k.startswith(name + ".") or k.startswith(name + "[")}
                assert parts, f"{where}: {name} readable by gdb, not placed by the maps"
                for k, v in parts.items():
                    assert not v["optimized_out"] and v["value"] == v.get("gdb_expr"), (where, k, v)
                    pieces += 1
                readable += 1
                continue
            readable += 1
            if m["optimized_out"]:
                mine_only_oo += 1
                continue
            assert m["kind"] == g["kind"], (where, name, m, g)
            if "value" in g:
                assert m["value"] == g["value"], (where, name, m, g)
            if g.get("address") is not None and m["address"] is not None:
                assert m["address"] == g["address"], (where, name, m, g)
    return readable, both_oo, mine_only_oo, gdb_only_oo, pieces


# --- C: types, globals, thread-locals ---------------------------------------------------------
@pytest.mark.gdb
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_c_type_layouts_match_gdb(opt, cache, tmp_path_factory):
    doc = c_probe(opt, cache, tmp_path_factory)
    assert not doc["messages"], doc["messages"]
    check_types(doc, C_TYPES)
    t = {n: doc["types"][n]["mine"] for n in C_TYPES}
    # unions: every slot ambiguous; the anonymous union of struct tagged too
    assert all(s["ambiguous"] for s in t["union value"]["slots"])
    tagged = {s["path"]: s["ambiguous"] for s in t["struct tagged"]["slots"]}
    assert tagged == {".v.s": True, ".v.n": True, ".anon_s.a": False, ".p": True}
    # flexible array members: the tail (offset, element size, element slots)
    off, esz, el = t["struct flex"]["tail"]
    assert (off, esz) == (8, 8) and [(s["path"], s["offset"], s["target_size"]) for s in el] == [(".items[]", 0, 32)]
    off, esz, el = t["struct flex0"]["tail"]
    assert (off, esz, [s["path"] for s in el]) == (8, 8, [".items[]"])
    off, esz, el = t["struct flex_rec"]["tail"]
    assert (off, esz, [(s["path"], s["offset"]) for s in el]) == (8, 24, [(".recs[].opaque", 0), (".recs[].name", 8)])
    # caps like gdb_plugin: 1024 elements of an array
    assert len(t["struct big"]["slots"]) == 1024
    # an opaque struct pointer has no pointee size; one completed later in the file has
    opaque = {s["path"]: s["target_size"] for s in t["struct has_opaque"]["slots"]}
    assert opaque == {".o": None, ".l": 24}


@pytest.mark.gdb
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_c_globals_and_thread_locals_match_gdb(opt, cache, tmp_path_factory):
    doc = c_probe(opt, cache, tmp_path_factory)
    for name, g in doc["globals"].items():
        assert g["mine"] == g["gdb"], (name, g)       # None for both: s_name folded away at -O2
    assert sum(g["gdb"] is not None for g in doc["globals"].values()) >= len(C_GLOBALS) - 1
    assert doc["globals"]["g_big"]["mine_layout"]["slots"][0]["path"] == ".many[0]"
    assert doc["globals"]["g_list"]["mine_layout"]["slots"][0]["type_name"] == "node_ptr"
    # thread-locals of the executable, placed for both threads from their thread pointers
    for name in ("t_node", "t_label"):
        tl = doc["tls"][name]
        assert len(tl["gdb"]) == 2 and tl["mine"] == tl["gdb"], (name, tl)


# --- C: the location map against gdb, frame by frame -----------------------------------------
@pytest.mark.gdb
@pytest.mark.parametrize("cfa", [True, False], ids=["cfa-from-gdb", "cfa-from-unwind-tables"])
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_c_locations_match_gdb(opt, cfa, cache, tmp_path_factory):
    doc = c_probe(opt, cache, tmp_path_factory, cfa)
    readable, both_oo, mine_only_oo, gdb_only_oo, pieces = frame_report(doc)
    print(f"\n{opt} ({'gdb CFA' if cfa else 'CFA from .eh_frame'}): {readable} variables gdb reads, all with the "
          f"same values from the maps; optimized out in both: {both_oo}; only in the maps: {mine_only_oo}; "
          f"only in gdb: {gdb_only_oo}; pieces checked: {pieces}; stats {doc['stats']}")
    assert mine_only_oo == 0
    assert readable >= (14 if opt == "-O0" else 8)
    if opt == "-O0":
        assert both_oo == 0 and doc["stats"]["optimized_out"] == 0
    exe = os.path.realpath(doc["exe"])
    main_frames = [fr for fr in doc["frames"] if fr["thread"] == 1]
    names = [fr["function"] for fr in main_frames]
    assert names[:5] == ["heaplens_checkpoint", "inl_sum", "leaf", "middle", "main"], names
    # the inlined frame gets its own variables, at its own level
    inl = main_frames[1]["mine"]
    assert {"from", "tag"} <= set(inl) and all(v["function"] == "inl_sum" and v["frame"] == 1 for v in inl.values())
    # the CFA computed from the unwind tables is gdb's ("info frame": frame at ...) in every frame
    for fr in doc["frames"]:
        if fr["objfile"] and os.path.realpath(fr["objfile"]) == exe:
            assert fr["mine_cfa"] == fr["cfa_info_frame"], fr["function"]
    if not cfa:
        assert doc["stats"].get("cfa_from_unwind_tables", 0) >= 4


@pytest.mark.gdb
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_c_dwarf4_locations_match_gdb(opt, cache, tmp_path_factory):
    """DWARF 4: .debug_loc / .debug_ranges and DW_TAG_GNU_call_site instead of DWARF 5's
    .debug_loclists / .debug_rnglists / DW_TAG_call_site."""
    doc = c_probe(opt, cache, tmp_path_factory, True, ("-gdwarf-4",))
    check_types(doc, C_TYPES)
    readable, both_oo, mine_only_oo, gdb_only_oo, pieces = frame_report(doc)
    print(f"\n{opt} DWARF 4: {readable} readable by gdb, same values; optimized out in both {both_oo}; "
          f"only mine {mine_only_oo}; only gdb {gdb_only_oo}; stats {doc['stats']}")
    assert mine_only_oo == 0 and readable >= (14 if opt == "-O0" else 8)
    if opt == "-O2":
        assert doc["stats"].get("entry_values", 0) >= 1 and pieces >= 3


@pytest.mark.gdb
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_c_locations_offline_from_a_register_dump(opt, cache, tmp_path_factory):
    """No process at all: the maps of the file, and the pc/registers of each frame as a dump
    would give them (the CFA from the unwind tables). Memory-held variables get their address
    without reading memory; register-held ones (and entry values) their value."""
    doc = c_probe(opt, cache, tmp_path_factory)
    exe = doc["exe"]
    pm = ProgramMaps.load([ObjFile(exe, doc["bases"][exe])], cache_dir=cache)
    frames = [fr for fr in doc["frames"] if fr["thread"] == 1]
    phys, seen = [], set()
    for k, fr in enumerate(frames):                  # one PhysFrame per machine frame, innermost first
        key = (fr["pc"], fr["registers"].get("rsp"))
        if key not in seen:
            seen.add(key)
            phys.append((k, PhysFrame(fr["pc"], fr["registers"], None, bool(phys), "")))
    checked = 0
    for n, (k, pf) in enumerate(phys):
        got = pm.variables_at(pf.pc, pf.registers, None, caller=pf.caller, callers=[p for _, p in phys[n + 1:]],
                              thread=1, level=frames[k]["level"])
        for i, (fn, vs) in enumerate(got):
            fr = frames[k + i]
            assert fn == fr["function"], (fn, fr["function"])
            for v in vs:
                g = fr["gdb_vars"].get(v.name)
                if g is None or g.get("optimized_out"):
                    continue
                if v.address is not None:
                    assert v.address == g["address"], (fn, v.name)
                else:
                    assert v.value == g["value"], (fn, v.name)
                checked += 1
    assert checked >= (14 if opt == "-O0" else 6)     # -O2: plus 3 split over registers (other test)


@pytest.mark.gdb
def test_c_O2_entry_values_and_pieces(cache, tmp_path_factory):
    doc = c_probe("-O2", cache, tmp_path_factory)
    # DW_OP_entry_value resolved through the caller's call-site parameters (as gdb does)
    assert doc["stats"].get("entry_values", 0) >= 1, doc["stats"]
    middle = next(fr for fr in doc["frames"] if fr["function"] == "middle")
    # arrays/structs split over registers: one variable per pointer, values as gdb evaluates them
    split = {k: v for k, v in middle["mine"].items() if "[" in k or "." in k}
    assert split and all(v["value"] == v["gdb_expr"] for v in split.values()), split


# --- C++ ----------------------------------------------------------------------------------------
@pytest.mark.gdb
def test_cxx_classes_match_gdb(cache, tmp_path_factory):
    exe = build_cxx()
    out = str(tmp_path_factory.mktemp("cxx") / "probe.json")
    doc = gdb_probe(exe, PROBE, out, cache, {"HL_TYPES": ";".join(CXX_TYPES), "HL_GLOBALS": ";".join(CXX_GLOBALS)})
    # gdb_plugin's layout_of skips C++ references; the maps keep them (a reference is a pointer
    # in memory): compared without them, then checked on their own
    check_types(doc, CXX_TYPES, skip_refs=True)
    dog = {s["path"]: s for s in doc["types"]["zoo::Dog"]["mine"]["slots"]}
    assert dog["._vptr.Animal"]["offset"] == 0 and dog["._vptr.Animal"]["type_name"] == "int (**)(void)"
    assert dog["._vptr.Pet"]["offset"] == 24 and dog[".tag"]["offset"] == 32        # base class Pet at 24
    assert dog[".friend_"]["type_name"] == "zoo::Animal &" and dog[".friend_"]["target_size"] == 24
    assert dog[".pack[1]"]["target_name"] == "zoo::Dog"
    assert doc["types"]["zoo::Box<zoo::Dog>"]["mine"]["slots"][0]["target_name"] == "zoo::Dog"
    for name, g in doc["globals"].items():
        assert g["mine"] == g["gdb"], (name, g)
    readable, both_oo, mine_only_oo, _, _ = frame_report(doc)
    assert readable >= 4 and mine_only_oo == 0
    visit = next(fr for fr in doc["frames"] if fr["function"] == "visit")
    main = next(fr for fr in doc["frames"] if fr["function"] == "main")
    assert visit["mine"]["a"]["value"] == main["gdb_vars"]["cat"]["value"]    # a: zoo::Animal & bound to *cat


# --- Rust ---------------------------------------------------------------------------------------
def test_rust_enum_layouts(cache):
    exe = build_rust()
    fm = load_file_maps(exe, cache_dir=cache)
    assert fm.error is None, fm.error
    tm = fm.types
    holder = tm.layout(tm.find("maps_rust::Holder"))
    assert (holder.size, holder.discr_offset, holder.discr_size) == (16, 0, 4)
    by = {v.discr_value: [(s.path, s.offset, s.target_size) for s in v.slots] for v in holder.variants}
    assert by[0] == [] and by[1] == [(".Boxed.__0", 8, 16)] and by[3] == [(".Pair.__1", 8, 8)]
    assert by[2][0][:2] == (".Shared.__0.ptr.pointer", 8)
    rc_target = tm.layout_of_key(holder.variants[2].slots[0].target_type)
    assert rc_target.name.startswith("alloc::rc::Rc") and rc_target.size == by[2][0][2]
    # niche-optimised Option<Box<Node>>: None has discriminant 0 in the pointer, Some is the default
    node = tm.layout(tm.find("maps_rust::Node"))
    vs = {v.discr_value: [s.path for s in v.slots] for v in node.variants}
    assert node.discr_offset == 8 and vs == {0: [], None: [".next.Some.__0"]}
    # an enum inside a struct: its variant part is the struct's
    outer = tm.layout(tm.find("maps_rust::Outer"))
    assert outer.discr_offset is not None
    assert any(s.path.startswith(".h.Boxed") for v in outer.variants for s in v.slots)


@pytest.mark.gdb
def test_rust_enum_variants_match_gdb(cache, tmp_path_factory):
    exe = build_rust()
    out = str(tmp_path_factory.mktemp("rust") / "probe.json")
    doc = gdb_probe(exe, RUST_PROBE, out, cache)
    res = doc["results"]
    assert len(res) == 8, res
    for r in res:
        assert "error" not in r and "gdb_error" not in r, r
        path, value = r["mine"][0], r["mine"][1]
        gvariant, gvalue = r["gdb"]
        assert f".{gvariant}." in path + ".", r          # the same variant is active
        assert value == gvalue, r                        # and the same pointer is in it
    assert {r["gdb"][0] for r in res} >= {"Boxed", "Shared", "Pair", "Some"}
    g = res[-1]
    assert g["address"] == g["gdb_address"]
    assert doc["stats"].get("cfa_from_unwind_tables", 0) >= 2


# --- the evaluator ------------------------------------------------------------------------------
def _ctx(**kw):
    regs = kw.pop("regs", {})
    mem = kw.pop("mem", {})
    return Context(read_reg=lambda r: regs.get(r), read_mem=lambda a, n: mem.get(a, b"")[:n] or None, **kw)


def test_expression_evaluator():
    fb = bytes([exprs.OP_FBREG]) + bytes([0x68])                     # DW_OP_fbreg -24
    loc = exprs.evaluate(fb, _ctx(frame_base=lambda: 0x1000))
    assert (loc.kind, loc.address) == ("memory", 0x1000 - 24)
    assert exprs.evaluate(bytes([exprs.OP_CALL_FRAME_CFA]), _ctx(cfa=0x2000)).address == 0x2000
    assert exprs.evaluate(bytes([exprs.OP_CALL_FRAME_CFA]), _ctx()).kind == "unavailable"
    # DW_OP_breg3 8; DW_OP_deref
    mem = {0x108: (0xabc).to_bytes(8, "little")}
    loc = exprs.evaluate(bytes([0x73, 8, exprs.OP_DEREF]), _ctx(regs={3: 0x100}, mem=mem))
    assert (loc.kind, loc.address) == ("memory", 0xabc)
    loc = exprs.evaluate(bytes([0x55]), _ctx(regs={5: 0x5555}))       # DW_OP_reg5 (rdi)
    assert (loc.kind, loc.reg, loc.value) == ("register", 5, 0x5555)
    assert exprs.evaluate(bytes([0x55]), _ctx()).kind == "unavailable"
    # DW_OP_lit5; DW_OP_lit3; DW_OP_minus; DW_OP_stack_value
    loc = exprs.evaluate(bytes([0x35, 0x33, exprs.OP_MINUS, exprs.OP_STACK_VALUE]), _ctx())
    assert (loc.kind, loc.value) == ("value", 2)
    # DW_OP_addr relocated by the load bias
    assert exprs.evaluate(bytes([exprs.OP_ADDR]) + struct.pack("<Q", 0x4000), _ctx(bias=0x10000)).address == 0x14000
    # pieces: reg3 (8 bytes), then an optimized-out piece
    loc = exprs.evaluate(bytes([0x53, exprs.OP_PIECE, 8, exprs.OP_PIECE, 8]), _ctx(regs={3: 7}))
    assert loc.kind == "pieces" and [(s, p.kind) for s, p in loc.pieces] == [(8, "register"), (8, "optimized_out")]
    # implicit value
    loc = exprs.evaluate(bytes([exprs.OP_IMPLICIT_VALUE, 2, 0xaa, 0xbb]), _ctx())
    assert (loc.kind, loc.data) == ("implicit", b"\xaa\xbb")
    # entry value: resolved through the context, or optimized out
    ev = bytes([exprs.OP_ENTRY_VALUE, 1, 0x55, exprs.OP_STACK_VALUE])
    assert exprs.evaluate(ev, _ctx(entry_value=lambda e: 0x77)).value == 0x77
    assert exprs.evaluate(ev, _ctx()).kind == "optimized_out"
    # a loop that never ends (DW_OP_skip -3) and unknown or truncated ops: unsupported, never a guess
    assert exprs.evaluate(bytes([exprs.OP_SKIP]) + struct.pack("<h", -3), _ctx()).kind == "unsupported"
    assert exprs.evaluate(bytes([0xe5]), _ctx()).kind == "unsupported"
    assert exprs.evaluate(bytes([exprs.OP_ADDR, 1, 2]), _ctx()).kind == "unsupported"
    assert exprs.evaluate(bytes([exprs.OP_PLUS]), _ctx()).kind == "unsupported"           # stack underflow
    assert exprs.evaluate(bytes([exprs.OP_CALL4, 0, 0, 0, 0]), _ctx()).kind == "unsupported"
    assert exprs.evaluate(b"", _ctx()).kind == "optimized_out"
    # DW_OP_bra: lit1; bra +1 (skip lit7); lit9; stack_value -> 9
    e = bytes([0x31, exprs.OP_BRA]) + struct.pack("<h", 1) + bytes([0x37, 0x39, exprs.OP_STACK_VALUE])
    loc = exprs.evaluate(e, _ctx())
    assert loc.value == 9
    e = bytes([exprs.OP_CONST8U]) + struct.pack("<Q", 40) + bytes([exprs.OP_FORM_TLS_ADDRESS])
    assert exprs.tls_offset(e) == 40


# --- the cache ----------------------------------------------------------------------------------
def test_cache_first_decode_then_fast_cached_load(tmp_path):
    exe = build_rust() if RUSTC else build_cxx()
    d = str(tmp_path / "c")
    t0 = time.perf_counter()
    first = load_file_maps(exe, cache_dir=d)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = load_file_maps(exe, cache_dir=d)
    t_cached = time.perf_counter() - t0
    print(f"\n{os.path.basename(exe)} ({os.path.getsize(exe) // 1024} KiB, {first.stats['dies']} DIEs): first decode "
          f"{t_first:.2f} s (decode_seconds {first.stats['decode_seconds']}), cached load {t_cached:.3f} s")
    assert first.stats["cached"] is False and first.stats.get("cache_written") is True
    assert second.stats["cached"] is True and t_cached < 1.0
    assert second.stats["decode_seconds"] == first.stats["decode_seconds"]      # said how long the decode took
    assert len(second.types) == len(first.types) and second.types.name == first.types.name
    assert second.locations.blobs == first.locations.blobs and second.globals.g_name == first.globals.g_name
    for i in range(0, len(first.types), max(1, len(first.types) // 50)):
        assert second.types.layout(i) == first.types.layout(i)
    # the file is an .npz of plain arrays: loads with pickle disabled, versioned by name
    import numpy as np
    path = second.stats["cache_file"]
    from common.maps import cache as mcache
    assert path.endswith(f".v{mcache.FORMAT_VERSION}-{mcache.code_digest()}.npz")
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)



def test_damaged_cache_file_is_a_miss(tmp_path):
    exe = _cc(str(tmp_path), "small", SMALL, "-g", "-O0")
    d = str(tmp_path / "c")
    first = load_file_maps(exe, cache_dir=d)
    path = first.stats["cache_file"]
    assert load_file_maps(exe, cache_dir=d).stats["cached"] is True
    with open(path, "r+b") as f:
        f.write(b"garbage")
    again = load_file_maps(exe, cache_dir=d)
    assert again.stats["cached"] is False and again.error is None and again.types.find("struct n") is not None
    assert load_file_maps(exe, cache_dir=d).stats["cached"] is True      # rewritten
    # an unwritable cache directory: decoded every time, still no error
    ro = load_file_maps(exe, cache_dir="/proc/heaplens-cannot-write")
    assert ro.error is None and ro.stats.get("cache_written") is False


@slow
def test_libc_debug_file_first_decode_and_cached_load(tmp_path):
    bid = __import__("common.elfinfo", fromlist=["x"]).elf_info(LIBC).build_id
    dbg = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
    if not os.path.exists(dbg):
        pytest.skip("libc6-dbg is not installed")
    d = str(tmp_path / "c")
    t0 = time.perf_counter()
    first = load_file_maps(LIBC, cache_dir=d)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = load_file_maps(LIBC, cache_dir=d)
    t_cached = time.perf_counter() - t0
    st = first.stats
    print(f"\nlibc debug file ({st['dies']} DIEs, {st['types']} types, {st['functions']} functions, "
          f"{st['variables']} variables): first decode {t_first:.1f} s, cached load {t_cached:.3f} s")
    assert first.debug_path == dbg and first.error is None
    assert second.stats["cached"] and t_cached < 1.0
    ms = second.types.layout(second.types.find("struct malloc_state"))
    assert ms.slots[0].path == ".fastbinsY[0]" and ms.slots[0].target_size == 48
    g = {second.globals.g_name[i] for i in second.globals.statics()}
    assert "main_arena" in g


@slow
@pytest.mark.gdb
def test_libc_frames_match_gdb(tmp_path_factory):
    """libc's own -O2 frames (location lists, entry values, inlined futex helpers) too."""
    exe = build("maps_prog", "-O2")
    out = str(tmp_path_factory.mktemp("libc") / "probe.json")
    doc = gdb_probe(exe, PROBE, out, str(tmp_path_factory.mktemp("libc-cache")), {"HL_ALL_OBJFILES": "1"}, timeout=600)
    doc["exe"] = LIBC
    for fr in doc["frames"]:
        if fr["objfile"].startswith("/usr/lib/debug/"):
            fr["objfile"] = LIBC                       # gdb names the debug file; the maps the library
    readable, both_oo, mine_only_oo, gdb_only_oo, _ = frame_report(doc)
    print(f"\nlibc frames: {readable} readable by gdb, same values; optimized out in both {both_oo}, "
          f"only mine {mine_only_oo}, only gdb {gdb_only_oo}")
    assert readable >= 2 and mine_only_oo == 0


# --- bad input ----------------------------------------------------------------------------------
def _cc(tmp, name, src, *flags):
    c = os.path.join(tmp, name + ".c")
    open(c, "w").write(src)
    out = os.path.join(tmp, name)
    subprocess.run(["gcc", *flags, "-o", out, c], check=True, capture_output=True)
    return out


SMALL = ("#include <stdlib.h>\nstruct n { struct n *next; };\nstruct n *g;\n"
         "int main(void) { g = malloc(8); return 0; }\n")


def test_binary_without_debug_info(tmp_path):
    exe = _cc(str(tmp_path), "nodebug", SMALL, "-O0")
    fm = load_file_maps(exe, cache_dir=str(tmp_path / "c"))
    assert fm.error == f"{exe} has no DWARF debug info: build with -g"
    assert len(fm.types) == 0 and len(fm.locations) == 0 and len(fm.globals) == 0
    pm = ProgramMaps.load([ObjFile(exe, 0x555555554000)], cache_dir=str(tmp_path / "c"))
    assert pm.messages == [fm.error] and pm.globals() == []
    assert pm.variables_at(0x555555555139, {"rsp": 0x7ffe0000}) == []
    assert pm.type_layout("dwarf:nope:12") is None and pm.type_layout("garbage") is None


def test_stripped_library_and_separate_debug_files(tmp_path):
    t = str(tmp_path)
    lib = os.path.join(t, "libm1.so")
    src = os.path.join(t, "m1.c")
    with open(src, "w") as f:
        f.write("struct s { struct s *p; char *q; };\nstruct s lib_root;\nint f(struct s *x) { return !!x->p; }\n")
    subprocess.run(["gcc", "-g", "-shared", "-fPIC", "-Wl,--build-id", "-o", lib, src], check=True)
    full = load_file_maps(lib, use_cache=False)
    assert full.error is None and full.types.find("struct s") is not None
    dbg = lib + ".debug"
    subprocess.run(["objcopy", "--only-keep-debug", lib, dbg], check=True)
    subprocess.run(["strip", "--strip-debug", lib], check=True)
    # stripped, no debug file anywhere it is looked for: empty maps and one sentence
    bare = os.path.join(t, "bare")
    os.makedirs(bare)
    shutil.copy(lib, os.path.join(bare, "libm1.so"))
    fm = load_file_maps(os.path.join(bare, "libm1.so"), use_cache=False, debug_dirs=(os.path.join(t, "none"),))
    assert fm.error == f"{os.path.join(bare, 'libm1.so')} has no DWARF debug info: build with -g"
    # found by build-id under a debug directory
    bid = __import__("common.elfinfo", fromlist=["x"]).ElfInfo(lib).build_id
    ddir = os.path.join(t, "debugdir")
    os.makedirs(os.path.join(ddir, ".build-id", bid[:2]))
    shutil.copy(dbg, os.path.join(ddir, ".build-id", bid[:2], bid[2:] + ".debug"))
    fm = load_file_maps(lib, use_cache=False, debug_dirs=(ddir,))
    assert fm.error is None and fm.debug_path.startswith(ddir)
    assert fm.types.layout(fm.types.find("struct s")) == full.types.layout(full.types.find("struct s"))
    # found through .gnu_debuglink next to the library
    subprocess.run(["objcopy", f"--add-gnu-debuglink={dbg}", lib], check=True)
    fm = load_file_maps(lib, use_cache=False, debug_dirs=(os.path.join(t, "none"),))
    assert fm.error is None and fm.debug_path == dbg
    g = ProgramMaps([(ObjFile(lib, 0x7f0000000000), fm)]).globals()
    assert [(v.name, v.address - 0x7f0000000000) for v in g] == [("lib_root", full.globals.g_addr[0])]


def test_dwarf_pyelftools_cannot_read_one_cu(tmp_path):
    """A unit with a bad header and a unit with an undefined abbreviation: each is skipped and
    counted; the other units are decoded; one sentence says so."""
    t = str(tmp_path)
    srcs = []
    for k, body in enumerate(["struct a { struct a *next; };\nstruct a ga;\nint main(void) { return 0; }\n",
                              "struct b { char *p; };\nstruct b gb;\nint fb(void) { return 1; }\n",
                              "struct c { void *v; };\nstruct c gc;\nint fc(void) { return 2; }\n"]):
        p = os.path.join(t, f"u{k}.c")
        open(p, "w").write(body)
        srcs.append(p)
    exe = os.path.join(t, "multi")
    subprocess.run(["gcc", "-g", "-O0", "-o", exe, *srcs], check=True)
    from elftools.elf.elffile import ELFFile
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".debug_info")
        base = sec["sh_offset"]
        cus = [cu.cu_offset for cu in elf.get_dwarf_info().iter_CUs()]
    data = bytearray(open(exe, "rb").read())
    # unit 1: version 99 (pyelftools refuses the header); unit 2: first DIE's abbrev code 0x7f
    struct.pack_into("<H", data, base + cus[1] + 4, 99)
    data[base + cus[2] + 12] = 0x7f
    bad = os.path.join(t, "multi-bad")
    open(bad, "wb").write(bytes(data))
    fm = load_file_maps(bad, use_cache=False)
    assert fm.stats["cus_failed"] == 2 and fm.stats["cus"] >= 3
    assert fm.error.startswith(f"2 of {fm.stats['cus']} compilation units of {bad} could not be decoded")
    assert fm.types.find("struct a") is not None
    assert fm.types.find("struct b") is None and fm.types.find("struct c") is None
    assert "ga" in fm.globals.g_name and "gb" not in fm.globals.g_name


def test_not_elf_missing_and_truncated(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not an ELF file" * 10)
    fm = load_file_maps(str(junk), use_cache=False)
    assert fm.error == f"{junk} is not a readable ELF file (ELFError): no maps for it"
    fm = load_file_maps(str(tmp_path / "missing"), use_cache=False)
    assert fm.error == f"{tmp_path / 'missing'} does not exist: no maps for it"
    exe = _cc(str(tmp_path), "trunc", SMALL, "-g", "-O0")
    data = open(exe, "rb").read()
    for cut in (64, 4096, len(data) // 2, len(data) - 200):
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        fm = load_file_maps(str(p), use_cache=False)          # never raises
        assert fm.error is None or str(p) in fm.error
