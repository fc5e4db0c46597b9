"""Summation integration, observed centroids and pixel counts of shoeboxes (numba kernels).

Inputs are a :class:`ShoeboxColumn`'s flat ``data``, ``mask``, ``background``
arrays, ``offsets`` and ``bbox`` (x0, x1, y0, y1, z0, z1; pixels and 0-based
frames).  Counts are in detector units (ADU = photons for a gain of 1).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..models.flags import MaskCode

_VALID = np.uint8(MaskCode.Valid)
_BACKGROUND = np.uint8(MaskCode.Background)
_FOREGROUND = np.uint8(MaskCode.Foreground)
_USED = np.uint8(MaskCode.BackgroundUsed)
_OVERLAPPED = np.uint8(MaskCode.Overlapped)


@njit(cache=True)
def summation(data, mask, background, offsets):
    """``(intensity, variance, background_sum, background_variance, ok)`` per shoebox.

    I = sum over valid foreground of (data - background); Var = |I| +
    |B| (1 + n_s / n_b), B the summed background under n_s foreground
    pixels, n_b the number of background pixels the model used.  ``ok`` is
    False when any foreground pixel is invalid or overlapped (the sums are
    still those of the good pixels).
    """
    n = len(offsets) - 1
    intensity = np.zeros(n)
    variance = np.zeros(n)
    bg_sum = np.zeros(n)
    bg_var = np.zeros(n)
    ok = np.zeros(n, np.bool_)
    for r in range(n):
        sum_p = 0.0
        sum_b = 0.0
        n_s = 0
        n_b = 0
        good = offsets[r + 1] > offsets[r]
        for i in range(offsets[r], offsets[r + 1]):
            m = mask[i]
            if m & _FOREGROUND:
                if (m & _VALID) and not (m & _OVERLAPPED):
                    sum_p += data[i]
                    sum_b += background[i]
                    n_s += 1
                else:
                    good = False
            elif (m & _VALID) and (m & _BACKGROUND) and (m & _USED):
                n_b += 1
        ratio = n_s / n_b if n_b > 0 else 0.0
        intensity[r] = sum_p - sum_b
        bg_sum[r] = sum_b
        bg_var[r] = abs(sum_b) * (1.0 + ratio)
        variance[r] = abs(intensity[r]) + bg_var[r]
        ok[r] = good
    return intensity, variance, bg_sum, bg_var, ok


@njit(cache=True)
def centroids(data, mask, background, offsets, bbox):
    """``(xyz (n, 3), squared standard error (n, 3))`` in pixels and 0-based frames.

    Weights are data - background on valid, non-overlapped foreground voxels
    with a positive weight; the position is the weighted mean of voxel
    centres; the reported variance is the unbiased weighted variance / sum(w)
    + 1/12.  Without a positive voxel: the bbox centre and zero variance.
    """
    n = len(offsets) - 1
    xyz = np.zeros((n, 3))
    var = np.zeros((n, 3))
    for r in range(n):
        x0, x1, y0, y1, z0, z1 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4], bbox[r, 5]
        nx, ny = x1 - x0, y1 - y0
        sw = 0.0
        sw2 = 0.0
        sx = sy = sz = 0.0
        sxx = syy = szz = 0.0
        for i in range(offsets[r], offsets[r + 1]):
            m = mask[i]
            if (m & _FOREGROUND) and (m & _VALID) and not (m & _OVERLAPPED):
                w = data[i] - background[i]
                if w > 0:
                    local = i - offsets[r]
                    cx = x0 + local % nx + 0.5
                    cy = y0 + (local // nx) % ny + 0.5
                    cz = z0 + local // (nx * ny) + 0.5
                    sw += w
                    sw2 += w * w
                    sx += w * cx
                    sy += w * cy
                    sz += w * cz
                    sxx += w * cx * cx
                    syy += w * cy * cy
                    szz += w * cz * cz
        s1 = np.array([sx, sy, sz])
        s2 = np.array([sxx, syy, szz])
        if sw <= 0:
            xyz[r] = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0, (z0 + z1) / 2.0])
            continue
        mean = s1 / sw
        xyz[r] = mean
        spread = s2 / sw - mean * mean  # biased weighted variance
        denominator = sw * sw - sw2
        if denominator > 0:
            unbiased = np.maximum(spread, 0.0) * sw * sw / denominator
            var[r] = unbiased / sw + 1.0 / 12.0
        else:
            var[r] = 1.0 / 12.0
    return xyz, var


@njit(cache=True)
def pixel_counts(mask, offsets):
    """``(valid, background, background_used, foreground)`` pixel counts per shoebox."""
    n = len(offsets) - 1
    counts = np.zeros((4, n), np.int32)
    for r in range(n):
        for i in range(offsets[r], offsets[r + 1]):
            m = mask[i]
            if m & _VALID:
                counts[0, r] += 1
                if m & _BACKGROUND:
                    counts[1, r] += 1
                    if m & _USED:
                        counts[2, r] += 1
                if m & _FOREGROUND:
                    counts[3, r] += 1
    return counts[0], counts[1], counts[2], counts[3]


@njit(cache=True)
def mask_statistics(mask, offsets):
    """Per shoebox: ``(any invalid background, any invalid foreground, # foreground, # valid foreground)``."""
    n = len(offsets) - 1
    bad_background = np.zeros(n, np.bool_)
    bad_foreground = np.zeros(n, np.bool_)
    n_foreground = np.zeros(n, np.int64)
    n_valid_foreground = np.zeros(n, np.int64)
    for r in range(n):
        for i in range(offsets[r], offsets[r + 1]):
            m = mask[i]
            valid = (m & _VALID) != 0
            if m & _BACKGROUND and not valid:
                bad_background[r] = True
            if m & _FOREGROUND:
                n_foreground[r] += 1
                if valid:
                    n_valid_foreground[r] += 1
                else:
                    bad_foreground[r] = True
    return bad_background, bad_foreground, n_foreground, n_valid_foreground
