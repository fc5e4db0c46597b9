"""Blocks that run at once finish their profile fitting in the first pass by exchanging profile sums.

A row whose reference profile several blocks teach cannot be fitted
until all of them have mapped their strong spots; on its own a block
stores such rows' grid cells in the work store for a second pass.  When
every block of the run runs at the same time (as many local workers as
blocks), each block instead publishes its own sums in the work store as
soon as it has mapped its reflections, waits for the others', reduces
them in block order exactly as the parent does (:mod:`.reduction`), so
the profiles are the parent's bit for bit, and fits those rows from
memory: no grid cells are written and no second pass runs.  A block that
does not see every other block's sums within :data:`EXCHANGE_TIMEOUT`
seconds (a block that failed, or one that could not start) stores the
rows for the second pass as before, so nothing waits on another block
for ever and the numbers are the same either way.
"""

from __future__ import annotations

import time

from .reduction import add_arrays, tree_reduce
from .work_store import WorkStore

#: A block's reference-profile sums in the work store: ``sums_<experiment>`` (F, P, G, G, G) and
#: ``counts_<experiment>`` (F, P) per experiment its strong spots teach.
PROFILE_SUMS = "profiles.npz"
#: Marks a block whose first pass failed, so that the others stop waiting for its sums at once.
FAILED = "exchange_failed"
#: Seconds a block waits for the other blocks' sums before it leaves its rows to the second pass (a block
#: whose worker was killed never marks itself failed).
EXCHANGE_TIMEOUT = 60.0
#: Seconds between two looks at the work store while waiting.
POLL_SECONDS = 0.005


def save_profile_sums(store: WorkStore, block: int, sums: dict) -> None:
    """``{experiment: (sums, counts)}`` of ``block`` into the store (written whole, then renamed)."""
    arrays = {}
    for number, (fold_sums, counts) in sums.items():
        arrays[f"sums_{number}"], arrays[f"counts_{number}"] = fold_sums, counts
    store.save_arrays(block, PROFILE_SUMS, **arrays)


def load_profile_sums(store: WorkStore, block: int) -> dict:
    """What :func:`save_profile_sums` wrote for ``block``."""
    arrays = store.load_arrays(block, PROFILE_SUMS)
    return {int(key.split("_")[1]): (arrays[key], arrays["counts_" + key.split("_")[1]])
            for key in arrays if key.startswith("sums_")}


def all_blocks_sums(store: WorkStore, block: int, own: dict, blocks: tuple[int, ...],
                    timeout: float = EXCHANGE_TIMEOUT) -> dict | None:
    """The reduction of every block's sums in ``blocks`` (in that order, as the parent reduces them),
    ``block``'s being ``own`` (already published with :func:`save_profile_sums`); None when some block's
    sums are not there within ``timeout`` or it marked itself failed."""
    deadline = time.monotonic() + timeout
    gathered: dict[int, dict] = {block: own}
    while True:
        for other in blocks:
            if other not in gathered and store.has(other, PROFILE_SUMS):
                gathered[other] = load_profile_sums(store, other)
        if len(gathered) == len(blocks):
            return tree_reduce([gathered[b] for b in blocks], add_arrays)
        if time.monotonic() > deadline or any(store.has(other, FAILED) for other in blocks if other not in gathered):
            return None
        time.sleep(POLL_SECONDS)


def mark_failed(store: WorkStore, block: int) -> None:
    """Tell the blocks waiting for ``block``'s sums that they will not come (its first pass failed)."""
    store.save_arrays(block, FAILED)


def clear_failed(store: WorkStore, block: int) -> None:
    """Take back :func:`mark_failed` (``block`` runs again)."""
    store.remove(block, FAILED)

