"""The work store's shoeboxes (whole, or only the voxels detector-space fitting reads; real DIALS shoeboxes) and
the profile-grid cells reciprocal-space fitting reads."""

from __future__ import annotations

import numpy as np
import pytest
import xxhash

from braggint.io.refl import read_reflections
from braggint.models.fit_grids import FitGrids
from braggint.models.flags import MaskCode
from braggint.pipeline.work_store import GRID_CHUNK, WorkStore, file_digests
from braggint.tasks.reference_profiles import fit_grids

FITTED = MaskCode.Valid | MaskCode.Foreground


def _real_shoeboxes(real_sweep):
    return read_reflections(str(real_sweep / "integrated.refl"))["shoebox"]


def test_whole_shoeboxes_round_trip(real_sweep, tmp_path):
    boxes = _real_shoeboxes(real_sweep)
    store = WorkStore(str(tmp_path / "work"), "inputs")
    # The Zarr group is made by the first block that stores anything, not before.
    assert not (tmp_path / "work" / "shoeboxes.zarr").exists()
    store.save_part(3, 1, boxes)
    assert (tmp_path / "work" / "shoeboxes.zarr" / "zarr.json").exists()
    assert store.load_shoeboxes(3, 1).equals(boxes)


def test_fitted_voxels_only_keeps_what_fitting_reads(real_sweep, tmp_path):
    boxes = _real_shoeboxes(real_sweep)
    fitted = (boxes.mask & FITTED) == FITTED
    assert 0 < fitted.sum() < 0.5 * len(fitted)
    store = WorkStore(str(tmp_path / "work"), "inputs")
    store.save_part(3, 1, boxes)
    store.save_part(3, 2, boxes, fitted_voxels_only=True)
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


def _random_grids(rng, n=7, size=11):
    """Whole grids of n rows with covered e3 slices as the first pass makes them (a contiguous run each;
    one row covering none)."""
    grids = rng.poisson(5.0, (n, size, size, size)).astype(float)
    background = rng.uniform(0.5, 2.0, (n, size, size, size))
    covered = np.zeros((n, size), bool)
    for r in range(1, n):
        first = rng.integers(0, size - 1)
        covered[r, first:rng.integers(first + 1, size + 1)] = True
    return grids, background, covered


def _kept_slices(grids: np.ndarray, background: np.ndarray, covered: np.ndarray) -> FitGrids:
    """What the first pass stores of whole grids: each row's covered slices, one after another."""
    return FitGrids.from_covered(covered, np.concatenate([[]] + [g[c].ravel() for g, c in zip(grids, covered)]),
                                 np.concatenate([[]] + [b[c].ravel() for b, c in zip(background, covered)]))


def test_fit_grids_keep_the_covered_slices_and_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    grids, background, covered = _random_grids(rng)
    stored = _kept_slices(grids, background, covered)
    for r in range(len(covered)):
        cells = stored.data[stored.offsets[r]:stored.offsets[r + 1]]
        np.testing.assert_array_equal(cells, grids[r][covered[r]].ravel().astype(np.float32))
    picked = stored.select([5, 0, 3])
    again = _kept_slices(grids[[5, 0, 3]], background[[5, 0, 3]], covered[[5, 0, 3]])
    for key in ("covered", "offsets", "data", "background"):
        np.testing.assert_array_equal(getattr(picked, key), getattr(again, key))
    store = WorkStore(str(tmp_path / "work"), "inputs")
    block_grids = store.block_grids(2, capacity=10)  # far too small: the array grows
    first = block_grids.write(0, [stored.select(np.arange(4)), stored.select(np.arange(4, len(stored)))])
    second = block_grids.write(first, [picked])
    assert first % GRID_CHUNK == 0 and second > first >= 2 * len(stored.data)
    block_grids.write(second, [_kept_slices(grids[:0], background[:0], covered[:0])])
    opened = store.block_grids(2)
    for start, expected in ((0, stored), (first, picked)):
        back = opened.read(start, expected.covered)
        for key in ("covered", "offsets", "data", "background"):
            np.testing.assert_array_equal(getattr(back, key), getattr(expected, key))
    assert len(opened.read(second, covered[:0]).data) == 0
    # A first pass begun again for the block starts from an empty store.
    store.clear_block(2)
    with pytest.raises(KeyError):
        store.block_grids(2)


def test_fitting_the_covered_slices_gives_the_whole_intensity():
    """The profile keeps its unit sum over the whole grid: a reflection whose frames cover only some
    slices is still fitted with its full intensity (noise-free counts I p + b)."""
    rng = np.random.default_rng(5)
    size = 11
    profile = rng.uniform(0.0, 1.0, (size, size, size)) ** 4
    profile /= profile.sum()
    _, background, covered = _random_grids(rng)
    intensity = 1000.0 * (1 + np.arange(len(covered)))
    grids = intensity[:, None, None, None] * profile + background
    stored = _kept_slices(grids, background, covered)
    n = len(covered)
    results = np.zeros(n), np.full(n, -1.0), np.full(n, -1.0), np.zeros(n), np.zeros(n, bool)
    fit_grids(np.arange(n), np.zeros(n, np.int64), stored.covered, stored.offsets, stored.data, stored.background,
              profile[None], np.ones(1, bool), *results)
    value, variance, fisher, correlation, ok = results
    assert not ok[0]  # covers no slice: nothing to fit
    assert ok[1:].all()
    np.testing.assert_allclose(value[1:], intensity[1:], rtol=1e-4)
    assert (correlation[1:] > 0.999).all() and (fisher[1:] > 0).all() and (variance[1:] > 0).all()


def test_a_store_of_another_layout_is_started_afresh(tmp_path):
    """A work folder an earlier braggint left (its marker names only the inputs) is never resumed from."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "inputs.sha256").write_text("inputs\n")
    (work / "block_0000.modelled.refl").write_text("an earlier layout's block")
    store = WorkStore(str(work), "inputs")
    assert not store.has(0, "modelled.refl")
    store.save_arrays(0, "parts.npz", part_of_row=np.zeros(2, np.int64))
    assert WorkStore(str(work), "inputs").has(0, "parts.npz")  # the same run and layout resumes


def test_file_digests_identify_the_contents(tmp_path):
    a, b = tmp_path / "a.expt", tmp_path / "b.refl"
    a.write_bytes(b"experiments")
    b.write_bytes(bytes(range(256)) * 14000)  # 3.4 chunks of the hash's reading
    first = file_digests([str(a), str(b)])
    # Streamed a chunk at a time, each file's digest is that of its whole contents.
    assert first == xxhash.xxh3_128_digest(a.read_bytes()) + xxhash.xxh3_128_digest(b.read_bytes())
    b.write_bytes(bytes(range(256)) * 13999 + bytes(range(255)) + b"\x00")  # one byte changed
    assert file_digests([str(a), str(b)]) != first
    assert file_digests([str(b), str(a)]) != file_digests([str(a), str(b)])
