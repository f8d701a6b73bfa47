"""What every allocator walker shares: how it says it does not apply."""
from __future__ import annotations


class NotThisAllocator(Exception):
    """The allocator is not in use or cannot be walked; the message is one sentence saying why.

    `present` is False when the allocator is simply not loaded (nothing worth telling the user
    when another allocator was walked), True when it is loaded but could not be walked."""

    def __init__(self, message: str, present: bool = True):
        super().__init__(message)
        self.present = present


MAX_PER_CHECK = 25          # findings of one rule listed before the rest are only counted


class WalkerBase:
    """What every walker keeps while it walks one allocator at one stop: the target, the reader,
    the roots and layout it located, and the findings with a cap per rule (a smashed heap can
    break one rule a million times; the report lists MAX_PER_CHECK and counts the rest)."""

    def __init__(self, target, reader, roots):
        from collections import Counter
        self.t, self.r, self.roots, self.lay = target, reader, roots, roots.layout
        self.threads = target.threads()
        self.findings: list = []
        self.per_check: Counter = Counter()
        self.notes: list = list(target.warnings()) + list(roots.notes)
        self.lists: list = []

    def listed(self, check: str) -> bool:
        """Count one hit of `check`; True while it is still to be listed."""
        self.per_check[check] += 1
        return self.per_check[check] <= MAX_PER_CHECK

    def find(self, kind, severity, address, message, evidence=(), check="", chunk=None):
        from ..report import Finding
        if self.listed(check):
            self.findings.append(Finding(kind, severity, address, message, list(evidence), chunk, None, check))

    def summarise_overflow(self) -> None:
        """One finding per rule that fired more than MAX_PER_CHECK times."""
        from ..report import Finding
        for check, n in self.per_check.items():
            if n > MAX_PER_CHECK:
                self.findings.append(Finding("metadata-corruption", "warning", None,
                                             f"{n - MAX_PER_CHECK} more findings of check '{check}' not listed",
                                             [], None, None, check))
