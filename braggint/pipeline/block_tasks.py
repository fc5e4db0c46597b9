"""The two task kinds of the integration graph, one of each per block.

``model_block`` (first pass) reads the block's frames, fills and processes
its shoeboxes (masks, background, centroids, summation) and sums the
reference profiles of its strong reflections; ``fit_block`` (second pass)
fits every reflection of the block with the finished reference profiles,
reading the shoeboxes back from the work store instead of the images.
Both write their results to the store first and return small objects, so
a resumed run skips finished blocks and a failed block loses only itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import psutil

from ..io.images import ImageSource, load_mask_file
from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.profile import GaussianRSProfile
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn
from .blocks import Block
from .profile_fitting import ReferenceProfiles, accumulate_profiles, fit_profiles
from .shoebox_processing import extract_shoeboxes, process_shoeboxes
from .work_store import WorkStore


@dataclass
class BlockJob:
    """Everything one block task needs (sent to a worker, so plain picklable data)."""

    block: Block
    experiments: ExperimentList
    profiles: list[GaussianRSProfile]
    table: ReflectionTable
    background_algorithm: str
    params: object
    store_path: str
    store_digest: str
    excluded_frames: frozenset = frozenset()
    lookup_mask_path: str | None = None


@dataclass
class BlockReport:
    """What a finished block tells the parent (for the log and the profile reduction)."""

    block: int
    n_reflections: int
    seconds: dict = field(default_factory=dict)
    peak_memory: int = 0
    profile_sums: dict = field(default_factory=dict)  # experiment -> (sums, counts)
    resumed: bool = False


def _store(job: BlockJob) -> WorkStore:
    return WorkStore(job.store_path, job.store_digest)


def model_block(job: BlockJob) -> BlockReport:
    """First pass over one block; results in the store, reference-profile sums returned."""
    store = _store(job)
    index = job.block.index
    report = BlockReport(index, job.table.nrows)
    fitting = job.params.integration.profile.fitting
    if store.has(index, "modelled.refl"):
        report.resumed = True
        if fitting and store.has(index, "profiles.npz"):
            arrays = store.load_arrays(index, "profiles.npz")
            report.profile_sums = {int(k.split("_")[1]): (arrays[k], arrays["counts_" + k.split("_")[1]])
                                   for k in arrays if k.startswith("sums_")}
        return report
    start = time.perf_counter()
    table = job.table
    first = job.experiments[job.block.experiments[0]]
    images = ImageSource(first.imageset, first.detector, first.scan.image_range[0])
    lookup = load_mask_file(job.lookup_mask_path, first.detector) if job.lookup_mask_path else None
    try:
        shoeboxes, overloaded = extract_shoeboxes(first, table, range(job.block.start, job.block.stop), images,
                                                  job.excluded_frames, lookup)
    finally:
        images.close()
    report.seconds["read and extract"] = time.perf_counter() - start
    start = time.perf_counter()
    pieces = []
    for number in np.unique(table["id"]) if table.nrows else []:
        rows = np.flatnonzero(table["id"] == number)
        part, boxes = table.select(rows), shoeboxes.select(rows)
        experiment, profile = job.experiments[int(number)], job.profiles[int(number)]
        process_shoeboxes(experiment, profile, part, boxes, overloaded[rows], job.background_algorithm, job.params)
        if fitting and part.get_flags(Flags.reference_spot).any():
            report.profile_sums[int(number)] = accumulate_profiles(experiment, profile, part, boxes,
                                                                   job.params.profile.gaussian_rs.fitting)
        pieces.append((rows, part, boxes))
    table, shoeboxes = _reassemble(table, shoeboxes, pieces)
    report.seconds["process"] = time.perf_counter() - start
    start = time.perf_counter()
    if fitting or job.params.integration.debug.output:
        store.save_shoeboxes(index, shoeboxes)
    if report.profile_sums:
        arrays = {}
        for number, (sums, counts) in report.profile_sums.items():
            arrays[f"sums_{number}"], arrays[f"counts_{number}"] = sums, counts
        store.save_arrays(index, "profiles.npz", **arrays)
    store.save_table(index, "modelled.refl", table)
    report.seconds["write"] = time.perf_counter() - start
    report.peak_memory = _peak_memory()
    return report


def fit_block(job: BlockJob, references: dict[int, ReferenceProfiles]) -> BlockReport:
    """Second pass over one block: profile fitting from the stored shoeboxes."""
    store = _store(job)
    index = job.block.index
    report = BlockReport(index, job.table.nrows)
    if store.has(index, "integrated.refl"):
        report.resumed = True
        return report
    start = time.perf_counter()
    table = store.load_table(index, "modelled.refl")
    shoeboxes = store.load_shoeboxes(index)
    pieces = []
    for number in np.unique(table["id"]) if table.nrows else []:
        rows = np.flatnonzero(table["id"] == number)
        part, boxes = table.select(rows), shoeboxes.select(rows)
        if int(number) in references:
            fit_profiles(job.experiments[int(number)], part, boxes, references[int(number)],
                         job.params.integration.profile.variance_model)
        pieces.append((rows, part, boxes))
    table, _ = _reassemble(table, shoeboxes, pieces)
    store.save_table(index, "integrated.refl", table)
    report.seconds["profile fitting"] = time.perf_counter() - start
    report.peak_memory = _peak_memory()
    return report


def _reassemble(table: ReflectionTable, shoeboxes, pieces):
    """Put per-experiment pieces back in the block's row order."""
    if len(pieces) == 1 and len(pieces[0][0]) == table.nrows:
        return pieces[0][1], pieces[0][2]
    if not pieces:
        return table, shoeboxes
    order = np.argsort(np.concatenate([rows for rows, _, _ in pieces]), kind="stable")
    merged = ReflectionTable(0, dict(table.identifiers))
    for _, part, _ in pieces:
        merged.extend(part)
    boxes = ShoeboxColumn.concatenate([b for _, _, b in pieces])
    return merged.select(order), boxes.select(order)


def _peak_memory() -> int:
    """Peak resident memory of this process (bytes)."""
    info = psutil.Process().memory_info()
    return int(getattr(info, "peak_wset", 0) or _linux_peak() or info.rss)


def _linux_peak() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
