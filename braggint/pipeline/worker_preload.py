"""What the local workers' helper process loads before it forks them (see :mod:`.local_workers`).

Importing this module imports the block tasks and initialises numba's CPU
target (:mod:`braggint.compiler`): the first compiled kernel a process calls
pays that otherwise, once in every worker.  The helper is single-threaded
when it does this, so its forks inherit a ready target.
"""

from ..compiler import initialise_cpu_target
from . import block_tasks  # noqa: F401 - imported for the helper's module cache, which its forks inherit

initialise_cpu_target()
