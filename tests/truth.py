"""The test programs' ground-truth files (tests/programs/truth.h writes them): read by the
harness and by the probes that run inside gdb and lldb."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Truth:
    live: Dict[int, int] = field(default_factory=dict)
    freed: Dict[int, int] = field(default_factory=dict)
    mmapped: Dict[int, int] = field(default_factory=dict)
    expect: List[tuple] = field(default_factory=list)      # (kind, address)
    threads: List[int] = field(default_factory=list)


def read_truth(path: str) -> Truth:
    t = Truth()
    for line in open(path):
        f = line.split()
        if not f:
            continue
        if f[0] in ("live", "freed", "mmapped"):
            getattr(t, f[0])[int(f[1], 16)] = int(f[2])
        elif f[0] == "expect":
            t.expect.append((f[1], int(f[2], 16)))
        elif f[0] == "thread":
            t.threads.append(int(f[1]))
    return t


def addresses(t: Truth) -> List[int]:
    """Every address the truth file names, to ask `info alloc` about."""
    return list(t.live) + list(t.freed) + list(t.mmapped) + [a for _, a in t.expect]
