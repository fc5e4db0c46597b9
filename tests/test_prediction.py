"""Scan-static prediction against DIALS's own predictions and test numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from braggint.errors import BraggintError
from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models.rotation import axis_angle_matrix, rotate_vectors
from braggint.params import ParameterSet, master_text
from braggint.pipeline.predict import predict_reflections
from braggint.tasks.predict import detector_d_min, predict_scan_varying, predict_static


def prediction_params(**overrides):
    params = ParameterSet.from_text(master_text("predict"), "predict.phil")
    for name, value in overrides.items():
        params.assign(name, str(value))
    return params.extract().prediction


def test_every_dials_reflection_is_predicted_identically(wedge):
    """23_integrated.expt: two-axis goniometer, scan at -145 deg, parallax-corrected Pilatus."""
    experiments = read_experiments(str(wedge / "23_integrated.expt"))
    dials = read_reflections(str(wedge / "23_integrated.refl"))
    ours = predict_reflections(experiments, prediction_params())
    assert ours.identifiers == dials.identifiers
    for row in range(dials.nrows):
        same = (ours["miller_index"] == dials["miller_index"][row]).all(axis=1) & (
            ours["entering"] == dials["entering"][row])
        assert same.any(), f"DIALS row {row} {dials['miller_index'][row]} not predicted"
        candidates = np.flatnonzero(same)
        match = candidates[np.argmin(np.abs(ours["xyzcal.mm"][candidates, 2] - dials["xyzcal.mm"][row, 2]))]
        np.testing.assert_allclose(ours["xyzcal.mm"][match], dials["xyzcal.mm"][row], atol=1e-6)
        np.testing.assert_allclose(ours["xyzcal.px"][match], dials["xyzcal.px"][row], atol=1e-3)
        np.testing.assert_allclose(ours["s1"][match], dials["s1"][row], rtol=1e-8)
        if dials["d"][row] > 0:
            assert ours["d"][match] == pytest.approx(dials["d"][row], rel=1e-8)
        assert ours["panel"][match] == dials["panel"][row]


def test_centroid_sweep_gives_dials_count(shared_data, tmp_path):
    """DIALS's test_scan_static_reflection_predictor: 1996 predictions with padding 0."""
    path = shared_data / "centroid_test_data" / "experiments.json"
    experiment = read_experiments(str(path))[0]
    rays = predict_static(experiment, padding_deg=0.0)
    assert len(rays.d) == 1996
    assert rays.d.min() >= detector_d_min(experiment)
    z0, z1 = experiment.scan.array_range
    assert (rays.z_px >= z0).all() and (rays.z_px <= z1).all()
    # The same sweep starting at 360 degrees gives the same reflections one turn later.
    document = json.loads(path.read_text())
    document["scan"][0]["oscillation"][0] = 360.0
    shifted_path = tmp_path / "shifted.json"
    shifted_path.write_text(json.dumps(document))
    shifted = predict_static(read_experiments(str(shifted_path))[0], padding_deg=0.0)
    assert len(shifted.d) == 1996
    order, shifted_order = np.lexsort(rays.miller_index.T), np.lexsort(shifted.miller_index.T)
    np.testing.assert_allclose(shifted.phi[shifted_order], rays.phi[order] + 2 * np.pi, atol=1e-9)
    np.testing.assert_allclose(shifted.z_px[shifted_order], rays.z_px[order], atol=1e-6)


def test_padding_and_resolution_limits(shared_data):
    experiment = read_experiments(str(shared_data / "centroid_test_data" / "experiments.json"))[0]
    padded = predict_static(experiment, padding_deg=1.0)
    assert len(padded.d) > 1996
    assert (padded.z_px < 0).any() and (padded.z_px > 9).any()
    limited = predict_static(experiment, d_min=3.0, d_max=10.0, padding_deg=0.0)
    assert len(limited.d) and limited.d.min() >= 3.0 and limited.d.max() <= 10.0


def test_predict_command_writes_a_table(wedge, tmp_path):
    result = subprocess.run([os.path.abspath(sys.executable), "-m", "braggint.cli.predict",
                             str(wedge / "23_integrated.expt"), "output=p.refl", "d_min=1.0"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    table = read_reflections(str(tmp_path / "p.refl"))
    assert table.nrows > 0 and table["d"].min() >= 1.0
    assert {"miller_index", "s1", "xyzcal.px", "xyzcal.mm", "flags", "id", "panel", "entering"} <= set(table.keys())


def _with_scan_points(experiment, matrices):
    experiment.crystal.A_at_scan_points = np.asarray(matrices)
    return experiment


def _keyed(rays):
    return {tuple(h) + (bool(e),): row for row, (h, e) in enumerate(zip(rays.miller_index, rays.entering))}


def test_scan_varying_with_constant_crystal_equals_static(shared_data):
    experiment = read_experiments(str(shared_data / "centroid_test_data" / "experiments.json"))[0]
    static = predict_static(experiment, padding_deg=1.0)
    n = experiment.scan.num_images + 1
    varying = predict_scan_varying(_with_scan_points(experiment, [experiment.crystal.A] * n), padding_deg=1.0)
    a, b = _keyed(static), _keyed(varying)
    assert set(a) == set(b)
    rows_a, rows_b = [a[k] for k in a], [b[k] for k in a]
    # Linear interpolation of r inside a 0.2-degree frame: the arc and its chord differ by ~1e-3 frames.
    np.testing.assert_allclose(varying.z_px[rows_b], static.z_px[rows_a], atol=0.01)
    np.testing.assert_allclose(varying.xy_px[rows_b], static.xy_px[rows_a], atol=0.01)
    np.testing.assert_allclose(np.linalg.norm(varying.s1, axis=1), np.linalg.norm(experiment.beam.s0), rtol=1e-9)


def test_scan_varying_follows_a_turning_crystal(shared_data):
    """The crystal turns 0.1 degree per image about the beam: each reflection is where A at its image puts it."""
    experiment = read_experiments(str(shared_data / "centroid_test_data" / "experiments.json"))[0]
    A = experiment.crystal.A
    n = experiment.scan.num_images + 1
    turns = [axis_angle_matrix(experiment.beam.s0, 0.1 * k, degrees=True) @ A for k in range(n)]
    varying = predict_scan_varying(_with_scan_points(experiment, turns), padding_deg=0.0)
    static_first = predict_static(_with_scan_points(experiment, None), padding_deg=0.0)
    assert set(_keyed(varying)) != set(_keyed(static_first))
    checked = 0
    for k in range(n - 1):
        experiment.crystal.real_space = np.linalg.inv(turns[k])
        at_k = predict_static(experiment, padding_deg=0.0)
        index = _keyed(at_k)
        rows = np.flatnonzero(np.floor(varying.z_px) == k)
        for row in rows:
            key = tuple(varying.miller_index[row]) + (bool(varying.entering[row]),)
            if key in index:
                # Within one image the crystal turns 0.1 deg: positions agree to a fraction of that.
                assert abs(at_k.z_px[index[key]] - varying.z_px[row]) < 0.6
                checked += 1
    assert checked > 0.8 * len(varying.d)
    experiment.crystal.real_space = np.linalg.inv(A)


def test_prediction_refuses_mismatched_scan_points(shared_data):
    experiments = read_experiments(str(shared_data / "centroid_test_data" / "experiments.json"))
    experiments[0].crystal.A_at_scan_points = np.array([experiments[0].crystal.A] * 3)
    with pytest.raises(BraggintError, match="scan points"):
        predict_reflections(experiments, prediction_params())
    assert predict_reflections(experiments, prediction_params(force_static=True)).nrows > 0


def test_systematic_absences_are_gemmis():
    import gemmi

    from braggint.models.crystal import Crystal
    from braggint.tasks.predict import systematically_absent

    hkl = np.random.default_rng(0).integers(-12, 13, (5000, 3))
    for symbol in ("P 21 21 21", "C 2 2 21", "P 43 21 2", "I 41 2 2", "P 61 2 2", "F d -3 m", "P 1 21/c 1"):
        group = gemmi.SpaceGroup(symbol)
        crystal = Crystal(np.diag([50.0, 60.0, 70.0]), group.hall)
        expected = [group.operations().is_systematically_absent([int(v) for v in h]) for h in hkl]
        np.testing.assert_array_equal(systematically_absent(crystal, hkl), expected, err_msg=symbol)


def test_rotating_vectors_equals_applying_the_rotation_matrices():
    rng = np.random.default_rng(3)
    axis, angles, vectors = rng.normal(size=3), rng.uniform(-7, 7, 50), rng.normal(size=(50, 3))
    expected = np.einsum("nij,nj->ni", axis_angle_matrix(axis, angles), vectors)
    assert np.allclose(rotate_vectors(axis, angles, vectors), expected, atol=1e-12)


def test_candidate_indices_are_every_index_in_the_resolution_shell(monkeypatch):
    """The chord enumeration gives exactly the indices of the whole box that pass the resolution and
    centring tests, in h, k, l order, for a skewed cell whose box is far larger than its sphere, also
    when generated in many small chunks."""
    from types import SimpleNamespace

    import gemmi

    from braggint.models.crystal import Crystal
    from braggint.tasks import predict as predict_module
    from braggint.tasks.predict import candidate_indices

    real_space = np.array([[40.0, 0.0, 0.0], [25.0, 35.0, 0.0], [10.0, -12.0, 60.0]])
    for symbol, d_min, d_max in (("P 1", 2.47, None), ("C 1 2 1", 1.93, 6.1), ("F 2 2 2", 2.93, 9.1)):
        crystal = Crystal(real_space, gemmi.SpaceGroup(symbol).hall)
        limits = np.floor(np.linalg.norm(real_space, axis=1) / d_min).astype(int)
        box = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in limits], indexing="ij"), -1).reshape(-1, 3)
        d = 1.0 / np.maximum(np.linalg.norm(box @ crystal.A.T, axis=1), 1e-300)
        centring = [np.array(c) for c in crystal.space_group_ops.cen_ops]
        allowed = np.all([(box @ c) % 24 == 0 for c in centring], axis=0)
        expected = box[(d >= d_min) & (d <= (d_max or np.inf)) & allowed & np.any(box != 0, axis=1)]
        assert len(expected) > 1000, symbol
        for chunk in (2_000_000, 997):
            monkeypatch.setattr(predict_module, "_CHUNK", chunk)
            found = candidate_indices(SimpleNamespace(crystal=crystal), d_min, d_max)
            np.testing.assert_array_equal(found, expected, err_msg=symbol)
