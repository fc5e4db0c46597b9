"""``braggint.integrate``: integrate reflections on diffraction images.

Takes what ``dials.integrate`` takes: an experiment list (``.expt``), the
indexed strong spots (``.refl``) and ``name=value`` parameters or ``.phil``
files; ``-c`` prints the configuration, ``-h`` the help.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from .. import __version__
from ..compiler import initialise_cpu_target
from ..errors import ImageError, InputFileError, ParameterError, require_file
from ..io.atomic import atomic_open
from ..io.expt import EXPERIMENT_LIST, read_experiments, write_experiments
from ..io.html_report import write_html_report
from ..io.images import ImageSource
from ..io.mtz import write_mtz
from ..io.refl import REFLECTION_FILE, read_reflections, write_reflections
from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.reflection_table import ReflectionTable
from ..params import ParameterSet, integrate_master_text
from ..pipeline.block_kernels import block_kernels
from ..pipeline.executor import starting_scheduler
from ..pipeline.heap import tune_heap
from ..pipeline.integrate import integrate
from ..pipeline.profile_model import ProfileModelError
from ..pipeline.report import report_json, report_xml
from ..pipeline.selection import apply_scan_ranges
from ..pipeline.timing import StageTimes
from ..pipeline.work_store import file_digests
from .common import (
    CommandLine,
    apply_parameters,
    console_command,
    log,
    parse_command_line,
    print_version,
    run_program,
    setup_logging,
)

PROGRAM = "braggint.integrate"

USAGE = f"""\
usage: {PROGRAM} models.expt strong.refl [options] [name=value ...] [file.phil ...]

Integrate the reflections predicted from an experiment list on its images,
with a profile model built from the indexed strong spots.  Parameters and
their defaults are those of dials.integrate.

Examples:
  {PROGRAM} models.expt refined.refl
  {PROGRAM} models.expt refined.refl output.reflections=integrated.refl
  {PROGRAM} models.expt refined.refl profile.fitting=False
  {PROGRAM} models.expt refined.refl background.algorithm=glm

Options:
  -c            show the configuration (parameters with their current values)
  -e N          with -c, include parameters up to expert level N
  -a N          with -c, show attributes: 1 = help, 2 = help and types
  -h, --help    show this help
  -V, --version show the version
"""


def master_parameters() -> ParameterSet:
    return ParameterSet.from_text(integrate_master_text(), "braggint/params/integrate.phil")


def check_parameters(params) -> None:
    """Cross-parameter checks that a single parameter's type cannot express."""
    gaussian = params.profile.gaussian_rs.parameters
    if (gaussian.sigma_b is None) != (gaussian.sigma_m is None):
        raise ParameterError(
            "profile.gaussian_rs.parameters.sigma_b and sigma_m must be set together (both or neither)")
    for first, last in params.scan_range:
        if last <= first:
            raise ParameterError(
                f"scan_range={first},{last}: the end must be greater than the start (use {first},{first + 1} "
                "for a single image)")
    for absorption in params.absorption_correction:
        if absorption.apply and absorption.algorithm is None:
            raise ParameterError("absorption_correction.apply=True needs absorption_correction.algorithm")
    # Values DIALS's own definitions allow but no run can use (it fails on them deep inside, or not at all).
    scan_step = params.profile.gaussian_rs.fitting.scan_step
    if scan_step is not None and scan_step <= 0:
        raise ParameterError(f"profile.gaussian_rs.fitting.scan_step={scan_step:g}: the reference profiles' "
                             "spacing must be a positive number of degrees")
    for name in ("d_min", "d_max"):
        value = getattr(params.prediction, name)
        if value is not None and value <= 0:
            raise ParameterError(f"prediction.{name}={value:g}: a resolution limit must be a positive number of "
                                 "Angstroms")
    significance = params.significance_filter
    if significance.enable and significance.n_bins is not None and significance.n_bins < 1:
        raise ParameterError(f"significance_filter.n_bins={significance.n_bins}: the filter needs at least one "
                             "resolution bin")


def check_input_files(cl: CommandLine) -> None:
    """One experiment list and at most one reflection file, both present (checked before the workers
    start, so that a mistyped name is reported at once)."""
    if not cl.experiments:
        raise InputFileError("no experiment list given (expected a .expt file)")
    if len(cl.experiments) > 1:
        raise InputFileError(f"give one experiment list, not {len(cl.experiments)}: {' '.join(cl.experiments)}")
    if len(cl.reflections) > 1:
        raise InputFileError(f"give one reflection file, not {len(cl.reflections)}: {' '.join(cl.reflections)}")
    require_file(cl.experiments[0], EXPERIMENT_LIST)
    for path in cl.reflections:
        require_file(path, REFLECTION_FILE)


def load_inputs(cl: CommandLine, shoebox_background: bool = True) -> tuple[ExperimentList, ReflectionTable | None]:
    """Read and check the experiment list and the optional reflection file (named as
    :func:`check_input_files` requires); the strong spots' shoeboxes without their background values unless
    ``shoebox_background`` (see :func:`~braggint.io.refl.read_reflections`)."""
    experiments = read_experiments(cl.experiments[0])
    if len(experiments) == 0:
        raise InputFileError(f"{cl.experiments[0]}: the experiment list is empty")
    reflections = read_reflections(cl.reflections[0], shoebox_background) if cl.reflections else None
    if reflections is not None:
        check_reference(reflections, experiments, cl.reflections[0])
    return experiments, reflections


def check_reference(reflections: ReflectionTable, experiments: ExperimentList, path: str) -> None:
    """The checks dials.integrate makes of the strong-spot table before using it."""
    if "shoebox" not in reflections:
        raise InputFileError(f"{path}: shoebox data missing from reflection table")
    for column in ("id", "miller_index", "flags", "panel"):
        if column not in reflections:
            raise InputFileError(f"{path}: reflection table lacks the '{column}' column")
    indexed = reflections.get_flags(Flags.indexed)
    if not indexed.any():
        raise InputFileError(f"{path}: no indexed reflections")
    ids = reflections["id"][indexed]
    if ids.min() < 0 or ids.max() >= len(experiments):
        raise InputFileError(
            f"{path}: indexed reflections have experiment ids {ids.min()}..{ids.max()}, "
            f"but the experiment list has {len(experiments)} experiment(s)")


def check_images(experiments: ExperimentList, expt_path: str) -> None:
    """Every image the experiments refer to must exist (checked before any work starts)."""
    for number, experiment in enumerate(experiments):
        imageset, scan = experiment.imageset, experiment.scan
        if imageset is None:
            raise InputFileError(f"{expt_path}: experiment {number} has no image set")
        first = scan.image_range[0] if scan is not None else 1
        images = range(scan.image_range[0], scan.image_range[1] + 1) if scan is not None else range(
            1, len(imageset.images) + 1)
        missing = ImageSource(imageset, experiment.detector, first).missing(images)
        if missing:
            image, path = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ImageError(f"{path}: image {image} of experiment {number} in {expt_path} is missing{more}")


def write_phil(params: ParameterSet, path: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(params.diff())


def _run(argv: list[str]) -> int:
    cl = parse_command_line(argv)
    if cl.version:
        print_version(PROGRAM)
        return 0
    params = master_parameters()
    if cl.help:
        print(USAGE)
        print("Basic parameters:\n")
        print(params.show(expert_level=0, attributes_level=0))
        return 0
    apply_parameters(params, cl)
    for path in cl.experiments:
        params.assign("input.experiments", path)
    for path in cl.reflections:
        params.assign("input.reflections", path)
    if cl.show_config:
        print(params.show(cl.expert_level, cl.attributes_level), end="")
        return 0
    working = params.extract()
    check_parameters(working)
    check_input_files(cl)

    # Local workers start in the background while the inputs are read and the run is prepared; batch jobs
    # are only submitted once the inputs have been read and checked (integrate() starts them).
    local = working.integration.mp.method == "multiprocessing"
    # Before the workers start: their start is logged from their own thread, which, on a slow start of this
    # process (numba compiling its kernels), logged before the log existed and the line was lost.
    setup_logging(working.output.log)
    starting = starting_scheduler(working.integration.mp, block_kernels(working)) if local else contextlib.nullcontext()
    with starting as started:
        result, experiments, input_seconds = _integrate_inputs(cl, params, working, started)
        stopping = time.perf_counter()
    stop_seconds = time.perf_counter() - stopping
    table = result.table
    for experiment, profile in zip(experiments, result.profiles):
        experiment.profile = profile
    for report_table in result.report_tables:
        log.info("\n%s", report_table.as_text())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    experiments.history.append(f"{stamp}|{PROGRAM}|{__version__}|integrated")
    if working.integration.debug.delete_shoeboxes and "shoebox" in table:
        del table["shoebox"]
    writing = time.perf_counter()
    log.info("Saving %d reflections to %s", table.nrows, working.output.reflections)
    write_reflections(table, working.output.reflections)
    log.info("Saving the experiments to %s", working.output.experiments)
    write_experiments(experiments, working.output.experiments)
    write_extra_outputs(working.output, experiments, result)
    if not working.integration.debug.output:
        shutil.rmtree(working.output.reflections + ".work", ignore_errors=True)
    stages = StageTimes(input=input_seconds)
    stages.update(result.seconds)
    stages.add("worker stop", stop_seconds)
    stages.add("output", time.perf_counter() - writing)
    log.info("Wall time by stage: %s; total %.2f s", stages.as_text(), sum(stages.values()))
    return 0


def _integrate_inputs(cl: CommandLine, params: ParameterSet, working, started):
    """Read and check the inputs, log the run's settings and integrate: ``(result, experiments, seconds
    spent reading the inputs)``.  ``started`` waits for the workers (see :func:`integrate`)."""
    reading = time.perf_counter()
    tune_heap()
    # Beside the reading, on threads: numba's start (GIL-bound, but the reading of the strong spots' file lets
    # it run) and the inputs' digests (hashing releases the GIL), so that neither waits for the other.
    with ThreadPoolExecutor(2, thread_name_prefix="braggint-inputs") as background:
        background.submit(initialise_cpu_target)
        digests = background.submit(file_digests, cl.experiments + cl.reflections)
        # The spot finder's background is read only to be written out again, with the rubbish rows.
        experiments, reflections = load_inputs(cl, shoebox_background=working.output.include_bad_reference)
    check_images(experiments, cl.experiments[0])
    log.info(f"braggint {__version__} ({PROGRAM})")
    diff = params.diff()
    if diff:
        log.info("The following parameters have been modified:\n%s", diff)
    write_phil(params, working.output.phil)
    log.info("Read %d experiment(s) from %s", len(experiments), cl.experiments[0])
    if reflections is not None:
        log.info("Read %d reference reflections from %s", reflections.nrows, cl.reflections[0])
    experiments, reflections = apply_scan_ranges(experiments, reflections, working.scan_range)
    input_seconds = time.perf_counter() - reading
    try:
        inputs = digests.result()
        holder = [reflections]
        del reflections  # integrate() frees the strong spots' shoeboxes once the profile model is built
        result = integrate(experiments, holder.pop(), working, cl.reflections[0] if cl.reflections else "",
                           work_path=working.output.reflections + ".work", inputs=inputs + params.diff().encode(),
                           output_directory=os.path.dirname(os.path.abspath(working.output.reflections)),
                           started=started)
    except ProfileModelError as exc:
        log.error("%s", exc)  # pipelines (xia2) look for this line in the log
        raise
    return result, experiments, input_seconds


def write_extra_outputs(output, experiments, result) -> None:
    """``output.report`` (JSON or XML), ``output.html`` and ``output.mtz`` when asked for."""
    if output.report:
        text = (report_xml(result.report_tables) if output.report.endswith(".xml")
                else report_json(result.report_tables, result.report_arrays))
        with atomic_open(output.report, "w") as handle:
            handle.write(text)
        log.info("Saved the integration report to %s", output.report)
    if output.html:
        write_html_report(output.html, experiments, result.report_tables, result.references)
        log.info("Saved the HTML report to %s", output.html)
    if output.mtz:
        rows = write_mtz(experiments, result.table, output.mtz)
        log.info("Saved %d unmerged intensities to %s", rows, output.mtz)


def main(argv: list[str] | None = None) -> int:
    return run_program(PROGRAM, _run, argv)


console_main = console_command(main)  # the braggint.integrate command


if __name__ == "__main__":  # pragma: no cover
    console_main()
