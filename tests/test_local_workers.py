"""The local workers' helper process (pipeline/local_workers): tasks, their failures and progress, under the
start method of this platform and under the one used where forking is unsafe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import gc, json, os, sys
from braggint.pipeline import local_workers

local_workers.START_METHOD = sys.argv[1]
ended = []
with local_workers.LocalWorkers(1, 2) as workers:
    results, errors = workers.run([("pid-a", os.getpid, ()), ("bad", int, ("x",)), ("pid-b", os.getpid, ()),
                                   ("frozen", gc.get_freeze_count, ())], lambda: ended.append(1))
    helpers = [child.pid for child in __import__("multiprocessing").active_children()]
print(json.dumps({"parent": os.getpid(), "helpers": helpers, "results": results[:2], "ended": len(ended),
                  "frozen in worker": results[2], "frozen in parent": gc.get_freeze_count(),
                  "errors": [type(error).__name__ + ": " + str(error) for error in errors]}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_tasks_run_on_the_workers_and_a_failing_one_is_returned_not_raised(method):
    result = subprocess.run([sys.executable, "-c", SCRIPT, method], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["ended"] == 4  # progress advanced once per task, the failed one included
    assert len(outcome["results"]) == 2  # the worker processes' ids: neither the command nor its helper
    assert not set(outcome["results"]) & {outcome["parent"], *outcome["helpers"]}
    assert outcome["errors"] == ["ValueError: invalid literal for int() with base 10: 'x'"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_forked_workers_inherit_their_objects_frozen_out_of_the_garbage_collector(method):
    """A forked worker's collections must not write to the pages it shares with the helper and the command
    (copying them): what it inherits is frozen (gc.freeze) before each fork; a spawned worker inherits
    nothing, and nothing is frozen."""
    result = subprocess.run([sys.executable, "-c", SCRIPT, method], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if method == "fork":
        assert outcome["frozen in parent"] > 10_000  # the command's imports: numpy, numba, braggint
        assert outcome["frozen in worker"] > outcome["frozen in parent"]  # and the helper's: Dask, the block tasks
    else:
        assert outcome["frozen in parent"] == outcome["frozen in worker"] == 0


STOP_SCRIPT = """
import json, multiprocessing, os
from braggint.pipeline import local_workers

with local_workers.LocalWorkers(1, 2) as workers:
    results, _ = workers.run([("pid", os.getpid, ())], lambda: None)
    helper = multiprocessing.active_children()[0]
    workers.stop()
    helper.join(60)  # the helper ends on its own: stop() asked it to and did not wait
    ended_alone = not helper.is_alive()
    try:
        workers.run([("pid", os.getpid, ())], lambda: None)
        refused = ""
    except local_workers.HelperProcessError as error:
        refused = str(error)
print(json.dumps({"ended alone": ended_alone, "refused": refused}))
"""


def test_stopped_workers_end_without_being_waited_for_and_take_no_more_tasks():
    """A run stops its workers once its last block has ended (LocalWorkers.stop), so that the helper stops
    them while the run reduces and writes: the helper must end by itself, and a task sent afterwards is
    refused with a clear error rather than left waiting."""
    result = subprocess.run([sys.executable, "-c", STOP_SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["ended alone"]
    assert "helper process of the local workers ended" in outcome["refused"]
