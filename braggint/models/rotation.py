"""Rotation matrices about an axis (right-handed, Rodrigues form)."""

from __future__ import annotations

import numpy as np


def axis_angle_matrix(axis, angle: float | np.ndarray, *, degrees: bool = False) -> np.ndarray:
    """Rotation matrix (or stack of matrices) for a right-handed rotation.

    Parameters
    ----------
    axis : array_like of shape (3,)
        Rotation axis in the laboratory frame; need not be normalised.
    angle : float or ndarray of shape (n,)
        Rotation angle(s), radians unless ``degrees`` is true.

    Returns
    -------
    ndarray of shape (3, 3) for a scalar angle, else (n, 3, 3).
    """
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    angle = np.asarray(angle, dtype=float)
    if degrees:
        angle = np.deg2rad(angle)
    c = np.cos(angle)[..., None, None]
    s = np.sin(angle)[..., None, None]
    x, y, z = axis
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    outer = np.outer(axis, axis)
    return c * np.eye(3) + s * cross + (1.0 - c) * outer


def rotate_vectors(axis, angle: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each vector (n, 3) rotated right-handedly about ``axis`` by its own angle (n,) in radians.

    The same as ``axis_angle_matrix(axis, angle) @ v`` row by row, without
    building the (n, 3, 3) stack (Rodrigues' formula on the vectors).
    """
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    c = np.cos(angle)[:, None]
    s = np.sin(angle)[:, None]
    along = (vectors @ axis)[:, None] * axis
    return vectors * c + np.cross(axis, vectors) * s + along * (1.0 - c)
