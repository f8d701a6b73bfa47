"""A page cache over any Target: small scattered reads are served from bulk page reads.

Freelist walks read 8-32 bytes at a time at random heap addresses; each debugger call costs
microseconds to milliseconds, so they go through 64 KiB pages. Large reads bypass the cache.
The cache is bounded (LRU) and belongs to one stop of the inferior.

Over a slow link (a remote target: every byte crosses the wire, ~8 KiB per round trip) a
64 KiB page for a 16-byte read is 4000x the bytes needed: there the block is 4 KiB.
"""
from __future__ import annotations

import struct
from bisect import bisect_right
from collections import OrderedDict
from typing import Optional

from .target import ReadError, Target

PAGE = 64 * 1024
SLOW_PAGE = 4 * 1024         # block size for targets with slow_link set
_U64 = struct.Struct("<Q")


class CachedReader:
    def __init__(self, target: Target, max_bytes: int = 64 * 1024 * 1024, block: Optional[int] = None):
        self.target = target
        self.block = block or (SLOW_PAGE if getattr(target, "slow_link", False) else PAGE)
        self._pages: "OrderedDict[int, Optional[bytes]]" = OrderedDict()
        self._max_pages = max(4, max_bytes // self.block)
        self.bulk_reads = 0
        self.bulk_bytes = 0

    def _page(self, base: int) -> Optional[bytes]:
        pages = self._pages
        data = pages.get(base, b"")
        if data != b"":
            pages.move_to_end(base)
            return data
        try:
            data = self.target.read(base, self.block)
            self.bulk_reads += 1
            self.bulk_bytes += self.block
        except ReadError:
            data = None            # page partly unmapped: fall back to exact reads
        pages[base] = data
        if len(pages) > self._max_pages:
            pages.popitem(last=False)
        return data

    def read(self, addr: int, size: int) -> bytes:
        if size <= 0:
            return b""
        if addr < 0 or addr + size > 1 << 64:
            raise ReadError(addr, size, "address out of range")
        block = self.block
        if size >= block:
            self.bulk_reads += 1
            self.bulk_bytes += size
            return self.target.read(addr, size)
        base = addr & ~(block - 1)
        off = addr - base
        if off + size <= block:
            page = self._page(base)
            if page is not None:
                return page[off:off + size]
        else:
            a, b = self._page(base), self._page(base + block)
            if a is not None and b is not None:
                return (a + b)[off:off + size]
        return self.target.read(addr, size)

    def u64(self, addr: int) -> int:
        return _U64.unpack(self.read(addr, 8))[0]

    def try_u64(self, addr: int) -> Optional[int]:
        try:
            return _U64.unpack(self.read(addr, 8))[0]
        except ReadError:
            return None

    def words(self, addr: int, n: int):
        """n little-endian u64 words at addr (a tuple)."""
        return struct.unpack(f"<{n}Q", self.read(addr, 8 * n))


class RangeCache:
    """The bytes a slow target already sent, by address: a read is served from them where they
    cover it and only the parts they do not cover are fetched (a remote target: the tracer then
    re-reads nothing the heap walk read). Segments never overlap. Bounded: past max_bytes
    nothing new is kept. Belongs to one stop of the inferior, like the Target that owns it."""

    def __init__(self, fetch, max_bytes: int):
        self.fetch = fetch                   # (addr, size) -> bytes, or raises ReadError
        self.max_bytes = max_bytes
        self.starts: list = []               # sorted segment starts
        self.data: dict = {}                 # start -> bytes
        self.kept = 0

    def read(self, addr: int, size: int) -> bytes:
        starts, data = self.starts, self.data
        end = addr + size
        j = bisect_right(starts, addr) - 1
        if j >= 0:
            s = starts[j]
            d = data[s]
            if s + len(d) >= end:            # the common case: one segment holds it all
                return d[addr - s:end - s]
            if s + len(d) <= addr:
                j += 1
        else:
            j = 0
        parts = []
        pos = addr
        while pos < end:
            if j < len(starts) and starts[j] <= pos:
                s = starts[j]
                d = data[s]
                take = min(s + len(d), end)
                parts.append(d[pos - s:take - s])
                pos = take
                j += 1
                continue
            stop = min(starts[j], end) if j < len(starts) else end
            got = self.fetch(pos, stop - pos)
            if self.kept + len(got) <= self.max_bytes:
                starts.insert(j, pos)
                data[pos] = got
                self.kept += len(got)
                j += 1
            parts.append(got)
            pos = stop
        return parts[0] if len(parts) == 1 else b"".join(parts)
