"""Limits and tables shared by the glibc walker's modules."""
import numpy as np

WINDOW = 8 << 20            # bytes of heap parsed per bulk read
SLOW_WINDOW = 8128          # the same over a slow link, read from the current chunk (skips big ones); with
                            # the 64-byte overlap one 8 KiB request (gdbserver: <= 9 KiB a packet)
from .base import MAX_PER_CHECK  # noqa: F401  (one cap for every walker)
MAX_ARENAS = 1024
RESYNC_SCAN = 4 << 20       # bytes searched for a chain of valid chunks after a corrupt one
MMAP_BLOCK = 1 << 20        # bytes read per bulk read while looking for mmapped chunks
MMAP_SCAN_MAX = 1 << 30     # anonymous memory scanned for them at the most (~0.5 s)
MMAP_SLOW_PROBES = 1 << 16  # page headers read for them at the most over a slow link (256 MiB)

_BINNED = ("unsorted", "smallbin", "largebin")
_KIND_CODE = {"tcache": 0, "fastbin": 1, "unsorted": 2, "smallbin": 3, "largebin": 3}
_M64 = (1 << 64) - 1
_U12, _U16 = np.uint64(12), np.uint64(16)
