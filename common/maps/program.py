"""The program view: the maps of every loaded object, relocated by its load bias, turned into
the common.target.Variable objects the rest of heaplens uses, without a debugger.

    pm = ProgramMaps.load(target.objfiles())
    pm.globals()                              # statics holding pointers, at runtime addresses
    pm.frame_variables(frames, read)          # fills FrameInfo.variables from pc/registers/CFA
    pm.variables_at(pc, regs, cfa, read=...)  # one physical frame: [(function, [Variable])]
    pm.type_layout("dwarf:<fid>:<off>")       # the resolver for PtrSlot.target_type keys
    pm.stats, pm.messages                     # roots placed / optimized out / unsupported; what is missing
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..objfiles import is_system
from ..target import FrameInfo, ObjFile, PtrSlot, ThreadInfo, TypeLayout, Variable
from . import exprs
from .exprs import Context, Loc
from .files import FileMaps, load_file_maps
from .globals import G_TLS

SIGTRAMP = ("__restore_rt", "<signal handler called>")
MAX_ENTRY_DEPTH = 4          # callers searched for DW_OP_entry_value through call sites
ReadFn = Callable[[int, int], bytes]


@dataclass
class ThreadLocal:
    """A thread-local variable: its offset in the module's TLS block; `address` when the block
    could be placed (the executable's own block, from the thread pointer)."""
    name: str
    layout: TypeLayout
    objfile: str
    tls_offset: int
    thread: Optional[int] = None
    tid: Optional[int] = None
    address: Optional[int] = None


@dataclass
class PhysFrame:
    """One machine frame: the pc (runtime), registers by name, CFA; caller=True when pc is a
    return address (every frame but the innermost, unless the younger one is a signal frame)."""
    pc: int
    registers: Dict[str, int]
    cfa: Optional[int] = None
    caller: bool = False
    objfile: str = ""


def _ptr_layout(slot: PtrSlot) -> TypeLayout:
    return TypeLayout(slot.type_name, 8, (PtrSlot("", 0, slot.type_name, slot.target_size, slot.target_type,
                                                  slot.ambiguous),))


class ProgramMaps:
    def __init__(self, files: Sequence[Tuple[ObjFile, FileMaps]], messages: Optional[List[str]] = None):
        self.files: List[Tuple[ObjFile, FileMaps]] = list(files)
        self._by_fid: Dict[str, FileMaps] = {fm.fid: fm for _, fm in self.files}
        self.messages: List[str] = list(messages or [])
        self.stats: Dict[str, object] = {"roots_placed": 0, "optimized_out": 0, "unavailable": 0,
                                         "unsupported": 0, "partial": 0, "frames": 0, "frames_without_maps": 0}
        self.unsupported_reasons: Dict[str, int] = {}

    # --- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, objfiles: Iterable[ObjFile], *, use_cache: bool = True, cache_dir: Optional[str] = None,
             debug_dirs: Sequence[str] = ("/usr/lib/debug",), system: bool = True) -> "ProgramMaps":
        """Maps of every loaded object (paths that are not files, like [vdso], are skipped).
        system=False leaves out system libraries (/usr/lib, /lib...): their first decode is the
        slow part (libc's debug file: ~20-30 s once, then ~0.3 s from the cache)."""
        t0 = time.perf_counter()
        files, msgs = [], []
        timing = {}
        for obj in objfiles:
            if not obj.path.startswith("/") or (not system and is_system(obj.path)):
                continue
            fm = load_file_maps(obj.path, obj.build_id, use_cache=use_cache, cache_dir=cache_dir,
                                debug_dirs=debug_dirs)
            files.append((obj, fm))
            if fm.error:
                msgs.append(fm.error)
            timing[obj.path] = {"cached": fm.stats.get("cached"), "load_seconds": fm.stats.get("load_seconds"),
                                "decode_seconds": fm.stats.get("decode_seconds")}
        pm = cls(files, msgs)
        pm.stats["load_seconds"] = round(time.perf_counter() - t0, 3)
        pm.stats["files"] = timing
        return pm

    def file_for_pc(self, pc: int, objfile: str = "") -> Optional[Tuple[ObjFile, FileMaps]]:
        cands = self.files
        if objfile:
            named = [p for p in self.files if p[0].path == objfile]
            cands = named + [p for p in self.files if p[0].path != objfile]
        for obj, fm in cands:
            if fm.locations.function_at(pc - obj.base) is not None or \
                    fm.locations.function_at(pc - obj.base - 1) is not None:
                return obj, fm
        return None

    # --- types ------------------------------------------------------------------------------
    def type_layout(self, key: str) -> Optional[TypeLayout]:
        """The layout behind a PtrSlot.target_type key ("dwarf:<fid>:<die offset>"); a plain type
        name is looked up in every file (first definition wins). None when unknown."""
        try:
            if key.startswith("dwarf:"):
                fid = key.split(":", 2)[1]
                fm = self._by_fid.get(fid)
                return fm.types.layout_of_key(key) if fm is not None else None
            for _, fm in self.files:
                i = fm.types.find(key)
                if i is not None:
                    return fm.types.layout(i)
        except Exception:        # a resolver must answer "unknown", never raise into a report
            return None
        return None

    def type_kind(self, key: str) -> Optional[str]:
        """The kind ("struct", "union", "pointer", "base", "array"...) of the type behind a
        "dwarf:<fid>:<off>" key, through typedefs and qualifiers; None when unknown."""
        try:
            fm = self._by_fid.get(key.split(":", 2)[1]) if key.startswith("dwarf:") else None
            i = fm.types.index_of_key(key) if fm is not None else None
            if i is None:
                return None
            from .typemap import KIND_NAMES
            return KIND_NAMES.get(fm.types.kind[fm.types.strip(i)])
        except Exception:        # a resolver must answer "unknown", never raise
            return None

    def type_key(self, name: str) -> Optional[str]:
        """The key of a complete type by readable name ("struct node")."""
        for _, fm in self.files:
            i = fm.types.find(name)
            if i is not None:
                return fm.types.key(i)
        return None

    # --- globals ----------------------------------------------------------------------------
    def globals(self, include_system: bool = True, pointers_only: bool = True) -> List[Variable]:
        """Static-storage variables (file, namespace, class and function statics) at runtime
        addresses (link-time address + load bias)."""
        out = []
        for obj, fm in self.files:
            if not include_system and is_system(obj.path):
                continue
            gm = fm.globals
            for i in range(len(gm)):
                if gm.g_flags[i] & G_TLS:
                    continue
                try:
                    lay = self._layout(fm, gm.g_type[i])
                except Exception:           # inconsistent data: this variable is not a root
                    continue
                if lay is None or (pointers_only and not _has_pointers(lay)):
                    continue
                out.append(Variable(gm.g_name[i], "global", lay, address=gm.g_addr[i] + obj.base,
                                    function=gm.g_func[i] or None))
        return out

    def thread_locals(self, threads: Sequence[ThreadInfo] = (), pointers_only: bool = True) -> List[ThreadLocal]:
        """Thread-local variables. Those of the executable (the first object) are placed for each
        thread with a known thread pointer (fs_base); the others are listed with their offset."""
        out = []
        for n, (obj, fm) in enumerate(self.files):
            gm = fm.globals
            for i in gm.thread_locals():
                lay = self._layout(fm, gm.g_type[i])
                if lay is None or (pointers_only and not _has_pointers(lay)):
                    continue
                placed = False
                if n == 0:
                    for th in threads:
                        if th.fs_base:
                            block = gm.exe_tls_block(th.fs_base)
                            if block is not None:
                                out.append(ThreadLocal(gm.g_name[i], lay, obj.path, gm.g_addr[i], th.num, th.tid,
                                                       block + gm.g_addr[i]))
                                placed = True
                if not placed:
                    out.append(ThreadLocal(gm.g_name[i], lay, obj.path, gm.g_addr[i]))
        return out

    def tls_variables(self, threads: Sequence[ThreadInfo]) -> List[Variable]:
        """The placed thread-locals as Variables (kind "global", with thread and tid set): roots
        like globals, one per thread."""
        return [Variable(t.name, "global", t.layout, address=t.address, thread=t.thread, tid=t.tid)
                for t in self.thread_locals(threads) if t.address is not None]

    def describe(self) -> str:
        """One line for a report header: which objects have maps, what the last evaluation placed."""
        have = [o.path.rsplit("/", 1)[-1] for o, fm in self.files if fm.has_dwarf]
        lack = [o.path.rsplit("/", 1)[-1] for o, fm in self.files if not fm.has_dwarf]
        st = self.stats
        text = f"DWARF maps for {len(have)} object(s)"
        if lack:
            text += f" (none for {', '.join(lack[:4])}{'...' if len(lack) > 4 else ''})"
        text += (f"; {st['roots_placed']} variables placed, {st['optimized_out']} optimized out, "
                 f"{st['unavailable']} unavailable, {st['unsupported']} unsupported")
        files = st.get("files") or {}
        decoded = [v.get("decode_seconds") or 0 for v in files.values() if v.get("cached") is False]
        if decoded:
            text += f"; first decode {sum(decoded):.2f} s (cached for next time)"
        elif files:
            text += f"; loaded from the cache in {st.get('load_seconds', 0):.2f} s"
        return text

    def reset_stats(self) -> None:
        """Zero the per-stop counters (roots placed, optimized out...): they add up over calls."""
        keep = {k: self.stats[k] for k in ("load_seconds", "files") if k in self.stats}
        self.stats = {"roots_placed": 0, "optimized_out": 0, "unavailable": 0, "unsupported": 0, "partial": 0,
                      "frames": 0, "frames_without_maps": 0, **keep}
        self.unsupported_reasons = {}

    # --- frames -----------------------------------------------------------------------------
    def variables_at(self, pc: int, registers: Dict[str, int], cfa: Optional[int] = None, *,
                     read: Optional[ReadFn] = None, caller: bool = False, objfile: str = "",
                     callers: Sequence[PhysFrame] = (), pointers_only: bool = True,
                     thread: Optional[int] = None, tid: Optional[int] = None,
                     level: Optional[int] = None) -> List[Tuple[str, List[Variable]]]:
        """Variables of one physical frame: [(function, variables)] innermost first (inlined
        subroutines, then the function). `callers` are the older physical frames of the same
        thread, nearest first, for DW_OP_entry_value. Each virtual frame's variables get frame
        level `level + i` (gdb numbers inline frames like real ones)."""
        frame = PhysFrame(pc, registers, cfa, caller, objfile)
        try:
            res = self._frame(frame, list(callers), read, pointers_only, thread, tid, level)
        except Exception as e:              # a bug or bad data costs this frame, never the report
            self._count("unsupported", f"frame not evaluated: {type(e).__name__}")
            res = None
        return [(fn, vs) for fn, vs in res] if res is not None else []

    def frame_variables(self, frames: Sequence[FrameInfo], read: Optional[ReadFn] = None,
                        pointers_only: bool = True) -> List[FrameInfo]:
        """Fill each FrameInfo's `variables` from the maps: frames as a debugger unwinds them
        (every thread, innermost first, inline frames as their own levels sharing pc and CFA), with
        `registers` (by name) and `cfa` set. Frames of objects without maps keep no variables."""
        by_thread: Dict[int, List[FrameInfo]] = {}
        for fi in frames:
            by_thread.setdefault(fi.thread, []).append(fi)
        for thread, fis in by_thread.items():
            fis.sort(key=lambda f: f.level)
            groups: List[List[FrameInfo]] = []
            for fi in fis:
                # inline frames share their physical frame's pc and registers (two physical
                # frames never share a stack pointer); the CFA a debugger reports for an inline
                # frame may be its own frame's sp, so the group takes the outermost one's
                if groups and groups[-1][0].pc == fi.pc and _sp_key(groups[-1][0]) == _sp_key(fi):
                    groups[-1].append(fi)
                else:
                    groups.append([fi])
            phys = []
            for k, g in enumerate(groups):
                younger = groups[k - 1][-1].function if k else ""
                caller = k > 0 and younger not in SIGTRAMP
                phys.append(PhysFrame(g[0].pc, dict(getattr(g[0], "registers", None) or {}),
                                      getattr(g[-1], "cfa", None), caller, g[0].objfile))
            for k, g in enumerate(groups):
                self.stats["frames"] = int(self.stats["frames"]) + len(g)
                try:
                    res = self._frame(phys[k], phys[k + 1:], read, pointers_only, g[0].thread, g[0].tid,
                                      g[0].level)
                except Exception as e:      # a bug or bad data costs this frame, never the report
                    self._count("unsupported", f"frame not evaluated: {type(e).__name__}")
                    res = None
                if res is None:
                    self.stats["frames_without_maps"] = int(self.stats["frames_without_maps"]) + len(g)
                    continue
                # res: innermost first; the debugger may hide inline frames (a breakpoint at an
                # inlined call): align from the outermost, extra inner scopes go to the innermost
                m = len(g)
                if len(res) <= m:
                    pairs = list(zip(g[m - len(res):], res))
                else:
                    extra = res[:len(res) - m + 1]
                    merged = [v for _, vs in extra for v in vs]
                    pairs = [(g[0], (extra[-1][0], merged))] + list(zip(g[1:], res[len(res) - m + 1:]))
                for fi, (fn, vs) in pairs:
                    for v in vs:
                        v.frame = fi.level
                    fi.variables = vs
        return list(frames)

    def cfa_at(self, pc: int, registers: Dict[str, int], caller: bool = False, objfile: str = "") -> Optional[int]:
        """The canonical frame address of the frame at pc from the object's unwind tables
        (.eh_frame): register + offset at pc (pc - 1 for a caller frame, whose pc is a return
        address). None without a table row, for expression rules, or a missing register."""
        found = self.file_for_pc(pc, objfile)
        if found is None:
            return None
        obj, fm = found
        rule = fm.locations.cfa_rule(pc - obj.base - (1 if caller else 0))
        if rule is None:
            return None
        reg, off = rule
        if reg >= len(exprs.DWARF_REGS):
            return None
        v = registers.get(exprs.DWARF_REGS[reg])
        return None if v is None else (v + off) & exprs.M64

    # --- internals --------------------------------------------------------------------------
    def _layout(self, fm: FileMaps, type_off: int) -> Optional[TypeLayout]:
        if type_off < 0:
            return None
        i = fm.types.index_of(type_off)
        return None if i is None else fm.types.layout(i)

    def _context(self, fm: FileMaps, obj: ObjFile, frame: PhysFrame, f: Optional[int], link_pc: int,
                 read: Optional[ReadFn], callers: List[PhysFrame], depth: int) -> Context:
        regs = frame.registers

        def read_reg(r: int) -> Optional[int]:
            if r < len(exprs.DWARF_REGS):
                return regs.get(exprs.DWARF_REGS[r])
            return None

        def read_mem(addr: int, size: int) -> Optional[bytes]:
            if read is None:
                return None
            try:
                return read(addr, size)
            except Exception:            # ReadError, OSError, a debugger error: the value is unknown
                return None

        ctx = Context(pc=frame.pc, bias=obj.base, cfa=frame.cfa, read_reg=read_reg, read_mem=read_mem)
        fb_cache: List[Optional[int]] = []

        def frame_base() -> Optional[int]:
            if fb_cache:
                return fb_cache[0]
            val = None
            if f is not None:
                e = fm.locations.frame_base_expr(f, link_pc)
                if e is not None:
                    sub = Context(pc=frame.pc, bias=obj.base, cfa=frame.cfa, read_reg=read_reg, read_mem=read_mem)
                    loc = exprs.evaluate(e, sub)
                    if loc.kind == "memory":
                        val = loc.address
                    elif loc.kind in ("register", "value"):
                        val = loc.value
            fb_cache.append(val)
            return val

        ctx.frame_base = frame_base
        callee = fm.locations.function_name(f) if f is not None else ""
        ctx.entry_value = lambda e: self._entry_value(e, callee, callers, read, depth)
        return ctx

    def _entry_value(self, expr: bytes, callee: str, callers: List[PhysFrame], read, depth: int) -> Optional[int]:
        """DW_OP_entry_value(DW_OP_regN): the caller's call-site parameter for register N,
        evaluated in the caller's frame, when the call site at the caller's return address names
        this function (gdb's rule; tail calls and indirect calls are not followed)."""
        reg = exprs.simple_register(expr)
        if reg is None or not callers or depth >= MAX_ENTRY_DEPTH:
            return None
        up = callers[0]
        found = self.file_for_pc(up.pc, up.objfile)
        if found is None:
            return None
        obj, fm = found
        lm = fm.locations
        if up.cfa is None:
            up.cfa = self.cfa_at(up.pc, up.registers, up.caller, up.objfile)
        c = lm.call_site(up.pc - obj.base)
        if c is None or not lm.c_target[c] or lm.c_target[c] != callee:
            return None
        val = lm.call_site_value(c, reg)
        if val is None:
            return None
        link_pc = up.pc - obj.base - (1 if up.caller else 0)
        f = lm.function_at(link_pc)
        ctx = self._context(fm, obj, up, f, link_pc, read, callers[1:], depth + 1)
        loc = exprs.evaluate(val, ctx, as_location=False)
        v = None
        if loc.kind in ("value", "register") and loc.value is not None:
            v = loc.value
        elif loc.kind == "memory" and loc.address is not None:
            v = loc.address
        if v is not None:
            self.stats["entry_values"] = int(self.stats.get("entry_values", 0)) + 1
        return v

    def _frame(self, frame: PhysFrame, callers: List[PhysFrame], read, pointers_only: bool, thread, tid,
               level) -> Optional[List[Tuple[str, List[Variable]]]]:
        found = self.file_for_pc(frame.pc, frame.objfile)
        if found is None:
            return None
        obj, fm = found
        lm = fm.locations
        link_pc = frame.pc - obj.base - (1 if frame.caller else 0)
        f = lm.function_at(link_pc)
        if f is None:
            return None
        if frame.cfa is None:
            frame.cfa = self.cfa_at(frame.pc, frame.registers, frame.caller, frame.objfile)
            if frame.cfa is not None:
                self.stats["cfa_from_unwind_tables"] = int(self.stats.get("cfa_from_unwind_tables", 0)) + 1
        ctx = self._context(fm, obj, frame, f, link_pc, read, callers, 0)
        out = []
        for k, sv in enumerate(lm.frames_at(link_pc)):
            vs: List[Variable] = []
            for v in sv.variables:
                lay = self._layout(fm, lm.v_type[v])
                if lay is None or (pointers_only and not _has_pointers(lay)):
                    continue
                name, kind = lm.describe_var(v)
                try:
                    loc = lm.var_location(v, link_pc, ctx)
                except Exception as e:      # an evaluator bug must cost one variable, not the report
                    loc = Loc("unsupported", reason=f"evaluator error: {type(e).__name__}")
                vs.extend(self._place(name, kind, lay, loc, thread, tid,
                                      None if level is None else level + k, sv.function))
            out.append((sv.function, vs))
        return out

    def _count(self, key: str, reason: str = "") -> None:
        self.stats[key] = int(self.stats[key]) + 1
        if key == "unsupported" and reason:
            self.unsupported_reasons[reason] = self.unsupported_reasons.get(reason, 0) + 1

    def _place(self, name: str, kind: str, lay: TypeLayout, loc: Loc, thread, tid, level, fn) -> List[Variable]:
        def var(**kw) -> Variable:
            return Variable(kw.pop("name", name), kind, kw.pop("layout", lay), thread=thread, tid=tid, frame=level,
                            function=fn, **kw)

        if loc.kind == "memory":
            self._count("roots_placed")
            return [var(address=loc.address)]
        if loc.kind in ("register", "value", "implicit"):
            data = loc.data if loc.kind == "implicit" else \
                (loc.value or 0).to_bytes(8, "little") if loc.value is not None else None
            if data is None:
                self._count("unavailable")
                return [var(optimized_out=True)]
            vs = _from_bytes(name, lay, data)
            if vs is None:
                self._count("partial")
                return [var(optimized_out=True)]
            self._count("roots_placed")
            return [var(name=n, layout=l_, value=v) for n, l_, v in vs]
        if loc.kind == "pieces":
            return self._pieces(name, lay, loc, var)
        if loc.kind == "unsupported":
            self._count("unsupported", loc.reason)
        elif loc.kind == "unavailable":
            self._count("unavailable")
        else:
            self._count("optimized_out")
        return [var(optimized_out=True)]

    def _pieces(self, name: str, lay: TypeLayout, loc: Loc, var) -> List[Variable]:
        """A variable split over registers/memory: each pointer slot that lies whole inside one
        piece becomes its own Variable (name + slot path); slots across pieces are counted
        partial. A single piece covering the pointer at offset 0 is the whole variable."""
        spans = []
        pos = 0
        for size, p in loc.pieces:
            spans.append((pos, pos + size, p))
            pos += size
        slots = _applicable_slots(lay, loc, spans)
        if len(spans) == 1:
            return self._place_piece_whole(name, lay, spans[0][2], var)
        out: List[Variable] = []
        missing = 0
        for s in slots:
            hit = None
            for lo, hi, p in spans:
                if lo <= s.offset and s.offset + 8 <= hi:
                    hit = (lo, p)
                    break
            if hit is None:
                missing += 1
                continue
            lo, p = hit
            sub = _ptr_layout(s)
            nm = name + s.path
            if p.kind == "memory":
                out.append(var(name=nm, layout=sub, address=p.address + (s.offset - lo)))
            elif p.kind in ("register", "value") and p.value is not None and s.offset == lo:
                out.append(var(name=nm, layout=sub, value=p.value))
            elif p.kind == "implicit" and p.data is not None and len(p.data) >= s.offset - lo + 8:
                out.append(var(name=nm, layout=sub, value=int.from_bytes(p.data[s.offset - lo:s.offset - lo + 8],
                                                                         "little")))
            else:
                missing += 1
        if out:
            self._count("roots_placed")
        if missing:
            self._count("partial")
        if not out:
            return [var(optimized_out=True)]
        return out

    def _place_piece_whole(self, name, lay, piece: Loc, var) -> List[Variable]:
        if piece.kind == "memory":
            self._count("roots_placed")
            return [var(address=piece.address)]
        if piece.kind in ("register", "value", "implicit"):
            data = piece.data if piece.kind == "implicit" else \
                piece.value.to_bytes(8, "little") if piece.value is not None else None
            vs = _from_bytes(name, lay, data) if data is not None else None
            if vs:
                self._count("roots_placed")
                return [var(name=n, layout=l_, value=v) for n, l_, v in vs]
        self._count("optimized_out" if piece.kind == "optimized_out" else "partial")
        return [var(optimized_out=True)]


def _sp_key(fi: FrameInfo):
    regs = getattr(fi, "registers", None) or {}
    return regs.get("rsp", getattr(fi, "cfa", None))


def _has_pointers(lay: TypeLayout) -> bool:
    return bool(lay.slots or lay.variants or lay.tail)


def _applicable_slots(lay: TypeLayout, loc: Loc, spans) -> List[PtrSlot]:
    """Plain slots, plus the slots of the variant selected by a discriminant held in memory or
    in a piece (a Rust enum split over registers)."""
    slots = list(lay.slots)
    if lay.variants and lay.discr_offset is not None:
        d = None
        for lo, hi, p in spans:
            if lo <= lay.discr_offset and lay.discr_offset + lay.discr_size <= hi:
                raw = None
                if p.kind in ("register", "value") and p.value is not None:
                    raw = p.value.to_bytes(8, "little")
                elif p.kind == "implicit":
                    raw = p.data
                if raw is not None:
                    o = lay.discr_offset - lo
                    d = int.from_bytes(raw[o:o + lay.discr_size], "little")
        chosen = _variant(lay, d) if d is not None else None
        if chosen is not None:
            slots += list(chosen.slots)
    return slots


def _variant(lay: TypeLayout, d: int):
    default = None
    for v in lay.variants:
        if v.discr_value is None:
            default = v
        elif v.discr_value == d:
            return v
    return default


def _from_bytes(name: str, lay: TypeLayout, data: bytes) -> Optional[List[Tuple[str, TypeLayout, int]]]:
    """A variable whose bytes are known (a register, a computed value, an implicit value):
    (name, layout, pointer value) for its pointers. The common case, a pointer (or a struct
    whose only pointer is at offset 0), keeps the variable's own name and layout. None when a
    pointer lies outside the known bytes."""
    slots = list(lay.slots)
    if lay.variants:
        if lay.discr_offset is None or lay.discr_offset + lay.discr_size > len(data):
            return None
        d = int.from_bytes(data[lay.discr_offset:lay.discr_offset + lay.discr_size], "little")
        v = _variant(lay, d)
        if v is not None:
            slots += list(v.slots)
    if not slots:
        return []
    if any(s.offset + 8 > len(data) for s in slots):
        return None
    if len(slots) == 1 and slots[0].offset == 0:
        s = slots[0]
        keep = lay if lay.slots and lay.slots[0] is s and not lay.variants else _ptr_layout(s)
        return [(name, keep, int.from_bytes(data[0:8], "little"))]
    return [(name + s.path, _ptr_layout(s), int.from_bytes(data[s.offset:s.offset + 8], "little")) for s in slots]
