"""Per-reflection geometric factors: zeta, Lorentz-polarisation, detector efficiency.

All take diffracted beam vectors ``s1`` (n, 3) in 1/Angstrom (lab frame).
None of these factors is applied to intensities by integration; they are
stored for downstream programs, as DIALS does.
"""

from __future__ import annotations

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def zeta(s1: np.ndarray, s0: np.ndarray, axis_lab: np.ndarray) -> np.ndarray:
    """``m2 . unit(s1 x s0)``; |zeta| small means a reflection near the rotation axis."""
    return _unit(np.cross(s1, s0)) @ _unit(axis_lab)


def lorentz_polarization(s1: np.ndarray, s0: np.ndarray, axis_lab: np.ndarray | None,
                         polarization_normal: np.ndarray, polarization_fraction: float) -> np.ndarray:
    """``lp = L / P`` (XDS convention), the factor DIALS stores in the ``lp`` column.

    ``L = |s1 . (m2 x s0)| / (|s0| |s1|)`` (1 for stills, ``axis_lab`` None);
    ``P = (1 - 2p)(1 - (n . s1_hat)^2) + p (1 + (s1_hat . s0_hat)^2)``.
    """
    s1_hat, s0_hat = _unit(s1), _unit(s0)
    if axis_lab is None:
        lorentz = np.ones(len(s1))
    else:
        lorentz = np.abs(s1 @ np.cross(_unit(axis_lab), s0)) / (np.linalg.norm(s0) * np.linalg.norm(s1, axis=1))
    p = polarization_fraction
    normal = _unit(np.asarray(polarization_normal, dtype=float))
    polarization = (1 - 2 * p) * (1 - (s1_hat @ normal) ** 2) + p * (1 + (s1_hat @ s0_hat) ** 2)
    return lorentz / polarization


def detector_efficiency(s1: np.ndarray, panel_normal: np.ndarray, mu: float, thickness: float) -> np.ndarray:
    """``qe = 1 - exp(-mu t0 / |cos theta_n|)``, theta_n between s1 and the panel normal.

    ``mu`` in 1/mm, ``thickness`` t0 in mm.
    """
    cos_n = np.abs(_unit(s1) @ _unit(panel_normal))
    return 1.0 - np.exp(-mu * thickness / cos_n)
