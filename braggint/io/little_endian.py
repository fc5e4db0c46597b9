"""Little-endian integers read from unaligned bytes inside compiled kernels (DIALS's msgpack shoebox records,
CBF byte-offset differences)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def read_int(raw, pos, width, signed):
    """The ``width``-byte (1 to 8) little-endian integer at byte ``pos`` of ``raw`` (uint8), as int64: two's
    complement when ``signed``."""
    value = np.int64(0)
    for k in range(width):
        value |= np.int64(raw[pos + k]) << (8 * k)
    if signed and width < 8 and value >= np.int64(1) << (8 * width - 1):
        value -= np.int64(1) << (8 * width)
    return value
