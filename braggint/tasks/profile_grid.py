"""Mapping shoebox pixels onto the gaussian_rs profile grid (numba kernels).

The grid has (2g+1)^3 cells in the local reciprocal-space frame, ordered
(e3, e2, e1); cell steps are ``sigma * n_sigma_grid / (g + 0.5)`` (sigma_b
for e1/e2, sigma_m for e3) and the centre lies at g + 0.5 cells, so the grid
spans +-n_sigma_grid sigma.  Each detector pixel is the quadrilateral of its
four corners' grid coordinates; its counts are shared among the grid cells
in proportion to the overlap areas (exact, from the quadrilateral's edges).
Each frame's counts are shared among e3 slices in proportion to a Gaussian
rocking curve of width sigma_m integrated over the overlap of frame and
slice in angle.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.flags import VALID_FOREGROUND

_VALID_FOREGROUND = np.uint8(VALID_FOREGROUND)


@njit(inline="always")
def _covered_length(low, high, length, per_u):
    """Integral of clamp(u, 0, 1) along a segment of ``length`` over which u runs linearly between ``low``
    and ``high`` (``low <= high``), ``per_u`` being its length per unit of u (any value for a level
    segment): 0 where u <= 0, 1 where u >= 1, u between (split exactly at u = 0 and 1)."""
    if low >= 1.0:
        return length
    if high <= 0.0:
        return 0.0
    if high - low <= 0.0:
        return length * low  # a level segment with 0 < u < 1
    a, b = max(low, 0.0), min(high, 1.0)
    above = (high - 1.0) * per_u if high > 1.0 else 0.0
    return above + (b - a) * per_u * 0.5 * (a + b)


@njit(cache=True, error_model="numpy")
def pixel_cell_overlaps(gx, gy, ny, nx, x0, y0, width, height, size, wanted):
    """Overlaps of a shoebox's pixel quadrilaterals with the (e1, e2) grid cells.

    ``gx, gy``: grid coordinates (e1, e2) of the (ny+1) x (nx+1) pixel
    corners, row-major; ``wanted`` (ny * nx): the pixels to map; pixels
    outside the panel (``width`` x ``height``) and degenerate quadrilaterals
    are skipped.  Returns ``(pixel, cell_y, cell_x, area, quad_area, n)``:
    the first n entries list each pixel (flat index j * nx + i) with every
    cell it overlaps and the overlap area (cells have unit area), cell
    columns in turn and cells up each column; ``quad_area`` (ny * nx) is
    each pixel's whole area on the grid (see :func:`_pixel_shares`).
    """
    corners = np.empty((2, 4))
    capacity = _cells_spanned(gx, gy, ny, nx, size, wanted)
    pixel = np.empty(capacity, np.int64)
    cell_y = np.empty(capacity, np.int64)
    cell_x = np.empty(capacity, np.int64)
    area = np.empty(capacity)
    quad_area = np.zeros(ny * nx)
    share = np.zeros((size, size))
    n = 0
    for j in range(ny):
        if y0 + j < 0 or y0 + j >= height:
            continue
        for i in range(nx):
            flat = j * nx + i
            if not wanted[flat] or x0 + i < 0 or x0 + i >= width:
                continue
            whole, ix0, ix1, iy0, iy1 = _pixel_shares(gx, gy, j * (nx + 1) + i, nx + 1, size, corners, share)
            quad_area[flat] = whole
            for ii in range(ix0, ix1 + 1):
                for jj in range(iy0, iy1 + 1):
                    if share[jj, ii] > 0.0:
                        pixel[n], cell_y[n], cell_x[n], area[n] = flat, jj, ii, share[jj, ii]
                        n += 1
    return pixel, cell_y, cell_x, area, quad_area, n


@njit(inline="always")
def _pixel_shares(gx, gy, corner, stride, size, corners, share):
    """One pixel's overlap with each grid cell it touches.

    The pixel is the quadrilateral of the corners at flat indices
    ``corner``, ``corner + 1``, ``corner + stride + 1``, ``corner + stride``
    of ``gx, gy`` (grid coordinates).  Returns ``(its whole area, ix0, ix1,
    iy0, iy1)`` and fills ``share[iy0:iy1 + 1, ix0:ix1 + 1]`` (signed; a
    cell it misses reads <= 0); the area is 0, and the cell range empty, for
    a degenerate quadrilateral, and the range empty for one off the grid.
    ``corners`` (2, 4) is work space.

    The overlap with cell (ii, jj) is exact, from the quadrilateral's edges
    (Green's theorem): for a vertical line through the cell column, the
    quadrilateral covers [y_low, y_high], and the cell's share of that is
    clamp(y_high - jj, 0, 1) - clamp(y_low - jj, 0, 1); integrating along
    every edge, with the sign of its direction in x, adds those up over the
    column.  About 1.6x faster than clipping the quadrilateral against each
    cell (Sutherland-Hodgman), with the same areas to 2e-14.
    """
    qx, qy = corners[0], corners[1]
    qx[0], qy[0] = gx[corner], gy[corner]
    qx[1], qy[1] = gx[corner + 1], gy[corner + 1]
    qx[2], qy[2] = gx[corner + stride + 1], gy[corner + stride + 1]
    qx[3], qy[3] = gx[corner + stride], gy[corner + stride]
    signed = 0.5 * ((qx[3] * qy[0] - qx[0] * qy[3]) + (qx[0] * qy[1] - qx[1] * qy[0])
                    + (qx[1] * qy[2] - qx[2] * qy[1]) + (qx[2] * qy[3] - qx[3] * qy[2]))
    if signed == 0.0:
        return 0.0, 0, -1, 0, -1
    x_min, x_max = min(min(qx[0], qx[1]), min(qx[2], qx[3])), max(max(qx[0], qx[1]), max(qx[2], qx[3]))
    y_min, y_max = min(min(qy[0], qy[1]), min(qy[2], qy[3])), max(max(qy[0], qy[1]), max(qy[2], qy[3]))
    ix0, ix1 = max(int(math.floor(x_min)), 0), min(int(math.floor(x_max)), size - 1)
    iy0, iy1 = max(int(math.floor(y_min)), 0), min(int(math.floor(y_max)), size - 1)
    if ix0 > ix1 or iy0 > iy1:
        return abs(signed), 0, -1, 0, -1
    for jj in range(iy0, iy1 + 1):
        for ii in range(ix0, ix1 + 1):
            share[jj, ii] = 0.0
    # Counter-clockwise corners run right to left along the top: those edges add, the bottom ones
    # subtract; clockwise corners the other way round.
    orientation = -1.0 if signed > 0 else 1.0
    for k in range(4):
        xa, ya, xb, yb = qx[k], qy[k], qx[(k + 1) % 4], qy[(k + 1) % 4]
        if xa == xb:
            continue  # a vertical edge adds nothing
        sign = orientation if xb > xa else -orientation
        left, right = min(xa, xb), max(xa, xb)
        slope = (yb - ya) / (xb - xa)
        for ii in range(max(int(math.floor(left)), ix0), min(int(math.floor(right)), ix1) + 1):
            start, stop = max(left, float(ii)), min(right, ii + 1.0)
            if stop <= start:
                continue
            y_start, y_stop = ya + (start - xa) * slope, ya + (stop - xa) * slope
            low, high = min(y_start, y_stop), max(y_start, y_stop)
            # The segment's length per unit of y, the same in every cell row: divided once, not per row.
            per_y = (stop - start) / (high - low) if high > low else 0.0
            for jj in range(iy0, iy1 + 1):
                share[jj, ii] += sign * _covered_length(low - jj, high - jj, stop - start, per_y)
    return abs(signed), ix0, ix1, iy0, iy1


@njit(cache=True, error_model="numpy")
def _cells_spanned(gx, gy, ny, nx, size, wanted):
    """Upper bound of :func:`pixel_cell_overlaps`'s entries: the cells of each wanted pixel's bounding box."""
    total = 0
    stride = nx + 1
    for j in range(ny):
        for i in range(nx):
            if not wanted[j * nx + i]:
                continue
            corner = j * stride + i
            x_min = min(min(gx[corner], gx[corner + 1]), min(gx[corner + stride], gx[corner + stride + 1]))
            x_max = max(max(gx[corner], gx[corner + 1]), max(gx[corner + stride], gx[corner + stride + 1]))
            y_min = min(min(gy[corner], gy[corner + 1]), min(gy[corner + stride], gy[corner + stride + 1]))
            y_max = max(max(gy[corner], gy[corner + 1]), max(gy[corner + stride], gy[corner + stride + 1]))
            columns = min(int(math.floor(x_max)), size - 1) - max(int(math.floor(x_min)), 0) + 1
            rows = min(int(math.floor(y_max)), size - 1) - max(int(math.floor(y_min)), 0) + 1
            total += max(columns, 0) * max(rows, 0)
    return total


@njit(inline="always")
def row_grid_corners(c1, c2, start, stop, origin, step, gx, gy):
    """Grid coordinates (e1, e2) of one row's pixel corners ``c1[start:stop]``, ``c2[start:stop]`` (local
    coordinates, radians): ``origin + c / step`` into the leading entries of the work arrays ``gx``, ``gy``;
    returns views of those entries."""
    n = stop - start
    for t in range(n):
        gx[t] = origin + c1[start + t] / step
        gy[t] = origin + c2[start + t] / step
    return gx[:n], gy[:n]


@njit(cache=True, error_model="numpy")
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
    # The rocking curve's erf at every slice and frame edge, once each: an overlap of a slice and a
    # frame runs between two of those edges.
    slice_lo, slice_hi = np.empty(size), np.empty(size)
    erf_lo, erf_hi = np.empty(size), np.empty(size)
    for v in range(size):
        lo = ((v - half - 0.5) * step_e3) / zeta + phi
        hi = ((v - half + 0.5) * step_e3) / zeta + phi
        if lo > hi:
            lo, hi = hi, lo
        slice_lo[v], slice_hi[v] = lo, hi
        erf_lo[v], erf_hi[v] = math.erf((lo - phi) * scale), math.erf((hi - phi) * scale)
    for k in range(nz):
        a = phi0 + (z0 + k - array_start) * dphi
        b = a + dphi
        erf_a, erf_b = math.erf((a - phi) * scale), math.erf((b - phi) * scale)
        whole = erf_b - erf_a
        for v in range(size):
            slice_weight = erf_hi[v] - erf_lo[v]
            if max(slice_lo[v], a) < min(slice_hi[v], b):
                part = (erf_hi[v] if slice_hi[v] <= b else erf_b) - (erf_lo[v] if slice_lo[v] >= a else erf_a)
                if whole != 0.0:
                    forward[k, v] = part / whole
                if slice_weight != 0.0:
                    coverage[v] += part / slice_weight
                    reverse[v, k] = part / slice_weight
    return forward, coverage, reverse


@njit(cache=True, error_model="numpy")
def forward_transform(gx, gy, nz, ny, nx, x0, y0, width, height, data, background, mask, zfraction, size, cells):
    """Add one shoebox's counts and background to ``cells`` (G, G, 2G), the profile grid cell by cell.

    ``cells[jj, ii, v]`` is cell (e3 slice v, e2 row jj, e1 column ii)'s
    counts and ``cells[jj, ii, G + v]`` its background: each cell's slices
    lie together, so a pixel's share of a cell is added in one vectorised
    run.  ``gx, gy``: grid coordinates (e1, e2) of the (ny+1) x (nx+1)
    pixel corners, row-major; ``data``, ``background``, ``mask``: the
    shoebox's voxels (frames, rows, columns); only Valid & Foreground voxels
    are mapped; pixels outside the panel (``width`` x ``height``) are
    skipped.  Each pixel's frames are first shared among the e3 slices (a
    column per pixel with a voxel to map, pixel by pixel), then each column
    among the cells its quadrilateral overlaps as soon as those overlaps are
    known, so they are computed once per pixel, only for those pixels, and
    never listed.
    """
    n_pixels = ny * nx
    mapped = np.zeros(n_pixels, np.bool_)  # pixels with a voxel to map, found in one branch-free pass
    for k in range(nz):
        for p in range(n_pixels):
            mapped[p] |= (mask[k * n_pixels + p] & _VALID_FOREGROUND) == _VALID_FOREGROUND
    reached = np.empty((nz, 2), np.int64)  # the e3 slices [lo, hi) each frame reaches
    for k in range(nz):
        lo, hi = size, 0
        for kk in range(size):
            if zfraction[k, kk] != 0.0:
                lo, hi = min(lo, kk), kk + 1
        reached[k, 0], reached[k, 1] = lo, hi
    slot = np.full(n_pixels, -1, np.int64)  # each mapped pixel's column
    column = np.empty((n_pixels, 2 * size))  # counts of each slice, then background, as in a cell of cells
    n_columns = 0
    for p in range(n_pixels):
        if not mapped[p]:
            continue
        c = -1
        for k in range(nz):
            lo, hi = reached[k, 0], reached[k, 1]
            voxel = k * n_pixels + p
            if lo >= hi or (mask[voxel] & _VALID_FOREGROUND) != _VALID_FOREGROUND:
                continue
            if c < 0:
                c = slot[p] = n_columns
                n_columns += 1
                column[c] = 0.0
            value, b_value = data[voxel], background[voxel]
            for kk in range(lo, hi):
                column[c, kk] += value * zfraction[k, kk]
                column[c, size + kk] += b_value * zfraction[k, kk]
    if n_columns == 0:
        return
    corners = np.empty((2, 4))
    share = np.empty((size, size))
    for j in range(ny):
        if y0 + j < 0 or y0 + j >= height:
            continue
        for i in range(nx):
            c = slot[j * nx + i]
            if c < 0 or x0 + i < 0 or x0 + i >= width:
                continue
            whole, ix0, ix1, iy0, iy1 = _pixel_shares(gx, gy, j * (nx + 1) + i, nx + 1, size, corners, share)
            source = column[c]
            for ii in range(ix0, ix1 + 1):
                for jj in range(iy0, iy1 + 1):
                    if share[jj, ii] > 0.0:
                        fraction = share[jj, ii] / whole
                        target = cells[jj, ii]
                        for t in range(2 * size):
                            target[t] += fraction * source[t]


@njit(cache=True, error_model="numpy")
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
