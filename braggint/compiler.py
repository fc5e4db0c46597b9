"""numba's CPU target, made ready before a process's first compiled kernel needs it.

The first compiled kernel a process calls (from numba's cache or not) makes
numba initialise its CPU target: LLVM and numba's registries of compiled
implementations (0.15-0.25 s of CPU).  Done here ahead of time, on a thread,
it overlaps work that releases the GIL (reading files, hashing them); done
in the local workers' helper process, its forks inherit a ready target.
Done here, it also skips numba's probe for a BLAS, which imports
scipy.linalg (another 0.15-0.2 s): SciPy is one of braggint's
dependencies, and the kernels of a default run call neither BLAS nor
LAPACK (one that does imports SciPy's when it is first called, as numba
always does).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterable

from .collector import collector_paused


def initialise_cpu_target() -> None:
    """Initialise numba's CPU target now (a no-op once done), holding numba's compiler lock: a kernel first
    called meanwhile on another thread waits for it instead of initialising the target alongside.

    The target's registries live as long as the process: they are made with
    Python's cyclic garbage collector paused and then frozen out of its
    reach (:func:`braggint.collector.collector_paused`), which saves the 98
    collections (10-12 ms of 0.12-0.14 s) it otherwise ran meanwhile.
    """
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with collector_paused(), global_compiler_lock, _blas_taken_as_present():
        cpu_target.target_context.refresh()


@contextlib.contextmanager
def _blas_taken_as_present():
    """While numba's array functions are first imported, its BLAS probe answers yes without importing
    scipy.linalg (the answer only chooses whether ``np.correlate`` and ``np.convolve`` compile to BLAS's dot
    or to a loop, and SciPy is always there); the probe is restored afterwards, so that compiling a kernel
    that calls BLAS or LAPACK still checks SciPy's."""
    if "numba.np.arraymath" in sys.modules:  # probed already
        yield
        return
    from numba.np import linalg

    probe = linalg.ensure_blas
    linalg.ensure_blas = lambda: None
    try:
        yield
    finally:
        linalg.ensure_blas = probe


def load_cached_kernels(names: Iterable[str]) -> int:
    """Load now every compiled version of the kernels ``names`` (``"module.function"``, numba dispatchers with
    ``cache=True``) that numba's cache holds for these sources and this machine; compile nothing.  Returns how
    many were loaded (0 for a kernel never cached, or whose cache its sources' edits made stale).

    A process otherwise loads a kernel from the cache on its first call:
    3-40 ms each (LLVM parses the kernel's bitcode and lists its symbols,
    in proportion to the functions compiled into it).  Loaded ahead, in the
    local workers' helper before it forks them, the workers inherit them.
    The cache's index and key are numba's own (``Dispatcher._cache``); a
    numba without them loads nothing here and every kernel as it is first
    called, as before.
    """
    loaded = 0
    for name in names:
        module, function = name.rsplit(".", 1)
        kernel = getattr(importlib.import_module(module), function)
        try:
            cache = kernel._cache
            index = cache._cache_file._load_index()  # empty when stale
            codegen = kernel.targetctx.codegen()
            keys = [key for key in index if key == cache._index_key(key[0], codegen)]
        except AttributeError:  # no cache (numba's NullCache) or another numba's internals
            continue
        for signature, _, _ in keys:
            if tuple(signature) not in kernel.overloads:
                kernel.compile(signature)  # found in the cache under this very key: loaded, not compiled
                loaded += 1
    return loaded
