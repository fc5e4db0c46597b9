"""Goniometers (dxtbx ``Goniometer``/``MultiAxisGoniometer`` semantics).

The reciprocal-lattice point of Miller index h at scan angle phi is
``r(phi) = S . R(e, phi) . F . A . h`` with F the fixed rotation, S the
setting rotation and e the datum rotation axis; the effective laboratory
axis is ``m2 = S . e``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rotation import axis_angle_matrix

_KNOWN = ("rotation_axis", "fixed_rotation", "setting_rotation",
          "setting_rotation_at_scan_points", "axes", "angles", "names", "scan_axis")


@dataclass(eq=False)
class Goniometer:
    """Single- or multi-axis goniometer.

    For a multi-axis goniometer ``axes`` lists the axes from the crystal
    outwards, ``angles`` their settings (degrees) and ``scan_axis`` the index
    of the axis that turns during the scan; F is the product of the rotations
    of the axes inside the scan axis, S of those outside it.
    """

    rotation_axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    fixed_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    setting_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    setting_rotation_at_scan_points: np.ndarray | None = None
    axes: np.ndarray | None = None
    angles: np.ndarray | None = None
    names: list[str] | None = None
    scan_axis: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.axes is not None:
            self.axes = np.asarray(self.axes, dtype=float).reshape(-1, 3)
            self.angles = np.asarray(self.angles, dtype=float)
            self.scan_axis = int(self.scan_axis)
            self._derive_from_axes()
        self.rotation_axis = np.asarray(self.rotation_axis, dtype=float)
        self.fixed_rotation = np.asarray(self.fixed_rotation, dtype=float).reshape(3, 3)
        self.setting_rotation = np.asarray(self.setting_rotation, dtype=float).reshape(3, 3)
        if self.setting_rotation_at_scan_points is not None:
            self.setting_rotation_at_scan_points = np.asarray(
                self.setting_rotation_at_scan_points, dtype=float).reshape(-1, 3, 3)

    def _derive_from_axes(self) -> None:
        fixed = np.eye(3)
        for axis, angle in zip(self.axes[: self.scan_axis], self.angles[: self.scan_axis]):
            fixed = axis_angle_matrix(axis, angle, degrees=True) @ fixed
        setting = np.eye(3)
        for axis, angle in zip(self.axes[self.scan_axis + 1:], self.angles[self.scan_axis + 1:]):
            setting = axis_angle_matrix(axis, angle, degrees=True) @ setting
        self.fixed_rotation = fixed
        self.setting_rotation = setting
        self.rotation_axis = self.axes[self.scan_axis]

    @property
    def is_multi_axis(self) -> bool:
        return self.axes is not None

    @property
    def rotation_axis_lab(self) -> np.ndarray:
        """Effective laboratory-frame unit axis m2 = S . e."""
        m2 = self.setting_rotation @ self.rotation_axis
        return m2 / np.linalg.norm(m2)

    @classmethod
    def from_dict(cls, d: dict) -> "Goniometer":
        extra = {k: v for k, v in d.items() if k not in _KNOWN}
        if "axes" in d:
            return cls(axes=d["axes"], angles=d["angles"], names=list(d.get("names", [])),
                       scan_axis=d.get("scan_axis", 0),
                       setting_rotation_at_scan_points=d.get("setting_rotation_at_scan_points"),
                       extra=extra)
        return cls(
            rotation_axis=d["rotation_axis"],
            fixed_rotation=d.get("fixed_rotation", np.eye(3).ravel()),
            setting_rotation=d.get("setting_rotation", np.eye(3).ravel()),
            setting_rotation_at_scan_points=d.get("setting_rotation_at_scan_points"),
            extra=extra,
        )

    def to_dict(self) -> dict:
        if self.is_multi_axis:
            d = {
                "axes": self.axes.tolist(),
                "angles": self.angles.tolist(),
                "names": list(self.names or []),
                "scan_axis": self.scan_axis,
            }
        else:
            d = {
                "rotation_axis": self.rotation_axis.tolist(),
                "fixed_rotation": self.fixed_rotation.ravel().tolist(),
                "setting_rotation": self.setting_rotation.ravel().tolist(),
            }
        if self.setting_rotation_at_scan_points is not None:
            d["setting_rotation_at_scan_points"] = [
                m.ravel().tolist() for m in self.setting_rotation_at_scan_points]
        d.update(self.extra)
        return d
