"""braggint.integrate on real Pilatus images against DIALS 3.12.1's integration of the same input.

Summation and profile fitting are compared row by row.  The kernels are also checked row by row on DIALS's stored shoeboxes: given
DIALS's pixels and masks, braggint's glm background, summation, centroids
and pixel counts reproduce DIALS's columns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models.flags import Flags, MaskCode
from braggint.tasks.background import glm_background
from braggint.tasks.summation import PIXEL_COUNTS, summarise

SWEEPS = ["sweep_01", "sweep_02", "sweep_03"]
#: The parameters of the DIALS run (see the sweep's dials.integrate.phil), and DIALS's prf variance.
DIALS_RUN = ["profile.gaussian_rs.min_spots.overall=10", "profile.gaussian_rs.min_spots.per_degree=5",
             "integration.mp.nproc=1", "integration.profile.variance_model=dials"]


def dials_folder(shared_data, sweep):
    return shared_data / "l_cysteine_real" / "dials_3.12.1" / sweep


@pytest.fixture(scope="module", params=SWEEPS)
def integrated_sweep(request, shared_data, tmp_path_factory):
    """(our table, DIALS's table, our experiments, DIALS's experiments) for one sweep."""
    folder = dials_folder(shared_data, request.param)
    out = tmp_path_factory.mktemp(request.param)
    result = subprocess.run(
        [os.path.abspath(sys.executable), "-m", "braggint.cli.integrate", str(folder / "refined.expt"),
         str(folder / "refined.refl"), *DIALS_RUN, "output.report=report.json", "output.html=report.html",
         "output.mtz=integrated.mtz"], cwd=out, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return (read_reflections(str(out / "integrated.refl")), read_reflections(str(folder / "integrated.refl")),
            read_experiments(str(out / "integrated.expt")), read_experiments(str(folder / "integrated.expt")),
            out, folder)


def matched_rows(ours, dials):
    """Row pairs matched by (hkl, entering) and then nearest predicted position."""
    pairs = []
    for j in range(dials.nrows):
        same = (ours["miller_index"] == dials["miller_index"][j]).all(axis=1) & (
            ours["entering"] == dials["entering"][j])
        if same.any():
            candidates = np.flatnonzero(same)
            distance = np.linalg.norm(ours["xyzcal.px"][candidates] - dials["xyzcal.px"][j], axis=1)
            pairs.append((candidates[np.argmin(distance)], j))
    return np.array(pairs).T


def test_summation_results_agree_with_dials(integrated_sweep):
    ours, dials, *_ = integrated_sweep
    dials_sum = dials.select(dials.get_flags(Flags.integrated_sum))
    o, d = matched_rows(ours, dials_sum)
    # Every reflection DIALS integrated by summation is integrated by braggint, and nothing else.
    assert len(d) == dials_sum.nrows
    assert ours.get_flags(Flags.integrated_sum)[o].all()
    assert ours.get_flags(Flags.integrated_sum).sum() == dials_sum.nrows
    np.testing.assert_allclose(ours["xyzcal.px"][o], dials_sum["xyzcal.px"][d], atol=0.01)
    np.testing.assert_array_equal(ours["bbox"][o], dials_sum["bbox"][d])
    np.testing.assert_allclose(ours["background.mean"][o], dials_sum["background.mean"][d], rtol=0.05, atol=1e-9)
    strong = dials_sum["intensity.sum.value"][d] > 10 * np.sqrt(dials_sum["intensity.sum.variance"][d])
    assert strong.sum() > 10
    np.testing.assert_allclose(ours["intensity.sum.value"][o][strong], dials_sum["intensity.sum.value"][d][strong],
                               rtol=0.01)
    np.testing.assert_allclose(ours["xyzobs.px.value"][o], dials_sum["xyzobs.px.value"][d], atol=0.1)
    # sigma_m is ours (DIALS's simplex stops at 1e-3 in log sigma_m, so the two differ by ~1e-6 relative).
    np.testing.assert_allclose(ours["partiality"][o], dials_sum["partiality"][d], atol=5e-6)
    for name in ("lp", "qe", "zeta", "d"):
        np.testing.assert_allclose(ours[name][o], dials_sum[name][d], rtol=1e-8)
    for name in ("num_pixels.valid", "num_pixels.foreground", "num_pixels.background",
                 "num_pixels.background_used"):
        np.testing.assert_array_equal(ours[name][o], dials_sum[name][d])
    np.testing.assert_array_equal(ours["flags"][o], dials_sum["flags"][d])


def test_profile_fitting_agrees_with_dials(integrated_sweep):
    ours, dials, *_ = integrated_sweep
    o, d = matched_rows(ours, dials)
    # Every DIALS row is there (also those integrated by profile fitting only), with DIALS's flags.
    assert len(d) == dials.nrows == ours.nrows
    np.testing.assert_array_equal(ours["flags"][o], dials["flags"][d])
    fitted = dials.get_flags(Flags.integrated_prf)[d]
    assert fitted.sum() > 10
    ours_prf, dials_prf = ours["intensity.prf.value"][o][fitted], dials["intensity.prf.value"][d][fitted]
    assert np.corrcoef(ours_prf, dials_prf)[0, 1] > 0.99
    np.testing.assert_allclose(ours_prf, dials_prf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["intensity.prf.variance"][o][fitted], dials["intensity.prf.variance"][d][fitted],
                               rtol=1e-4)
    np.testing.assert_allclose(ours["profile.correlation"][o][fitted], dials["profile.correlation"][d][fitted],
                               atol=1e-4)


def test_output_experiments_carry_the_profile_model(integrated_sweep):
    _, _, ours, dials, *_ = integrated_sweep
    assert ours[0].profile.sigma_b == pytest.approx(dials[0].profile.sigma_b, rel=1e-6)
    assert ours[0].profile.sigma_m == pytest.approx(dials[0].profile.sigma_m, rel=1e-4)
    assert ours.history[-1].endswith("|integrated")
    assert ours[0].identifier == dials[0].identifier


@pytest.mark.parametrize("sweep", SWEEPS)
def test_kernels_reproduce_dials_rows(shared_data, sweep):
    """From DIALS's stored pixels and masks, braggint's kernels give DIALS's numbers."""
    table = read_reflections(str(dials_folder(shared_data, sweep) / "integrated.refl"))
    sb = table["shoebox"]
    mask = sb.mask & np.uint8(0xFF ^ MaskCode.BackgroundUsed)
    background = np.zeros_like(sb.background)
    ok, mean = glm_background(sb.data, mask, background, sb.offsets, sb.bbox, 1, 1.345, 10, 100)
    assert ok.all()
    np.testing.assert_array_equal(mask, sb.mask)
    np.testing.assert_allclose(background, sb.background, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(mean, table["background.mean"], rtol=1e-6, atol=1e-12)
    sums, sum_ok, xyz, xyz_var, pixels = summarise(sb.data, sb.mask, sb.background, sb.offsets, sb.bbox)
    intensity, variance, bg_sum, bg_var = sums.T
    np.testing.assert_array_equal(sum_ok, table.get_flags(Flags.integrated_sum))
    scale = np.abs(table["intensity.sum.value"]).max()
    np.testing.assert_allclose(intensity[sum_ok], table["intensity.sum.value"][sum_ok], atol=1e-5 * scale)
    # DIALS sums float32 pixels in float32 where braggint uses float64: agreement is to ~1e-5.
    np.testing.assert_allclose(variance[sum_ok], table["intensity.sum.variance"][sum_ok], rtol=1e-4)
    np.testing.assert_allclose(bg_sum, table["background.sum.value"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(bg_var, table["background.sum.variance"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(xyz, table["xyzobs.px.value"], atol=2e-4)
    np.testing.assert_allclose(xyz_var, table["xyzobs.px.variance"], atol=1e-5)
    for counted, name in zip(pixels.T, PIXEL_COUNTS[:4]):
        np.testing.assert_array_equal(counted, table[f"num_pixels.{name}"])


def dials_log_table(log_text: str, title: str) -> list[list[str]]:
    """The data rows of a table DIALS printed in its log (cells stripped)."""
    lines = log_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows, seen_rule = [], 0
    for line in lines[start + 1:]:
        if line.startswith("+"):
            seen_rule += 1
            if seen_rule == 2:
                break
            continue
        if line.startswith("|-"):
            rows = []  # the header ends at the |---- rule
            continue
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.parametrize("name, title", [("integration.image.summary", "Summary vs image number"),
                                         ("integration.resolution.summary", "Summary vs resolution"),
                                         ("integration.overall.summary", "Summary for experiment 0")])
def test_report_tables_match_dials_log(integrated_sweep, name, title):
    *_, out, folder = integrated_sweep
    report = json.loads((out / "report.json").read_text())
    ours = [list(row.values()) for row in report["tables"][name]["rows"]]
    dials = dials_log_table((folder / "dials.integrate.log").read_text(), title)
    assert len(ours) == len(dials) > 0
    for mine, theirs in zip(ours, dials):
        for a, b in zip(mine, theirs):
            try:
                # DIALS's prf variance differs by ~1e-4 relative from ours: I/sigma may move in the last digit.
                assert float(a) == pytest.approx(float(b), abs=0.011)
            except ValueError:
                assert a == b


def test_html_and_mtz_outputs(integrated_sweep):
    import gemmi

    ours, _, experiments, _, out, _ = integrated_sweep
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "Summary vs image number" in page
    mtz = gemmi.read_mtz_file(str(out / "integrated.mtz"))
    assert mtz.nreflections == int(ours.get_flags(Flags.integrated, all=False).sum())
    assert {"H", "K", "L", "M/ISYM", "BATCH", "I", "SIGI", "IPR", "ISUM"} <= set(mtz.column_labels())
    batches = np.array(mtz.column_with_label("BATCH"), dtype=int)
    first, last = experiments[0].scan.image_range
    assert batches.min() >= first and batches.max() <= last
    assert len(mtz.batches) == last - first + 1


def test_bad_reference_spots_are_appended_as_dials_appends_them(shared_data, tmp_path):
    """output.include_bad_reference=True: the junk strong spots (DIALS 3.12.1 found 25 in sweep 1) and any
    that no prediction matched follow the integrated rows, flagged bad_reference and not integrated, with
    their own shoeboxes (the spot finder's pixels, mask and background) and every other column at its
    default;
    the integrated rows gain the spots' columns, and shoeboxes without pixels."""
    folder = dials_folder(shared_data, "sweep_01")
    result = subprocess.run(
        [os.path.abspath(sys.executable), "-m", "braggint.cli.integrate", str(folder / "refined.expt"),
         str(folder / "refined.refl"), *DIALS_RUN, "output.include_bad_reference=True"], cwd=tmp_path,
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    table = read_reflections(str(tmp_path / "integrated.refl"))
    strong = read_reflections(str(folder / "refined.refl"))
    bad = table.get_flags(Flags.bad_reference)
    log = (tmp_path / "dials.integrate.log").read_text()
    unmatched = sum(int(line.split()[1]) for line in log.splitlines() if "were not matched" in line)
    assert bad.sum() == 25 + unmatched
    assert not bad[:int((~bad).sum())].any()  # appended after the integrated rows
    assert not table.get_flags(Flags.integrated, all=False)[bad].any()
    assert table.get_flags(Flags.integrated, all=False)[~bad].all()
    boxes = table["shoebox"]
    assert boxes.has_pixels[bad].all() and not boxes.has_pixels[~bad].any()
    for row in np.flatnonzero(bad)[:5]:  # each junk spot's shoebox as the spot finder stored it
        same = np.flatnonzero((strong["miller_index"] == table["miller_index"][row]).all(axis=1)
                              & (strong["bbox"] == table["bbox"][row]).all(axis=1))
        assert len(same) == 1
        for ours, given in zip(boxes.arrays(row), strong["shoebox"].arrays(int(same[0]))):
            np.testing.assert_array_equal(ours, given)
    assert (table["n_signal"][~bad] == 0).all() and table["n_signal"][bad].any()
    assert (table["intensity.prf.value"][bad] == 0).all() and (table["d"][bad] == 0).all()
