"""Console-script entry points of the batch commands: the command's modules imported with Python's cyclic
garbage collector paused, then frozen out of its reach.

Importing ``braggint.integrate``'s modules (numpy, numba, braggint) makes
hundreds of thousands of objects, and the collector ran 147 times meanwhile
(44-60 ms), each full collection walking all of them again; by the end of
a run on one worker with profile fitting at 400 2M-like images the command
had spent 100-138 ms collecting, none of which freed anything worth it.
With the imports' objects frozen (``gc.freeze``: kept, never scanned),
12-13 ms.  The collector is on again before the command runs: a run's own
cycles are still collected.
"""

from __future__ import annotations

import gc
import importlib


def launch(module: str) -> None:
    """Import ``module`` with the collector paused, freeze what the import made, then run its
    ``console_main``."""
    gc.disable()
    try:
        command = importlib.import_module(module).console_main
    finally:
        gc.freeze()
        gc.enable()
    command()


def integrate() -> None:
    """The ``braggint.integrate`` command."""
    launch("braggint.cli.integrate")


def predict() -> None:
    """The ``braggint.predict`` command."""
    launch("braggint.cli.predict")
