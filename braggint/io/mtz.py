"""Unmerged MTZ export of integrated intensities (gemmi), for CCP4 programs.

Columns: H K L M/ISYM BATCH I SIGI IPR SIGIPR ISUM SIGISUM FRACTIONCALC XDET
YDET ROT LP QE.  I/SIGI are the profile-fitted values where fitting
succeeded, else summation; no Lorentz-polarisation or efficiency
correction is applied (LP and QE are columns, as dials.export writes them).
BATCH is the image number (plus the scan's batch offset) of the
calculated centroid, clamped to the scan for centres in the padding; ROT in degrees; XDET/YDET in pixels.
"""

from __future__ import annotations

import numpy as np

from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from .atomic import atomic_open

COLUMNS = [("M/ISYM", "Y"), ("BATCH", "B"), ("I", "J"), ("SIGI", "Q"), ("IPR", "J"), ("SIGIPR", "Q"),
           ("ISUM", "J"), ("SIGISUM", "Q"), ("FRACTIONCALC", "R"), ("XDET", "R"), ("YDET", "R"), ("ROT", "R"),
           ("LP", "R"), ("QE", "R")]


def _sqrt(variance: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(variance, 0, None))


def write_mtz(experiments: ExperimentList, table: ReflectionTable, path: str) -> int:
    """Write the integrated rows of ``table`` to ``path``; returns the number of rows written."""
    import gemmi

    integrated = table.select(table.get_flags(Flags.integrated, all=False))
    crystal = experiments[0].crystal
    space_group = crystal.space_group or gemmi.SpaceGroup("P 1")
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = space_group
    mtz.set_cell_for_all(gemmi.UnitCell(*crystal.unit_cell))
    mtz.add_dataset("braggint")
    mtz.datasets[-1].project_name = "braggint"
    mtz.datasets[-1].crystal_name = "crystal"
    mtz.datasets[-1].wavelength = experiments[0].beam.wavelength
    for name, kind in COLUMNS:
        mtz.add_column(name, kind)
    n = integrated.nrows
    hkl = integrated["miller_index"].astype(np.int32)
    asu = gemmi.ReciprocalAsu(space_group)
    operations = space_group.operations()
    mapped = [asu.to_asu(h, operations) for h in hkl.tolist()]
    asu_hkl = np.array([m[0] for m in mapped], dtype=float).reshape(-1, 3)
    isym = np.array([m[1] for m in mapped], dtype=float)
    batch = np.zeros(n)
    rot = np.zeros(n)
    for number, experiment in enumerate(experiments):
        rows = integrated["id"] == number
        scan = experiment.scan
        image = np.clip(np.floor(integrated["xyzcal.px"][rows, 2]) + 1, *scan.image_range)
        batch[rows] = image + scan.batch_offset
        rot[rows] = np.rad2deg(integrated["xyzcal.mm"][rows, 2])
    prf_ok = integrated.get_flags(Flags.integrated_prf)
    i_sum = integrated["intensity.sum.value"]
    sig_sum = _sqrt(integrated["intensity.sum.variance"])
    i_prf = integrated["intensity.prf.value"] if "intensity.prf.value" in integrated else np.zeros(n)
    sig_prf = _sqrt(integrated["intensity.prf.variance"]) if "intensity.prf.variance" in integrated else np.zeros(n)
    qe = integrated["qe"] if "qe" in integrated else np.ones(n)
    data = np.column_stack([
        np.asarray(asu_hkl, dtype=float), isym, batch,
        np.where(prf_ok, i_prf, i_sum), np.where(prf_ok, sig_prf, sig_sum), i_prf, sig_prf, i_sum, sig_sum,
        integrated["partiality"], integrated["xyzcal.px"][:, 0], integrated["xyzcal.px"][:, 1], rot,
        integrated["lp"], qe,
    ])
    mtz.set_data(data)
    for number, experiment in enumerate(experiments):
        scan = experiment.scan
        for image in range(scan.image_range[0], scan.image_range[1] + 1):
            entry = gemmi.Mtz.Batch()
            entry.number = image + scan.batch_offset
            entry.title = f"batch {entry.number}"
            entry.dataset_id = 1
            entry.wavelength = experiment.beam.wavelength
            entry.cell = gemmi.UnitCell(*experiment.crystal.unit_cell)
            mtz.batches.append(entry)
    with atomic_open(path, "wb") as handle:
        handle.write(mtz.write_to_bytes() if hasattr(mtz, "write_to_bytes") else _via_file(mtz))
    return n


def _via_file(mtz) -> bytes:
    import os
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".mtz")
    os.close(fd)
    try:
        mtz.write_to_file(name)
        with open(name, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(name)
