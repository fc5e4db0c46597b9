"""The error function on numpy arrays, compiled (numba), so the integration path does not import SciPy.

``scipy.special`` costs about 0.1 s of every run's start-up (SciPy's array-API layer with it), and erf
is all that integration used of it.  The values are the C library's ``erf`` (within an ulp or two of
``scipy.special.erf``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def erf(x) -> np.ndarray:
    """Element-wise error function of an array (float64; a 0-d array for a scalar)."""
    values = np.asarray(x, dtype=np.float64)
    out = np.empty(values.shape)
    _erf_into(np.ascontiguousarray(values).reshape(-1), out.reshape(-1))
    return out


@njit(cache=True, error_model="numpy")
def _erf_into(values, out):
    for i in range(len(values)):
        out[i] = math.erf(values[i])
