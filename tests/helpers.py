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
