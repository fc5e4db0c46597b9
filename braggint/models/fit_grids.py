"""Reflections mapped onto the gaussian_rs profile grid: what reciprocal-space profile fitting reads.

The first pass maps each reflection's valid foreground voxels (counts and
background model apart) onto its (G, G, G) grid (e3, e2, e1 order; see
:mod:`braggint.tasks.profile_grid`); fitting uses only the e3 slices the
shoebox's frames cover, so only those are kept.  A row's cells are its
covered slices' G x G cells, slice by slice, in the flat ``data`` and
``background`` arrays (float32, photons) at ``offsets[r]:offsets[r + 1]``;
a row that was not mapped covers no slice and has no cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shoebox import ragged_offsets, ragged_take, row_index


@dataclass(eq=False)
class FitGrids:
    """Covered grid slices of ``n`` reflections.

    Attributes
    ----------
    covered : ndarray (n, G) bool
        The e3 slices each row's frames cover (fitted); none for an unmapped row.
    offsets : ndarray (n + 1,) int64
        Start of each row's cells in the flat arrays.
    data, background : ndarray float32, flat
        The mapped counts and background model of the covered cells.
    """

    covered: np.ndarray
    offsets: np.ndarray
    data: np.ndarray
    background: np.ndarray

    @property
    def size(self) -> int:
        """G, the grid's cells along each axis."""
        return self.covered.shape[1]

    def __len__(self) -> int:
        return len(self.covered)

    @classmethod
    def from_covered(cls, covered: np.ndarray, data: np.ndarray, background: np.ndarray) -> "FitGrids":
        """Rows whose cells, G x G per covered slice, lie one row after another in ``data``/``background``."""
        covered = np.asarray(covered, dtype=bool)
        cells = covered.sum(axis=1).astype(np.int64) * covered.shape[1] ** 2
        return cls(covered, ragged_offsets(cells),
                   np.asarray(data, np.float32), np.asarray(background, np.float32))

    def select(self, index) -> "FitGrids":
        """Rows picked by an integer index array or boolean mask, in that order."""
        index = row_index(index, len(self))
        return FitGrids(self.covered[index], *ragged_take(self.offsets, index, self.data, self.background))

    @classmethod
    def concatenate(cls, columns: list["FitGrids"]) -> "FitGrids":
        return cls.from_covered(np.concatenate([c.covered for c in columns]),
                                np.concatenate([c.data for c in columns]),
                                np.concatenate([c.background for c in columns]))
