"""What users consume: integrated.refl's layout against DIALS's, the HTML report in a browser, safe writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest

from braggint.io.refl import read_reflections
from braggint.simulate import PRESETS, simulate

#: Columns of that older DIALS file a current default run does not write: rlp (carried along from indexing),
#: n_signal (from spot finding), profile.rmsd (no longer produced by DIALS), shoebox (only with debug output).
NOT_WRITTEN = {"rlp", "n_signal", "profile.rmsd", "shoebox"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("outputs")
    simulate(PRESETS["tiny"].replace(n_images=4), str(directory / "data"))
    out = directory / "out"
    out.mkdir()
    result = subprocess.run([os.path.abspath(sys.executable), "-m", "braggint.cli.integrate",
                             str(directory / "data" / "models.expt"), str(directory / "data" / "strong.refl"),
                             "output.html=report.html", "output.mtz=integrated.mtz"],
                            cwd=out, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_columns_and_types_match_dials(run, shared_data):
    ours = read_reflections(str(run / "integrated.refl"))
    dials = read_reflections(str(shared_data / "centroid_test_data" / "integrated.refl"))
    # The DIALS table of the centroid sweep comes from an older DIALS (dqe for qe, no partial_id).
    expected = {("qe" if name == "dqe" else name) for name in dials.keys()} - NOT_WRITTEN | {"partial_id"}
    assert expected <= set(ours.keys())
    for name in dials.keys():
        if name in ours.keys():
            assert ours.column_type(name) == dials.column_type(name), name
    # Plain msgpack and numpy read the same table.
    with open(run / "integrated.refl", "rb") as handle:
        kind, version, body = msgpack.unpackb(handle.read(), strict_map_key=False)
    assert kind == "dials::af::reflection_table" and version == 1 and body["nrows"] == ours.nrows
    type_name, (count, raw) = body["data"]["intensity.sum.value"]
    assert type_name == "double" and count == ours.nrows
    np.testing.assert_array_equal(np.frombuffer(raw, "<f8"), ours["intensity.sum.value"])
    flags = np.frombuffer(body["data"]["flags"][1][1], "<u8")
    assert ((flags & 0x100) | (flags & 0x200)).all()  # integrated_sum or integrated_prf on every row


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt install chromium)")
def test_html_report_renders_in_chromium(run, tmp_path):
    screenshot = tmp_path / "report.png"
    result = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000",
                             f"--screenshot={screenshot}", (run / "report.html").as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_mtz_reads_back(run):
    import gemmi

    mtz = gemmi.read_mtz_file(str(run / "integrated.mtz"))
    assert mtz.nreflections == read_reflections(str(run / "integrated.refl")).nrows
    assert {"H", "K", "L", "M/ISYM", "BATCH", "I", "SIGI"} <= set(mtz.column_labels())


WRITER = """
import sys, time
from braggint.io.atomic import atomic_open
with atomic_open(sys.argv[1], "wb") as handle:
    for _ in range(10000):
        handle.write(b"x" * 100_000)
        handle.flush()
        time.sleep(0.001)
"""


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    target = tmp_path / "integrated.refl"
    target.write_bytes(b"old content")
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.time() + 30
    while time.time() < deadline and not any(p.name.endswith(".tmp") and p.stat().st_size > 1_000_000
                                             for p in tmp_path.iterdir()):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert target.read_bytes() == b"old content"
    # Only the temporary file is left beside it, never a truncated file at the final path.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "integrated.refl"]
    assert all(name.startswith(".integrated.refl.") and name.endswith(".tmp") for name in leftovers)
