"""A page cache over any Target: small scattered reads are served from bulk page reads.

Freelist walks read 8-32 bytes at a time at random heap addresses; each debugger call costs
microseconds to milliseconds, so they go through 64 KiB pages. Large reads bypass the cache.
The cache is bounded (LRU) and belongs to one stop of the inferior.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Optional

from .target import ReadError, Target

PAGE = 64 * 1024
_U64 = struct.Struct("<Q")


class CachedReader:
    def __init__(self, target: Target, max_bytes: int = 64 * 1024 * 1024):
        self.target = target
        self._pages: "OrderedDict[int, Optional[bytes]]" = OrderedDict()
        self._max_pages = max(4, max_bytes // PAGE)
        self.bulk_reads = 0
        self.bulk_bytes = 0

    def _page(self, base: int) -> Optional[bytes]:
        pages = self._pages
        data = pages.get(base, b"")
        if data != b"":
            pages.move_to_end(base)
            return data
        try:
            data = self.target.read(base, PAGE)
            self.bulk_reads += 1
            self.bulk_bytes += PAGE
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
        if size >= PAGE:
            self.bulk_reads += 1
            self.bulk_bytes += size
            return self.target.read(addr, size)
        base = addr & ~(PAGE - 1)
        off = addr - base
        if off + size <= PAGE:
            page = self._page(base)
            if page is not None:
                return page[off:off + size]
        else:
            a, b = self._page(base), self._page(base + PAGE)
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
