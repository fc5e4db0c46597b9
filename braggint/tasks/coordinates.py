"""The local reciprocal-space frame of each reflection (Kabsch 2010).

For a reflection with diffracted beam ``s1`` at rotation angle ``phi``::

    e1 = unit(s1 x s0)      e2 = unit(s1 x e1)      e3 = unit(s1 + s0)
    zeta = m2 . e1

A beam vector s' of length |s0| maps to ``(c1, c2) = (e1, e2) . (s' - s1) / |s1|``
(radians, approximately the angular offsets from s1), and a rotation angle
phi' to ``c3 = zeta (phi' - phi)`` (the linear form DIALS uses everywhere).
All arrays are vectorised over reflections: ``s1`` is (n, 3) in 1/Angstrom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass
class LocalFrames:
    """Basis vectors of n reflections' local frames (each (n, 3)) and zeta (n,)."""

    s1: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    e3: np.ndarray
    zeta: np.ndarray
    phi: np.ndarray

    @classmethod
    def build(cls, s0: np.ndarray, m2: np.ndarray, s1: np.ndarray, phi: np.ndarray) -> "LocalFrames":
        """Frames for beam ``s0`` (3,), lab rotation axis ``m2`` (3,), ``s1`` (n, 3), ``phi`` (n,) rad."""
        s1 = np.atleast_2d(np.asarray(s1, dtype=float))
        e1 = unit(np.cross(s1, s0))
        e2 = unit(np.cross(s1, e1))
        e3 = unit(s1 + s0)
        zeta = e1 @ np.asarray(m2, dtype=float)
        return cls(s1, e1, e2, e3, zeta, np.broadcast_to(np.asarray(phi, dtype=float), len(s1)))

    def from_beam_vector(self, s_dash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c1, c2) of beam vectors ``s_dash`` (n, ..., 3), one frame per leading row."""
        extra = (1,) * (s_dash.ndim - 2)
        length = np.linalg.norm(self.s1, axis=1).reshape((-1,) + extra)
        diff = s_dash - self.s1.reshape((-1,) + extra + (3,))
        c1 = np.einsum("n...k,nk->n...", diff, self.e1) / length
        c2 = np.einsum("n...k,nk->n...", diff, self.e2) / length
        return c1, c2

    def to_beam_vector(self, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
        """Beam vectors (n, 3) of length |s1| at local coordinates (c1, c2) (n,)."""
        radius = np.linalg.norm(self.s1, axis=1)
        s1_hat = self.s1 / radius[:, None]
        p = (c1 * radius)[:, None] * self.e1 + (c2 * radius)[:, None] * self.e2
        b = radius**2 - np.einsum("ij,ij->i", p, p)
        d = -np.einsum("ij,ij->i", s1_hat, p) + np.sqrt(b)
        return p + d[:, None] * s1_hat

    def to_rotation_angle(self, c3) -> np.ndarray:
        """Rotation angle (rad) at e3 coordinate c3, linear form ``phi + c3 / zeta``."""
        return self.phi + np.asarray(c3) / self.zeta

    def from_rotation_angle(self, phi_dash) -> np.ndarray:
        """e3 coordinate of rotation angle(s) ``phi_dash`` (rad), linear form."""
        return self.zeta * (np.asarray(phi_dash) - self.phi)
