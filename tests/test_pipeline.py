"""The block graph: the same table from any number of workers, resuming, and a failing block."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pytest
from helpers import assert_same_tables, run_integrate

from braggint.io.refl import read_reflections


@pytest.fixture(scope="module")
def dataset(tiny_sweep):
    return tiny_sweep


run = run_integrate


def test_any_number_of_workers_and_any_block_unit_give_the_same_table(dataset, tmp_path):
    """1, 2 and 2 x 2 workers; 3 frames of 0.5 degrees as frames, degrees and radians: one table."""
    runs = {"n1": ("nproc=1", "block.size=3", "block.units=frames"),
            "n2": ("nproc=2", "block.size=3", "block.units=frames"),
            "n2x2": ("njobs=2", "nproc=2", "block.size=3", "block.units=frames"),
            "degrees": ("nproc=1", "block.size=1.5", "block.units=degrees"),
            "radians": ("nproc=1", f"block.size={math.radians(1.5)!r}", "block.units=radians")}
    tables = {}
    for name, args in runs.items():
        result = run(dataset, tmp_path / name, *args)
        assert result.returncode == 0, result.stderr
        tables[name] = read_reflections(str(tmp_path / name / "integrated.refl"))
        log = (tmp_path / name / "dials.integrate.log").read_text()
        assert "block 1:" in log and "peak memory" in log
    assert "Started 4 local Dask workers" in (tmp_path / "n2x2" / "dials.integrate.log").read_text()
    for name in runs:
        assert_same_tables(tables[name], tables["n1"])
    # The work store is gone after a successful run.
    assert not (tmp_path / "n1" / "integrated.refl.work").exists()
    # With one worker the blocks run in the parent: their stage times account for the passes' wall time.
    wall, blocks = stage_lines((tmp_path / "n1" / "dials.integrate.log").read_text())
    passes = wall["first pass"] + wall["second pass"]
    assert {"read", "extract", "background", "summation", "profile modelling", "profile fitting"} <= set(blocks)
    assert 0.6 * passes < sum(blocks.values()) <= passes + 0.01


def stage_lines(log: str) -> tuple[dict, dict]:
    """The parent's wall time by stage and the block tasks' summed stage times, from a log."""
    def stages(prefix: str) -> dict:
        line = next(line for line in log.splitlines() if line.startswith(prefix))
        return {name.strip(): float(seconds) for name, seconds in
                re.findall(r"([a-z ]+) ([0-9.]+) s", line[len(prefix):].split("; total")[0])}

    return stages("Wall time by stage: "), stages("Block-task time by stage (summed over blocks): ")


def test_block_sizes_change_the_pieces_not_the_reflections(dataset, tmp_path):
    whole = run(dataset, tmp_path / "whole")
    cut = run(dataset, tmp_path / "cut", "block.size=2", "block.units=frames")
    assert whole.returncode == 0 and cut.returncode == 0, cut.stderr
    a = read_reflections(str(tmp_path / "whole" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "cut" / "integrated.refl"))
    assert b.nrows > a.nrows  # reflections crossing block ends became partials
    # Summing the pieces of each partial_id gives back the whole reflections' summation intensities.
    key_a = {tuple(h) + (bool(e),): i for i, (h, e) in enumerate(zip(a["miller_index"], a["entering"]))}
    sums: dict = {}
    for h, e, value in zip(b["miller_index"], b["entering"], b["intensity.sum.value"]):
        sums[tuple(h) + (bool(e),)] = sums.get(tuple(h) + (bool(e),), 0.0) + value
    common = [k for k in sums if k in key_a]
    whole_values = np.array([a["intensity.sum.value"][key_a[k]] for k in common])
    pieces = np.array([sums[k] for k in common])
    strong = whole_values > 200
    assert strong.sum() > 20
    np.testing.assert_allclose(pieces[strong], whole_values[strong], rtol=0.1)


def _with_a_truncated_image(dataset, tmp_path):
    """A copy of the sweep whose image 7 (frame 6) is truncated: ``(folder, image, its good bytes)``."""
    broken = tmp_path / "data"
    shutil.copytree(dataset, broken)
    image = broken / "image_00007.cbf"
    good_bytes = image.read_bytes()
    image.write_bytes(good_bytes[:2000])  # truncated: unreadable
    return broken, image, good_bytes


def _assert_mended_rerun_resumes(broken, image, good_bytes, out, tmp_path, args, resumed: str):
    """With the image mended, the rerun in ``out`` resumes (its log says ``resumed``) and gives what a
    fresh run gives."""
    image.write_bytes(good_bytes)
    rerun = run(broken, out, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert resumed in (out / "dials.integrate.log").read_text()
    fresh = run(broken, tmp_path / "fresh", *args)
    assert fresh.returncode == 0
    assert_same_tables(read_reflections(str(out / "integrated.refl")),
                       read_reflections(str(tmp_path / "fresh" / "integrated.refl")))


def test_a_failing_block_keeps_the_others_and_the_rerun_resumes(dataset, tmp_path):
    broken, image, good_bytes = _with_a_truncated_image(dataset, tmp_path)
    out = tmp_path / "out"
    args = ("block.size=2", "block.units=frames", "profile.fitting=False")
    failed = run(broken, out, *args)
    assert failed.returncode == 2
    assert "image_00007.cbf" in failed.stderr and "Traceback" not in failed.stderr
    work = out / "integrated.refl.work"
    done = sorted(p.name for p in work.glob("block_*.modelled.refl"))
    # Blocks of 2 frames overlapping by 1: block 6 holds frames 6-7, image 7 is frame 6.
    assert "block_0000.modelled.refl" in done and "block_0006.modelled.refl" not in done
    # A block stores the columns it computed and the flags it changed, not the predictions it was given.
    stored = read_reflections(str(work / "block_0000.modelled.refl"))
    assert {"flags", "intensity.sum.value", "xyzobs.px.value"} <= set(stored.keys())
    assert not {"miller_index", "s1", "xyzcal.px", "bbox"} & set(stored.keys())
    assert not (out / "integrated.refl").exists()
    _assert_mended_rerun_resumes(broken, image, good_bytes, out, tmp_path, args, "already done (resumed)")


def test_a_killed_worker_is_replaced_and_the_table_is_unchanged(dataset, tmp_path):
    """kill -9 of a worker process mid-run: its block is recomputed elsewhere, the result is the same."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    args = ("block.size=1", "block.units=frames")
    reference = run(dataset, tmp_path / "reference", "nproc=1", *args)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    out.mkdir()
    env = dict(os.environ, BRAGGINT_PROGRESS="1")
    process = subprocess.Popen([sys.executable, "-m", "braggint.cli.integrate", str(dataset / "models.expt"),
                                str(dataset / "strong.refl"), "nproc=2", *args], cwd=out, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        # Worker processes are forked by the run's helper process, the command's child (pipeline/local_workers);
        # kill one once blocks are under way.
        work = out / "integrated.refl.work"
        started = list(work.glob("block_*")) if work.exists() else []
        try:
            workers = [worker for helper in psutil.Process(process.pid).children() for worker in helper.children()]
        except psutil.NoSuchProcess:
            workers = []
        if started and workers:
            killed = workers[0].pid
            os.kill(killed, 9)
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed"
    assert process.returncode == 0, stderr
    # The progress bar was drawn (forced on: stderr is a pipe here).
    assert "modelling and summation [" in stderr and "blocks" in stderr
    log = (out / "dials.integrate.log").read_text()
    assert f":{killed}" not in log.split("profile fitting")[-1]  # the dead worker ran nothing afterwards
    assert_same_tables(read_reflections(str(out / "integrated.refl")),
                       read_reflections(str(tmp_path / "reference" / "integrated.refl")))


def test_profile_validation_holds_out_each_partition_and_changes_no_intensity(dataset, tmp_path):
    plain = run(dataset, tmp_path / "plain")
    validated = run(dataset, tmp_path / "validated", "profile.validation.number_of_partitions=3",
                    "profile.validation.min_partition_size=20")
    assert plain.returncode == 0 and validated.returncode == 0, validated.stderr
    a = read_reflections(str(tmp_path / "plain" / "integrated.refl"))
    b = read_reflections(str(tmp_path / "validated" / "integrated.refl"))
    # Each reference is in exactly one of 3 partitions of near-equal size; other rows are in none.
    folds = np.asarray(b["profile.index"])
    assert set(np.unique(folds)) == {-1, 0, 1, 2}
    sizes = np.bincount(folds[folds >= 0])
    assert sizes.max() - sizes.min() <= 1 + 0.1 * sizes.mean()  # partial pieces share their row's fold
    del b["profile.index"]
    assert_same_tables(a, b)
    log = (tmp_path / "validated" / "dials.integrate.log").read_text()
    rows = log.split("Profile validation (each partition")[1].split("\n\n")[0].splitlines()[3:]
    assert len(rows) == 3
    for row in rows:
        _, _, tested, fitted, cc_out, cc_in, _, _ = row.split()
        assert 0 < int(fitted) <= int(tested)
        # Profiles that never saw a reflection fit it no better than profiles that did.
        assert 0.5 < float(cc_out) <= float(cc_in) + 0.005
    too_few = run(dataset, tmp_path / "too_few", "profile.validation.number_of_partitions=3",
                  "profile.validation.min_partition_size=1000")
    assert too_few.returncode == 0
    log = (tmp_path / "too_few" / "dials.integrate.log").read_text()
    assert "Too few reference reflections" in log and "Profile validation (" not in log


def test_rows_fitted_in_the_first_pass_get_what_the_second_pass_gives(dataset, tmp_path, monkeypatch):
    """Rows whose reference profiles only their own block teaches are fitted in the first pass; leaving
    every row to the second pass instead (no profile counted as local, or no memory to wait in) gives
    the same table."""
    from braggint.cli import integrate as cli
    from braggint.pipeline import integrate as pipeline
    from braggint.pipeline import streamed_fitting

    # Profiles one frame apart in z and blocks of 4 frames: some profiles are taught by one block, some by two.
    args = [str(dataset / "models.expt"), str(dataset / "strong.refl"), "block.size=4", "block.units=frames",
            "profile.gaussian_rs.fitting.scan_step=0.5"]
    fitted_first = {}
    for name in ("streamed", "no room to wait", "stored"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        if name == "no room to wait":  # the rows that would wait for their profiles go to the store
            monkeypatch.setattr(streamed_fitting, "WAITING_BYTES", 0)
        if name == "stored":
            monkeypatch.setattr(pipeline, "block_local_profiles", lambda tables, *_: [{} for _ in tables])
        assert cli.main(args) == 0
        log = (tmp_path / name / "dials.integrate.log").read_text()
        counts = re.search(r"Fitted (\d+) of (\d+) reflections in the first pass.*; (\d+) of (\d+) blocks", log)
        fitted_first[name] = [int(value) for value in counts.groups()]
    fitted, total, second, blocks = fitted_first["streamed"]
    assert 0 < fitted < total and 0 < second <= blocks
    assert fitted_first["stored"] == fitted_first["no room to wait"] == [0, total, blocks, blocks]
    for name in ("no room to wait", "stored"):
        assert_same_tables(read_reflections(str(tmp_path / "streamed" / "integrated.refl")),
                           read_reflections(str(tmp_path / name / "integrated.refl")))


def test_the_strong_spots_are_freed_before_the_blocks_run(dataset, tmp_path, monkeypatch):
    """The strong spots (with their shoeboxes, the size of the input file) are needed only to build the
    profile model: nothing holds them while the blocks run, and their shoeboxes' background (the spot
    finder's, which integration never reads) is not asked for."""
    import gc
    import weakref

    from braggint.cli import integrate as cli
    from braggint.pipeline import integrate as pipeline

    read, run_blocks = cli.read_reflections, pipeline.run_blocks
    strong, alive, backgrounds = [], [], []

    def reading(path, *options):
        table = read(path, *options)
        strong.append(weakref.ref(table))
        backgrounds.append(options)
        return table

    def running(*args, **kwargs):
        gc.collect()
        alive.append(strong[0]() is not None)
        return run_blocks(*args, **kwargs)

    monkeypatch.setattr(cli, "read_reflections", reading)
    monkeypatch.setattr(pipeline, "run_blocks", running)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(dataset / "models.expt"), str(dataset / "strong.refl")]) == 0
    assert len(strong) == 1 and alive == [False] and backgrounds == [(False,)]


def test_local_workers_start_with_the_block_tasks_readers_imported_and_without_dashboard_sampling():
    """Workers forked from the command's helper process (pipeline/local_workers) already hold the block tasks
    and braggint's CBF reader, before any task runs, but neither fabio, which only blocks reading other
    image files import, nor Zarr, which only blocks that store rows import; their event loops neither sample
    the block task's stack nor poll their memory more than once a second (see QUIET_WORKER_SETTINGS); and a
    new thread of theirs (as a block task's is) allocates from glibc's one main heap, none of its own (read
    from glibc's malloc_info).  Run as the command runs: in a fresh process that has imported the command's
    modules."""
    import json
    import subprocess
    import sys

    script = """
import ctypes, json, os, sys, tempfile, threading
import braggint.cli.integrate
from braggint.params import ParameterSet, integrate_master_text
from braggint.pipeline.executor import scheduler

def heaps():
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "malloc_info.xml").encode()
        stream = libc.fopen(path, b"w")
        libc.malloc_info(0, stream)
        libc.fclose(ctypes.c_void_p(stream))
        return open(path).read().count("<heap nr=")

def state(dask_worker):
    callbacks = dask_worker.periodic_callbacks
    modules = ("fabio", "zarr", "braggint.io.cbf", "braggint.pipeline.block_tasks")
    held = []
    thread = threading.Thread(target=lambda: held.append(bytearray(1 << 20)))
    thread.start()
    thread.join()
    return (sorted(m for m in modules if m in sys.modules),
            "profile" in callbacks, min(callbacks[name].callback_time for name in ("tick", "memory_monitor")),
            heaps())

params = ParameterSet.from_text(integrate_master_text(), "integrate.phil")
params.assign("integration.mp.nproc", "2")
with scheduler(params.extract().integration.mp) as workers:
    print(json.dumps(list(workers.on_every_worker(state).values())))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    states = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(states) == 2
    assert all(modules == ["braggint.io.cbf", "braggint.pipeline.block_tasks"] and not sampling
               and shortest_ms >= 1000 and heaps == 1 for modules, sampling, shortest_ms, heaps in states)


def test_the_workers_helper_knows_the_processors_name_before_it_starts_any_worker():
    """Distributed's scheduler asks platform for the processor's name (a `uname -p` child) when the first
    worker registers, while the nannies fork the others from other threads; a worker forked then holds that
    child's output pipe and the scheduler waits for ever.  ``executor.local_cluster``, which the helper's start
    calls, asks first, single-threaded, so the scheduler finds the answer cached by the time the cluster
    starts.  Run in a fresh process, where nothing else has asked."""
    import subprocess
    import sys

    script = """
import platform
import distributed
import braggint.cli.integrate
from braggint.pipeline import local_workers

def instead_of_the_cluster(*args, **kwargs):
    print("cached" if "processor" in vars(platform.uname()) else "not cached")
    raise SystemExit(0)

distributed.LocalCluster = instead_of_the_cluster
local_workers._start_cluster(1, 2, (), "fork")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "cached"


def test_blocks_running_at_once_exchange_profile_sums_instead_of_a_second_pass(dataset, tmp_path):
    """Blocks on as many workers publish their profile sums and fit every row in the first pass; one worker
    running the same blocks one after the other leaves the shared rows to the second pass: same table."""
    args = ("block.size=4", "block.units=frames", "profile.gaussian_rs.fitting.scan_step=0.5")
    counts = {}
    for name in ("one after the other", "together"):
        workers = f"nproc={counts['one after the other'][3]}" if counts else "nproc=1"
        result = run(dataset, tmp_path / name, workers, *args)
        assert result.returncode == 0, result.stderr
        log = (tmp_path / name / "dials.integrate.log").read_text()
        found = re.search(r"Fitted (\d+) of (\d+) reflections in the first pass.*; (\d+) of (\d+) blocks", log)
        counts[name] = [int(value) for value in found.groups()]
    fitted, total, second, blocks = counts["one after the other"]
    assert blocks > 1 and fitted < total and second > 0
    assert counts["together"] == [total, total, 0, blocks]
    assert_same_tables(read_reflections(str(tmp_path / "together" / "integrated.refl")),
                       read_reflections(str(tmp_path / "one after the other" / "integrated.refl")))


def test_a_block_that_does_not_see_the_others_sums_leaves_its_rows_to_the_second_pass(tmp_path):
    """all_blocks_sums gives up after its timeout when a block's sums are missing; with every block's there
    it reduces them in block order, as the parent does."""
    from braggint.pipeline.profile_exchange import all_blocks_sums, load_profile_sums, save_profile_sums
    from braggint.pipeline.reduction import add_arrays, tree_reduce
    from braggint.pipeline.work_store import WorkStore

    store = WorkStore(str(tmp_path / "work"), "digest")
    rng = np.random.default_rng(5)
    sums = [{0: (rng.random((1, 3, 2, 2, 2)), rng.random((1, 3)))} for _ in range(3)]
    save_profile_sums(store, 0, sums[0])  # as model_block publishes its own before it gathers
    assert all_blocks_sums(store, 0, sums[0], (0, 1, 2), timeout=0.05) is None
    assert set(load_profile_sums(store, 0)) == {0}
    save_profile_sums(store, 1, sums[1])
    save_profile_sums(store, 2, {})  # a block whose strong spots teach nothing
    reduced = all_blocks_sums(store, 0, sums[0], (0, 1, 2), timeout=5)
    expected = tree_reduce([sums[0], sums[1], {}], add_arrays)
    assert np.array_equal(reduced[0][0], expected[0][0]) and np.array_equal(reduced[0][1], expected[0][1])
    np.testing.assert_allclose(reduced[0][0], sums[0][0][0] + sums[1][0][0])


def test_blocks_exchanging_sums_do_not_wait_for_a_failed_block(dataset, tmp_path):
    """A block that fails marks itself in the work store; the others stop waiting for its sums, leave their
    shared rows to the second pass and keep their results; the rerun resumes and gives the fresh table."""
    broken, image, good_bytes = _with_a_truncated_image(dataset, tmp_path)
    args = ("nproc=3", "block.size=4", "block.units=frames", "profile.gaussian_rs.fitting.scan_step=0.5")
    out = tmp_path / "out"
    failed = run(broken, out, *args)
    assert failed.returncode == 2 and "image_00007.cbf" in failed.stderr
    work = out / "integrated.refl.work"
    assert [p.name for p in work.glob("*.exchange_failed")] == ["block_0002.exchange_failed"]
    assert sorted(p.name for p in work.glob("block_*.modelled.refl")) == ["block_0000.modelled.refl",
                                                                          "block_0001.modelled.refl"]
    _assert_mended_rerun_resumes(broken, image, good_bytes, out, tmp_path, args,
                                 "2 of 3 blocks were already done (resumed)")


def test_the_last_block_reads_its_frames_backwards_and_gets_what_reading_forwards_gives(dataset, tmp_path,
                                                                                       monkeypatch):
    """The last block of a sweep cut into several reads from its last frame to its first (so that the rows
    next to the block before it, whose profiles both teach, come last in both); the others read forwards.
    Reading every block forwards gives the same table."""
    import dataclasses

    from braggint.cli import integrate as cli
    from braggint.pipeline import blocks, filling
    from braggint.pipeline import integrate as pipeline

    frames_read = {"backwards": [], "forwards": []}
    read_frame = filling.read_frame
    args = [str(dataset / "models.expt"), str(dataset / "strong.refl"), "nproc=1", "block.size=4",
            "block.units=frames", "profile.gaussian_rs.fitting.scan_step=0.5"]
    for name, frames in frames_read.items():
        monkeypatch.setattr(filling, "read_frame",
                            lambda images, frame, *rest: frames.append(frame) or read_frame(images, frame, *rest))
        if name == "forwards":
            monkeypatch.setattr(pipeline, "plan_blocks", lambda *a, **k: [
                dataclasses.replace(block, backwards=False) for block in blocks.plan_blocks(*a, **k)])
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert cli.main(args) == 0
    log = (tmp_path / "backwards" / "dials.integrate.log").read_text()
    ranges = [tuple(map(int, text.split("-"))) for text in
              re.search(r"in \d+ block\(s\) of frames: (.*)", log).group(1).split(", ")]
    assert len(ranges) > 1
    forwards = [frame for first, last in ranges for frame in range(first, last + 1)]
    (first, last) = ranges[-1]
    assert frames_read["forwards"] == forwards
    assert frames_read["backwards"] == forwards[:-(last - first + 1)] + list(range(last, first - 1, -1))
    assert_same_tables(read_reflections(str(tmp_path / "backwards" / "integrated.refl")),
                       read_reflections(str(tmp_path / "forwards" / "integrated.refl")))


def test_a_worker_that_dies_while_starting_is_started_again_and_one_that_always_dies_is_one_line(
        dataset, tmp_path, monkeypatch):
    """A worker process that dies while the local cluster starts (here: a Dask worker preload script that
    exits, the first time only) fails that start; the run tries once more and integrates.  Workers that
    die every time end the run with one line naming integration.mp.nproc, no traceback."""
    marker = tmp_path / "died"
    once = tmp_path / "die_once.py"
    once.write_text(f"import os\ntry:\n    os.close(os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL))\n"
                    "except FileExistsError:\n    pass\nelse:\n    os._exit(3)\n")
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PRELOAD", f'["{once}"]')
    recovered = run(dataset, tmp_path / "once", "nproc=2", "profile.fitting=False")
    assert recovered.returncode == 0, recovered.stderr
    assert marker.exists()
    log = (tmp_path / "once" / "dials.integrate.log").read_text()
    assert "The local Dask workers did not start" in log and "trying again" in log
    assert "Started 2 local Dask workers" in log and "Integrated" in log

    always = tmp_path / "die_always.py"
    always.write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PRELOAD", f'["{always}"]')
    failed = run(dataset, tmp_path / "always", "nproc=2", "profile.fitting=False")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    message = failed.stderr.strip().splitlines()[-1]
    assert "integration.mp.nproc=2" in message and "did not start after 2 tries" in message
    assert not (tmp_path / "always" / "integrated.refl").exists()


def test_each_block_asks_for_its_images_ahead_of_reading_them(dataset, tmp_path, monkeypatch):
    """A block asks the operating system to start reading each image's file (posix_fadvise WILLNEED)
    ``READ_AHEAD_IMAGES`` images before it reads it, in its own reading order (backwards for the last
    block), so that the disk works while the images before it are processed."""
    import os

    from braggint.cli import integrate as cli
    from braggint.pipeline import filling

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    blocks = []
    read_frame, fadvise, filled_groups = filling.read_frame, os.posix_fadvise, filling._filled_groups

    def hinted(descriptor, offset, length, advice):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{descriptor}"))
        if advice == os.POSIX_FADV_WILLNEED:
            blocks[-1].append(("ask", int(re.search(r"(\d+)\.cbf$", name).group(1)) - 1))
        return fadvise(descriptor, offset, length, advice)

    def each_block(*arguments):
        blocks.append([])
        yield from filled_groups(*arguments)

    monkeypatch.setattr(os, "posix_fadvise", hinted)
    monkeypatch.setattr(filling, "_filled_groups", each_block)
    monkeypatch.setattr(filling, "read_frame",
                        lambda images, frame, *rest: blocks[-1].append(("read", frame)) or read_frame(images, frame,
                                                                                                   *rest))
    ahead = 2
    monkeypatch.setattr(filling, "READ_AHEAD_IMAGES", ahead)
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(dataset / "models.expt"), str(dataset / "strong.refl"), "nproc=1", "block.size=4",
                     "block.units=frames"]) == 0
    assert len(blocks) > 1
    for events in blocks:
        asked = [frame for kind, frame in events if kind == "ask"]
        read = [frame for kind, frame in events if kind == "read"]
        assert asked == read  # each image asked for once, in reading order
        for position, frame in enumerate(read):
            reads_before_asking = [kind for kind, _ in events[:events.index(("ask", frame))]].count("read")
            assert reads_before_asking == max(position - ahead, 0)
    assert blocks[-1][-1] == ("read", min(frame for _, frame in blocks[-1]))  # the last block reads backwards
