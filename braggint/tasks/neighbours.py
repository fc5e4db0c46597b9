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


@njit(cache=True)
def mask_foreign_voxels(rows, pixel_start, scattering, bbox, offsets, mask, hkl, scan, axis, to_hkl, code):
    """Set ``code`` on the voxels of shoeboxes ``rows`` whose fractional hkl rounds to another index at
    either edge of the voxel's frame; returns which of the rows changed.

    ``scattering`` (m, 3): ``s' - s0`` of every bbox pixel centre of the
    rows (the goniometer's setting rotation undone; 1/Angstrom, laboratory
    frame), row ``rows[k]``'s pixels row-major from ``pixel_start[k]``;
    ``bbox``, ``offsets``, ``mask`` and ``hkl`` are the whole column's;
    ``scan`` = (array_start, phi0, dphi): a frame z's edges are at
    ``phi0 + (z - array_start) * dphi`` and ``+ dphi`` (radians; dphi 0
    for a still); ``axis`` (3,): unit rotation axis; ``to_hkl`` (3, 3):
    the inverse of ``F A`` (fixed rotation times the crystal's A).
    """
    changed = np.zeros(len(rows), np.bool_)
    rotated = np.empty(3)
    for position in range(len(rows)):
        r = rows[position]
        if offsets[r + 1] == offsets[r]:
            continue
        nx, ny = bbox[r, 1] - bbox[r, 0], bbox[r, 3] - bbox[r, 2]
        area = nx * ny
        for k in range(bbox[r, 5] - bbox[r, 4]):
            start = scan[1] + (bbox[r, 4] + k - scan[0]) * scan[2]
            # R(phi)^T at both edges of the frame: rotate back to the datum.
            edges_c = (math.cos(-start), math.cos(-(start + scan[2])))
            edges_s = (math.sin(-start), math.sin(-(start + scan[2])))
            for p in range(area):
                x = scattering[pixel_start[position] + p]
                along = axis[0] * x[0] + axis[1] * x[1] + axis[2] * x[2]
                cross0 = axis[1] * x[2] - axis[2] * x[1]
                cross1 = axis[2] * x[0] - axis[0] * x[2]
                cross2 = axis[0] * x[1] - axis[1] * x[0]
                foreign = False
                for edge in range(2):
                    c, s = edges_c[edge], edges_s[edge]
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
