"""Per-block shoebox work: choosing and running the background model, copying pixels, processing.

Everything here runs inside one block task on a worker: it reads frames
one at a time, fills the block's shoeboxes and runs the compiled kernels
of :mod:`braggint.tasks` on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BraggintError
from ..io.images import ImageSource
from ..models.experiment import Experiment, ExperimentList
from ..models.flags import Flags
from ..models.profile import GaussianRSProfile
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn
from ..tasks import background as background_kernels
from ..tasks.extract import copy_frame
from ..tasks.shoebox_geometry import foreground_mask
from ..tasks.summation import PIXEL_COUNTS, summarise
from .timing import StageTimes

#: dials.integrate's fixed setting that is not a parameter of its command line.
VALID_FOREGROUND_THRESHOLD = 0.75


def choose_background(params, experiments: ExperimentList) -> str:
    """``Auto`` is glm when every panel counts photons (type contains PAD, gain 1), else simple."""
    algorithm = params.integration.background.algorithm
    if algorithm == "median":
        raise BraggintError("integration.background.algorithm=median was removed from DIALS (PR #2066) and is "
                            "not provided; use simple, glm, gmodel or null")
    if algorithm != "Auto":
        return algorithm
    counting = all("PAD" in panel.type and panel.gain == 1.0
                   for detector in experiments.unique("detector") for panel in detector.panels)
    return "glm" if counting else "simple"


def model_background(algorithm: str, shoeboxes: ShoeboxColumn, background_params, experiment: Experiment):
    """Run one background algorithm on the shoeboxes; returns ``(ok, extra columns)``."""
    n = len(shoeboxes)
    sb = shoeboxes
    if algorithm == "null":
        sb.background[:] = 0
        return np.ones(n, bool), {}
    if algorithm == "simple":
        simple = background_params.simple
        rejector = simple.outlier.algorithm
        first, second = {
            "null": (0.0, 0.0),
            "nsigma": (simple.outlier.nsigma.lower, simple.outlier.nsigma.upper),
            "truncated": (simple.outlier.truncated.lower, simple.outlier.truncated.upper),
            "normal": (float(simple.outlier.normal.min_pixels), 0.0),
            "plane": (simple.outlier.plane.fraction, simple.outlier.plane.n_sigma),
            "tukey": (simple.outlier.tukey.lower, simple.outlier.tukey.upper),
        }[rejector]
        ok, mean, mse, dispersion = background_kernels.simple_background(
            sb.data, sb.mask, sb.background, sb.offsets, sb.bbox,
            background_kernels.SIMPLE_MODELS.index(simple.model.algorithm),
            background_kernels.REJECTORS.index(rejector), first, second, simple.min_pixels)
        return ok, {"background.mean": mean, "background.mse": mse, "background.dispersion": dispersion}
    if algorithm == "glm":
        glm = background_params.glm
        ok, mean = background_kernels.glm_background(
            sb.data, sb.mask, sb.background, sb.offsets, sb.bbox,
            background_kernels.GLM_MODELS.index(glm.model.algorithm), glm.robust.tuning_constant,
            glm.min_pixels, 100)
        return ok, {"background.mean": mean}
    if algorithm == "gmodel":
        from ..io.background_model import cut_model

        gmodel = background_params.gmodel
        values = cut_model(gmodel.model, sb)
        ok, mean, scale = background_kernels.gmodel_background(
            sb.data, sb.mask, sb.background, sb.offsets, sb.bbox, values, gmodel.robust.algorithm,
            gmodel.min_pixels)
        return ok, {"background.mean": mean, "background.scale": scale}
    raise BraggintError(f"unknown background algorithm {algorithm!r}")


@dataclass
class Frame:
    """One image, per panel: raw counts as read, and the pixels usable before the counts are checked
    (static and lookup masks; none on an excluded frame).  The trusted range, pedestal and gain are
    applied per shoebox pixel as it is copied (:func:`braggint.tasks.extract.copy_frame`)."""

    raw: list[np.ndarray]
    usable: list[np.ndarray]


def read_frame(images: ImageSource, frame: int, excluded_frames: frozenset = frozenset(),
               lookup_mask: list[np.ndarray] | None = None) -> Frame:
    """Frame ``frame`` (0-based); every pixel of an excluded frame, and pixels False in the lookup mask,
    are untrusted."""
    raw = images.raw(frame + 1)
    usable = images.static_masks()
    if frame in excluded_frames:
        usable = [np.zeros_like(u) for u in usable]
    elif lookup_mask is not None:
        usable = [u & m for u, m in zip(usable, lookup_mask)]
    return Frame(raw, usable)


def fill_from_frame(experiment: Experiment, shoeboxes, frame_number: int, frame: Frame,
                    overloaded: np.ndarray) -> None:
    """Copy one frame into the shoeboxes whose z-range holds it; mark rows touching overloaded pixels.

    ``shoeboxes``: a :class:`ShoeboxColumn`, or any object with its ``panel``,
    ``bbox``, ``offsets``, ``data`` and ``mask`` arrays (the groups being
    filled carry no background).
    """
    for p, panel in enumerate(experiment.detector.panels):
        low, high = panel.trusted_range
        copy_frame(frame.raw[p], frame.usable[p], float(low), float(high), float(panel.pedestal),
                   float(panel.gain), frame_number, p, shoeboxes.panel, shoeboxes.bbox, shoeboxes.offsets,
                   shoeboxes.data, shoeboxes.mask, overloaded)


def process_shoeboxes(experiment: Experiment, profile: GaussianRSProfile, table: ReflectionTable,
                      shoeboxes: ShoeboxColumn, overloaded: np.ndarray, background_algorithm: str,
                      params, timing: StageTimes | None = None, corners=None) -> None:
    """Masks, background, centroid, summation and pixel counts of extracted shoeboxes (in place).

    ``timing`` (when given) gets the seconds of the ``background`` model and
    of the rest (``summation``: masks, centroids, sums and pixel counts).
    ``corners``: the shoeboxes' pixel-corner coordinates
    (:func:`~braggint.tasks.shoebox_geometry.corner_coordinates`), when
    the caller has them.
    """
    timing = StageTimes() if timing is None else timing
    with timing.stage("summation"):
        _mask_shoeboxes(experiment, profile, table, shoeboxes, overloaded, corners)
    with timing.stage("background"):
        ok, columns = model_background(background_algorithm, shoeboxes, params.integration.background, experiment)
    with timing.stage("summation"):
        table.set_flags(~ok, Flags.failed_during_background_modelling | Flags.dont_integrate)
        for name, values in columns.items():
            table[name] = values
        _centroids_and_sums(experiment, table, shoeboxes)


def _mask_shoeboxes(experiment: Experiment, profile: GaussianRSProfile, table: ReflectionTable,
                    shoeboxes: ShoeboxColumn, overloaded: np.ndarray, corners=None) -> None:
    """Foreground/background masks, and the flag of rows touching overloaded pixels."""
    foreground_mask(experiment, profile, shoeboxes, table["s1"], table["xyzcal.px"][:, 2], corners)
    table.set_flags(overloaded, Flags.overloaded)


def _centroids_and_sums(experiment: Experiment, table: ReflectionTable, sb: ShoeboxColumn) -> None:
    """Observed centroids (px and mm/rad), summation intensities, pixel counts and the flags of bad
    pixels (in place)."""
    n = table.nrows
    sums, sum_ok, xyz, variance, pixels = summarise(sb.data, sb.mask, sb.background, sb.offsets, sb.bbox)
    counted = dict(zip(PIXEL_COUNTS, pixels.T))
    table.set_flags(counted["invalid_background"] > 0, Flags.background_includes_bad_pixels)
    n_foreground = counted["all_foreground"]
    table.set_flags(counted["foreground"] < n_foreground, Flags.foreground_includes_bad_pixels)
    too_few = np.where(n_foreground > 0, counted["foreground"] / np.maximum(n_foreground, 1), 0.0)
    table.set_flags(too_few < VALID_FOREGROUND_THRESHOLD, Flags.dont_integrate)
    table["xyzobs.px.value"] = xyz
    table["xyzobs.px.variance"] = variance
    mm = np.zeros_like(xyz)
    for p in np.unique(table["panel"]):
        sel = table["panel"] == p
        mm[sel, :2] = experiment.detector[int(p)].px_to_mm(xyz[sel, :2])
    # A still has no rotation: its z coordinates in mm/rad are 0.
    dphi = 0.0 if experiment.is_still else experiment.scan.oscillation_rad[1]
    mm[:, 2] = 0.0 if experiment.is_still else experiment.scan.angle_from_frame(xyz[:, 2])
    table["xyzobs.mm.value"] = mm
    pixel_size = experiment.detector.pixel_sizes()[np.asarray(table["panel"], dtype=np.int64)]
    table["xyzobs.mm.variance"] = variance * np.column_stack([pixel_size**2, np.full(n, dphi**2)])

    for column, name in enumerate(("intensity.sum.value", "intensity.sum.variance", "background.sum.value",
                                   "background.sum.variance")):
        table[name] = sums[:, column].copy()
    table.set_flags(sum_ok, Flags.integrated_sum)
    table.set_flags(~sum_ok, Flags.failed_during_summation)
    for name in PIXEL_COUNTS[:4]:
        table[f"num_pixels.{name}"] = counted[name].copy()
