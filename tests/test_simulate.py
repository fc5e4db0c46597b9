"""The simulator: readable files, spots where the truth says, spot widths from the physics."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from braggint.io.expt import read_experiments
from braggint.io.images import ImageSource
from braggint.io.refl import read_reflections
from braggint.models.flags import Flags
from braggint.simulate import PRESETS, simulate
from braggint.simulate.physics import expected_profile


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return simulate(PRESETS["tiny"], str(directory))


def test_files_load_in_braggint_and_fabio(tiny):
    import fabio

    directory = tiny.directory
    experiment = read_experiments(os.path.join(directory, "models.expt"))[0]
    strong = read_reflections(os.path.join(directory, "strong.refl"))
    truth = read_reflections(os.path.join(directory, "truth.refl"))
    assert strong.nrows == tiny.strong.nrows and truth.nrows == tiny.truth.nrows
    assert {"shoebox", "bbox", "xyzobs.px.value", "xyzobs.mm.value", "s1", "miller_index", "flags", "id",
            "panel", "entering"} <= set(strong.keys())
    cbf = fabio.open(os.path.join(directory, "image_00001.cbf"))
    assert cbf.data.shape == (PRESETS["tiny"].ny, PRESETS["tiny"].nx)
    assert "PILATUS" in cbf.header["_array_data.header_contents"]
    frames = ImageSource(experiment.imageset, experiment.detector, 1)
    np.testing.assert_array_equal(frames.raw(1)[0], cbf.data)
    # Module gaps are -1 and masked.
    assert (cbf.data[~experiment.detector[0].static_mask()] == -1).all()


def test_strong_spots_sit_on_the_true_centroids(tiny):
    strong, truth = tiny.strong, tiny.truth
    indexed = strong.get_flags(Flags.indexed)
    assert indexed.mean() > 0.9
    # A few hundred reflections, about a quarter recorded strongly on 6 images of 0.5 degrees.
    assert 50 < strong.nrows < truth.nrows
    key = {(tuple(h), bool(e)): i for i, (h, e) in enumerate(zip(truth["miller_index"], truth["entering"]))}
    rows = [key[(tuple(h), bool(e))] for h, e in zip(strong["miller_index"][indexed], strong["entering"][indexed])]
    difference = strong["xyzobs.px.value"][indexed] - truth["xyzobs.true"][rows]
    # Spot-finder centroids lose only the photons under the threshold: sub-pixel, sub-frame agreement.
    assert np.median(np.abs(difference[:, :2])) < 0.3
    assert np.median(np.abs(difference[:, 2])) < 0.3


def test_spot_widths_follow_divergence_and_mosaicity(tiny):
    truth = tiny.truth
    width_sq, recorded = truth["photons.width_sq"], truth["photons.recorded"]
    low_angle = (truth["d"] > 4.0) & (recorded > 0)
    sigma_b = np.rad2deg(np.sqrt(width_sq[low_angle, 0].sum() / recorded[low_angle].sum()))
    sigma_m = np.rad2deg(np.sqrt(width_sq[recorded > 0, 1].sum() / recorded.sum()))
    expected_b, expected_m = expected_profile(PRESETS["tiny"].beam_divergence, PRESETS["tiny"].mosaicity)
    # At low angle the mosaic term of sigma_b, 2 sin(theta) mosaicity, is small.
    assert sigma_b == pytest.approx(expected_b, rel=0.15)
    assert sigma_m == pytest.approx(expected_m, rel=0.05)


def test_same_seed_same_images_other_seed_other_images(tmp_path):
    spec = PRESETS["tiny"].replace(n_images=2)
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        simulate(spec.replace(seed=seed), str(tmp_path / name))
        digests.append(hashlib.sha256((tmp_path / name / "image_00002.cbf").read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_nexus_output_reads_back(tmp_path):
    result = simulate(PRESETS["tiny"].replace(n_images=2, format="nexus"), str(tmp_path))
    experiment = read_experiments(str(tmp_path / "models.expt"))[0]
    frames = ImageSource(experiment.imageset, experiment.detector, 1)
    image = frames.raw(2)[0]
    assert image.shape == (PRESETS["tiny"].ny, PRESETS["tiny"].nx)
    assert image.max() > 10 and result.strong.nrows > 0


def test_command_line(tmp_path):
    command = [os.path.abspath(sys.executable), "-m", "braggint.cli.simulate", "preset=tiny", "n_images=2",
               f"output={tmp_path / 'out'}", "seed=2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "image_00002.cbf").exists() and (tmp_path / "out" / "truth.refl").exists()
    bad = subprocess.run(command[:3] + ["mosaicity=wide"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "mosaicity" in bad.stderr


def test_multi_panel_layout_integrates_as_the_single_panel_one(tiny_sweep, tmp_path):
    """One panel per module: the same images, and the same summation results in module coordinates."""
    from helpers import run_integrate

    modules = tmp_path / "modules"
    simulate(PRESETS["tiny"].replace(n_images=8, panels="modules"), str(modules))
    detector = read_experiments(str(modules / "models.expt"))[0].detector
    whole = read_experiments(str(tiny_sweep / "models.expt"))[0].detector
    assert len(detector) == 2 and len(whole) == 1
    assert [p.raw_image_offset for p in detector] == [(0, 0), (0, 212)]
    # Every pixel of a module is where the single panel had it.
    pixel = np.array([[10.5, 20.5]])
    np.testing.assert_allclose(detector[1].lab_coord(detector[1].px_to_mm(pixel)),
                               whole[0].lab_coord(whole[0].px_to_mm(pixel + [0, 212])), atol=1e-9)
    for name in ("image_00001.cbf", "image_00008.cbf"):
        assert (modules / name).read_bytes() == (tiny_sweep / name).read_bytes()
    assert run_integrate(modules, tmp_path / "out_modules").returncode == 0
    assert run_integrate(tiny_sweep, tmp_path / "out_whole").returncode == 0
    a = read_reflections(str(tmp_path / "out_modules" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "out_whole" / "integrated.refl"))
    assert set(np.unique(a["panel"])) == {0, 1}
    key_b = {tuple(h) + (bool(e),): i for i, (h, e) in enumerate(zip(b["miller_index"], b["entering"]))}
    pairs = [(i, key_b[tuple(h) + (bool(e),)]) for i, (h, e) in enumerate(zip(a["miller_index"], a["entering"]))
             if tuple(h) + (bool(e),) in key_b]
    assert len(pairs) >= 0.98 * max(a.nrows, b.nrows)
    ia, ib = np.array(pairs).T
    for name in ("intensity.sum.value", "intensity.sum.variance", "background.mean", "partiality"):
        np.testing.assert_allclose(a[name][ia], b[name][ib], rtol=1e-9, atol=1e-9, err_msg=name)
    shift = np.where(a["panel"][ia] == 1, 212.0, 0.0)
    np.testing.assert_allclose(a["xyzobs.px.value"][ia][:, 1] + shift, b["xyzobs.px.value"][ib][:, 1], atol=1e-9)


def test_deliberate_model_errors_change_the_models_not_the_images(tmp_path):
    spec = PRESETS["tiny"].replace(n_images=2)
    simulate(spec, str(tmp_path / "exact"))
    simulate(spec.replace(orientation_error=0.2, distance_error=0.5), str(tmp_path / "wrong"))
    assert (tmp_path / "exact" / "image_00002.cbf").read_bytes() == (tmp_path / "wrong" / "image_00002.cbf").read_bytes()
    exact = read_experiments(str(tmp_path / "exact" / "models.expt"))[0]
    wrong = read_experiments(str(tmp_path / "wrong" / "models.expt"))[0]
    # Rows a, b, c turned by R: real' = real R^T.
    turn = (np.linalg.inv(exact.crystal.real_space) @ wrong.crystal.real_space).T
    angle = np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_allclose(wrong.crystal.unit_cell, exact.crystal.unit_cell, atol=1e-9)
    # The detector (at z = -distance, facing the beam) is 0.5 mm further away.
    assert exact.detector[0].global_frame[2][2] - wrong.detector[0].global_frame[2][2] == pytest.approx(0.5)
