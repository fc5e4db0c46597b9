"""Experiment models and the reflection table (numpy only; no I/O, no Dask)."""

from .beam import Beam
from .crystal import Crystal
from .detector import Detector, Panel
from .experiment import Experiment, ExperimentList
from .flags import Flags, MaskCode
from .goniometer import Goniometer
from .imageset import ImageSet
from .profile import GaussianRSProfile
from .reflection_table import ReflectionTable
from .scan import Scan
from .shoebox import ShoeboxColumn

__all__ = [
    "Beam", "Crystal", "Detector", "Panel", "Experiment", "ExperimentList", "Flags", "MaskCode",
    "Goniometer", "ImageSet", "GaussianRSProfile", "ReflectionTable", "Scan", "ShoeboxColumn",
]
