"""Choosing which images are integrated: ``scan_range`` and ``exclude_images``.

``scan_range=a,b`` is in 0-based frame space: frames [a, b), images a+1..b.
``exclude_images`` lists 1-based image numbers whose pixels are all treated
as invalid; the scan's ``valid_image_ranges`` records what remains.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from ..errors import ParameterError
from ..models.experiment import Experiment, ExperimentList
from ..models.reflection_table import ReflectionTable

log = logging.getLogger("braggint")


def slice_experiment(experiment: Experiment, first: int, last: int) -> Experiment:
    """A copy of ``experiment`` restricted to frames [first, last) (0-based), models sliced to match."""
    scan = experiment.scan
    a0, a1 = scan.array_range
    if not a0 <= first < last <= a1:
        raise ParameterError(f"scan_range={first},{last} lies outside the scan's frames {a0}..{a1}")
    sliced = copy.copy(experiment)
    new_scan = copy.deepcopy(scan)
    offset = first - a0
    new_scan.image_range = (first + 1, last)
    new_scan.oscillation = (scan.oscillation[0] + offset * scan.oscillation[1], scan.oscillation[1])
    new_scan.exposure_time = scan.exposure_time[offset:offset + last - first]
    new_scan.epochs = scan.epochs[offset:offset + last - first]
    sliced.scan = new_scan
    crystal = experiment.crystal
    if crystal is not None and crystal.A_at_scan_points is not None:
        sliced.crystal = copy.copy(crystal)
        sliced.crystal.A_at_scan_points = crystal.A_at_scan_points[offset:offset + last - first + 1]
    return sliced


def apply_scan_ranges(experiments: ExperimentList, reference: ReflectionTable | None, scan_ranges
                      ) -> tuple[ExperimentList, ReflectionTable | None]:
    """One experiment per (experiment, range); the reference spots copied to each, ids renumbered."""
    if not scan_ranges:
        return experiments, reference
    if len(experiments.unique("imageset")) != 1:
        raise ParameterError("scan_range works on experiment lists with a single image set")
    result = ExperimentList(history=list(experiments.history))
    pieces = []
    for first, last in scan_ranges:
        for number, experiment in enumerate(experiments):
            new_id = len(result)
            sliced = slice_experiment(experiment, first, last)
            if len(scan_ranges) > 1 and experiment.identifier:
                sliced.identifier = f"{experiment.identifier}-{first}-{last}"
            result.append(sliced)
            if reference is not None:
                part = reference.select(reference["id"] == number)
                part["id"] = np.full(part.nrows, new_id, np.int32)
                pieces.append(part)
    log.info("scan_range: %d experiment(s) from %d range(s)", len(result), len(scan_ranges))
    if reference is None:
        return result, None
    for part in pieces:
        part.identifiers = {}
    merged = ReflectionTable.concatenate(pieces)
    merged.identifiers = {i: e.identifier for i, e in enumerate(result) if e.identifier}
    return result, merged


def excluded_frames(experiments: ExperimentList, image_numbers) -> frozenset:
    """0-based frames of the excluded images; records the remaining ranges in each scan."""
    if not image_numbers:
        return frozenset()
    excluded = {int(n) - 1 for n in image_numbers}
    for experiment in experiments:
        first, last = experiment.scan.image_range
        ranges, start = [], None
        for image in range(first, last + 1):
            if image - 1 not in excluded and start is None:
                start = image
            if (image - 1 in excluded or image == last) and start is not None:
                ranges.append([start, image if image - 1 not in excluded else image - 1])
                start = None
        experiment.scan.valid_image_ranges[experiment.identifier or "0"] = ranges
    log.info("Excluding images %s", ", ".join(str(n) for n in sorted(image_numbers)))
    return frozenset(excluded)
