"""A complete simulated rotation dataset: models, images, strong spots and truth.

:func:`simulate` writes into a folder::

    models.expt      the experiment (Pilatus-like panel, single-axis goniometer)
    image_00001.cbf  miniCBF images (Pilatus header, byte-offset), or a NeXus master + data file
    strong.refl      strong spots found on the images, indexed from the truth, with shoeboxes
    truth.refl       every reflection: true expected intensity, partiality, photon centroid

All counts are photons x gain; ``intensity.true`` is the expected number of
photons of the full reflection, ``partiality.true`` the expected fraction
of it inside the scan.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ..io.expt import experiments_from_dict, write_experiments
from ..io.refl import write_reflections
from ..models.experiment import Experiment
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from ..tasks.coordinates import LocalFrames
from ..tasks.corrections import detector_efficiency, lorentz_polarization
from ..tasks.predict import predict_static
from . import images as image_writer
from .panels import split_detector, spots_on_modules, truth_on_modules
from .physics import draw_photons, expected_profile, local_offsets
from .spec import SimulationSpec
from .spotfinder import StreamingSpotFinder, spot_table

log = logging.getLogger("braggint")

#: Photons drawn at once (bounds the simulator's working memory).
PHOTONS_PER_CHUNK = 2_000_000

#: Ice-ring resolutions (Angstrom) of hexagonal ice.
ICE_RINGS = (3.897, 3.669, 3.441, 2.671, 2.249)


@dataclass
class SimulationResult:
    directory: str
    experiment: Experiment
    truth: ReflectionTable
    strong: ReflectionTable
    seconds: float
    experiments: object = None  # the ExperimentList (stills: one experiment per shot)


def random_orientation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix."""
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                     [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                     [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])


def real_space_vectors(cell, U: np.ndarray) -> np.ndarray:
    """Rows a, b, c (Angstrom, lab frame) of a cell oriented by U (B from the cell, Busing-Levy)."""
    import gemmi

    orthogonalisation = np.array(gemmi.UnitCell(*cell).orth.mat.tolist())  # columns: a, b, c
    B = np.linalg.inv(orthogonalisation).T  # columns: a*, b*, c*
    A = U @ B
    return np.linalg.inv(A)


def module_mask(spec: SimulationSpec) -> list[list[int]]:
    """Untrusted rectangles (x0, y0, x1, y1) of the gaps between modules."""
    rectangles = []
    mx, my = spec.module_size
    gx, gy = spec.gap
    x = mx
    while x < spec.nx:
        rectangles.append([x, 0, min(x + gx, spec.nx), spec.ny])
        x += mx + gx
    y = my
    while y < spec.ny:
        rectangles.append([0, y, spec.nx, min(y + gy, spec.ny)])
        y += my + gy
    return rectangles


def experiment_document(spec: SimulationSpec, rng: np.random.Generator) -> dict:
    """The .expt JSON of the simulated experiment."""
    centre = spec.beam_centre or (spec.nx * spec.pixel_size / 2, spec.ny * spec.pixel_size / 2)
    U = np.array(spec.orientation, float).reshape(3, 3) if spec.orientation else random_orientation(rng)
    real = real_space_vectors(spec.unit_cell, U)
    import gemmi

    panel = {
        "name": "Panel", "type": "SENSOR_PAD", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, -1.0, 0.0],
        "origin": [-centre[0], centre[1], -spec.distance], "raw_image_offset": [0, 0],
        "image_size": [spec.nx, spec.ny], "pixel_size": [spec.pixel_size, spec.pixel_size],
        "trusted_range": [-1.0, float(spec.overload)], "thickness": spec.thickness, "material": "Si",
        "mu": spec.mu, "identifier": "braggint.simulate", "mask": module_mask(spec), "gain": spec.gain,
        "pedestal": 0.0, "px_mm_strategy": {"type": "SimplePxMmStrategy"},
    }
    hierarchy = {"name": "", "type": "", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, 1.0, 0.0],
                 "origin": [0.0, 0.0, 0.0], "raw_image_offset": [0, 0], "image_size": [0, 0],
                 "pixel_size": [0.0, 0.0], "trusted_range": [0.0, 0.0], "thickness": 0.0, "material": "",
                 "mu": 0.0, "identifier": "", "mask": [], "gain": 1.0, "pedestal": 0.0,
                 "px_mm_strategy": {"type": "SimplePxMmStrategy"}, "children": [{"panel": 0}]}
    n = spec.n_images
    template = spec.template if spec.format == "cbf" else "master.h5"
    imageset = {"__id__": "ImageSequence", "template": template, "mask": None, "gain": None,
                "pedestal": None, "dx": None, "dy": None,
                "params": {"dynamic_shadowing": "Auto", "multi_panel": False}}
    if spec.format != "cbf":
        imageset = {"__id__": "ImageSequence", "template": template, "single_file_indices": list(range(n)),
                    "mask": None, "gain": None, "pedestal": None, "dx": None, "dy": None, "params": {}}
    return {
        "__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "identifier": f"braggint-simulated-{spec.seed}", "beam": 0,
                        "detector": 0, "goniometer": 0, "scan": 0, "crystal": 0, "imageset": 0}],
        "imageset": [imageset],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": spec.wavelength, "divergence": 0.0,
                  "sigma_divergence": 0.0, "polarization_normal": [0.0, 1.0, 0.0],
                  "polarization_fraction": 0.999, "flux": 0.0, "transmission": 1.0}],
        "detector": [{"panels": [panel], "hierarchy": hierarchy}],
        "goniometer": [{"rotation_axis": [1.0, 0.0, 0.0], "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                        "setting_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1]}],
        "scan": [{"image_range": [1, n], "batch_offset": 0, "oscillation": [spec.phi_start, spec.oscillation],
                  "exposure_time": [spec.exposure_time] * n, "epochs": [float(i) * spec.exposure_time
                                                                         for i in range(n)],
                  "valid_image_ranges": {}}],
        "crystal": [{"__id__": "crystal", "real_space_a": real[0].tolist(), "real_space_b": real[1].tolist(),
                     "real_space_c": real[2].tolist(),
                     "space_group_hall_symbol": gemmi.SpaceGroup(spec.space_group).hall}],
    }


def add_model_errors(document: dict, spec: SimulationSpec) -> None:
    """Turn the crystal by ``orientation_error`` degrees about a random axis (seeded by the spec's seed)
    and move the detector ``distance_error`` mm along the beam, in the .expt document (in place)."""
    if spec.orientation_error:
        axis = np.random.default_rng(spec.seed + 1).normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(spec.orientation_error)
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        turn = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross  # Rodrigues
        crystal = document["crystal"][0]
        for name in ("real_space_a", "real_space_b", "real_space_c"):
            crystal[name] = (turn @ np.array(crystal[name])).tolist()
    if spec.distance_error:
        for panel in document["detector"][0]["panels"]:
            panel["origin"][2] -= spec.distance_error  # the detector faces the beam at z = -distance


def expected_intensities(rng, spec: SimulationSpec, experiment: Experiment, rays) -> np.ndarray:
    """Expected photons of each full reflection: Wilson-distributed |F|^2 x qe / lp."""
    d = rays.d
    wilson = np.exp(-spec.wilson_b / (2 * d**2) + spec.wilson_b / (2 * 3.0**2))
    structure = spec.mean_intensity * wilson * rng.exponential(1.0, len(d))
    beam = experiment.beam
    axis = experiment.goniometer.rotation_axis_lab if experiment.goniometer is not None else None
    lp = lorentz_polarization(rays.s1, beam.s0, axis, beam.polarization_normal, beam.polarization_fraction)
    panel = experiment.detector[0]
    qe = detector_efficiency(rays.s1, panel.normal, panel.mu, panel.thickness)
    return structure * qe / np.maximum(lp, 0.02), lp, qe


def background_map(spec: SimulationSpec, experiment: Experiment) -> np.ndarray:
    """Expected background photons per pixel per image (ny, nx)."""
    panel = experiment.detector[0]
    ys, xs = np.mgrid[0:spec.ny, 0:spec.nx]
    lab = panel.lab_coord(np.column_stack([(xs.ravel() + 0.5) * spec.pixel_size,
                                           (ys.ravel() + 0.5) * spec.pixel_size]))
    s0 = experiment.beam.s0
    cos_2theta = lab @ s0 / (np.linalg.norm(lab, axis=1) * np.linalg.norm(s0))
    two_theta = np.arccos(np.clip(cos_2theta, -1, 1))
    level = spec.background + spec.background_resolution * np.cos(two_theta) ** 8
    if spec.ice_rings:
        d = spec.wavelength / (2 * np.sin(two_theta / 2).clip(1e-9))
        for ring in ICE_RINGS:
            level += 4 * spec.background * np.exp(-0.5 * ((d - ring) / 0.01) ** 2)
    return level.reshape(spec.ny, spec.nx)


def simulate(spec: SimulationSpec, directory: str) -> SimulationResult:
    """Write the dataset of ``spec`` into ``directory`` (created if needed)."""
    start = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    if spec.stills:
        from .stills import simulate_stills

        return simulate_stills(spec, directory)
    if spec.panels not in ("single", "modules"):
        raise ValueError(f"panels={spec.panels}: choose single or modules")
    rng = np.random.default_rng(spec.seed)
    document = experiment_document(spec, rng)
    experiments = experiments_from_dict(document, os.path.abspath(directory))
    experiment = experiments[0]
    divergence, mosaicity = np.deg2rad(spec.beam_divergence), np.deg2rad(spec.mosaicity)
    sigma_b, sigma_m = (np.deg2rad(v) for v in expected_profile(spec.beam_divergence, spec.mosaicity))
    # Reflections up to 5 rocking widths (at |zeta| = 0.1) outside the scan still send photons into it.
    pad = 50 * np.rad2deg(sigma_m) + 1.0
    rays = predict_static(experiment, d_min=spec.d_min, padding_deg=pad)
    intensity, lp, qe = expected_intensities(rng, spec, experiment, rays)
    counts = rng.poisson(intensity)
    a0, a1 = experiment.scan.array_range
    n_pixels = spec.nx * spec.ny
    n = len(counts)
    recorded = np.zeros(n, np.int64)
    centroid_sum = np.zeros((n, 3))
    width_sum = np.zeros((n, 2))  # sum over recorded photons of c1^2 + c2^2 and c3^2
    hits, hit_counts = [], []  # per chunk: (frame * n_pixels + pixel, photons) of every pixel hit
    # Reflections in chunks of about PHOTONS_PER_CHUNK photons bound the memory of the photon arrays.
    ends = np.searchsorted(np.cumsum(counts), np.arange(PHOTONS_PER_CHUNK, counts.sum() + PHOTONS_PER_CHUNK,
                                                        PHOTONS_PER_CHUNK))
    start_row = 0
    for end_row in np.unique(np.minimum(ends + 1, n)):
        rows = slice(start_row, end_row)
        owner, phi, s1 = draw_photons(rng, experiment, rays.miller_index[rows], rays.phi[rows], counts[rows],
                                      divergence, mosaicity, spec.anisotropy, spec.tail_fraction)
        offsets = local_offsets(experiment, rays.s1[rows], rays.phi[rows], owner, s1, phi)
        owner = owner + start_row
        panel_hit, xy_mm = experiment.detector.ray_intersection(s1)
        xy_px = xy_mm / spec.pixel_size
        frame = experiment.scan.frame_from_angle(phi)
        inside = (panel_hit == 0) & (frame >= a0) & (frame < a1)
        owner, xy_px, frame, offsets = owner[inside], xy_px[inside], frame[inside], offsets[inside]
        width_sum[:, 0] += np.bincount(owner, weights=offsets[:, 0] ** 2 + offsets[:, 1] ** 2, minlength=n)
        width_sum[:, 1] += np.bincount(owner, weights=offsets[:, 2] ** 2, minlength=n)
        ix, iy = np.floor(xy_px[:, 0]).astype(np.int64), np.floor(xy_px[:, 1]).astype(np.int64)
        iz = np.floor(frame).astype(np.int64) - a0
        key, times = np.unique(iz * n_pixels + iy * spec.nx + ix, return_counts=True)
        hits.append(key)
        hit_counts.append(times.astype(np.int32))
        recorded += np.bincount(owner, minlength=n)
        for axis, values in enumerate((xy_px[:, 0], xy_px[:, 1], frame)):
            centroid_sum[:, axis] += np.bincount(owner, weights=values, minlength=n)
        start_row = end_row
    keys = np.concatenate(hits) if hits else np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    keys, times = keys[order], (np.concatenate(hit_counts) if hit_counts else np.zeros(0, np.int32))[order]
    del hits, hit_counts, order
    frame_edges = np.searchsorted(keys, np.arange(spec.n_images + 1) * n_pixels)

    # Images, one at a time: Poisson background plus the photons, times the gain; gaps, dead and hot pixels.
    level = background_map(spec, experiment)
    gaps = ~experiment.detector[0].static_mask()
    dead = rng.choice(n_pixels, spec.dead_pixels, replace=False) if spec.dead_pixels else []
    hot = rng.choice(n_pixels, spec.hot_pixels, replace=False) if spec.hot_pixels else []
    finder = StreamingSpotFinder(experiment, level * spec.gain)
    writer = image_writer.ImageWriter(spec, experiment, directory)
    for k in range(spec.n_images):
        lo, hi = frame_edges[k], frame_edges[k + 1]
        photons = np.rint(np.bincount(keys[lo:hi] - k * n_pixels, weights=times[lo:hi],
                                      minlength=n_pixels)).astype(np.int64)
        image = rng.poisson(level) + photons.reshape(spec.ny, spec.nx)
        if spec.gain != 1.0:
            image = np.rint(image * spec.gain)
        image = np.minimum(image, spec.overload + 1).astype(np.int32)
        image[gaps] = -1
        image.ravel()[dead] = -2
        image.ravel()[hot] = min(spec.overload, 50_000)
        writer.write(k, image)
        finder.add(image)
    writer.close()

    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = centroid_sum / recorded[:, None]
    truth = truth_table(spec, experiment, rays, intensity, lp, qe, counts, recorded, centroid, sigma_m)
    truth["photons.width_sq"] = width_sum
    strong = spot_table(experiment, *finder.finish(), level * spec.gain, truth)
    if spec.panels == "modules":
        split_detector(document, spec)
        truth, strong = truth_on_modules(truth, spec), spots_on_modules(strong, spec)
    if spec.panels == "modules" or spec.orientation_error or spec.distance_error:
        add_model_errors(document, spec)
        experiments = experiments_from_dict(document, os.path.abspath(directory))
        experiment = experiments[0]
    write_experiments(experiments, os.path.join(directory, "models.expt"))
    write_reflections(strong, os.path.join(directory, "strong.refl"))
    write_reflections(truth, os.path.join(directory, "truth.refl"))
    seconds = time.perf_counter() - start
    log.info("Simulated %d images, %d reflections (%d strong spots) in %.1f s into %s", spec.n_images,
             truth.nrows, strong.nrows, seconds, directory)
    return SimulationResult(directory, experiment, truth, strong, seconds)


def truth_table(spec, experiment, rays, intensity, lp, qe, counts, n_recorded, centroid, sigma_m):
    """Every reflection of a sweep with its true full intensity and where its recorded photons fell."""
    scan = experiment.scan
    phi_start, dphi = scan.oscillation_rad
    phi_end = phi_start + scan.num_images * dphi
    zeta = LocalFrames.build(experiment.beam.s0, experiment.goniometer.rotation_axis_lab, rays.s1,
                             rays.phi).zeta
    c = np.abs(zeta) / (np.sqrt(2.0) * sigma_m)
    partiality = 0.5 * (erf(c * (phi_end - rays.phi)) - erf(c * (phi_start - rays.phi)))
    table = truth_rows(0, f"braggint-simulated-{spec.seed}", rays, intensity * spec.gain, partiality, lp, qe,
                       counts, n_recorded, centroid)
    table["zeta"] = zeta
    return table


def truth_rows(experiment_id: int, identifier: str, rays, true_intensity, partiality, lp, qe, counts, recorded,
               centroid) -> ReflectionTable:
    """The truth table of one experiment's reflections (``rays``: :class:`~braggint.tasks.predict.Predictions`).

    ``true_intensity`` is what integration should measure (photons x gain),
    ``centroid`` the mean position of the recorded photons (px, px, frame).
    """
    n = len(rays.d)
    table = ReflectionTable(n, {experiment_id: identifier})
    table["miller_index"] = rays.miller_index
    table["id"] = np.full(n, experiment_id, np.int32)
    table["panel"] = rays.panel.astype(np.uint64)
    table["entering"] = rays.entering
    table["s1"] = rays.s1
    table["xyzcal.px"] = np.column_stack([rays.xy_px, rays.z_px])
    table["xyzcal.mm"] = np.column_stack([rays.xy_mm, rays.phi])
    table["d"] = rays.d
    table["lp"] = lp
    table["qe"] = qe
    table["intensity.true"] = true_intensity
    table["partiality.true"] = partiality
    table["photons.total"] = counts.astype(np.int32)
    table["photons.recorded"] = recorded.astype(np.int32)
    table["xyzobs.true"] = centroid
    table["flags"] = np.full(n, int(Flags.predicted), np.uint64)
    return table
