"""Detector panels and hierarchy (dxtbx ``Detector``/``Panel`` semantics).

Coordinate frames
-----------------
* Laboratory frame (mm): dxtbx's, origin at the sample.
* Panel millimetres ``(x_mm, y_mm)``: distance along the panel's fast and slow
  axes from the panel origin (the outer corner of pixel (0, 0)).
* Panel pixels ``(x_px, y_px)``: continuous, ``x`` along fast (column),
  ``y`` along slow (row); the centre of pixel ``[row j, column i]`` is
  ``(i + 0.5, j + 0.5)``.  With the parallax-corrected strategy the pixel
  position of a ray is shifted by its mean absorption depth in the sensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_PANEL_KEYS = (
    "name", "type", "fast_axis", "slow_axis", "origin", "raw_image_offset",
    "image_size", "pixel_size", "trusted_range", "thickness", "material", "mu",
    "identifier", "mask", "gain", "pedestal", "px_mm_strategy",
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(eq=False)
class Panel:
    """One flat detector panel.

    ``fast_axis``, ``slow_axis`` and ``origin`` are stored as read (local to
    the parent hierarchy node); ``global_frame`` holds the laboratory-frame
    values once the detector has composed the hierarchy.

    Attributes
    ----------
    image_size : tuple (n_fast, n_slow)
        Pixels along fast (columns) and slow (rows).
    pixel_size : tuple (fast_mm, slow_mm)
    trusted_range : tuple (min, max)
        Raw counts outside ``[min, max]`` are invalid.
    thickness : float
        Sensor thickness t0 in mm.
    mu : float
        Sensor linear attenuation coefficient in 1/mm.
    mask : list of (x0, y0, x1, y1)
        Untrusted rectangles, pixels with ``x0 <= x < x1`` and ``y0 <= y < y1``.
    px_mm_strategy : dict
        ``{"type": "SimplePxMmStrategy" | "ParallaxCorrectedPxMmStrategy", ...}``.
    """

    name: str = "Panel"
    type: str = "SENSOR_UNKNOWN"
    fast_axis: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    slow_axis: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    origin: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, -100.0]))
    raw_image_offset: tuple = (0, 0)
    image_size: tuple = (0, 0)
    pixel_size: tuple = (0.172, 0.172)
    trusted_range: tuple = (0.0, 0.0)
    thickness: float = 0.0
    material: str = ""
    mu: float = 0.0
    identifier: str = ""
    mask: list = field(default_factory=list)
    gain: float = 1.0
    pedestal: float = 0.0
    px_mm_strategy: dict = field(default_factory=lambda: {"type": "SimplePxMmStrategy"})
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.fast_axis = np.asarray(self.fast_axis, dtype=float)
        self.slow_axis = np.asarray(self.slow_axis, dtype=float)
        self.origin = np.asarray(self.origin, dtype=float)
        self.image_size = tuple(int(v) for v in self.image_size)
        self.pixel_size = tuple(float(v) for v in self.pixel_size)
        self.trusted_range = tuple(float(v) for v in self.trusted_range)
        self.raw_image_offset = tuple(int(v) for v in self.raw_image_offset)
        self.mask = [tuple(int(v) for v in rect) for rect in self.mask]
        # Laboratory-frame (fast, slow, origin); replaced by Detector when the
        # panel sits below a non-trivial hierarchy.
        self.global_frame = (self.fast_axis, self.slow_axis, self.origin)

    # ----- geometry -----------------------------------------------------
    @property
    def d_matrix(self) -> np.ndarray:
        """3x3 matrix whose columns are global fast, slow and origin (mm)."""
        f, s, o = self.global_frame
        return np.column_stack([f, s, o])

    @property
    def normal(self) -> np.ndarray:
        """Unit normal f x s of the panel (lab frame)."""
        f, s, _ = self.global_frame
        return _unit(np.cross(f, s))

    @property
    def image_size_mm(self) -> tuple[float, float]:
        return (self.image_size[0] * self.pixel_size[0], self.image_size[1] * self.pixel_size[1])

    @property
    def parallax_params(self) -> tuple[float, float] | None:
        """``(mu [1/mm], t0 [mm])`` when parallax correction is active, else None."""
        if self.px_mm_strategy.get("type") not in (
            "ParallaxCorrectedPxMmStrategy", "OffsetParallaxCorrectedPxMmStrategy"
        ):
            return None
        mu = float(self.px_mm_strategy.get("mu", self.mu))
        t0 = float(self.px_mm_strategy.get("t0", self.thickness))
        if mu > 0 and t0 > 0:
            return mu, t0
        return None

    def lab_coord(self, xy_mm) -> np.ndarray:
        """Laboratory position (mm), shape (n, 3), of panel mm coordinates (n, 2)."""
        xy = np.atleast_2d(np.asarray(xy_mm, dtype=float))
        f, s, o = self.global_frame
        return o + xy[:, :1] * f + xy[:, 1:2] * s

    def ray_intersection(self, s1) -> tuple[np.ndarray, np.ndarray]:
        """Where rays along ``s1`` (n, 3) from the sample meet the panel plane.

        Returns ``(xy_mm (n, 2), hits (n,) bool)``; ``hits`` is False for rays
        travelling away from the plane.  No bounds check is made.
        """
        v = np.atleast_2d(np.asarray(s1, dtype=float))
        w = np.linalg.solve(self.d_matrix, v.T).T
        hits = w[:, 2] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = w[:, :2] / w[:, 2:3]
        return xy, hits

    def is_coord_valid_mm(self, xy_mm) -> np.ndarray:
        """True where ``0 <= x < width_mm`` and ``0 <= y < height_mm``."""
        xy = np.atleast_2d(xy_mm)
        w, h = self.image_size_mm
        return (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)

    def attenuation_length(self, unit_dir: np.ndarray) -> np.ndarray:
        """Mean absorption depth (mm) along unit ray directions (n, 3).

        ``l = 1/mu - (t0/cos + 1/mu) exp(-mu t0/cos)``, cos being the angle
        between the ray and the panel normal oriented away from the sample.
        Zero when parallax correction is inactive.
        """
        params = self.parallax_params
        if params is None:
            return np.zeros(len(unit_dir))
        mu, t0 = params
        f, s, o = self.global_frame
        normal = _unit(np.cross(f, s))
        if np.dot(o, normal) < 0:
            normal = -normal
        cos_t = unit_dir @ normal
        return 1.0 / mu - (t0 / cos_t + 1.0 / mu) * np.exp(-mu * t0 / cos_t)

    def _parallax_shift(self, xy_mm: np.ndarray) -> np.ndarray:
        """Shift (n, 2) in mm that the sensor depth adds along fast and slow."""
        if self.parallax_params is None:
            return np.zeros_like(xy_mm)
        f, s, _ = self.global_frame
        u = _unit(self.lab_coord(xy_mm))
        depth = self.attenuation_length(u)
        return np.column_stack([(u @ f) * depth, (u @ s) * depth])

    def mm_to_px(self, xy_mm) -> np.ndarray:
        """Panel mm (n, 2) to continuous pixel coordinates (n, 2)."""
        xy = np.atleast_2d(np.asarray(xy_mm, dtype=float))
        return (xy + self._parallax_shift(xy)) / np.asarray(self.pixel_size)

    def px_to_mm(self, xy_px) -> np.ndarray:
        """Continuous pixel coordinates (n, 2) to panel mm (n, 2).

        The parallax shift is evaluated at the uncorrected point, as dxtbx does.
        """
        xy = np.atleast_2d(np.asarray(xy_px, dtype=float)) * np.asarray(self.pixel_size)
        return xy - self._parallax_shift(xy)

    def spot_depth(self, xy_px) -> np.ndarray:
        """Attenuation length (mm) DIALS fixes for a whole shoebox.

        Evaluated along the direction of the *uncorrected* point
        ``xy_px * pixel_size`` (as dxtbx's ``attenuation_length(xy_px)``);
        zero without parallax correction.
        """
        xy = np.atleast_2d(np.asarray(xy_px, dtype=float)) * np.asarray(self.pixel_size)
        return self.attenuation_length(_unit(self.lab_coord(xy)))

    def pixel_lab_coord_at_depth(self, xy_px, depth) -> np.ndarray:
        """Lab positions (n, 3) of pixel coordinates with a given parallax depth (mm) each."""
        xy = np.atleast_2d(np.asarray(xy_px, dtype=float)) * np.asarray(self.pixel_size)
        if self.parallax_params is not None:
            f, s, _ = self.global_frame
            u = _unit(self.lab_coord(xy))
            depth = np.asarray(depth, dtype=float)
            xy = xy - np.column_stack([(u @ f) * depth, (u @ s) * depth])
        return self.lab_coord(xy)

    def pixel_lab_coord(self, xy_px) -> np.ndarray:
        """Lab positions (n, 3) of continuous pixel coordinates (parallax-corrected)."""
        return self.lab_coord(self.px_to_mm(xy_px))

    # ----- masks --------------------------------------------------------
    def static_mask(self) -> np.ndarray:
        """Boolean array (n_slow, n_fast), True where not in an untrusted rectangle."""
        nfast, nslow = self.image_size
        good = np.ones((nslow, nfast), dtype=bool)
        for x0, y0, x1, y1 in self.mask:
            good[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
        return good

    def trusted_mask(self, raw: np.ndarray) -> np.ndarray:
        """True where the raw counts lie in ``[trusted_min, trusted_max]``."""
        lo, hi = self.trusted_range
        return (raw >= lo) & (raw <= hi)

    # ----- serialisation ------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "Panel":
        kw = {k: d[k] for k in _PANEL_KEYS if k in d}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in _PANEL_KEYS})

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "type": self.type,
            "fast_axis": self.fast_axis.tolist(),
            "slow_axis": self.slow_axis.tolist(),
            "origin": self.origin.tolist(),
            "raw_image_offset": list(self.raw_image_offset),
            "image_size": list(self.image_size),
            "pixel_size": list(self.pixel_size),
            "trusted_range": list(self.trusted_range),
            "thickness": self.thickness,
            "material": self.material,
            "mu": self.mu,
            "identifier": self.identifier,
            "mask": [list(r) for r in self.mask],
            "gain": self.gain,
            "pedestal": self.pedestal,
            "px_mm_strategy": dict(self.px_mm_strategy),
        }
        d.update(self.extra)
        return d


def _node_frame(node: dict, parent: tuple | None):
    """Global (fast, slow, origin) of a hierarchy node given its parent's."""
    f = np.asarray(node.get("fast_axis", [1.0, 0.0, 0.0]), dtype=float)
    s = np.asarray(node.get("slow_axis", [0.0, 1.0, 0.0]), dtype=float)
    o = np.asarray(node.get("origin", [0.0, 0.0, 0.0]), dtype=float)
    return _compose(parent, f, s, o)


def _compose(parent, f, s, o):
    if parent is None:
        return f, s, o
    pf, ps, po = parent
    pn = _unit(np.cross(pf, ps))
    rot = np.column_stack([pf, ps, pn])
    return rot @ f, rot @ s, rot @ o + po


@dataclass(eq=False)
class Detector:
    """A set of panels, optionally arranged in a hierarchy of groups.

    ``hierarchy`` is the JSON node tree as read (groups with ``children``
    that are groups or ``{"panel": index}``); ``None`` for a flat detector.
    """

    panels: list[Panel]
    hierarchy: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.hierarchy is not None:
            self._apply_hierarchy(self.hierarchy, None)

    def _apply_hierarchy(self, node: dict, parent_frame) -> None:
        frame = _node_frame(node, parent_frame)
        for child in node.get("children", []):
            if "panel" in child:
                panel = self.panels[int(child["panel"])]
                panel.global_frame = _compose(frame, panel.fast_axis, panel.slow_axis, panel.origin)
            else:
                self._apply_hierarchy(child, frame)

    def __len__(self) -> int:
        return len(self.panels)

    def image_sizes(self) -> np.ndarray:
        """(n_panels, 2) int64: each panel's (fast, slow) size in pixels; index it with a panel column."""
        return np.array([panel.image_size for panel in self.panels], dtype=np.int64).reshape(-1, 2)

    def pixel_sizes(self) -> np.ndarray:
        """(n_panels, 2): each panel's (fast, slow) pixel size in mm; index it with a panel column."""
        return np.array([panel.pixel_size for panel in self.panels], dtype=float).reshape(-1, 2)

    def __getitem__(self, i: int) -> Panel:
        return self.panels[i]

    def ray_intersection(self, s1) -> tuple[np.ndarray, np.ndarray]:
        """Panel hit by each ray (n, 3) and the mm position on it.

        Among panels whose bounds contain the intersection the one with the
        largest ray parameter w3 is chosen, as dxtbx does.  Returns
        ``(panel (n,) int, -1 for a miss; xy_mm (n, 2))``.
        """
        v = np.atleast_2d(np.asarray(s1, dtype=float))
        best_panel = np.full(len(v), -1, dtype=np.int64)
        best_w3 = np.full(len(v), -np.inf)
        best_xy = np.full((len(v), 2), np.nan)
        for index, panel in enumerate(self.panels):
            w = np.linalg.solve(panel.d_matrix, v.T).T
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = w[:, :2] / w[:, 2:3]
            ok = (w[:, 2] > 0) & panel.is_coord_valid_mm(xy) & (w[:, 2] > best_w3)
            best_panel[ok] = index
            best_w3[ok] = w[ok, 2]
            best_xy[ok] = xy[ok]
        return best_panel, best_xy

    @classmethod
    def from_dict(cls, d: dict) -> "Detector":
        panels = [Panel.from_dict(p) for p in d["panels"]]
        extra = {k: v for k, v in d.items() if k not in ("panels", "hierarchy")}
        return cls(panels=panels, hierarchy=d.get("hierarchy"), extra=extra)

    def to_dict(self) -> dict:
        d = {"panels": [p.to_dict() for p in self.panels]}
        if self.hierarchy is not None:
            d["hierarchy"] = self.hierarchy
        d.update(self.extra)
        return d
