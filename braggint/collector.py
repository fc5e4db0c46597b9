"""Heavy imports with Python's cyclic garbage collector paused, their objects then frozen out of its reach.

Importing numpy, numba, Dask and braggint makes hundreds of thousands of
objects, and the collector runs again and again meanwhile, each full
collection walking all of them, though none is garbage: 44-60 ms of the
command's imports (147 collections), 45-68 ms of the local workers'
helper's start (198).  Frozen (``gc.freeze``), they are kept and never
scanned again; the collector runs as before for what comes after.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def collector_paused():
    """Run the block with the cyclic garbage collector off, then freeze every object so far and turn the
    collector back on (if it was on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
