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


#: Columns of :func:`summarise`'s pixel counts.
PIXEL_COUNTS = ("valid", "background", "background_used", "foreground", "all_foreground", "invalid_background")


@njit(cache=True)
def summarise(data, mask, background, offsets, bbox):
    """Summation intensities, observed centroids and pixel counts of every shoebox, in one pass.

    Returns ``(sums, sum_ok, xyz, xyz_variance, pixels)``:

    - ``sums`` (n, 4): I, Var(I), B, Var(B).  I = sum over valid,
      non-overlapped foreground of (data - background); B the summed
      background under those n_s pixels; Var(B) = |B| (1 + n_s / n_b) with
      n_b the valid background pixels the model used; Var(I) = |I| + Var(B).
    - ``sum_ok`` (n,): False when a foreground pixel is invalid or
      overlapped, or the box is empty (the sums are still those of the
      good pixels).
    - ``xyz``, ``xyz_variance`` (n, 3), pixels and 0-based frames: the mean
      of voxel centres weighted by data - background over valid,
      non-overlapped foreground voxels of positive weight, and the unbiased
      weighted variance / sum(w) + 1/12; without a positive voxel, the bbox
      centre and zero variance.
    - ``pixels`` (n, 6) int32, columns :data:`PIXEL_COUNTS`: valid; valid
      background; valid background used by the model; valid foreground;
      foreground; invalid background.
    """
    n = len(offsets) - 1
    sums = np.zeros((n, 4))
    sum_ok = np.zeros(n, np.bool_)
    xyz = np.zeros((n, 3))
    xyz_variance = np.zeros((n, 3))
    pixels = np.zeros((n, 6), np.int32)
    for r in range(n):
        x0, x1, y0, y1, z0, z1 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4], bbox[r, 5]
        sum_p = sum_b = 0.0
        n_s = n_b = 0
        good = offsets[r + 1] > offsets[r]
        nz = z1 - z0 if good else 0  # a box without pixels (not extracted) has nothing to add
        sw = sw2 = sx = sy = sz = sxx = syy = szz = 0.0
        n_valid = n_background = n_used = n_foreground = n_all_foreground = n_bad_background = 0
        i = offsets[r]
        for k in range(nz):
            cz = z0 + k + 0.5
            for j in range(y1 - y0):
                cy = y0 + j + 0.5
                for col in range(x1 - x0):
                    m = mask[i]
                    valid = (m & _VALID) != 0
                    n_valid += valid
                    if m & _FOREGROUND:
                        n_all_foreground += 1
                        n_foreground += valid
                        if valid and not (m & _OVERLAPPED):
                            value, level = data[i], background[i]
                            sum_p += value
                            sum_b += level
                            n_s += 1
                            w = value - level
                            if w > 0:
                                cx = x0 + col + 0.5
                                sw += w
                                sw2 += w * w
                                sx += w * cx
                                sy += w * cy
                                sz += w * cz
                                sxx += w * cx * cx
                                syy += w * cy * cy
                                szz += w * cz * cz
                        else:
                            good = False
                    if m & _BACKGROUND:
                        if valid:
                            n_background += 1
                            if m & _USED:
                                n_used += 1
                                if not (m & _FOREGROUND):
                                    n_b += 1
                        else:
                            n_bad_background += 1
                    i += 1
        ratio = n_s / n_b if n_b > 0 else 0.0
        sums[r, 0] = sum_p - sum_b
        sums[r, 2] = sum_b
        sums[r, 3] = abs(sum_b) * (1.0 + ratio)
        sums[r, 1] = abs(sums[r, 0]) + sums[r, 3]
        sum_ok[r] = good
        pixels[r, 0], pixels[r, 1], pixels[r, 2] = n_valid, n_background, n_used
        pixels[r, 3], pixels[r, 4], pixels[r, 5] = n_foreground, n_all_foreground, n_bad_background
        if sw <= 0:
            xyz[r, 0], xyz[r, 1], xyz[r, 2] = (x0 + x1) / 2.0, (y0 + y1) / 2.0, (z0 + z1) / 2.0
            continue
        denominator = sw * sw - sw2
        for axis, (first, second) in enumerate(((sx, sxx), (sy, syy), (sz, szz))):
            mean = first / sw
            xyz[r, axis] = mean
            if denominator > 0:
                spread = max(second / sw - mean * mean, 0.0)  # biased weighted variance
                xyz_variance[r, axis] = spread * sw * sw / denominator / sw + 1.0 / 12.0
            else:
                xyz_variance[r, axis] = 1.0 / 12.0
    return sums, sum_ok, xyz, xyz_variance, pixels
