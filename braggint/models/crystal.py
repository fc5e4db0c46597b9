"""Crystal model (dxtbx ``Crystal`` semantics).

``A = U B`` maps a Miller index to its reciprocal-lattice vector (1/Angstrom,
lab frame at phi = 0, before the goniometer's fixed rotation).  The real-space
vectors a, b, c (Angstrom) are the rows of ``A^-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gemmi
import numpy as np

from ..errors import InputFileError

_KNOWN = ("__id__", "real_space_a", "real_space_b", "real_space_c", "space_group_hall_symbol",
          "A_at_scan_points")


@dataclass(eq=False)
class Crystal:
    """Unit cell orientation and symmetry.

    Attributes
    ----------
    real_space : ndarray of shape (3, 3)
        Rows a, b, c in Angstrom (lab frame).
    hall_symbol : str
        Space-group Hall symbol as DIALS writes it (e.g. ``" P 2ac 2ab"``).
    A_at_scan_points : ndarray of shape (num_images + 1, 3, 3) or None
        Scan-varying A; point i is the setting at the start of array frame i.
    extra : dict
        Other JSON keys (B_covariance, mosaicity, ...) kept verbatim.
    """

    real_space: np.ndarray
    hall_symbol: str = " P 1"
    A_at_scan_points: np.ndarray | None = None
    crystal_type: str = "crystal"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.real_space = np.asarray(self.real_space, dtype=float).reshape(3, 3)
        if self.A_at_scan_points is not None:
            self.A_at_scan_points = np.asarray(self.A_at_scan_points, dtype=float).reshape(-1, 3, 3)
        try:
            self.space_group_ops = gemmi.symops_from_hall(self.hall_symbol)
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(f"crystal: invalid space_group_hall_symbol {self.hall_symbol!r}: {exc}")

    def __getstate__(self) -> dict:
        # gemmi's GroupOps does not pickle; it is rebuilt from the Hall symbol.
        state = dict(self.__dict__)
        state.pop("space_group_ops", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.space_group_ops = gemmi.symops_from_hall(self.hall_symbol)

    @property
    def A(self) -> np.ndarray:
        """Setting matrix UB (1/Angstrom), shape (3, 3)."""
        return np.linalg.inv(self.real_space)

    @property
    def is_scan_varying(self) -> bool:
        return self.A_at_scan_points is not None

    @property
    def space_group(self) -> gemmi.SpaceGroup | None:
        return gemmi.find_spacegroup_by_ops(self.space_group_ops)

    @property
    def unit_cell(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c in Angstrom, alpha, beta, gamma in degrees)."""
        a, b, c = self.real_space
        la, lb, lc = (np.linalg.norm(v) for v in (a, b, c))

        def angle(u, v):
            return float(np.degrees(np.arccos(np.clip(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))

        return (float(la), float(lb), float(lc), angle(b, c), angle(a, c), angle(a, b))

    def d_spacing(self, hkl) -> np.ndarray:
        """Resolution d (Angstrom) of Miller indices (n, 3)."""
        r = np.asarray(hkl, dtype=float) @ self.A.T
        return 1.0 / np.linalg.norm(r, axis=1)

    @classmethod
    def from_dict(cls, d: dict) -> "Crystal":
        real = np.array([d["real_space_a"], d["real_space_b"], d["real_space_c"]], dtype=float)
        return cls(real_space=real, hall_symbol=d.get("space_group_hall_symbol", " P 1"),
                   A_at_scan_points=d.get("A_at_scan_points"), crystal_type=d.get("__id__", "crystal"),
                   extra={k: v for k, v in d.items() if k not in _KNOWN})

    def to_dict(self) -> dict:
        d = {
            "__id__": self.crystal_type,
            "real_space_a": self.real_space[0].tolist(),
            "real_space_b": self.real_space[1].tolist(),
            "real_space_c": self.real_space[2].tolist(),
            "space_group_hall_symbol": self.hall_symbol,
        }
        if self.A_at_scan_points is not None:
            d["A_at_scan_points"] = [m.ravel().tolist() for m in self.A_at_scan_points]
        d.update(self.extra)
        return d
