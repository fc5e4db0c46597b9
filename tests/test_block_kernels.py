"""The compiled kernels loaded ahead for the block tasks (pipeline/block_kernels): the list covers what a block
calls, and local workers start with them loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

COVERAGE_SCRIPT = """
import json, sys
from numba.core.registry import CPUDispatcher
import braggint.pipeline.integrate as pipeline
from braggint.cli.common import apply_parameters, parse_command_line
from braggint.cli.integrate import main, master_parameters
from braggint.pipeline.block_kernels import block_kernels

def loaded():
    return {f"{value.py_func.__module__}.{value.py_func.__name__}"
            for module in list(sys.modules.values()) if getattr(module, "__name__", "").startswith("braggint")
            for value in vars(module).values() if isinstance(value, CPUDispatcher) and value.overloads}

called = set()
block_task = pipeline.model_block
def recording(*arguments):
    before = loaded()
    report = block_task(*arguments)
    called.update(loaded() - before)
    return report
pipeline.model_block = recording
settings = sys.argv[3:]
code = main([sys.argv[1], sys.argv[2], "nproc=1", *settings])
params = master_parameters()
apply_parameters(params, parse_command_line(settings))
print(json.dumps({"code": code, "called": sorted(called), "listed": block_kernels(params.extract())}))
"""


@pytest.mark.parametrize("settings", [["profile.fitting=False"], [], ["background.algorithm=simple"]],
                         ids=["summation", "profile fitting", "simple background"])
def test_the_kernels_listed_for_a_block_are_those_it_calls(tiny_sweep, tmp_path, settings):
    """Every kernel a block task loads from numba's cache in a run of these settings is listed for the helper
    to load before it forks the workers; a kernel added to a block without being listed fails.  The run is
    made twice, the first to fill the cache: a kernel compiled afresh compiles (and registers) the kernels
    it calls too, which its cached version holds within itself."""
    command = [sys.executable, "-c", COVERAGE_SCRIPT, str(tiny_sweep / "models.expt"), str(tiny_sweep / "strong.refl"),
               *settings]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0
    assert len(outcome["called"]) >= 5  # what the recording saw: decoding, copying, background, mask, summation
    assert set(outcome["called"]) <= set(outcome["listed"])


WORKER_SCRIPT = """
import json
from braggint.pipeline import local_workers

QUERY = "len(__import__('braggint.tasks.special', fromlist=['_erf_into'])._erf_into.signatures)"
loaded = {}
for kernels in [(), ("braggint.tasks.special._erf_into",)]:
    with local_workers.LocalWorkers(1, 2, kernels) as workers:
        results, errors = workers.run([(f"query-{n}", eval, (QUERY,)) for n in range(2)], lambda: None)
    loaded[len(kernels)] = results
print(json.dumps({"command": eval(QUERY), "workers": loaded}))
"""


def test_forked_workers_start_with_the_listed_kernels_loaded(tmp_path, monkeypatch):
    """The helper loads the listed kernels from numba's cache before it forks the workers, which inherit
    them; the command itself loads none of them."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    cached = subprocess.run([sys.executable, "-c", "from braggint.tasks.special import erf; erf([0.5])"],
                            capture_output=True, text=True, timeout=300)
    assert cached.returncode == 0, cached.stderr
    result = subprocess.run([sys.executable, "-c", WORKER_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"command": 0, "workers": {"0": [0, 0], "1": [1, 1]}}
