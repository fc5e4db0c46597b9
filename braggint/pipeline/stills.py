"""What integration does differently for stills (experiments without a scan or goniometer).

Stills are predicted with the delta-psi predictor (:func:`braggint.tasks.predict.predict_still`),
their shoeboxes are one frame deep, their profile model has sigma_m = 0 (so,
as in DIALS, they are integrated by summation only) and their partiality
is 1.  After integration DIALS keeps only the cleanly summed reflections
and scales the summation variances by the detector gain; so does
:func:`finalize_stills`.
"""

from __future__ import annotations

import logging

from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable

log = logging.getLogger("braggint")


def finalize_stills(table: ReflectionTable, detector_gain: float) -> ReflectionTable:
    """Summed reflections without bad foreground pixels or empty sums; variances times ``detector_gain``.

    ``summation.detector_gain`` (Leslie 1999) multiplies
    ``intensity.sum.variance``; like DIALS, only for stills.
    """
    table = table.select(table.get_flags(Flags.integrated_sum))
    bad = table.get_flags(Flags.foreground_includes_bad_pixels)
    log.info("Filtering %d reflections with at least one bad foreground pixel out of %d", int(bad.sum()),
             table.nrows)
    table = table.select(~bad)
    empty = (table["intensity.sum.variance"] <= 0) & (table["intensity.sum.value"] == 0)
    if empty.any():
        log.info("Filtering %d reflections with no integrated signal (sum and variance = 0) out of %d",
                 int(empty.sum()), table.nrows)
        table = table.select(~empty)
    table["intensity.sum.variance"] = table["intensity.sum.variance"] * detector_gain
    no_background = table["background.sum.variance"] <= 0
    if no_background.any():
        log.info("Filtering %d reflections with zero background variance", int(no_background.sum()))
        table = table.select(~no_background)
    if "zeta" in table:
        del table["zeta"]  # no rotation axis: DIALS writes no zeta for stills
    return table
