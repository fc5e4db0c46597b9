"""The small compiled helpers the kernels share: Brent's minimiser, erf, pixel lab positions."""

import math

import numpy as np
import pytest
from numba import njit

from braggint.models.detector import Detector, Panel
from braggint.tasks.brent import bounded_minimum
from braggint.tasks.pixel_lab import panel_table, pixel_lab_many
from braggint.tasks.prefetch import prefetch
from braggint.tasks.special import erf


@pytest.mark.parametrize("function, low, high, expected", [
    (lambda x: (x - 0.3) ** 2, -2.0, 2.0, 0.3),
    (lambda x: math.cosh(x - 1.7) + 0.01 * x, 0.0, 5.0, 1.7 - math.asinh(0.01)),
    (lambda x: -math.log(x) + x / 4.0, 0.5, 100.0, 4.0),     # a likelihood-like, asymmetric well
    (lambda x: x, -1.0, 3.0, -1.0),                           # monotonic: the lower end
    (lambda x: -x, -1.0, 3.0, 3.0),                           # monotonic: the upper end
])
def test_bounded_minimum_finds_the_minimum(function, low, high, expected):
    found = bounded_minimum(function, low, high, xatol=1e-9)
    # Brent's tolerance: 2 (sqrt(eps) |x| + xatol / 3)
    assert abs(found - expected) <= 2 * (1.5e-8 * abs(found) + 1e-9) + 1e-12


def test_bounded_minimum_uses_parabolic_steps():
    calls = []

    def quadratic(x):
        calls.append(x)
        return (x - 1.234) ** 2 + 2.0

    bounded_minimum(quadratic, -10.0, 10.0, xatol=1e-8)
    assert len(calls) < 15  # golden-section search alone needs about 50 to shrink 20 to 1e-8


def test_bounded_minimum_rejects_a_reversed_interval():
    with pytest.raises(ValueError, match="reversed"):
        bounded_minimum(lambda x: x * x, 1.0, -1.0)


def test_erf_values_and_shapes():
    x = np.linspace(-5.0, 5.0, 1001)
    np.testing.assert_allclose(erf(x), [math.erf(v) for v in x], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(erf(-x), -erf(x))
    assert erf(np.zeros((2, 3))).shape == (2, 3)
    assert float(erf(np.inf)) == 1.0 and float(erf(0.0)) == 0.0
    # erf(1/sqrt 2): the fraction of a Gaussian within one sigma
    assert float(erf(1.0 / math.sqrt(2.0))) == pytest.approx(0.682689492137086, abs=1e-15)


def test_pixel_lab_matches_the_panel_model():
    """Parallax-corrected and plain panels under a rotated hierarchy: the compiled lab positions are the
    model's own (Panel.pixel_lab_coord)."""
    thick = Panel(fast_axis=[1, 0, 0], slow_axis=[0, -1, 0], origin=[-20, 30, 0], image_size=(100, 120),
                  pixel_size=(0.172, 0.172), thickness=0.45, mu=3.96,
                  px_mm_strategy={"type": "ParallaxCorrectedPxMmStrategy"})
    plain = Panel(fast_axis=[0.8, 0.6, 0], slow_axis=[-0.6, 0.8, 0], origin=[5, -40, 10], image_size=(50, 60),
                  pixel_size=(0.075, 0.08))
    hierarchy = {"fast_axis": [0, 1, 0], "slow_axis": [-1, 0, 0], "origin": [3, 1, -180],
                 "children": [{"panel": 0}, {"panel": 1}]}
    detector = Detector([thick, plain], hierarchy)
    assert detector[0].parallax_params is not None and detector[1].parallax_params is None
    table = panel_table(detector)
    rng = np.random.default_rng(3)
    for p, panel in enumerate(detector.panels):
        xy = rng.uniform(0.0, 1.0, (200, 2)) * panel.image_size
        np.testing.assert_allclose(pixel_lab_many(table, np.full(200, p), xy), panel.pixel_lab_coord(xy),
                                   rtol=0, atol=1e-12)
    # The correction is not a no-op: without it, the thick panel's positions move.
    corners = np.array([[0.0, 0.0], [100.0, 120.0]])
    corrected = pixel_lab_many(table, np.zeros(2, np.int64), corners)
    assert not np.allclose(detector[0].lab_coord(corners * 0.172), corrected, atol=1e-4)


@njit
def _sum_with_hints(image, rows, columns):
    total = 0.0
    for k in range(len(rows)):
        prefetch(image, rows[k], columns[k])
        total += image[rows[k] % image.shape[0], columns[k] % image.shape[1]]
    return total


def test_prefetch_hints_compile_for_any_2d_array_and_never_fault():
    """The hint compiles for contiguous and strided arrays of any dtype, changes nothing, and asks for
    addresses outside the array (one row before it, far past its end) without faulting."""
    image = np.arange(60.0).reshape(6, 10)
    rows, columns = np.array([0, 3, -1, 10_000_000]), np.array([0, 9, -5, 3])
    expected = sum(image[r % 6, c % 10] for r, c in zip(rows, columns))
    assert _sum_with_hints(image, rows, columns) == expected
    view = image[1:5, 2:8]  # not contiguous: its rows are 10 elements apart
    expected_view = sum(view[r % 4, c % 6] for r, c in zip(rows, columns))
    assert _sum_with_hints(view, rows, columns) == expected_view
    assert _sum_with_hints(np.ones((3, 3), np.int32), rows, columns) == 4


def test_ragged_positions_count_from_zero_within_each_row_and_skip_empty_rows():
    from braggint.models.shoebox import ragged_positions

    sizes = [3, 0, 1, 4, 0]
    expected = np.concatenate([np.arange(size) for size in sizes])
    np.testing.assert_array_equal(ragged_positions(sizes), expected)
    assert ragged_positions([]).shape == (0,)


def test_take_rows_gives_the_rows_fancy_indexing_gives():
    from braggint.models.shoebox import take_rows

    rng = np.random.default_rng(2)
    index = np.array([4, -1, 0, 4, 2])
    for values in (rng.random(6), rng.integers(0, 9, (6, 3)).astype(np.int32), rng.random((6, 2, 3)) > 0.5):
        taken = take_rows(values, index)
        assert taken.dtype == values.dtype and taken.flags.c_contiguous
        np.testing.assert_array_equal(taken, values[index])
        assert take_rows(values, np.zeros(0, np.int64)).shape == (0, *values.shape[1:])
    with pytest.raises(IndexError):
        take_rows(rng.random((6, 3)), np.array([6]))
