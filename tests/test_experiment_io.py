"""Experiment lists: every shared .expt loads, round-trips, and its models
reproduce the geometry DIALS computed from them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from braggint.errors import InputFileError
from braggint.io.expt import experiments_to_dict, read_experiments, write_experiments
from braggint.io.refl import read_reflections
from braggint.models import Beam, Detector, Experiment, ExperimentList, Panel, Scan
from braggint.models.rotation import axis_angle_matrix

from .conftest import all_files, assert_reader_names_file

EXPT_FILES = all_files((".expt", ".json"))


@pytest.mark.parametrize("path", EXPT_FILES, ids=[p.name for p in EXPT_FILES])
def test_every_shared_experiment_list_round_trips(path, tmp_path):
    first = read_experiments(str(path))
    assert len(first) >= 1
    out = tmp_path / "copy.expt"
    write_experiments(first, str(out))
    second = read_experiments(str(out))
    # Same models after write/read (paths compared as resolved absolute paths).
    base = str(tmp_path)
    assert experiments_to_dict(first, base) == experiments_to_dict(second, base)
    e1, e2 = first[0], second[0]
    assert e1.imageset.template == e2.imageset.template
    np.testing.assert_array_equal(e1.crystal.A, e2.crystal.A)
    np.testing.assert_array_equal(e1.beam.s0, e2.beam.s0)


def test_relative_template_is_resolved_and_rewritten(real_sweep, tmp_path):
    experiments = read_experiments(str(real_sweep / "refined.expt"))
    template = experiments[0].imageset.template
    assert os.path.isabs(template)
    assert template == str((real_sweep / "../../images/l-cyst_01_#####.cbf").resolve())
    out_dir = tmp_path / "a" / "b"
    out_dir.mkdir(parents=True)
    write_experiments(experiments, str(out_dir / "moved.expt"))
    raw = json.loads((out_dir / "moved.expt").read_text())
    written = raw["imageset"][0]["template"]
    assert not os.path.isabs(written)
    assert os.path.normpath(os.path.join(out_dir, written)) == template


def test_models_reproduce_dials_predictions(wedge):
    """s1, detector intersection, parallax px, frame z and d of DIALS's own rows."""
    experiment = read_experiments(str(wedge / "23_integrated.expt"))[0]
    table = read_reflections(str(wedge / "23_integrated.refl"))
    gonio, crystal, beam, panel = (experiment.goniometer, experiment.crystal, experiment.beam,
                                   experiment.detector[0])
    assert gonio.is_multi_axis and panel.parallax_params is not None
    phi = table["xyzcal.mm"][:, 2]
    rotations = axis_angle_matrix(gonio.rotation_axis, phi)
    hkl = table["miller_index"].astype(float)
    r = np.einsum("ij,njk,kl,lm,nm->ni", gonio.setting_rotation, rotations, gonio.fixed_rotation,
                  crystal.A, hkl)
    np.testing.assert_allclose(beam.s0 + r, table["s1"], rtol=0, atol=1e-12)
    panels, xy_mm = experiment.detector.ray_intersection(table["s1"])
    assert (panels == 0).all()
    np.testing.assert_allclose(xy_mm, table["xyzcal.mm"][:, :2], atol=1e-9)
    np.testing.assert_allclose(panel.mm_to_px(xy_mm), table["xyzcal.px"][:, :2], atol=1e-9)
    # The inverse is dxtbx's approximation (shift evaluated at the uncorrected point).
    np.testing.assert_allclose(panel.px_to_mm(table["xyzcal.px"][:, :2]), xy_mm, atol=1e-4)
    np.testing.assert_allclose(experiment.scan.frame_from_angle(phi), table["xyzcal.px"][:, 2], atol=1e-9)
    has_d = table["d"] > 0
    np.testing.assert_allclose(crystal.d_spacing(table["miller_index"][has_d]), table["d"][has_d], rtol=1e-12)


def test_multi_axis_goniometer_reduces_to_fixed_and_setting(wedge):
    gonio = read_experiments(str(wedge / "23_integrated.expt"))[0].goniometer
    assert gonio.names == ["GON_PHI", "GON_OMEGA"] and gonio.scan_axis == 1
    np.testing.assert_allclose(gonio.fixed_rotation, axis_angle_matrix(gonio.axes[0], 120.0, degrees=True))
    np.testing.assert_allclose(gonio.setting_rotation, np.eye(3))
    np.testing.assert_allclose(gonio.rotation_axis_lab, [1.0, 0.0, 0.0])


def test_unit_cell_and_space_group(real_sweep):
    crystal = read_experiments(str(real_sweep / "refined.expt"))[0].crystal
    a, b, c, alpha, beta, gamma = crystal.unit_cell
    # Values printed by dials.integrate in this sweep's log.
    assert (round(a, 4), round(b, 4), round(c, 4)) == (5.4258, 8.1362, 12.0282)
    assert alpha == pytest.approx(90.0, abs=1e-6) and gamma == pytest.approx(90.0, abs=1e-6)
    assert crystal.space_group.hm == "P 21 21 21"


@pytest.mark.parametrize("image_range, expected_z", [((1, 9), 0.5), ((11, 19), 10.5)])
def test_scan_frame_convention(image_range, expected_z):
    scan = Scan(image_range=image_range, oscillation=(0.0, 0.2))
    assert scan.frame_from_angle(np.deg2rad(0.1)) == pytest.approx(expected_z)
    assert scan.angle_from_frame(expected_z) == pytest.approx(np.deg2rad(0.1))
    assert scan.array_range == (image_range[0] - 1, image_range[1])


def test_scan_properties_layout_equals_legacy_layout():
    legacy = Scan.from_dict({"image_range": [1, 3], "oscillation": [10.0, 0.5],
                             "exposure_time": [0.1] * 3, "epochs": [0, 1, 2], "valid_image_ranges": {}})
    modern = Scan.from_dict({"image_range": [1, 3], "batch_offset": 0,
                             "properties": {"oscillation": [10.0, 10.5, 11.0], "exposure_time": [0.1] * 3,
                                            "epochs": [0, 1, 2]}, "valid_image_ranges": {}})
    assert legacy.oscillation == modern.oscillation == (10.0, 0.5)
    np.testing.assert_array_equal(legacy.exposure_time, modern.exposure_time)
    assert Scan.from_dict(modern.to_dict()).oscillation == (10.0, 0.5)


def test_shared_models_stay_shared(tmp_path):
    beam = Beam(direction=[0, 0, 1], wavelength=1.0)
    detector = Detector([Panel(image_size=(10, 10))])
    scan_a = Scan(image_range=(1, 5), oscillation=(0, 1))
    scan_b = Scan(image_range=(6, 10), oscillation=(5, 1))
    experiments = ExperimentList([Experiment("a", beam, detector, scan=scan_a),
                                  Experiment("b", beam, detector, scan=scan_b)])
    path = tmp_path / "two.expt"
    write_experiments(experiments, str(path))
    raw = json.loads(path.read_text())
    assert len(raw["beam"]) == 1 and len(raw["detector"]) == 1 and len(raw["scan"]) == 2
    again = read_experiments(str(path))
    assert again[0].beam is again[1].beam and again[0].scan is not again[1].scan
    assert again.identifiers() == ["a", "b"]


def test_detector_hierarchy_composes_frames():
    panel = Panel(fast_axis=[1, 0, 0], slow_axis=[0, 1, 0], origin=[1, 2, 3], image_size=(10, 10))
    hierarchy = {"fast_axis": [0, 1, 0], "slow_axis": [-1, 0, 0], "origin": [0, 0, -100],
                 "children": [{"panel": 0}]}
    detector = Detector([panel], hierarchy)
    f, s, o = detector[0].global_frame
    np.testing.assert_allclose(f, [0, 1, 0])
    np.testing.assert_allclose(s, [-1, 0, 0])
    np.testing.assert_allclose(o, [-2, 1, -97])  # 1*f_parent + 2*s_parent + 3*n_parent + origin


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed JSON at line 1"),
    ('{"__id__": "Something"}', "not a DIALS experiment list"),
    ('{"__id__": "ExperimentList", "experiment": [{"beam": 3}], "beam": []}', "refers to beam 3"),
    ('{"__id__": "ExperimentList", "experiment": [], "beam": [{"wavelength": 1}]}', "beam model lacks the key"),
])
def test_malformed_experiment_lists_are_named(tmp_path, content, message):
    assert_reader_names_file(read_experiments, tmp_path / "bad.expt", content, message)


def test_missing_experiment_list(tmp_path):
    with pytest.raises(InputFileError, match="experiment list not found"):
        read_experiments(str(tmp_path / "none.expt"))
