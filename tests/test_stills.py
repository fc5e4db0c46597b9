"""Stills: DIALS's stills prediction, and a simulated serial-crystallography set integrated against truth."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from helpers import run_integrate

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections, write_reflections
from braggint.simulate import PRESETS, simulate
from braggint.tasks.predict import predict_still


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    """The 'stills' preset: 500 shots, each a randomly oriented crystal."""
    directory = tmp_path_factory.mktemp("stills")
    simulate(PRESETS["stills"], str(directory))
    return directory


def matched_truth(table, truth):
    """Row of the truth table of each integrated (experiment, hkl), -1 where the truth has none."""
    key = {(int(i), tuple(h)): n for n, (i, h) in enumerate(zip(truth["id"], truth["miller_index"]))}
    return np.array([key.get((int(i), tuple(h)), -1) for i, h in zip(table["id"], table["miller_index"])])


def test_five_hundred_stills_integrate_on_two_workers_as_accurately_as_a_sweep(stills, tmp_path):
    result = run_integrate(stills, tmp_path, "nproc=2", f"prediction.d_min={PRESETS['stills'].d_min}")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "dials.integrate.log").read_text()
    assert "Started 2 local Dask workers" in log and "Summary for all 500 stills" in log
    table = read_reflections(str(tmp_path / "integrated.refl"))
    truth = read_reflections(str(stills / "truth.refl"))
    assert len(np.unique(table["id"])) >= 490 and (table["partiality"] == 1).all() and "zeta" not in table
    rows = matched_truth(table, truth)
    found = rows >= 0
    value, sigma = table["intensity.sum.value"], np.sqrt(table["intensity.sum.variance"])
    target = truth["intensity.true"][rows[found]]
    strong = target / sigma[found] > 5
    correlation = np.corrcoef(value[found][strong], target[strong])[0, 1]
    median_error = np.median(np.abs(value[found][strong] - target[strong]) / target[strong])
    spread = np.std((value[found] - target) / sigma[found])
    print(f"\nstills: {table.nrows} reflections, {strong.sum()} with I/sigma > 5: correlation {correlation:.5f}, "
          f"median relative error {median_error:.4f}, sd((I - I_true)/sigma) {spread:.3f}")
    # The thresholds the rotation sweep meets (issue 5), and honest errors.
    assert strong.sum() > 10000
    assert correlation >= 0.99 and median_error < 0.05 and 0.9 < spread < 1.2
    # Predicted reflections the shot did not excite hold nothing but noise.
    assert abs(np.mean(value[~found] / sigma[~found])) < 0.3


def test_detector_gain_scales_only_the_summation_variances(stills, tmp_path):
    subset = tmp_path / "subset"
    subset.mkdir()
    document = json.loads((stills / "models.expt").read_text())
    document["experiment"] = document["experiment"][:20]
    (subset / "models.expt").write_text(json.dumps(document))
    strong = read_reflections(str(stills / "strong.refl"))
    write_reflections(strong.select((strong["id"] >= 0) & (strong["id"] < 20)), str(subset / "strong.refl"))
    for name in [d["images"][0] for d in document["imageset"][:20]]:
        (subset / name).symlink_to(stills / name)
    plain = run_integrate(subset, tmp_path / "plain")
    doubled = run_integrate(subset, tmp_path / "doubled", "summation.detector_gain=2")
    assert plain.returncode == 0 and doubled.returncode == 0, doubled.stderr
    a = read_reflections(str(tmp_path / "plain" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "doubled" / "integrated.refl"))
    assert a.nrows == b.nrows > 100
    np.testing.assert_allclose(b["intensity.sum.variance"], 2 * a["intensity.sum.variance"], rtol=1e-12)
    np.testing.assert_allclose(b["intensity.sum.value"], a["intensity.sum.value"], rtol=1e-12)
    np.testing.assert_allclose(b["background.sum.variance"], a["background.sum.variance"], rtol=1e-12)


@pytest.mark.skipif(shutil.which("dials.integrate") is None, reason="DIALS is not installed (apt install python3-dials)")
def test_stills_prediction_is_dials(stills, tmp_path):
    """DIALS 3.12.1's StillsReflectionPredictor on the same shots: the same reflections, positions and delta psi."""
    script = tmp_path / "predict.py"
    script.write_text(
        "import json, sys\n"
        "from dxtbx.model.experiment_list import ExperimentListFactory\n"
        "from dials.array_family import flex  # noqa: F401  (registers the reflection table)\n"
        "from dials.algorithms.spot_prediction import StillsReflectionPredictor\n"
        "experiments = ExperimentListFactory.from_json_file(sys.argv[1], check_format=False)\n"
        "out = []\n"
        "for e in list(experiments)[:5]:\n"
        "    r = StillsReflectionPredictor(e, dmin=2.0).for_ub(e.crystal.get_A())\n"
        "    out.append([[list(h), list(x), d] for h, x, d in zip(r['miller_index'], r['xyzcal.px'],"
        " r['delpsical.rad'])])\n"
        "print(json.dumps(out))\n")
    completed = subprocess.run(["/usr/bin/python3", str(script), str(stills / "models.expt")], capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    theirs = json.loads(completed.stdout)
    experiments = read_experiments(str(stills / "models.expt"))
    for experiment, reference in zip(list(experiments)[:5], theirs):
        rays, delpsi = predict_still(experiment, d_min=2.0)
        ours = {tuple(h): (x, d) for h, x, d in zip(rays.miller_index.tolist(), rays.xy_px, delpsi)}
        assert len(reference) > 20 and set(ours) == {tuple(h) for h, _, _ in reference}
        for h, xyz, d in reference:
            np.testing.assert_allclose(ours[tuple(h)][0], xyz[:2], atol=1e-6)
            assert ours[tuple(h)][1] == pytest.approx(d, abs=1e-9)


def test_the_nave_mosaic_model_widens_the_stills_prediction(stills):
    """With ML_half_mosaicity_deg and ML_domain_size_ang, the delta-psi limit is d / domain + half mosaicity / 2."""
    experiment = read_experiments(str(stills / "models.expt"))[0]
    plain, plain_delpsi = predict_still(experiment, d_min=2.0)
    assert np.abs(plain_delpsi).max() < 0.0015
    experiment.crystal.extra.update(ML_half_mosaicity_deg=0.2, ML_domain_size_ang=2000.0)
    wide, delpsi = predict_still(experiment, d_min=2.0)
    limit = wide.d / 2000.0 + np.deg2rad(0.2) / 2
    assert (np.abs(delpsi) < limit).all() and len(wide.d) > len(plain.d)
    assert {tuple(h) for h in plain.miller_index.tolist()} <= {tuple(h) for h in wide.miller_index.tolist()}
