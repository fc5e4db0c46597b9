"""Bounding boxes, partiality, zeta and foreground masks against DIALS's own rows."""

from __future__ import annotations

import numpy as np
import pytest

from braggint.io.expt import read_experiments
from braggint.io.refl import read_reflections
from braggint.models.flags import Flags, MaskCode
from braggint.models.profile import GaussianRSProfile
from braggint.models.shoebox import ShoeboxColumn
from braggint.tasks.shoebox_geometry import (
    bounding_boxes,
    corner_coordinates,
    foreground_mask,
    local_frames,
    partiality,
)

SWEEPS = ["sweep_01", "sweep_02", "sweep_03"]


def integrated_pair(folder, expt="integrated.expt", refl="integrated.refl"):
    experiment = read_experiments(str(folder / expt))[0]
    table = read_reflections(str(folder / refl))
    # DIALS's bad_reference rows are strong spots appended as they were, not predictions.
    return experiment, table.select(~table.get_flags(Flags.bad_reference))


def check_geometry(experiment, table):
    z = table["xyzcal.px"][:, 2]
    bbox = bounding_boxes(experiment, experiment.profile, table["s1"], z, table["panel"])
    np.testing.assert_array_equal(bbox, table["bbox"])
    zeta = local_frames(experiment, table["s1"], z).zeta
    np.testing.assert_allclose(zeta, table["zeta"], rtol=1e-8)
    np.testing.assert_allclose(partiality(experiment, experiment.profile, zeta, z, bbox), table["partiality"],
                               atol=1e-6)


def test_wedge_bbox_zeta_partiality(wedge):
    """Two-axis goniometer, scan at -145 deg, parallax-corrected Pilatus."""
    check_geometry(*integrated_pair(wedge, "23_integrated.expt", "23_integrated.refl"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_real_sweep_geometry_and_foreground(shared_data, sweep):
    folder = shared_data / "l_cysteine_real" / "dials_3.12.1" / sweep
    experiment, table = integrated_pair(folder)
    check_geometry(experiment, table)
    dials = table["shoebox"]
    z = table["xyzcal.px"][:, 2]
    # Both ways to the mask: each box's corners computed as it comes (summation only), and the arrays of
    # every corner that grid mapping shares.
    for corners in (None, corner_coordinates(experiment, dials, table["s1"], z)):
        ours = ShoeboxColumn(dials.panel, dials.bbox, dials.has_pixels, dials.offsets, dials.data,
                             np.zeros_like(dials.mask), dials.background)
        foreground_mask(experiment, experiment.profile, ours, table["s1"], z, corners)
        for code in (MaskCode.Foreground, MaskCode.Background):
            np.testing.assert_array_equal(ours.mask & code, dials.mask & code)
        assert (ours.mask & MaskCode.Foreground).any() and (ours.mask & MaskCode.Background).any()


def test_partiality_of_a_box_covering_the_curve(wedge):
    experiment, table = integrated_pair(wedge, "23_integrated.expt", "23_integrated.refl")
    z = table["xyzcal.px"][:, 2]
    wide = table["bbox"].copy()
    wide[:, 4], wide[:, 5] = -1000, 1000
    assert partiality(experiment, experiment.profile, table["zeta"], z, wide) == pytest.approx(1.0)
    # A box ending at the predicted centre holds half of the curve.
    half = table["bbox"].copy()
    half[:, 4], half[:, 5] = -1000, 0
    centred = np.zeros_like(z)
    assert partiality(experiment, experiment.profile, table["zeta"], centred, half) == pytest.approx(0.5)


def test_scan_varying_sigmas_use_the_frame_value(wedge):
    experiment, table = integrated_pair(wedge, "23_integrated.expt", "23_integrated.refl")
    n = experiment.scan.num_images
    same = GaussianRSProfile(3.0, np.full(n, experiment.profile.sigma_b), np.full(n, experiment.profile.sigma_m))
    z = table["xyzcal.px"][:, 2]
    np.testing.assert_array_equal(bounding_boxes(experiment, same, table["s1"], z, table["panel"]), table["bbox"])
    wider = GaussianRSProfile(3.0, same.sigma_b * np.linspace(1, 2, n), same.sigma_m)
    boxes = bounding_boxes(experiment, wider, table["s1"], z, table["panel"])
    width = boxes[:, 1] - boxes[:, 0]
    late = z > n / 2
    assert (width[late] > (table["bbox"][late, 1] - table["bbox"][late, 0])).all()
