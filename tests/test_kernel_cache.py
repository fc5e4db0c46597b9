"""numba's kernel cache: a directory per copy of the package and state of the modules that use numba."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from braggint.kernel_cache import copy_directory, prepare_cache, sources_stamp


def _package(root: Path) -> Path:
    package = root / "pkg"
    (package / "tasks").mkdir(parents=True)
    (package / "tasks" / "inner.py").write_text("from numba import njit\n\n@njit\ndef inner(x):\n    return x + 1\n")
    (package / "outer.py").write_text("from numba import njit\nfrom .tasks.inner import inner\n")
    (package / "cli.py").write_text("import sys\n")
    return package


def test_an_edit_of_a_module_using_numba_starts_an_empty_cache_and_no_other_edit_does(tmp_path):
    package = _package(tmp_path)
    copy = tmp_path / "cache"
    (copy / "stray").mkdir(parents=True)
    (copy / "stray.stamp").write_text("from an earlier layout")
    cache = prepare_cache(copy, sources_stamp(package))
    assert [p.name for p in copy.iterdir()] == [cache.name]  # a new cache removes whatever else the copy had
    compiled = cache / "tasks_0123" / "outer.kernel-1.py311.nbi"
    compiled.parent.mkdir()
    compiled.write_text("compiled")
    assert prepare_cache(copy, sources_stamp(package)) == cache and compiled.exists()
    # An edit of a module that does not use numba keeps the kernels.
    (package / "cli.py").write_text("import sys\nimport os\n")
    assert prepare_cache(copy, sources_stamp(package)) == cache and compiled.exists()
    # The edit is to the module the kernel calls, not to the kernel's own module (numba's own check misses it).
    (package / "tasks" / "inner.py").write_text("from numba import njit\n\n@njit\ndef inner(x):\n    return x + 2\n")
    fresh = prepare_cache(copy, sources_stamp(package))
    assert fresh != cache and list(fresh.iterdir()) == []
    assert [p.name for p in copy.iterdir()] == [fresh.name]  # the old stamp's kernels are gone


def test_each_copy_of_the_package_has_its_own_caches(tmp_path):
    assert copy_directory(tmp_path / "a", tmp_path) != copy_directory(tmp_path / "b", tmp_path)
    assert copy_directory(tmp_path / "a", tmp_path).parent == tmp_path / "braggint" / "numba"


def test_an_unwritable_cache_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert prepare_cache(blocker / "cache", "stamp") is None


def _numba_cache_dir(environment: dict) -> str:
    code = "import braggint, numba; print(numba.config.CACHE_DIR)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            check=True)
    return result.stdout.strip()


def test_importing_braggint_points_numba_at_the_cache_unless_the_user_chose_one(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    environment["XDG_CACHE_HOME"] = str(tmp_path)
    chosen = Path(_numba_cache_dir(environment))
    assert chosen.parent.parent == tmp_path / "braggint" / "numba" and chosen.is_dir()
    assert _numba_cache_dir(environment) == str(chosen)  # the same sources: the same cache
    environment["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    assert _numba_cache_dir(environment) == str(tmp_path / "mine")
