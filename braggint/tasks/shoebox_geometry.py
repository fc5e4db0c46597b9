"""Shoebox geometry from the gaussian_rs model: bounding boxes, partiality, foreground masks.

Conventions: ``bbox`` rows are ``(x0, x1, y0, y1, z0, z1)`` in pixels and
0-based frames, half-open; ``z`` is the continuous 0-based frame coordinate
of the predicted centre; sigmas are in radians.  ``delta_b = n_sigma *
sigma_b`` bounds the spot in the e1/e2 plane and ``delta_m = n_sigma *
sigma_m`` along e3 (rotation).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.experiment import Experiment
from ..models.flags import MaskCode
from ..models.profile import GaussianRSProfile
from ..models.shoebox import ShoeboxColumn, ragged_offsets
from .coordinates import LocalFrames
from .pixel_lab import panel_table
from .special import erf

_FOREGROUND = np.uint8(MaskCode.Foreground)
_BACKGROUND = np.uint8(MaskCode.Background)

#: erf(3 / sqrt(2)): the partiality above which DIALS reports a reflection as full.
FULL_PARTIALITY = 0.997300203936740


def sigmas_at_frames(profile: GaussianRSProfile, experiment: Experiment, z) -> tuple[np.ndarray, np.ndarray]:
    """``(sigma_b, sigma_m)`` in radians for reflections at frames ``z``.

    A scan-varying model uses the value of image ``floor(z)``, clamped to the
    scan, as DIALS's calculators do.
    """
    z = np.asarray(z, dtype=float)
    sigma_b, sigma_m = profile.sigma_b_rad, profile.sigma_m_rad
    if not profile.is_scan_varying:
        return np.full(z.shape, float(sigma_b)), np.full(z.shape, float(sigma_m))
    index = np.clip(np.floor(z).astype(np.int64) - experiment.scan.array_range[0], 0, len(sigma_b) - 1)
    return sigma_b[index], sigma_m[index]


def local_frames(experiment: Experiment, s1: np.ndarray, z: np.ndarray) -> LocalFrames:
    """Local frames of reflections with beam vectors ``s1`` at frames ``z``.

    For a still, e1 and e2 are the same (they do not involve the rotation
    axis); phi is 0 and zeta is 1 (no rotation: every reflection is
    recorded whole on its one image).
    """
    if experiment.is_still:
        frames = LocalFrames.build(experiment.beam.s0, np.zeros(3), s1, np.zeros(len(np.atleast_2d(s1))))
        frames.zeta = np.ones(len(frames.s1))
        return frames
    phi = experiment.scan.angle_from_frame(z)
    return LocalFrames.build(experiment.beam.s0, experiment.goniometer.rotation_axis_lab, s1, phi)


def frame_range(experiment: Experiment) -> tuple[int, int]:
    """0-based frames [first, last) of the experiment's images: (0, 1) for a still."""
    return (0, 1) if experiment.is_still else experiment.scan.array_range


def bounding_boxes(experiment: Experiment, profile: GaussianRSProfile, s1, z, panel,
                   sigma_b_multiplier: float = 2.0) -> np.ndarray:
    """Shoebox bounds (n, 6) int32 of rotation-scan reflections.

    x/y: the four e1/e2 corners ``(+-delta_b, +-delta_b)`` (delta_b widened by
    ``sigma_b_multiplier``) projected onto the reflection's panel; z: the
    angles ``phi -+ delta_m / zeta`` (a still: its one frame).  Minima are floored and maxima ceiled;
    z is clipped to the scan's frames, x/y are not clipped to the panel.
    """
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    z = np.asarray(z, dtype=float)
    panel = np.asarray(panel, dtype=np.int64)
    frames = local_frames(experiment, s1, z)
    sigma_b, sigma_m = sigmas_at_frames(profile, experiment, z)
    delta_b = profile.n_sigma * sigma_b * sigma_b_multiplier
    delta_m = profile.n_sigma * sigma_m
    # Each bound is an elementwise minimum or maximum over the four corners' rows ((4, n) arrays): far
    # cheaper than reducing (n, 4) arrays along their short axis.
    corners = [frames.to_beam_vector(sign_1 * delta_b, sign_2 * delta_b)
               for sign_1, sign_2 in ((-1, -1), (1, -1), (-1, 1), (1, 1))]
    xs, ys = np.empty((4, len(s1))), np.empty((4, len(s1)))
    for p in np.unique(panel):
        rows = panel == p
        rows = slice(None) if rows.all() else rows
        for number, corner in enumerate(corners):
            mm, _ = experiment.detector[int(p)].ray_intersection(corner[rows])
            xs[number, rows], ys[number, rows] = experiment.detector[int(p)].mm_to_px(mm).T
    if experiment.is_still:
        z_ends = np.floor(z), np.floor(z) + 1
    else:
        scan = experiment.scan
        z_ends = (scan.frame_from_angle(frames.to_rotation_angle(-delta_m)),
                  scan.frame_from_angle(frames.to_rotation_angle(delta_m)))
    a0, a1 = frame_range(experiment)
    bbox = np.column_stack([
        np.floor(xs.min(axis=0)), np.ceil(xs.max(axis=0)),
        np.floor(ys.min(axis=0)), np.ceil(ys.max(axis=0)),
        np.clip(np.floor(np.minimum(*z_ends)), a0, a1 - 1),
        np.clip(np.ceil(np.maximum(*z_ends)), a0 + 1, a1),
    ])
    return bbox.astype(np.int32)


def partiality(experiment: Experiment, profile: GaussianRSProfile, zeta, z, bbox) -> np.ndarray:
    """Fraction of a Gaussian rocking curve recorded between the bbox's frame ends.

    ``0.5 [erf(c (phi(z1) - phi)) - erf(c (phi(z0) - phi))]`` with
    ``c = |zeta| / (sqrt(2) sigma_m)`` and phi the predicted angle; 1 for
    a still (its intensity is what the one image records).
    """
    scan = experiment.scan
    bbox = np.asarray(bbox).reshape(-1, 6)
    if experiment.is_still:
        return np.ones(len(bbox))
    _, sigma_m = sigmas_at_frames(profile, experiment, z)
    phi = scan.angle_from_frame(z)
    c = np.abs(np.asarray(zeta)) / (np.sqrt(2.0) * sigma_m)
    return 0.5 * (erf(c * (scan.angle_from_frame(bbox[:, 5]) - phi))
                  - erf(c * (scan.angle_from_frame(bbox[:, 4]) - phi)))


def corner_coordinates(experiment: Experiment, shoeboxes: ShoeboxColumn, s1, z):
    """Local (c1, c2) (radians) of every pixel corner of every shoebox.

    Returns ``(corner_start (n + 1,), c1, c2)``: row r's (ny+1) x (nx+1)
    corners, row-major, are ``corner_start[r]:corner_start[r+1]``.  Corners
    are mapped to the lab with the parallax depth fixed at the predicted
    spot position and scaled to |s0|, as DIALS does.
    """
    geometry = _corner_geometry(experiment, shoeboxes, s1, z)
    bbox = geometry[0]
    corner_start = ragged_offsets((bbox[:, 1] - bbox[:, 0] + 1) * (bbox[:, 3] - bbox[:, 2] + 1))
    c1 = np.empty(int(corner_start[-1]))
    c2 = np.empty(int(corner_start[-1]))
    _corner_offsets(*geometry, corner_start, c1, c2)
    return corner_start, c1, c2


def _corner_geometry(experiment: Experiment, shoeboxes: ShoeboxColumn, s1, z):
    """What the corner kernels take about every row: ``(bbox (int64), panel of each row, the detector's
    :func:`~braggint.tasks.pixel_lab.panel_table`, parallax depth at the predicted spot (mm), s1, e1, e2,
    |s0|)``."""
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    frames = local_frames(experiment, s1, np.asarray(z, dtype=float))
    detector = experiment.detector
    panel_of_row = shoeboxes.panel.astype(np.int64)
    depth = np.zeros(len(shoeboxes.bbox))
    for p in np.unique(panel_of_row):
        rows = panel_of_row == p
        model = detector[int(p)]
        xy_spot, _ = model.ray_intersection(s1[rows])
        depth[rows] = model.spot_depth(model.mm_to_px(xy_spot))
    return (shoeboxes.bbox.astype(np.int64), panel_of_row, panel_table(detector), depth, s1, frames.e1, frames.e2,
            float(np.linalg.norm(experiment.beam.s0)))


@njit(cache=True, error_model="numpy")
def _corner_offsets(bbox, panel_of_row, panels, depth, s1, e1, e2, s0_length, corner_start, c1, c2):
    """Corners' (c1, c2) into ``c1``, ``c2`` (see :func:`corner_coordinates`; the other arguments:
    :func:`_corner_geometry`)."""
    for r in range(len(bbox)):
        _row_corners(r, bbox, panel_of_row, panels, depth, s1, e1, e2, s0_length,
                     c1[corner_start[r]:corner_start[r + 1]], c2[corner_start[r]:corner_start[r + 1]])


@njit(inline="always")
def _row_corners(r, bbox, panel_of_row, panels, depth, s1, e1, e2, s0_length, c1, c2):
    """Row ``r``'s (ny+1) x (nx+1) corners' (c1, c2), row-major, into ``c1``, ``c2`` (its own slices)."""
    # A row's geometry is read into locals and each corner row is written through a slice: the compiler
    # then knows the outputs do not overlap the inputs and vectorises the loop (1.5-2x faster, same values).
    p = panel_of_row[r]
    x0, y0 = bbox[r, 0], bbox[r, 2]
    nx1 = bbox[r, 1] - x0 + 1
    ny1 = bbox[r, 3] - y0 + 1
    s1_0, s1_1, s1_2 = s1[r, 0], s1[r, 1], s1[r, 2]
    s1_length = math.sqrt(s1_0 ** 2 + s1_1 ** 2 + s1_2 ** 2)
    o0, o1, o2 = panels[p, 0], panels[p, 1], panels[p, 2]
    f0, f1, f2 = panels[p, 3], panels[p, 4], panels[p, 5]
    g0, g1, g2 = panels[p, 6], panels[p, 7], panels[p, 8]
    a0, a1, a2 = e1[r, 0], e1[r, 1], e1[r, 2]
    b0, b1, b2 = e2[r, 0], e2[r, 1], e2[r, 2]
    width, height, spot_depth, with_parallax = panels[p, 9], panels[p, 10], depth[r], panels[p, 16] != 0.0
    for j in range(ny1):
        row_c1, row_c2 = c1[j * nx1:(j + 1) * nx1], c2[j * nx1:(j + 1) * nx1]
        for i in range(nx1):
            x_mm = (x0 + i) * width
            y_mm = (y0 + j) * height
            if with_parallax:
                l0 = o0 + f0 * x_mm + g0 * y_mm
                l1 = o1 + f1 * x_mm + g1 * y_mm
                l2 = o2 + f2 * x_mm + g2 * y_mm
                norm0 = math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
                x_mm -= (l0 * f0 + l1 * f1 + l2 * f2) / norm0 * spot_depth
                y_mm -= (l0 * g0 + l1 * g1 + l2 * g2) / norm0 * spot_depth
            l0 = o0 + f0 * x_mm + g0 * y_mm
            l1 = o1 + f1 * x_mm + g1 * y_mm
            l2 = o2 + f2 * x_mm + g2 * y_mm
            scale = s0_length / math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
            d0 = l0 * scale - s1_0
            d1 = l1 * scale - s1_1
            d2 = l2 * scale - s1_2
            row_c1[i] = (d0 * a0 + d1 * a1 + d2 * a2) / s1_length
            row_c2[i] = (d0 * b0 + d1 * b1 + d2 * b2) / s1_length


def foreground_mask(experiment: Experiment, profile: GaussianRSProfile, shoeboxes: ShoeboxColumn,
                    s1, z, corners=None) -> None:
    """OR Foreground or Background into every voxel of ``shoeboxes`` (in place).

    A pixel is foreground when the smallest ``(c1^2 + c2^2) / delta_b^2`` of
    its four corners is at most 1 (no sigma_b multiplier; the rotation
    extent does not enter: every frame of the box gets the same 2-D
    pattern).  Frames outside the scan are left untouched.  ``corners``:
    the shoeboxes' :func:`corner_coordinates`, when already computed;
    otherwise each box's corners are computed, used and dropped in turn
    (summation only, where nothing else needs them: no arrays of every
    corner written and read again).
    """
    if len(shoeboxes) == 0:
        return
    sigma_b, _ = sigmas_at_frames(profile, experiment, np.asarray(z, dtype=float))
    delta_b2 = (profile.n_sigma * sigma_b) ** 2
    a0, a1 = frame_range(experiment)
    if corners is None:
        _foreground_from_geometry(*_corner_geometry(experiment, shoeboxes, s1, z), delta_b2, shoeboxes.offsets,
                                  shoeboxes.mask, a0, a1)
        return
    corner_start, c1, c2 = corners
    _apply_foreground(c1, c2, delta_b2, corner_start, shoeboxes.bbox.astype(np.int64), shoeboxes.offsets,
                      shoeboxes.mask, a0, a1)


@njit(cache=True, error_model="numpy")
def _apply_foreground(c1, c2, delta_b2, corner_start, bbox, offsets, mask, a0, a1):
    """OR Foreground where the smallest ``(c1^2 + c2^2) / delta_b2`` of a pixel's corners is <= 1, else
    Background, into the box's frames in [a0, a1)."""
    d2, codes = _box_work(bbox)
    for r in range(len(offsets) - 1):
        if offsets[r + 1] != offsets[r]:
            _mask_box(r, c1[corner_start[r]:corner_start[r + 1]], c2[corner_start[r]:corner_start[r + 1]],
                      delta_b2, bbox, offsets, mask, a0, a1, d2, codes)


@njit(cache=True, error_model="numpy")
def _foreground_from_geometry(bbox, panel_of_row, panels, depth, s1, e1, e2, s0_length, delta_b2, offsets, mask,
                              a0, a1):
    """:func:`_apply_foreground` with each box's corners computed as it comes (the geometry:
    :func:`_corner_geometry`) into work space the size of the largest box's."""
    d2, codes = _box_work(bbox)
    c1, c2 = np.empty(len(d2)), np.empty(len(d2))
    for r in range(len(offsets) - 1):
        if offsets[r + 1] == offsets[r]:
            continue
        n_corner = _corner_count(bbox, r)
        _row_corners(r, bbox, panel_of_row, panels, depth, s1, e1, e2, s0_length, c1[:n_corner], c2[:n_corner])
        _mask_box(r, c1[:n_corner], c2[:n_corner], delta_b2, bbox, offsets, mask, a0, a1, d2, codes)


@njit(inline="always")
def _box_work(bbox):
    """Work space for :func:`_mask_box`: ``(d2, codes)``, each as long as the largest box's corners."""
    largest = 0
    for r in range(len(bbox)):
        largest = max(largest, _corner_count(bbox, r))
    return np.empty(largest), np.empty(largest, np.uint8)


@njit(inline="always")
def _corner_count(bbox, r):
    """Pixel corners of box ``r``: (nx + 1) x (ny + 1)."""
    return (bbox[r, 1] - bbox[r, 0] + 1) * (bbox[r, 3] - bbox[r, 2] + 1)


@njit(inline="always")
def _mask_box(r, x, y, delta_b2, bbox, offsets, mask, a0, a1, d2, codes):
    """OR Foreground or Background into box ``r``'s frames in [a0, a1) from its corners' (c1, c2) ``x``,
    ``y``; ``d2`` and ``codes``: work space (:func:`_box_work`).

    The box's corners, corner rows and frames are taken as slices and
    indexed from 0: an index such as ``start + i`` may be negative as far as
    the compiler knows, and the check numba adds for negative indices kept
    these loops from vectorising (2.8x slower).
    """
    foreground, background = _FOREGROUND, _BACKGROUND
    nx, ny, z0, nz = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 4], bbox[r, 5] - bbox[r, 4]
    stride = nx + 1
    for c in range(len(x)):
        d2[c] = (x[c] ** 2 + y[c] ** 2) / delta_b2[r]
    for j in range(ny):
        above, below = d2[j * stride:(j + 1) * stride], d2[(j + 1) * stride:(j + 2) * stride]
        row_codes = codes[j * nx:(j + 1) * nx]
        for i in range(nx):
            nearest = min(min(above[i], above[i + 1]), min(below[i], below[i + 1]))
            row_codes[i] = foreground if nearest <= 1.0 else background
    box = mask[offsets[r]:offsets[r + 1]]
    pixels = ny * nx
    for k in range(nz):
        if a0 <= z0 + k < a1:
            frame = box[k * pixels:(k + 1) * pixels]
            for pixel in range(pixels):
                frame[pixel] |= codes[pixel]
