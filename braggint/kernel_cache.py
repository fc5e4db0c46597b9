"""Where numba caches braggint's compiled kernels: a directory per copy of the package and state of its kernels.

numba checks a cached kernel against the stamp (size, modification time)
of the kernel's own source file only.  A kernel that calls kernels of
another module compiles them into itself, so after an edit of that other
module it kept running the old code from the cache (found when an edit of
``tasks/profile_grid.py`` did not reach ``map_to_grids`` in
``tasks/reference_profiles.py``).  Here each copy of the package caches
its kernels in a directory named after a stamp of the size and
modification time of every module that uses numba; a new stamp starts an
empty directory and removes the copy's others.  A process still running
from before an edit keeps writing to its own stamp's directory, which no
later process reads.

``NUMBA_CACHE_DIR``, when set, is left alone (numba's own rule applies
there).  When the cache directory cannot be written, numba's default
places (``__pycache__`` beside the sources) are used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path


def sources_stamp(package: Path) -> str:
    """A digest of the path, size and modification time of every module under ``package`` that uses numba
    (mentions it: about 3 ms to read them all), so that edits of other modules keep the cache."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if b"numba" in path.read_bytes():
            stat = path.stat()
            digest.update(f"{path.relative_to(package)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def copy_directory(package: Path, cache_home: Path) -> Path:
    """Where the package copy at ``package`` keeps its kernel caches under ``cache_home`` (one place per
    copy, so that two installs never remove each other's)."""
    copy = hashlib.sha256(str(package.resolve()).encode()).hexdigest()[:16]
    return cache_home / "braggint" / "numba" / copy


def prepare_cache(copy: Path, stamp: str) -> Path | None:
    """The kernel cache for the sources of ``stamp`` in ``copy``: made (and the copy's caches of other
    stamps removed) when it is new; None when it cannot be written."""
    directory = copy / stamp[:16]
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            for other in copy.iterdir():
                if other.name == directory.name:
                    continue
                if other.is_dir():
                    shutil.rmtree(other, ignore_errors=True)
                else:
                    other.unlink(missing_ok=True)
    except OSError:
        return None
    return directory if os.access(directory, os.W_OK) else None


def use_kernel_cache() -> None:
    """Point numba's cache at this copy's kernel cache (before any kernel module is imported)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    package = Path(__file__).resolve().parent
    try:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory: numba's default places
        return
    directory = prepare_cache(copy_directory(package, cache_home), sources_stamp(package))
    if directory is None:
        return
    os.environ["NUMBA_CACHE_DIR"] = str(directory)  # worker processes inherit it
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before braggint: its configuration was read already
        numba.config.CACHE_DIR = str(directory)
