"""Integration of rotation sweeps: predictions -> shoeboxes -> background, centroid, summation.

The work of one experiment over a range of frames is :func:`integrate_block`:
it reads those frames one at a time, copies pixels into the shoeboxes of
the reflections assigned to the block and processes them with the
compiled kernels of :mod:`braggint.tasks`.  :func:`integrate` prepares the
predictions and profile models, runs the blocks and applies the
per-reflection corrections.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import BraggintError
from ..io.images import ImageSource
from ..models.experiment import Experiment, ExperimentList
from ..models.flags import Flags, MaskCode
from ..models.profile import GaussianRSProfile
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn
from ..tasks import background as background_kernels
from ..tasks.corrections import detector_efficiency, lorentz_polarization
from ..tasks.extract import copy_frame, rows_on_frame
from ..tasks.shoebox_geometry import (
    bounding_boxes,
    foreground_mask,
    local_frames,
    partiality,
)
from ..tasks.summation import centroids, pixel_counts, summation
from .predict import predict_reflections
from .profile_fitting import fit_profiles, learn_profiles
from .profile_model import estimate_profile, profile_from_parameters
from .reference import mask_neighbouring_pixels, matched_reference, split_reference

log = logging.getLogger("braggint")

#: dials.integrate's fixed settings that are not parameters of its command line.
SIGMA_B_MULTIPLIER = 2.0
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


def extract_shoeboxes(experiment: Experiment, table: ReflectionTable, frames: range,
                      images: ImageSource) -> tuple[ShoeboxColumn, np.ndarray]:
    """Shoeboxes of every row of ``table`` read from ``frames``; also the overloaded rows."""
    shoeboxes = ShoeboxColumn.empty_boxes(table["panel"], table["bbox"], allocate=True)
    overloaded = np.zeros(table.nrows, bool)
    bbox = shoeboxes.bbox
    panel_of_row = table["panel"].astype(np.int64)
    for frame in frames:
        image_number = frame + 1
        raw = images.raw(image_number)
        good = images.mask(image_number, raw)
        corrected = images.corrected_from_raw(raw)
        for p, panel in enumerate(experiment.detector.panels):
            rows = rows_on_frame(bbox, panel_of_row, frame, p)
            if len(rows) == 0:
                continue
            copy_frame(corrected[p], good[p], frame, rows, bbox, shoeboxes.offsets, shoeboxes.data, shoeboxes.mask)
            over = raw[p] > panel.trusted_range[1]
            if over.any():
                ys, xs = np.nonzero(over)
                for r in rows:
                    x0, x1, y0, y1 = bbox[r, :4]
                    if np.any((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)):
                        overloaded[r] = True
    return shoeboxes, overloaded


def process_shoeboxes(experiment: Experiment, profile: GaussianRSProfile, table: ReflectionTable,
                      shoeboxes: ShoeboxColumn, overloaded: np.ndarray, background_algorithm: str,
                      params) -> None:
    """Masks, background, centroid, summation and pixel counts of extracted shoeboxes (in place)."""
    n = table.nrows
    z = table["xyzcal.px"][:, 2]
    foreground_mask(experiment, profile, shoeboxes, table["s1"], z)
    table.set_flags(overloaded, Flags.overloaded)
    sb = shoeboxes
    rows = sb.voxel_rows()
    valid = (sb.mask & MaskCode.Valid) != 0
    fg = (sb.mask & MaskCode.Foreground) != 0
    bg = (sb.mask & MaskCode.Background) != 0
    table.set_flags(np.bincount(rows[bg & ~valid], minlength=n) > 0, Flags.background_includes_bad_pixels)
    table.set_flags(np.bincount(rows[fg & ~valid], minlength=n) > 0, Flags.foreground_includes_bad_pixels)
    n_fg = np.bincount(rows[fg], minlength=n)
    n_fg_valid = np.bincount(rows[fg & valid], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        too_few = np.where(n_fg > 0, n_fg_valid / np.maximum(n_fg, 1), 0.0) < VALID_FOREGROUND_THRESHOLD
    table.set_flags(too_few, Flags.dont_integrate)

    ok, columns = model_background(background_algorithm, sb, params.integration.background, experiment)
    table.set_flags(~ok, Flags.failed_during_background_modelling | Flags.dont_integrate)
    for name, values in columns.items():
        table[name] = values

    xyz, variance = centroids(sb.data, sb.mask, sb.background, sb.offsets, sb.bbox)
    table["xyzobs.px.value"] = xyz
    table["xyzobs.px.variance"] = variance
    mm = np.zeros_like(xyz)
    for p in np.unique(table["panel"]):
        sel = table["panel"] == p
        mm[sel, :2] = experiment.detector[int(p)].px_to_mm(xyz[sel, :2])
    scan = experiment.scan
    mm[:, 2] = scan.angle_from_frame(xyz[:, 2])
    table["xyzobs.mm.value"] = mm
    pixel_size = np.array([experiment.detector[int(p)].pixel_size for p in table["panel"]]).reshape(-1, 2)
    table["xyzobs.mm.variance"] = variance * np.column_stack([pixel_size**2, np.full(n, scan.oscillation_rad[1] ** 2)])

    intensity, var, bg_sum, bg_var, sum_ok = summation(sb.data, sb.mask, sb.background, sb.offsets)
    table["intensity.sum.value"] = intensity
    table["intensity.sum.variance"] = var
    table["background.sum.value"] = bg_sum
    table["background.sum.variance"] = bg_var
    table.set_flags(sum_ok, Flags.integrated_sum)
    table.set_flags(~sum_ok, Flags.failed_during_summation)
    counts = pixel_counts(sb.mask, sb.offsets)
    for name, values in zip(("valid", "background", "background_used", "foreground"), counts):
        table[f"num_pixels.{name}"] = values.astype(np.int32)


def integrate_block(experiment: Experiment, profile: GaussianRSProfile, table: ReflectionTable, frames: range,
                    background_algorithm: str, params, keep_shoeboxes: bool = False) -> ReflectionTable:
    """Integrate the rows of ``table`` (all inside ``frames``) on those frames of the experiment's images."""
    images = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0])
    try:
        shoeboxes, overloaded = extract_shoeboxes(experiment, table, frames, images)
    finally:
        images.close()
    process_shoeboxes(experiment, profile, table, shoeboxes, overloaded, background_algorithm, params)
    if params.integration.profile.fitting:
        fitting = params.profile.gaussian_rs.fitting
        if table.get_flags(Flags.reference_spot).any():
            model = learn_profiles(experiment, profile, table, shoeboxes, fitting)
            fit_profiles(experiment, table, shoeboxes, model, params.integration.profile.variance_model)
        else:
            log.info("Skipping profile modelling - no reference profiles given")
    if keep_shoeboxes:
        table["shoebox"] = shoeboxes
    return table


def prepare(experiments: ExperimentList, reference: ReflectionTable | None, params,
            reference_path: str = "reference"):
    """Predictions of every experiment with profile models, bbox, zeta and partiality.

    Returns ``(predicted table, profiles per experiment, rubbish rows)``.
    """
    rubbish = ReflectionTable()
    matched = None
    if reference is not None:
        reference, rubbish = split_reference(reference, reference_path)
        mask_neighbouring_pixels(reference, experiments)
    log.info("Predicting reflections")
    predicted = predict_reflections(experiments, params.prediction)
    log.info("Predicted %d reflections", predicted.nrows)
    if reference is not None:
        matched = matched_reference(predicted, reference, reference_path)
    gaussian_rs = params.profile.gaussian_rs
    profiles = []
    for number, experiment in enumerate(experiments):
        mine = matched.select(matched["id"] == number) if matched is not None else None
        if params.create_profile_model and mine is not None and mine.nrows:
            log.info("Computing profile model for experiment %d", number)
            profiles.append(estimate_profile(experiment, mine, gaussian_rs))
        else:
            profiles.append(profile_from_parameters(experiment, gaussian_rs))
    zeta = np.zeros(predicted.nrows)
    bbox = np.zeros((predicted.nrows, 6), np.int32)
    part = np.zeros(predicted.nrows)
    for number, (experiment, profile) in enumerate(zip(experiments, profiles)):
        rows = predicted["id"] == number
        z = predicted["xyzcal.px"][rows, 2]
        s1 = predicted["s1"][rows]
        zeta[rows] = local_frames(experiment, s1, z).zeta
        bbox[rows] = bounding_boxes(experiment, profile, s1, z, predicted["panel"][rows], SIGMA_B_MULTIPLIER)
        part[rows] = partiality(experiment, profile, zeta[rows], z, bbox[rows])
    predicted["zeta"] = zeta
    predicted["bbox"] = bbox
    predicted["partiality"] = part
    predicted["partial_id"] = np.arange(predicted.nrows, dtype=np.uint64)
    predicted.set_flags(np.abs(zeta) < params.integration.filter.min_zeta, Flags.dont_integrate)
    return predicted, profiles, rubbish


def apply_corrections(experiments: ExperimentList, table: ReflectionTable) -> None:
    """``lp`` for every row and ``qe`` when the detector has an attenuation coefficient."""
    lp = np.zeros(table.nrows)
    qe = np.zeros(table.nrows)
    with_qe = False
    for number, experiment in enumerate(experiments):
        rows = table["id"] == number
        beam = experiment.beam
        axis = experiment.goniometer.rotation_axis_lab if experiment.goniometer is not None else None
        lp[rows] = lorentz_polarization(table["s1"][rows], beam.s0, axis, beam.polarization_normal,
                                        beam.polarization_fraction)
        panel = experiment.detector[0]
        if panel.mu > 0:
            with_qe = True
            for p in np.unique(table["panel"][rows]):
                sel = rows & (table["panel"] == p)
                this = experiment.detector[int(p)]
                qe[sel] = detector_efficiency(table["s1"][sel], this.normal, this.mu, this.thickness)
    table["lp"] = lp
    if with_qe:
        table["qe"] = qe


def integrate(experiments: ExperimentList, reference: ReflectionTable | None, params,
              reference_path: str = "reference") -> tuple[ReflectionTable, list[GaussianRSProfile]]:
    """Integrate every experiment; returns the output table (DIALS's row rules) and the profiles."""
    start = time.perf_counter()
    predicted, profiles, rubbish = prepare(experiments, reference, params, reference_path)
    algorithm = choose_background(params, experiments)
    log.info("Using %s background modelling", algorithm)
    keep = params.integration.debug.output and not params.integration.debug.separate_files
    to_do = ~predicted.get_flags(Flags.dont_integrate)
    results = []
    for number, (experiment, profile) in enumerate(zip(experiments, profiles)):
        rows = np.flatnonzero(to_do & (predicted["id"] == number))
        block = predicted.select(rows)
        frames = range(*experiment.scan.array_range)
        log.info("Integrating %d reflections of experiment %d on frames %d-%d", len(rows), number,
                 frames.start, frames.stop - 1)
        results.append((rows, integrate_block(experiment, profile, block, frames, algorithm, params, keep)))
    table = predicted
    for rows, result in results:
        for name in result.keys():
            if name not in table:
                template = result[name]
                if name == "shoebox":
                    continue
                table[name] = np.zeros((table.nrows,) + np.shape(template)[1:], dtype=np.asarray(template).dtype)
            if name != "shoebox":
                table[name][rows] = result[name]
    apply_corrections(experiments, table)
    integrated = table.get_flags(Flags.integrated, all=False)
    if keep:
        table = table.select(integrated)
        table["shoebox"] = ShoeboxColumn.concatenate([
            r["shoebox"].select(r.get_flags(Flags.integrated, all=False)) for _, r in results])
    else:
        table = table.select(integrated)
    if params.output.include_bad_reference and rubbish.nrows:
        rubbish.set_flags(np.ones(rubbish.nrows, bool), Flags.bad_reference)
        rubbish.unset_flags(np.ones(rubbish.nrows, bool), Flags.integrated)
        table.extend(rubbish)
    log.info("Integrated %d reflections (%d by summation) in %.1f s", table.nrows,
             int(table.get_flags(Flags.integrated_sum).sum()), time.perf_counter() - start)
    return table, profiles
