"""Parse /proc/PID/maps into Regions (live processes on this machine)."""
from __future__ import annotations

from typing import List

from .target import Region


def parse_maps(text: str) -> List[Region]:
    regions = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            offset = int(parts[2], 16)
        except ValueError:
            continue
        path = parts[5].strip() if len(parts) > 5 else ""
        regions.append(Region(lo, hi, parts[1], path, offset))
    regions.sort(key=lambda r: r.start)
    return regions


def read_maps(pid: int) -> List[Region]:
    with open(f"/proc/{pid}/maps") as f:
        return parse_maps(f.read())
