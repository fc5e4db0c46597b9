"""The incident beam (dxtbx ``Beam`` semantics).

Laboratory frame is dxtbx's (imgCIF-like).  ``direction`` is the unit vector
from the sample towards the source, so the incident wave vector is
``s0 = -direction / wavelength`` (1/Angstrom).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_KNOWN_KEYS = (
    "__id__", "direction", "wavelength", "divergence", "sigma_divergence",
    "polarization_normal", "polarization_fraction", "flux", "transmission",
    "probe", "sample_to_source_distance", "s0_at_scan_points",
)


@dataclass(eq=False)
class Beam:
    """A monochromatic beam.

    Attributes
    ----------
    direction : ndarray of shape (3,)
        Unit vector from the sample to the source (lab frame).
    wavelength : float
        Angstrom.
    divergence, sigma_divergence : float
        Degrees, as stored by dxtbx.
    polarization_normal : ndarray of shape (3,)
        Normal of the polarisation plane.
    polarization_fraction : float
        XDS convention: 0.5 is unpolarised, a synchrotron is about 0.999.
    s0_at_scan_points : ndarray of shape (n, 3) or None
        Scan-varying s0 at frame boundaries (1/Angstrom), if refined so.
    """

    direction: np.ndarray
    wavelength: float
    divergence: float = 0.0
    sigma_divergence: float = 0.0
    polarization_normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    polarization_fraction: float = 0.999
    flux: float = 0.0
    transmission: float = 1.0
    probe: str | None = None
    sample_to_source_distance: float | None = None
    s0_at_scan_points: np.ndarray | None = None
    beam_type: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.direction = np.asarray(self.direction, dtype=float)
        self.polarization_normal = np.asarray(self.polarization_normal, dtype=float)
        if self.s0_at_scan_points is not None:
            self.s0_at_scan_points = np.asarray(self.s0_at_scan_points, dtype=float).reshape(-1, 3)

    @property
    def s0(self) -> np.ndarray:
        """Incident wave vector, shape (3,), length 1/wavelength (1/Angstrom)."""
        return -self.direction / np.linalg.norm(self.direction) / self.wavelength

    @property
    def unit_s0(self) -> np.ndarray:
        return -self.direction / np.linalg.norm(self.direction)

    @classmethod
    def from_dict(cls, d: dict) -> "Beam":
        return cls(
            direction=d["direction"],
            wavelength=float(d["wavelength"]),
            divergence=float(d.get("divergence", 0.0)),
            sigma_divergence=float(d.get("sigma_divergence", 0.0)),
            polarization_normal=d.get("polarization_normal", [0.0, 1.0, 0.0]),
            polarization_fraction=float(d.get("polarization_fraction", 0.999)),
            flux=float(d.get("flux", 0.0)),
            transmission=float(d.get("transmission", 1.0)),
            probe=d.get("probe"),
            sample_to_source_distance=d.get("sample_to_source_distance"),
            s0_at_scan_points=d.get("s0_at_scan_points"),
            beam_type=d.get("__id__"),
            extra={k: v for k, v in d.items() if k not in _KNOWN_KEYS},
        )

    def to_dict(self) -> dict:
        d: dict = {}
        if self.beam_type is not None:
            d["__id__"] = self.beam_type
        d.update(
            direction=self.direction.tolist(),
            wavelength=self.wavelength,
            divergence=self.divergence,
            sigma_divergence=self.sigma_divergence,
            polarization_normal=self.polarization_normal.tolist(),
            polarization_fraction=self.polarization_fraction,
            flux=self.flux,
            transmission=self.transmission,
        )
        if self.probe is not None:
            d["probe"] = self.probe
        if self.sample_to_source_distance is not None:
            d["sample_to_source_distance"] = self.sample_to_source_distance
        if self.s0_at_scan_points is not None:
            d["s0_at_scan_points"] = self.s0_at_scan_points.tolist()
        d.update(self.extra)
        return d
