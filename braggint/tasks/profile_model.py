"""Estimation of the gaussian_rs parameters sigma_b and sigma_m from strong spots.

sigma_b (beam divergence) is the count-weighted RMS angle between each
spot's pixels and its centre; sigma_m (reflecting range) is the maximum
likelihood width of the rocking curves, seen as the fraction of each spot
recorded on each frame.  All angles are in radians.  The shoeboxes are the
strong-spot shoeboxes of the indexed reference reflections (DIALS mask
codes: spot pixels Valid|Foreground, neighbour-masked pixels
Valid|Background).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.detector import Detector
from ..models.flags import VALID_FOREGROUND
from ..models.scan import Scan
from ..models.shoebox import ShoeboxColumn
from .brent import bounded_minimum
from .pixel_lab import panel_table, pixel_lab

#: Mask value of a spot pixel: exactly Valid | Foreground.
SPOT_PIXEL = int(VALID_FOREGROUND)
_TINY = 1e-10
_INVERSE_SQRT_PI = 1.0 / math.sqrt(math.pi)


class EstimationError(ValueError):
    """The strong spots do not determine the parameter."""


def _used_rows(shoeboxes: ShoeboxColumn, use: np.ndarray | None) -> np.ndarray:
    """The rows an estimate reads: ``use`` (bool per row), every row with pixels when None."""
    return shoeboxes.has_pixels if use is None else shoeboxes.has_pixels & use


def beam_divergence(detector: Detector, shoeboxes: ShoeboxColumn, centres: np.ndarray,
                    use: np.ndarray | None = None) -> float:
    """sigma_b (radians) from the pixels of each shoebox with a non-zero mask.

    Per spot ``v = sum(c a^2) / (sum(c) - 1)`` over its pixels, with c the
    raw counts (no background subtraction) and a the angle between the
    pixel centre's lab vector and the spot's ``centres`` row (a lab-frame
    vector: predicted s1 or the observed centroid's lab position).  Spots
    with ``sum(c) <= 1`` are skipped; the result is ``sqrt(mean(v))``.
    ``use``: the spots to read (bool per row; every one when None), the
    others left where they are instead of being copied out.
    """
    total, weighted = _count_weighted_angles(panel_table(detector), shoeboxes.panel.astype(np.int64),
                                             shoeboxes.bbox.astype(np.int64), shoeboxes.offsets, shoeboxes.data,
                                             shoeboxes.mask, np.ascontiguousarray(centres, dtype=np.float64),
                                             _used_rows(shoeboxes, use))
    good = total > 1
    if not good.any():
        raise EstimationError("no strong spot has more than one count for the beam-divergence estimate")
    return float(np.sqrt(np.mean(weighted[good] / (total[good] - 1))))


@njit(cache=True, error_model="numpy", nogil=True)
def _count_weighted_angles(panels, panel, bbox, offsets, data, mask, centres, use):
    """Per box: ``(sum of c, sum of c a^2)`` over voxels with a non-zero mask, c the voxel's counts and a
    the angle (radians) between its pixel centre's lab position and the box's ``centres`` row (0 for boxes
    not in ``use``).  The angles are computed once per pixel of the box's footprint, which all its frames
    share."""
    n = len(offsets) - 1
    total = np.zeros(n)
    weighted = np.zeros(n)
    largest = 1
    for r in range(n):
        largest = max(largest, (bbox[r, 1] - bbox[r, 0]) * (bbox[r, 3] - bbox[r, 2]))
    angle2 = np.empty(largest)
    for r in range(n):
        nx, ny = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2]
        area = nx * ny
        if area <= 0 or not use[r] or offsets[r + 1] == offsets[r]:
            continue
        c0, c1, c2 = centres[r, 0], centres[r, 1], centres[r, 2]
        centre_length = math.sqrt(c0 * c0 + c1 * c1 + c2 * c2)
        for j in range(ny):
            for i in range(nx):
                l0, l1, l2 = pixel_lab(panels, panel[r], bbox[r, 0] + i + 0.5, bbox[r, 2] + j + 0.5)
                cos_angle = (l0 * c0 + l1 * c1 + l2 * c2) / (math.sqrt(l0 * l0 + l1 * l1 + l2 * l2) * centre_length)
                angle2[j * nx + i] = math.acos(min(max(cos_angle, -1.0), 1.0)) ** 2
        # Each frame of the box as slices indexed from 0 (no check for negative indices per voxel), the
        # sums in locals.
        box_total = box_weighted = 0.0
        for k in range((offsets[r + 1] - offsets[r]) // area):
            start = offsets[r] + k * area
            frame_mask, frame_data = mask[start:start + area], data[start:start + area]
            for pixel in range(area):
                if frame_mask[pixel] != 0:
                    counts = float(frame_data[pixel])
                    box_total += counts
                    box_weighted += counts * angle2[pixel]
        total[r], weighted[r] = box_total, box_weighted
    return total, weighted


def spot_frames(shoeboxes: ShoeboxColumn, use: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (spot, frame) of every shoebox (in ``use``, bool per row, when given): ``(row, frame, spot pixel
    count, spot pixel sum)``; pairs row by row, frame by frame (0-based absolute frames)."""
    bbox = shoeboxes.bbox.astype(np.int64)
    frames = np.where(_used_rows(shoeboxes, use), bbox[:, 5] - bbox[:, 4], 0)
    return _spot_frame_sums(bbox, frames, shoeboxes.offsets, shoeboxes.data, shoeboxes.mask)


@njit(cache=True, error_model="numpy", nogil=True)
def _spot_frame_sums(bbox, frames, offsets, data, mask):
    n = int(frames.sum())
    row, frame = np.empty(n, np.int64), np.empty(n, np.int64)
    count, total = np.zeros(n, np.int64), np.zeros(n)
    pair = 0
    for r in range(len(frames)):
        area = (bbox[r, 1] - bbox[r, 0]) * (bbox[r, 3] - bbox[r, 2])
        for k in range(frames[r]):
            row[pair], frame[pair] = r, bbox[r, 4] + k
            start = offsets[r] + k * area
            frame_mask, frame_data = mask[start:start + area], data[start:start + area]
            spot_count, spot_total = 0, 0.0
            for voxel in range(area):
                if frame_mask[voxel] == SPOT_PIXEL:
                    spot_count += 1
                    spot_total += frame_data[voxel]
            count[pair], total[pair] = spot_count, spot_total
            pair += 1
    return row, frame, count, total


def _fraction_bounds(scan: Scan, frame: np.ndarray, phi: np.ndarray, zeta: np.ndarray):
    """``e+-`` = (tau +- dphi/2) |zeta| / sqrt(2) for frames with centre angle offset tau."""
    tau = scan.angle_from_frame(frame + 0.5) - phi
    half = scan.oscillation_rad[1] / 2.0
    scale = np.abs(zeta) / np.sqrt(2.0)
    return (tau + half) * scale, (tau - half) * scale


@njit(inline="always")
def _frame_fraction(e_plus, e_minus, sigma):
    """Fraction of a Gaussian rocking curve of width sigma on one frame (>= 1e-10)."""
    return max(0.5 * (math.erf(e_plus / sigma) - math.erf(e_minus / sigma)), _TINY)


@njit(cache=True, error_model="numpy")
def _fraction(e_plus, e_minus, sigma):
    """:func:`_frame_fraction` of every frame (arrays ``e_plus``, ``e_minus``)."""
    out = np.empty(len(e_plus))
    for i in range(len(e_plus)):
        out[i] = _frame_fraction(e_plus[i], e_minus[i], sigma)
    return out


def _minimise_log_sigma(target, low: float, high: float) -> float:
    """sigma minimising ``target(log sigma)``: downhill from the pair [low, high] (radians) until the
    minimum is bracketed, then Brent's bounded search (:mod:`.brent`) to 1e-6 in log sigma (DIALS's
    simplex stops at 1e-3; Brent's own relative tolerance, 1.5e-8 |log sigma|, is about 1e-7 here).
    Brent took 19 evaluations of the likelihood where golden-section search took 48."""
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = np.log(low), np.log(high)
    fa, fb = target(a), target(b)
    if fb > fa:
        a, b, fa, fb = b, a, fb, fa
    c = b + (b - a) / golden
    fc = target(c)
    for _ in range(200):
        if fc >= fb:
            break
        a, b, fa, fb = b, c, fb, fc
        c = b + (b - a) / golden
        fc = target(c)
    else:
        raise EstimationError("the reflecting-range estimate did not converge")
    try:
        best = bounded_minimum(target, min(a, c), max(a, c), xatol=1e-6)
    except ValueError:
        raise EstimationError("the reflecting-range estimate did not converge") from None
    if not np.isfinite(best):
        raise EstimationError("the reflecting-range estimate did not converge")
    return float(np.exp(best))


def reflecting_range(scan: Scan, shoeboxes: ShoeboxColumn, phi: np.ndarray, zeta: np.ndarray,
                     algorithm: str = "extended", use: np.ndarray | None = None) -> float:
    """sigma_m (radians) by maximum likelihood over the spots' frames.

    ``basic``: maximise the sum over (spot, frame) pairs with a spot pixel of
    log R(sigma), R the fraction of a Gaussian recorded on that frame; when
    that fails, fall back to the sample SD of tau * zeta.  ``extended``: a
    per-spot multinomial of the counts over frames,
    ``sum_j [sum_f n_jf log z_jf - K_j log Z_j + log Z_j]``.
    ``phi`` is each spot's predicted angle (rad), ``zeta`` its zeta;
    ``use`` as for :func:`beam_divergence`.
    """
    row, frame, count, total = spot_frames(shoeboxes, use)
    if algorithm == "basic":
        keep = count > 0
    elif algorithm == "extended":
        keep = total > 0
    else:
        raise ValueError(f"unknown sigma_m algorithm {algorithm!r}")
    row, frame, total = row[keep], frame[keep], total[keep]
    if len(row) == 0:
        raise EstimationError("zero pixels selected for the estimation of the reflecting range")
    e_plus, e_minus = _fraction_bounds(scan, frame, phi[row], zeta[row])
    if algorithm == "basic":
        try:
            return _minimise_log_sigma(lambda s: -np.sum(np.log(_fraction(e_plus, e_minus, np.exp(s)))),
                                       np.deg2rad(1.0), np.deg2rad(3.0))
        except (EstimationError, ValueError, FloatingPointError):
            tau_zeta = (scan.angle_from_frame(frame + 0.5) - phi[row]) * zeta[row]
            return float(np.std(tau_zeta, ddof=1))
    n_spots = len(shoeboxes)
    spot_total = np.bincount(row, weights=total, minlength=n_spots)
    present = np.bincount(row, minlength=n_spots) > 0

    def slopes(log_sigma: float) -> tuple[float, float, float]:
        return _extended_slopes(e_plus, e_minus, log_sigma, total, row, spot_total, present)

    guess = _moment_width(e_plus, e_minus, total)
    sigma = _newton_log_sigma(slopes, guess) if guess > 0 else None
    if sigma is not None:
        return sigma
    low, high = (guess / 2.0, 2.0 * guess) if guess > 0 else (np.deg2rad(0.1), np.deg2rad(1.0))
    return _minimise_log_sigma(lambda log_sigma: slopes(log_sigma)[0], low, high)


def _newton_log_sigma(slopes, start: float, tolerance: float = 1e-5, max_steps: int = 30) -> float | None:
    """sigma (radians) at the minimum of ``f``, by Newton's method on ``f'`` in log sigma from ``start``:
    ``slopes(log sigma) -> (f, f', f'')``.  None when a step meets ``f'' <= 0`` or a value that is not
    finite, or the steps do not settle within ``max_steps``: the caller then searches without derivatives.

    Each step is at most 1 in log sigma (a factor e).  Near the minimum
    the error after a step of size d is of order d^2, so stopping at a
    step below ``tolerance`` = 1e-5 leaves about 1e-10 in log sigma.
    From the moments' starting guess (:func:`_moment_width`) this takes 3
    evaluations of the slopes at 400 2M-like images and on the 6M-like
    benchmark case, where Brent's search took 15 of the likelihood alone
    (each 6-8 ms there; a slope evaluation costs about 1.3 of those), and
    it lands within 3e-8 of Brent's sigma_m (whose own tolerance is 1e-6
    in log sigma).
    """
    log_sigma = math.log(start)
    for _ in range(max_steps):
        _, slope, curvature = slopes(log_sigma)
        if not (curvature > 0.0 and math.isfinite(slope) and math.isfinite(curvature)):
            return None
        step = min(max(-slope / curvature, -1.0), 1.0)
        log_sigma += step
        if abs(step) < tolerance:
            return math.exp(log_sigma)
    return None


def _moment_width(e_plus: np.ndarray, e_minus: np.ndarray, weight: np.ndarray) -> float:
    """A first sigma (radians) for the likelihood's search: the counts' second moment about the predicted
    angles in e (:func:`_fraction_bounds`, in which a rocking curve of width sigma has variance sigma^2 / 2),
    less that of a frame's own width; 0 when not positive.

    Newton's method (:func:`_newton_log_sigma`) starts here; the search
    without derivatives, when needed, from [guess / 2, 2 guess] rather than
    [0.1, 1] degrees, which brackets the minimum in fewer steps.
    """
    centre, width = 0.5 * (e_plus + e_minus), e_plus - e_minus
    total = weight.sum()
    variance = (weight * (centre**2 - width**2 / 12.0)).sum() / total if total > 0 else 0.0
    if not variance > 0:
        return 0.0
    # Rounded (to a tenth in log sigma): sums of the same pairs in another order then start the same search.
    return math.exp(round(0.5 * math.log(2.0 * variance), 1))


@njit(cache=True, error_model="numpy", nogil=True)
def _extended_slopes(e_plus, e_minus, log_sigma, total, row, spot_total, present):
    """``(f, df/ds, d2f/ds2)`` at s = log sigma of ``f = -(sum n_jf log z_jf - sum_j (K_j - 1) log Z_j)``
    over the (spot, frame) pairs, z_jf the rocking-curve fraction of pair jf (at least 1e-10, where its
    derivatives are taken as 0) and Z_j the sum of spot j's.

    With u = e / sigma, d erf(u) / ds = -(2 / sqrt pi) u exp(-u^2) and
    d(u exp(-u^2)) / ds = -(u - 2 u^3) exp(-u^2).
    """
    sigma = math.exp(log_sigma)
    spot_sums = np.zeros((len(spot_total), 3))  # Z_j and its first and second derivatives
    value = slope = curvature = 0.0
    for i in range(len(row)):
        z = _frame_fraction(e_plus[i], e_minus[i], sigma)
        dz = d2z = 0.0
        if z > _TINY:
            upper, lower = e_plus[i] / sigma, e_minus[i] / sigma
            g_upper, g_lower = math.exp(-upper * upper), math.exp(-lower * lower)
            dz = -_INVERSE_SQRT_PI * (upper * g_upper - lower * g_lower)
            d2z = _INVERSE_SQRT_PI * ((upper - 2.0 * upper ** 3) * g_upper - (lower - 2.0 * lower ** 3) * g_lower)
        ratio = dz / z
        value -= total[i] * math.log(z)
        slope -= total[i] * ratio
        curvature -= total[i] * (d2z / z - ratio * ratio)
        spot_sums[row[i], 0] += z
        spot_sums[row[i], 1] += dz
        spot_sums[row[i], 2] += d2z
    for j in range(len(spot_total)):
        if present[j]:
            weight = spot_total[j] - 1.0
            big_z = spot_sums[j, 0]
            ratio = spot_sums[j, 1] / big_z
            value += weight * math.log(big_z)
            slope += weight * ratio
            curvature += weight * (spot_sums[j, 2] / big_z - ratio * ratio)
    return value, slope, curvature


def smooth_per_frame(values: np.ndarray, taps: int = 51) -> np.ndarray:
    """Smooth per-frame sigmas: Gaussian kernel (sigma = taps/6 frames) on sigma^2, edges replicated."""
    half = taps // 2
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / (half / 3.0)) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(np.asarray(values, float) ** 2, half, mode="edge")
    return np.sqrt(np.convolve(padded, kernel, mode="valid"))
