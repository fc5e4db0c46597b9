"""What the local workers' fork server loads before it forks them (see :func:`.executor.preload_worker_modules`).

Importing this module imports the block tasks and initialises numba's CPU
target (:mod:`braggint.compiler`): the first compiled kernel a process calls
pays that otherwise, once in every worker.  The fork server is
single-threaded when it does this, so its forks inherit a ready target.
"""

from ..compiler import initialise_cpu_target
from . import block_tasks  # noqa: F401 - imported for the fork server's module cache

initialise_cpu_target()
