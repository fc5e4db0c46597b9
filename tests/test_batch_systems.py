"""Integration through real batch systems: a single-host Grid Engine (qsub and DRMAA) and SLURM.

The batch systems come from Debian's packages (gridengine-master,
gridengine-exec, gridengine-client, gridengine-drmaa1.0; slurmctld, slurmd);
deploy/local/*-up.sh start them on this host when the tests run as root.
Tests skip, saying why, where they are not installed.  LSF and PBS are
tested through the job scripts braggint would submit.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import dask
import dask_jobqueue  # noqa: F401  (its defaults must be in dask's configuration before config.set)
import pytest
from helpers import assert_same_tables, run_integrate

from braggint.io.refl import read_reflections
from braggint.pipeline.executor import QUIET_WORKER_SETTINGS, batch_cluster

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "deploy", "local")
BLOCKS = ("block.size=2", "block.units=frames")


def _start(name: str, probe: list[str], script: str, packages: str) -> None:
    if shutil.which(probe[0]) is None:
        pytest.skip(f"{name} is not installed (apt install {packages})")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"{name} is not running and starting it needs root ({script})")
        started = subprocess.run([os.path.join(DEPLOY, script)], capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            pytest.skip(f"{name} could not be started: {started.stderr.strip()}")


@pytest.fixture(scope="module")
def gridengine():
    os.environ.setdefault("SGE_ROOT", "/var/lib/gridengine")
    os.environ.setdefault("SGE_CELL", "default")
    _start("Grid Engine", ["qstat", "-f"], "gridengine-up.sh",
           "gridengine-master gridengine-exec gridengine-client gridengine-drmaa1.0")


@pytest.fixture(scope="module")
def slurm():
    _start("SLURM", ["sinfo"], "slurm-up.sh", "slurmctld slurmd")


@pytest.fixture(scope="module")
def local_table(tiny_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = run_integrate(tiny_sweep, out, "nproc=1", *BLOCKS)
    assert result.returncode == 0, result.stderr
    return read_reflections(str(out / "integrated.refl"))


def _through_batch(method, tiny_sweep, tmp_path, local_table):
    result = run_integrate(tiny_sweep, tmp_path, f"mp.method={method}", "nproc=2", *BLOCKS)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "dials.integrate.log").read_text()
    # Every block ran in a batch job, and the table is the one local workers give.
    block_lines = [line for line in log.splitlines() if line.startswith(" block ")]
    assert block_lines and all("(batch job " in line for line in block_lines)
    assert_same_tables(read_reflections(str(tmp_path / "integrated.refl")), local_table)


@pytest.mark.parametrize("method", ["sge", "drmaa"])
def test_grid_engine_jobs_give_the_local_table(gridengine, method, tiny_sweep, tmp_path, local_table):
    _through_batch(method, tiny_sweep, tmp_path, local_table)


def test_slurm_jobs_give_the_local_table(slurm, tiny_sweep, tmp_path, local_table):
    _through_batch("slurm", tiny_sweep, tmp_path, local_table)


def test_a_refused_submission_is_one_clear_line(gridengine, tiny_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("DASK_JOBQUEUE__SGE__QUEUE", "no_such_queue")
    result = run_integrate(tiny_sweep, tmp_path, "mp.method=sge", "nproc=2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        'braggint.integrate: error: integration.mp.method=sge: the batch system refused the worker job: '
        'Unable to run job: Job was rejected because job requests unknown queue "no_such_queue"']


@pytest.mark.parametrize("method, expected", [
    ("lsf", ["#BSUB -q short", "#BSUB -n 3", "#BSUB -W 00:30", '#BSUB -P "beamline"']),
    ("pbs", ["#PBS -q short", "#PBS -l walltime=00:30:00", "#PBS -A beamline"]),
    ("sge", ["#$ -q short", "#$ -l h_rt=00:30:00", "#$ -P beamline"]),
    ("slurm", ["#SBATCH -p short", "#SBATCH --cpus-per-task=3", "#SBATCH -t 00:30:00", "#SBATCH -A beamline"]),
])
def test_job_scripts_carry_the_configured_directives(method, expected):
    walltime = "00:30" if method == "lsf" else "00:30:00"
    account = "project" if method in ("lsf", "sge") else "account"
    settings = {f"jobqueue.{method}.queue": "short", f"jobqueue.{method}.walltime": walltime,
                f"jobqueue.{method}.{account}": "beamline"}
    with dask.config.set(settings):
        cluster = batch_cluster(method, njobs=2, nproc=3, failures=[])
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    for line in expected:
        assert line in script.splitlines(), (line, script)
    # Each job asks for nproc cores and runs nproc single-threaded worker processes.
    if method == "pbs":
        assert "#PBS -l select=1:ncpus=3:mem=" in script
    assert "--nworkers 3" in script and "--nthreads 1" in script


@pytest.mark.parametrize("method", ["lsf", "pbs", "sge", "slurm"])
def test_batch_workers_get_the_quieter_settings_after_the_configured_prologue(method):
    """Each job exports, after the prologue configured for its batch system, the environment in which a Dask
    worker reads QUIET_WORKER_SETTINGS, and glibc's one heap (MALLOC_ARENA_MAX=1), before it starts the
    workers."""
    with dask.config.set({f"jobqueue.{method}.job-script-prologue": ["module load xds"]}):
        cluster = batch_cluster(method, njobs=1, nproc=2, failures=[])
        try:
            lines = cluster.job_script().splitlines()
        finally:
            cluster.close()
    exports = [line for line in lines if line.startswith("export DASK_")]
    worker = next(i for i, line in enumerate(lines) if "distributed.cli.dask_worker" in line)
    assert exports and lines.index("module load xds") < lines.index(exports[0])
    assert lines.index(exports[-1]) < worker
    assert lines.index("module load xds") < lines.index("export MALLOC_ARENA_MAX=1") < worker
    environment = dict(shlex.split(line[len("export "):])[0].split("=", 1) for line in exports)
    with dask.config.set(dask.config.collect_env(environment)):
        assert {key: dask.config.get(key) for key in QUIET_WORKER_SETTINGS} == QUIET_WORKER_SETTINGS
