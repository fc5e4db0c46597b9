"""Block layout, partial splitting and assignment, as DIALS does them."""

from __future__ import annotations

import re

import numpy as np
from helpers import run_integrate

from braggint.io.refl import read_reflections
from braggint.models.flags import Flags
from braggint.models.reflection_table import ReflectionTable
from braggint.pipeline.blocks import (
    Block,
    assign_to_blocks,
    block_overlap,
    frame_ranges,
    split_across_blocks,
)
from braggint.pipeline.filling import _groups_by_first_read
from braggint.pipeline.memory import available_memory, block_memory_needs


def test_dials_job_layout():
    """DIALS's test: 130 frames in blocks of 20 overlapping by 10 give 12 jobs."""
    ranges = frame_ranges(0, 130, 20, 10)
    assert ranges == [(i, i + 20) for i in range(0, 111, 10)]
    assert len(ranges) == 12
    assert frame_ranges(5, 15, 20, 3) == [(5, 15)]
    assert frame_ranges(0, 4, 1, 0) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    # The overlap never exceeds half a block.
    assert frame_ranges(0, 30, 10, 8)[:2] == [(0, 10), (5, 15)]


def table_with(z_ranges, experiment_ids=None):
    n = len(z_ranges)
    table = ReflectionTable(n)
    table["bbox"] = np.array([[0, 5, 0, 5, z0, z1] for z0, z1 in z_ranges], np.int32)
    table["id"] = np.array(experiment_ids or [0] * n, np.int32)
    table["flags"] = np.zeros(n, np.uint64)
    table["intensity.sum.value"] = np.arange(n, dtype=float)
    return table


def test_reflections_crossing_blocks_are_cut_at_block_ends():
    blocks = [Block(i, (0, 1), a, b) for i, (a, b) in enumerate(frame_ranges(0, 30, 10, 4))]
    assert [(b.start, b.stop) for b in blocks] == [(0, 10), (6, 16), (12, 22), (18, 28), (24, 30)]
    table = table_with([(2, 5), (8, 13), (3, 25), (27, 30)])
    split = split_across_blocks(table, blocks)
    # Rows fitting a block stay whole; (3, 25) is cut at the ends 10, 16, 22 of the blocks it crosses.
    assert [tuple(b[4:]) for b in split["bbox"]] == [(2, 5), (8, 13), (3, 10), (10, 16), (16, 22), (22, 25),
                                                     (27, 30)]
    assert list(split["partial_id"]) == [0, 1, 2, 2, 2, 2, 3]
    assert list(split["intensity.sum.value"]) == [0, 1, 2, 2, 2, 2, 3]
    # Each piece goes to the block holding it whole with the nearest centre.
    assert list(assign_to_blocks(split, blocks)) == [0, 1, 0, 1, 2, 3, 4]


def test_dont_integrate_rows_are_not_assigned_and_overlap_is_the_threshold_depth():
    blocks = [Block(0, (0, 1), 0, 10)]
    table = table_with([(1, 3), (2, 9)])
    table.set_flags(np.array([False, True]), Flags.dont_integrate)
    assert list(assign_to_blocks(table, blocks)) == [0, -1]
    depths = table_with([(0, d) for d in (1, 2, 2, 3, 3, 3, 4, 4, 5, 9)])["bbox"]
    assert block_overlap(depths, 0.95) == 9 and block_overlap(depths, 0.5) == 3


def test_block_memory_is_the_peak_of_open_shoeboxes():
    # 5 x 5 pixels: 25 voxels a frame, 12 bytes a voxel.
    table = table_with([(0, 2), (1, 3), (2, 4), (5, 6)])
    needs = block_memory_needs(table["bbox"], np.array([0, 0, 0, 1]), 2)
    # Frames 1 and 2 each have two shoeboxes open (2 frames deep: 600 bytes each) -> 1200 bytes.
    assert list(needs) == [2 * 2 * 25 * 12, 25 * 12]
    assert list(block_memory_needs(table["bbox"], np.array([-1, -1, -1, -1]), 2)) == [0, 0]


def test_blocks_shrink_until_their_shoeboxes_fit(tiny_sweep, tmp_path):
    whole = run_integrate(tiny_sweep, tmp_path / "whole", "profile.fitting=False")
    assert whole.returncode == 0, whole.stderr
    log = (tmp_path / "whole" / "dials.integrate.log").read_text()
    need = float(re.search(r"shoeboxes need at most ([\d.]+) MB in one block", log).group(1)) * 1e6
    # Allow half the one-block need: blocks must shrink and the run still succeeds.
    fraction = need / 2 / available_memory()
    shrunk = run_integrate(tiny_sweep, tmp_path / "shrunk", "profile.fitting=False",
                           f"block.max_memory_usage={fraction:.3e}")
    assert shrunk.returncode == 0, shrunk.stderr
    log = (tmp_path / "shrunk" / "dials.integrate.log").read_text()
    assert "blocks shrunk to" in log
    allowed = float(re.search(r"([\d.]+) MB allowed for shoeboxes per worker", log).group(1))
    final_need = float(re.search(r"shoeboxes need at most ([\d.]+) MB in one block", log).group(1))
    assert final_need <= allowed
    a = read_reflections(str(tmp_path / "whole" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "shrunk" / "integrated.refl"))
    # Each reflection of the whole run is still there, some now as several partial pieces.
    assert set(map(tuple, b["miller_index"])) >= set(map(tuple, a["miller_index"]))
    assert b.nrows > a.nrows
    # Too little memory for even one-frame blocks: one clear line before any work starts.
    failed = run_integrate(tiny_sweep, tmp_path / "failed", "block.max_memory_usage=1e-12")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    message = failed.stderr.strip().splitlines()[-1]
    assert "Not enough memory" in message and "max_memory_usage" in message and "mp.nproc" in message
    assert not (tmp_path / "failed" / "integrated.refl.work").exists()


def test_rows_are_filled_in_groups_of_one_first_frame_and_depths_within_a_factor_of_two():
    rng = np.random.default_rng(11)
    n = 3000
    bbox = np.zeros((n, 6), np.int32)
    bbox[:, 4] = rng.integers(-2, 60, n)
    bbox[:, 5] = bbox[:, 4] + rng.integers(1, 40, n)
    table = ReflectionTable(n)
    table["bbox"] = bbox
    for backwards in (False, True):
        groups = _groups_by_first_read(table, backwards)
        every = np.concatenate([rows for at_frame in groups.values() for rows in at_frame])
        assert np.array_equal(np.sort(every), np.arange(n))  # each row in exactly one group
        first_read = bbox[:, 5] - 1 if backwards else bbox[:, 4]
        for frame, at_frame in groups.items():
            low_depths = []
            for rows in at_frame:
                assert np.all(np.diff(rows) > 0) and np.all(first_read[rows] == frame)
                depth = bbox[rows, 5] - bbox[rows, 4]
                assert depth.max() <= 2 * depth.min() or depth.max() <= 2
                low_depths.append(depth.min())
            assert low_depths == sorted(low_depths)  # shallower groups first
