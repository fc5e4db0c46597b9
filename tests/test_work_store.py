"""The work store's shoeboxes: whole, or only the voxels profile fitting reads (real DIALS shoeboxes)."""

from __future__ import annotations

import numpy as np

from braggint.io.refl import read_reflections
from braggint.models.flags import MaskCode
from braggint.pipeline.work_store import WorkStore

FITTED = MaskCode.Valid | MaskCode.Foreground


def _real_shoeboxes(real_sweep):
    return read_reflections(str(real_sweep / "integrated.refl"))["shoebox"]


def test_whole_shoeboxes_round_trip(real_sweep, tmp_path):
    boxes = _real_shoeboxes(real_sweep)
    store = WorkStore(str(tmp_path / "work"), "inputs")
    store.save_shoeboxes(3, boxes, 1)
    assert store.load_shoeboxes(3, 1).equals(boxes)


def test_fitted_voxels_only_keeps_what_fitting_reads(real_sweep, tmp_path):
    boxes = _real_shoeboxes(real_sweep)
    fitted = (boxes.mask & FITTED) == FITTED
    assert 0 < fitted.sum() < 0.5 * len(fitted)
    store = WorkStore(str(tmp_path / "work"), "inputs")
    store.save_shoeboxes(3, boxes, 1)
    store.save_shoeboxes(3, boxes, 2, fitted_voxels_only=True)
    back = store.load_shoeboxes(3, 2)
    for key in ("panel", "bbox", "has_pixels", "offsets"):
        np.testing.assert_array_equal(getattr(back, key), getattr(boxes, key))
    np.testing.assert_array_equal(back.data[fitted], boxes.data[fitted])
    np.testing.assert_array_equal(back.background[fitted], boxes.background[fitted])
    assert not back.data[~fitted].any() and not back.background[~fitted].any()
    np.testing.assert_array_equal(back.mask, np.where(fitted, FITTED, 0))

    def stored_bytes(part):
        directory = tmp_path / "work" / "shoeboxes.zarr" / f"block_0003_part_{part:05d}"
        return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())

    assert stored_bytes(2) < 0.6 * stored_bytes(1)
