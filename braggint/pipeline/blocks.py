"""Frame blocks ("jobs") of each sweep and the reflections each block integrates, as DIALS lays them out.

Units: frames are 0-based image indices (``scan.array_range``), blocks are
half-open frame ranges; a block of stills holds consecutive still
experiments, each one frame [0, 1) of its own image.  A reflection whose bbox fits in no single block
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
    """Frames [start, stop) of the sweep shared by experiments [first, last).

    ``backwards``: the block reads its frames from the last to the first.
    The last block of a sweep cut into several does: the rows next to the
    block before it, whose reference profiles both blocks teach, then come
    last, as they do in that block, and wait least for the other's sums.
    """

    index: int
    experiments: tuple[int, int]
    start: int
    stop: int
    backwards: bool = False

    def frames(self) -> range:
        """The block's frames (0-based) in the order it reads them."""
        return range(self.stop - 1, self.start - 1, -1) if self.backwards else range(self.start, self.stop)

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


def plan_blocks(experiments: ExperimentList, table: ReflectionTable, params, n_workers: int,
                max_frames: int | None = None) -> list[Block]:
    """Blocks of every group of consecutive experiments sharing an image set and scan.

    ``max_frames`` caps the block size (the memory guard shrinks blocks with it).
    """
    blocks: list[Block] = []
    integration = params.integration
    to_do = ~table.get_flags(Flags.dont_integrate)
    overlap = 0
    if integration.block.size is not None:
        threshold = integration.block.threshold if integration.block.threshold is not None else 0.95
        overlap = block_overlap(table["bbox"][to_do], threshold)
    groups: list[list[int]] = []
    for number, experiment in enumerate(experiments):
        if experiment.is_still:
            continue
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
        if max_frames is not None and size > max_frames:
            size, group_overlap = max_frames, min(group_overlap, max_frames // 2)
        ranges = frame_ranges(start, stop, size, group_overlap)
        for position, (first, last) in enumerate(ranges):
            backwards = len(ranges) > 1 and position == len(ranges) - 1
            blocks.append(Block(len(blocks), (group[0], group[-1] + 1), first, last, backwards))
    stills = [number for number, experiment in enumerate(experiments) if experiment.is_still]
    for first, last in stills_per_block(stills, n_workers):
        blocks.append(Block(len(blocks), (first, last), 0, 1))
    return blocks


#: Most stills in one block (bounds a block's memory and the work lost if it fails).
MAX_STILLS_PER_BLOCK = 100


def stills_per_block(stills: list[int], n_workers: int) -> list[tuple[int, int]]:
    """Experiment ranges [first, last) of consecutive stills, about four blocks per worker."""
    if not stills:
        return []
    size = max(1, min(MAX_STILLS_PER_BLOCK, math.ceil(len(stills) / (4 * max(n_workers, 1)))))
    runs, start = [], stills[0]
    for previous, number in zip(stills, stills[1:] + [None]):
        if number != previous + 1:
            runs.append((start, previous + 1))
            start = number
    return [(first, min(first + size, last)) for first, last in runs for first in range(first, last, size)]


def _rows_and_blocks_by_group(table: ReflectionTable, blocks: list[Block]):
    """``(rows, group blocks)`` for each group of experiments that share blocks (rows as indices)."""
    groups: dict[tuple[int, int], list[Block]] = {}
    for block in blocks:
        groups.setdefault(block.experiments, []).append(block)
    ids = np.asarray(table["id"])
    for (first, last), mine in groups.items():
        yield np.flatnonzero((ids >= first) & (ids < last)), mine


def _chunks(rows: np.ndarray, n_blocks: int, cells: int = 4_000_000):
    """``rows`` in pieces whose rows x blocks matrices stay below ``cells`` entries."""
    step = max(1, cells // max(n_blocks, 1))
    for i in range(0, len(rows), step):
        yield rows[i:i + step]


def split_across_blocks(table: ReflectionTable, blocks: list[Block]) -> ReflectionTable:
    """Cut reflections that fit in no block at the block ends they cross; ``partial_id`` = source row."""
    bbox = np.asarray(table["bbox"])
    counts = np.ones(table.nrows, np.int64)
    cut_rows, cut_frames = [], []
    for rows, mine in _rows_and_blocks_by_group(table, blocks):
        starts = np.array([b.start for b in mine])
        stops = np.array([b.stop for b in mine])
        for chunk in _chunks(rows, len(mine)):
            z0, z1 = bbox[chunk, 4:5], bbox[chunk, 5:6]
            whole = ((starts <= z0) & (z1 <= stops)).any(axis=1)
            split = chunk[~whole]
            inside = (stops > bbox[split, 4:5]) & (stops < bbox[split, 5:6])
            row_of_cut, block_of_cut = np.nonzero(inside)  # row-major: each row's cuts in frame order
            counts[split] += inside.sum(axis=1)
            cut_rows.append(split[row_of_cut])
            cut_frames.append(stops[block_of_cut])
    source = np.repeat(np.arange(table.nrows), counts)
    result = table.select(source)
    new_bbox = result["bbox"].copy()
    # Piece k of a row spans edges k..k+1 of [z0, cut frames..., z1].
    first_piece = np.concatenate([[0], np.cumsum(counts)[:-1]])
    edges_start = np.repeat(bbox[:, 4], counts).astype(np.int64)
    edges_stop = np.repeat(bbox[:, 5], counts).astype(np.int64)
    if cut_rows:
        rows_cut = np.concatenate(cut_rows)
        frames_cut = np.concatenate(cut_frames)
        order = np.lexsort((frames_cut, rows_cut))
        rows_cut, frames_cut = rows_cut[order], frames_cut[order]
        rank = np.arange(len(rows_cut)) - np.searchsorted(rows_cut, rows_cut)
        position = first_piece[rows_cut] + rank
        edges_stop[position] = frames_cut
        edges_start[position + 1] = frames_cut
    new_bbox[:, 4], new_bbox[:, 5] = edges_start, edges_stop
    result["bbox"] = new_bbox
    result["partial_id"] = source.astype(np.uint64)
    return result


def assign_to_blocks(table: ReflectionTable, blocks: list[Block]) -> np.ndarray:
    """Block index of every row (-1 for dont_integrate rows), the nearest block containing it whole."""
    assignment = np.full(table.nrows, -1, np.int64)
    skip = table.get_flags(Flags.dont_integrate)
    bbox = np.asarray(table["bbox"])
    for rows, mine in _rows_and_blocks_by_group(table, blocks):
        rows = rows[~skip[rows]]
        starts = np.array([b.start for b in mine])
        stops = np.array([b.stop for b in mine])
        centres = np.array([b.centre for b in mine])
        indices = np.array([b.index for b in mine])
        for chunk in _chunks(rows, len(mine)):
            z0, z1 = bbox[chunk, 4:5], bbox[chunk, 5:6]
            fits = (starts <= z0) & (stops >= z1)
            distance = np.where(fits, np.abs((z0 + z1) / 2.0 - centres), np.inf)
            assignment[chunk] = indices[np.argmin(distance, axis=1)]
    return assignment
