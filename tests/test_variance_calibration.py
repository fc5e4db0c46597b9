"""The profile-fit error model: k in sigma^2 = Fisher variance + (k I)^2, from strong full reflections."""

import numpy as np
import pytest

from braggint.models.flags import Flags
from braggint.models.reflection_table import ReflectionTable
from braggint.pipeline.profile_fitting import _MedianSearch, profile_error


def _strong_full_rows(k_true: float, n: int = 4000, seed: int = 5):
    """A table of strong full reflections whose I_sum - I_prf spreads as sqrt(V_sum - V_fisher + (k I)^2),
    with the profile-fitted intensities and Fisher variances."""
    rng = np.random.default_rng(seed)
    intensity = rng.gamma(3.0, 3000.0, n) + 2000.0
    fisher = intensity * 0.8
    v_sum = intensity * 1.2 + 50.0
    spread = np.sqrt(v_sum - fisher + (k_true * intensity) ** 2)
    table = ReflectionTable(n)
    table["intensity.sum.value"] = intensity + rng.normal(size=n) * spread
    table["intensity.sum.variance"] = v_sum
    table["partiality"] = np.ones(n)
    table["flags"] = np.zeros(n, np.int64)
    table.set_flags(np.ones(n, bool), Flags.integrated_sum)
    return table, intensity, fisher


@pytest.mark.parametrize("k_true", [0.02, 0.1])
def test_profile_error_recovers_the_relative_error_it_was_made_with(k_true):
    table, intensity, fisher = _strong_full_rows(k_true)
    k = profile_error(table, intensity, fisher, np.ones(table.nrows, bool))
    assert k == pytest.approx(k_true, rel=0.15)


def test_profile_error_is_zero_when_the_poisson_variance_explains_the_differences():
    table, intensity, fisher = _strong_full_rows(0.0)
    table["intensity.sum.value"] = intensity + 0.1 * (table["intensity.sum.value"] - intensity)
    assert profile_error(table, intensity, fisher, np.ones(table.nrows, bool)) == 0.0


@pytest.mark.parametrize("n", [11, 12, 1001])
def test_the_narrowed_medians_are_numpys_at_every_trial_of_a_bisection(n):
    rng = np.random.default_rng(n)
    size_sq = rng.gamma(2.0, 1000.0, n) ** 2
    poisson = rng.gamma(2.0, 50.0, n)
    difference_sq = rng.normal(size=n) ** 2 * (poisson + 0.03 ** 2 * size_sq)
    difference_sq[: n // 4] = difference_sq[0]  # ties
    search = _MedianSearch(difference_sq, poisson, size_sq)
    low, high = 0.0, 1.0
    assert search.median_at(low) == np.median(difference_sq / poisson)
    kept = []
    for _ in range(40):
        mid = 0.5 * (low + high)
        median = search.median_at(mid)
        assert median == np.median(difference_sq / (poisson + mid * mid * size_sq))
        low, high = (mid, high) if median > 0.454936 else (low, mid)
        search.narrow(low, high)
        kept.append(len(search.d))
    assert kept[-1] < n / 4 or n < 100  # the search reads fewer rows as the bracket closes
