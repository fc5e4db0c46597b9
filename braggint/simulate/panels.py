"""The multi-panel layout (``panels="modules"``): every sensor module a detector panel of its own.

The images are the same as for the single-panel layout (one array per
frame, gaps included); only the detector model and the tables change.
Each module becomes a panel whose ``raw_image_offset`` is the module's
corner in the image, whose origin is that corner in the laboratory frame
(so every pixel stays where it was), without the gap mask.  Table rows
move into the frame of the module holding them: pixel coordinates and
bboxes lose the module corner (pixels), millimetre coordinates lose it
times the pixel size; truth rows in the gaps and strong spots that cross
a module edge are dropped (no panel holds them).
"""

from __future__ import annotations

import copy

import numpy as np

from ..models.reflection_table import ReflectionTable
from .spec import SimulationSpec


def module_corners(spec: SimulationSpec) -> np.ndarray:
    """``(x0, y0, x1, y1)`` pixel rectangles of the modules, fast then slow, row-major over modules."""
    mx, my = spec.module_size
    gx, gy = spec.gap
    xs = range(0, spec.nx, mx + gx)
    ys = range(0, spec.ny, my + gy)
    return np.array([(x, y, min(x + mx, spec.nx), min(y + my, spec.ny)) for y in ys for x in xs], np.int64)


def split_detector(document: dict, spec: SimulationSpec) -> None:
    """Replace the single panel of an .expt document by one panel per module (in place)."""
    detector = document["detector"][0]
    whole = detector["panels"][0]
    fast, slow = np.array(whole["fast_axis"]), np.array(whole["slow_axis"])
    origin = np.array(whole["origin"])
    panels = []
    for number, (x0, y0, x1, y1) in enumerate(module_corners(spec)):
        panel = copy.deepcopy(whole)
        panel["name"] = f"module_{number:02d}"
        panel["origin"] = (origin + spec.pixel_size * (x0 * fast + y0 * slow)).tolist()
        panel["raw_image_offset"] = [int(x0), int(y0)]
        panel["image_size"] = [int(x1 - x0), int(y1 - y0)]
        panel["mask"] = []
        panels.append(panel)
    detector["panels"] = panels
    detector["hierarchy"]["children"] = [{"panel": i} for i in range(len(panels))]
    for imageset in document["imageset"]:
        if "params" in imageset and "multi_panel" in imageset["params"]:
            imageset["params"]["multi_panel"] = True


def _module_of(x: np.ndarray, y: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Module index of pixel positions (-1 in a gap or outside)."""
    inside = ((x[:, None] >= corners[:, 0]) & (x[:, None] < corners[:, 2])
              & (y[:, None] >= corners[:, 1]) & (y[:, None] < corners[:, 3]))
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)


def _shift(table: ReflectionTable, module: np.ndarray, corners: np.ndarray, pixel_size: float) -> None:
    """Move the pixel and millimetre columns of every row into its module's frame (in place)."""
    corner = corners[module, :2].astype(float)
    for name in ("xyzcal.px", "xyzobs.px.value", "xyzobs.true"):
        if name in table:
            table[name] = table[name] - np.column_stack([corner, np.zeros(len(corner))])
    for name in ("xyzcal.mm", "xyzobs.mm.value"):
        if name in table:
            table[name] = table[name] - np.column_stack([corner * pixel_size, np.zeros(len(corner))])
    if "bbox" in table:
        offset = np.column_stack([corner[:, [0, 0, 1, 1]], np.zeros((len(corner), 2))]).astype(np.int32)
        table["bbox"] = table["bbox"] - offset
        if "shoebox" in table:
            boxes = table["shoebox"]
            boxes.bbox = boxes.bbox - offset
            boxes.panel = module.astype(np.uint32)
    table["panel"] = module.astype(np.uint64)


def truth_on_modules(truth: ReflectionTable, spec: SimulationSpec) -> ReflectionTable:
    """Truth rows predicted onto a module, in that module's frame."""
    corners = module_corners(spec)
    xy = truth["xyzcal.px"]
    module = _module_of(xy[:, 0], xy[:, 1], corners)
    kept = truth.select(module >= 0)
    _shift(kept, module[module >= 0], corners, spec.pixel_size)
    return kept


def spots_on_modules(strong: ReflectionTable, spec: SimulationSpec) -> ReflectionTable:
    """Strong spots whose bbox lies inside one module, in that module's frame."""
    corners = module_corners(spec)
    bbox = strong["bbox"]
    first = _module_of(bbox[:, 0].astype(float), bbox[:, 2].astype(float), corners)
    last = _module_of(bbox[:, 1] - 1.0, bbox[:, 3] - 1.0, corners)
    one = (first >= 0) & (first == last)
    kept = strong.select(one)
    _shift(kept, first[one], corners, spec.pixel_size)
    return kept
