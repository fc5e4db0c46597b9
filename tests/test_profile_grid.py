"""Pixel-to-grid overlaps of the gaussian_rs transform (exact areas by polygon clipping), the mapping of
shoeboxes onto the grid and fitting on it."""

from __future__ import annotations

import numpy as np
import pytest

from braggint.models.fit_grids import FitGrids
from braggint.models.flags import Flags
from braggint.models.reflection_table import ReflectionTable
from braggint.pipeline.profile_fitting import GridSpec, ReferenceProfiles, block_local_profiles, fit_profiles
from braggint.tasks.profile_grid import forward_transform, frame_fractions, pixel_cell_overlaps
from braggint.tasks.reference_profiles import Sampler, map_to_grids


def _corners(x, y):
    """Row-major (ny+1) x (nx+1) corner grid coordinates as the flat gx, gy the kernel takes."""
    gx, gy = np.meshgrid(x, y)
    return gx.ravel().astype(float), gy.ravel().astype(float)


def _dense(gx, gy, ny, nx, size=11):
    pixel, cell_y, cell_x, area, quad_area, n = pixel_cell_overlaps(gx, gy, ny, nx, 0, 0, 100, 100, size,
                                                                    np.ones(ny * nx, bool))
    out = np.zeros((ny * nx, size, size))
    np.add.at(out, (pixel[:n], cell_y[:n], cell_x[:n]), area[:n])
    return out, quad_area


def test_axis_aligned_pixels_overlap_cells_by_products_of_intervals():
    x = np.array([1.3, 2.1, 3.75, 4.0])  # 3 pixel columns, straddling cell edges or ending on one
    y = np.array([2.6, 3.4, 5.2])
    out, quad_area = _dense(*_corners(x, y), ny=2, nx=3)
    for j in range(2):
        for i in range(3):
            expected = np.zeros((11, 11))
            for cy in range(11):
                for cx in range(11):
                    wide = max(0.0, min(x[i + 1], cx + 1) - max(x[i], cx))
                    high = max(0.0, min(y[j + 1], cy + 1) - max(y[j], cy))
                    expected[cy, cx] = wide * high
            np.testing.assert_allclose(out[j * 3 + i], expected, atol=1e-14)
            assert quad_area[j * 3 + i] == pytest.approx((x[i + 1] - x[i]) * (y[j + 1] - y[j]))


def test_skewed_pixels_share_their_whole_area_among_the_cells():
    rng = np.random.default_rng(3)
    base_x, base_y = np.meshgrid(np.arange(6) * 1.7 + 1.0, np.arange(5) * 1.3 + 1.5)
    rotated_x = 5.5 + 0.9 * (base_x - 5.5) - 0.4 * (base_y - 5.5) + rng.uniform(-0.1, 0.1, base_x.shape)
    rotated_y = 5.5 + 0.4 * (base_x - 5.5) + 0.9 * (base_y - 5.5) + rng.uniform(-0.1, 0.1, base_x.shape)
    out, quad_area = _dense(rotated_x.ravel(), rotated_y.ravel(), ny=4, nx=5)
    assert (quad_area > 0).all()
    # Every pixel lies inside the 11 x 11 grid, so its overlaps add up to its area, and several cells share most.
    np.testing.assert_allclose(out.sum(axis=(1, 2)), quad_area, rtol=1e-12)
    assert ((out > 1e-9).sum(axis=(1, 2)) >= 2).mean() > 0.5
    # A pixel hanging over the grid's edge keeps only the part inside.
    edge, edge_area = _dense(*_corners(np.array([-0.5, 0.5]), np.array([3.0, 4.0])), ny=1, nx=1)
    assert edge.sum() == pytest.approx(0.5) and edge_area[0] == pytest.approx(1.0)


def test_forward_transform_shares_each_voxel_by_pixel_overlap_and_rocking_curve():
    """The forward transform against its definition, summed voxel by voxel in numpy: each Valid & Foreground
    voxel of a frame that reaches some slice adds counts (and background) x the pixel's overlap with a cell /
    the pixel's area x the frame's share of a slice; pixels off the panel, other voxels and frames reaching
    no slice add nothing."""
    rng = np.random.default_rng(11)
    size, nz, ny, nx = 7, 4, 5, 6
    base_x, base_y = np.meshgrid(np.arange(nx + 1) * 0.9 + 0.8, np.arange(ny + 1) * 0.8 + 1.1)
    gx = (3.5 + 0.95 * (base_x - 3.5) - 0.3 * (base_y - 3.5) + rng.uniform(-0.08, 0.08, base_x.shape)).ravel()
    gy = (3.5 + 0.3 * (base_x - 3.5) + 0.95 * (base_y - 3.5) + rng.uniform(-0.08, 0.08, base_x.shape)).ravel()
    data = rng.uniform(0, 40, nz * ny * nx).astype(np.float32)
    background = rng.uniform(0, 3, nz * ny * nx).astype(np.float32)
    mask = np.where(rng.uniform(size=nz * ny * nx) < 0.8, 5, 3).astype(np.uint8)  # Valid | Foreground or Background
    zfraction = np.zeros((nz, size))
    zfraction[0, 1:4] = [0.2, 0.5, 0.3]
    zfraction[1, 3:6] = [0.1, 0.6, 0.3]
    zfraction[3, 5:7] = [0.7, 0.3]  # frame 2 reaches no slice
    x0, width = 10, 15  # the box's last column lies off the panel
    cells = np.zeros((size, size, 2 * size))
    forward_transform(gx, gy, nz, ny, nx, x0, 0, width, 100, data, background, mask, zfraction, size, cells)

    pixel, cell_y, cell_x, area, quad_area, n = pixel_cell_overlaps(gx, gy, ny, nx, x0, 0, width, 100, size,
                                                                    np.ones(ny * nx, bool))
    overlap = np.zeros((ny * nx, size, size))
    np.add.at(overlap, (pixel[:n], cell_y[:n], cell_x[:n]), area[:n] / quad_area[pixel[:n]])
    used = (mask.reshape(nz, ny * nx) == 5) & zfraction.any(axis=1)[:, None]
    expected = np.zeros((size, size, 2 * size))
    for column, values in ((slice(0, size), data), (slice(size, 2 * size), background)):
        voxels = np.where(used, values.reshape(nz, ny * nx), 0.0)
        expected[..., column] = np.einsum("pyx,kp,kv->yxv", overlap, voxels, zfraction)
    assert overlap.reshape(ny, nx, -1)[:, -1].sum() == 0  # the column off the panel maps nothing
    np.testing.assert_allclose(cells, expected, rtol=1e-12, atol=1e-12)
    assert cells[..., :size].sum() == pytest.approx((data.reshape(nz, -1) * used * overlap.sum(axis=(1, 2))
                                                     * zfraction.sum(axis=1)[:, None]).sum(), rel=1e-12)


def test_map_to_grids_teaches_profiles_the_unit_sum_signal_and_keeps_the_covered_slices_to_fit():
    """The fused per-row mapping against the transform run by hand: references add weight x (counts -
    background) / its sum to the profiles they teach, fitted rows keep the grid's covered slices (float32),
    other rows nothing."""
    half, size = 2, 5
    rng = np.random.default_rng(8)
    n_rows, nz, ny, nx = 4, 3, 4, 4
    bbox = np.array([[10 + 5 * r, 14 + 5 * r, 20, 24, 7, 7 + nz] for r in range(n_rows)], np.int32)
    offsets = np.arange(n_rows + 1, dtype=np.int64) * nz * ny * nx
    data = rng.uniform(5, 50, offsets[-1]).astype(np.float32)
    background = rng.uniform(0.5, 2, offsets[-1]).astype(np.float32)
    mask = np.full(offsets[-1], 5, np.uint8)  # Valid | Foreground
    mask[::7] = 3  # some Valid | Background voxels, not mapped
    # The corners' local coordinates (radians) and the grid's cell step: grid coordinates 0.6-4.3 and 0.8-4.1.
    step_b = 0.002
    x, y = np.meshgrid(np.linspace(-1.9, 1.8, nx + 1), np.linspace(-1.7, 1.6, ny + 1))
    c1, c2 = np.tile(x.ravel(), n_rows) * step_b, np.tile(y.ravel(), n_rows) * step_b
    gx, gy = half + 0.5 + c1 / step_b, half + 0.5 + c2 / step_b
    corner_start = np.arange(n_rows + 1, dtype=np.int64) * (ny + 1) * (nx + 1)
    panel_size = np.full((n_rows, 2), 1000, np.int64)
    phi, zeta = np.deg2rad(np.array([8.4, 8.5, 8.6, 8.5])), np.array([0.8, -0.6, 0.9, 0.3])
    scan = np.array([0.0, 0.0, np.deg2rad(1.0)])
    sigma_m, step_e3 = np.deg2rad(0.3), np.deg2rad(0.3) * 4.5 / (half + 0.5)
    rows = np.array([3, 0, 1, 2])
    is_reference = np.array([True, True, False, False])
    is_fitted = np.array([True, False, True, False])
    # Reference rows 3 and 0: row 3 teaches profiles 0 and 2 of fold 1, row 0 profile 2 of fold 0.
    teaches = np.array([[0, 2, -1], [2, -1, -1]])
    weights = np.array([[0.5, 0.25, 9.0], [0.75, 9.0, 9.0]])
    fold = np.array([1, 0])
    sums, counts = np.zeros((2, 3, size, size, size)), np.zeros((2, 3), np.int64)
    covered, cells, cell_background = map_to_grids(
        rows, is_reference, is_fitted, teaches, weights, fold, sums, counts, corner_start, c1, c2, step_b, offsets,
        bbox, panel_size, data, background, mask, phi, zeta, scan, sigma_m, step_e3, half)
    by_hand = {}
    for r in rows:
        zfraction, coverage, _ = frame_fractions(7, nz, 0.0, 0.0, scan[2], phi[r], zeta[r], sigma_m, step_e3, half)
        cells_of_row = np.zeros((size, size, 2 * size))
        lo, hi, c0, c1 = offsets[r], offsets[r + 1], corner_start[r], corner_start[r + 1]
        forward_transform(gx[c0:c1], gy[c0:c1], nz, ny, nx, bbox[r, 0], bbox[r, 2], 1000, 1000, data[lo:hi],
                          background[lo:hi], mask[lo:hi], zfraction, size, cells_of_row)
        grid, bgrid = cells_of_row[..., :size].transpose(2, 0, 1), cells_of_row[..., size:].transpose(2, 0, 1)
        by_hand[r] = grid, bgrid, coverage > 0.99
    signal = {r: (by_hand[r][0] - by_hand[r][1]) / (by_hand[r][0] - by_hand[r][1]).sum() for r in (3, 0)}
    np.testing.assert_allclose(sums[1, 0], 0.5 * signal[3], rtol=1e-12)
    np.testing.assert_allclose(sums[1, 2], 0.25 * signal[3], rtol=1e-12)
    np.testing.assert_allclose(sums[0, 2], 0.75 * signal[0], rtol=1e-12)
    assert not sums[0, :2].any() and not sums[:, 1].any() and sums[0, 2].sum() == pytest.approx(0.75)
    assert counts.tolist() == [[0, 0, 1], [1, 0, 1]]
    expected_covered = np.array([by_hand[3][2], by_hand[1][2]])
    assert np.array_equal(covered, expected_covered) and expected_covered.any(axis=1).all()
    expected_cells = np.concatenate([by_hand[r][0][by_hand[r][2]].ravel() for r in (3, 1)]).astype(np.float32)
    expected_background = np.concatenate([by_hand[r][1][by_hand[r][2]].ravel() for r in (3, 1)])
    assert cells.dtype == np.float32 and np.array_equal(cells, expected_cells)
    assert np.array_equal(cell_background, expected_background.astype(np.float32))


def _clipped_area(xs, ys, cell_x, cell_y):
    """Area of polygon (xs, ys) inside the unit cell (cell_x, cell_y), by clipping it against the cell's four
    sides (Sutherland-Hodgman, written out here as an independent check)."""
    points = list(zip(xs, ys))
    for axis, bound, keep_above in ((0, cell_x, True), (0, cell_x + 1, False), (1, cell_y, True),
                                    (1, cell_y + 1, False)):
        inside = (lambda p: p[axis] >= bound) if keep_above else (lambda p: p[axis] <= bound)
        clipped = []
        for a, b in zip(points, points[1:] + points[:1]):
            if inside(a) != inside(b):
                t = (bound - a[axis]) / (b[axis] - a[axis])
                clipped.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
            if inside(b):
                clipped.append(b)
        points = clipped
        if len(points) < 3:
            return 0.0
    x, y = np.array(points).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@pytest.mark.parametrize("mirrored", [False, True])
def test_overlaps_of_turned_and_large_pixels_match_clipping(mirrored):
    """Pixels of 0.3 to 2.5 cells, turned at random angles, some over the grid's edge, with corners in
    either turning sense (a mirrored detector axis), against clipping each pixel by each cell."""
    rng = np.random.default_rng(21 + mirrored)
    size = 7
    for _ in range(40):
        scale, angle = rng.uniform(0.3, 2.5), rng.uniform(0, np.pi)
        centre = rng.uniform(-0.5, size + 0.5, 2)
        step = scale * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        if mirrored:
            step[1] = -step[1]
        i, j = np.meshgrid(np.arange(3) - 1.0, np.arange(3) - 1.0)  # 2 x 2 pixels' corners
        gx = centre[0] + i * step[0, 0] + j * step[1, 0] + rng.uniform(-0.05, 0.05, i.shape)
        gy = centre[1] + i * step[0, 1] + j * step[1, 1] + rng.uniform(-0.05, 0.05, i.shape)
        out, quad_area = _dense(gx.ravel(), gy.ravel(), ny=2, nx=2, size=size)
        for p in range(4):
            r, c = divmod(p, 2)
            xs = [gx[r, c], gx[r, c + 1], gx[r + 1, c + 1], gx[r + 1, c]]
            ys = [gy[r, c], gy[r, c + 1], gy[r + 1, c + 1], gy[r + 1, c]]
            expected = np.array([[_clipped_area(xs, ys, cx, cy) for cx in range(size)] for cy in range(size)])
            np.testing.assert_allclose(out[p], expected, atol=1e-12)
            assert quad_area[p] == pytest.approx(0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def test_fitting_some_rows_gives_them_what_fitting_every_row_does_and_leaves_the_others_alone():
    """Profile fitting restricted to some rows (a waiting group's ready ones, fitted where they lie) writes
    those rows' results exactly as a fit of every row does, and no other row's."""
    half, size, n = 2, 5, 6
    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(*(np.arange(size) - half,) * 3, indexing="ij")
    profile = np.exp(-0.5 * (x**2 + y**2 + z**2) / 0.8)
    profile /= profile.sum()
    covered = np.ones((n, size), bool)
    covered[2, :2] = False  # a row whose frames cover only some slices
    cells = [rng.poisson(intensity * profile[slices] + 0.5).ravel()
             for intensity, slices in zip(rng.uniform(50, 500, n), covered)]
    grids = FitGrids.from_covered(covered, np.concatenate(cells), np.full(sum(map(len, cells)), 0.5))
    model = ReferenceProfiles(GridSpec(0.001, 0.001, 3.0, half), Sampler("single", 100, 100, (0, 10), 1),
                              profile[None], np.array([True]), np.array([1]))

    def table():
        rows = ReflectionTable(n)
        rows["xyzcal.px"] = np.column_stack([np.full(n, 50.0), np.full(n, 50.0), np.arange(n) + 0.5])
        rows["flags"] = np.zeros(n, np.uint64)
        rows.set_flags(np.arange(n) == 4, Flags.dont_integrate)
        return rows

    every = table()
    fit_profiles(None, every, grids, model)
    assert every.get_flags(Flags.integrated_prf).sum() == n - 1
    some = table()
    some["intensity.prf.value"] = np.full(n, -7.0)  # what an earlier fit of the other rows left
    some.set_flags(np.arange(n) == 1, Flags.integrated_prf)
    only = np.array([True, False, True, False, True, False])
    fit_profiles(None, some, grids, model, only=only)
    for name in ("intensity.prf.value", "intensity.prf.variance", "profile.correlation", "flags"):
        assert np.array_equal(some[name][only], every[name][only]), name
    assert (some["intensity.prf.value"][~only] == -7.0).all()
    assert some.get_flags(Flags.integrated_prf)[~only].tolist() == [True, False, False]
    assert not some.get_flags(Flags.failed_during_profile_fitting)[~only].any()


@pytest.mark.parametrize("method", ["regular_grid", "circular_grid", "single"])
def test_a_reference_teaches_its_nearest_profile_and_the_adjacent_ones(method):
    """Sampler.neighbourhood against the definition, position by position: the nearest profile first, then
    those adjacent to it (regular_grid: within one step along x, y and z; single: the z steps either side;
    circular_grid: the centre teaches its ring, a ring profile the centre and its two ring neighbours),
    weighted exp(-4 ln 2 d^2) by the distance d to each centre in sampler steps."""
    sampler = Sampler(method, 1475, 1679, (0, 400), 5)
    rng = np.random.default_rng(7)
    xyz = np.column_stack([rng.uniform(0, 1475, 300), rng.uniform(0, 1679, 300), rng.uniform(0, 400, 300)])
    indices, weights = sampler.neighbourhood(xyz)
    centres = sampler.coord(np.arange(sampler.size))
    steps = np.array([1475 / 3, 1679 / 3, 80.0])
    for position, row, row_weights in zip(xyz, indices, weights):
        nearest = sampler.nearest(position[None])[0]
        assert row[0] == nearest
        k, xy = divmod(nearest, sampler.per_z)
        if method == "circular_grid":
            ring = [k * 9 + r for r in range(1, 9)] if xy == 0 else [k * 9, k * 9 + xy % 8 + 1,
                                                                        k * 9 + (xy - 2) % 8 + 1]
            expected = {nearest, *ring}
        else:
            expected = {p for p in range(sampler.size)
                        if abs(p // sampler.per_z - k) <= 1
                        and abs(p % sampler.per_z % 3 - xy % 3) <= 1 and abs(p % sampler.per_z // 3 - xy // 3) <= 1}
        listed = row[row >= 0]
        assert len(set(listed)) == len(listed) and set(listed) == expected
        if method == "regular_grid":
            d = np.linalg.norm((centres[listed] - position) / steps, axis=1)
            assert np.allclose(row_weights[row >= 0], np.exp(-4 * np.log(2) * d**2), rtol=1e-12)
        assert (row_weights[row < 0] == 0).all() and (row_weights[row >= 0] > 0).all()


@pytest.mark.parametrize("method", ["regular_grid", "circular_grid", "single"])
def test_a_blocks_local_profiles_are_the_ones_no_other_blocks_references_teach(method, monkeypatch):
    """block_local_profiles against its definition: a profile is local to a block when no strong spot of
    another block inside the sampler's range has it among its neighbours (Sampler.neighbours, spot by spot)."""
    from types import SimpleNamespace

    from braggint.pipeline import profile_fitting

    sampler = Sampler(method, 1475, 1679, (0, 400), 8)
    monkeypatch.setattr(profile_fitting, "make_sampler", lambda experiment, fitting: sampler)
    rng = np.random.default_rng(11)
    tables = []
    for z0, z1 in ((-5, 150), (140, 280), (270, 405)):  # overlapping blocks, some spots outside the scan
        table = ReflectionTable(150)
        table["id"] = np.zeros(150, np.int32)
        table["xyzcal.px"] = np.column_stack([rng.uniform(-20, 1495, 150), rng.uniform(0, 1679, 150),
                                              rng.uniform(z0, z1, 150)])
        table["flags"] = np.zeros(150, np.uint64)
        table.set_flags(rng.random(150) < 0.3, Flags.reference_spot)
        tables.append(table)
    local = block_local_profiles(tables, [SimpleNamespace(is_still=False)], None)
    taught = []
    for table in tables:
        xyz = table["xyzcal.px"][table.get_flags(Flags.reference_spot)]
        xyz = xyz[sampler.nearest(xyz) >= 0]
        taught.append({int(p) for row in sampler.neighbours(xyz) for p in row if p >= 0})
    for block in range(len(tables)):
        by_others = set().union(*(t for other, t in enumerate(taught) if other != block))
        assert set(np.flatnonzero(local[block][0])) == set(range(sampler.size)) - by_others
    assert any(local[block][0].any() for block in range(len(tables)))
    assert not all(local[block][0].all() for block in range(len(tables)))
