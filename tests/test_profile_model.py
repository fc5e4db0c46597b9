"""The gaussian_rs model from strong spots, against DIALS 3.12.1's results on real data."""

from __future__ import annotations

import logging
import shutil
import subprocess

import numpy as np
import pytest

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models.flags import Flags
from braggint.params import ParameterSet, integrate_master_text
from braggint.pipeline.predict import predict_reflections
from braggint.pipeline.profile_model import (
    ProfileModelError,
    estimate_profile,
    profile_from_parameters,
)
from braggint.pipeline.reference import (
    mask_neighbouring_pixels,
    matched_reference,
    split_reference,
)

#: The parameters DIALS was run with on the real L-cysteine sweeps.
REAL_RUN = {"min_spots.overall": 10, "min_spots.per_degree": 5}


def integrate_params(**overrides):
    params = ParameterSet.from_text(integrate_master_text(), "integrate.phil")
    for name, value in overrides.items():
        params.assign(name, str(value))
    return params.extract()


def reference_spots(expt, refl, params):
    experiments = read_experiments(str(expt))
    reference = read_reflections(str(refl))
    usable, _ = split_reference(reference)
    mask_neighbouring_pixels(reference, experiments, usable)
    predicted = predict_reflections(experiments, params.prediction)
    return experiments, matched_reference(predicted, reference, rows=usable)


def test_split_reference_drops_rubbish_without_copying_it(shared_data):
    strong = read_reflections(str(shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01" / "refined.refl"))
    strong.unset_flags(np.arange(0, strong.nrows, 7), Flags.indexed)
    usable, rubbish = split_reference(strong)
    alone, nothing = split_reference(strong, keep_rubbish=False)
    assert rubbish.nrows >= len(range(0, strong.nrows, 7)) and nothing.nrows == 0
    assert np.array_equal(usable, alone) and len(usable) == strong.nrows - rubbish.nrows
    assert not np.isin(np.arange(0, strong.nrows, 7), usable).any()
    # In DIALS's order: the unindexed spots first, then the indexed ones dropped (all bad for refinement here).
    unindexed = np.flatnonzero(~strong.get_flags(Flags.indexed))
    dropped = np.setdiff1d(np.flatnonzero(strong.get_flags(Flags.indexed)), usable)
    assert strong.get_flags(Flags.bad_for_refinement, all=False)[dropped].all()
    assert rubbish["shoebox"].equals(strong["shoebox"].select(np.concatenate([unindexed, dropped])))


def test_neighbour_masking_marks_the_voxels_whose_index_differs_at_either_frame_edge(shared_data):
    """mask_neighbouring_pixels against its definition, in numpy: a voxel becomes Valid|Background when its
    pixel centre's fractional hkl, ``(F A)^-1 R(-phi) S^-1 (s' - s0)`` at either edge of its frame, rounds
    to another index than the spot's."""
    from braggint.models.flags import MaskCode
    from braggint.models.rotation import rotate_vectors

    folder = shared_data / "centroid_test_data"
    experiments = read_experiments(str(folder / "indexed.expt"))
    strong = read_reflections(str(folder / "indexed.refl"))
    experiment = experiments[0]
    beam, gonio, scan = experiment.beam, experiment.goniometer, experiment.scan
    # Frames 8 times as wide as recorded, so that the index changes inside many voxels' frames: voxels
    # foreign at one edge only, which the recorded sweep's frames barely have.
    scan.oscillation = (scan.oscillation[0], 8 * scan.oscillation[1])
    before = strong["shoebox"].mask.copy()
    changed = mask_neighbouring_pixels(strong, experiments)
    s0 = np.asarray(beam.s0, dtype=float)
    to_hkl = np.linalg.inv(gonio.fixed_rotation @ experiment.crystal.A)
    unsetting = np.linalg.inv(gonio.setting_rotation)
    phi0, dphi = scan.oscillation_rad
    expected = before.copy()
    boxes = strong["shoebox"]
    shoeboxes_changed = one_edge_only = 0
    for row in range(strong.nrows):
        x0, x1, y0, y1, z0, z1 = boxes.bbox[row]
        if boxes.offsets[row + 1] == boxes.offsets[row]:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        lab = experiment.detector.panels[boxes.panel[row]].pixel_lab_coord(
            np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5]))
        s1 = lab / np.linalg.norm(lab, axis=1)[:, None] * np.linalg.norm(s0)
        x = (s1 - s0) @ unsetting.T
        at_edge = np.zeros((2, z1 - z0, len(x)), bool)
        for k, z in enumerate(range(z0, z1)):
            for side, edge in enumerate((z, z + 1)):
                phi = phi0 + (edge - scan.array_range[0]) * dphi
                h = rotate_vectors(gonio.rotation_axis, np.full(len(x), -phi), x) @ to_hkl.T
                at_edge[side, k] = (np.floor(h + 0.5) != strong["miller_index"][row]).any(axis=1)
        foreign = at_edge.any(axis=0)
        one_edge_only += int((at_edge[0] != at_edge[1]).sum())
        start, stop = boxes.offsets[row], boxes.offsets[row + 1]
        expected[start:stop][foreign.ravel()] = MaskCode.Valid | MaskCode.Background
        shoeboxes_changed += bool(foreign.any())
    assert changed == shoeboxes_changed > 0 and one_edge_only > 100
    assert np.array_equal(boxes.mask, expected)


def test_matching_some_rows_equals_matching_those_rows_copied_out(shared_data):
    """Masking and matching rows of the whole strong-spot table give what they give on those rows copied out."""
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01"
    experiments = read_experiments(str(folder / "refined.expt"))
    predicted = predict_reflections(experiments, integrate_params(**REAL_RUN).prediction)
    whole = read_reflections(str(folder / "refined.refl"))
    rows = np.arange(1, whole.nrows, 2)
    copied = whole.select(rows)
    assert mask_neighbouring_pixels(whole, experiments, rows) == mask_neighbouring_pixels(copied, experiments) > 0
    assert whole["shoebox"].select(rows).equals(copied["shoebox"])
    of_rows = matched_reference(predicted.select(np.arange(predicted.nrows)), whole, rows=rows)
    of_copy = matched_reference(predicted, copied)
    assert of_rows.nrows == of_copy.nrows > 0
    for name in ("miller_index", "xyzobs.px.value", "predicted_row", "s1"):
        assert np.array_equal(of_rows[name], of_copy[name])
    assert of_rows["shoebox"].equals(of_copy["shoebox"])


@pytest.mark.parametrize("span", [7, 1 << 40])
def test_matching_keys_are_numbered_in_lexicographic_order(span):
    """The ids matching uses for (h, k, l, entering, id, panel) keys are numpy's unique-row inverse, whether
    the key packs into one int64 (small ranges) or is sorted column by column (ranges beyond 63 bits)."""
    from braggint.pipeline.reference import _distinct_row_ids

    keys = np.random.default_rng(5).integers(-span, span, (4000, 6))
    keys[2000:2600] = keys[:600]  # repeated keys
    keys[:, 3] = keys[:, 3] % 2
    expected = np.unique(keys, axis=0, return_inverse=True)[1].ravel()
    assert np.array_equal(_distinct_row_ids(keys), expected)
    assert len(_distinct_row_ids(keys[:0])) == 0


def test_the_model_read_from_the_strong_spots_shoeboxes_in_place_is_the_model_of_their_copies(shared_data):
    """Matched spots without copies of their shoeboxes (``reference_row`` into the strong spots' own column,
    some rows skipped) give the model their copied shoeboxes give, for every estimator and centroid."""
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01"
    experiments = read_experiments(str(folder / "refined.expt"))
    params = integrate_params(**REAL_RUN)
    predicted = predict_reflections(experiments, params.prediction)
    strong = read_reflections(str(folder / "refined.refl"))
    rows = np.arange(1, strong.nrows, 2)
    copied = matched_reference(predicted.select(np.arange(predicted.nrows)), strong, rows=rows)
    in_place = matched_reference(predicted, strong, rows=rows, copy_shoeboxes=False)
    assert "shoebox" not in in_place and np.array_equal(in_place["predicted_row"], copied["predicted_row"])
    assert strong["shoebox"].select(in_place["reference_row"]).equals(copied["shoebox"])
    for overrides in ({}, {"sigma_m_algorithm": "basic"}, {"centroid_definition": "com"}, {"scan_varying": True}):
        gaussian_rs = integrate_params(**REAL_RUN, **overrides).profile.gaussian_rs
        from_copies = estimate_profile(experiments[0], copied, gaussian_rs)
        read_in_place = estimate_profile(experiments[0], in_place, gaussian_rs, strong["shoebox"])
        assert "shoebox" not in in_place
        for name in ("sigma_b", "sigma_m"):
            assert np.allclose(getattr(read_in_place, name), getattr(from_copies, name), rtol=1e-9, atol=0), overrides


@pytest.mark.parametrize("sweep", ["sweep_01", "sweep_02", "sweep_03"])
def test_real_sweeps_reproduce_dials(shared_data, sweep, caplog):
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / sweep
    params = integrate_params(**REAL_RUN)
    experiments, reference = reference_spots(folder / "refined.expt", folder / "refined.refl", params)
    with caplog.at_level(logging.INFO, logger="braggint"):
        profile = estimate_profile(experiments[0], reference, params.profile.gaussian_rs)
    dials = read_experiments(str(folder / "integrated.expt"))[0].profile
    assert profile.sigma_b == pytest.approx(dials.sigma_b, rel=1e-6)
    # DIALS stops its simplex at a tolerance of 1e-3 in log(sigma_m).
    assert profile.sigma_m == pytest.approx(dials.sigma_m, rel=1e-4)
    assert f"sigma b: {profile.sigma_b:f} degrees" in caplog.text


def test_centroid_sweep_and_both_algorithms(shared_data, caplog):
    folder = shared_data / "centroid_test_data"
    params = integrate_params()
    experiments, reference = reference_spots(folder / "indexed.expt", folder / "indexed.refl", params)
    recorded = read_experiments(str(folder / "experiments.json"))[0].profile
    extended = estimate_profile(experiments[0], reference, params.profile.gaussian_rs)
    assert extended.sigma_b == pytest.approx(recorded.sigma_b, rel=0.2)
    basic = estimate_profile(experiments[0], reference,
                             integrate_params(sigma_m_algorithm="basic").profile.gaussian_rs)
    assert basic.sigma_b == extended.sigma_b
    # dials.create_profile_model of DIALS 3.12.1 on these two files printed sigma_b 0.053939 and
    # sigma_m 0.196660 (extended) / 0.234816 (basic); test_dials_peer re-runs it when DIALS is installed.
    assert extended.sigma_b == pytest.approx(0.053939, abs=1e-6)
    assert extended.sigma_m == pytest.approx(0.196660, abs=1e-5)
    assert basic.sigma_m == pytest.approx(0.234816, abs=1e-5)
    # The basic estimator ignores how counts spread over frames and comes out wider.
    assert basic.sigma_m > extended.sigma_m > 0
    com = estimate_profile(experiments[0], reference,
                           integrate_params(centroid_definition="com").profile.gaussian_rs)
    assert com.sigma_b == pytest.approx(extended.sigma_b, rel=0.2) and com.sigma_b != extended.sigma_b


def test_estimates_from_picked_spots_equal_those_from_a_copy_of_them(shared_data):
    """The sigma estimates read the spots they use in place (``use``, bool per row): the same numbers, bit
    for bit, as from a copy holding only those spots."""
    from braggint.tasks import profile_model as estimate
    from braggint.tasks.shoebox_geometry import local_frames

    folder = shared_data / "centroid_test_data"
    experiments, reference = reference_spots(folder / "indexed.expt", folder / "indexed.refl", integrate_params())
    experiment = experiments[0]
    use = np.random.default_rng(3).random(reference.nrows) < 0.6
    copy = reference.select(use)
    phi = reference["xyzcal.mm"][:, 2]
    zeta = local_frames(experiment, reference["s1"], reference["xyzcal.px"][:, 2]).zeta
    assert estimate.beam_divergence(experiment.detector, reference["shoebox"], reference["s1"], use) == \
        estimate.beam_divergence(experiment.detector, copy["shoebox"], copy["s1"])
    assert estimate.beam_divergence(experiment.detector, reference["shoebox"], reference["s1"], use) != \
        estimate.beam_divergence(experiment.detector, reference["shoebox"], reference["s1"])
    for algorithm in ("basic", "extended"):
        assert estimate.reflecting_range(experiment.scan, reference["shoebox"], phi, zeta, algorithm, use) == \
            estimate.reflecting_range(experiment.scan, copy["shoebox"], phi[use], zeta[use], algorithm)


def test_the_reflecting_range_search_starts_near_the_width_of_the_rocking_curves():
    """The search for sigma_m starts from the counts' second moment over frames (less a frame's own width):
    on frames whose counts follow a Gaussian rocking curve it lies near that curve's width, and it is 0
    (the fixed bracket is used instead) when there is nothing to measure."""
    from math import erf, sqrt

    from braggint.tasks import profile_model as estimate

    sigma, step = 0.004, 0.002  # radians: the rocking curve's width and a frame's (zeta = 1)
    edges = np.arange(-12, 13) * step + 0.0007  # frames not centred on the spot
    e_plus, e_minus = edges[1:] / sqrt(2.0), edges[:-1] / sqrt(2.0)
    counts = np.array([1000 * 0.5 * (erf(p / sigma) - erf(m / sigma)) for p, m in zip(e_plus, e_minus)])
    guess = estimate._moment_width(e_plus, e_minus, counts)
    assert guess == pytest.approx(sigma, rel=0.08)  # rounded to a tenth in log sigma: within 5 %
    assert estimate._moment_width(e_plus, e_minus, 3 * counts) == guess  # a moment: the scale drops out
    assert estimate._moment_width(e_plus, e_minus, np.zeros_like(counts)) == 0.0
    # One frame centred on the spot: its counts spread no wider than the frame itself.
    assert estimate._moment_width(np.array([step / 2]), np.array([-step / 2]), np.array([1000.0])) == 0.0


def _rocking_curve_pairs(sigma: float, step: float, spots: int, seed: int):
    """(spot, frame) pairs of spots whose counts follow a Gaussian rocking curve of width ``sigma`` (radians)
    over frames of ``step`` radians, with Poisson noise, as :func:`reflecting_range` hands them to the
    likelihood: ``(e_plus, e_minus, counts, row, spot totals, spots present)``."""
    from math import erf, sqrt

    rng = np.random.default_rng(seed)
    row, e_plus, e_minus, counts = [], [], [], []
    for spot in range(spots):
        zeta, centre = rng.uniform(0.3, 1.0), rng.uniform(-step, step)
        edges = (np.arange(-8, 9) * step - centre) * zeta / sqrt(2.0)
        fractions = np.array([0.5 * (erf(p / sigma) - erf(m / sigma)) for p, m in zip(edges[1:], edges[:-1])])
        n = rng.poisson(500 * fractions).astype(float)
        keep = n > 0
        row += [spot] * int(keep.sum())
        e_plus += list(edges[1:][keep])
        e_minus += list(edges[:-1][keep])
        counts += list(n[keep])
    row, counts = np.array(row), np.array(counts)
    return (np.array(e_plus), np.array(e_minus), counts, row, np.bincount(row, weights=counts, minlength=spots),
            np.bincount(row, minlength=spots) > 0)


def test_reflecting_range_by_newton_steps_finds_the_likelihoods_minimum():
    """sigma_m's likelihood gives its first and second derivatives in log sigma (checked against finite
    differences), and Newton's method on them from the moments' guess lands on the minimum that Brent's search
    of the likelihood alone finds; where the likelihood curves down (far above the minimum) Newton's method
    gives up, for the search without derivatives to take over."""
    from braggint.tasks import profile_model as estimate

    e_plus, e_minus, counts, row, spot_total, present = _rocking_curve_pairs(0.004, 0.002, 200, seed=5)

    def slopes(log_sigma):
        return estimate._extended_slopes(e_plus, e_minus, log_sigma, counts, row, spot_total, present)

    h = 1e-4
    for log_sigma in np.log([0.001, 0.004, 0.02, 0.1]):
        value, slope, curvature = slopes(log_sigma)
        above, below = slopes(log_sigma + h)[0], slopes(log_sigma - h)[0]
        assert slope == pytest.approx((above - below) / (2 * h), rel=1e-5, abs=1e-3)
        assert curvature == pytest.approx((above - 2 * value + below) / h**2, rel=1e-3)
    guess = estimate._moment_width(e_plus, e_minus, counts)
    newton = estimate._newton_log_sigma(slopes, guess)
    brent = estimate._minimise_log_sigma(lambda log_sigma: slopes(log_sigma)[0], guess / 2, 2 * guess)
    assert newton == pytest.approx(brent, rel=1e-6)
    assert newton == pytest.approx(0.004, rel=0.05)
    assert slopes(np.log(0.02))[2] < 0
    assert estimate._newton_log_sigma(slopes, 0.02) is None


def test_scan_varying_model_has_one_value_per_image(shared_data):
    folder = shared_data / "centroid_test_data"
    params = integrate_params(**{"gaussian_rs.scan_varying": True})
    experiments, reference = reference_spots(folder / "indexed.expt", folder / "indexed.refl", params)
    profile = estimate_profile(experiments[0], reference, params.profile.gaussian_rs)
    assert profile.is_scan_varying
    assert profile.sigma_b.shape == profile.sigma_m.shape == (experiments[0].scan.num_images,)
    static = estimate_profile(experiments[0], reference, integrate_params().profile.gaussian_rs)
    assert np.all(np.abs(profile.sigma_b / static.sigma_b - 1) < 0.5)
    # 9 images against a 51-tap kernel: the smoothing leaves a nearly flat model.
    assert np.ptp(profile.sigma_b) < 0.1 * profile.sigma_b.mean()


def test_too_few_spots_is_reported(shared_data):
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01"
    params = integrate_params()
    experiments, reference = reference_spots(folder / "refined.expt", folder / "refined.refl", params)
    with pytest.raises(ProfileModelError, match="Too few reflections for profile modelling"):
        estimate_profile(experiments[0], reference, params.profile.gaussian_rs)


def test_user_parameters_override(shared_data):
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01"
    params = integrate_params(sigma_b=0.1, sigma_m=0.2, **REAL_RUN)
    experiments, reference = reference_spots(folder / "refined.expt", folder / "refined.refl", params)
    profile = estimate_profile(experiments[0], reference, params.profile.gaussian_rs)
    assert (profile.sigma_b, profile.sigma_m) == (0.1, 0.2)
    reused = profile_from_parameters(read_experiments(str(folder / "integrated.expt"))[0],
                                     integrate_params(sigma_m=0.3).profile.gaussian_rs)
    assert reused.sigma_m == 0.3 and reused.sigma_b == pytest.approx(0.0477421, rel=1e-5)
    with pytest.raises(ProfileModelError, match="not enough information"):
        profile_from_parameters(experiments[0], integrate_params(sigma_b=0.1).profile.gaussian_rs)


@pytest.mark.skipif(shutil.which("dials.create_profile_model") is None,
                    reason="DIALS is not installed (apt install python3-dials)")
@pytest.mark.parametrize("algorithm", ["extended", "basic"])
def test_dials_peer_gives_the_same_model(shared_data, tmp_path, algorithm):
    folder = shared_data / "centroid_test_data"
    subprocess.run(["dials.create_profile_model", str(folder / "indexed.expt"), str(folder / "indexed.refl"),
                    f"sigma_m_algorithm={algorithm}"], cwd=tmp_path, check=True, capture_output=True,
                   timeout=600)
    dials = read_experiments(str(tmp_path / "models_with_profiles.expt"))[0].profile
    params = integrate_params(sigma_m_algorithm=algorithm)
    experiments, reference = reference_spots(folder / "indexed.expt", folder / "indexed.refl", params)
    ours = estimate_profile(experiments[0], reference, params.profile.gaussian_rs)
    assert ours.sigma_b == pytest.approx(dials.sigma_b, rel=1e-6)
    assert ours.sigma_m == pytest.approx(dials.sigma_m, rel=1e-4)
