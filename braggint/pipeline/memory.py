"""How much memory the shoeboxes of a block need, how much there is, and blocks that fit.

A block task streams its shoeboxes: a shoebox is allocated at its first
frame and released once its last frame is read, so the memory a block
needs is the largest total size of the shoeboxes open on any one of its
frames (DIALS's estimate, 12 bytes a voxel: data and background as
float32 plus the mask).  ``integration.block.max_memory_usage`` is the
fraction of the available memory (psutil's *available*, capped by the
cgroup limit and RLIMIT_RSS/RLIMIT_AS) that all local workers together may
give to shoeboxes.
"""

from __future__ import annotations

import logging
import resource

import numpy as np

from ..errors import ParameterError
from ..models.reflection_table import ReflectionTable

log = logging.getLogger("braggint")

#: Bytes of a shoebox voxel: float32 data, float32 background, 4 bytes of mask.
BYTES_PER_VOXEL = 12


def available_memory() -> int:
    """Bytes this process can still allocate: available RAM, capped by cgroup and rlimits."""
    import psutil

    available = psutil.virtual_memory().available
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = int(handle.read().strip())
        if limit != "max":
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    for which in (resource.RLIMIT_RSS, resource.RLIMIT_AS):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            available = min(available, soft - psutil.Process().memory_info().rss)
    return max(int(available), 0)


def block_memory_needs(bbox: np.ndarray, assignment: np.ndarray, n_blocks: int) -> np.ndarray:
    """Peak bytes of open shoeboxes of each block (``bbox`` in pixels and 0-based frames)."""
    needs = np.zeros(n_blocks, np.int64)
    rows = assignment >= 0
    if not rows.any():
        return needs
    box = np.asarray(bbox, np.int64)[rows]
    block = assignment[rows]
    size = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]) * (box[:, 5] - box[:, 4]) * BYTES_PER_VOXEL
    first = int(box[:, 4].min())
    length = int(box[:, 5].max()) - first + 1
    # Per block and frame: +size where a shoebox opens, -size after its last frame; running sum = open bytes.
    change = np.zeros((n_blocks, length), np.int64)
    np.add.at(change, (block, box[:, 4] - first), size)
    np.add.at(change, (block, box[:, 5] - first), -size)
    return np.cumsum(change, axis=1).max(axis=1)


def memory_report(needs: np.ndarray, budget: int | None, workers: int) -> None:
    """DIALS's "memory situation" lines in the log."""
    log.info("Memory situation: %.0f MB available, %s, shoeboxes need at most %.3f MB in one block (%d workers)",
             available_memory() / 1e6,
             "no limit" if budget is None else f"{budget / workers / 1e6:.3f} MB allowed for shoeboxes per worker",
             (needs.max() if len(needs) else 0) / 1e6, workers)


def too_little_memory(needs: np.ndarray, blocks, budget: int, workers: int, max_memory_usage: float,
                      table: ReflectionTable) -> ParameterError:
    """The error for a block whose shoeboxes cannot fit even at the smallest block size."""
    worst = int(np.argmax(needs))
    box = np.asarray(table["bbox"], np.int64)
    mean = (box[:, 1::2] - box[:, ::2]).mean(axis=0) if len(box) else np.zeros(3)
    return ParameterError(
        f"Not enough memory to integrate: block {worst} (frames {blocks[worst].start}-{blocks[worst].stop - 1}) "
        f"needs {needs[worst] / 1e6:.1f} MB of shoeboxes but integration.block.max_memory_usage="
        f"{max_memory_usage} of {available_memory() / 1e6:.0f} MB available allows {budget / workers / 1e6:.1f} MB "
        f"for each of {workers} worker(s); use fewer workers (integration.mp.nproc), raise "
        f"max_memory_usage, or check the profile model (mean shoebox {mean[0]:.0f} x {mean[1]:.0f} x {mean[2]:.0f} "
        f"pixels x pixels x frames)")
