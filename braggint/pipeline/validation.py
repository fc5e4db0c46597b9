"""Cross-validation of the reference profiles (``integration.profile.validation``).

The reference reflections of each experiment are dealt at random (seed 0)
into k = min(number_of_partitions, floor(N / min_partition_size)) folds,
held in the ``profile.index`` column (-1 for other rows).  The first pass
sums each fold's profile contributions separately, so the profiles learned
from every fold but f are the total minus fold f's sums.  The second pass
fits the fully recorded rows of each held-out fold with those profiles, from the shoeboxes already in
the work store (no third pass over the images, unlike DIALS), and counts
for each fold: how many were fitted, their mean profile correlation and the
spread of (I_prf - I_sum) / sigma_sum, held out and in-sample (fitted with
the profiles of all references).  Held-out statistics much worse than the
in-sample ones mean the profiles are fitted to noise.  Validation never
changes the integrated intensities.

DIALS 3.12.1's validation is broken (it evaluates on the training folds
and reads a column it no longer writes); braggint's follows the intent.
"""

from __future__ import annotations

import logging

import numpy as np

from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from .report import Table

log = logging.getLogger("braggint")

FOLD_COLUMN = "profile.index"

#: Per-fold sums kept by each block: held-out and in-sample (fitted, correlation, z^2), and tested.
STATISTICS = ("tested", "fitted", "correlation", "z_sq", "fitted_all", "correlation_all", "z_sq_all")


def assign_folds(table: ReflectionTable, validation) -> int:
    """Deal the reference rows of each experiment into folds (``profile.index``); the fold count k.

    Returns 1 (and adds no column) when validation is off or too few
    references exist for two folds of ``min_partition_size``.
    """
    wanted = validation.number_of_partitions or 1
    if wanted <= 1:
        return 1
    references = table.get_flags(Flags.reference_spot)
    per_experiment = [int((references & (table["id"] == number)).sum()) for number in np.unique(table["id"])]
    n_folds = min(wanted, min(per_experiment or [0]) // max(validation.min_partition_size, 1))
    if n_folds < 2:
        log.warning("Too few reference reflections (%s per experiment) for %d validation partitions of at least "
                    "%d: the reference profiles are not cross-validated", per_experiment, wanted,
                    validation.min_partition_size)
        return 1
    folds = np.full(table.nrows, -1, np.int32)
    generator = np.random.default_rng(0)
    for number in np.unique(table["id"]):
        rows = np.flatnonzero(references & (table["id"] == number))
        folds[rows[generator.permutation(len(rows))]] = np.arange(len(rows)) % n_folds
    table[FOLD_COLUMN] = folds
    log.info("Profile validation: %d reference reflections in %d partitions", int(references.sum()), n_folds)
    return n_folds


def fold_statistics(held_out: ReflectionTable, in_sample: ReflectionTable) -> np.ndarray:
    """The :data:`STATISTICS` sums of one fold's rows fitted held-out and in-sample."""
    def sums(table):
        ok = table.get_flags(Flags.integrated_prf) & table.get_flags(Flags.integrated_sum)
        ok &= table["intensity.sum.variance"] > 0
        z = (table["intensity.prf.value"][ok] - table["intensity.sum.value"][ok]) / np.sqrt(
            table["intensity.sum.variance"][ok])
        return [ok.sum(), table["profile.correlation"][ok].sum(), (z * z).sum()]

    return np.array([held_out.nrows, *sums(held_out), *sums(in_sample)], dtype=float)


def validation_table(statistics: dict[int, np.ndarray]) -> Table:
    """The "Profile validation" table from the per-experiment (k, STATISTICS) sums."""
    table = Table("profile.validation", "Profile validation (each partition fitted with the profiles of the others)",
                  [("id", "ID"), ("partition", "Partition"), ("n_tested", "# held out"), ("n_fitted", "# fitted"),
                   ("cc_held_out", "<CC> held out"), ("cc_in_sample", "<CC> in sample"),
                   ("rms_z_held_out", "rms z held out"), ("rms_z_in_sample", "rms z in sample")])
    for number, folds in sorted(statistics.items()):
        for fold, values in enumerate(folds):
            tested, fitted, cc, z_sq, fitted_all, cc_all, z_sq_all = values
            table.rows.append([str(number), str(fold), str(int(tested)), str(int(fitted)),
                               f"{cc / max(fitted, 1):.3f}", f"{cc_all / max(fitted_all, 1):.3f}",
                               f"{np.sqrt(z_sq / max(fitted, 1)):.2f}", f"{np.sqrt(z_sq_all / max(fitted_all, 1)):.2f}"])
    return table
