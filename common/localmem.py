"""Memory an adapter can read without asking the debugger: a live process on this machine
through /proc/PID/mem (pread: bulk, ~20x faster than lldb's debug-server reads, and safe on
a worker thread), a core file through common.elfcore. One rule lives here: writable memory a
truncated core lacks is never taken from the mapped file, which holds stale bytes."""
from __future__ import annotations

import os
from typing import List, Optional

from .elfcore import CoreFile, MissingFromCore
from .procmaps import read_maps
from .target import ReadError, Region


class LocalMemory:
    """Mixin for Target adapters: set `_mem` (an open /proc/PID/mem) or `core` (a CoreFile);
    read() tries fast_read() first and asks the debugger only when it returns None; regions()
    likewise with local_regions()."""
    _mem = None
    core: Optional[CoreFile] = None

    def fast_read(self, addr: int, size: int) -> Optional[bytes]:
        if self._mem is not None:
            try:
                data = os.pread(self._mem.fileno(), size, addr)
                if len(data) == size:
                    return data
            except (OSError, OverflowError, ValueError):
                pass
        elif self.core is not None:
            try:
                return self.core.read(addr, size)
            except MissingFromCore:
                raise                      # the debugger would serve the file's stale bytes
            except ReadError:
                pass                       # the debugger may know file-backed bytes
        return None

    def local_regions(self, live_pid: Optional[int]) -> Optional[List[Region]]:
        """The mappings without the debugger: the core's, or /proc/PID/maps of a local live
        process; None when only the debugger can say."""
        if self.core is not None:
            return self.core.regions()
        if live_pid:
            try:
                return read_maps(live_pid)
            except OSError:
                return None
        return None

    def threadsafe_reader(self):
        if self._mem is not None:
            fd = self._mem.fileno()

            def pread(addr: int, size: int) -> bytes:
                data = os.pread(fd, size, addr)
                if len(data) != size:
                    raise ReadError(addr, size, "short read")
                return data
            return pread
        return self.core.read if self.core is not None else None
