"""Thread pointers (x86-64 fs_base) read from the program's own memory, for debuggers that do
not give them (lldb 16 exposes no fs_base register, live or core).

glibc keeps every thread's `struct pthread` (whose address IS the thread pointer) on lists
in ld.so's exported `_rtld_global` (`_dl_stack_user` for the main thread, `_dl_stack_used`
for the others). Rather than trusting per-version offsets, every list head inside
`_rtld_global` is tried, and a node is accepted only when it proves itself: the `pid_t tid`
that follows the list node equals a thread id the debugger reported, and the TCB header
points to itself twice (`tcb` at +0 and `self` at +16, as the x86-64 TLS ABI requires).
A wrong guess therefore yields no thread pointer, never a wrong one.
"""
from __future__ import annotations

import os
import struct
from typing import Dict, Iterable, Optional, Tuple

from .elfinfo import elf_info
from .target import ReadError, Target, region_index

MAX_NODES = 4096            # threads per list walked at most
MAX_MISSES = 8              # consecutive nodes that are not live threads before a list is dropped
HEADER_WINDOW = 0x1000      # how far before its list node a struct pthread may start


def _is_ld_so(path: str) -> bool:
    base = os.path.basename(path or "")
    return base.startswith("ld-linux") or base.startswith("ld.so") or base.startswith("ld64.so")


def _symbol(path: str, name: str) -> Optional[Tuple[int, int]]:
    """(file vaddr, size) of a defined symbol in an ELF file's own symbol tables."""
    info = elf_info(path)
    if info is None:
        return None
    try:
        for secname in (".dynsym", ".symtab"):
            sec = info.elf.get_section_by_name(secname)
            if sec is None:
                continue
            for sym in sec.get_symbol_by_name(name) or ():
                if sym["st_shndx"] != "SHN_UNDEF":
                    return sym["st_value"], sym["st_size"]
    except Exception:        # odd ELF: no thread pointers, not a failed report
        return None
    return None


def thread_pointers(target: Target, tids: Iterable[int]) -> Dict[int, int]:
    """tid -> thread pointer for the given live threads, from ld.so's thread lists."""
    want = {t for t in tids if t}
    if not want:
        return {}
    ld = next((o for o in target.objfiles() if _is_ld_so(o.path)), None)
    sym = _symbol(ld.path, "_rtld_global") if ld is not None else None
    if sym is None:
        return {}
    head_base, size = sym[0] + ld.base, min(sym[1] or 0x1200, 1 << 16)
    region_of = region_index(target.regions())

    def read(addr: int, n: int) -> Optional[bytes]:
        try:
            return target.read(addr, n)
        except (ReadError, OverflowError, ValueError):
            return None

    def ok(p: int) -> bool:
        r = region_of(p)
        return p & 7 == 0 and r is not None and r.writable and p + 24 <= r.end

    def is_tcb(p: int) -> bool:
        b = read(p, 24) if ok(p) else None
        return b is not None and struct.unpack_from("<Q", b, 0)[0] == p == struct.unpack_from("<Q", b, 16)[0]

    data = read(head_base, size)
    if data is None:
        return {}
    found: Dict[int, int] = {}
    listoff: Optional[int] = None        # list node offset inside struct pthread, once proven
    for o in range(0, len(data) - 15, 8):
        nxt, prv = struct.unpack_from("<QQ", data, o)
        head = head_base + o
        if nxt == head or not ok(nxt) or not ok(prv):
            continue
        node, steps, misses, seen = nxt, 0, 0, set()
        while node != head and node not in seen and steps < MAX_NODES and misses < MAX_MISSES:
            seen.add(node)
            steps += 1
            b = read(node, 24) if ok(node) else None
            if b is None:
                break
            tid = struct.unpack_from("<i", b, 16)[0]
            p = None
            if tid in want:
                if listoff is not None and is_tcb(node - listoff):
                    p = node - listoff
                elif listoff is None:
                    p = _find_header(node, read, region_of)
                    if p is not None:
                        listoff = node - p
            if p is not None:
                found.setdefault(tid, p)
                misses = 0
            else:
                misses += 1
            node = struct.unpack_from("<Q", b, 0)[0]
        if len(found) == len(want):
            break
    return found


def _find_header(node: int, read, region_of) -> Optional[int]:
    """The struct pthread holding list node `node`: the nearest address before it whose
    TCB header points to itself at +0 and +16."""
    r = region_of(node)
    if r is None:
        return None
    lo = max(r.start, node - HEADER_WINDOW) & ~7
    win = read(lo, node - lo + 24)
    if not win:
        return None
    n = (node - lo) // 8
    words = struct.unpack_from(f"<{n + 3}Q", win)
    for i in range(n - 1, -1, -1):
        p = lo + 8 * i
        if words[i] == p and words[i + 2] == p:
            return p
    return None
