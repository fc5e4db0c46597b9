"""Console-script entry points of the batch commands: the command's modules imported with Python's cyclic
garbage collector paused, then frozen out of its reach (:func:`braggint.collector.collector_paused`).

By the end of a run on one worker with profile fitting at 400 2M-like
images the command had spent 100-138 ms collecting, 44-60 ms of it while
importing numpy, numba and braggint; 12-13 ms since.  The collector is on
again before the command runs: a run's own cycles are still collected.
"""

from __future__ import annotations

import importlib

from ..collector import collector_paused


def launch(module: str) -> None:
    """Import ``module`` with the collector paused, freeze what the import made, then run its
    ``console_main``."""
    with collector_paused():
        command = importlib.import_module(module).console_main
    command()


def integrate() -> None:
    """The ``braggint.integrate`` command."""
    launch("braggint.cli.integrate")


def predict() -> None:
    """The ``braggint.predict`` command."""
    launch("braggint.cli.predict")
