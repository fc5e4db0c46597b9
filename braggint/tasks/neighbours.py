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


@njit(cache=True, error_model="numpy")
def mask_foreign_voxels(rows, panels, panel, s0, unsetting, bbox, offsets, mask, hkl, scan, axis, to_hkl, code):
    """Set ``code`` on the voxels of shoeboxes ``rows`` whose fractional hkl rounds to another index at
    either edge of the voxel's frame; returns which of the rows changed.

    A pixel centre's scattering vector is ``S^-1 (s' - s0)``, s' its lab
    direction (``panels``: :func:`~braggint.tasks.pixel_lab.panel_table`,
    ``panel`` each row's) scaled to |s0| and ``unsetting`` (3, 3) the
    inverse of the goniometer's setting rotation S (the identity for a
    still); ``bbox``, ``offsets``, ``mask``, ``hkl`` and ``panel`` are the
    whole column's; ``scan`` = (array_start, phi0, dphi): a frame z's edges
    are at ``phi0 + (z - array_start) * dphi`` and ``+ dphi`` (radians;
    dphi 0 for a still); ``axis`` (3,): unit rotation axis; ``to_hkl``
    (3, 3): the inverse of ``F A`` (fixed rotation times the crystal's A).
    """
    changed = np.zeros(len(rows), np.bool_)
    s0_length = math.sqrt(s0[0] ** 2 + s0[1] ** 2 + s0[2] ** 2)
    most_frames = 1
    for r in rows:
        most_frames = max(most_frames, bbox[r, 5] - bbox[r, 4])
    # R(phi)^T at both edges of each frame of a box: rotate back to the datum.
    edge_cos, edge_sin = np.empty((most_frames, 2)), np.empty((most_frames, 2))
    x, rotated = np.empty(3), np.empty(3)
    for position in range(len(rows)):
        r = rows[position]
        if offsets[r + 1] == offsets[r]:
            continue
        nx, ny, nz = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2], bbox[r, 5] - bbox[r, 4]
        area = nx * ny
        for k in range(nz):
            start = scan[1] + (bbox[r, 4] + k - scan[0]) * scan[2]
            edge_cos[k, 0], edge_cos[k, 1] = math.cos(-start), math.cos(-(start + scan[2]))
            edge_sin[k, 0], edge_sin[k, 1] = math.sin(-start), math.sin(-(start + scan[2]))
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
            for k in range(nz):
                foreign = False
                for edge in range(2):
                    c, s = edge_cos[k, edge], edge_sin[k, edge]
                    rotated[0] = x[0] * c + cross0 * s + axis[0] * along * (1.0 - c)
                    rotated[1] = x[1] * c + cross1 * s + axis[1] * along * (1.0 - c)
                    rotated[2] = x[2] * c + cross2 * s + axis[2] * along * (1.0 - c)
                    for j in range(3):
                        h = to_hkl[j, 0] * rotated[0] + to_hkl[j, 1] * rotated[1] + to_hkl[j, 2] * rotated[2]
                        if math.floor(h + 0.5) != hkl[r, j]:
                            foreign = True
                    if foreign:
                        break
                if foreign:
                    mask[offsets[r] + k * area + p] = code
                    changed[position] = True
    return changed
