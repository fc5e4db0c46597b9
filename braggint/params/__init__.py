"""PHIL parameters: the parser, the working parameter set and the program masters."""

from __future__ import annotations

from importlib import resources

from .phil import Auto, parse
from .working import ParameterSet, Params

__all__ = ["Auto", "parse", "ParameterSet", "Params", "integrate_master_text", "master_text"]

#: Inputs named on the command line, recorded in the output .phil as DIALS does.
INPUT_SCOPE = """
input {
  experiments = None
    .type = str
    .multiple = True
    .help = "Experiment list files (.expt) given on the command line"
  reflections = None
    .type = str
    .multiple = True
    .help = "Reflection files (.refl) given on the command line"
}
"""


def master_text(program: str) -> str:
    """The parameter tree of a program (``integrate``, ``predict``) plus the input scope."""
    text = resources.files(__package__).joinpath(f"{program}.phil").read_text(encoding="utf-8")
    return text + INPUT_SCOPE


def integrate_master_text() -> str:
    """The dials.integrate parameter tree (the reference document's) plus the input scope."""
    return master_text("integrate")
