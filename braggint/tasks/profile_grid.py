"""Mapping shoebox pixels onto the gaussian_rs profile grid (numba kernels).

The grid has (2g+1)^3 cells in the local reciprocal-space frame, ordered
(e3, e2, e1); cell steps are ``sigma * n_sigma_grid / (g + 0.5)`` (sigma_b
for e1/e2, sigma_m for e3) and the centre lies at g + 0.5 cells, so the grid
spans +-n_sigma_grid sigma.  Each detector pixel is the quadrilateral of its
four corners' grid coordinates; its counts are shared among the grid cells
in proportion to the overlap areas (exact polygon clipping).  Each frame's
counts are shared among e3 slices in proportion to a Gaussian rocking curve
of width sigma_m integrated over the overlap of frame and slice in angle.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.flags import VALID_FOREGROUND

_VALID_FOREGROUND = np.uint8(VALID_FOREGROUND)


# The clipping helpers are inlined into their callers: as calls they cost a third of the transform.
@njit(inline="always")
def _clip(xs, ys, n, axis, bound, keep_above, out_x, out_y):
    """Clip polygon (xs, ys)[:n] by the half-plane coordinate[axis] >= bound (or <=); returns new size."""
    m = 0
    for k in range(n):
        following = k + 1 if k + 1 < n else 0
        ax, ay = xs[k], ys[k]
        bx, by = xs[following], ys[following]
        a_value = ax if axis == 0 else ay
        b_value = bx if axis == 0 else by
        a_in = a_value >= bound if keep_above else a_value <= bound
        b_in = b_value >= bound if keep_above else b_value <= bound
        if a_in:
            out_x[m] = ax
            out_y[m] = ay
            m += 1
        if a_in != b_in:
            t = (bound - a_value) / (b_value - a_value)
            out_x[m] = ax + t * (bx - ax)
            out_y[m] = ay + t * (by - ay)
            m += 1
    return m


@njit(inline="always")
def _area(xs, ys, n):
    """Area of polygon (xs, ys)[:n] (shoelace formula)."""
    total = xs[n - 1] * ys[0] - xs[0] * ys[n - 1]
    for k in range(n - 1):
        total += xs[k] * ys[k + 1] - xs[k + 1] * ys[k]
    return abs(total) * 0.5


@njit(inline="always")
def _clip_to_band(xs, ys, n, axis, low, low_min, high_max, out_x, out_y, tmp_x, tmp_y):
    """Polygon (xs, ys)[:n] clipped to low <= coordinate[axis] <= low + 1, into (out_x, out_y); returns its size.

    ``low_min``/``high_max``: the polygon's extent along the axis; a side it
    does not cross is not clipped.
    """
    if low_min < low:
        if high_max > low + 1.0:
            n = _clip(xs, ys, n, axis, low, True, tmp_x, tmp_y)
            return _clip(tmp_x, tmp_y, n, axis, low + 1.0, False, out_x, out_y)
        return _clip(xs, ys, n, axis, low, True, out_x, out_y)
    if high_max > low + 1.0:
        return _clip(xs, ys, n, axis, low + 1.0, False, out_x, out_y)
    for k in range(n):
        out_x[k] = xs[k]
        out_y[k] = ys[k]
    return n


@njit(inline="always")
def _extent(values, n):
    """``(min, max)`` of values[:n]."""
    low = high = values[0]
    for k in range(1, n):
        low, high = min(low, values[k]), max(high, values[k])
    return low, high


@njit(cache=True)
def _pixel_quad(gx, gy, corner, stride, qx, qy):
    """The grid-space quadrilateral of the pixel whose first corner is ``corner`` (corners row-major)."""
    qx[0], qy[0] = gx[corner], gy[corner]
    qx[1], qy[1] = gx[corner + 1], gy[corner + 1]
    qx[2], qy[2] = gx[corner + stride + 1], gy[corner + stride + 1]
    qx[3], qy[3] = gx[corner + stride], gy[corner + stride]


@njit(cache=True)
def _scratch():
    """Work arrays of the clipping: a pixel quadrilateral, its part in one column of cells, its part in
    one cell and a buffer between clips."""
    return (np.empty(4), np.empty(4), np.empty(16), np.empty(16), np.empty(16), np.empty(16), np.empty(16),
            np.empty(16))


@njit(cache=True)
def pixel_cell_overlaps(gx, gy, ny, nx, x0, y0, width, height, size, wanted):
    """Overlaps of a shoebox's pixel quadrilaterals with the (e1, e2) grid cells.

    ``gx, gy``: grid coordinates (e1, e2) of the (ny+1) x (nx+1) pixel
    corners, row-major; ``wanted`` (ny * nx): the pixels to map; pixels
    outside the panel (``width`` x ``height``) and degenerate quadrilaterals
    are skipped.  Returns ``(pixel, cell_y, cell_x, area, quad_area, n)``:
    the first n entries list each pixel (flat index j * nx + i) with every
    cell it overlaps and the overlap area (cells have unit area);
    ``quad_area`` (ny * nx) is each pixel's whole area on the grid.
    """
    qx, qy, strip_x, strip_y, cell_x_buf, cell_y_buf, tmp_x, tmp_y = _scratch()
    capacity = 4 * int(wanted.sum()) + 16
    pixel = np.empty(capacity, np.int64)
    cell_y = np.empty(capacity, np.int64)
    cell_x = np.empty(capacity, np.int64)
    area = np.empty(capacity)
    quad_area = np.zeros(ny * nx)
    n = 0
    for j in range(ny):
        if y0 + j < 0 or y0 + j >= height:
            continue
        for i in range(nx):
            flat = j * nx + i
            if not wanted[flat] or x0 + i < 0 or x0 + i >= width:
                continue
            _pixel_quad(gx, gy, j * (nx + 1) + i, nx + 1, qx, qy)
            whole = _area(qx, qy, 4)
            if whole <= 0.0:
                continue
            quad_area[flat] = whole
            (x_min, x_max), (y_min, y_max) = _extent(qx, 4), _extent(qy, 4)
            ix0, ix1 = max(int(math.floor(x_min)), 0), min(int(math.floor(x_max)), size - 1)
            iy0, iy1 = max(int(math.floor(y_min)), 0), min(int(math.floor(y_max)), size - 1)
            # Column by column, then cell by cell within the column; a side is clipped only where
            # the polygon crosses it, so a quadrilateral inside one cell is not clipped at all.
            for ii in range(ix0, ix1 + 1):
                n_strip = _clip_to_band(qx, qy, 4, 0, float(ii), x_min, x_max, strip_x, strip_y, tmp_x, tmp_y)
                if n_strip < 3:
                    continue
                s_min, s_max = _extent(strip_y, n_strip)
                for jj in range(max(iy0, int(math.floor(s_min))), min(iy1, int(math.floor(s_max))) + 1):
                    n_cell = _clip_to_band(strip_x, strip_y, n_strip, 1, float(jj), s_min, s_max, cell_x_buf,
                                           cell_y_buf, tmp_x, tmp_y)
                    if n_cell < 3:
                        continue
                    part = _area(cell_x_buf, cell_y_buf, n_cell)
                    if part <= 0.0:
                        continue
                    if n == capacity:
                        capacity *= 2
                        pixel, cell_y, cell_x, area = (_grown(pixel, capacity), _grown(cell_y, capacity),
                                                       _grown(cell_x, capacity), _grown(area, capacity))
                    pixel[n], cell_y[n], cell_x[n], area[n] = flat, jj, ii, part
                    n += 1
    return pixel, cell_y, cell_x, area, quad_area, n


@njit(cache=True)
def _grown(values, capacity):
    out = np.empty(capacity, values.dtype)
    out[:len(values)] = values
    return out


@njit(cache=True)
def frame_fractions(z0, nz, array_start, phi0, dphi, phi, zeta, sigma_m, step_e3, half):
    """``(forward (nz, G), coverage (G,), reverse (G, nz))`` for one reflection.

    ``forward[k, v]``: the share of frame z0+k's counts belonging to e3
    slice v; ``reverse[v, k]``: the share of slice v's Gaussian weight that
    falls on frame z0+k; ``coverage[v]`` = sum over k of reverse[v, k]
    (a slice is usable when it exceeds 0.99).
    """
    size = 2 * half + 1
    forward = np.zeros((nz, size))
    coverage = np.zeros(size)
    reverse = np.zeros((size, nz))
    scale = abs(zeta) / (math.sqrt(2.0) * sigma_m)
    for k in range(nz):
        a = phi0 + (z0 + k - array_start) * dphi
        b = a + dphi
        whole = math.erf((b - phi) * scale) - math.erf((a - phi) * scale)
        for v in range(size):
            lo = ((v - half - 0.5) * step_e3) / zeta + phi
            hi = ((v - half + 0.5) * step_e3) / zeta + phi
            if lo > hi:
                lo, hi = hi, lo
            slice_weight = math.erf((hi - phi) * scale) - math.erf((lo - phi) * scale)
            lo2, hi2 = max(lo, a), min(hi, b)
            if lo2 < hi2:
                part = math.erf((hi2 - phi) * scale) - math.erf((lo2 - phi) * scale)
                if whole != 0.0:
                    forward[k, v] = part / whole
                if slice_weight != 0.0:
                    coverage[v] += part / slice_weight
                    reverse[v, k] = part / slice_weight
    return forward, coverage, reverse


@njit(cache=True)
def forward_transform(gx, gy, nz, ny, nx, x0, y0, width, height, data, background, mask, zfraction, size,
                      grid, bgrid):
    """Add one shoebox's counts to ``grid`` and its background to ``bgrid`` on the profile grid.

    ``gx, gy``: grid coordinates (e1, e2) of the (ny+1) x (nx+1) pixel
    corners, row-major; ``data``, ``background``, ``mask``: the shoebox's
    voxels (frames, rows, columns); only Valid & Foreground voxels are
    mapped; pixels outside the panel (``width`` x ``height``) are skipped.
    Each pixel's frames are first shared among the e3 slices (a column per
    pixel with a voxel to map), then each column among the cells its
    quadrilateral overlaps, so the polygon clipping runs once per pixel and
    only for those pixels.
    """
    n_pixels = ny * nx
    slot = np.full(n_pixels, -1, np.int64)  # each mapped pixel's column
    n_columns = 0
    for k in range(nz):
        if not _reaches_a_slice(zfraction[k]):
            continue
        for p in range(n_pixels):
            if slot[p] < 0 and (mask[k * n_pixels + p] & _VALID_FOREGROUND) == _VALID_FOREGROUND:
                slot[p] = n_columns
                n_columns += 1
    if n_columns == 0:
        return
    column = np.zeros((n_columns, size))
    b_column = np.zeros((n_columns, size))
    first, last = size, 0  # slices any mapped frame reaches
    for k in range(nz):
        lo, hi = size, 0
        for kk in range(size):
            if zfraction[k, kk] != 0.0:
                lo, hi = min(lo, kk), kk + 1
        if lo >= hi:
            continue
        for p in range(n_pixels):
            voxel = k * n_pixels + p
            if (mask[voxel] & _VALID_FOREGROUND) != _VALID_FOREGROUND:
                continue
            first, last = min(first, lo), max(last, hi)
            value, b_value, c = data[voxel], background[voxel], slot[p]
            for kk in range(lo, hi):
                column[c, kk] += value * zfraction[k, kk]
                b_column[c, kk] += b_value * zfraction[k, kk]
    pixel, cell_y, cell_x, area, quad_area, n = pixel_cell_overlaps(gx, gy, ny, nx, x0, y0, width, height, size,
                                                                    slot >= 0)
    for e in range(n):
        p, jj, ii = pixel[e], cell_y[e], cell_x[e]
        fraction = area[e] / quad_area[p]
        c = slot[p]
        for kk in range(first, last):
            grid[kk, jj, ii] += fraction * column[c, kk]
            bgrid[kk, jj, ii] += fraction * b_column[c, kk]


@njit(inline="always")
def _reaches_a_slice(fractions):
    for value in fractions:
        if value != 0.0:
            return True
    return False


@njit(cache=True)
def reverse_transform(gx, gy, nz, ny, nx, x0, y0, width, height, grid, reverse, size):
    """The grid profile mapped back onto the shoebox's pixels (nz * ny * nx, flat).

    Each cell shares its content among the pixels by the area of the pixel's
    quadrilateral inside the cell (cells have unit area), and each e3 slice
    among the frames by ``reverse``.  Pixels outside the panel get 0.
    """
    out = np.zeros(nz * ny * nx)
    pixel, cell_y, cell_x, area, _, n = pixel_cell_overlaps(gx, gy, ny, nx, x0, y0, width, height, size,
                                                            np.ones(ny * nx, np.bool_))
    for e in range(n):
        p, jj, ii = pixel[e], cell_y[e], cell_x[e]
        for k in range(nz):
            total = 0.0
            for v in range(size):
                total += grid[v, jj, ii] * reverse[v, k]
            out[k * ny * nx + p] += area[e] * total
    return out
