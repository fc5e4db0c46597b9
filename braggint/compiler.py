"""numba's CPU target, made ready before a process's first compiled kernel needs it.

The first compiled kernel a process calls (from numba's cache or not) makes
numba initialise its CPU target: LLVM, numba's registries of compiled
implementations and a check for a BLAS, which imports scipy.linalg (about
0.3 s of CPU).  Done here ahead of time, on a thread, it overlaps work that
releases the GIL (reading files, hashing them); done in a fork server, its
forks inherit a ready target.
"""

from __future__ import annotations


def initialise_cpu_target() -> None:
    """Initialise numba's CPU target now (a no-op once done), holding numba's compiler lock: a kernel first
    called meanwhile on another thread waits for it instead of initialising the target alongside."""
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with global_compiler_lock:
        cpu_target.target_context.refresh()
