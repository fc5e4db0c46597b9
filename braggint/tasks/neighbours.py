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
def foreign_voxels(scattering, pixel_of_voxel, phi_start, phi_end, axis, to_hkl, hkl):
    """True where the voxel's fractional hkl rounds to another index at either frame edge.

    ``scattering`` (m, 3): per pixel, ``s' - s0`` with the goniometer's
    setting rotation undone (1/Angstrom, laboratory frame);
    ``pixel_of_voxel`` (n,): each voxel's row of ``scattering``;
    ``phi_start``, ``phi_end`` (n,): rotation angles (radians) of the
    voxel's frame edges; ``axis`` (3,): unit rotation axis; ``to_hkl``
    (3, 3): the inverse of ``F A`` (fixed rotation times the crystal's A);
    ``hkl`` (n, 3): each voxel's own Miller index.
    """
    n = len(pixel_of_voxel)
    foreign = np.zeros(n, np.bool_)
    rotated = np.empty(3)
    for v in range(n):
        x = scattering[pixel_of_voxel[v]]
        along = axis[0] * x[0] + axis[1] * x[1] + axis[2] * x[2]
        cross0 = axis[1] * x[2] - axis[2] * x[1]
        cross1 = axis[2] * x[0] - axis[0] * x[2]
        cross2 = axis[0] * x[1] - axis[1] * x[0]
        for edge in range(2):
            angle = -(phi_start[v] if edge == 0 else phi_end[v])  # R(phi)^T: rotate back to the datum
            c, s = math.cos(angle), math.sin(angle)
            rotated[0] = x[0] * c + cross0 * s + axis[0] * along * (1.0 - c)
            rotated[1] = x[1] * c + cross1 * s + axis[1] * along * (1.0 - c)
            rotated[2] = x[2] * c + cross2 * s + axis[2] * along * (1.0 - c)
            for k in range(3):
                h = to_hkl[k, 0] * rotated[0] + to_hkl[k, 1] * rotated[1] + to_hkl[k, 2] * rotated[2]
                if math.floor(h + 0.5) != hkl[v, k]:
                    foreign[v] = True
            if foreign[v]:
                break
    return foreign
