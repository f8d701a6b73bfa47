"""Freelist membership: one rule for every allocator.

A chunk may sit in at most one freelist (tcache bin, fastbin, bin, thread cache, central
list...). Present twice — one list looping back to it, or two lists at once — it was freed
twice, and the allocator will hand it out twice. No allocator checks this across its lists.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np


def resolve(chunk_idx: np.ndarray, list_id: np.ndarray, position: np.ndarray, preferred: np.ndarray):
    """Give each chunk one membership and find chunks listed more than once.

    chunk_idx/list_id/position: one row per freelist entry (chunk index in the heap table).
    preferred[list_id] is True for lists whose membership names the chunk's state first
    (thread caches). Returns (chunks, their list, their position, duplicates) where
    duplicates is a list of (chunk index, [(list id, position), ...]).
    """
    if len(chunk_idx) == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e.astype(np.int32), e.astype(np.int32), []
    pref = preferred[list_id]
    order = np.lexsort((position, ~pref, chunk_idx))
    ci, li, po = chunk_idx[order], list_id[order], position[order]
    uniq, first, counts = np.unique(ci, return_index=True, return_counts=True)
    dups: List[Tuple[int, list]] = []
    for u, f0, c in zip(uniq[counts > 1], first[counts > 1], counts[counts > 1]):
        dups.append((int(u), list(zip(li[f0:f0 + c].tolist(), po[f0:f0 + c].tolist()))))
    return uniq, li[first], po[first], dups
