"""Rotation scans (dxtbx ``Scan`` semantics).

Image numbers are 1-based and inclusive (``image_range = (first, last)``).
Frame coordinates z are 0-based and continuous: image n covers
``z in [n - 1, n)``, so the array range is ``(first - 1, last)``.  Angles are
stored in degrees (as in JSON); methods taking or returning angles say which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Scan:
    """A rotation scan.

    Attributes
    ----------
    image_range : tuple (first, last)
        1-based inclusive image numbers.
    oscillation : tuple (phi0, dphi)
        Start angle of image ``first`` and width per image, degrees.
    exposure_time, epochs : ndarray of shape (num_images,)
    valid_image_ranges : dict
        Experiment identifier -> list of inclusive [first, last] image ranges.
    legacy_format : bool
        Whether the JSON used the older flat layout (kept on writing).
    """

    image_range: tuple[int, int]
    oscillation: tuple[float, float]
    batch_offset: int = 0
    exposure_time: np.ndarray | None = None
    epochs: np.ndarray | None = None
    valid_image_ranges: dict = field(default_factory=dict)
    legacy_format: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.image_range = (int(self.image_range[0]), int(self.image_range[1]))
        self.oscillation = (float(self.oscillation[0]), float(self.oscillation[1]))
        n = self.num_images
        self.exposure_time = (np.zeros(n) if self.exposure_time is None
                              else np.asarray(self.exposure_time, dtype=float))
        self.epochs = np.zeros(n) if self.epochs is None else np.asarray(self.epochs, dtype=float)

    @property
    def num_images(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1

    @property
    def array_range(self) -> tuple[int, int]:
        """0-based half-open frame range ``(first - 1, last)``."""
        return (self.image_range[0] - 1, self.image_range[1])

    @property
    def oscillation_rad(self) -> tuple[float, float]:
        return (np.deg2rad(self.oscillation[0]), np.deg2rad(self.oscillation[1]))

    def angle_from_frame(self, z) -> np.ndarray:
        """Rotation angle (radians) of continuous 0-based frame coordinate(s) z."""
        phi0, dphi = self.oscillation_rad
        return phi0 + (np.asarray(z, dtype=float) - self.array_range[0]) * dphi

    def frame_from_angle(self, phi) -> np.ndarray:
        """Continuous 0-based frame coordinate of rotation angle(s) phi (radians)."""
        phi0, dphi = self.oscillation_rad
        return self.array_range[0] + (np.asarray(phi, dtype=float) - phi0) / dphi

    @classmethod
    def from_dict(cls, d: dict) -> "Scan":
        known = ("image_range", "batch_offset", "oscillation", "exposure_time", "epochs",
                 "valid_image_ranges", "properties")
        extra = {k: v for k, v in d.items() if k not in known}
        if "properties" in d:
            props = dict(d["properties"])
            starts = props.pop("oscillation")
            if len(starts) > 1:
                width = starts[1] - starts[0]
            else:
                width = props.pop("oscillation_width", [0.0])[0]
            exposure = props.pop("exposure_time", None)
            epochs = props.pop("epochs", None)
            if props:
                extra["properties"] = props
            return cls(image_range=d["image_range"], oscillation=(starts[0], width),
                       batch_offset=d.get("batch_offset", 0), exposure_time=exposure,
                       epochs=epochs, valid_image_ranges=d.get("valid_image_ranges", {}),
                       legacy_format=False, extra=extra)
        return cls(image_range=d["image_range"], oscillation=d["oscillation"],
                   batch_offset=d.get("batch_offset", 0), exposure_time=d.get("exposure_time"),
                   epochs=d.get("epochs"), valid_image_ranges=d.get("valid_image_ranges", {}),
                   legacy_format=True, extra=extra)

    def to_dict(self) -> dict:
        d: dict = {"image_range": list(self.image_range), "batch_offset": self.batch_offset}
        if self.legacy_format:
            d["oscillation"] = list(self.oscillation)
            d["exposure_time"] = self.exposure_time.tolist()
            d["epochs"] = self.epochs.tolist()
        else:
            phi0, dphi = self.oscillation
            props = {"oscillation": [phi0 + i * dphi for i in range(self.num_images)],
                     "exposure_time": self.exposure_time.tolist(),
                     "epochs": self.epochs.tolist()}
            if self.num_images == 1:
                props["oscillation_width"] = [dphi]
            props.update(self.extra.get("properties", {}))
            d["properties"] = props
        d["valid_image_ranges"] = self.valid_image_ranges
        d.update({k: v for k, v in self.extra.items() if k != "properties"})
        return d
