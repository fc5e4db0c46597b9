"""zeta, lp and qe against the values DIALS stored for the same rows."""

from __future__ import annotations

import numpy as np

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models import Flags
from braggint.tasks.corrections import detector_efficiency, lorentz_polarization, zeta


def test_factors_match_dials(wedge):
    experiment = read_experiments(str(wedge / "23_integrated.expt"))[0]
    table = read_reflections(str(wedge / "23_integrated.refl"))
    # Rows appended as bad_reference carry no computed factors (zeros) in DIALS's file.
    rows = ~table.get_flags(Flags.bad_reference)
    assert rows.sum() == 65
    s1, s0 = table["s1"][rows], experiment.beam.s0
    axis = experiment.goniometer.rotation_axis_lab
    panel = experiment.detector[0]
    np.testing.assert_allclose(zeta(s1, s0, axis), table["zeta"][rows], rtol=1e-12)
    lp = lorentz_polarization(s1, s0, axis, experiment.beam.polarization_normal,
                              experiment.beam.polarization_fraction)
    np.testing.assert_allclose(lp, table["lp"][rows], rtol=1e-12)
    qe = detector_efficiency(s1, panel.normal, panel.mu, panel.thickness)
    np.testing.assert_allclose(qe, table["qe"][rows], rtol=1e-12)


def test_unpolarised_still_lp_is_inverse_polarisation():
    s0 = np.array([0.0, 0.0, -1.0])
    s1 = np.array([[0.0, np.sin(0.5), -np.cos(0.5)]])
    lp = lorentz_polarization(s1, s0, None, np.array([0.0, 1.0, 0.0]), 0.5)
    # p = 0.5: P = (1 + cos^2 2theta) / 2, L = 1 for a still.
    np.testing.assert_allclose(lp, 2.0 / (1 + np.cos(0.5) ** 2))
