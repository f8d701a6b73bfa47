"""Program-level analysis of one stop: pointers in variables, crash context, their findings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..memcache import CachedReader
from ..report import Finding
from ..snapshot import HeapSnapshot
from ..target import FrameInfo, StopInfo, Target
from . import crash as crash_mod
from . import program


@dataclass
class ProgramView:
    stop: StopInfo
    frames: List[FrameInfo]
    refs: List[program.Ref]
    stats: Dict[str, int]
    crash: Optional[crash_mod.Crash]
    findings: List[Finding] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def analyse(target: Target, snaps: List[HeapSnapshot]) -> ProgramView:
    stop = target.stop_info()
    frames = target.frames()
    glob = target.globals()
    reader = CachedReader(target)
    variables = [v for f in frames for v in f.variables] + glob
    refs, stats = program.collect(target, reader, variables, snaps)
    stats["globals"] = len(glob)
    stats["frames"] = len(frames)
    cr = crash_mod.analyse(target, reader, frames, stop, snaps)
    if cr is not None:
        crash_mod.infer_pointer(cr, refs, snaps, target)
    view = ProgramView(stop, frames, refs, stats, cr)
    view.findings = crash_mod.findings(cr, snaps, refs, target)
    crash_frame, skip = None, set()
    if cr is not None and cr.frame is not None:
        if cr.in_allocator:
            if cr.expr:                         # already reported as the crash itself
                skip.add((cr.thread, cr.frame.level, cr.expr))
        elif stop.signal in ("SIGSEGV", "SIGBUS"):   # a bad access in program code
            crash_frame = (cr.thread, cr.frame.level)
    view.findings += program.check(refs, snaps, stop, crash_frame, skip)
    if cr is not None:
        view.notes += cr.notes
    if not frames:
        view.notes.append("the debugger gave no frames: variables were not checked")
    elif stats["variables"] == 0:
        view.notes.append("no pointer variables with debug info: build the program with -g to check its pointers")
    return view
