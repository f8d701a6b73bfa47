"""Report records: findings, allocation info, JSON (schema heaplens/1) and tables."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA = "heaplens/1"
SEVERITIES = ("critical", "warning", "info")
PROGRAM_CHECKS = ("crash", "stale-pointer", "type-size", "cap")   # about variables, not allocator metadata
_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def severity_rank(sev: str) -> int:
    """0 = worst. Unknown severities sort last."""
    return _RANK.get(sev, len(SEVERITIES))


@dataclass
class Finding:
    kind: str                      # double-free, invalid-free, use-after-free, size-mismatch, metadata-corruption, leak
    severity: str                  # critical, warning, info
    address: Optional[int]         # user pointer of the chunk concerned
    message: str
    evidence: List[str] = field(default_factory=list)
    chunk: Optional[Dict[str, Any]] = None      # {"start", "size", "state"}
    variable: Optional[Dict[str, Any]] = None
    check: str = ""                # short id of the rule that fired (for grouping, tests)

    @property
    def scope(self) -> str:
        """"program" for findings about the program's variables and crash, else "heap"."""
        return "program" if self.check in PROGRAM_CHECKS else "heap"

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"kind": self.kind, "severity": self.severity, "address": self.address,
                             "message": self.message, "evidence": list(self.evidence), "check": self.check,
                             "scope": self.scope}
        if self.chunk is not None:
            d["chunk"] = dict(self.chunk)
        if self.variable is not None:
            d["variable"] = dict(self.variable)
        return d


def sort_findings(findings: List[Finding]) -> List[Finding]:
    # the crash itself first, then worst severity first
    return sorted(findings, key=lambda f: (severity_rank(f.severity), f.check != "crash", f.kind, f.address or 0))


def make_report(command: str, allocator, payload: Dict[str, Any]) -> Dict[str, Any]:
    rep = {"schema": SCHEMA, "command": command, "allocator": allocator}
    rep.update(payload)
    return rep


def dumps(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=_json_default)


def _json_default(o):
    try:                       # numpy integers and friends
        return int(o)
    except (TypeError, ValueError):
        return str(o)


def write_json(report: Dict[str, Any], path: str, out=None) -> Optional[str]:
    """Write the report to `path` ('-' = the `out` callable, e.g. the debugger's print).
    Returns an error sentence instead of raising."""
    text = dumps(report)
    if path == "-":
        if out is not None:
            out(text + "\n")
        return None
    try:
        with open(path, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        return f"could not write JSON to {path}: {e.strerror or e}"
    return None


def fmt_size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div * 10:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def table(rows, headers) -> str:
    """A plain-text table (tabulate when present; a simple fallback otherwise)."""
    try:
        from tabulate import tabulate
        return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    except ImportError:
        cols = [headers] + [[str(c) for c in r] for r in rows]
        widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in cols]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)
