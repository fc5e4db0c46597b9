"""The compiled kernels a block task calls, by the run's settings: what the local workers' helper loads from
the kernel cache before it forks them (:func:`braggint.compiler.load_cached_kernels`, :mod:`.local_workers`).

Each worker otherwise loaded them in its first block: 60-85 ms summation
only and 95 ms with profile fitting at 400 2M-like images, glm's background
kernel 40 ms of it.  A kernel missing here is loaded by the block that calls
it, as before; one listed but not called costs the helper its load, before
the workers start.
"""

from __future__ import annotations

#: Every block: decoding Pilatus-style CBF frames, copying pixels into shoeboxes, summation.
EVERY_BLOCK = (
    "braggint.io.cbf.decode_byte_offset",
    "braggint.tasks.extract.copy_frame",
    "braggint.tasks.summation.summarise",
)

#: The background kernel of each algorithm (``null`` has none).
BACKGROUND = {
    "glm": ("braggint.tasks.background.glm_background",),
    "simple": ("braggint.tasks.background.simple_background",),
    "gmodel": ("braggint.tasks.background.gmodel_background",),
}

#: Summation only: the foreground mask from each box's corners as it comes.
SUMMATION_ONLY = ("braggint.tasks.shoebox_geometry._foreground_from_geometry",)

#: Profile fitting: a part's pixel corners kept for grid mapping and the mask from them, the grid mapping and
#: the fitting, and the copy of waiting rows' cells when blocks exchange their profile sums.
PROFILE_FITTING = (
    "braggint.tasks.shoebox_geometry._corner_offsets",
    "braggint.tasks.shoebox_geometry._apply_foreground",
    "braggint.tasks.reference_profiles.map_to_grids",
    "braggint.tasks.reference_profiles.fit_grids",
    "braggint.models.shoebox._copy_ranges",
)


def block_kernels(params) -> tuple[str, ...]:
    """The kernels (``"module.function"``) a block task of a run with these working parameters calls.

    The background algorithm ``Auto`` lists both glm's and simple's kernels:
    it chooses by the detector, which is not known before the experiment
    list is read, and the helper starts before that.
    """
    integration = params.integration
    algorithm = integration.background.algorithm
    algorithms = ("glm", "simple") if algorithm == "Auto" else (algorithm,)
    background = tuple(name for each in algorithms for name in BACKGROUND.get(each, ()))
    mode = PROFILE_FITTING if integration.profile.fitting else SUMMATION_ONLY
    return EVERY_BLOCK + background + mode
