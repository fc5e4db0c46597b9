"""DIALS 3.12.1 and braggint on the same simulated sweep, both judged against the simulator's truth."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from braggint.io.refl import read_reflections
from braggint.models.flags import Flags
from braggint.simulate import PRESETS, simulate

pytestmark = pytest.mark.skipif(shutil.which("dials.integrate") is None,
                                reason="DIALS is not installed (apt install python3-dials)")


def accuracy(table, truth):
    key = {(tuple(h), bool(e)): i for i, (h, e) in enumerate(zip(truth["miller_index"], truth["entering"]))}
    rows = np.array([key.get((tuple(h), bool(e)), -1) for h, e in zip(table["miller_index"], table["entering"])])
    full = (rows >= 0) & table.get_flags(Flags.integrated_sum) & table.get_flags(Flags.integrated_prf)
    full &= truth["partiality.true"][np.where(rows >= 0, rows, 0)] > 0.99
    target = truth["intensity.true"][rows[full]]
    weak = target / np.sqrt(table["intensity.sum.variance"][full]) < 3
    out = {}
    for kind in ("sum", "prf"):
        value = table[f"intensity.{kind}.value"][full]
        sigma = np.sqrt(table[f"intensity.{kind}.variance"][full])
        strong = target / sigma > 5
        out[kind] = (np.corrcoef(value[strong], target[strong])[0, 1], np.sqrt(np.mean((value - target)[weak] ** 2)),
                     np.std((value - target) / sigma))
    return out


def test_braggint_is_at_least_as_accurate_as_dials(tmp_path):
    spec = PRESETS["small"]
    simulate(spec, str(tmp_path / "data"))
    inputs = [str(tmp_path / "data" / "models.expt"), str(tmp_path / "data" / "strong.refl"),
              f"prediction.d_min={spec.d_min}", "nproc=1"]
    for program, command in (("dials", ["dials.integrate"]),
                             ("braggint", [os.path.abspath(sys.executable), "-m", "braggint.cli.integrate"])):
        (tmp_path / program).mkdir()
        result = subprocess.run(command + inputs, cwd=tmp_path / program, capture_output=True, text=True,
                                timeout=1200)
        assert result.returncode == 0, result.stderr[-2000:]
    truth = read_reflections(str(tmp_path / "data" / "truth.refl"))
    ours = accuracy(read_reflections(str(tmp_path / "braggint" / "integrated.refl")), truth)
    theirs = accuracy(read_reflections(str(tmp_path / "dials" / "integrated.refl")), truth)
    print("braggint", ours, "\nDIALS", theirs)
    for kind in ("sum", "prf"):
        assert ours[kind][0] >= theirs[kind][0] - 1e-5  # correlation with truth
        assert ours[kind][1] <= theirs[kind][1] * 1.01  # RMS error of weak reflections
        assert abs(ours[kind][2] - 1) <= abs(theirs[kind][2] - 1) + 0.01  # calibration of the sigmas
    # DIALS's profile-fit sigmas are too large for weak reflections; braggint's are honest.
    assert abs(ours["prf"][2] - 1) < 0.1 < abs(theirs["prf"][2] - 1)
