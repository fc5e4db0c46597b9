"""Filling a block's shoeboxes from its images, frame by frame, in parts ready to process.

A rotation block reads its frames once, in order (backwards for a block
that reads backwards, see :class:`.blocks.Block`).  Its reflections are
filled in groups: those whose reading starts on the same frame and whose
depths are alike, each group's shoeboxes allocated when it starts and
freed once processed.  Finished groups are joined into parts of at least
:data:`PROCESS_BATCH_VOXELS` voxels, in the order they finish.  A group
holds only counts and masks while it fills: the background, zero until it
is modelled, is made when its part is joined, which takes 4 of 9 bytes a
voxel out of the groups filling at once and out of the join's copy
(sweep400, three alternating runs each: block peak 656-678 -> 620-626 MB
and first pass 7.4-7.9 -> 6.9-7.1 s on one worker, block peaks 432-440 ->
407-425 MB on two).  (Making
each part's column whole from the start, for its groups to fill slices
of, saves the join's copy but holds up to 10 parts' memory while their
first groups fill, 190 MB at 400 2M-like images: blocks then read their
frames 2x slower, their fresh image buffers no longer reusing freed
memory.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.images import READ_AHEAD_IMAGES, ImageSource, load_mask_file
from ..models.experiment import ExperimentList
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn, bbox_volume, ragged_offsets
from .heap import tune_heap
from .shoebox_processing import fill_from_frame, read_frame
from .timing import StageTimes

#: Finished groups of reflections wait until they hold this many voxels (~18 MB) and are then processed
#: together: every stage has a fixed cost per call, which small groups (tens of rows) would pay many times.
PROCESS_BATCH_VOXELS = 2_000_000


@dataclass(eq=False)
class Part:
    """Reflections of a block processed together: rows of the block table, their shoeboxes and which of
    them touch overloaded pixels."""

    rows: np.ndarray
    shoeboxes: ShoeboxColumn
    overloaded: np.ndarray


@dataclass(eq=False)
class _Group:
    """Reflections whose reading starts on the same frame, filled together: rows ``rows`` of the block table
    with a :class:`ShoeboxColumn`'s ``panel``, ``bbox``, ``offsets``, ``data`` and ``mask`` (no background
    yet), and which of them touch overloaded pixels."""

    rows: np.ndarray
    panel: np.ndarray
    bbox: np.ndarray
    offsets: np.ndarray
    data: np.ndarray
    mask: np.ndarray
    overloaded: np.ndarray
    done_at: int  # the frame whose reading completes them (0-based)

    @classmethod
    def empty(cls, table: ReflectionTable, rows: np.ndarray, done_at: int) -> "_Group":
        """Rows ``rows`` of the block table with zeroed counts and masks."""
        bbox = np.asarray(table["bbox"][rows], np.int32).reshape(-1, 6)
        offsets = ragged_offsets(bbox_volume(bbox))
        voxels = int(offsets[-1])
        return cls(rows, np.asarray(table["panel"][rows], np.uint32), bbox, offsets, np.zeros(voxels, np.float32),
                   np.zeros(voxels, np.uint8), np.zeros(len(rows), bool), done_at)


def _groups_by_first_read(table: ReflectionTable, backwards: bool) -> dict[int, list[np.ndarray]]:
    """Rows of the block grouped by the first frame of their bbox that the block reads (the last one when it
    reads backwards) and then by depth (frames, in powers of two), so that the members of a group finish
    within a factor of two of each other and a few long reflections do not keep many short ones in
    memory."""
    bbox = table["bbox"]
    first_read = (bbox[:, 5] - 1 if backwards else bbox[:, 4]).astype(np.int64)
    depth_class = np.ceil(np.log2(np.maximum(bbox[:, 5] - bbox[:, 4], 1))).astype(np.int64)
    # One stable sort by frame, then class (rows ascending within each), cut where either changes: a block of
    # 200 frames' 36 k rows 18-19 -> 4 ms against a scan of the rows per frame (2026-12-05).
    order = np.lexsort((depth_class, first_read))
    if len(order) == 0:
        return {}
    frame, depth = first_read[order], depth_class[order]
    cuts = np.flatnonzero((frame[1:] != frame[:-1]) | (depth[1:] != depth[:-1])) + 1
    groups: dict[int, list[np.ndarray]] = {}
    for start, rows in zip(np.concatenate(([0], cuts)).tolist(), np.split(order, cuts)):
        groups.setdefault(int(frame[start]), []).append(rows)
    return groups


def filled_parts(job, timing: StageTimes, voxels: int = PROCESS_BATCH_VOXELS):
    """The parts of a rotation block (``job``: a :class:`.block_tasks.BlockJob`), each yielded as soon as
    the frames its reflections need are read and it holds ``voxels`` voxels (the last may hold fewer)."""
    waiting: list[_Group] = []
    held = 0
    for group in _filled_groups(job, timing):
        waiting.append(group)
        held += len(group.data)
        if held >= voxels:
            yield _joined(waiting)
            waiting, held = [], 0
    if waiting:
        yield _joined(waiting)


def _filled_groups(job, timing: StageTimes):
    """Each group of a rotation block's reflections, yielded once the frames it needs are read."""
    table = job.table
    first = job.experiments[job.block.experiments[0]]
    images = ImageSource(first.imageset, first.detector, first.scan.image_range[0], reuse_frames=True)
    tune_heap(images.decoded_frame_bytes())  # the block task's heap, before its first frame and part
    lookup = load_mask_file(job.lookup_mask_path, first.detector) if job.lookup_mask_path else None
    backwards = job.block.backwards
    starts = _groups_by_first_read(table, backwards)
    alive: list[_Group] = []
    frames = list(job.block.frames())
    for frame_number in frames[:READ_AHEAD_IMAGES]:
        images.read_ahead(frame_number + 1)  # image numbers are 1-based
    try:
        for position, frame_number in enumerate(frames):
            if position + READ_AHEAD_IMAGES < len(frames):
                images.read_ahead(frames[position + READ_AHEAD_IMAGES] + 1)
            for rows in starts.get(frame_number, []):
                bbox = table["bbox"][rows]
                done_at = int(bbox[:, 4].min()) if backwards else int(bbox[:, 5].max()) - 1
                alive.append(_Group.empty(table, rows, done_at))
            if not alive:
                continue
            with timing.stage("read"):
                frame = read_frame(images, frame_number, job.excluded_frames, lookup)
            with timing.stage("extract"):
                for group in alive:
                    fill_from_frame(first, group, frame_number, frame, group.overloaded)
            for group in [g for g in alive if g.done_at == frame_number]:
                alive.remove(group)
                yield group
    finally:
        images.close()


def _joined(groups: list[_Group]) -> Part:
    """The filled ``groups`` as one part, in their order, with a zeroed background (a lone group's counts and
    masks are not copied)."""
    def joined(name: str) -> np.ndarray:
        arrays = [getattr(group, name) for group in groups]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    sizes = np.concatenate([np.diff(group.offsets) for group in groups])
    offsets = ragged_offsets(sizes)
    shoeboxes = ShoeboxColumn(joined("panel"), joined("bbox"), np.ones(len(sizes), bool), offsets, joined("data"),
                              joined("mask"), np.zeros(int(offsets[-1]), np.float32))
    return Part(joined("rows"), shoeboxes, joined("overloaded"))


def filled_stills(job, timing: StageTimes):
    """The reflections of each still of a block, yielded once its image is read (frame 0 of each)."""
    table = job.table
    ids = np.asarray(table["id"])
    images_of_stills = still_image_numbers(job.experiments)
    for number in range(*job.block.experiments):
        rows = np.flatnonzero(ids == number)
        if len(rows) == 0:
            continue
        experiment = job.experiments[number]
        group = _Group.empty(table, rows, 0)
        with timing.stage("read"):
            images = ImageSource(experiment.imageset, experiment.detector, 1)
            tune_heap(images.decoded_frame_bytes())  # the block task's heap, before its first part
            try:
                lookup = load_mask_file(job.lookup_mask_path, experiment.detector) if job.lookup_mask_path else None
                frame = read_frame(images, images_of_stills[number] - 1, frozenset(), lookup)
            finally:
                images.close()
        with timing.stage("extract"):
            fill_from_frame(experiment, group, 0, frame, group.overloaded)
        yield _joined([group])


def still_image_numbers(experiments: ExperimentList) -> list[int]:
    """1-based image of each still in its image set (1 for rotation experiments).

    Stills sharing an image set with as many images as stills take its
    images in order; otherwise (several lattices on one image) image 1.
    """
    sharing: dict[int, list[int]] = {}
    for number, experiment in enumerate(experiments):
        sharing.setdefault(id(experiment.imageset), []).append(number)
    image = [1] * len(experiments)
    for numbers in sharing.values():
        imageset = experiments[numbers[0]].imageset
        n_images = len(imageset.images or []) or len(imageset.single_file_indices or []) if imageset else 0
        if n_images == len(numbers):
            for position, number in enumerate(numbers):
                image[number] = position + 1
    return image
