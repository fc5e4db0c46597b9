"""Where numba caches braggint's compiled kernels: one directory per installed copy, emptied when its kernels change.

numba checks a cached kernel against the stamp (size, modification time)
of the kernel's own source file only.  A kernel that calls kernels of
another module compiles them into itself, so after an edit of that other
module it kept running the old code from the cache (found when an edit of
``tasks/profile_grid.py`` did not reach ``map_to_grids`` in
``tasks/reference_profiles.py``).  Here the cache of each copy of the
package lives in its own directory, with a stamp of the size and
modification time of every module that uses numba; when the stamp
changes, the directory is emptied and every kernel compiles afresh.

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

#: The file in a cache directory that holds the stamp of the sources its kernels were compiled from.
STAMP_FILE = "sources.stamp"


def sources_stamp(package: Path) -> str:
    """A digest of the path, size and modification time of every module under ``package`` that uses numba
    (mentions it: about 3 ms to read them all), so that edits of other modules keep the cache."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if b"numba" in path.read_bytes():
            stat = path.stat()
            digest.update(f"{path.relative_to(package)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_directory(package: Path, cache_home: Path) -> Path:
    """The kernel cache of the package copy at ``package`` (one per copy, so that two installs never empty
    each other's) under ``cache_home``."""
    copy = hashlib.sha256(str(package.resolve()).encode()).hexdigest()[:16]
    return cache_home / "braggint" / "numba" / copy


def prepare_cache(directory: Path, stamp: str) -> bool:
    """Make ``directory`` hold only kernels compiled from the sources of ``stamp`` (emptying it when it
    holds others); False when it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stamp_path = directory / STAMP_FILE
        if not stamp_path.exists() or stamp_path.read_text() != stamp:
            for entry in directory.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.name != STAMP_FILE:
                    entry.unlink(missing_ok=True)
            temporary = directory / f"{STAMP_FILE}.{os.getpid()}"
            temporary.write_text(stamp)
            os.replace(temporary, stamp_path)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def use_kernel_cache() -> None:
    """Point numba's cache at this copy's kernel cache (before any kernel module is imported)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    package = Path(__file__).resolve().parent
    try:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory: numba's default places
        return
    directory = cache_directory(package, cache_home)
    if not prepare_cache(directory, sources_stamp(package)):
        return
    os.environ["NUMBA_CACHE_DIR"] = str(directory)  # worker processes inherit it
    numba = sys.modules.get("numba")
    if numba is not None:  # imported before braggint: its configuration was read already
        numba.config.CACHE_DIR = str(directory)
