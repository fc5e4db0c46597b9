"""Scan-static rotation prediction (the rotation-angle method DIALS uses).

For every Miller index h with ``d_max >= d(h) >= d_min`` that is not absent
by lattice centring, solve for the rotation angles phi at which
``s1 = s0 + S R(e, phi) F A h`` lies on the Ewald sphere, keep every angle
equivalent mod 2 pi inside the scan (widened by ``padding``), and intersect
s1 with the detector.

Units: angles in radians, s vectors in 1/Angstrom, detector positions in mm
and pixels, z as the continuous 0-based frame coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.experiment import Experiment
from ..models.rotation import axis_angle_matrix, rotate_vectors
from ..models.shoebox import ragged_positions

#: hkl generated per chunk, to bound the memory of the brute-force generator.
_CHUNK = 2_000_000


@dataclass
class Predictions:
    """Predicted rays of one experiment; each array has one row per prediction."""

    miller_index: np.ndarray  # (n, 3) int32
    entering: np.ndarray      # (n,) bool
    s1: np.ndarray            # (n, 3) 1/Angstrom
    phi: np.ndarray           # (n,) radians, inside the padded scan
    panel: np.ndarray         # (n,) int
    xy_mm: np.ndarray         # (n, 2)
    xy_px: np.ndarray         # (n, 2)
    z_px: np.ndarray          # (n,) continuous 0-based frame
    d: np.ndarray             # (n,) Angstrom


def detector_d_min(experiment: Experiment) -> float:
    """Highest resolution (Angstrom) reached at any panel corner."""
    s0 = experiment.beam.s0
    wavelength = 1.0 / np.linalg.norm(s0)
    best = np.inf
    for panel in experiment.detector.panels:
        w, h = panel.image_size_mm
        corners = panel.lab_coord([[0, 0], [w, 0], [0, h], [w, h]])
        cos_2theta = corners @ s0 / (np.linalg.norm(corners, axis=1) * np.linalg.norm(s0))
        theta = np.arccos(np.clip(cos_2theta, -1, 1)) / 2
        best = min(best, float(np.min(wavelength / (2 * np.sin(theta)))))
    return best


def candidate_indices(experiment: Experiment, d_min: float, d_max: float | None = None):
    """Miller indices (n, 3) with ``d_min <= d <= d_max``, no (0,0,0), no centring absences, in h, k, l order.

    For each (h, k) only the l on the chord of the sphere ``|A h| <= 1 / d_min``
    are generated (the roots of a quadratic in l, widened by one), not the whole
    box ``|h_i| <= |a_i| / d_min``: about half the candidates of the box, and
    the same indices, as each is tested as before.
    """
    crystal = experiment.crystal
    hmax, kmax, lmax = np.floor(np.linalg.norm(crystal.real_space, axis=1) / d_min).astype(int)
    h, k = (grid.ravel() for grid in np.meshgrid(np.arange(-hmax, hmax + 1), np.arange(-kmax, kmax + 1),
                                                 indexing="ij"))
    A = crystal.A
    inv_d2_min = 1.0 / d_min**2
    inv_d2_max = 0.0 if d_max is None else 1.0 / d_max**2
    # |v + l c*|^2 <= 1 / d_min^2, v = h a* + k b*: l between the roots of cc l^2 + 2 vc l + (vv - 1 / d_min^2).
    v = np.outer(h, A[:, 0]) + np.outer(k, A[:, 1])
    c_star = A[:, 2]
    cc, vc, vv = c_star @ c_star, v @ c_star, np.einsum("ij,ij->i", v, v)
    discriminant = vc**2 - cc * (vv - inv_d2_min)
    root = np.sqrt(np.maximum(discriminant, 0.0))
    low = np.clip(np.ceil((-vc - root) / cc) - 1, -lmax, lmax).astype(np.int64)
    high = np.clip(np.floor((-vc + root) / cc) + 1, -lmax, lmax).astype(np.int64)
    counts = np.where(discriminant >= 0, np.maximum(high - low + 1, 0), 0)
    centring = np.array([list(c) for c in crystal.space_group_ops.cen_ops if any(c)], dtype=np.int64)
    out = []
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):  # (h, k) pairs in chunks of about _CHUNK candidates, to bound the memory
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + _CHUNK, side="right")), start + 1)
        n = counts[start:stop]
        row = np.repeat(np.arange(start, stop), n)
        l = low[row] + ragged_positions(n)
        hkl = np.column_stack([h[row], k[row], l])
        p = hkl @ A.T
        inv_d2 = np.einsum("ij,ij->i", p, p)
        keep = (inv_d2 <= inv_d2_min) & (inv_d2 > 0) & (inv_d2 >= inv_d2_max)
        if len(centring):
            keep &= ~((hkl @ centring.T) % 24 != 0).any(axis=1)
        out.append(hkl[keep])
        start = stop
    return np.concatenate(out).astype(np.int32) if out else np.zeros((0, 3), np.int32)


def systematically_absent(crystal, hkl: np.ndarray) -> np.ndarray:
    """True for each hkl (n, 3) that the crystal's space group (all its operations) makes absent.

    h is absent when some operation (R, t) keeps it (h R = h) while h.t is
    not an integer (gemmi stores R and t times 24).
    """
    ops = crystal.space_group_ops
    absent = np.zeros(len(hkl), bool)
    h = np.asarray(hkl, np.int64)
    for op in ops.sym_ops:
        rotation = np.array(op.rot, np.int64)
        kept = (h @ rotation == 24 * h).all(axis=1)
        if not kept.any():
            continue
        for centring in ops.cen_ops:
            shift = (np.array(op.tran, np.int64) + np.array(centring, np.int64)) % 24
            absent |= kept & ((h @ shift) % 24 != 0)
    return absent


def rotation_angles(experiment: Experiment, hkl: np.ndarray):
    """The two angles (radians, in [0, 2 pi)) at which each h reflects.

    Returns ``(index into hkl, phi)`` for every reflecting solution.
    """
    gonio, beam = experiment.goniometer, experiment.beam
    S, F = gonio.setting_rotation, gonio.fixed_rotation
    axis = gonio.rotation_axis / np.linalg.norm(gonio.rotation_axis)
    s0 = np.linalg.solve(S, beam.s0)
    m1 = np.cross(axis, s0)
    m1 /= np.linalg.norm(m1)
    m3 = np.cross(m1, axis)
    p0 = hkl.astype(float) @ (F @ experiment.crystal.A).T
    p0_sq = np.einsum("ij,ij->i", p0, p0)
    a1, a2, a3 = p0 @ m1, p0 @ axis, p0 @ m3
    b3 = (-p0_sq / 2 - a2 * (s0 @ axis)) / (s0 @ m3)
    rho_sq = p0_sq - a2**2
    ok = (p0_sq <= 4 * (s0 @ s0)) & (rho_sq >= b3**2)
    index = np.flatnonzero(ok)
    b1_abs = np.sqrt(rho_sq[ok] - b3[ok] ** 2)
    phis = []
    for sign in (1.0, -1.0):
        b1 = sign * b1_abs
        cos_phi = b1 * a1[ok] + b3[ok] * a3[ok]
        sin_phi = b1 * a3[ok] - b3[ok] * a1[ok]
        phis.append(np.mod(np.arctan2(sin_phi, cos_phi), 2 * np.pi))
    return np.concatenate([index, index]), np.concatenate(phis)


def predict_static(experiment: Experiment, *, d_min: float | None = None, d_max: float | None = None,
                   padding_deg: float = 1.0) -> Predictions:
    """All reflections crossing the Ewald sphere within the padded scan."""
    scan, gonio, beam = experiment.scan, experiment.goniometer, experiment.beam
    if d_min is None:
        d_min = detector_d_min(experiment)
    hkl = candidate_indices(experiment, d_min, d_max)
    index, phi = rotation_angles(experiment, hkl)
    # Every angle equivalent mod 2 pi inside [phi_start - pad, phi_end + pad].
    phi0, dphi = scan.oscillation_rad
    ends = sorted([phi0, phi0 + scan.num_images * dphi])
    pad = np.deg2rad(padding_deg)
    low, high = ends[0] - pad, ends[1] + pad
    turns_low = np.ceil((low - phi) / (2 * np.pi)).astype(int)
    turns_high = np.floor((high - phi) / (2 * np.pi)).astype(int)
    repeats = np.maximum(turns_high - turns_low + 1, 0)
    row = np.repeat(np.arange(len(phi)), repeats)
    offset = ragged_positions(repeats)
    phi_in = phi[row] + 2 * np.pi * (turns_low[row] + offset)
    index = index[row]
    h = hkl[index]
    # s1 = s0 + S R(e, phi) F A h, evaluated at the angle in the scan.
    p0 = h.astype(float) @ (gonio.fixed_rotation @ experiment.crystal.A).T
    s1 = beam.s0 + rotate_vectors(gonio.rotation_axis, phi_in, p0) @ gonio.setting_rotation.T
    normal = np.cross(beam.s0, gonio.setting_rotation @ gonio.rotation_axis)
    entering = s1 @ (normal / np.linalg.norm(normal)) < 0
    return _on_detector(experiment, h, s1, phi_in, entering, experiment.crystal.A)[0]


def _on_detector(experiment: Experiment, h, s1, phi, entering, A) -> tuple[Predictions, np.ndarray]:
    """The rays that hit a panel, with their panel, mm/px positions, frame (0 for a still) and d;
    also which of the given rays hit."""
    panel, xy_mm = experiment.detector.ray_intersection(s1)
    hit = panel >= 0
    xy_px = np.full_like(xy_mm, np.nan)
    for p in np.unique(panel[hit]):
        sel = panel == p
        xy_px[sel] = experiment.detector[int(p)].mm_to_px(xy_mm[sel])
    d = 1.0 / np.linalg.norm(h.astype(float) @ A.T, axis=1)
    z = np.zeros(int(hit.sum())) if experiment.is_still else experiment.scan.frame_from_angle(phi[hit])
    return Predictions(h[hit], entering[hit], s1[hit], phi[hit], panel[hit], xy_mm[hit], xy_px[hit], z,
                       d[hit]), hit


def padded_frames(experiment: Experiment, padding_deg: float) -> np.ndarray:
    """0-based frames whose start DIALS's per-frame predictors visit: the scan widened by the padding."""
    scan = experiment.scan
    phi0, dphi = scan.oscillation_rad
    pad = np.deg2rad(padding_deg)
    z0 = int(np.floor(scan.frame_from_angle(phi0 - pad) + 0.5))
    z1 = int(np.floor(scan.frame_from_angle(phi0 + scan.num_images * dphi + pad) + 0.5))
    return np.arange(z0, z1)


def predict_scan_varying(experiment: Experiment, *, d_min: float | None = None, d_max: float | None = None,
                         padding_deg: float = 1.0) -> Predictions:
    """Reflections crossing the Ewald sphere with a crystal (and setting) that changes per image.

    Frame f is predicted between the settings ``S_i R(e, phi(f)) F A_i`` and
    ``S_(i+1) R(e, phi(f+1)) F A_(i+1)`` (i = f - first frame, clamped so that
    padded frames reuse the end intervals); a reflection crosses when
    ``|s0 + r|^2 - |s0|^2`` changes sign, at the fraction alpha of the frame
    where the linearly interpolated r meets the sphere.
    """
    scan, gonio, beam = experiment.scan, experiment.goniometer, experiment.beam
    A_points = experiment.crystal.A_at_scan_points
    if A_points is None or len(A_points) != scan.num_images + 1:
        raise ValueError("a scan-varying crystal needs num_images + 1 A matrices")
    if d_min is None:
        d_min = detector_d_min(experiment)
    S_points = gonio.setting_rotation_at_scan_points
    if S_points is None:
        S_points = np.repeat(gonio.setting_rotation[None], len(A_points), axis=0)
    frames = padded_frames(experiment, padding_deg)
    i = np.clip(frames - scan.array_range[0], 0, len(A_points) - 2)
    F, s0 = gonio.fixed_rotation, beam.s0
    M1 = S_points[i] @ axis_angle_matrix(gonio.rotation_axis, scan.angle_from_frame(frames)) @ F @ A_points[i]
    M2 = S_points[i + 1] @ axis_angle_matrix(gonio.rotation_axis, scan.angle_from_frame(frames + 1)) @ F \
        @ A_points[i + 1]
    # Superset of indices: the varying cell may reach slightly beyond the static one's limit.
    hkl = candidate_indices(experiment, d_min * 0.95, d_max)
    hits_h, hits_f = [], []
    rows_per_chunk = max(1, 4_000_000 // max(len(frames), 1))
    for start in range(0, len(hkl), rows_per_chunk):
        h = hkl[start:start + rows_per_chunk].astype(float)
        r_points = np.einsum("pij,nj->npi", A_points, h)
        length_sq = np.einsum("npk,npk->np", r_points, r_points)
        g1 = length_sq[:, i] + 2 * h @ np.einsum("fij,i->jf", M1, s0)
        g2 = length_sq[:, i + 1] + 2 * h @ np.einsum("fij,i->jf", M2, s0)
        crossing = ((g1 >= 0) != (g2 >= 0)) & (length_sq[:, i] <= 1.0 / d_min**2)
        row, col = np.nonzero(crossing)
        hits_h.append(row + start)
        hits_f.append(col)
    hit_h, hit_f = np.concatenate(hits_h), np.concatenate(hits_f)
    h = hkl[hit_h]
    r1 = np.einsum("nij,nj->ni", M1[hit_f], h.astype(float))
    r2 = np.einsum("nij,nj->ni", M2[hit_f], h.astype(float))
    alpha = _first_root_in_unit_interval(r1, r2 - r1, s0)
    ok = np.isfinite(alpha)
    s1 = s0 + r1 + alpha[:, None] * (r2 - r1)
    phi = scan.oscillation_rad[0] + (frames[hit_f] - scan.array_range[0] + alpha) * scan.oscillation_rad[1]
    starts_outside = np.linalg.norm(s0 + r1, axis=1) - np.linalg.norm(s0) >= 0
    return _on_detector(experiment, h[ok], s1[ok], phi[ok], starts_outside[ok], experiment.crystal.A)[0]


def _first_root_in_unit_interval(r1, dr, s0) -> np.ndarray:
    """alpha in [0, 1] with ``|s0 + r1 + alpha dr| = |s0|`` (NaN if none), roots ordered as DIALS orders them."""
    a = np.einsum("ij,ij->i", dr, dr)
    b = 2 * np.einsum("ij,ij->i", s0 + r1, dr)
    c = np.einsum("ij,ij->i", r1, r1) + 2 * r1 @ s0
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (b + np.where(b >= 0, 1.0, -1.0) * np.sqrt(np.maximum(disc, 0)))
        first = np.where(disc > 0, q / a, -b / (2 * a))
        second = np.where(disc > 0, c / q, -b / (2 * a))
    alpha = np.where((first >= 0) & (first <= 1), first, np.where((second >= 0) & (second <= 1), second, np.nan))
    return np.where(disc >= 0, alpha, np.nan)


#: |delta psi| (radians) below which DIALS's stills predictor keeps a reflection without a mosaic model.
STILLS_DELPSI_LIMIT = 0.0015


def predict_still(experiment: Experiment, *, d_min: float | None = None, d_max: float | None = None
                  ) -> tuple[Predictions, np.ndarray]:
    """Reflections of a still shot, and their delta psi (radians).

    Each reciprocal-lattice vector q is turned about ``e1 = q x s0`` onto the
    Ewald sphere; delta psi is that turn, and ``s1`` points from the sphere
    centre through the turned vector.  Reflections are kept when |delta psi|
    is below :data:`STILLS_DELPSI_LIMIT`, or, when the crystal carries the
    Nave mosaic model (``ML_half_mosaicity_deg``, ``ML_domain_size_ang``),
    below ``d / domain size + half mosaicity / 2`` (Sauter 2014, eqs. 16-17),
    as DIALS's stills predictors do.  Unlike rotation prediction, every
    systematic absence of the space group is left out (screw axes and glides
    too), as DIALS's stills index generator does.  ``z_px`` and ``phi`` are 0.
    """
    beam, crystal = experiment.beam, experiment.crystal
    if d_min is None:
        d_min = detector_d_min(experiment)
    hkl = candidate_indices(experiment, d_min, d_max)
    hkl = hkl[~systematically_absent(crystal, hkl)]
    s0 = np.asarray(beam.s0, float)
    s0_length = np.linalg.norm(s0)
    s0_unit = s0 / s0_length
    q = hkl.astype(float) @ crystal.A.T
    q_sq = np.einsum("ij,ij->i", q, q)
    e1 = np.cross(q, s0_unit)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    c0 = np.cross(s0_unit, e1)
    c0 /= np.linalg.norm(c0, axis=1, keepdims=True)
    a = 0.5 * q_sq / s0_length
    reachable = q_sq - a * a > 0
    b = np.sqrt(np.where(reachable, q_sq - a * a, 0.0))
    on_sphere = -a[:, None] * s0_unit + b[:, None] * c0
    q_unit = q / np.sqrt(q_sq)[:, None]
    q_perp = np.cross(q_unit, e1)
    q_perp /= np.linalg.norm(q_perp, axis=1, keepdims=True)
    delpsi = -np.arctan2(np.einsum("ij,ij->i", on_sphere, q_perp), np.einsum("ij,ij->i", on_sphere, q_unit))
    half_mosaicity = crystal.extra.get("ML_half_mosaicity_deg")
    domain_size = crystal.extra.get("ML_domain_size_ang")
    if half_mosaicity is not None and domain_size is not None:
        limit = 1.0 / np.sqrt(q_sq) / domain_size + np.deg2rad(half_mosaicity) / 2
    else:
        limit = STILLS_DELPSI_LIMIT
    keep = reachable & (np.abs(delpsi) < limit)
    s1 = s0 + on_sphere[keep]
    s1 *= (s0_length / np.linalg.norm(s1, axis=1))[:, None]
    n = len(s1)
    rays, hit = _on_detector(experiment, hkl[keep], s1, np.zeros(n), np.zeros(n, bool), crystal.A)
    return rays, delpsi[keep][hit]
