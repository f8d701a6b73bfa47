"""Find glibc malloc's roots in a target: the libc object, its version, the layout,
main_arena, mp_, and the thread-local slots of `tcache` and `thread_arena`.

Two ways, and the report says which was used:
- debug info (libc6-dbg): the debugger resolves `main_arena`, `mp_`, `tcache_key` and gives
  struct layouts;
- structure (no debug info): from libc's own file on disk — main_arena is the .data object
  whose `next` field is statically initialised to point at itself; mp_ is the .data object with
  malloc's static defaults; TLS slots are libc's R_X86_64_TPOFF64 GOT entries, chosen by which
  one points every thread at a valid tcache_perthread_struct / arena.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..elfinfo import ElfInfo, elf_info
from ..memcache import CachedReader
from ..target import ObjFile, ReadError, Target
from .base import NotThisAllocator
from .glibc_layout import GlibcLayout, table_layout, with_debug_info

_LIBC_NAME = re.compile(r"(^|/)libc(\.so\.6|-\d+\.\d+\.so)$")
_VERSION = re.compile(rb"release version (\d+)\.(\d+)")


class NotGlibc(NotThisAllocator):
    """glibc malloc is not in use or cannot be found; the message says what is missing."""


@dataclass
class GlibcRoots:
    libc: ObjFile
    layout: GlibcLayout
    main_arena: int
    mp: Optional[int]
    how: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    tcache_tpoff: Optional[int] = None
    thread_arena_tpoff: Optional[int] = None
    tcache_key: Optional[int] = None


def find_libc(target: Target) -> Optional[ObjFile]:
    for obj in target.objfiles():
        if _LIBC_NAME.search(obj.path or ""):
            return obj
    return None


def glibc_version(libc: ObjFile, info: Optional[ElfInfo]) -> Tuple[Optional[Tuple[int, int]], str]:
    if info is not None:
        m = info.find_bytes(_VERSION)
        if m:
            return (int(m.group(1)), int(m.group(2))), "version string in " + os.path.basename(libc.path)
    m = re.search(r"libc-(\d+)\.(\d+)\.so", libc.path or "")
    if m:
        return (int(m.group(1)), int(m.group(2))), "file name " + os.path.basename(libc.path)
    return None, "unknown"


def locate(target: Target, reader: CachedReader) -> GlibcRoots:
    libc = find_libc(target)
    if libc is None and target.warnings():
        raise NotGlibc(target.warnings()[0] + "; with it went the list of loaded libraries, so glibc "
                       "cannot be located")
    if libc is None:
        raise NotGlibc(present=False, message="no glibc (libc.so.6) is loaded in this program (statically linked, or "
                       "another libc): glibc's heap cannot be located")
    info = elf_info(libc.path)
    notes: List[str] = []
    how: Dict[str, str] = {}
    version, vhow = glibc_version(libc, info)
    if version is None:
        version = (2, 36)
        notes.append(f"could not read the glibc version from {libc.path}; assuming 2.36 layouts")
    how["version"] = vhow
    layout = table_layout(version)
    if not (layout.source.endswith(f"{version[0]}.{version[1]}")):
        notes.append(f"glibc {version[0]}.{version[1]} is outside the tested range; using the "
                     f"nearest layout ({layout.source})")
    layout = with_debug_info(layout, target.struct_layout("malloc_state"), target.struct_layout("malloc_par"))
    how["layout"] = layout.source

    main_arena = target.symbol("main_arena", libc.path)
    if main_arena is not None and reader.try_u64(main_arena) is None:
        raise NotGlibc(f"main_arena ({main_arena:#x}) is not in the snapshot: " + _missing(target))
    if main_arena is not None:                 # debug info is trusted; a corrupt arena is a finding
        how["main_arena"] = "symbol main_arena (debug info)"
    else:
        if info is None:
            raise NotGlibc(f"libc's file {libc.path} cannot be read, and the debugger has no debug "
                           "info for it: install libc6-dbg, or make the library file available")
        cands = [c + libc.base for c in _main_arena_candidates(info, layout)]
        for addr in cands:
            if _looks_like_arena(reader, addr, layout):
                main_arena = addr
                break
        if main_arena is None and cands and all(reader.try_u64(a) is None for a in cands):
            raise NotGlibc(f"libc's data (main_arena at {cands[0]:#x}) is not in the snapshot: " + _missing(target))
        if main_arena is None and len(cands) == 1:   # the static initializer is unambiguous
            main_arena = cands[0]
            notes.append("main_arena's bins look corrupt; walking it anyway")
        if main_arena is None:
            raise NotGlibc("main_arena could not be found in libc's data (no debug info, and the "
                           "structure search failed): install libc6-dbg")
        how["main_arena"] = "structure: libc .data object whose next field points at itself"

    mp = target.symbol("mp_", libc.path)
    if mp is not None:
        how["mp_"] = "symbol mp_ (debug info)"
    elif info is not None:
        mp = _find_mp(info, layout)
        if mp is not None:
            mp += libc.base
            how["mp_"] = "structure: libc .data object holding malloc's static defaults"
    if mp is None:
        notes.append("malloc parameters (mp_) not found: the main heap's start is taken from the "
                     "[heap] mapping and mmapped-chunk counts are not cross-checked")
    roots = GlibcRoots(libc, layout, main_arena, mp, how, notes)
    key = target.symbol("tcache_key", libc.path)
    if key is not None:
        roots.tcache_key = reader.try_u64(key)
    return roots


def _missing(target: Target) -> str:
    w = target.warnings()
    return (w[0] if w else "the core file omits libc's writable data") + \
        "; the heap cannot be analysed without it"


def _looks_like_arena(reader: CachedReader, addr: int, lay: GlibcLayout) -> bool:
    """An initialised malloc_state: top aligned; every bin's fd/bk both point at the bin itself
    (empty) or both elsewhere, aligned. (A busy arena may have few empty bins.)"""
    try:
        raw = reader.read(addr, lay.ms_size)
    except ReadError:
        return False
    bins = np.frombuffer(raw, dtype="<u8", count=254, offset=lay.ms_bins)
    top = struct.unpack_from("<Q", raw, lay.ms_top)[0]
    if top == 0:                              # malloc never ran: bins are all zero
        return not bins.any()
    if top & 0xF or bins.any() and (bins & np.uint64(0xF)).any():
        return False
    heads = np.uint64(addr + lay.ms_bins - 32) + np.arange(1, 128, dtype=np.uint64) * np.uint64(16)
    return bool(np.all((bins[0::2] == heads) == (bins[1::2] == heads)))


def _main_arena_candidates(info: ElfInfo, lay: GlibcLayout) -> List[int]:
    """Link-time addresses X with `.data` word at X+ms_next statically == X (RELR/REL keep the
    target in place; RELA keep it in the addend)."""
    out = []
    sec = info.section(".data")
    if sec is not None:
        vaddr, data = sec
        n = len(data) // 8
        words = np.frombuffer(data, dtype="<u8", count=n)
        slots = np.uint64(vaddr) + np.arange(n, dtype=np.uint64) * np.uint64(8)
        hit = np.nonzero(words + np.uint64(lay.ms_next) == slots)[0]
        out += [int(slots[i]) - lay.ms_next for i in hit]
    for off, target in info.relative_targets().items():
        if target + lay.ms_next == off:
            out.append(target)
    return out


def _find_mp(info: ElfInfo, lay: GlibcLayout) -> Optional[int]:
    sec = info.section(".data")
    if sec is None:
        return None
    vaddr, data = sec
    words = np.frombuffer(data, dtype="<u8", count=len(data) // 8)
    tb = lay.mp_tcache_bins // 8
    for i in np.nonzero(words == 128 * 1024)[0]:
        i = int(i)
        if i + tb + 3 > len(words):
            continue
        w = words[i:i + tb + 3]
        if w[2] == 128 * 1024 and w[tb] == 64 and w[tb + 1] == 1032 and w[tb + 2] == 7:
            return vaddr + 8 * i
    return None


def choose_tls_slot(target: Target, reader: CachedReader, libc: ObjFile, threads,
                    valid: Callable[[int], bool]) -> Tuple[Optional[int], int]:
    """The thread-pointer offset among libc's TPOFF64 slots whose value, read at every thread's
    fs_base, is 0 or passes `valid`, with the most non-zero valid hits. (tpoff, hits)."""
    info = elf_info(libc.path)
    if info is None:
        return None, 0
    fs = [t.fs_base for t in threads if t.fs_base]
    if not fs:
        return None, 0
    best, best_hits = None, 0
    seen = set()
    for slot, _ in info.tpoff_slots():
        raw = reader.try_u64(slot + libc.base)
        if raw is None:
            continue
        tpoff = raw - (1 << 64) if raw >= 1 << 63 else raw
        if tpoff in seen or not -(1 << 20) < tpoff < 0:
            continue
        seen.add(tpoff)
        hits, bad = 0, 0
        for base in fs:
            v = reader.try_u64(base + tpoff)
            if v is None:
                bad += 1
            elif v:
                if valid(v):
                    hits += 1
                else:
                    bad += 1
        if hits > bad and hits > best_hits:   # a corrupt pointer in one thread must not hide the rest
            best, best_hits = tpoff, hits
    return best, best_hits
