"""Summing the blocks' partial results (reference-profile sums, validation statistics) as a tree.

The parent reduces every block's sums this way, and a block that gathers
the others' sums to finish its own fitting (:mod:`.profile_exchange`)
reduces them in the same order, so both get the same profiles bit for bit.
"""

from __future__ import annotations


def add_arrays(*dicts: dict) -> dict:
    """Key-wise sum of dicts whose values are arrays or tuples of arrays (a node of a reduction tree)."""
    total: dict = {}
    for item in dicts:
        for key, value in item.items():
            if key not in total:
                total[key] = tuple(v.copy() for v in value) if isinstance(value, tuple) else value.copy()
            elif isinstance(value, tuple):
                total[key] = tuple(t + v for t, v in zip(total[key], value))
            else:
                total[key] = total[key] + value
    return total


def tree_reduce(items: list, combine, fan_in: int = 4):
    """``combine`` applied over ``items`` as a tree of fan-in ``fan_in`` (the root is always a combine)."""
    level = list(items)
    while len(level) > fan_in:
        level = [combine(*level[i:i + fan_in]) for i in range(0, len(level), fan_in)]
    return combine(*level)
