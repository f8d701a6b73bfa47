"""jemalloc thread caches: each thread's tsd_t sits in the library's static TLS block (found from
the thread pointer and the library's TPOFF64 GOT slot) and embeds its tcache_t; every arena also
keeps a ring of the tcaches bound to it (tcache_ql), read as a cross-check and to find caches no
thread pointer leads to. A mixin of common.allocators.jemalloc._Walker.

A cache bin is a stack that grows down: items stack_head[0..n) with
n = (low_bits_empty - (u16)stack_head) / 8; stack_head[0] is handed out next.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..target import ReadError

MAX_RING = 65536            # tcaches on one arena's ring walked at most
TSD_STATES = 7              # tsd_state_nominal .. tsd_state_uninitialized


@dataclass
class TCache:
    addr: int                          # tcache_t
    slow: int                          # tcache_slow_t
    arena_ptr: int
    thread: Optional[int] = None       # debugger thread number
    tid: Optional[int] = None
    tsd: Optional[int] = None
    how: str = ""                      # "TLS" or "arena ring"
    on_ring: bool = False
    dyn: int = 0                       # the block holding its bins' stacks (tcache_slow->dyn_alloc)
    bins: List[Tuple[int, int, np.ndarray]] = field(default_factory=list)   # (bin, stack_head, items top first)


def _u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


def _u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def thread_pointer(t) -> Optional[int]:
    return getattr(t, "thread_pointer", None) or t.fs_base


class TcacheWalk:
    def _tsd_offset(self) -> Tuple[Optional[int], str]:
        """Thread pointer -> tsd offset: the library's TPOFF64 GOT slot (initial-exec TLS) or, for a
        program with jemalloc linked in, the executable's TLS block (variant II)."""
        roots, lay = self.roots, self.lay
        sym = lay.glob("je_tsd_tls") or 0
        if roots.kind == "static":
            if not roots.exe_tls:
                return None, "the program has no TLS segment"
            from ..maps.globals import GlobalMap
            blk = GlobalMap({}, list(roots.exe_tls)).exe_tls_block(0)
            if blk is None:
                return None, "the program's TLS segment is empty"
            return blk + sym, f"executable's TLS block (thread pointer{blk:+#x}) + je_tsd_tls"
        best, best_hits, why = None, -1, "no R_X86_64_TPOFF64 slot in the library"
        for slot, target in sorted(self.roots.tls_slots, key=lambda s: s[1] != sym):
            raw = self.r.try_u64(slot)
            if raw is None:
                why = f"the library's TLS GOT slot {slot:#x} is not in the snapshot"
                continue
            # the slot holds (block offset + target); je_tsd_tls is at block offset + sym
            off = (raw - (1 << 64) if raw >= 1 << 63 else raw) - target + sym
            if not -(1 << 24) < off < 0:
                why = f"the library's TLS GOT slot {slot:#x} holds {raw:#x}, no thread-pointer offset"
                continue
            hits = sum(1 for t in self.threads if thread_pointer(t) and self._tsd_ok(thread_pointer(t) + off))
            if hits > best_hits:
                best, best_hits = off, hits
                why = f"TPOFF64 GOT slot {slot - self.roots.obj.base:#x} of the library (thread pointer{off:+#x})"
        return best, why

    def _tsd_ok(self, tsd: int) -> bool:
        lay = self.lay
        try:
            raw = self.r.read(tsd, lay.tsd_size)
        except ReadError:
            return False
        slow = _u64(raw, lay.tsd_tcache + lay.tc_slow)
        return raw[lay.tsd_state] < TSD_STATES and slow in (0, tsd + lay.tsd_tcache_slow)

    def _thread_caches(self) -> None:
        lay = self.lay
        self.tcaches: List[TCache] = []
        off, how = self._tsd_offset()
        self.tsd_off = off
        if off is None:
            self.notes.append(f"thread caches cannot be located ({how}): regions cached in them show as allocated "
                              "unless an arena's tcache list leads to them")
        else:
            self.roots.how["tsd"] = how
            if not any(thread_pointer(t) for t in self.threads):
                self.notes.append("the debugger gives no thread pointers (fs_base): thread caches are found "
                                  "through the arenas' tcache lists only, without their threads")
        by_addr: Dict[int, TCache] = {}
        for t in self.threads:
            tp = thread_pointer(t)
            if off is None or not tp:
                continue
            tsd = tp + off
            try:
                raw = self.r.read(tsd, lay.tsd_size)
            except ReadError:
                self.notes.append(f"thread {t.num}'s jemalloc TLS (tsd at {tsd:#x}) is not readable")
                continue
            state = raw[lay.tsd_state]
            arena = _u64(raw, lay.tsd_arena)
            if arena in self.arena_pos:
                self.thread_arena[t.num] = self.arena_pos[arena]
                self.arenas[self.arena_pos[arena]].threads.append(t.num)
            slow = _u64(raw, lay.tsd_tcache + lay.tc_slow)
            if slow == 0:
                continue                              # no tcache yet (never allocated) or disabled
            if state >= TSD_STATES or slow != tsd + lay.tsd_tcache_slow:
                self.corrupt(None, f"thread {t.num}'s jemalloc tsd at {tsd:#x} is inconsistent (state {state}, "
                             f"tcache->tcache_slow = {slow:#x}, expected {tsd + lay.tsd_tcache_slow:#x})",
                             [f"thread {t.num} (LWP {t.tid}); its cached regions cannot be listed"], "tsd",
                             severity="warning")
                continue
            sraw = raw[lay.tsd_tcache_slow:lay.tsd_tcache_slow + lay.ts_size]
            tc = TCache(tsd + lay.tsd_tcache, slow, _u64(sraw, lay.ts_arena), t.num, t.tid, tsd, "TLS")
            if _u64(sraw, lay.ts_tcache) != tc.addr:
                self.corrupt(None, f"thread {t.num}'s tcache_slow at {slow:#x} points at tcache "
                             f"{_u64(sraw, lay.ts_tcache):#x}, not its own {tc.addr:#x}",
                             [f"thread {t.num} (LWP {t.tid})"], "tsd", severity="warning")
            tc.dyn = _u64(sraw, lay.ts_dyn)
            self._read_bins(tc, raw[lay.tsd_tcache:lay.tsd_tcache + lay.tcache_size])
            self.tcaches.append(tc)
            by_addr[tc.addr] = tc
            self.thread_cache[t.num] = tc.addr
        self._rings(by_addr)

    def _rings(self, by_addr: Dict[int, TCache]) -> None:
        """Walk every arena's tcache_ql ring: each TLS-found tcache must be on its arena's ring;
        tcaches found only there (explicit tcaches, threads without a thread pointer) are walked too."""
        lay = self.lay
        tp_of = {thread_pointer(t): t for t in self.threads if thread_pointer(t)}
        for pos, a in enumerate(self.arenas):
            head = self.arena_tcache_ql[pos]
            node, seen, n = head, set(), 0
            while node and n < MAX_RING:
                if node in seen or node & 7:
                    self.corrupt(None, f"{a.name}: its tcache list loops or holds a bad link ({node:#x})",
                                 ["arena->tcache_ql ring (tcache_slow_t.link)"], "tcache-ring", severity="warning")
                    break
                seen.add(node)
                n += 1
                try:                                  # ring links point at the elements themselves
                    sraw = self.r.read(node, lay.ts_size)
                except ReadError:
                    self.corrupt(None, f"{a.name}: its tcache list leads to unreadable memory at {node:#x}",
                                 ["arena->tcache_ql ring"], "tcache-ring", severity="warning")
                    break
                slow = node
                tca = _u64(sraw, lay.ts_tcache)
                tc = by_addr.get(tca)
                if tc is not None:
                    tc.on_ring = True
                    if self.arena_pos.get(tc.arena_ptr) != pos:
                        self.notes.append(f"tcache {tca:#x} of thread {tc.thread} is on {a.name}'s list but "
                                          f"names arena {tc.arena_ptr:#x}")
                elif tca and not tca & 7:
                    tc = TCache(tca, slow, _u64(sraw, lay.ts_arena), how="arena ring", on_ring=True)
                    tc.dyn = _u64(sraw, lay.ts_dyn)
                    if self.tsd_off is not None:              # an embedded tcache: whose TLS is it in?
                        t = tp_of.get(tca - lay.tsd_tcache - self.tsd_off)
                        if t is not None:
                            tc.thread, tc.tid, tc.tsd = t.num, t.tid, tca - lay.tsd_tcache
                    try:
                        self._read_bins(tc, self.r.read(tca, lay.tcache_size))
                        self.tcaches.append(tc)
                        by_addr[tca] = tc
                        if tc.thread is not None:
                            self.thread_cache.setdefault(tc.thread, tca)
                    except ReadError:
                        self.notes.append(f"tcache {tca:#x} on {a.name}'s list is unreadable")
                nxt = _u64(sraw, lay.ts_link)         # link.qre_next
                if nxt == head:
                    break
                node = nxt
        for tc in self.tcaches:
            if tc.how == "TLS" and not tc.on_ring and tc.arena_ptr in self.arena_pos:
                self.corrupt(None, f"thread {tc.thread}'s tcache {tc.addr:#x} is not on the tcache list of "
                             f"{self.arenas[self.arena_pos[tc.arena_ptr]].name}",
                             ["tcache_slow->arena names that arena; arena->tcache_ql does not contain it"],
                             "tcache-ring", severity="warning")

    def _read_bins(self, tc: TCache, raw: bytes) -> None:
        lay = self.lay
        dyn = tc.dyn
        who = f"thread {tc.thread}" if tc.thread is not None else f"tcache {tc.addr:#x}"
        for i in range(self.nhbins):
            o = lay.tc_bins + i * lay.cb_size
            if o + lay.cb_size > len(raw):
                break
            head = _u64(raw, o + lay.cb_head)
            empty, full = _u16(raw, o + lay.cb_empty), _u16(raw, o + lay.cb_full)
            diff = (empty - (head & 0xFFFF)) & 0xFFFF
            cmax = int(self.ncached_max[i])
            if diff == 0:
                continue
            bad = None
            if diff & 7 or diff // 8 > cmax:
                bad = f"its bounds give {diff / 8:g} items, more than ncached_max {cmax}"
            elif head & 7 or (dyn and not dyn <= head <= dyn + self.stack_bytes):
                bad = f"its stack head {head:#x} is outside the tcache's stack block at {dyn:#x}"
            elif ((empty - full) & 0xFFFF) != cmax * 8:
                bad = f"low_bits_full {full:#x} / low_bits_empty {empty:#x} do not span {cmax} slots"
            if bad:
                self.corrupt(None, f"tcache bin {i} ({self.size_of(i):#x}) of {who} is corrupt: {bad}",
                             [f"cache_bin_t at {tc.addr + lay.tc_bins + i * lay.cb_size:#x}"], "tcache-bin")
                continue
            try:
                items = np.frombuffer(self.r.read(head, diff), dtype="<u8")
            except ReadError as e:
                self.corrupt(None, f"tcache bin {i} of {who}: its stack is unreadable ({e})", [], "tcache-bin")
                continue
            tc.bins.append((i, head, items))
