"""Building each experiment's gaussian_rs profile model (the ``profile.gaussian_rs`` scope).

From the matched reference spots when ``create_profile_model=True``;
otherwise from the ``.expt`` profile block, with the phil overrides
``parameters.sigma_b/sigma_m`` (degrees) taking precedence.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import BraggintError
from ..models.experiment import Experiment
from ..models.flags import Flags
from ..models.profile import GaussianRSProfile
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn, ragged_offsets, ragged_positions
from ..tasks import profile_model as estimate
from ..tasks.shoebox_geometry import local_frames

log = logging.getLogger("braggint")

#: The number of spots DIALS aims to use for the sigma estimates.
TARGET_SPOTS = 10_000


class ProfileModelError(BraggintError):
    """The profile model cannot be built from what was given."""


def sigma_rows(reference: ReflectionTable, target: int = TARGET_SPOTS) -> np.ndarray:
    """Rows for the sigma estimates: all when fewer than ``target``; otherwise the used_in_refinement rows,
    topped up with every k-th other row when they are fewer than ``target``."""
    if reference.nrows < target:
        return np.arange(reference.nrows)
    used = reference.get_flags(Flags.used_in_refinement)
    if used.sum() >= target:
        return np.flatnonzero(used)
    others = np.flatnonzero(~used)
    step = int(np.floor(len(others) / (target - used.sum())))
    return np.concatenate([np.flatnonzero(used), others[::max(step, 1)]])


def check_spot_count(n_spots: int, experiment: Experiment, gaussian_rs) -> None:
    """Raise unless there are enough spots overall or per degree (``min_spots``)."""
    overall, per_degree = gaussian_rs.min_spots.overall, gaussian_rs.min_spots.per_degree
    if overall is not None and n_spots >= overall and n_spots > 0:
        return
    if n_spots == 0:
        raise ProfileModelError("Too few reflections for profile modelling: no reflections remaining")
    scan = experiment.scan
    if scan is not None and scan.oscillation[1] != 0:
        spots_per_degree = n_spots / (scan.num_images * scan.oscillation[1])
        if per_degree is None or spots_per_degree >= per_degree:
            return
        raise ProfileModelError(
            f"Too few reflections for profile modelling: need {per_degree} per degree or {overall} in total, "
            f"got {spots_per_degree:.1f} per degree and {n_spots} in total (try "
            "profile.gaussian_rs.min_spots.per_degree and profile.gaussian_rs.min_spots.overall)")
    raise ProfileModelError(f"Too few reflections for profile modelling: expected >= {overall}, got {n_spots}")


def _sigmas(experiment: Experiment, reference: ReflectionTable, algorithm: str, centroid: str,
            use: np.ndarray | None = None, shoeboxes: ShoeboxColumn | None = None):
    """(sigma_b, sigma_m) in radians from one set of reference spots (those in ``use``, bool per row, when
    given); their shoeboxes are ``reference["shoebox"]``, or rows ``reference["reference_row"]`` of
    ``shoeboxes`` when given (read in place: the spots' own values are set out by shoebox row)."""
    rows = None
    if shoeboxes is None:
        shoeboxes = reference["shoebox"]
    else:
        rows = reference["reference_row"]
    panel = shoeboxes.panel if rows is None else shoeboxes.panel[rows]

    def by_shoebox(values: np.ndarray) -> np.ndarray:
        if rows is None:
            return values
        spread = np.zeros((len(shoeboxes), *values.shape[1:]), values.dtype)
        spread[rows] = values
        return spread

    if centroid == "com":
        centres = np.empty((reference.nrows, 3))
        for p in np.unique(panel):
            on_panel = panel == p
            centres[on_panel] = experiment.detector[int(p)].pixel_lab_coord(
                reference["xyzobs.px.value"][on_panel, :2])
    else:
        centres = reference["s1"]
    use = by_shoebox(np.ones(reference.nrows, bool) if use is None else use)
    if experiment.is_still:  # a still has no rocking curve to measure (DIALS: sigma_m = 0)
        return estimate.beam_divergence(experiment.detector, shoeboxes, by_shoebox(centres), use), 0.0
    # The two estimates read the spots independently, their kernels releasing the GIL: sigma_b on a thread
    # beside sigma_m (at 400 2M-like images, 0.07 and 0.05 s).
    with ThreadPoolExecutor(1, thread_name_prefix="braggint-sigma-b") as beside:
        sigma_b = beside.submit(estimate.beam_divergence, experiment.detector, shoeboxes, by_shoebox(centres), use)
        sigma_m = estimate.reflecting_range(experiment.scan, shoeboxes, by_shoebox(reference["xyzcal.mm"][:, 2]),
                                            by_shoebox(reference["zeta"]), algorithm, use)
        return sigma_b.result(), sigma_m


def _split_per_frame(reference: ReflectionTable) -> tuple[ReflectionTable, np.ndarray]:
    """One-frame pieces of every reference shoebox, and each piece's frame."""
    shoeboxes = reference["shoebox"]
    _, piece_row, piece_frame = shoeboxes.frame_segments()
    bbox = shoeboxes.bbox[piece_row].copy()
    bbox[:, 4], bbox[:, 5] = piece_frame, piece_frame + 1
    area = (bbox[:, 1] - bbox[:, 0]).astype(np.int64) * (bbox[:, 3] - bbox[:, 2])
    # Piece k of row r starts (frame - z0) slices into r's voxels.
    start = shoeboxes.offsets[piece_row] + (piece_frame - shoeboxes.bbox[piece_row, 4]) * area
    gather = np.repeat(start, area) + ragged_positions(area)
    piece_boxes = ShoeboxColumn(shoeboxes.panel[piece_row], bbox, np.ones(len(piece_row), bool),
                                ragged_offsets(area),
                                shoeboxes.data[gather], shoeboxes.mask[gather], shoeboxes.background[gather])
    pieces = reference.without(["shoebox"]).select(piece_row)
    pieces["shoebox"] = piece_boxes
    pieces["bbox"] = bbox
    return pieces, piece_frame


def estimate_profile(experiment: Experiment, reference: ReflectionTable, gaussian_rs,
                     shoeboxes: ShoeboxColumn | None = None) -> GaussianRSProfile:
    """The gaussian_rs model of one experiment from its matched reference spots.

    ``reference`` carries predicted ``s1`` and ``xyzcal.mm`` (from the
    prediction it matched), ``xyzobs.px.value`` and the strong-spot
    shoeboxes: its own ``shoebox`` column, or, with ``shoeboxes`` (the
    strong spots' column), ``reference_row``, its rows' row numbers there
    (see :func:`braggint.pipeline.reference.matched_reference`).
    """
    check_spot_count(reference.nrows, experiment, gaussian_rs)
    n_sigma = gaussian_rs.parameters.n_sigma
    user_b, user_m = gaussian_rs.parameters.sigma_b, gaussian_rs.parameters.sigma_m
    if user_b is not None and user_m is not None:
        return GaussianRSProfile(n_sigma, user_b, user_m)
    n_all = reference.nrows
    zeta = local_frames(experiment, reference["s1"], reference["xyzcal.px"][:, 2]).zeta
    rows = np.arange(reference.nrows)
    if not gaussian_rs.scan_varying:
        rows = np.sort(sigma_rows(reference))
    use = np.zeros(reference.nrows, bool)
    use[rows[np.abs(zeta[rows]) >= gaussian_rs.filter.min_zeta]] = True
    if not use.any():
        raise ProfileModelError(f"Too few reflections for profile modelling: none of the {len(rows)} reference "
                                "spots has |zeta| >= profile.gaussian_rs.filter.min_zeta="
                                f"{gaussian_rs.filter.min_zeta:g}")
    # The estimates only read the shoeboxes: the spots they use are picked out by ``use``, not copied.
    reference = reference.shallow_copy()
    reference["zeta"] = zeta
    log.info("Using %d / %d reflections for sigma calculation", int(use.sum()), n_all)
    try:
        if gaussian_rs.scan_varying:
            if shoeboxes is not None:  # the per-frame pieces are cut from copies (the caller's table is left be)
                reference = reference.shallow_copy()
                reference["shoebox"] = shoeboxes.select(reference["reference_row"])
            sigma_b, sigma_m = _scan_varying_sigmas(experiment, reference if use.all() else reference.select(use))
        else:
            sigma_b, sigma_m = _sigmas(experiment, reference, gaussian_rs.sigma_m_algorithm,
                                       gaussian_rs.centroid_definition, use, shoeboxes)
    except estimate.EstimationError as exc:
        raise ProfileModelError(f"profile modelling failed: {exc}") from None
    mean_b, mean_m = (np.sqrt(np.mean(np.square(v))) for v in (sigma_b, sigma_m))
    log.info(" sigma b: %f degrees", np.rad2deg(mean_b))
    log.info(" sigma m: %f degrees", np.rad2deg(mean_m))
    return GaussianRSProfile(n_sigma, np.rad2deg(sigma_b), np.rad2deg(sigma_m))


def _scan_varying_sigmas(experiment: Experiment, reference: ReflectionTable):
    """Per-image sigmas (radians): each frame's pieces estimated alone (basic, s1), then smoothed."""
    pieces, piece_frame = _split_per_frame(reference)
    a0, a1 = experiment.scan.array_range
    sigma_b, sigma_m = [], []
    for frame in range(a0, a1):
        on_frame = pieces.select(piece_frame == frame)
        if on_frame.nrows == 0:
            raise estimate.EstimationError(f"no reference spot on image {frame + 1} for the scan-varying model")
        b, m = _sigmas(experiment, on_frame, "basic", "s1")
        log.info("Computing profile model for frame %d: sigma_b = %.4f degrees, sigma_m = %.4f degrees",
                 frame, np.rad2deg(b), np.rad2deg(m))
        sigma_b.append(b)
        sigma_m.append(m)
    return estimate.smooth_per_frame(np.array(sigma_b)), estimate.smooth_per_frame(np.array(sigma_m))


def profile_from_parameters(experiment: Experiment, gaussian_rs) -> GaussianRSProfile:
    """The model from the ``.expt`` profile block, overridden by ``parameters.sigma_b/sigma_m``."""
    sigma_b = sigma_m = None
    if experiment.profile is not None:
        sigma_b, sigma_m = experiment.profile.sigma_b, experiment.profile.sigma_m
    if gaussian_rs.parameters.sigma_b is not None:
        sigma_b = gaussian_rs.parameters.sigma_b
    if gaussian_rs.parameters.sigma_m is not None:
        sigma_m = gaussian_rs.parameters.sigma_m
    if sigma_b is None or sigma_m is None:
        raise ProfileModelError(
            "not enough information to set the profile parameters: give a reflection file of indexed strong "
            "spots, an .expt with a profile model, or profile.gaussian_rs.parameters.sigma_b and sigma_m")
    profile = GaussianRSProfile(gaussian_rs.parameters.n_sigma, sigma_b, sigma_m)
    log.info("Creating profile model with parameters:\n  sigma_b: %s\n  sigma_m: %s", sigma_b, sigma_m)
    return profile
