"""Pixel-to-grid overlaps of the gaussian_rs transform: exact areas by polygon clipping."""

from __future__ import annotations

import numpy as np
import pytest

from braggint.tasks.profile_grid import pixel_cell_overlaps


def _corners(x, y):
    """Row-major (ny+1) x (nx+1) corner grid coordinates as the flat gx, gy the kernel takes."""
    gx, gy = np.meshgrid(x, y)
    return gx.ravel().astype(float), gy.ravel().astype(float)


def _dense(gx, gy, ny, nx, size=11):
    pixel, cell_y, cell_x, area, quad_area, n = pixel_cell_overlaps(gx, gy, ny, nx, 0, 0, 100, 100, size,
                                                                    np.ones(ny * nx, bool))
    out = np.zeros((ny * nx, size, size))
    np.add.at(out, (pixel[:n], cell_y[:n], cell_x[:n]), area[:n])
    return out, quad_area


def test_axis_aligned_pixels_overlap_cells_by_products_of_intervals():
    x = np.array([1.3, 2.1, 3.75, 4.0])  # 3 pixel columns, straddling cell edges or ending on one
    y = np.array([2.6, 3.4, 5.2])
    out, quad_area = _dense(*_corners(x, y), ny=2, nx=3)
    for j in range(2):
        for i in range(3):
            expected = np.zeros((11, 11))
            for cy in range(11):
                for cx in range(11):
                    wide = max(0.0, min(x[i + 1], cx + 1) - max(x[i], cx))
                    high = max(0.0, min(y[j + 1], cy + 1) - max(y[j], cy))
                    expected[cy, cx] = wide * high
            np.testing.assert_allclose(out[j * 3 + i], expected, atol=1e-14)
            assert quad_area[j * 3 + i] == pytest.approx((x[i + 1] - x[i]) * (y[j + 1] - y[j]))


def test_skewed_pixels_share_their_whole_area_among_the_cells():
    rng = np.random.default_rng(3)
    base_x, base_y = np.meshgrid(np.arange(6) * 1.7 + 1.0, np.arange(5) * 1.3 + 1.5)
    rotated_x = 5.5 + 0.9 * (base_x - 5.5) - 0.4 * (base_y - 5.5) + rng.uniform(-0.1, 0.1, base_x.shape)
    rotated_y = 5.5 + 0.4 * (base_x - 5.5) + 0.9 * (base_y - 5.5) + rng.uniform(-0.1, 0.1, base_x.shape)
    out, quad_area = _dense(rotated_x.ravel(), rotated_y.ravel(), ny=4, nx=5)
    assert (quad_area > 0).all()
    # Every pixel lies inside the 11 x 11 grid, so its overlaps add up to its area, and several cells share most.
    np.testing.assert_allclose(out.sum(axis=(1, 2)), quad_area, rtol=1e-12)
    assert ((out > 1e-9).sum(axis=(1, 2)) >= 2).mean() > 0.5
    # A pixel hanging over the grid's edge keeps only the part inside.
    edge, edge_area = _dense(*_corners(np.array([-0.5, 0.5]), np.array([3.0, 4.0])), ny=1, nx=1)
    assert edge.sum() == pytest.approx(0.5) and edge_area[0] == pytest.approx(1.0)
