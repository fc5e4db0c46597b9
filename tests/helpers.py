"""Helpers shared by test modules (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path


def run_integrate(dataset: Path, out: Path, *args: str):
    """``braggint.integrate dataset/models.expt dataset/strong.refl args`` in ``out`` (created)."""
    import subprocess
    import sys

    out.mkdir(exist_ok=True)
    return subprocess.run([os.path.abspath(sys.executable), "-m", "braggint.cli.integrate",
                           str(dataset / "models.expt"), str(dataset / "strong.refl"), *args],
                          cwd=out, capture_output=True, text=True, timeout=600)


def assert_same_tables(a, b, exact: bool = False) -> None:
    """Two reflection tables hold the same rows, columns and values: floats to 1e-12, or, ``exact``, equal,
    with the columns in the same order and the same identifiers; shoebox columns equal."""
    import numpy as np

    from braggint.models.reflection_table import SHOEBOX_TYPE

    assert a.nrows == b.nrows and set(a.keys()) == set(b.keys())
    if exact:
        assert a.keys() == b.keys() and a.identifiers == b.identifiers
    for name in a.keys():
        if a.column_type(name) == SHOEBOX_TYPE:
            assert a[name].equals(b[name]), name
            continue
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind == "f" and not exact:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)
