"""What to simulate: the parameters of a rotation dataset and the named presets.

Lengths in mm, angles in degrees, wavelength and cell in Angstrom, counts
in photons (ADU = photons x gain).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class SimulationSpec:
    """A rotation dataset with known truth.

    ``beam_divergence`` (sigma of the incident direction, per axis) and
    ``mosaicity`` (sigma of an isotropic mosaic rotation, per axis) are
    the physical widths; the gaussian_rs widths they produce are
    ``sigma_b = beam_divergence`` and ``sigma_m = sqrt(mosaicity^2 +
    beam_divergence^2)`` (see :func:`braggint.simulate.physics.expected_profile`).
    """

    # detector: a Pilatus-like sensor, modules of module_size pixels separated by gaps; panels="single"
    # describes it as one panel with the gaps masked, panels="modules" as one panel per module
    panels: str = "single"
    nx: int = 487
    ny: int = 619
    module_size: tuple[int, int] = (487, 195)
    gap: tuple[int, int] = (7, 17)
    pixel_size: float = 0.172
    distance: float = 150.0
    beam_centre: tuple[float, float] | None = None  # mm; default the panel centre
    thickness: float = 0.45
    mu: float = 3.96  # 1/mm, Si at about 1 Angstrom
    overload: int = 1_000_000
    gain: float = 1.0
    # beam and scan
    wavelength: float = 0.9795
    phi_start: float = 0.0
    oscillation: float = 0.2
    n_images: int = 10
    exposure_time: float = 0.1
    # stills > 0: that many shots of randomly oriented crystals (serial crystallography), no rotation;
    # the beam's spectrum has a Gaussian relative width ``bandwidth``
    stills: int = 0
    bandwidth: float = 0.0015
    # stills only: the crystals sit on a kapton tape (DIALS's default fuller_kapton geometry: 0.02 mm above
    # a 0.05 mm tape tilted by 1.15 degrees, ending 1.5875 mm downstream) that absorbs diffracted photons
    kapton: bool = False
    # crystal
    unit_cell: tuple[float, float, float, float, float, float] = (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)
    space_group: str = "P 21 21 21"
    orientation: tuple[float, ...] | None = None  # 9 numbers, U row-major; None = random from the seed
    d_min: float | None = None  # default: the detector corner
    # deliberate errors of the written models.expt (the images follow the true models)
    orientation_error: float = 0.0  # degrees: the written crystal is turned about a random axis by this
    distance_error: float = 0.0  # mm added to the written detector distance
    # spot shape
    beam_divergence: float = 0.04
    mosaicity: float = 0.08
    anisotropy: float = 1.0  # mosaic sigma along the third mosaic axis is multiplied by this
    tail_fraction: float = 0.0  # fraction of photons with 3x wider spread (model mismatch)
    # intensities and background
    mean_intensity: float = 500.0  # mean expected photons of a full reflection at d = 3 Angstrom
    wilson_b: float = 20.0
    background: float = 2.0  # flat photons per pixel per image
    background_resolution: float = 3.0  # extra photons per pixel per image at the panel centre, falling with angle
    ice_rings: bool = False
    dead_pixels: int = 0
    hot_pixels: int = 0
    seed: int = 0
    template: str = "image_#####.cbf"
    format: str = "cbf"  # cbf | nexus
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> "SimulationSpec":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, SimulationSpec] = {
    # a few hundred reflections in seconds: unit tests
    "tiny": SimulationSpec(nx=487, ny=407, module_size=(487, 195), n_images=6, oscillation=0.5,
                           unit_cell=(30.0, 35.0, 40.0, 90.0, 90.0, 90.0), distance=120.0, d_min=2.2),
    # a 2M-like detector, ~20 images, ~10k reflections: end-to-end tests
    "small": SimulationSpec(nx=1475, ny=1679, n_images=20, oscillation=0.2, distance=180.0,
                            unit_cell=(78.0, 78.0, 37.0, 90.0, 90.0, 90.0), space_group="P 43 21 2", d_min=1.8),
    # the 'small' sweep described as a multi-panel detector (one panel per module)
    "small_modules": SimulationSpec(nx=1475, ny=1679, n_images=20, oscillation=0.2, distance=180.0,
                                    unit_cell=(78.0, 78.0, 37.0, 90.0, 90.0, 90.0), space_group="P 43 21 2",
                                    d_min=1.8, panels="modules"),
    # 500 serial-crystallography stills on a 300K-like detector: the stills pipeline against truth
    "stills": SimulationSpec(nx=487, ny=619, n_images=1, stills=500, distance=100.0, beam_divergence=0.01,
                             mosaicity=0.03, bandwidth=0.0015, unit_cell=(60.0, 70.0, 80.0, 90.0, 90.0, 90.0),
                             d_min=2.0, mean_intensity=3000.0, template="shot_#####.cbf"),
    # a 6M-like detector, 360 images: benchmarks
    "large": SimulationSpec(nx=2463, ny=2527, n_images=360, oscillation=0.2, distance=250.0,
                            unit_cell=(78.0, 78.0, 37.0, 90.0, 90.0, 90.0), space_group="P 43 21 2", d_min=1.6),
}
