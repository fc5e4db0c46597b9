"""The gaussian_rs profile model parameters (Kabsch 2010).

sigma_b (beam divergence) and sigma_m (reflecting range) are stored in
degrees, as in the ``.expt`` JSON; a scan-varying model holds one value per
image.  ``n_sigma`` sets the shoebox extent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class GaussianRSProfile:
    """``{"__id__": "gaussian_rs", "n_sigma", "sigma_b", "sigma_m"}``."""

    n_sigma: float = 3.0
    sigma_b: float | np.ndarray = 0.0
    sigma_m: float | np.ndarray = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("sigma_b", "sigma_m"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, np.ndarray)):
                setattr(self, name, np.asarray(value, dtype=float))
            else:
                setattr(self, name, float(value))

    @property
    def is_scan_varying(self) -> bool:
        return isinstance(self.sigma_b, np.ndarray)

    @property
    def sigma_b_rad(self):
        return np.deg2rad(self.sigma_b)

    @property
    def sigma_m_rad(self):
        return np.deg2rad(self.sigma_m)

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianRSProfile":
        return cls(n_sigma=d.get("n_sigma", 3.0), sigma_b=d["sigma_b"], sigma_m=d["sigma_m"],
                   extra={k: v for k, v in d.items() if k not in ("__id__", "n_sigma", "sigma_b", "sigma_m")})

    def to_dict(self) -> dict:
        def plain(v):
            return v.tolist() if isinstance(v, np.ndarray) else v

        d = {"__id__": "gaussian_rs", "n_sigma": self.n_sigma,
             "sigma_b": plain(self.sigma_b), "sigma_m": plain(self.sigma_m)}
        d.update(self.extra)
        return d
