"""Summation kernel: pixel counts and sums against plain numpy on every mask byte."""

import numpy as np
import pytest

from braggint.models.flags import MaskCode
from braggint.models.shoebox import ragged_offsets
from braggint.tasks.summation import PIXEL_COUNTS, summarise


def _has(mask, code):
    return (mask & np.uint8(code)) != 0


def test_counts_and_sums_of_every_mask_byte_match_numpy():
    """Boxes of random mask bytes (all 256), one with more than 65535 voxels: the packed tallies give the
    counts numpy gives voxel by voxel, and the sums are over valid, non-overlapped foreground."""
    rng = np.random.default_rng(3)
    bbox = np.array([[0, 300, 0, 250, 0, 2], [10, 17, 5, 9, 3, 6], [0, 4, 0, 4, 0, 1]], np.int32)
    sizes = (bbox[:, 1] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 2]) * (bbox[:, 5] - bbox[:, 4])
    offsets = ragged_offsets(sizes)
    mask = rng.integers(0, 256, offsets[-1]).astype(np.uint8)
    mask[offsets[2]:] = MaskCode.Valid | MaskCode.Foreground  # the last box: every voxel summed
    data = rng.uniform(1, 50, offsets[-1]).astype(np.float32)
    background = rng.uniform(0, 10, offsets[-1]).astype(np.float32)
    background[offsets[2]:] = 0.5  # the last box: every voxel above its background

    sums, sum_ok, xyz, _, pixels = summarise(data, mask, background, offsets, bbox)

    for r in range(len(bbox)):
        m = mask[offsets[r]:offsets[r + 1]]
        valid, background_bit = _has(m, MaskCode.Valid), _has(m, MaskCode.Background)
        foreground, overlapped = _has(m, MaskCode.Foreground), _has(m, MaskCode.Overlapped)
        used = background_bit & valid & _has(m, MaskCode.BackgroundUsed)
        expected = {"valid": valid, "background": background_bit & valid, "background_used": used,
                    "foreground": foreground & valid, "all_foreground": foreground,
                    "invalid_background": background_bit & ~valid}
        assert dict(zip(PIXEL_COUNTS, pixels[r])) == {name: int(v.sum()) for name, v in expected.items()}
        summed = foreground & valid & ~overlapped
        d, b = data[offsets[r]:offsets[r + 1]][summed], background[offsets[r]:offsets[r + 1]][summed]
        n_b = int((used & ~foreground).sum())
        assert sums[r, 0] == pytest.approx(float(d.sum(dtype=np.float64) - b.sum(dtype=np.float64)), rel=1e-12)
        assert sums[r, 2] == pytest.approx(float(b.sum(dtype=np.float64)), rel=1e-12)
        assert sums[r, 3] == pytest.approx(abs(sums[r, 2]) * (1 + (summed.sum() / n_b if n_b else 0)), rel=1e-12)
        assert sum_ok[r] == bool(summed.sum() == foreground.sum())
    assert pixels[0, 0] > 65535  # the first box's counts do not fit the 16 bits of a packed tally
    assert sum_ok[2] and not sum_ok[0]
    # The last box, 4 x 4 pixels on one frame: the centroid is the (data - background)-weighted mean of the
    # voxel centres.
    w = (data[offsets[2]:] - background[offsets[2]:]).astype(np.float64).reshape(4, 4)
    y, x = np.mgrid[0:4, 0:4] + 0.5
    assert xyz[2] == pytest.approx([(w * x).sum() / w.sum(), (w * y).sum() / w.sum(), 0.5], rel=1e-6)


def test_a_box_wider_than_the_tallies_hold_is_refused():
    width = 65536
    bbox = np.array([[0, width, 0, 1, 0, 1]], np.int32)
    offsets = ragged_offsets(np.array([width]))
    voxels = np.zeros(width, np.float32)
    with pytest.raises(ValueError, match="wider than 65535"):
        summarise(voxels, np.zeros(width, np.uint8), voxels, offsets, bbox)
