"""``absorption_correction``: kapton-tape absorption corrections of summation intensities.

Each applied scope (``apply=True``, ``algorithm=fuller_kapton`` or
``kapton_2019``; both use the tape geometry of :mod:`braggint.tasks.kapton`,
for any number of panels) gives every reflection a correction C and, when
asked, a sigma of C:

* ``within_spot_sigmas=True``: C is the mean correction of the rays through
  the centres of the spot's valid foreground pixels, its sigma their
  sample standard deviation; otherwise C is the correction of the
  predicted ray s1;
* ``smart_sigmas=True``: each tape parameter in turn is moved by -/+ its
  sigma (lengths no lower than 0.001 mm) and the largest change of the
  ray's correction becomes the sigma when larger.

Corrections are computed in the block tasks, where the shoeboxes are
(DIALS needs them kept in the output table), into transient columns; after
integration :func:`apply_kapton_corrections` applies them as DIALS does:
I' = C I with Var' = C^2 Var, or with smart sigmas Var' = I'^2 ((sigma_C /
C)^2 + (sigma_I / I)^2) for non-zero I; reflections without foreground
pixels are dropped.  ``algorithm=other`` is a hook without an
implementation (DIALS's as well): it is reported and changes nothing.
"""

from __future__ import annotations

import logging

import numpy as np

from ..models.experiment import Experiment
from ..models.flags import VALID_FOREGROUND
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn
from ..tasks.kapton import kapton_corrections

log = logging.getLogger("braggint")

KAPTON_ALGORITHMS = ("fuller_kapton", "kapton_2019")
_VALID_FOREGROUND = np.uint8(VALID_FOREGROUND)


def kapton_scopes(params) -> list:
    """The ``absorption_correction`` scopes that apply a kapton correction, in order."""
    return [scope for scope in params.absorption_correction if scope.apply and scope.algorithm in KAPTON_ALGORITHMS]


def _tape(settings) -> tuple[float, float, float, float]:
    return (settings.xtal_height_above_kapton_mm.value, settings.kapton_thickness_mm.value,
            settings.kapton_half_width_mm.value, settings.rotation_angle_deg.value)


def _perturbed_tapes(settings) -> list[tuple[float, float, float, float]]:
    """The tape parameters with one of them moved by -sigma and by +sigma (lengths >= 0.001 mm)."""
    values = list(_tape(settings))
    sigmas = (settings.xtal_height_above_kapton_mm.sigma, settings.kapton_thickness_mm.sigma,
              settings.kapton_half_width_mm.sigma, settings.rotation_angle_deg.sigma)
    if any(sigma < 0 for sigma in sigmas):
        raise ValueError("kapton parameter sigmas must not be negative")
    tapes = []
    for index, sigma in enumerate(sigmas):
        for sign in (-1.0, 1.0):
            moved = list(values)
            moved[index] = values[index] + sign * sigma
            if index < 3:
                moved[index] = max(moved[index], 0.001) if sign < 0 else moved[index]
            tapes.append(tuple(moved))
    return tapes


def spot_corrections(experiment: Experiment, table: ReflectionTable, shoeboxes: ShoeboxColumn,
                     settings) -> tuple[np.ndarray, np.ndarray]:
    """``(C, sigma of C)`` of every row for one fuller_kapton scope (sigma 0 where none is asked for)."""
    beam = np.asarray(experiment.beam.s0, float)
    wavelength = 1.0 / np.linalg.norm(beam)
    n = table.nrows
    sigma = np.zeros(n)
    if settings.within_spot_sigmas and len(shoeboxes):
        row, _, y, x = shoeboxes.voxel_coordinates()
        used = (shoeboxes.mask & _VALID_FOREGROUND) == _VALID_FOREGROUND
        row, y, x = row[used], y[used], x[used]
        rays = np.zeros((len(row), 3))
        for p in np.unique(shoeboxes.panel):
            sel = shoeboxes.panel[row] == p
            rays[sel] = experiment.detector[int(p)].pixel_lab_coord(np.column_stack([x[sel], y[sel]]) + 0.5)
        per_pixel = kapton_corrections(rays, beam, wavelength, *_tape(settings)) if len(row) else np.zeros(0)
        count = np.bincount(row, minlength=n)
        total = np.bincount(row, weights=per_pixel, minlength=n)
        squares = np.bincount(row, weights=per_pixel**2, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            correction = np.where(count > 0, total / count, 1.0)
            variance = (squares - count * correction**2) / np.maximum(count - 1, 1)
        sigma = np.where(count > 1, np.sqrt(np.maximum(variance, 0.0)), 0.0)
    else:
        correction = kapton_corrections(table["s1"], beam, wavelength, *_tape(settings))
    if settings.smart_sigmas:
        central = kapton_corrections(table["s1"], beam, wavelength, *_tape(settings)) \
            if settings.within_spot_sigmas else correction
        for tape in _perturbed_tapes(settings):
            change = np.abs(central - kapton_corrections(table["s1"], beam, wavelength, *tape))
            sigma = np.maximum(sigma, change)
    return correction, sigma


def add_kapton_columns(experiment: Experiment, table: ReflectionTable, shoeboxes: ShoeboxColumn,
                       scopes: list) -> None:
    """Transient ``kapton.correction.<k>`` / ``kapton.sigma.<k>`` columns for each applied scope k."""
    for k, scope in enumerate(scopes):
        correction, sigma = spot_corrections(experiment, table, shoeboxes, scope.fuller_kapton)
        table[f"kapton.correction.{k}"] = correction
        table[f"kapton.sigma.{k}"] = sigma


def apply_kapton_corrections(table: ReflectionTable, scopes: list) -> ReflectionTable:
    """Correct the summation intensities scope by scope; DIALS's output columns; transient columns removed."""
    if not scopes:
        return table
    table = table.select(table["num_pixels.foreground"] > 0)  # as DIALS: no foreground, no correction, no row
    log.info("Applying %d kapton absorption correction(s) to %d reflections", len(scopes), table.nrows)
    for k, scope in enumerate(scopes):
        correction = table[f"kapton.correction.{k}"]
        sigma = table[f"kapton.sigma.{k}"]
        value = table["intensity.sum.value"].copy()
        variance = table["intensity.sum.variance"].copy()
        corrected = value * correction
        if scope.fuller_kapton.smart_sigmas:
            smart = value != 0
            with np.errstate(invalid="ignore", divide="ignore"):
                propagated = corrected**2 * ((sigma / correction) ** 2 + variance / value**2)
            variance = np.where(smart, propagated, variance * correction**2)
            table["kapton_absorption_correction_sigmas"] = sigma
        else:
            variance = variance * correction**2
        table["intensity.sum.value"] = corrected
        table["intensity.sum.variance"] = variance
        table["kapton_absorption_correction"] = correction
        del table[f"kapton.correction.{k}"]
        del table[f"kapton.sigma.{k}"]
    return table
