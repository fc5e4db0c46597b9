"""numba's CPU target made ready ahead of the first kernel, without importing scipy.linalg."""

from __future__ import annotations

import subprocess
import sys


def _python(script: str, cwd=None) -> list[str]:
    """The lines a fresh interpreter running ``script`` prints (it must succeed)."""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_cpu_target_starts_without_scipy_linalg_and_kernels_still_use_blas_and_lapack():
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from numba import njit\n"
        "from braggint.compiler import initialise_cpu_target\n"
        "initialise_cpu_target()\n"
        "print('scipy.linalg' in sys.modules)\n"
        "from numba.np import arraymath, linalg\n"
        "print(arraymath._HAVE_BLAS, linalg.ensure_blas.__name__)\n"  # the probe's answer, and the probe restored
        "solve = njit(lambda a, b: np.linalg.solve(a, b))\n"
        "dot = njit(lambda a, b: np.dot(a, b))\n"
        "a, b = np.array([[4.0, 1.0], [2.0, 3.0]]), np.array([1.0, 2.0])\n"
        "print(np.allclose(solve(a, b), np.linalg.solve(a, b)), dot(b, b) == 5.0)\n"
        "print('scipy.linalg.cython_lapack' in sys.modules)\n"
    )
    assert _python(script) == ["False", "True", "ensure_blas", "True", "True", "True"]


def test_a_default_integration_imports_no_scipy_linalg(tiny_sweep, tmp_path):
    """No kernel of a default run calls BLAS or LAPACK (each would import scipy.linalg, 0.15-0.2 s of every
    process's start): a matrix product written into a kernel fails this."""
    script = (
        "import sys\n"
        "from braggint.cli.integrate import main\n"
        f"code = main([{str(tiny_sweep / 'models.expt')!r}, {str(tiny_sweep / 'strong.refl')!r}, 'nproc=1'])\n"
        "print(code, 'scipy.linalg' in sys.modules)\n"
    )
    assert _python(script, cwd=tmp_path)[-2:] == ["0", "False"]


ERF = "braggint.tasks.special._erf_into"

LOAD_SCRIPT = f"""
from braggint.compiler import load_cached_kernels
from braggint.tasks import special
kernel = special._erf_into
print(load_cached_kernels([{ERF!r}]), len(kernel.signatures), sum(kernel.stats.cache_hits.values()),
      load_cached_kernels([{ERF!r}]))
special.erf([0.5])
"""


def test_cached_kernels_load_ahead_and_nothing_is_compiled(tmp_path, monkeypatch):
    """load_cached_kernels loads what numba's cache holds, once, and never compiles: with an empty cache it
    loads nothing (the kernel's first call compiles and caches it), and a fresh process then loads it."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert _python(LOAD_SCRIPT) == ["0", "0", "0", "0"]  # empty cache: nothing loaded, nothing compiled
    assert _python(LOAD_SCRIPT) == ["1", "1", "1", "0"]  # cached by the first: loaded (a cache hit), once
