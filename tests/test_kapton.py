"""The kapton tape absorption correction (absorption_correction, fuller_kapton)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_integrate

from braggint.io.refl import read_reflections
from braggint.simulate import PRESETS, simulate
from braggint.tasks.kapton import kapton_attenuation_length, kapton_path_lengths, tape_normal

BEAM = np.array([0.0, 0.0, -1.0])  # s0 direction (downstream), as in DIALS's usual frame


def marched_path(direction, beam, height, thickness, half_width, angle_deg, step=2e-5, reach=5.0):
    """Path (mm) through the tape by walking along the ray in small steps (independent of the formula)."""
    n = tape_normal(beam, angle_deg)
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    t = np.arange(0.0, reach, step) + step / 2
    points = t[:, None] * u
    depth = -(points @ n)  # distance below the crystal, across the tape
    downstream = points @ beam
    inside = (depth >= height) & (depth <= height + thickness) & (downstream <= half_width)
    return inside.sum() * step


@pytest.mark.parametrize("angle_deg", [0.0, 1.15, 25.0])
def test_path_lengths_agree_with_walking_the_rays(angle_deg):
    rng = np.random.default_rng(3)
    # Rays spread over the forward hemisphere, plus a few grazing the tape.
    directions = np.vstack([BEAM + rng.normal(0, 0.6, (40, 3)), [[1.0, 0.0, -0.02], [1.0, 0.01, -0.5]]])
    directions = directions[directions @ BEAM > 0.05]
    tape = (0.02, 0.05, 1.5875, angle_deg)
    formula = kapton_path_lengths(directions, BEAM, *tape)
    walked = np.array([marched_path(d, BEAM, *tape) for d in directions])
    assert (formula > 0).sum() >= 5 and (formula == 0).sum() >= 5  # both shadowed and clear rays
    np.testing.assert_allclose(formula, walked, atol=2e-4)


def test_constructed_rays():
    n = tape_normal(BEAM, 0.0)
    np.testing.assert_allclose(n, [-1.0, 0.0, 0.0])
    h, t, w = 0.02, 0.05, 1.5875
    # Straight across the tape (perpendicular to its faces): exactly its thickness.
    assert kapton_path_lengths(np.array([[1.0, 0.0, 0.0]]), BEAM, h, t, w, 0.0)[0] == pytest.approx(t)
    # Away from the tape, or along the beam past its end: nothing.
    assert kapton_path_lengths(np.array([[-1.0, 0.0, -1.0], [0.0, 0.0, -1.0]]), BEAM, h, t, w, 0.0).tolist() == [0, 0]
    # At 45 degrees across the faces: thickness x sqrt(2).
    assert kapton_path_lengths(np.array([[1.0, 0.0, -1.0]]), BEAM, h, t, w, 0.0)[0] == pytest.approx(t * np.sqrt(2))
    # Grazing: the ray leaves through the end of the tape; path = end distance - near-face distance.
    u = np.array([0.03, 0.0, -1.0])
    u /= np.linalg.norm(u)
    expected = w / u[2] * -1 - h / u[0]
    assert kapton_path_lengths(u[None], BEAM, h, t, w, 0.0)[0] == pytest.approx(expected)
    # Attenuation length of kapton at 9 keV: about 1.7 mm (CXRO, polyimide).
    assert kapton_attenuation_length(12398.425 / 9010) == pytest.approx(1.70, rel=0.02)


def test_correction_restores_the_photons_the_tape_absorbed(tmp_path):
    """Stills whose photons a simulated tape absorbed: corrected intensities return to the truth."""
    data = tmp_path / "data"
    simulate(PRESETS["stills"].replace(stills=40, kapton=True, mean_intensity=20000.0), str(data))
    truth = read_reflections(str(data / "truth.refl"))
    plain = run_integrate(data, tmp_path / "plain", "prediction.d_min=2.0")
    kapton = ("absorption_correction.apply=True", "absorption_correction.algorithm=fuller_kapton")
    corrected = run_integrate(data, tmp_path / "corrected", "prediction.d_min=2.0", *kapton)
    smart = run_integrate(data, tmp_path / "smart", "prediction.d_min=2.0", *kapton,
                          "absorption_correction.fuller_kapton.smart_sigmas=True")
    assert plain.returncode == 0 and corrected.returncode == 0 and smart.returncode == 0, corrected.stderr
    a = read_reflections(str(tmp_path / "plain" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "corrected" / "integrated.refl"))
    c = read_reflections(str(tmp_path / "smart" / "integrated.refl"))
    assert a.nrows == b.nrows == c.nrows
    key = {(int(i), tuple(h)): n for n, (i, h) in enumerate(zip(truth["id"], truth["miller_index"]))}
    rows = np.array([key.get((int(i), tuple(h)), -1) for i, h in zip(b["id"], b["miller_index"])])
    target = np.where(rows >= 0, truth["intensity.true"][rows], 0.0)  # predicted but never excited: nothing
    correction = b["kapton_absorption_correction"]
    strong = (rows >= 0) & (target / np.sqrt(b["intensity.sum.variance"]) > 20)
    shadowed = strong & (correction > 1.05)
    clear = strong & (correction == 1.0)
    assert shadowed.sum() > 50 and clear.sum() > 50
    # Unshadowed spots are untouched; shadowed ones are raised by exactly their correction.
    np.testing.assert_array_equal(b["intensity.sum.value"][correction == 1], a["intensity.sum.value"][correction == 1])
    np.testing.assert_allclose(b["intensity.sum.value"], a["intensity.sum.value"] * correction)
    np.testing.assert_allclose(b["intensity.sum.variance"], a["intensity.sum.variance"] * correction**2)
    # Without the correction the shadowed spots fall short of the truth by the absorbed share; with it, not.
    before = np.median(a["intensity.sum.value"][shadowed] / target[shadowed])
    after = np.median(b["intensity.sum.value"][shadowed] / target[shadowed])
    expected = np.median(1 / correction[shadowed])
    print(f"\nkapton: {shadowed.sum()} shadowed spots, median I/I_true {before:.4f} before and {after:.4f} after "
          f"correction (expected before {expected:.4f})")
    assert before == pytest.approx(expected, abs=0.015) and after == pytest.approx(1.0, abs=0.015)
    assert np.median(a["intensity.sum.value"][clear] / target[clear]) == pytest.approx(1.0, abs=0.015)
    # Smart sigmas add the tape's uncertainty: never smaller errors, larger where shadowed.
    assert "kapton_absorption_correction_sigmas" in c and "kapton_absorption_correction_sigmas" not in b
    nonzero = c["intensity.sum.value"] != 0
    assert (c["intensity.sum.variance"][nonzero & shadowed] > b["intensity.sum.variance"][nonzero & shadowed]).all()


def test_several_scopes_apply_one_after_the_other():
    from types import SimpleNamespace

    from braggint.models.reflection_table import ReflectionTable
    from braggint.pipeline.absorption import apply_kapton_corrections

    table = ReflectionTable(4)
    table["num_pixels.foreground"] = np.array([10, 10, 0, 5], np.int32)
    table["intensity.sum.value"] = np.array([100.0, 50.0, 7.0, 0.0])
    table["intensity.sum.variance"] = np.array([100.0, 60.0, 7.0, 4.0])
    for k, correction in enumerate(([1.1, 1.0, 1.2, 1.3], [1.5, 1.2, 1.0, 1.0])):
        table[f"kapton.correction.{k}"] = np.array(correction)
        table[f"kapton.sigma.{k}"] = np.array([0.01, 0.0, 0.0, 0.02])
    plain = SimpleNamespace(fuller_kapton=SimpleNamespace(smart_sigmas=False))
    out = apply_kapton_corrections(table, [plain, plain])
    # The row without foreground pixels is dropped, as DIALS does; the rest get both corrections.
    np.testing.assert_allclose(out["intensity.sum.value"], [100 * 1.1 * 1.5, 50 * 1.2, 0.0])
    np.testing.assert_allclose(out["intensity.sum.variance"], [100 * (1.1 * 1.5) ** 2, 60 * 1.2**2, 4 * 1.3**2])
    np.testing.assert_allclose(out["kapton_absorption_correction"], [1.5, 1.2, 1.0])  # the last scope's
    assert not any(name.startswith("kapton.") for name in out.keys())
