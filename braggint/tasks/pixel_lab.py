"""Laboratory positions of pixel coordinates inside compiled kernels.

:func:`panel_table` packs each panel's geometry into one float64 row, and
:func:`pixel_lab` gives the lab position (mm) of a continuous pixel
coordinate from it, with the parallax correction exactly as
:meth:`braggint.models.detector.Panel.pixel_lab_coord` applies it (the
absorption depth evaluated along the uncorrected point's direction).
Kernels that need the lab direction of every pixel of many shoeboxes call
it per pixel instead of building (pixels, 3) arrays in numpy.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.detector import Detector

#: Columns of a :func:`panel_table` row: origin (3), fast (3), slow (3) in the lab frame (mm, unit
#: vectors), pixel width and height (mm), parallax mu (1/mm) and t0 (mm), the unit normal pointing away
#: from the sample (3), and 1.0 when the parallax correction applies (else 0.0).
PANEL_COLUMNS = 17


def panel_table(detector: Detector) -> np.ndarray:
    """(panels, :data:`PANEL_COLUMNS`) float64 geometry of every panel."""
    table = np.zeros((len(detector.panels), PANEL_COLUMNS))
    for row, panel in enumerate(detector.panels):
        fast, slow, origin = panel.global_frame
        table[row, 0:3], table[row, 3:6], table[row, 6:9] = origin, fast, slow
        table[row, 9:11] = panel.pixel_size
        parallax = panel.parallax_params
        if parallax is not None:
            normal = panel.normal
            table[row, 11:13] = parallax
            table[row, 13:16] = normal if np.dot(origin, normal) >= 0 else -normal
            table[row, 16] = 1.0
    return table


@njit(inline="always")
def pixel_lab(table, p, x_px, y_px):
    """``(x, y, z)`` lab position (mm) of pixel coordinate (x_px, y_px) on panel ``p`` of ``table``."""
    o0, o1, o2 = table[p, 0], table[p, 1], table[p, 2]
    f0, f1, f2 = table[p, 3], table[p, 4], table[p, 5]
    g0, g1, g2 = table[p, 6], table[p, 7], table[p, 8]
    x_mm, y_mm = x_px * table[p, 9], y_px * table[p, 10]
    if table[p, 16] != 0.0:
        mu, t0 = table[p, 11], table[p, 12]
        l0 = o0 + f0 * x_mm + g0 * y_mm
        l1 = o1 + f1 * x_mm + g1 * y_mm
        l2 = o2 + f2 * x_mm + g2 * y_mm
        norm = math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
        u0, u1, u2 = l0 / norm, l1 / norm, l2 / norm
        cos_t = u0 * table[p, 13] + u1 * table[p, 14] + u2 * table[p, 15]
        depth = 1.0 / mu - (t0 / cos_t + 1.0 / mu) * math.exp(-mu * t0 / cos_t)
        x_mm -= (u0 * f0 + u1 * f1 + u2 * f2) * depth
        y_mm -= (u0 * g0 + u1 * g1 + u2 * g2) * depth
    return o0 + f0 * x_mm + g0 * y_mm, o1 + f1 * x_mm + g1 * y_mm, o2 + f2 * x_mm + g2 * y_mm


@njit(cache=True, error_model="numpy")
def pixel_lab_many(table, panel, xy_px):
    """Lab positions (n, 3) of pixel coordinates ``xy_px`` (n, 2) on panels ``panel`` (n,) (for tests)."""
    out = np.empty((len(panel), 3))
    for i in range(len(panel)):
        out[i, 0], out[i, 1], out[i, 2] = pixel_lab(table, panel[i], xy_px[i, 0], xy_px[i, 1])
    return out
