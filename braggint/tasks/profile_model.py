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

import numpy as np
from numba import njit
from scipy.optimize import minimize_scalar
from scipy.special import erf

from ..models.detector import Detector
from ..models.flags import VALID_FOREGROUND
from ..models.scan import Scan
from ..models.shoebox import ShoeboxColumn

#: Mask value of a spot pixel: exactly Valid | Foreground.
SPOT_PIXEL = int(VALID_FOREGROUND)
_TINY = 1e-10
#: Voxels of strong-spot shoeboxes handled at once (bounds the memory of the estimate).
CHUNK_VOXELS = 500_000


class EstimationError(ValueError):
    """The strong spots do not determine the parameter."""


def beam_divergence(detector: Detector, shoeboxes: ShoeboxColumn, centres: np.ndarray) -> float:
    """sigma_b (radians) from the pixels of each shoebox with a non-zero mask.

    Per spot ``v = sum(c a^2) / (sum(c) - 1)`` over its pixels, with c the
    raw counts (no background subtraction) and a the angle between the
    pixel centre's lab vector and the spot's ``centres`` row (a lab-frame
    vector: predicted s1 or the observed centroid's lab position).  Spots
    with ``sum(c) <= 1`` are skipped; the result is ``sqrt(mean(v))``.
    """
    n = len(shoeboxes)
    total = np.zeros(n)
    weighted = np.zeros(n)
    # Whole shoeboxes at a time, about CHUNK_VOXELS voxels per chunk, to bound the memory.
    ends = np.searchsorted(shoeboxes.offsets, np.arange(CHUNK_VOXELS, shoeboxes.offsets[-1] + CHUNK_VOXELS,
                                                        CHUNK_VOXELS))
    first = 0
    for last in np.unique(np.clip(ends, 1, n)):
        rows_here = np.arange(first, last)
        part = shoeboxes.select(rows_here)
        # Angles are computed once per pixel of a box's footprint, which all its frames share.
        footprint_start, row, y, x = part.footprints()
        lab = np.empty((len(row), 3))
        for p in np.unique(part.panel):
            sel = part.panel[row] == p
            lab[sel] = detector[int(p)].pixel_lab_coord(np.column_stack([x[sel] + 0.5, y[sel] + 0.5]))
        centre = centres[rows_here][row]
        cos_angle = np.einsum("ij,ij->i", lab, centre) / (np.linalg.norm(lab, axis=1)
                                                          * np.linalg.norm(centre, axis=1))
        angle = np.arccos(np.clip(cos_angle, -1.0, 1.0))
        total[rows_here], weighted[rows_here] = _count_weighted_sums(part.data, part.mask, part.offsets,
                                                                     footprint_start, angle**2)
        first = last
    good = total > 1
    if not good.any():
        raise EstimationError("no strong spot has more than one count for the beam-divergence estimate")
    return float(np.sqrt(np.mean(weighted[good] / (total[good] - 1))))


@njit(cache=True)
def _count_weighted_sums(data, mask, offsets, footprint_start, footprint_values):
    """Per box: ``(sum of c, sum of c v)`` over voxels with a non-zero mask, c the voxel's counts and v
    the ``footprint_values`` entry of its footprint pixel."""
    n = len(offsets) - 1
    total = np.zeros(n)
    weighted = np.zeros(n)
    for r in range(n):
        first, area = footprint_start[r], footprint_start[r + 1] - footprint_start[r]
        i = offsets[r]
        for _ in range((offsets[r + 1] - offsets[r]) // max(area, 1)):
            for pixel in range(area):
                if mask[i] != 0:
                    counts = float(data[i])
                    total[r] += counts
                    weighted[r] += counts * footprint_values[first + pixel]
                i += 1
    return total, weighted


def spot_frames(shoeboxes: ShoeboxColumn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (spot, frame) of every shoebox: ``(row, frame, spot pixel count, spot pixel sum)``."""
    segment, segment_row, segment_frame = shoeboxes.frame_segments()
    spot = shoeboxes.mask == SPOT_PIXEL
    n = len(segment_row)
    count = np.bincount(segment[spot], minlength=n)
    total = np.bincount(segment[spot], weights=shoeboxes.data[spot].astype(float), minlength=n)
    return segment_row, segment_frame, count, total


def _fraction_bounds(scan: Scan, frame: np.ndarray, phi: np.ndarray, zeta: np.ndarray):
    """``e+-`` = (tau +- dphi/2) |zeta| / sqrt(2) for frames with centre angle offset tau."""
    tau = scan.angle_from_frame(frame + 0.5) - phi
    half = scan.oscillation_rad[1] / 2.0
    scale = np.abs(zeta) / np.sqrt(2.0)
    return (tau + half) * scale, (tau - half) * scale


def _fraction(e_plus, e_minus, sigma):
    """Fraction of a Gaussian rocking curve of width sigma on each frame (>= 1e-10)."""
    return np.maximum(0.5 * (erf(e_plus / sigma) - erf(e_minus / sigma)), _TINY)


def _minimise_log_sigma(target, low: float, high: float) -> float:
    """sigma minimising ``target(log sigma)``: downhill from the pair [low, high] (radians) until the
    minimum is bracketed, then Brent's bounded search (scipy) to 1e-8 in log sigma (19 evaluations of
    the likelihood where golden-section search took 48)."""
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
    best = minimize_scalar(target, bounds=(min(a, c), max(a, c)), method="bounded", options={"xatol": 1e-8}).x
    if not np.isfinite(best):
        raise EstimationError("the reflecting-range estimate did not converge")
    return float(np.exp(best))


def reflecting_range(scan: Scan, shoeboxes: ShoeboxColumn, phi: np.ndarray, zeta: np.ndarray,
                     algorithm: str = "extended") -> float:
    """sigma_m (radians) by maximum likelihood over the spots' frames.

    ``basic``: maximise the sum over (spot, frame) pairs with a spot pixel of
    log R(sigma), R the fraction of a Gaussian recorded on that frame; when
    that fails, fall back to the sample SD of tau * zeta.  ``extended``: a
    per-spot multinomial of the counts over frames,
    ``sum_j [sum_f n_jf log z_jf - K_j log Z_j + log Z_j]``.
    ``phi`` is each spot's predicted angle (rad), ``zeta`` its zeta.
    """
    row, frame, count, total = spot_frames(shoeboxes)
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

    def negative_log_likelihood(log_sigma):
        z = _fraction(e_plus, e_minus, np.exp(log_sigma))
        log_big_z = np.log(np.bincount(row, weights=z, minlength=n_spots)[present])
        return -(np.sum(total * np.log(z)) - np.sum((spot_total[present] - 1.0) * log_big_z))

    return _minimise_log_sigma(negative_log_likelihood, np.deg2rad(0.1), np.deg2rad(1.0))


def smooth_per_frame(values: np.ndarray, taps: int = 51) -> np.ndarray:
    """Smooth per-frame sigmas: Gaussian kernel (sigma = taps/6 frames) on sigma^2, edges replicated."""
    half = taps // 2
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / (half / 3.0)) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(np.asarray(values, float) ** 2, half, mode="edge")
    return np.sqrt(np.convolve(padded, kernel, mode="valid"))
