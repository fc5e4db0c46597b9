"""Serial-crystallography stills with known truth: many crystals, one shot each (``stills=N``).

Each shot is a randomly oriented crystal in a beam with a Gaussian
spectrum (relative width ``bandwidth``), beam divergence and mosaic
spread.  For every reflection near the Ewald sphere, trial photons get an
incident direction (divergence) and a mosaic block (a small lattice
rotation); the Laue condition then fixes the wavelength each trial needs,
and the spectrum's density at that wavelength (relative to its peak) is
the trial's weight.  The mean weight is the reflection's partiality: the
share of its full intensity the shot records.  Recorded photons are
Poisson(full x partiality), each following a trial drawn in proportion to
its weight, along ``s1 = s0' + q'`` to the detector.  Nothing here uses
the integrator's prediction or profile model.

With ``kapton=True`` a tape under the crystal absorbs each photon with
the probability its path through the tape gives (:mod:`braggint.tasks.kapton`).

Truth (``truth.refl``): every reflection with partiality above 1e-4, with
``intensity.true`` = expected recorded photons before any tape absorption
(x gain), ``partiality.true`` and the photon centroid.  Lengths in mm, angles in radians unless named.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from ..io.expt import experiments_from_dict, write_experiments
from ..io.refl import write_reflections
from ..models.reflection_table import ReflectionTable
from ..tasks.kapton import kapton_attenuation_length, kapton_path_lengths
from ..tasks.predict import Predictions, candidate_indices, systematically_absent
from . import images as image_writer
from .dataset import (
    SimulationResult,
    background_map,
    expected_intensities,
    experiment_document,
    random_orientation,
    real_space_vectors,
    truth_rows,
)
from .physics import rotate
from .spec import SimulationSpec
from .spotfinder import StreamingSpotFinder, spot_table

log = logging.getLogger("braggint")

#: The tape of ``kapton=True``: height above it, thickness, half width (mm) and tilt (degrees).
KAPTON_TAPE = (0.02, 0.05, 1.5875, 1.15)
#: Trial photons per reflection used to estimate its partiality and to shape its spot.
TRIALS = 256
#: Reflections whose angular distance from the sphere exceeds this many spreads are not drawn.
SPREAD_LIMIT = 6.0


def stills_document(spec: SimulationSpec, orientations: list[np.ndarray]) -> dict:
    """The .expt JSON: one experiment per shot, each with its own one-image ImageSet, no scan or goniometer."""
    rotation = experiment_document(spec.replace(orientation=tuple(np.eye(3).ravel())), np.random.default_rng(0))
    names = [spec.template.replace("#####", f"{k + 1:05d}") for k in range(spec.stills)]
    return {
        "__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "identifier": f"braggint-still-{spec.seed}-{k}", "beam": 0,
                        "detector": 0, "crystal": k, "imageset": k} for k in range(spec.stills)],
        "imageset": [{"__id__": "ImageSet", "images": [name], "mask": None, "gain": None, "pedestal": None,
                      "dx": None, "dy": None, "params": {}} for name in names],
        "beam": rotation["beam"],
        "detector": rotation["detector"],
        "crystal": [{"__id__": "crystal", **dict(zip(("real_space_a", "real_space_b", "real_space_c"),
                                                     real_space_vectors(spec.unit_cell, U).tolist())),
                     "space_group_hall_symbol": rotation["crystal"][0]["space_group_hall_symbol"]}
                    for U in orientations],
    }


def _trials(rng, q: np.ndarray, s0: np.ndarray, spec: SimulationSpec):
    """Trial photons of reflections with reciprocal vectors ``q`` (n, 3): ``(s1 (n, T, 3), weight (n, T))``."""
    n = len(q)
    wavenumber = np.linalg.norm(s0)
    s0_unit = s0 / wavenumber
    u = np.cross(s0_unit, [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(s0_unit, u)
    tilt = rng.normal(0.0, np.deg2rad(spec.beam_divergence), (n, TRIALS, 2))
    incident = s0_unit + tilt[..., :1] * u + tilt[..., 1:] * v
    incident /= np.linalg.norm(incident, axis=2, keepdims=True)
    spread = rng.normal(0.0, np.deg2rad(spec.mosaicity), (n * TRIALS, 3))
    q_trial = rotate(np.repeat(q, TRIALS, axis=0), spread).reshape(n, TRIALS, 3)
    q_sq = np.einsum("ntk,ntk->nt", q_trial, q_trial)
    # Laue condition |k u + q| = k with k = 1 / lambda: k = -|q|^2 / (2 u.q).
    along = np.einsum("ntk,ntk->nt", incident, q_trial)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(along < 0, -q_sq / (2 * along), np.nan)
    ratio = wavenumber / k  # lambda needed / lambda of the spectrum's peak
    weight = np.where(np.isfinite(ratio), np.exp(-0.5 * ((ratio - 1.0) / spec.bandwidth) ** 2), 0.0)
    s1 = incident * np.nan_to_num(k)[..., None] + q_trial
    s1 *= wavenumber / np.maximum(np.linalg.norm(s1, axis=2, keepdims=True), 1e-300)
    return s1, weight


def simulate_stills(spec: SimulationSpec, directory: str) -> SimulationResult:
    """Write ``spec.stills`` shots into ``directory``: images, models.expt, strong.refl, truth.refl."""
    start = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    orientations = [random_orientation(rng) for _ in range(spec.stills)]
    experiments = experiments_from_dict(stills_document(spec, orientations), os.path.abspath(directory))
    first = experiments[0]
    s0 = np.asarray(first.beam.s0, float)
    level = background_map(spec, first)
    gaps = ~first.detector[0].static_mask()
    n_pixels = spec.nx * spec.ny
    writer = image_writer.ImageWriter(spec.replace(n_images=spec.stills, oscillation=0.0), first, directory)
    spread = np.hypot(np.deg2rad(spec.mosaicity), np.deg2rad(spec.beam_divergence))
    truths, strongs = [], []
    for shot, experiment in enumerate(experiments):
        hkl = candidate_indices(experiment, spec.d_min or 1.0)
        hkl = hkl[~systematically_absent(experiment.crystal, hkl)]  # no intensity at all
        q = hkl.astype(float) @ experiment.crystal.A.T
        q_len = np.linalg.norm(q, axis=1)
        # Angular distance of each point from the sphere, against the spread the trials can reach.
        distance = np.abs(np.linalg.norm(s0 + q, axis=1) - np.linalg.norm(s0)) / q_len
        reach = SPREAD_LIMIT * (spread + spec.bandwidth * q_len / (2 * np.linalg.norm(s0)))
        near = distance < reach
        hkl, q = hkl[near], q[near]
        s1_trials, weight = _trials(rng, q, s0, spec)
        partiality = weight.mean(axis=1)
        kept = partiality > 1e-4
        hkl, q, s1_trials, weight, partiality = hkl[kept], q[kept], s1_trials[kept], weight[kept], partiality[kept]
        centre = np.einsum("nt,ntk->nk", weight, s1_trials) / weight.sum(axis=1, keepdims=True)
        panel, xy_mm = experiment.detector.ray_intersection(centre)
        on = panel == 0
        hkl, q, s1_trials, weight, partiality, centre, xy_mm = (a[on] for a in (hkl, q, s1_trials, weight,
                                                                                 partiality, centre, xy_mm))
        n = len(hkl)
        rays = Predictions(hkl.astype(np.int32), np.zeros(n, bool), centre, np.zeros(n), np.zeros(n, np.int64),
                           xy_mm, experiment.detector[0].mm_to_px(xy_mm), np.zeros(n),
                           1.0 / np.linalg.norm(q, axis=1))
        full, lp, qe = expected_intensities(rng, spec, experiment, rays)
        counts = rng.poisson(full * partiality)
        # Photons: trials drawn in proportion to their weight, then onto the detector.
        owner = np.repeat(np.arange(len(counts)), counts)
        cumulative = np.cumsum(weight, axis=1)
        pick = (rng.random(len(owner)) * cumulative[owner, -1])[:, None] > cumulative[owner]
        photon_s1 = s1_trials[owner, pick.sum(axis=1)]
        hit_panel, hit_mm = experiment.detector.ray_intersection(photon_s1)
        hit = hit_panel == 0
        if spec.kapton:
            path = kapton_path_lengths(photon_s1, s0, *KAPTON_TAPE)
            hit &= rng.random(len(path)) < np.exp(-path / kapton_attenuation_length(1.0 / np.linalg.norm(s0)))
        xy_px = hit_mm[hit] / spec.pixel_size
        owner = owner[hit]
        pixel = np.floor(xy_px[:, 1]).astype(np.int64) * spec.nx + np.floor(xy_px[:, 0]).astype(np.int64)
        photons = np.bincount(pixel, minlength=n_pixels)
        image = rng.poisson(level) + photons.reshape(spec.ny, spec.nx)
        if spec.gain != 1.0:
            image = np.rint(image * spec.gain)
        image = np.minimum(image, spec.overload + 1).astype(np.int32)
        image[gaps] = -1
        writer.write(shot, image)
        recorded = np.bincount(owner, minlength=len(counts))
        with np.errstate(invalid="ignore", divide="ignore"):
            centroid = np.column_stack([np.bincount(owner, weights=xy_px[:, i], minlength=len(counts)) / recorded
                                        for i in (0, 1)] + [np.full(len(counts), 0.5)])
        truth = truth_rows(shot, experiment.identifier, rays, full * partiality * spec.gain, partiality, lp, qe,
                           counts, recorded, centroid)
        finder = StreamingSpotFinder(experiment, level * spec.gain)
        finder.add(image)
        strong = spot_table(experiment, *finder.finish(), level * spec.gain, truth)
        strong["id"] = np.where(strong["id"] >= 0, shot, -1).astype(np.int32)
        truths.append(truth)
        strongs.append(strong)
    writer.close()
    truth, strong = _joined(truths, experiments), _joined(strongs, experiments)
    write_experiments(experiments, os.path.join(directory, "models.expt"))
    write_reflections(strong, os.path.join(directory, "strong.refl"))
    write_reflections(truth, os.path.join(directory, "truth.refl"))
    seconds = time.perf_counter() - start
    log.info("Simulated %d stills, %d reflections (%d strong spots) in %.1f s into %s", spec.stills, truth.nrows,
             strong.nrows, seconds, directory)
    return SimulationResult(directory, first, truth, strong, seconds, experiments)


def _joined(tables: list[ReflectionTable], experiments) -> ReflectionTable:
    return ReflectionTable.concatenate(tables, {n: e.identifier for n, e in enumerate(experiments)})
