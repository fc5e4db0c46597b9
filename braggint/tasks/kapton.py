"""Absorption of diffracted rays by a kapton tape under the crystal (the fuller_kapton geometry).

The crystal sits at the origin, a height h above a flat tape of thickness
t.  The tape's faces are planes perpendicular to ``n``: the lab -x axis
turned by -angle about the beam direction ``b`` (the unit vector of s0).
Its near face passes through ``-n h``, its far face through ``-n (h + t)``;
it ends at the plane perpendicular to the beam a distance w (the "half
width") downstream.  A ray from the crystal along unit ``u`` meets the near
face after d1 = -h / (u.n), the far face after d2 = -(h + t) / (u.n) and
the tape's end after d3 = w / (u.b); its path through the tape is 0 when
it passes the end first or runs away from the tape (d3 < d1 or d1 < 0),
d3 - d1 when it leaves through the end, d2 - d1 otherwise.  The intensity
correction is exp(path / attenuation length) >= 1.

Lengths in mm, angles in degrees where named, wavelengths in Angstrom.
"""

from __future__ import annotations

import numpy as np

#: Attenuation length of polyimide (kapton, C22H10N2O5, 1.42 g/cm^3) against photon energy:
#: CXRO/Henke values at 6 keV (0.4826 mm) and 13 keV (5.153 mm); between them photoabsorption makes it
#: grow as a power of the energy (exponent from those two points; within 2 % of the tabulated curve).
_KAPTON_6KEV_MM = 0.482643
_KAPTON_13KEV_MM = 5.15269
_KAPTON_EXPONENT = np.log(_KAPTON_13KEV_MM / _KAPTON_6KEV_MM) / np.log(13000.0 / 6000.0)
#: h c in eV Angstrom.
HC_EV_ANGSTROM = 12398.425


def kapton_attenuation_length(wavelength: float) -> float:
    """Attenuation length (mm) of kapton at ``wavelength`` (Angstrom), power law through 6 and 13 keV."""
    energy = HC_EV_ANGSTROM / wavelength
    return float(_KAPTON_6KEV_MM * (energy / 6000.0) ** _KAPTON_EXPONENT)


def tape_normal(beam_direction: np.ndarray, angle_deg: float) -> np.ndarray:
    """The tape-face normal: lab -x turned by -angle_deg about the (unit) beam direction."""
    b = np.asarray(beam_direction, float) / np.linalg.norm(beam_direction)
    angle = -np.deg2rad(angle_deg)
    x = np.array([-1.0, 0.0, 0.0])
    # Rodrigues' rotation of x about b by angle.
    return x * np.cos(angle) + np.cross(b, x) * np.sin(angle) + b * (b @ x) * (1 - np.cos(angle))


def kapton_path_lengths(directions: np.ndarray, beam_direction: np.ndarray, height: float, thickness: float,
                        half_width: float, angle_deg: float) -> np.ndarray:
    """Path (mm) through the tape of rays from the crystal along ``directions`` (n, 3) (any length)."""
    u = np.asarray(directions, float)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    b = np.asarray(beam_direction, float) / np.linalg.norm(beam_direction)
    n = tape_normal(b, angle_deg)
    toward = u @ n
    along = u @ b
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.where(toward != 0, -height / toward, np.inf)
        far = np.where(toward != 0, -(height + thickness) / toward, np.inf)
        end = np.where(along != 0, half_width / along, np.inf)
        misses = (end < near) | (near < 0) | ~np.isfinite(near)
        path = np.where(end < far, end - near, far - near)
    return np.where(misses, 0.0, path)


def kapton_corrections(directions: np.ndarray, beam_direction: np.ndarray, wavelength: float, height: float,
                       thickness: float, half_width: float, angle_deg: float) -> np.ndarray:
    """Intensity corrections exp(path / attenuation length) of rays along ``directions`` (n, 3)."""
    path = kapton_path_lengths(directions, beam_direction, height, thickness, half_width, angle_deg)
    return np.exp(path / kapton_attenuation_length(wavelength))
