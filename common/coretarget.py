"""A Target over an ELF core file, with no debugger (used by tests, fuzzing and, later, the CLI).

Symbols come from separate debug files found by build-id (/usr/lib/debug/.build-id) when
`use_debug_files` is true, so a test can exercise both the debug-info and the structure path.
"""
from __future__ import annotations

from typing import List, Optional

from .elfcore import CoreFile
from .elfinfo import elf_info
from .objfiles import debug_file_for, objfiles_from_regions
from .target import ObjFile, Region, Target, ThreadInfo


class CoreTarget(Target):
    kind = "core"

    def __init__(self, core_path: str, use_debug_files: bool = True, core: Optional[CoreFile] = None):
        self.core = core or CoreFile(core_path)
        self.use_debug_files = use_debug_files
        self._regions: Optional[List[Region]] = None
        self._objs: Optional[List[ObjFile]] = None

    def read(self, addr: int, size: int) -> bytes:
        return self.core.read(addr, size)

    def threadsafe_reader(self):
        return self.core.read

    def regions(self) -> List[Region]:
        if self._regions is None:
            self._regions = self.core.regions()
        return self._regions

    def threads(self) -> List[ThreadInfo]:
        return [ThreadInfo(i + 1, t.tid, t.fs_base or None, selected=(i == 0))
                for i, t in enumerate(self.core.threads)]

    def objfiles(self) -> List[ObjFile]:
        if self._objs is None:
            self._objs = objfiles_from_regions(self.regions())
        return self._objs

    def symbol(self, name: str, objfile_hint: str = "") -> Optional[int]:
        if not self.use_debug_files:
            return None
        for obj in self.objfiles():
            if objfile_hint and obj.path != objfile_hint:
                continue
            dbg = debug_file_for(obj.build_id)
            info = elf_info(dbg) if dbg else None
            if info is not None:
                v = info.symbol(name)
                if v is not None:
                    return v + obj.base
        return None

    def warnings(self):
        return self.core.warnings

    def describe(self) -> str:
        return f"core file {self.core.path}"
