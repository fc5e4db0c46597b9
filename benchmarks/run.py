"""braggint benchmarks: decode floor, throughput, scaling, memory, stage breakdown, DIALS side by side.

    python benchmarks/run.py [--cases small,sweep100,sweep400] [--workers 1,2] [--no-dials]
                             [--data benchmarks/data] [--out benchmarks/results]

Datasets are simulated on demand into ``--data`` (never committed) and
reused.  Every case is measured in the same run: the time to read and
decode every image (the floor), braggint's wall time and peak memory
(whole process tree) per worker count, DIALS 3.12.1's on the same input
when ``dials.integrate`` is on PATH, and the accuracy of both against the
simulator's truth.  One JSON record per run is written to ``--out``;
``--report`` renders docs/performance.md from the latest record.  The
record is rewritten (atomically) after each case, so an interrupted run
keeps the cases it measured; a case that fails is reported, the others
still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import braggint  # noqa: E402
from braggint import __version__  # noqa: E402
from braggint.io.atomic import atomic_open  # noqa: E402
from braggint.io.expt import read_experiments  # noqa: E402
from braggint.io.images import ImageSource  # noqa: E402
from braggint.io.refl import read_reflections  # noqa: E402
from braggint.models.flags import Flags  # noqa: E402
from braggint.pipeline.heap import tune_heap  # noqa: E402
from braggint.simulate import PRESETS, simulate  # noqa: E402

CASES = {
    "small": PRESETS["small"],
    "sweep100": PRESETS["small"].replace(n_images=100, seed=1),
    "sweep400": PRESETS["small"].replace(n_images=400, seed=1),
    "large": PRESETS["large"],
}


def dataset(name: str, root: Path) -> Path:
    directory = root / name
    if not (directory / "truth.refl").exists():
        spec = CASES[name]
        print(f"simulating {name} ({spec.n_images} images of {spec.nx} x {spec.ny}) ...", flush=True)
        result = simulate(spec, str(directory))
        (directory / "simulation.json").write_text(json.dumps({"seconds": result.seconds}))
    return directory


def decode_floor(directory: Path, passes: int = 2) -> float:
    """Seconds to read and decode every image once (one core, freed buffers reused and each frame decoded
    into the memory of the one before, as block tasks read): the faster of two
    passes, so that a first pass reading the files from disk rather than the page cache does not raise
    the floor.

    The heap is set up as block tasks set it (``pipeline/heap.tune_heap``): by default each decoded frame
    would be a new mmap whose pages the kernel must zero, which took 10 ms of a 2M-like frame's 14 ms here,
    a cost no reader has to pay."""
    tune_heap()
    experiment = read_experiments(str(directory / "models.expt"))[0]
    images = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0],
                         reuse_frames=True)
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        for number in range(experiment.scan.image_range[0], experiment.scan.image_range[1] + 1):
            images.raw(number)
        seconds.append(time.perf_counter() - start)
    return min(seconds)


#: One process of :func:`parallel_decode`: waits until the shared start time, then reads and decodes its
#: share of the frames (contiguous, as a block task does) and prints the seconds that took.
DECODE_SHARE = """
import sys, time
sys.path.insert(0, {repo!r})
sys.path.insert(0, {benchmarks!r})
from braggint.io.expt import read_experiments
from braggint.io.images import ImageSource
from braggint.pipeline.heap import tune_heap
tune_heap()
experiment = read_experiments({expt!r})[0]
images = ImageSource(experiment.imageset, experiment.detector, experiment.scan.image_range[0], reuse_frames=True)
first, last = experiment.scan.image_range
numbers = list(range(first, last + 1))
share = numbers[len(numbers) * {k} // {n}:len(numbers) * ({k} + 1) // {n}]
while time.time() < {start}:
    time.sleep(0.001)
t = time.perf_counter()
for number in share:
    images.raw(number)
print(time.perf_counter() - t)
"""


def parallel_decode(directory: Path, workers: list[int], repeats: int = 3) -> dict:
    """``{n: efficiency}`` of reading and decoding the sweep in n processes at once, each its contiguous
    share of the frames: the one-process time / (n x the slowest share's time), each the best of
    ``repeats`` tries.  The ceiling for n block tasks reading images on this machine (shared memory
    bandwidth and caches, virtual cores)."""
    def slowest(n: int) -> float:
        start = time.time() + 2.0  # after every process has imported braggint
        processes = [subprocess.Popen([sys.executable, "-c", DECODE_SHARE.format(
            repo=str(REPO), benchmarks=str(REPO / "benchmarks"), expt=str(directory / "models.expt"), k=k, n=n,
            start=start)], stdout=subprocess.PIPE, text=True) for k in range(n)]
        return max(float(p.communicate()[0]) for p in processes)

    slowest(1)  # the images into the page cache
    alone = min(slowest(1) for _ in range(repeats))
    return {str(n): alone / (n * min(slowest(n) for _ in range(repeats))) for n in workers if n > 1}


def timed(command: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Wall seconds, peak resident memory (largest process of the tree), CPU seconds (user and system) and
    minor page faults of a command, its processes and those they waited for (``/usr/bin/time``; a run's
    local workers are children of its helper process, which the command waits for)."""
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M %U %S %R", *command], cwd=cwd, capture_output=True,
                            text=True, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    peak_kb, user, system, faults = result.stderr.strip().splitlines()[-1].split()
    return {"wall_s": wall, "peak_rss_mb": int(peak_kb) / 1024, "cpu_user_s": float(user),
            "cpu_system_s": float(system), "minor_faults": int(faults)}


def cpu_seconds(run: dict) -> float | None:
    """User and system CPU seconds of a run (None in records from before 2026-12-05, which lack them)."""
    if "cpu_user_s" not in run:
        return None
    return run["cpu_user_s"] + run["cpu_system_s"]


#: Stages of braggint's log lines "Wall time by stage: ..." (parent) and "Block-task time by stage ...".
STAGE_LINES = {"wall": r"Wall time by stage: (.*); total", "blocks": r"Block-task time by stage \(summed over blocks\): (.*)"}


def stage_times(log: str) -> dict:
    """``{"wall": {stage: s}, "blocks": {stage: s}}`` from braggint's log."""
    out = {}
    for kind, pattern in STAGE_LINES.items():
        match = re.search(pattern, log)
        out[kind] = {name.strip(): float(seconds) for name, seconds in
                     re.findall(r"([a-z ]+) ([0-9.]+) s", match.group(1))} if match else {}
    return out


def whole_reflections(table, kinds: list[str]) -> dict:
    """Each reflection's pieces (rows sharing ``partial_id``: a reflection cut at block ends) summed, as
    downstream tools sum them: ``{"first": its first row, "pieces": how many, "integrated": every piece
    flagged integrated each way, "<kind>.value" / "<kind>.variance": summed}``, one entry per reflection."""
    pieces = table["partial_id"] if "partial_id" in table else np.arange(table.nrows)
    _, first, inverse, counts = np.unique(pieces, return_index=True, return_inverse=True, return_counts=True)
    failed = ~table.get_flags(Flags.integrated_sum)
    if "prf" in kinds:
        failed |= ~table.get_flags(Flags.integrated_prf)
    out = {"first": first, "pieces": counts,
           "integrated": np.bincount(inverse, weights=failed, minlength=len(first)) == 0}
    for kind in kinds:
        for part in ("value", "variance"):
            out[f"{kind}.{part}"] = np.bincount(inverse, weights=table[f"intensity.{kind}.{part}"],
                                                minlength=len(first))
    return out


def accuracy(integrated: Path, truth: Path) -> dict:
    """Against the simulator's truth, fully recorded reflections integrated each way the table has.

    Correlation and median relative error are over the strong reflections,
    the RMS error over the weak ones, both judged by I_true / sigma_sum.
    Summation compares each reflection with its pieces summed.  Profile
    fitting compares the reflections left whole: a piece's fit to the part
    of the profile its frames cover estimates the whole intensity (in DIALS
    too), so pieces' fits do not add up.
    """
    table, true = read_reflections(str(integrated)), read_reflections(str(truth))
    kinds = [kind for kind in ("sum", "prf") if f"intensity.{kind}.value" in table]
    whole = whole_reflections(table, kinds)
    first = whole["first"]
    key = {(tuple(h), bool(e)): i for i, (h, e) in enumerate(zip(true["miller_index"], true["entering"]))}
    rows = np.array([key.get((tuple(h), bool(e)), -1)
                     for h, e in zip(table["miller_index"][first], table["entering"][first])])
    known = rows >= 0
    full = known & (true["partiality.true"][np.where(known, rows, 0)] > 0.99) & whole["integrated"]
    out = {"n": int(full.sum()), "cut": int((full & (whole["pieces"] > 1)).sum())}
    for kind in kinds:
        use = full if kind == "sum" else full & (whole["pieces"] == 1)
        target = true["intensity.true"][rows[use]]
        value = whole[f"{kind}.value"][use]
        sigma = np.sqrt(whole[f"{kind}.variance"][use])
        # Strong and weak by the summation sigma, which programs agree on: by each kind's own sigma, a program
        # with smaller profile-fit sigmas would be judged on more, weaker reflections.
        signal_to_noise = target / np.sqrt(whole["sum.variance"][use])
        strong, weak = signal_to_noise > 5, signal_to_noise < 3
        out[kind] = {
            "correlation": float(np.corrcoef(value[strong], target[strong])[0, 1]),
            "median_relative_error": float(np.median(np.abs(value - target)[strong] / target[strong])),
            "sd_normalised_error": float(np.std((value - target) / sigma)),
            "rms_error_weak": float(np.sqrt(np.mean((value - target)[weak] ** 2))),
        }
    return out


#: braggint runs of each configuration; the fastest is kept (this machine's speed drifts within minutes, and
#: a neighbour's load can slow one run by a third: with two runs, both of sweep400 on two workers took 8.5 s
#: where alternating runs of the same code took 6.7-8.2 s).  DIALS runs once: its runs take minutes.
BRAGGINT_REPEATS = 3


def run_braggint(directory: Path, inputs: list[str], configurations: dict[str, list[str]]) -> dict[str, dict]:
    """The fastest of :data:`BRAGGINT_REPEATS` braggint.integrate runs of each configuration (label ->
    options), in ``directory/label``: wall time, peaks, stages, accuracy (``walls_s``: every run's wall time).

    The runs go in rounds, each configuration once a round, so that a slow phase of the machine falls on
    all of them alike: run one after another, one worker's three runs met a phase 1.4x slower than the
    two workers' (decode floor 1.75 s against 1.25-1.31 s), and the efficiency read 81 % for 57-68 %.
    """
    runs: dict[str, list[dict]] = {label: [] for label in configurations}
    for _ in range(BRAGGINT_REPEATS):
        for label, options in configurations.items():
            runs[label].append(_run_braggint_once(directory, inputs, options, label))
    fastest = {}
    for label, label_runs in runs.items():
        best = fastest[label] = min(label_runs, key=lambda run: run["wall_s"])
        best["walls_s"] = [run["wall_s"] for run in label_runs]
        walls = ", ".join(f"{wall:.1f}" for wall in best["walls_s"])
        print(f"{directory.name} braggint {label}: {best['wall_s']:.1f} s (fastest of {walls}), "
              f"{best['peak_rss_mb']:.0f} MB", flush=True)
    return fastest


def _run_braggint_once(directory: Path, inputs: list[str], options: list[str], label: str) -> dict:
    """One braggint.integrate run in ``directory/label``: wall time, peaks, stages, accuracy."""
    work = directory / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # Each run is set against the mean of the floors measured just before and just after it.
    before = decode_floor(directory, passes=1)
    measured = timed([str(Path(sys.executable).parent / "braggint.integrate"), *inputs, *options], work)
    after = decode_floor(directory, passes=1)
    measured["decode_floor_s"] = (before + after) / 2
    measured["decode_floor_before_after_s"] = [before, after]
    log_text = (work / "dials.integrate.log").read_text()
    measured["stages"] = stage_times(log_text)
    worker_peak = re.search(r"Largest peak memory of a block task: ([0-9.]+) MB", log_text)
    measured["block_peak_mb"] = float(worker_peak.group(1)) if worker_peak else None
    measured["accuracy"] = accuracy(work / "integrated.refl", directory / "truth.refl")
    measured["integrated"] = read_reflections(str(work / "integrated.refl")).nrows
    return measured


def run_dials(directory: Path, inputs: list[str], options: list[str], label: str) -> dict:
    work = directory / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    measured = timed(["dials.integrate", *inputs, *options], work)
    measured["accuracy"] = accuracy(work / "integrated.refl", directory / "truth.refl")
    measured["integrated"] = read_reflections(str(work / "integrated.refl")).nrows
    print(f"{directory.name} DIALS {label}: {measured['wall_s']:.1f} s, {measured['peak_rss_mb']:.0f} MB", flush=True)
    return measured


#: Summation only (no profile modelling or fitting), for both programs.
SUMMATION_ONLY = "profile.fitting=False"


#: One process of :func:`fresh_memory_cost`: waits until the shared start time, then writes to
#: :data:`PROBE_MB` MB of memory it has never touched and prints the seconds that took.
TOUCH_FRESH = """
import time
import numpy as np
while time.time() < {start}:
    time.sleep(0.001)
t = time.perf_counter()
np.ones({megabytes} << 20, np.uint8)
print(time.perf_counter() - t)
"""
#: Megabytes each probe of :func:`fresh_memory_cost` touches: about what a block task adds to its
#: interpreter and libraries.
PROBE_MB = 128


def fresh_memory_cost(workers: list[int]) -> dict:
    """``{n: milliseconds per MB}`` for n fresh processes at once each writing :data:`PROBE_MB` MB of memory
    they have never touched (the slowest one).  A process's first touch of a page costs the kernel a fault
    and a zeroed page, and a virtual machine whose host reclaims its freed memory a host fault too: every
    block task pays it for its heap, and on some machines two processes pay it one after the other."""
    def slowest(n: int) -> float:
        start = time.time() + 1.0  # after every process has imported numpy
        processes = [subprocess.Popen([sys.executable, "-c", TOUCH_FRESH.format(start=start, megabytes=PROBE_MB)],
                                      stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return max(float(p.communicate()[0]) for p in processes)

    return {str(n): 1000.0 * slowest(n) / PROBE_MB for n in workers}


def run_case(name: str, data: Path, workers: list[int], with_dials: bool) -> dict:
    """Every measurement of one case: braggint with and without profile fitting per worker count, DIALS
    likewise (summation only on one core), the decode floor and accuracy."""
    directory = dataset(name, data)
    spec = CASES[name]
    record = {"case": name, "images": spec.n_images, "detector": [spec.nx, spec.ny],
              "fresh_memory_ms_per_mb": fresh_memory_cost(workers),  # first: its pages are reclaimed meanwhile
              "decode_floor_s": decode_floor(directory), "parallel_decode": parallel_decode(directory, workers),
              "braggint": {}, "braggint_sum": {}, "dials": {}, "dials_sum": {}}
    simulation = directory / "simulation.json"
    if simulation.exists():
        record["simulation_s"] = json.loads(simulation.read_text())["seconds"]
    inputs = [str(directory / "models.expt"), str(directory / "strong.refl")]
    d_min = f"prediction.d_min={spec.d_min}"
    configurations = {}
    for n in workers:
        nproc = f"integration.mp.nproc={n}"
        configurations[f"braggint_n{n}"] = [d_min, nproc]
        configurations[f"braggint_sum_n{n}"] = [d_min, nproc, SUMMATION_ONLY]
    fastest = run_braggint(directory, inputs, configurations)
    record["braggint_in_rounds"] = True
    for n in workers:
        record["braggint"][str(n)] = fastest[f"braggint_n{n}"]
        record["braggint_sum"][str(n)] = fastest[f"braggint_sum_n{n}"]
        if with_dials:
            record["dials"][str(n)] = run_dials(directory, inputs, [d_min, f"nproc={n}"], f"dials_n{n}")
    if with_dials:
        record["dials_sum"]["1"] = run_dials(directory, inputs, [d_min, "nproc=1", SUMMATION_ONLY], "dials_sum_n1")
    return record


def warm_up(data: Path) -> None:
    """One untimed summation-only and one profile-fitting run of the small case, so that numba's compiled
    kernels are in its cache before anything is timed (a first run after installing compiles them).

    braggint's modules are byte-compiled first, as installing a wheel does: an editable install where
    ``PYTHONDONTWRITEBYTECODE`` is set (this project's machines) has no ``.pyc`` files, and every process
    of every run then compiled about 70 modules from source (0.03-0.04 s a process).
    """
    compileall.compile_dir(str(Path(braggint.__file__).parent), quiet=1)
    directory = dataset("small", data)
    inputs = [str(directory / "models.expt"), str(directory / "strong.refl")]
    for options in ([SUMMATION_ONLY], []):
        work = directory / "warm_up"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        timed([str(Path(sys.executable).parent / "braggint.integrate"), *inputs,
               f"prediction.d_min={CASES['small'].d_min}", *options], work)


def processor(cpuinfo: str | None = None) -> str:
    """The processor the record was measured on, as ``/proc/cpuinfo`` names it (``cpuinfo``: its text, read
    when not given) with its family and model numbers: the machines these sessions run on change, and the
    same name covers processors of different speeds ("AMD EPYC", families 25 and 26).  Off Linux, what
    Python's ``platform.processor()`` says."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown processor"
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
               if fields.get(key)]
    return ", ".join([name, *numbers])


def source_state(repository: Path = REPO) -> dict | None:
    """The commit of the checkout the benchmark measures (``commit``) and whether its package differs from
    that commit (``modified``: edited, added or deleted files under ``braggint/``), so that a record can be
    traced to the code it measured; None outside a git checkout or without git."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(repository), *arguments], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "modified": bool(git("status", "--porcelain", "--", "braggint"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def versions() -> dict:
    import dask
    import numba

    out = {"braggint": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "dask": dask.__version__}
    dials = shutil.which("dials.version")
    if dials:
        text = subprocess.run([dials], capture_output=True, text=True).stdout
        match = re.search(r"DIALS ([0-9.]+)", text)
        out["dials"] = match.group(1) if match else text.strip()[:40]
    return out


def with_earlier_cases(results: Path) -> dict:
    """The newest record, plus each case it lacks from the newest earlier record that has it.

    Cases carried over keep the date they were measured (``measured``), which
    the report shows; a big case (``large``) is rarely rerun with the rest.
    """
    records = [json.loads(p.read_text()) for p in sorted(results.glob("benchmark-*.json"))]
    newest = records[-1]
    names = {case["case"] for case in newest["cases"]}
    for record in reversed(records[:-1]):
        for case in record["cases"]:
            if case["case"] not in names and "braggint_sum" in case:  # records before the summation-only runs differ
                newest["cases"].append(dict(case, measured=record["date"]))
                names.add(case["case"])
    return newest


#: Columns of the stage breakdown: (heading, where the seconds come from).
BREAKDOWN = [("start-up", None), ("input", ("wall", "input")), ("prediction", ("wall", "prediction")),
             ("worker start", ("wall", "worker start")), ("read/decode", ("blocks", "read")),
             ("extract", ("blocks", "extract")), ("background", ("blocks", "background")),
             ("summation", ("blocks", "summation")), ("grid mapping", ("blocks", "grid mapping")),
             ("profile modelling", ("blocks", "profile modelling")),
             ("store write", ("blocks", "write")), ("store read", ("blocks", "read back")),
             ("profile fitting", ("blocks", "profile fitting")), ("block overhead", None),
             ("worker stop", ("wall", "worker stop")), ("reduction", ("wall", "reduction")),
             ("output", ("wall", "output"))]


def pass_seconds(run: dict) -> float:
    """Wall seconds of a run's block passes (first and second), from its stage times."""
    wall = run["stages"].get("wall", {})
    return wall.get("first pass", 0.0) + wall.get("second pass", 0.0)


def breakdown(run: dict) -> list[float]:
    """Seconds per BREAKDOWN column, adding up to the run's wall time.

    start-up is the interpreter and imports (wall time before braggint's
    clock starts); block overhead is the passes' wall time not in any
    block stage (with one worker the blocks run in the parent, so the
    block stages are wall time too).
    """
    stages = run["stages"]
    wall, blocks = stages.get("wall", {}), stages.get("blocks", {})
    values = [(wall if where[0] == "wall" else blocks).get(where[1], 0.0) if where else 0.0
              for _, where in BREAKDOWN]
    values[[h for h, _ in BREAKDOWN].index("block overhead")] = pass_seconds(run) - sum(blocks.values())
    values[0] = run["wall_s"] - sum(wall.values())
    return values


def _runs(case: dict, program: str):
    """``(mode, workers, run)`` of one program in a case: profile fitting ("prf") and summation only."""
    for mode, key in (("prf", program), ("sum", f"{program}_sum")):
        for n, run in sorted(case.get(key, {}).items(), key=lambda item: int(item[0])):
            yield mode, int(n), run


def floor_of(case: dict, run: dict) -> float:
    """The decode floor a braggint run is set against: the one measured around it (records from
    2026-12-01 on), else the case's."""
    return run.get("decode_floor_s", case["decode_floor_s"])


#: What was found, fixed and tried on the hot path: prose kept beside the benchmark, included in the report.
HOT_PATH = REPO / "benchmarks" / "hot_path.md"


def hot_path_lines() -> list[str]:
    """:data:`HOT_PATH` without its title, its sections one level down (under the report's own section)."""
    text = HOT_PATH.read_text().split("\n", 1)[1].strip()
    return ["#" + line if line.startswith("## ") else line for line in text.split("\n")]


def efficiency_bound(one: dict, n: int, decode_efficiency: float) -> float:
    """The n-worker efficiency that one worker's run ``one`` allows on this machine.

    Its serial part (the wall time outside the block passes: start-up,
    input, prediction, reduction, output) runs as it is, and its passes are
    shared by n workers each as efficient as ``decode_efficiency``, that of
    decoding alone in n processes at once.
    """
    passes = pass_seconds(one)
    serial = one["wall_s"] - passes
    return one["wall_s"] / (n * (serial + passes / (n * decode_efficiency)))


#: Issue 9's goals for braggint's wall time over the decode floor, with profile fitting and summation only.
PRF_GOAL, SUM_GOAL = 3.0, 2.0


def goals(record: dict) -> list[str]:
    """Lines comparing issue 9's goals with this record, per case and worker count."""
    cores = record["machine"]["cores"]
    lines = ["## Against the goals", "",
             f"Goals: braggint / decode below {PRF_GOAL:g} with profile fitting and below {SUM_GOAL:g} summation "
             "only; scaling efficiency "
             "at least 80 % at 2 workers; block-task memory flat in sweep length.", "",
             "Decoding alone in n processes at once (each its contiguous share of the frames) is this machine's "
             "ceiling for n-worker efficiency: the column before last.  The last column is what a fresh process "
             "pays to write memory it has never touched, n processes at once (the slowest, measured at the "
             "case's start): a block task writes 100-150 MB of its heap afresh, and where this cost is "
             "milliseconds a MB (a virtual machine whose host takes back freed memory) it weighs on every run "
             "and most on runs whose workers start together.", "",
             "The bound columns are the efficiency one worker's run allows here: its serial part (all but the "
             "block passes: start-up, input, prediction, reduction, output) as it is, and its passes shared by "
             "n workers each as efficient as decoding alone (`efficiency_bound` in `benchmarks/run.py`).", "",
             "The CPU columns are the run's CPU seconds (user and system, every process) over its decode floor. "
             "C cores can at most be busy all through a run, so a run's wall time / decode ratio is at least its "
             f"CPU / decode ratio over C: below the goal of g only if CPU / decode is below C x g (here C = "
             f"{cores}: {cores * PRF_GOAL:g} with profile fitting, {cores * SUM_GOAL:g} summation only).  A run "
             "above that cannot meet its goal on this machine however its work is shared out; only less work "
             "can.", "",
             "| case | workers | braggint / decode, prf | braggint / decode, sum | CPU / decode, prf | "
             "CPU / decode, sum | efficiency, prf | efficiency, sum | bound, prf | bound, sum "
             "| efficiency of decoding alone | fresh memory, ms/MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in record["cases"]:
        for n in sorted(case["braggint"], key=int):
            modes = [case.get(key, {}) for key in ("braggint", "braggint_sum")]  # prf, then sum
            decode = case.get("parallel_decode", {}).get(n)
            cells = [f"{runs[n]['wall_s'] / floor_of(case, runs[n]):.1f}" if n in runs else "-" for runs in modes]
            cpus = [(cpu_seconds(runs[n]), runs[n]) if n in runs else (None, None) for runs in modes]
            cells += [f"{cpu / floor_of(case, run):.1f}" if cpu is not None else "-" for cpu, run in cpus]
            cells += [f"{runs['1']['wall_s'] / (int(n) * runs[n]['wall_s']):.0%}" if "1" in runs and n in runs
                      else "-" for runs in modes]
            cells += [f"{efficiency_bound(runs['1'], int(n), decode):.0%}"
                      if "1" in runs and decode and "wall" in runs["1"].get("stages", {}) else "-" for runs in modes]
            cells.append(f"{decode:.0%}" if decode else "-")
            fresh = case.get("fresh_memory_ms_per_mb", {}).get(n)
            cells.append(f"{fresh:.2f}" if fresh is not None else "-")
            lines.append(f"| {case['case']} | {n} | " + " | ".join(cells) + " |")
    return lines + flat_memory(record)


#: The two cases of one detector whose block peaks show whether memory stays flat in sweep length.
FLAT_MEMORY_CASES = ("sweep100", "sweep400")


def flat_memory(record: dict) -> list[str]:
    """Lines with the block-task peaks of :data:`FLAT_MEMORY_CASES` side by side, per mode and worker count
    (none when the record lacks either case)."""
    cases = {case["case"]: case for case in record["cases"]}
    if not all(name in cases for name in FLAT_MEMORY_CASES):
        return []
    short, long = (cases[name] for name in FLAT_MEMORY_CASES)
    lines = ["", f"Block-task peak memory from {short['images']} to {long['images']} images of the same detector "
             "(the memory goal):", ""]
    before = {(mode, n): run for mode, n, run in _runs(short, "braggint")}
    for mode, n, run in _runs(long, "braggint"):
        first = before.get((mode, n))
        if not (first and first.get("block_peak_mb") and run.get("block_peak_mb")):
            continue
        low, high = first["block_peak_mb"], run["block_peak_mb"]
        lines.append(f"- {mode}, {n} worker{'s' if n > 1 else ''}: {low:.0f} -> {high:.0f} MB "
                     f"({(high - low) / low:+.0%})")
    return lines


def _walls(record: dict) -> list[float]:
    """Every run's wall time of the record's first braggint configuration (one, before repeats)."""
    run = record["cases"][0]["braggint"]["1"]
    return run.get("walls_s", [run["wall_s"]])


def run_duration(record: dict) -> str:
    """The sentence saying how long the record's run took and how much of it was simulating datasets."""
    if "run_s" not in record:
        return ""
    made = [case for case in record["cases"] if case.get("simulated_in_run") and "measured" not in case]
    sentence = f"  This record's run took {record['run_s'] / 60:.1f} min"
    if made:
        names = ", ".join(case["case"] for case in made)
        minutes = sum(case.get("simulation_s", 0.0) for case in made) / 60
        sentence += f", simulating {names} ({minutes:.1f} min) included"
    return sentence + "."


def source_text(source: dict | None) -> str:
    """`` (commit abc1234)`` for the report's first line, noting uncommitted changes to the package; empty for
    records from before the commit was kept."""
    if not source:
        return ""
    return f" (commit {source['commit'][:7]}" + (", with uncommitted changes to braggint/" if source["modified"]
                                                  else "") + ")"


def render(record: dict, path: Path) -> None:
    """docs/performance.md from one benchmark record (tables and inline SVG plots)."""
    from braggint.io.html_report import svg_lines

    lines = ["# Performance", "",
             f"Measured {record['date']} on {record['machine']['cores']} cores ("
             + (f"{record['machine']['processor']}; " if "processor" in record["machine"] else "")
             + f"{record['machine']['platform']}), braggint {record['versions']['braggint']}"
             + source_text(record.get("source"))
             + (f", DIALS {record['versions']['dials']}" if "dials" in record["versions"] else "") + ".",
             "Regenerate with `python benchmarks/run.py` (simulates the datasets on first use)."
             + run_duration(record), "",
             "Ratios are from one benchmark run on one machine; wall times include start-up and writing "
             "outputs. prf: profile fitting (the default); sum: `profile.fitting=False`."
             + (f" Each braggint configuration ran {len(_walls(record))} times"
                + (", in rounds (each configuration once a round, so that the machine's slow phases fall on "
                   "all of them alike)" if record["cases"][0].get("braggint_in_rounds") else "")
                + ", and the fastest run is shown (DIALS ran once)." if len(_walls(record)) > 1 else ""), "",
             *goals(record), "",
             "## Speed against the decode floor and DIALS", "",
             "The decode floor is one core reading and decoding every image once, the mean of one pass just "
             "before and one just after each braggint run (records before 2026-12-01T22:00: just before it). "
             "This machine's speed drifts by up to 2x within minutes; DIALS's runs, minutes apart from "
             "braggint's, share that noise.", "",
             "braggint's CPU is every process's user and system time; the system time is mostly first writes "
             "to fresh memory, whose price drifts with the machine's phase (the goals table's last column), and "
             "the minor page faults count those first writes (and the pages of libraries mapped).", "",
             "| case | images | detector | decode floor (s) | mode | workers | braggint (s) | braggint / decode | "
             "braggint CPU s (system) | page faults, k | DIALS (s) | braggint / DIALS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in record["cases"]:
        size = "x".join(str(v) for v in case.get("detector", []))
        for mode, n, ours in _runs(case, "braggint"):
            floor = floor_of(case, ours)
            theirs = case.get("dials" if mode == "prf" else "dials_sum", {}).get(str(n))
            cpu = cpu_seconds(ours)
            cpu_cells = (f"{cpu:.1f} ({ours['cpu_system_s']:.1f}) | {ours['minor_faults'] / 1000:.0f} | "
                         if cpu is not None else "- | - | ")
            lines.append(f"| {case['case']} | {case['images']} | {size} | {floor:.2f} | {mode} | {n} | "
                         f"{ours['wall_s']:.1f} | {ours['wall_s'] / floor:.1f} | " + cpu_cells
                         + (f"{theirs['wall_s']:.1f} | {ours['wall_s'] / theirs['wall_s']:.2f} |" if theirs
                            else "- | - |"))
    lines += ["", "## Throughput per core and scaling", "",
              "Per core: images (or integrated reflections) per second of wall time, divided by the workers. "
              "Efficiency: one worker's wall time / (workers x this wall time).  Every run: the wall times of "
              "all the configuration's runs, in the order they ran, of which the fastest is used.", "",
              "| case | mode | workers | wall (s) | every run (s) | images/s/core | reflections/s/core | speed-up "
              "| efficiency |",
              "|---|---|---|---|---|---|---|---|---|"]
    for case in record["cases"]:
        for mode in ("prf", "sum"):
            runs = [(n, run) for m, n, run in _runs(case, "braggint") if m == mode]
            one = dict(runs).get(1)
            for n, run in runs:
                speed_up = one["wall_s"] / run["wall_s"] if one else float("nan")
                every_run = ", ".join(f"{wall:.1f}" for wall in run.get("walls_s", [run["wall_s"]]))
                lines.append(f"| {case['case']} | {mode} | {n} | {run['wall_s']:.1f} | {every_run} | "
                             f"{case['images'] / run['wall_s'] / n:.1f} | {run['integrated'] / run['wall_s'] / n:.0f} | "
                             f"{speed_up:.2f} | {speed_up / n:.0%} |")
    lines += ["", "## Memory", "",
              "Peak MB is the largest process of the run's process tree that the command waits for "
              "(`/usr/bin/time`): since 2026-12-03T20:51 the local workers too, which run under a helper process "
              "the command waits for; before, with several workers, the parent only, which reads the strong "
              "spots and gathers the table.  Block peak MB is the largest peak of a block task (a worker's "
              "memory).", "",
              "| case | images | mode | workers | braggint peak MB | block peak MB | DIALS peak MB "
              "| braggint / DIALS |",
              "|---|---|---|---|---|---|---|---|"]
    for case in record["cases"]:
        for mode, n, ours in _runs(case, "braggint"):
            theirs = case.get("dials" if mode == "prf" else "dials_sum", {}).get(str(n))
            block = f"{ours['block_peak_mb']:.0f}" if ours.get("block_peak_mb") else "-"
            lines.append(f"| {case['case']} | {case['images']} | {mode} | {n} | {ours['peak_rss_mb']:.0f} | {block} | "
                         + (f"{theirs['peak_rss_mb']:.0f} | {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f} |"
                            if theirs else "- | - |"))
    earlier = [f"{case['case']} ({case['measured']})" for case in record["cases"] if "measured" in case]
    if earlier:
        lines += ["", "Cases from earlier runs, with the date each was measured: " + ", ".join(earlier) + "."]
    lines += ["", "## Stage breakdown (braggint, one worker, seconds of wall time)", "",
              "Each row adds up to the run's wall time (the last column).", "",
              "| case | mode | " + " | ".join(h for h, _ in BREAKDOWN) + " | total |",
              "|---|---|" + "---|" * (len(BREAKDOWN) + 1)]
    for case in record["cases"]:
        for mode, n, run in _runs(case, "braggint"):
            if n == 1 and "wall" in run.get("stages", {}):
                lines.append(f"| {case['case']} | {mode} | " + " | ".join(f"{v:.2f}" for v in breakdown(run))
                             + f" | {run['wall_s']:.2f} |")
    lines += ["", "## Accuracy against the simulator's truth (fully recorded reflections)", "",
              "With several workers, reflections that fit in no block are cut into pieces at block ends (as DIALS "
              "does): summation compares their pieces summed, profile fitting the reflections left whole "
              "(a piece's fit estimates the whole intensity).", "",
              "| case | program | workers | kind | correlation | median rel. error | sd((I-I_true)/sigma) | "
              "RMS error, weak |",
              "|---|---|---|---|---|---|---|---|"]
    for case in record["cases"]:
        for program in ("braggint", "dials"):
            for workers, run in sorted(case[program].items()):
                for kind in ("sum", "prf"):
                    a = run["accuracy"][kind]
                    lines.append(f"| {case['case']} | {program} | {workers} | {kind} | {a['correlation']:.5f} | "
                                 f"{a['median_relative_error']:.4f} | {a['sd_normalised_error']:.3f} | "
                                 f"{a['rms_error_weak']:.2f} |")
    simulated = [case for case in record["cases"] if "simulation_s" in case]
    if simulated:
        lines += ["", "## Simulation (braggint.simulate, when the dataset was first made)", "",
                  "| case | images | seconds |", "|---|---|---|"]
        lines += [f"| {case['case']} | {case['images']} | {case['simulation_s']:.1f} |" for case in simulated]
    sweeps = [c for c in record["cases"] if c["case"].startswith("sweep") or c["case"] == "small"]
    if len(sweeps) > 1:
        images = np.array([c["images"] for c in sweeps], float)
        series = {"braggint peak MB": np.array([c["braggint"]["1"]["peak_rss_mb"] for c in sweeps])}
        if all("1" in c["dials"] for c in sweeps):
            series["DIALS peak MB"] = np.array([c["dials"]["1"]["peak_rss_mb"] for c in sweeps])
        lines += ["", "## Peak memory against sweep length (one worker)", "",
                  svg_lines("Peak memory against images", images, series, "images", "MB")]
        series = {"braggint": np.array([c["braggint"]["1"]["wall_s"] for c in sweeps])}
        if all("1" in c["dials"] for c in sweeps):
            series["DIALS"] = np.array([c["dials"]["1"]["wall_s"] for c in sweeps])
        series["decode floor"] = np.array([c["decode_floor_s"] for c in sweeps])
        lines += ["", svg_lines("Wall time against images", images, series, "images", "seconds")]
    lines += ["", "## The hot path", "", *hot_path_lines()]
    loads = sorted((REPO / "benchmarks" / "results").glob("service-load-*.json"))
    if loads:
        load = json.loads(loads[-1].read_text())
        lines += ["", "## Service load (braggint.serve on loopback, `python benchmarks/service_load.py`)", "",
                  f"{load['submissions']} submissions from {load['clients']} concurrent clients (every tenth "
                  f"repeating an idempotency key) gave {load['distinct_jobs']} jobs; {load['succeeded']} succeeded, "
                  f"{load['jobs_in_database']} in the database, at most {load['attempts_max']} attempt per job. "
                  f"Submitting took {load['submit_seconds']:.1f} s (median latency "
                  f"{load['submit_latency_ms_median']:.0f} ms, max {load['submit_latency_ms_max']:.0f} ms); all jobs "
                  f"finished after {load['total_seconds']:.0f} s with {load['max_concurrent_jobs']} running at a time."]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="small,sweep100,sweep400")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-dials", action="store_true")
    parser.add_argument("--data", default=str(REPO / "benchmarks" / "data"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--report", default=str(REPO / "docs" / "performance.md"))
    parser.add_argument("--render-only", action="store_true", help="re-render the report from the latest record")
    args = parser.parse_args()
    if args.render_only:
        render(with_earlier_cases(Path(args.out)), Path(args.report))
        return 0
    unknown = [name for name in args.cases.split(",") if name not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)} (known: {', '.join(CASES)})")
    data, out = Path(args.data), Path(args.out)
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with_dials = not args.no_dials and shutil.which("dials.integrate") is not None
    workers = [int(w) for w in args.workers.split(",")]
    started = time.perf_counter()
    made_before = {name for name in CASES if (data / name / "truth.refl").exists()}
    warm_up(data)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cores": os.cpu_count(), "processor": processor(), "platform": platform.platform()},
              "versions": versions(),
              "source": source_state(),
              "cases": []}
    path = out / f"benchmark-{record['date'].replace(':', '').replace('-', '')}.json"
    failed = []
    for name in args.cases.split(","):
        try:
            record["cases"].append(run_case(name, data, workers, with_dials))
        except Exception as error:  # a failing case leaves the others measured
            failed.append(name)
            print(f"case {name} failed, going on with the others: {error}", file=sys.stderr, flush=True)
            continue
        record["cases"][-1]["simulated_in_run"] = name not in made_before
        record["run_s"] = time.perf_counter() - started  # so far, the warm-up and any simulation included
        with atomic_open(str(path), "w") as handle:  # the cases measured so far survive an interruption
            handle.write(json.dumps(record, indent=2))
    if record["cases"]:
        render(with_earlier_cases(out), Path(args.report))
        print(f"wrote {path} and {args.report}")
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
