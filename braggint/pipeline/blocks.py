"""Frame blocks ("jobs") of each sweep and the reflections each block integrates, as DIALS lays them out.

Units: frames are 0-based image indices (``scan.array_range``), blocks are
half-open frame ranges.  A reflection whose bbox fits in no single block
is cut into pieces at the end frames of the blocks it spans (each piece a
row of its own sharing ``partial_id``), then every row goes to the block
that contains it whole and whose centre is nearest to the row's z-centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from ..params.phil import Auto


@dataclass(frozen=True)
class Block:
    """Frames [start, stop) of the sweep shared by experiments [first, last)."""

    index: int
    experiments: tuple[int, int]
    start: int
    stop: int

    @property
    def centre(self) -> float:
        return (self.start + self.stop) / 2.0


def block_overlap(bbox: np.ndarray, threshold: float) -> int:
    """Frames spanned by the reflection at rank floor(threshold * n) of the sorted bbox depths."""
    depths = np.sort(bbox[:, 5] - bbox[:, 4])
    if len(depths) == 0:
        return 0
    return int(depths[min(int(threshold * len(depths)), len(depths) - 1)])


def block_size_frames(block_params, n_frames: int, dphi_deg: float, n_workers: int, overlap: int,
                      debug_output: bool) -> tuple[int, int]:
    """``(block size, overlap)`` in frames from ``integration.block``."""
    size = block_params.size
    if size is None or (size is Auto and n_workers == 1 and not debug_output and not block_params.force):
        return n_frames, overlap
    if size is Auto:
        blocks_wanted = n_workers
        frames = int(math.ceil((n_frames - overlap) / blocks_wanted + overlap))
        return max(frames, 2 * overlap), overlap
    if block_params.units == "radians":
        frames = int(math.ceil(float(size) / math.radians(abs(dphi_deg))))
    elif block_params.units == "degrees":
        frames = int(math.ceil(float(size) / abs(dphi_deg)))
    else:
        frames = int(math.ceil(float(size)))
    return max(frames, 1), min(overlap, frames // 2)


def frame_ranges(start: int, stop: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Blocks of ``size`` frames overlapping by ``overlap`` covering [start, stop)."""
    n_frames = stop - start
    if size >= n_frames:
        return [(start, stop)]
    overlap = min(overlap, size // 2)
    if size == 1:
        return [(f, f + 1) for f in range(start, stop)]
    n_blocks = int(math.ceil((n_frames - size) / (size - overlap))) + 1
    ranges = []
    for i in range(n_blocks):
        first = start + i * (size - overlap)
        ranges.append((first, min(first + size, stop)))
    return ranges


def plan_blocks(experiments: ExperimentList, table: ReflectionTable, params, n_workers: int) -> list[Block]:
    """Blocks of every group of consecutive experiments sharing an image set and scan."""
    blocks: list[Block] = []
    integration = params.integration
    to_do = ~table.get_flags(Flags.dont_integrate)
    overlap = 0
    if integration.block.size is not None:
        threshold = integration.block.threshold if integration.block.threshold is not None else 0.95
        overlap = block_overlap(table["bbox"][to_do], threshold)
    groups: list[list[int]] = []
    for number, experiment in enumerate(experiments):
        previous = experiments[groups[-1][0]] if groups else None
        if previous is not None and previous.imageset is experiment.imageset and previous.scan is experiment.scan:
            groups[-1].append(number)
        else:
            groups.append([number])
    for group in groups:
        experiment = experiments[group[0]]
        start, stop = experiment.scan.array_range
        size, group_overlap = block_size_frames(integration.block, stop - start, experiment.scan.oscillation[1],
                                                n_workers, overlap, integration.debug.output)
        for first, last in frame_ranges(start, stop, size, group_overlap):
            blocks.append(Block(len(blocks), (group[0], group[-1] + 1), first, last))
    return blocks


def _blocks_of(experiment_id: int, blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.experiments[0] <= experiment_id < b.experiments[1]]


def split_across_blocks(table: ReflectionTable, blocks: list[Block]) -> ReflectionTable:
    """Cut reflections that fit in no block at the block ends they cross; ``partial_id`` = source row."""
    bbox = table["bbox"]
    pieces_of_row: list[list[tuple[int, int]]] = []
    for row in range(table.nrows):
        z0, z1 = int(bbox[row, 4]), int(bbox[row, 5])
        mine = _blocks_of(int(table["id"][row]), blocks)
        if any(b.start <= z0 and z1 <= b.stop for b in mine):
            pieces_of_row.append([(z0, z1)])
            continue
        cuts = [b.stop for b in mine if z0 < b.stop < z1]
        edges = [z0] + sorted(set(cuts)) + [z1]
        pieces_of_row.append(list(zip(edges[:-1], edges[1:])))
    counts = np.array([len(p) for p in pieces_of_row])
    source = np.repeat(np.arange(table.nrows), counts)
    result = table.select(source)
    new_bbox = result["bbox"].copy()
    ranges = np.array([z for pieces in pieces_of_row for z in pieces], dtype=np.int32).reshape(-1, 2)
    new_bbox[:, 4], new_bbox[:, 5] = ranges[:, 0], ranges[:, 1]
    result["bbox"] = new_bbox
    result["partial_id"] = source.astype(np.uint64)
    return result


def assign_to_blocks(table: ReflectionTable, blocks: list[Block]) -> np.ndarray:
    """Block index of every row (-1 for dont_integrate rows), the nearest block containing it whole."""
    assignment = np.full(table.nrows, -1, np.int64)
    skip = table.get_flags(Flags.dont_integrate)
    bbox = table["bbox"]
    starts = np.array([b.start for b in blocks])
    stops = np.array([b.stop for b in blocks])
    centres = np.array([b.centre for b in blocks])
    first = np.array([b.experiments[0] for b in blocks])
    last = np.array([b.experiments[1] for b in blocks])
    for row in np.flatnonzero(~skip):
        z0, z1 = bbox[row, 4], bbox[row, 5]
        eid = table["id"][row]
        fits = (starts <= z0) & (stops >= z1) & (first <= eid) & (last > eid)
        candidates = np.flatnonzero(fits)
        distance = np.abs((z0 + z1) / 2.0 - centres[candidates])
        assignment[row] = candidates[np.argmin(distance)]
    return assignment
