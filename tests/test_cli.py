"""braggint.integrate's command line: configuration output, and one-line
errors with a non-zero exit and no traceback for every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    result = subprocess.run([os.path.abspath(sys.executable), "-m", "braggint.cli.integrate", *map(str, args)],
                            capture_output=True, text=True, cwd=cwd, timeout=120)
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("braggint.integrate: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_show_config_expert_level_3_lists_every_parameter():
    result = run("-c", "-e", "3")
    assert result.returncode == 0
    assert "reflections_per_degree = 50" in result.stdout  # expert level 1
    assert "units = *degrees radians frames" in result.stdout
    assert "max_memory_usage = 0.90" in result.stdout


def test_show_config_reflects_assignments_and_attributes():
    result = run("-c", "-a", "2", "nproc=4", "fitting=False")
    assert result.returncode == 0
    assert "nproc = 4" in result.stdout and "fitting = False" in result.stdout
    assert ".type = int(value_min=1, allow_none=True)" in result.stdout


def test_help():
    result = run("-h")
    assert result.returncode == 0 and "usage: braggint.integrate" in result.stdout


@pytest.fixture
def inputs(real_sweep, tmp_path):
    return real_sweep / "refined.expt", real_sweep / "refined.refl", tmp_path


def test_good_inputs_are_read_and_parameters_written(inputs):
    expt, refl, work = inputs
    result = run(expt, refl, "nproc=2", "min_spots.overall=10", "min_spots.per_degree=5", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "integrated.refl").exists() and (work / "integrated.expt").exists()
    assert not list(work.glob("*.tmp*")), "temporary output files left behind"
    phil = (work / "dials.integrate.phil").read_text()
    assert "nproc = 2" in phil and "overall = 10" in phil and f"experiments = {expt}" in phil
    log = (work / "dials.integrate.log").read_text()
    assert "Read 1 experiment(s)" in log and "Read 54 reference reflections" in log


def test_too_few_spots_is_one_line_and_logged(inputs):
    expt, refl, work = inputs
    result = run(expt, refl, cwd=work)
    assert_one_line_error(result, "Too few reflections for profile modelling")
    assert "Too few reflections for profile modelling" in (work / "dials.integrate.log").read_text()
    assert not (work / "integrated.refl").exists()


@pytest.mark.parametrize("args, fragments", [
    (["missing.expt"], ["missing.expt: experiment list not found"]),
    (["{expt}", "missing.refl"], ["missing.refl: reflection file not found"]),
    (["{expt}", "{refl}", "nproc=many"], ["parameter integration.mp.nproc: 'many' is not an integer"]),
    (["{expt}", "{refl}", "nproc=0"], ["integration.mp.nproc: 0 is below the minimum 1"]),
    (["{expt}", "{refl}", "wibble=1"], ["unknown parameter 'wibble'"]),
    (["{expt}", "{refl}", "min_pixels=3"], ["ambiguous parameter 'min_pixels' matches"]),
    (["{expt}", "{refl}", "units=parsecs"], ["'parsecs' is not one of degrees, radians, frames"]),
    (["{expt}", "{refl}", "sigma_b=0.05"], ["sigma_b and sigma_m must be set together"]),
    (["{expt}", "{refl}", "scan_range=5,5"], ["scan_range=5,5: the end must be greater"]),
    (["{expt}", "{refl}", "scan_step=0"], ["profile.gaussian_rs.fitting.scan_step=0: the reference profiles'"]),
    (["{expt}", "{refl}", "prediction.d_min=-1"], ["prediction.d_min=-1: a resolution limit must be a positive number"]),
    (["{expt}", "{refl}", "prediction.d_max=0"], ["prediction.d_max=0: a resolution limit must be a positive number"]),
    (["{expt}", "{refl}", "min_spots.overall=10", "gaussian_rs.filter.min_zeta=1"],
     ["Too few reflections for profile modelling: none of the", "spots has |zeta| >= profile.gaussian_rs.filter.min_zeta=1"]),
    (["{expt}", "{refl}", "significance_filter.enable=True", "significance_filter.n_bins=0"],
     ["significance_filter.n_bins=0: the filter needs at least one resolution bin"]),
    (["{expt}", "{refl}", "-e"], ["option -e needs a whole number"]),
    (["{expt}", "{refl}", "--bogus"], ["unknown option '--bogus'"]),
])
def test_bad_input_gives_one_line(inputs, args, fragments):
    expt, refl, work = inputs
    result = run(*[a.format(expt=expt, refl=refl) for a in args], cwd=work)
    assert_one_line_error(result, *fragments)


def test_malformed_files(inputs):
    expt, refl, work = inputs
    (work / "bad.expt").write_text('{"__id__": "ExperimentList", ')
    assert_one_line_error(run(work / "bad.expt", refl, cwd=work), "bad.expt: malformed JSON at line 1")
    (work / "bad.refl").write_bytes(b"\x00\x01\x02")
    assert_one_line_error(run(expt, work / "bad.refl", cwd=work), "bad.refl: not a msgpack reflection table")
    (work / "bad.phil").write_text("integration {\n  mp {\n")
    assert_one_line_error(run(expt, refl, work / "bad.phil", cwd=work), "bad.phil, line 3: scope")


def test_missing_images_are_named(inputs):
    expt, refl, work = inputs
    document = json.loads(expt.read_text())
    document["imageset"][0]["template"] = str(work / "gone_#####.cbf")
    (work / "moved.expt").write_text(json.dumps(document))
    result = run(work / "moved.expt", refl, cwd=work)
    assert_one_line_error(result, "gone_00001.cbf: image 1 of experiment 0", "is missing (and 14 more)")


def test_reference_without_shoeboxes_is_refused(inputs):
    expt, refl, work = inputs
    from braggint.io.refl import read_reflections, write_reflections

    table = read_reflections(str(refl))
    del table["shoebox"]
    write_reflections(table, str(work / "noshoebox.refl"))
    assert_one_line_error(run(expt, work / "noshoebox.refl", cwd=work),
                          "shoebox data missing from reflection table")


def test_console_scripts_are_installed():
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    for program in ("braggint.integrate", "braggint.predict", "braggint.show"):
        path = shutil.which(program, path=bindir) or shutil.which(program)
        assert path is not None, f"{program} is not installed beside {sys.executable}"
        result = subprocess.run([path, "--version"], capture_output=True, text=True)
        assert result.returncode == 0 and "braggint" in result.stdout


def test_a_launched_command_is_imported_with_the_collector_paused_and_runs_with_it_on(tmp_path, monkeypatch):
    """braggint.cli.launch (the batch commands' entry points): the command's import sees the cyclic garbage
    collector off; its console_main runs with the collector on and the import's objects frozen."""
    import gc

    from braggint.cli.launch import launch

    (tmp_path / "fake_command.py").write_text(
        "import gc\nimported_with = gc.isenabled()\nran_with = None\n\n\n"
        "def console_main():\n    global ran_with\n    ran_with = (gc.isenabled(), gc.get_freeze_count())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_command", raising=False)
    gc.unfreeze()
    try:
        launch("fake_command")
    finally:
        gc.unfreeze()
    command = sys.modules.pop("fake_command")
    assert command.imported_with is False
    assert command.ran_with[0] is True and command.ran_with[1] > 0
    assert gc.isenabled()


def test_a_paused_collector_freezes_what_was_made_and_is_left_as_it_was_found():
    """collector_paused (the commands' imports, the local workers' helper's): off inside, the objects made
    frozen afterwards, and on again only if it was on before."""
    import gc

    from braggint.collector import collector_paused

    gc.unfreeze()
    try:
        for was_on in (True, False):
            gc.enable() if was_on else gc.disable()
            with collector_paused():
                assert not gc.isenabled()
                made = [[] for _ in range(100)]
            assert gc.isenabled() is was_on
            assert gc.get_freeze_count() >= len(made)
            gc.unfreeze()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_finished_run_has_written_its_whole_log_when_the_process_ends(tiny_sweep, tmp_path):
    """The command ends without the interpreter's teardown: the terminal and the log file must still get
    every line, the last being the stage timing, and the outputs must be complete."""
    from braggint.io.refl import read_reflections

    result = run(tiny_sweep / "models.expt", tiny_sweep / "strong.refl", "profile.fitting=False", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "dials.integrate.log").read_text().rstrip().splitlines()
    assert log[-1].startswith("Wall time by stage") and result.stdout.rstrip().splitlines()[-1] == log[-1]
    assert read_reflections(str(tmp_path / "integrated.refl")).nrows > 0


def test_the_console_command_integrates_on_two_workers(tiny_sweep, tmp_path):
    """braggint.integrate as installed with two workers, behind a helper process forked from the command."""
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    program = shutil.which("braggint.integrate", path=bindir)
    assert program is not None
    result = subprocess.run([program, str(tiny_sweep / "models.expt"), str(tiny_sweep / "strong.refl"),
                             "nproc=2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "dials.integrate.log").read_text()
    assert "Started 2 local Dask workers" in log and (tmp_path / "integrated.refl").exists()
