"""Simulated rotation datasets with known truth (``braggint.simulate``)."""

from .dataset import SimulationResult, simulate
from .spec import PRESETS, SimulationSpec

__all__ = ["PRESETS", "SimulationResult", "SimulationSpec", "simulate"]
