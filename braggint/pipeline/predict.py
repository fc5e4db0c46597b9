"""Prediction of every experiment into one DIALS-layout reflection table."""

from __future__ import annotations

import numpy as np

from ..errors import BraggintError
from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from ..tasks.predict import predict_scan_varying, predict_static, predict_still


def predict_reflections(experiments: ExperimentList, prediction) -> ReflectionTable:
    """Predicted reflections of all experiments (``prediction`` = the params scope).

    Columns: miller_index, id, imageset_id, panel, flags (predicted), entering,
    s1, xyzcal.mm (mm, mm, rad), xyzcal.px (px, px, 0-based frame), d.
    """
    imagesets = {id(imageset): index for index, imageset in enumerate(experiments.unique("imageset"))}
    pieces = []
    for number, experiment in enumerate(experiments):
        if experiment.is_still:
            rays, delpsi = predict_still(experiment, d_min=prediction.d_min, d_max=prediction.d_max)
            pieces.append(_prediction_rows(number, experiment, imagesets, rays, delpsi))
            continue
        predict = predict_static
        if experiment.crystal.is_scan_varying and not prediction.force_static:
            if len(experiment.crystal.A_at_scan_points) != experiment.scan.num_images + 1:
                raise BraggintError(
                    f"experiment {number}: the crystal has {len(experiment.crystal.A_at_scan_points)} scan points "
                    f"but the scan has {experiment.scan.num_images} images (expected one more)")
            predict = predict_scan_varying
        rays = predict(experiment, d_min=prediction.d_min, d_max=prediction.d_max, padding_deg=prediction.padding)
        pieces.append(_prediction_rows(number, experiment, imagesets, rays))
    return ReflectionTable.concatenate(pieces)


def _prediction_rows(number: int, experiment, imagesets: dict[int, int], rays, delpsi=None) -> ReflectionTable:
    """The table rows of one experiment's predictions (``delpsical.rad`` for stills)."""
    n = len(rays.d)
    part = ReflectionTable(n, {number: experiment.identifier} if experiment.identifier else {})
    part["miller_index"] = rays.miller_index
    part["id"] = np.full(n, number, np.int32)
    imageset_id = imagesets[id(experiment.imageset)] \
        if experiment.imageset is not None else 0
    part["imageset_id"] = np.full(n, imageset_id, np.int32)
    part["panel"] = rays.panel.astype(np.uint64)
    part["flags"] = np.full(n, int(Flags.predicted), np.uint64)
    part["entering"] = rays.entering
    part["s1"] = rays.s1
    part["xyzcal.mm"] = np.column_stack([rays.xy_mm, rays.phi])
    part["xyzcal.px"] = np.column_stack([rays.xy_px, rays.z_px])
    part["d"] = rays.d
    if delpsi is not None:
        part["delpsical.rad"] = delpsi
    return part
