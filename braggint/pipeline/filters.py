"""Flags and filters applied around integration (``integration.filter``, ``overlaps_filter``,
``significance_filter``).

Resolutions in Angstrom; ``1/d^2`` in 1/Angstrom^2; pixel keys are (panel,
0-based frame, row, column).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import BraggintError
from ..models.flags import VALID_FOREGROUND, Flags, MaskCode
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn

log = logging.getLogger("braggint")

#: The hexagonal-ice bands of 1/d^2 (inclusive) that dials.integrate flags as ``in_powder_ring``.
ICE_RING_BANDS = np.array([
    [0.0640, 0.0690], [0.0710, 0.0780], [0.0825, 0.0880], [0.138, 0.144], [0.190, 0.205], [0.228, 0.240],
    [0.262, 0.266], [0.267, 0.278], [0.280, 0.288], [0.337, 0.341], [0.429, 0.435], [0.459, 0.466],
    [0.478, 0.486], [0.531, 0.537],
])


def flag_ice_rings(table: ReflectionTable) -> int:
    """Set ``in_powder_ring`` on rows whose 1/d^2 lies in an ice band; returns how many."""
    inv_d2 = 1.0 / table["d"] ** 2
    inside = ((inv_d2[:, None] >= ICE_RING_BANDS[:, 0]) & (inv_d2[:, None] <= ICE_RING_BANDS[:, 1])).any(axis=1)
    table.set_flags(inside, Flags.in_powder_ring)
    log.info("Flagged %d reflections in ice rings", int(inside.sum()))
    return int(inside.sum())


def _voxel_keys(shoeboxes: ShoeboxColumn, code: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, detector pixel key) of every voxel whose mask has all bits of ``code``."""
    row, z, y, x = shoeboxes.voxel_coordinates()
    keep = (shoeboxes.mask & code) == code
    panel = shoeboxes.panel[row[keep]].astype(np.int64)
    key = ((panel * (1 << 20) + z[keep]) * (1 << 16) + y[keep]) * (1 << 16) + x[keep]
    return row[keep], key


def overlap_filters(table: ReflectionTable, foreground_foreground: bool, foreground_background: bool) -> np.ndarray:
    """Rows to remove because shoeboxes overlap (needs the ``shoebox`` column).

    foreground-foreground: a valid foreground pixel shared with another
    reflection's valid foreground; foreground-background: a valid
    foreground pixel that is valid background of any reflection.  Every
    pixel of every frame is checked (DIALS only walks the diagonal of the
    first frame of each shoebox, which misses most overlaps).
    """
    if "shoebox" not in table:
        raise BraggintError("integration.overlaps_filter needs the shoeboxes in the table: run with "
                            "integration.debug.output=True integration.debug.separate_files=False")
    shoeboxes = table["shoebox"]
    remove = np.zeros(table.nrows, bool)
    fg_rows, fg_keys = _voxel_keys(shoeboxes, int(VALID_FOREGROUND))
    if foreground_foreground and len(fg_keys):
        order = np.lexsort((fg_rows, fg_keys))
        keys, rows = fg_keys[order], fg_rows[order]
        same_pixel = keys[1:] == keys[:-1]
        different_rows = rows[1:] != rows[:-1]
        shared = same_pixel & different_rows
        remove[rows[1:][shared]] = True
        remove[rows[:-1][shared]] = True
    if foreground_background and len(fg_keys):
        _, bg_keys = _voxel_keys(shoeboxes, int(MaskCode.Valid | MaskCode.Background))
        in_background = np.isin(fg_keys, bg_keys)
        remove[fg_rows[in_background]] = True
    log.info("Overlap filters remove %d reflections", int(remove.sum()))
    return remove


def significance_limit(table: ReflectionTable, n_bins: int, isigi_cutoff: float, d_min: float | None) -> float | None:
    """Resolution (d, Angstrom) to which mean I/sigma(I) of the summation stays above the cutoff.

    Reflections with I_sum > 0 are binned in ``n_bins`` shells of equal
    count in 1/d^2 (to ``d_min`` when given); shells are accepted from low
    resolution until the first whose mean I/sigma is below the cutoff.
    Returns None when even the first shell fails.
    """
    intensity, variance, d = table["intensity.sum.value"], table["intensity.sum.variance"], table["d"]
    use = (intensity > 0) & (variance > 0)
    if d_min is not None:
        use &= d >= d_min
    if use.sum() == 0:
        return None
    order = np.argsort(-d[use])  # low resolution first
    ratio = (intensity[use] / np.sqrt(variance[use]))[order]
    shells = np.array_split(np.arange(len(order)), min(n_bins, len(order)))
    limit = None
    for shell in shells:
        if ratio[shell].mean() < isigi_cutoff:
            break
        limit = float(d[use][order][shell].min())
    return limit


def apply_significance_filter(table: ReflectionTable, settings) -> ReflectionTable:
    """Keep, per experiment, the rows to the resolution where I/sigma stays above the cutoff."""
    keep = np.zeros(table.nrows, bool)
    for number in np.unique(table["id"]):
        rows = table["id"] == number
        limit = significance_limit(table.select(rows), settings.n_bins, settings.isigi_cutoff, settings.d_min)
        log.info("Significance filter: experiment %d kept to %s", int(number),
                 "no resolution" if limit is None else f"{limit:.2f} A")
        if limit is not None:
            keep |= rows & (table["d"] >= limit)
    if not keep.any():
        raise BraggintError("the significance filter removed every reflection (lower "
                            "significance_filter.isigi_cutoff)")
    return table.select(keep)
