"""The integration report's statistics: ranks for Spearman's correlation."""

import numpy as np
from scipy.stats import rankdata

from braggint.pipeline.report import _ranks


def test_ranks_average_ties_as_scipy_does():
    rng = np.random.default_rng(7)
    for values in (rng.integers(-5, 5, 1000).astype(float),  # many ties
                   rng.normal(size=500),                         # none
                   np.array([2.0, -0.0, 0.0, 2.0, 1.0]),        # signed zeros tie
                   np.array([3.0])):
        assert np.array_equal(_ranks(values), rankdata(values, method="average") - 1)


def test_ranks_put_nans_last_tied_with_each_other():
    values = np.array([np.nan, 1.0, np.nan, 0.5, 1.0])
    assert np.array_equal(_ranks(values), [3.5, 1.5, 3.5, 0.0, 1.5])
