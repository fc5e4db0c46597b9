"""Ice rings, overlaps, the significance filter, exclude_images, scan_range and debug output."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_tables, run_integrate

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models.flags import Flags, MaskCode
from braggint.models.reflection_table import ReflectionTable
from braggint.models.shoebox import ShoeboxColumn
from braggint.pipeline.debug_output import select_rows
from braggint.pipeline.filters import (
    flag_ice_rings,
    overlap_filters,
    significance_limit,
)


def test_ice_ring_flags_follow_the_bands():
    table = ReflectionTable(4)
    table["d"] = np.array([3.90, 3.67, 5.0, 2.25])  # 1/d^2 = 0.0657 (ring), 0.0742 (ring), 0.04, 0.1975 (ring)
    table["flags"] = np.zeros(4, np.uint64)
    assert flag_ice_rings(table) == 3
    assert list(table.get_flags(Flags.in_powder_ring)) == [True, True, False, True]


def boxes(specs):
    """Shoeboxes from (x0, y0, foreground square half-size) on one 7x7x1 grid each."""
    bbox = np.array([[x0, x0 + 7, y0, y0 + 7, 0, 1] for x0, y0, _ in specs], np.int32)
    column = ShoeboxColumn.empty_boxes(np.zeros(len(specs), np.uint32), bbox, allocate=True)
    for i, (_, _, half) in enumerate(specs):
        _, mask, _ = column.arrays(i)
        mask[:] = MaskCode.Valid | MaskCode.Background
        mask[0, 3 - half:4 + half, 3 - half:4 + half] = MaskCode.Valid | MaskCode.Foreground
    table = ReflectionTable(len(specs))
    table["shoebox"] = column
    return table


def test_overlap_filters_check_every_pixel():
    # Rows 0 and 1: 5x5 foregrounds 3 px apart share pixels (and lie in each other's background).
    # Rows 2 and 3: foregrounds apart, but each lies in the other's background.
    table = boxes([(0, 0, 2), (3, 1, 2), (100, 100, 1), (103, 100, 0)])
    assert list(overlap_filters(table, True, False)) == [True, True, False, False]
    assert list(overlap_filters(table, False, True)) == [True, True, True, True]
    with pytest.raises(Exception, match="debug.separate_files=False"):
        overlap_filters(ReflectionTable(1), True, False)


def test_significance_limit_finds_the_fall_off():
    rng = np.random.default_rng(0)
    d = np.linspace(5.0, 1.0, 2000)
    sigma = np.full(2000, 10.0)
    # I/sigma falls from 20 to 0 with resolution: shells stay above 2 down to about d = 1.4 A.
    intensity = 20 * sigma * (d - 1.0) / 4.0 + rng.normal(0, 1, 2000)
    table = ReflectionTable(2000)
    table["d"], table["intensity.sum.value"], table["intensity.sum.variance"] = d, intensity, sigma**2
    limit = significance_limit(table, 40, 2.0, None)
    assert 1.3 < limit < 1.55
    assert significance_limit(table, 40, 2.0, 2.0) >= 2.0
    assert significance_limit(table, 40, 50.0, None) is None


def test_select_expressions():
    table = ReflectionTable(3)
    table["intensity.sum.value"] = np.array([10.0, 100.0, -1.0])
    table["intensity.sum.variance"] = np.array([100.0, 100.0, 1.0])
    assert list(select_rows(table, "intensity.sum.value>=10")) == [True, True, False]
    assert list(select_rows(table, "intensity.sum.i_over_sigma>5")) == [False, True, False]
    with pytest.raises(Exception, match="no column"):
        select_rows(table, "wibble<3")


@pytest.fixture(scope="module")
def dataset(tiny_sweep):
    return tiny_sweep


def run(dataset, out, *args):
    result = run_integrate(dataset, out, *args)
    assert result.returncode == 0, result.stderr
    return read_reflections(str(out / "integrated.refl")), read_experiments(str(out / "integrated.expt"))


def test_exclude_images(dataset, tmp_path):
    table, experiments = run(dataset, tmp_path, "exclude_images=4,5")
    summed = table.get_flags(Flags.integrated_sum)
    touches = (table["bbox"][:, 4] <= 4) & (table["bbox"][:, 5] > 3)  # frames 3, 4 = images 4, 5
    assert summed.sum() > 20 and not (summed & touches).any()
    ranges = list(experiments[0].scan.valid_image_ranges.values())[0]
    assert ranges == [[1, 3], [6, 8]]


def test_scan_range(dataset, tmp_path):
    table, experiments = run(dataset, tmp_path, "scan_range=2,6")
    assert experiments[0].scan.image_range == (3, 6)
    assert table.nrows > 10
    assert (table["bbox"][:, 4] >= 2).all() and (table["bbox"][:, 5] <= 6).all()


def test_debug_output_files(dataset, tmp_path):
    run(dataset, tmp_path, "debug.output=True", "debug.reference.output=True", "debug.select=intensity.sum.value>0")
    pieces = sorted(tmp_path.glob("shoeboxes_*.refl"))
    assert pieces
    part = read_reflections(str(pieces[0]))
    assert "shoebox" in part and (part["intensity.sum.value"] > 0).all()
    # The block's rows with every column, the predictions' included, each with its own shoebox.
    assert {"miller_index", "xyzcal.px", "s1", "flags", "xyzobs.px.value"} <= set(part.keys())
    assert np.array_equal(part["shoebox"].bbox, part["bbox"])
    with np.load(tmp_path / "reference_profiles.refl") as profiles:
        assert profiles["profiles_0"].shape[1:] == (11, 11, 11)
    kept, _ = run(dataset, tmp_path / "inline", "debug.output=True", "debug.separate_files=False")
    assert "shoebox" in kept
    deleted, _ = run(dataset, tmp_path / "deleted", "debug.output=True", "debug.separate_files=False",
                     "debug.delete_shoeboxes=True")
    assert "shoebox" not in deleted
    # Debug output keeps whole shoeboxes between the passes as well as the profile-grid cells fitting reads:
    # the same fits either way.
    plain, _ = run(dataset, tmp_path / "plain")
    assert_same_tables(plain, deleted)
