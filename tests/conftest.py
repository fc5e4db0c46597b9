"""Shared fixtures: the real DIALS files in ../shared/data (see its README)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRAGGINT_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared DIALS data not found at {path} (set BRAGGINT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def wedge(shared_data) -> Path:
    """L-cysteine wedge: 23_integrated.expt/.refl, a consistent DIALS pair."""
    return _require(shared_data / "l_cysteine_wedge")


@pytest.fixture(scope="session")
def real_sweep(shared_data) -> Path:
    """DIALS 3.12.1 processing of real L-cysteine images, sweep 01."""
    return _require(shared_data / "l_cysteine_real" / "dials_3.12.1" / "sweep_01")


def all_files(suffixes: tuple[str, ...]) -> list[Path]:
    if not SHARED_DATA.exists():
        return []
    return sorted(p for p in SHARED_DATA.rglob("*") if p.suffix in suffixes)


def assert_reader_names_file(reader, path: Path, content: str | bytes, message: str) -> None:
    """Writing ``content`` to ``path`` makes ``reader`` raise an InputFileError naming the file."""
    from braggint.errors import InputFileError

    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputFileError) as error:
        reader(str(path))
    assert str(path) in str(error.value) and message in str(error.value)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """A simulated 8-image sweep ('tiny' preset), shared read-only by the tests that integrate it."""
    from braggint.simulate import PRESETS, simulate

    directory = tmp_path_factory.mktemp("tiny_sweep")
    simulate(PRESETS["tiny"].replace(n_images=8), str(directory))
    return directory

