"""What every allocator walker shares: how it says it does not apply."""
from __future__ import annotations


class NotThisAllocator(Exception):
    """The allocator is not in use or cannot be walked; the message is one sentence saying why.

    `present` is False when the allocator is simply not loaded (nothing worth telling the user
    when another allocator was walked), True when it is loaded but could not be walked."""

    def __init__(self, message: str, present: bool = True):
        super().__init__(message)
        self.present = present
