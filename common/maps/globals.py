"""The global map: variables with static storage (DW_AT_location = DW_OP_addr: file-scope,
namespace-scope, class statics and function-local statics) at their link-time addresses, and
thread-locals (DW_OP_const* N; DW_OP_form_tls_address / DW_OP_GNU_push_tls_address) with
their offset in the module's TLS block, listed separately.

Runtime address of a static = g_addr + the object's load bias (common.target.ObjFile.base).
A thread-local's address = the thread's TLS block for this module + g_addr; for the
executable's own block (initial-exec, variant II as on x86-64) `exe_tls_block(tp)` gives it.
"""
from __future__ import annotations

from typing import Dict, List, Optional

G_TLS, G_EXTERNAL, G_FUNC_STATIC = 1, 2, 4


class GlobalMap:
    COLUMNS = ("g_type", "g_addr", "g_flags", "g_die")
    STRINGS = ("g_name", "g_func")

    def __init__(self, cols: Dict[str, list], tls: Optional[List[int]] = None):
        for c in self.COLUMNS + self.STRINGS:
            setattr(self, c, cols.get(c, []))
        #: (vaddr, memsz, align) of the file's PT_TLS segment, or empty
        self.tls = list(tls or [])

    def __len__(self) -> int:
        return len(self.g_name)

    def statics(self) -> List[int]:
        return [i for i, f in enumerate(self.g_flags) if not f & G_TLS]

    def thread_locals(self) -> List[int]:
        return [i for i, f in enumerate(self.g_flags) if f & G_TLS]

    def exe_tls_block(self, thread_pointer: int) -> Optional[int]:
        """Start of the executable's static TLS block for the thread whose thread pointer
        (x86-64 fs_base) is given: the block ends at the thread pointer, rounded to the
        segment's alignment (TLS variant II; glibc's offset for the first module)."""
        if len(self.tls) < 3 or not self.tls[1]:
            return None
        vaddr, memsz, align = self.tls
        align = max(1, align)
        first = (-vaddr) & (align - 1) if align & (align - 1) == 0 else 0
        off = (memsz + first + align - 1) // align * align
        return thread_pointer - off
