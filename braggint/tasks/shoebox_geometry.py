"""Shoebox geometry from the gaussian_rs model: bounding boxes, partiality, foreground masks.

Conventions: ``bbox`` rows are ``(x0, x1, y0, y1, z0, z1)`` in pixels and
0-based frames, half-open; ``z`` is the continuous 0-based frame coordinate
of the predicted centre; sigmas are in radians.  ``delta_b = n_sigma *
sigma_b`` bounds the spot in the e1/e2 plane and ``delta_m = n_sigma *
sigma_m`` along e3 (rotation).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from ..models.experiment import Experiment
from ..models.flags import MaskCode
from ..models.profile import GaussianRSProfile
from ..models.shoebox import ShoeboxColumn
from .coordinates import LocalFrames, unit

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
    """Local frames of reflections with beam vectors ``s1`` at frames ``z``."""
    phi = experiment.scan.angle_from_frame(z)
    return LocalFrames.build(experiment.beam.s0, experiment.goniometer.rotation_axis_lab, s1, phi)


def bounding_boxes(experiment: Experiment, profile: GaussianRSProfile, s1, z, panel,
                   sigma_b_multiplier: float = 2.0) -> np.ndarray:
    """Shoebox bounds (n, 6) int32 of rotation-scan reflections.

    x/y: the four e1/e2 corners ``(+-delta_b, +-delta_b)`` (delta_b widened by
    ``sigma_b_multiplier``) projected onto the reflection's panel; z: the
    angles ``phi -+ delta_m / zeta``.  Minima are floored and maxima ceiled;
    z is clipped to the scan's frames, x/y are not clipped to the panel.
    """
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    z = np.asarray(z, dtype=float)
    panel = np.asarray(panel, dtype=np.int64)
    frames = local_frames(experiment, s1, z)
    sigma_b, sigma_m = sigmas_at_frames(profile, experiment, z)
    delta_b = profile.n_sigma * sigma_b * sigma_b_multiplier
    delta_m = profile.n_sigma * sigma_m
    xs, ys = [], []
    for sign_1, sign_2 in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        corner = frames.to_beam_vector(sign_1 * delta_b, sign_2 * delta_b)
        xy = np.empty((len(s1), 2))
        for p in np.unique(panel):
            rows = panel == p
            mm, _ = experiment.detector[int(p)].ray_intersection(corner[rows])
            xy[rows] = experiment.detector[int(p)].mm_to_px(mm)
        xs.append(xy[:, 0])
        ys.append(xy[:, 1])
    xs, ys = np.column_stack(xs), np.column_stack(ys)
    scan = experiment.scan
    z_ends = np.column_stack([scan.frame_from_angle(frames.to_rotation_angle(-delta_m)),
                              scan.frame_from_angle(frames.to_rotation_angle(delta_m))])
    a0, a1 = scan.array_range
    bbox = np.column_stack([
        np.floor(xs.min(axis=1)), np.ceil(xs.max(axis=1)),
        np.floor(ys.min(axis=1)), np.ceil(ys.max(axis=1)),
        np.clip(np.floor(z_ends.min(axis=1)), a0, a1 - 1),
        np.clip(np.ceil(z_ends.max(axis=1)), a0 + 1, a1),
    ])
    return bbox.astype(np.int32)


def partiality(experiment: Experiment, profile: GaussianRSProfile, zeta, z, bbox) -> np.ndarray:
    """Fraction of a Gaussian rocking curve recorded between the bbox's frame ends.

    ``0.5 [erf(c (phi(z1) - phi)) - erf(c (phi(z0) - phi))]`` with
    ``c = |zeta| / (sqrt(2) sigma_m)`` and phi the predicted angle.
    """
    scan = experiment.scan
    bbox = np.asarray(bbox).reshape(-1, 6)
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
    s1 = np.atleast_2d(np.asarray(s1, dtype=float))
    bbox = shoeboxes.bbox.astype(np.int64)
    nx, ny = bbox[:, 1] - bbox[:, 0], bbox[:, 3] - bbox[:, 2]
    frames = local_frames(experiment, s1, np.asarray(z, dtype=float))
    n_corner = (nx + 1) * (ny + 1)
    corner_row = np.repeat(np.arange(len(bbox)), n_corner)
    corner_start = np.concatenate([[0], np.cumsum(n_corner)]).astype(np.int64)
    local = np.arange(int(corner_start[-1])) - corner_start[:-1][corner_row]
    cx = bbox[corner_row, 0] + local % (nx + 1)[corner_row]
    cy = bbox[corner_row, 2] + local // (nx + 1)[corner_row]
    lab = np.empty((len(cx), 3))
    for p in np.unique(shoeboxes.panel):
        panel_model = experiment.detector[int(p)]
        rows = shoeboxes.panel == p
        corner_rows = rows[corner_row]
        xy_spot, _ = panel_model.ray_intersection(s1[rows])
        depth = np.zeros(len(bbox))
        depth[rows] = panel_model.spot_depth(panel_model.mm_to_px(xy_spot))
        lab[corner_rows] = panel_model.pixel_lab_coord_at_depth(
            np.column_stack([cx[corner_rows], cy[corner_rows]]), depth[corner_row[corner_rows]])
    diff = unit(lab) * np.linalg.norm(experiment.beam.s0) - s1[corner_row]
    s1_length = np.linalg.norm(s1, axis=1)[corner_row]
    c1 = np.einsum("ij,ij->i", diff, frames.e1[corner_row]) / s1_length
    c2 = np.einsum("ij,ij->i", diff, frames.e2[corner_row]) / s1_length
    return corner_start, c1, c2


def foreground_mask(experiment: Experiment, profile: GaussianRSProfile, shoeboxes: ShoeboxColumn,
                    s1, z) -> None:
    """OR Foreground or Background into every voxel of ``shoeboxes`` (in place).

    A pixel is foreground when the smallest ``(c1^2 + c2^2) / delta_b^2`` of
    its four corners is at most 1 (no sigma_b multiplier; the rotation
    extent does not enter: every frame of the box gets the same 2-D
    pattern).  Frames outside the scan are left untouched.
    """
    if len(shoeboxes) == 0:
        return
    bbox = shoeboxes.bbox.astype(np.int64)
    nx = bbox[:, 1] - bbox[:, 0]
    sigma_b, _ = sigmas_at_frames(profile, experiment, np.asarray(z, dtype=float))
    delta_b2 = (profile.n_sigma * sigma_b) ** 2
    corner_start, c1, c2 = corner_coordinates(experiment, shoeboxes, s1, z)
    corner_row = np.repeat(np.arange(len(bbox)), np.diff(corner_start))
    d2 = (c1**2 + c2**2) / delta_b2[corner_row]

    # Per pixel: the minimum over its four corners.
    row, vz, vy, vx = shoeboxes.voxel_coordinates()
    j, i = vy - bbox[row, 2], vx - bbox[row, 0]
    stride = (nx + 1)[row]
    base = corner_start[:-1][row] + j * stride + i
    nearest = np.minimum(np.minimum(d2[base], d2[base + 1]), np.minimum(d2[base + stride], d2[base + stride + 1]))
    a0, a1 = experiment.scan.array_range
    inside = (vz >= a0) & (vz < a1)
    code = np.where(nearest <= 1.0, np.uint8(MaskCode.Foreground), np.uint8(MaskCode.Background))
    shoeboxes.mask[inside] |= code[inside]
