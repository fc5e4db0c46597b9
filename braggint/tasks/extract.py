"""Copying image pixels into shoeboxes, one frame at a time (numba kernel)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..models.flags import MaskCode

_VALID = np.uint8(MaskCode.Valid)


@njit(cache=True)
def copy_frame(image, good, frame, rows, bbox, offsets, data, mask):
    """Fill slice ``frame - z0`` of each shoebox in ``rows`` from one panel image.

    ``image`` (n_slow, n_fast) float and ``good`` (same shape, bool) are the
    corrected data and trusted mask of one panel; ``frame`` is the 0-based
    frame.  Pixels of a box outside the panel keep data 0 and mask 0
    (invalid); pixels inside get the image value and Valid where trusted.
    """
    height, width = image.shape
    for r in rows:
        x0, x1, y0, y1, z0 = bbox[r, 0], bbox[r, 1], bbox[r, 2], bbox[r, 3], bbox[r, 4]
        nx = x1 - x0
        base = offsets[r] + (frame - z0) * nx * (y1 - y0)
        for y in range(max(y0, 0), min(y1, height)):
            row_start = base + (y - y0) * nx - x0
            for x in range(max(x0, 0), min(x1, width)):
                data[row_start + x] = image[y, x]
                mask[row_start + x] = _VALID if good[y, x] else 0


def rows_on_frame(bbox: np.ndarray, panel: np.ndarray, frame: int, panel_number: int) -> np.ndarray:
    """Rows whose bbox z-range contains ``frame`` on panel ``panel_number``."""
    return np.flatnonzero((bbox[:, 4] <= frame) & (bbox[:, 5] > frame) & (panel == panel_number))
