"""Strong spots on simulated images: threshold, 3-D connected components, indexing from the truth.

A pixel is strong when its counts exceed the known background by three
Poisson standard deviations (and at least 2 counts); strong pixels
connected across neighbouring pixels and frames form a spot; spots of at
least :data:`MIN_PIXELS` pixels are kept.  Each spot gets the DIALS strong
spot columns (tight bbox, shoebox with spot pixels Valid|Foreground,
count-weighted centroid) and, when a predicted reflection lies within 2
pixels and 2 frames of it, that reflection's hkl and predicted geometry,
flagged indexed and used_in_refinement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..models.experiment import Experiment
from ..models.flags import VALID_FOREGROUND, Flags
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn

MIN_PIXELS = 4
MATCH_PIXELS = 2.0
MATCH_FRAMES = 2.0


class StreamingSpotFinder:
    """Finds spots while frames arrive, holding only a window of frames.

    Frames are labelled in windows of ``window + overlap`` frames; a spot is
    taken from the window where it starts within the first ``window`` frames
    and ends before the window's last frame (or the scan's end), so every
    spot shorter than ``overlap`` frames is found exactly once.
    """

    def __init__(self, experiment: Experiment, background: np.ndarray, window: int = 12, overlap: int = 10):
        self.experiment = experiment
        self.background = background.astype(np.float32)
        self.threshold = self.background + 3 * np.sqrt(np.maximum(self.background, 1.0))
        self.window, self.overlap = window, overlap
        self.frames: list[np.ndarray] = []
        self.first = 0 if experiment.is_still else experiment.scan.array_range[0]  # frame of self.frames[0]
        self.pieces: list[ShoeboxColumn] = []
        self.sizes: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        self.frames.append(image.astype(np.float32))
        if len(self.frames) == self.window + self.overlap:
            self._label(final=False)

    def finish(self) -> tuple[ShoeboxColumn, np.ndarray]:
        """All spots found: their shoeboxes and pixel counts."""
        if self.frames:
            self._label(final=True)
        if not self.pieces:
            return ShoeboxColumn.empty_boxes(np.zeros(0), np.zeros((0, 6)), allocate=True), np.zeros(0, int)
        return ShoeboxColumn.concatenate(self.pieces), np.concatenate(self.sizes)

    def _label(self, final: bool) -> None:
        stack = np.stack(self.frames)
        good = stack >= 0
        strong = good & (stack > self.threshold) & (stack >= 2)
        labels, n = ndimage.label(strong, structure=np.ones((3, 3, 3), bool))
        slices = ndimage.find_objects(labels)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        accept_start = len(self.frames) if final else self.window
        keep = [i for i, sl in enumerate(slices) if sizes[i] >= MIN_PIXELS and sl[0].start < accept_start
                and (final or sl[0].stop < len(self.frames))]
        bbox = np.array([[sl[2].start, sl[2].stop, sl[1].start, sl[1].stop, sl[0].start + self.first,
                          sl[0].stop + self.first] for sl in (slices[i] for i in keep)], np.int32).reshape(-1, 6)
        column = ShoeboxColumn.empty_boxes(np.zeros(len(keep), np.uint32), bbox, allocate=True)
        for row, index in enumerate(keep):
            sl = slices[index]
            data, mask, _ = column.arrays(row)
            data[:] = np.where(good[sl], stack[sl], 0)
            mask[:] = np.where(labels[sl] == index + 1, np.uint8(VALID_FOREGROUND), 0)
        self.pieces.append(column)
        self.sizes.append(sizes[keep] if keep else np.zeros(0, int))
        if not final:
            self.frames = self.frames[self.window:]
            self.first += self.window


def spot_table(experiment: Experiment, shoeboxes: ShoeboxColumn, sizes: np.ndarray, background: np.ndarray,
               truth: ReflectionTable) -> ReflectionTable:
    """The strong-spot table of found spots: centroids (background-subtracted, voxel centres), sums, indexing."""
    rows, z, y, x = shoeboxes.voxel_coordinates()
    spot = shoeboxes.mask != 0
    signal = np.where(spot, shoeboxes.data - background[y, x], 0.0).clip(0)
    n_spots = len(shoeboxes)
    weight = np.bincount(rows, weights=signal, minlength=n_spots)
    weight = np.where(weight > 0, weight, 1.0)
    xyz = np.column_stack([np.bincount(rows, weights=signal * (c + 0.5), minlength=n_spots) / weight
                           for c in (x, y, z)])
    spread = np.column_stack([np.bincount(rows, weights=signal * (c + 0.5) ** 2, minlength=n_spots) / weight
                              for c in (x, y, z)]) - xyz**2
    variance = np.maximum(spread, 0) / weight[:, None] + 1.0 / 12.0
    table = ReflectionTable(n_spots, dict(truth.identifiers))
    table["bbox"] = shoeboxes.bbox
    table["panel"] = np.zeros(n_spots, np.uint64)
    table["shoebox"] = shoeboxes
    table["xyzobs.px.value"] = xyz
    table["xyzobs.px.variance"] = variance
    panel = experiment.detector[0]
    still = experiment.is_still  # no rotation: z in mm/rad is 0
    angle = np.zeros(n_spots) if still else experiment.scan.angle_from_frame(xyz[:, 2])
    table["xyzobs.mm.value"] = np.column_stack([panel.px_to_mm(xyz[:, :2]), angle])
    pixel = np.array(panel.pixel_size)
    dphi = 0.0 if still else experiment.scan.oscillation_rad[1]
    table["xyzobs.mm.variance"] = variance * np.concatenate([pixel**2, [dphi**2]])
    table["intensity.sum.value"] = np.bincount(rows, weights=np.where(spot, shoeboxes.data - background[y, x], 0),
                                               minlength=n_spots)
    table["intensity.sum.variance"] = np.bincount(rows, weights=np.where(spot, shoeboxes.data, 0),
                                                  minlength=n_spots)
    table["n_signal"] = sizes.astype(np.int32)
    index_from_truth(table, truth)
    return table


def index_from_truth(table: ReflectionTable, truth: ReflectionTable) -> None:
    """Give each spot the hkl and predicted geometry of the nearest true reflection, where one is near."""
    n = table.nrows
    miller = np.zeros((n, 3), np.int32)
    ids = np.full(n, -1, np.int32)
    flags = np.full(n, int(Flags.strong), np.uint64)
    xyzcal_px = np.zeros((n, 3))
    xyzcal_mm = np.zeros((n, 3))
    s1 = np.zeros((n, 3))
    entering = np.zeros(n, bool)
    predicted = truth["xyzcal.px"]
    scale = np.array([1.0, 1.0, MATCH_PIXELS / MATCH_FRAMES])
    tree = cKDTree(predicted * scale)
    distance, nearest = tree.query(table["xyzobs.px.value"] * scale, distance_upper_bound=MATCH_PIXELS)
    found = np.isfinite(distance)
    # Where two spots claim one reflection, the closer keeps it.
    order = np.lexsort((distance[found], nearest[found]))
    rows = np.flatnonzero(found)[order]
    first = np.concatenate([[True], np.diff(nearest[rows]) != 0])
    rows = rows[first]
    best = nearest[rows]
    miller[rows] = truth["miller_index"][best]
    ids[rows] = 0
    flags[rows] |= np.uint64(Flags.indexed | Flags.used_in_refinement)
    xyzcal_px[rows] = predicted[best]
    xyzcal_mm[rows] = truth["xyzcal.mm"][best]
    s1[rows] = truth["s1"][best]
    entering[rows] = truth["entering"][best]
    table["miller_index"] = miller
    table["id"] = ids
    table["flags"] = flags
    table["xyzcal.px"] = xyzcal_px
    table["xyzcal.mm"] = xyzcal_mm
    table["s1"] = s1
    table["entering"] = entering
