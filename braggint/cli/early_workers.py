"""The ``braggint.integrate`` console command, starting the local workers' fork server first.

The fork server imports what every local worker needs (numpy, numba,
Dask, braggint's block tasks: about a second of CPU).  Started here, before
this process's own imports, it does that on another core while this
process imports and reads the inputs, and the cluster started later forks
its workers at once.  Whether the run will want local workers is read off
the command line only (``nproc``, ``njobs``, ``mp.method``; defaults:
multiprocessing on every usable core); a guess that turns out wrong costs
an idle server process that exits with this one.
"""

from __future__ import annotations

import os
import re
import sys

#: A command-line parameter of the mp scope (any abbreviation PHIL accepts: ``nproc=2``, ``mp.nproc=2``,
#: ``integration.mp.nproc=2``) and its value.
_MP_SETTING = re.compile(r"^(?:(?:integration\.)?mp\.)?(nproc|njobs|method)=(\S*)$")
#: Options with which no integration runs (help, version, the configuration shown).
_NO_RUN = {"-h", "--help", "-V", "--version", "-c", "--show-config"}


def wants_local_workers(argv: list[str]) -> bool:
    """Whether the command line ``argv`` asks for more than one local worker process."""
    from ..pipeline.executor import usable_cores

    if os.environ.get("BRAGGINT_SCHEDULER") or any(arg in _NO_RUN for arg in argv):
        return False
    settings = {"nproc": "auto", "njobs": "1", "method": "multiprocessing"}
    for arg in argv:
        match = _MP_SETTING.match(arg)
        if match:
            settings[match.group(1)] = match.group(2).lower()
    if settings["method"] != "multiprocessing":
        return False
    try:
        nproc = usable_cores() if settings["nproc"] in ("auto", "none", "") else int(settings["nproc"])
        njobs = 1 if settings["njobs"] in ("auto", "none", "") else int(settings["njobs"])
    except ValueError:  # braggint.integrate reports the bad value itself
        return False
    return nproc * njobs > 1


def main() -> None:
    if wants_local_workers(sys.argv[1:]):
        from ..pipeline.executor import start_worker_server

        start_worker_server()
    from .integrate import console_main

    console_main()
