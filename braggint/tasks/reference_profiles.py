"""Reference profiles: where they sit on the detector, how they are learned and how they are fitted.

Samplers place reference profiles over the detector and scan
(``profile.gaussian_rs.fitting.grid_method``): ``regular_grid`` 3 x 3 per
z step, ``single`` one per z step, ``circular_grid`` a centre and a ring of
8 per z step.  Positions are pixels and 0-based frames (``xyzcal.px``).
Profiles are (G, G, G) arrays on the gaussian_rs grid (see
:mod:`braggint.tasks.profile_grid`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..models.flags import VALID_FOREGROUND
from .profile_grid import forward_transform, frame_fractions, reverse_transform, row_grid_corners

_VALID_FOREGROUND = np.uint8(VALID_FOREGROUND)

#: Largest number of profiles one reference contributes to (a cell and its 26 neighbours).
MAX_NEIGHBOURS = 27


class Sampler:
    """Reference-profile positions over an image of ``width`` x ``height`` pixels and frames [z0, z1)."""

    def __init__(self, method: str, width: int, height: int, scan_range: tuple[int, int], num_z: int):
        if method not in ("single", "regular_grid", "circular_grid"):
            raise ValueError(f"unknown grid method {method!r}")
        self.method = method
        self.width, self.height = width, height
        self.z0, self.z1 = scan_range
        self.num_z = num_z
        self.step_z = (self.z1 - self.z0) / num_z
        self.per_z = {"single": 1, "regular_grid": 9, "circular_grid": 9}[method]
        self.centre = np.array([width / 2.0, height / 2.0])
        self.r1 = min(self.centre) / 3.0
        self.r2 = self.r1 * math.sqrt(5.0)
        self._centres = self.coord(np.arange(self.size))  # (P, 3), looked up for every reference taught
        # The (dz, dy, dx) steps from a profile to its neighbours on the grids of z steps (x 3 x 3 for
        # regular_grid), in the order neighbours() lists them.
        self._span = span = 1 if method == "regular_grid" else 0
        steps = [(dk, dj, di) for dk in (-1, 0, 1) for dj in range(-span, span + 1) for di in range(-span, span + 1)
                 if not dk == dj == di == 0]
        self._steps = np.array(steps, np.int64).reshape(-1, 3)
        # The columns of neighbours() in use: the nearest profile, then (circular_grid) a ring of 8 and the
        # 3 a ring profile teaches, or one per step.
        self._listed = 1 + (8 + 3 if method == "circular_grid" else len(steps))
        # What each profile's references teach, looked up per reference (one gather, not a dozen (n, 26)
        # operations for every part of every block).
        self._taught = self._neighbours_of_each(np.arange(self.size))

    @property
    def size(self) -> int:
        return self.per_z * self.num_z

    def _z_index(self, z):
        return np.clip(np.floor((z - self.z0) / self.step_z).astype(np.int64), 0, self.num_z - 1)

    def _xy_index(self, x, y):
        if self.method == "single":
            return np.zeros(len(x), np.int64)
        if self.method == "regular_grid":
            ix = np.clip(np.floor(x / (self.width / 3.0)).astype(np.int64), 0, 2)
            iy = np.clip(np.floor(y / (self.height / 3.0)).astype(np.int64), 0, 2)
            return ix + 3 * iy
        dx, dy = x - self.centre[0], y - self.centre[1]
        ring = np.mod(np.floor(np.arctan2(dy, dx) * 8 / (2 * np.pi) + 0.5).astype(np.int64), 8) + 1
        return np.where(np.hypot(dx, dy) < self.r1, 0, ring)

    def nearest(self, xyz: np.ndarray) -> np.ndarray:
        """Index of the profile for each position (n, 3); -1 where DIALS's sampler refuses the position."""
        x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        index = self._xy_index(x, y) + self.per_z * self._z_index(z)
        inside = (z >= self.z0) & (z < self.z1)
        if self.method == "regular_grid":
            inside &= (x >= 0) & (y >= 0) & (x < self.width) & (y < self.height)
        return np.where(inside, index, -1)

    def coord(self, index: np.ndarray) -> np.ndarray:
        """Centres (n, 3) of profiles."""
        index = np.asarray(index)
        k = index // self.per_z
        z = (k + 0.5) * self.step_z + self.z0
        xy = index % self.per_z
        if self.method == "single":
            x = y = np.zeros(len(index))
        elif self.method == "regular_grid":
            x = (xy % 3 + 0.5) * self.width / 3.0
            y = (xy // 3 + 0.5) * self.height / 3.0
        else:
            theta = (xy - 1) * 2 * np.pi / 8
            x = np.where(xy == 0, self.centre[0], self.centre[0] + self.r2 * np.cos(theta))
            y = np.where(xy == 0, self.centre[1], self.centre[1] + self.r2 * np.sin(theta))
        return np.column_stack([x, y, z])

    def neighbours(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 27) indices of the nearest profile of each position (pixels, frames; column 0) and of its
        neighbours, -1 padded: the profiles a reference there teaches."""
        return self.neighbours_of(self._xy_index(xyz[:, 0], xyz[:, 1]) + self.per_z * self._z_index(xyz[:, 2]))

    def neighbours_of(self, nearest: np.ndarray) -> np.ndarray:
        """(n, 27): the profiles ``nearest`` (n,) and their neighbours, -1 padded (see :meth:`neighbours`)."""
        return self._taught[nearest]

    def _neighbours_of_each(self, nearest: np.ndarray) -> np.ndarray:
        """:meth:`neighbours_of`, worked out for the profiles ``nearest``."""
        n = len(nearest)
        k = (nearest // self.per_z)[:, None]
        xy = (nearest % self.per_z)[:, None]
        if self.method == "circular_grid":
            # The centre teaches its ring of 8; a ring profile teaches the centre and its two ring neighbours.
            zero, centre = k * 9, xy == 0
            others = np.concatenate([np.where(centre, zero + np.arange(1, 9), -1),
                                     np.where(centre, -1, zero),
                                     np.where(centre, -1, zero + xy % 8 + 1),
                                     np.where(centre, -1, zero + (xy - 2) % 8 + 1)], axis=1)
        else:
            span = self._span
            ix, iy = (xy % 3, xy // 3) if span else (np.zeros_like(xy), np.zeros_like(xy))
            kk, jj, ii = k + self._steps[:, 0], iy + self._steps[:, 1], ix + self._steps[:, 2]
            ok = (kk >= 0) & (kk < self.num_z) & (jj >= 0) & (jj <= 2 * span) & (ii >= 0) & (ii <= 2 * span)
            others = np.where(ok, (ii + 3 * jj if span else 0) + self.per_z * kk, -1)
        indices = np.full((n, MAX_NEIGHBOURS), -1, np.int64)
        indices[:, 0] = nearest
        indices[:, 1:1 + others.shape[1]] = others
        return indices

    def neighbourhood(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (n, 27), weights (n, 27))``: :meth:`neighbours` and the weight of each.

        Weights are ``exp(-4 ln 2 d^2)`` with d the distance to the profile
        centre in sampler steps.
        """
        indices = self.neighbours(xyz)
        weights = np.zeros(indices.shape)
        listed = indices[:, :self._listed]  # the columns a profile may fill (the rest are -1)
        valid = listed >= 0
        delta = self._centres[np.where(valid, listed, 0)] - xyz[:, None, :]  # (n, listed, 3)
        if self.method == "circular_grid":
            d = np.hypot(delta[..., 0], delta[..., 1])
            d = np.where(listed % 9 == 0, d / (2 * self.r1), d / (2 * (self.r2 - self.r1)))
        elif self.method == "single":
            d = np.abs(delta[..., 2] / self.step_z)
        else:
            d = np.sqrt((delta[..., 0] / (self.width / 3.0)) ** 2 + (delta[..., 1] / (self.height / 3.0)) ** 2
                        + (delta[..., 2] / self.step_z) ** 2)
        weights[:, :self._listed] = np.where(valid, np.exp(-4.0 * np.log(2.0) * d**2), 0.0)
        return indices, weights


@njit(cache=True, error_model="numpy")
def _voxels_to_use(mask, lo, hi):
    """Valid & Foreground voxels of one shoebox."""
    part = mask[lo:hi]
    return (part & _VALID_FOREGROUND) == _VALID_FOREGROUND


@njit(cache=True, error_model="numpy")
def _frame_shares(rows, is_reference, is_fitted, bbox, phi, zeta, scan, sigma_m, step_e3, half):
    """The first pass of :func:`map_to_grids`: ``(share_start, shares, covered)``, the shares of each mapped
    row's frames among the e3 slices (:func:`frame_fractions`' forward, nz x G, at
    ``shares[share_start[position]:share_start[position + 1]]``; none for a row not mapped) and the slices
    each fitted row covers (F, G)."""
    size = 2 * half + 1
    share_start = np.zeros(len(rows) + 1, np.int64)
    for position in range(len(rows)):
        r = rows[position]
        mapped = is_reference[position] or is_fitted[position]
        share_start[position + 1] = share_start[position] + ((bbox[r, 5] - bbox[r, 4]) * size if mapped else 0)
    shares = np.empty(share_start[-1])
    covered = np.zeros((np.count_nonzero(is_fitted), size), np.bool_)
    n_fitted = 0
    for position in range(len(rows)):
        if not (is_reference[position] or is_fitted[position]):
            continue
        r = rows[position]
        z0, z1 = bbox[r, 4], bbox[r, 5]
        zfraction, coverage, _ = frame_fractions(z0, z1 - z0, scan[0], scan[1], scan[2], phi[r], zeta[r], sigma_m,
                                                 step_e3, half)
        shares[share_start[position]:share_start[position + 1]] = zfraction.ravel()
        if is_fitted[position]:
            covered[n_fitted] = coverage > 0.99
            n_fitted += 1
    return share_start, shares, covered


@njit(cache=True, error_model="numpy")
def map_to_grids(rows, is_reference, is_fitted, teaches, weights, fold, sums, counts, corner_start, c1, c2, step_b,
                 offsets, bbox, panel_size, data, background, mask, phi, zeta, scan, sigma_m, step_e3, half):
    """Shoeboxes ``rows`` mapped onto the grid: the references among them added to the profiles they teach,
    the covered slices of those to be fitted returned.

    ``offsets``, ``bbox``, ``data``, ``background`` and ``mask`` are the
    whole shoebox column's; the geometry (``corner_start`` and the corners'
    local coordinates ``c1``, ``c2`` of :func:`corner_coordinates`, radians,
    ``panel_size``) and ``phi`` (radians), ``zeta`` are given for every row
    of the column too (all indexed by row); ``step_b`` (radians) is the
    grid's e1/e2 cell step; ``is_reference`` and
    ``is_fitted`` (bool) go with ``rows``.  ``scan`` = (array_start, phi0,
    dphi).  Only Valid & Foreground voxels are mapped.  A slice is covered
    when the shoebox's frames hold more than 0.99 of its rocking-curve
    weight (the slices profile fitting uses).

    Each reference's signal, counts minus background scaled to unit sum, is
    added with weight ``weights[k, s]`` to profile ``teaches[k, s]`` (-1:
    none; see :meth:`Sampler.neighbourhood`) of validation fold ``fold[k]``
    in ``sums`` (F, P, G, G, G), counting once towards ``counts`` (F, P),
    k numbering the references in the order of ``rows``; a reference whose
    signal does not sum to a positive value teaches nothing.

    Returns ``(covered (F, G), cells, cell background)`` for the F fitted
    rows, in the order of ``rows``: cells and cell background (float32,
    flat) hold each fitted row's covered slices one after another, as
    :class:`braggint.models.fit_grids.FitGrids` keeps them, in arrays of
    their own size (:func:`_frame_shares` finds the slices covered first).
    One row's grid cells (counts and background) are reused from row to
    row, so no (rows, G, G, G) temporaries are made.
    """
    size = 2 * half + 1
    n_cells = size * size * size
    share_start, shares, covered = _frame_shares(rows, is_reference, is_fitted, bbox, phi, zeta, scan, sigma_m,
                                                 step_e3, half)
    cells = np.empty(np.count_nonzero(covered) * size * size, np.float32)
    cell_background = np.empty(len(cells), np.float32)
    cells_of_row = np.zeros((size, size, 2 * size))  # see forward_transform: [e2, e1, counts' e3 | background's e3]
    signal = np.empty(n_cells)
    flat_sums = sums.reshape((sums.shape[0], sums.shape[1], n_cells))  # contiguous rows: the adds vectorise
    n_references, n_fitted, n_kept = 0, 0, 0
    longest = _longest_row(rows, corner_start)
    gx_work, gy_work = np.empty(longest), np.empty(longest)
    for position in range(len(rows)):
        if not (is_reference[position] or is_fitted[position]):
            continue
        r = rows[position]
        lo, hi = offsets[r], offsets[r + 1]
        x0, x1, y0, y1, z0, z1 = bbox[r]
        nx, ny, nz = x1 - x0, y1 - y0, z1 - z0
        zfraction = shares[share_start[position]:share_start[position + 1]].reshape((nz, size))
        gx, gy = row_grid_corners(c1, c2, corner_start[r], corner_start[r + 1], half + 0.5, step_b, gx_work, gy_work)
        cells_of_row[:] = 0.0
        forward_transform(gx, gy, nz, ny, nx, x0, y0, panel_size[r, 0], panel_size[r, 1],
                          data[lo:hi], background[lo:hi], mask[lo:hi], zfraction, size, cells_of_row)
        if is_reference[position]:
            k = n_references
            n_references += 1
            # One pass in the cells' own order: the signal (counts minus background) goes to profile order
            # and is summed by (e2, e1) column, so that the sum is not one chain of dependent adds; each
            # profile then takes it scaled by weight / total, the signal's unit sum folded into the weight.
            total = 0.0
            for j in range(size):
                for i in range(size):
                    column = 0.0
                    for v in range(size):
                        difference = cells_of_row[j, i, v] - cells_of_row[j, i, size + v]
                        signal[(v * size + j) * size + i] = difference
                        column += difference
                    total += column
            if total > 0:
                f = fold[k]
                for s in range(teaches.shape[1]):
                    profile = teaches[k, s]
                    if profile < 0:
                        continue
                    scale = weights[k, s] / total
                    counts[f, profile] += 1
                    target = flat_sums[f, profile]
                    for c in range(n_cells):
                        target[c] += scale * signal[c]
        if is_fitted[position]:
            for v in range(size):
                if covered[n_fitted, v]:
                    for j in range(size):
                        for i in range(size):
                            cells[n_kept] = cells_of_row[j, i, v]
                            cell_background[n_kept] = cells_of_row[j, i, size + v]
                            n_kept += 1
            n_fitted += 1
    return covered, cells, cell_background


def finalise_profiles(profiles: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Clip negative cells to zero and normalise every profile that received data to unit sum; returns usable."""
    usable = counts > 0
    profiles[profiles < 0] = 0
    sums = profiles.reshape(len(profiles), -1).sum(axis=1)
    usable &= sums > 0
    profiles[usable] /= sums[usable, None, None, None]
    return usable


@njit(cache=True, error_model="numpy")
def _fit_one(d, b, m, p, eps, max_iter, work):
    """Poisson-weighted least-squares scale of profile p to data d over background b (masked cells).

    Returns ``(ok, I, DIALS's variance |I| + |sum b|, the inverse Fisher
    information 1 / sum(p^2 / (b + I' p)), correlation)``, I' being the
    larger of |I|, the counts above background and 1.  ``work`` (3, >=
    len(d)) float64 holds the masked cells with p > 0, the only ones the
    iterations and the information visit: one pass over all cells gathers
    them and every sum the other results need, the correlation's included
    (it is the model I p + b against d, and its sums are polynomials in I).
    """
    sumd = sumb = sump = 0.0
    spd = sbd = spp = spb = sbb = sdd = 0.0
    count = n = 0
    for i in range(len(d)):
        if m[i]:
            di, bi, pi = float(d[i]), float(b[i]), float(p[i])
            sumd += di
            sumb += bi
            sump += pi
            spd += pi * di
            sbd += bi * di
            spp += pi * pi
            spb += pi * bi
            sbb += bi * bi
            sdd += di * di
            count += 1
            if pi > 0:
                work[0, n], work[1, n], work[2, n] = di, bi, pi
                n += 1
    if sumb < 0 or sumd < 0 or sump <= 0:
        return False, 0.0, -1.0, -1.0, 0.0
    wd, wb, wp = work[0], work[1], work[2]
    start = sumd - sumb
    intensity = 0.0
    converged = False
    for _ in range(max_iter):
        num = 0.0
        den = 0.0
        for i in range(n):
            weight = 1.0 / (1e-10 + abs(wb[i]) + abs(start * wp[i]))
            num += (wd[i] - wb[i]) * wp[i] * weight
            den += wp[i] * wp[i] * weight
        if den <= 0:
            return False, 0.0, -1.0, -1.0, 0.0
        intensity = num / den
        if abs(intensity - start) < eps:
            converged = True
            break
        start = intensity
    if not converged:
        intensity = sumd - sumb
    variance = abs(intensity) + abs(sumb)
    if variance < intensity:
        return False, 0.0, -1.0, -1.0, 0.0
    # Evaluated at no less than the counts above background (a fit near zero would claim certainty).
    level = max(abs(intensity), abs(sumd - sumb), 1.0)
    information = 0.0
    for i in range(n):
        information += wp[i] * wp[i] / (1e-10 + abs(wb[i]) + level * wp[i])
    # Pearson correlation of model x = I p + b and data y over the masked cells, from the sums.
    sx = intensity * sump + sumb
    sxy = intensity * spd + sbd - sx * sumd / count
    sxx = intensity * intensity * spp + 2.0 * intensity * spb + sbb - sx * sx / count
    syy = sdd - sumd * sumd / count
    correlation = sxy / (math.sqrt(sxx) * math.sqrt(syy)) if sxx > 0 and syy > 0 else 0.0
    return True, intensity, variance, 1.0 / information, correlation


@njit(cache=True, error_model="numpy")
def _store_fit(r, fit, intensity, variance, fisher, correlation, ok):
    """Write one row's successful fit (the tuple from :func:`_fit_one`) into the result arrays."""
    success, value, var, var_fisher, corr = fit
    if success:
        intensity[r] = value
        variance[r] = var
        fisher[r] = var_fisher
        correlation[r] = corr
        ok[r] = True


@njit(cache=True, error_model="numpy")
def _longest_row(rows, offsets):
    """The longest of the runs ``offsets[r]:offsets[r + 1]`` of ``rows`` (a row's cells, voxels or pixel
    corners)."""
    longest = 0
    for r in rows:
        longest = max(longest, offsets[r + 1] - offsets[r])
    return longest


@njit(cache=True, error_model="numpy")
def fit_grids(rows, profile_index, covered, offsets, data, background, profiles, usable, intensity, variance,
              fisher, correlation, ok):
    """Fit every row in ``rows`` with its reference profile on the grid (results written in place).

    ``covered``, ``offsets``, ``data``, ``background``: a
    :class:`~braggint.models.fit_grids.FitGrids`' arrays, each row's
    counts and background on the grid slices its frames cover; the fit
    runs over those slices only.  The profile keeps its unit sum over the
    whole grid, so the fitted intensity is the full intensity.  Both
    variances are returned: DIALS's (``variance``) and the inverse Fisher
    information of the fit (``fisher``).
    """
    size = profiles.shape[1]
    area = size * size
    longest = _longest_row(rows, offsets)
    profile = np.empty(longest)
    every_cell = np.ones(longest, np.bool_)
    work = np.empty((3, longest))
    for r in rows:
        index = profile_index[r]
        lo, hi = offsets[r], offsets[r + 1]
        if index < 0 or not usable[index] or hi == lo:
            continue
        cell = 0
        for v in range(size):
            if covered[r, v]:
                profile[cell:cell + area] = profiles[index, v].ravel()
                cell += area
        _store_fit(r, _fit_one(data[lo:hi], background[lo:hi], every_cell, profile, 1e-3, 100, work),
                   intensity, variance, fisher, correlation, ok)


@njit(cache=True, error_model="numpy")
def fit_detector_space(rows, profile_index, corner_start, c1, c2, step_b, offsets, bbox, panel_size, data,
                       background, mask, phi, zeta, scan, sigma_m, step_e3, half, profiles, usable,
                       intensity, variance, fisher, correlation, ok):
    """Fit every row with its reference profile mapped back onto the shoebox's own pixels.

    Only rows whose bbox lies inside the panel are fitted; the caller
    leaves out rows with invalid foreground pixels (DIALS's detector-space
    fitter demands both).  The fit runs over the Valid & Foreground pixels
    with the shoebox's background.  The geometry is given as to
    :func:`map_to_grids`.
    """
    size = 2 * half + 1
    work = np.empty((3, _longest_row(rows, offsets)))
    longest = _longest_row(rows, corner_start)
    gx_work, gy_work = np.empty(longest), np.empty(longest)
    for r in rows:
        index = profile_index[r]
        if index < 0 or not usable[index]:
            continue
        x0, x1, y0, y1, z0, z1 = bbox[r]
        if x0 < 0 or y0 < 0 or x1 > panel_size[r, 0] or y1 > panel_size[r, 1]:
            continue
        lo, hi = offsets[r], offsets[r + 1]
        nx, ny, nz = x1 - x0, y1 - y0, z1 - z0
        _, _, reverse = frame_fractions(z0, nz, scan[0], scan[1], scan[2], phi[r], zeta[r], sigma_m, step_e3, half)
        gx, gy = row_grid_corners(c1, c2, corner_start[r], corner_start[r + 1], half + 0.5, step_b, gx_work, gy_work)
        p = reverse_transform(gx, gy, nz, ny, nx, x0, y0, panel_size[r, 0], panel_size[r, 1],
                              profiles[index], reverse, size)
        _store_fit(r, _fit_one(data[lo:hi], background[lo:hi], _voxels_to_use(mask, lo, hi), p, 1e-3, 100, work),
                   intensity, variance, fisher, correlation, ok)
