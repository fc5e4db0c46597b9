"""Which shoebox voxels a neighbouring reflection owns (numba kernel).

A voxel belongs to the reflection whose reciprocal-lattice point is
nearest the pixel's scattering vector rotated back to the datum at either
edge of the voxel's frame; DIALS's neighbour masking of the strong spots
turns the voxels of every other reflection into background.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .pixel_lab import pixel_lab


@njit(cache=True, error_model="numpy", nogil=True)
def mask_foreign_voxels(rows, panels, panel, s0, unsetting, bbox, offsets, mask, hkl, scan, axis, to_hkl, code):
    """Set ``code`` on the voxels of shoeboxes ``rows`` whose fractional hkl rounds to another index at
    either edge of the voxel's frame; returns which of the rows changed.

    A pixel centre's scattering vector is ``S^-1 (s' - s0)``, s' its lab
    direction (``panels``: :func:`~braggint.tasks.pixel_lab.panel_table`,
    ``panel`` each row's) scaled to |s0| and ``unsetting`` (3, 3) the
    inverse of the goniometer's setting rotation S (the identity for a
    still); ``bbox``, ``offsets``, ``mask``, ``hkl`` and ``panel`` are the
    whole column's; ``scan`` = (array_start, phi0, dphi): frame z's edges
    are at ``phi0 + (z - array_start) * dphi`` and that plus ``dphi``
    (radians; dphi 0 for a still); ``axis`` (3,): unit rotation axis;
    ``to_hkl`` (3, 3): the inverse of ``F A`` (fixed rotation times the
    crystal's A).

    Rotating x back by phi (Rodrigues) is ``x c + (e x x) s + e (e . x) (1 - c)``,
    so with T = ``to_hkl`` the index is ``h(phi) = T e (e . x) + c T (x - e (e . x)) + s T (e x x)``
    (c = cos(-phi), s = sin(-phi)): three vectors per pixel, then two multiply-adds per component at
    each frame edge.  A box's nz frames have nz + 1 edges, each evaluated once for the frames either side.
    """
    changed = np.zeros(len(rows), np.bool_)
    s0_length = math.sqrt(s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2)
    most_frames = 1
    for r in rows:
        most_frames = max(most_frames, bbox[r, 5] - bbox[r, 4])
    edge_cos, edge_sin = np.empty(most_frames + 1), np.empty(most_frames + 1)
    foreign_edge = np.empty(most_frames + 1, np.bool_)
    t_axis = np.empty(3)  # T e, written out: a matrix product here would call BLAS (and import SciPy)
    for j in range(3):
        t_axis[j] = to_hkl[j, 0] * axis[0] + to_hkl[j, 1] * axis[1] + to_hkl[j, 2] * axis[2]
    x = np.empty(3)
    for position in range(len(rows)):
        r = rows[position]
        if offsets[r + 1] == offsets[r]:
            continue
        nx, ny, nz = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        area = nx * ny
        for edge in range(nz + 1):
            angle = scan[1] + (bbox[r, 4] + edge - scan[0]) * scan[2]
            edge_cos[edge], edge_sin[edge] = math.cos(-angle), math.sin(-angle)
        h0, h1, h2 = hkl[r, 0], hkl[r, 1], hkl[r, 2]
        for p in range(area):
            l0, l1, l2 = pixel_lab(panels, panel[r], bbox[r, 0] + p % nx + 0.5, bbox[r, 2] + p // nx + 0.5)
            scale = s0_length / math.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
            d0, d1, d2 = l0 * scale - s0[0], l1 * scale - s0[1], l2 * scale - s0[2]
            for j in range(3):
                x[j] = unsetting[j, 0] * d0 + unsetting[j, 1] * d1 + unsetting[j, 2] * d2
            along = axis[0] * x[0] + axis[1] * x[1] + axis[2] * x[2]
            cross0 = axis[1] * x[2] - axis[2] * x[1]
            cross1 = axis[2] * x[0] - axis[0] * x[2]
            cross2 = axis[0] * x[1] - axis[1] * x[0]
            # h(phi) = u + c v + s w, component by component.
            u0, u1, u2 = t_axis[0] * along, t_axis[1] * along, t_axis[2] * along
            v0 = to_hkl[0, 0] * x[0] + to_hkl[0, 1] * x[1] + to_hkl[0, 2] * x[2] - u0
            v1 = to_hkl[1, 0] * x[0] + to_hkl[1, 1] * x[1] + to_hkl[1, 2] * x[2] - u1
            v2 = to_hkl[2, 0] * x[0] + to_hkl[2, 1] * x[1] + to_hkl[2, 2] * x[2] - u2
            w0 = to_hkl[0, 0] * cross0 + to_hkl[0, 1] * cross1 + to_hkl[0, 2] * cross2
            w1 = to_hkl[1, 0] * cross0 + to_hkl[1, 1] * cross1 + to_hkl[1, 2] * cross2
            w2 = to_hkl[2, 0] * cross0 + to_hkl[2, 1] * cross1 + to_hkl[2, 2] * cross2
            for edge in range(nz + 1):
                c, s = edge_cos[edge], edge_sin[edge]
                foreign_edge[edge] = ((math.floor(u0 + c * v0 + s * w0 + 0.5) != h0)
                                      | (math.floor(u1 + c * v1 + s * w1 + 0.5) != h1)
                                      | (math.floor(u2 + c * v2 + s * w2 + 0.5) != h2))
            for k in range(nz):
                if foreign_edge[k] or foreign_edge[k + 1]:
                    mask[offsets[r] + k * area + p] = code
                    changed[position] = True
    return changed
