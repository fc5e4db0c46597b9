"""Photons of a rotation experiment, drawn from the physics of diffraction.

Every photon of a reflection comes from its own incident direction (beam
divergence) and its own mosaic block (an isotropic small rotation of the
lattice); the lattice turns about the goniometer axis until that block's
reciprocal-lattice point meets that photon's Ewald sphere, and the photon
travels along the resulting s1 to the detector.  Nothing here uses the
integrator's gaussian_rs model: the spot shapes, partials across images
and rocking widths follow from the sampling.
"""

from __future__ import annotations

import numpy as np

from ..models.experiment import Experiment
from ..tasks.coordinates import LocalFrames


def rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Each row of ``vectors`` (n, 3) turned by its rotation vector (n, 3) (axis x angle, radians)."""
    angle = np.linalg.norm(rotation, axis=1)
    axis = rotation / np.maximum(angle, 1e-300)[:, None]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    along = np.einsum("ij,ij->i", axis, vectors)[:, None]
    return vectors * cos + np.cross(axis, vectors) * sin + axis * along * (1 - cos)


def crossing_angles(r: np.ndarray, s0: np.ndarray, axis: np.ndarray, near: np.ndarray):
    """Rotation (radians, nearest to ``near``) bringing each r (n, 3) onto its sphere |s0 + R r| = |s0|.

    ``s0`` (n, 3) per photon; ``axis`` the unit lab rotation axis.  Returns
    ``(phi, s1, ok)``; ok is False where r never meets the sphere.
    """
    r_par = (r @ axis)[:, None] * axis
    r_perp = r - r_par
    r_cross = np.cross(axis, r)
    a = 2 * np.einsum("ij,ij->i", s0, r_perp)
    b = 2 * np.einsum("ij,ij->i", s0, r_cross)
    c = np.einsum("ij,ij->i", r, r) + 2 * np.einsum("ij,ij->i", s0, r_par)
    amplitude = np.hypot(a, b)
    ok = amplitude >= np.abs(c)
    centre = np.arctan2(b, a)
    half = np.arccos(np.clip(-c / np.maximum(amplitude, 1e-300), -1, 1))
    best = None
    for candidate in (centre + half, centre - half):
        wrapped = candidate + 2 * np.pi * np.round((near - candidate) / (2 * np.pi))
        best = wrapped if best is None else np.where(np.abs(wrapped - near) < np.abs(best - near), wrapped, best)
    rotated = r_par + np.cos(best)[:, None] * r_perp + np.sin(best)[:, None] * r_cross
    return best, s0 + rotated, ok


def expected_profile(beam_divergence_deg: float, mosaicity_deg: float) -> tuple[float, float]:
    """The gaussian_rs (sigma_b, sigma_m) in degrees that the photon physics produces near 2theta = 0.

    To first order in the small angles, the offsets of a photon in the
    reflection's local frame have SDs ``c2 = divergence``, ``c1 =
    sqrt(divergence^2 + (2 sin(theta) mosaicity)^2)`` and ``c3 =
    sqrt(mosaicity^2 + divergence^2)``.  DIALS's sigma_b is the RMS of the
    2-D angle ``sqrt(c1^2 + c2^2)`` (sqrt(2) divergence at low angle) and its
    sigma_m the SD of c3.
    """
    return float(np.sqrt(2.0) * beam_divergence_deg), float(np.hypot(mosaicity_deg, beam_divergence_deg))


def draw_photons(rng: np.random.Generator, experiment: Experiment, hkl: np.ndarray, phi: np.ndarray,
                 counts: np.ndarray, divergence: float, mosaicity: float, anisotropy: float = 1.0,
                 tail_fraction: float = 0.0):
    """Photons of reflections ``hkl`` (n, 3) near predicted angles ``phi`` (rad).

    ``counts`` (n,) photons per reflection; ``divergence`` and ``mosaicity``
    are radians.  Returns ``(reflection index, phi, s1)`` per photon.
    """
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(hkl)), counts)
    scale = np.ones(total)
    if tail_fraction > 0:
        scale[rng.random(total) < tail_fraction] = 3.0
    beam = experiment.beam
    gonio = experiment.goniometer
    s0 = beam.s0
    wavenumber = np.linalg.norm(s0)
    # Incident directions: s0 tilted by two Gaussian angles perpendicular to it.
    u = np.cross(s0, [0.0, 1.0, 0.0] if abs(s0[1]) < 0.9 * wavenumber else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(s0 / wavenumber, u)
    tilt = rng.normal(0.0, 1.0, (total, 2)) * (divergence * scale)[:, None]
    direction = s0 / wavenumber + tilt[:, :1] * u + tilt[:, 1:] * v
    s0_photon = direction / np.linalg.norm(direction, axis=1)[:, None] * wavenumber
    # Mosaic blocks: isotropic small rotations of the lattice (one axis optionally wider).
    spread = rng.normal(0.0, 1.0, (total, 3)) * (mosaicity * scale)[:, None]
    spread[:, 2] *= anisotropy
    lattice = gonio.fixed_rotation @ experiment.crystal.A
    r = rotate(hkl[owner].astype(float) @ lattice.T, spread)
    # In the laboratory frame the setting rotation S is applied after the scan rotation.
    S = gonio.setting_rotation
    s0_datum = s0_photon @ S  # S^-1 s0 for each photon (rows)
    axis = gonio.rotation_axis / np.linalg.norm(gonio.rotation_axis)
    angle, s1_datum, ok = crossing_angles(r, s0_datum, axis, phi[owner])
    s1 = s1_datum @ S.T
    return owner[ok], angle[ok], s1[ok]


def local_offsets(experiment: Experiment, s1_pred: np.ndarray, phi_pred: np.ndarray, owner: np.ndarray,
                  s1: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Offsets (c1, c2, c3) (n_photons, 3), radians, of photons in their reflection's local frame."""
    frames = LocalFrames.build(experiment.beam.s0, experiment.goniometer.rotation_axis_lab, s1_pred[owner],
                               phi_pred[owner])
    unit_s1 = s1 / np.linalg.norm(s1, axis=1)[:, None] * np.linalg.norm(experiment.beam.s0)
    c1, c2 = frames.from_beam_vector(unit_s1)
    return np.column_stack([c1, c2, frames.from_rotation_angle(phi)])
