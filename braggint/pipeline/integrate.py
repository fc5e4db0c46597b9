"""Integration of rotation sweeps as a graph of block tasks.

:func:`integrate` predicts every reflection, builds the profile models,
lays the sweep out in frame blocks (:mod:`.blocks`), runs the first pass
(shoeboxes, background, centroids, summation, reference-profile sums) of
every block (which fits the rows whose profiles only their block teaches),
reduces the reference profiles, runs the second pass (profile fitting of
the other rows) and reduces the block tables into one table in prediction order.
Intermediate results live in a work store next to the output
(:mod:`.work_store`), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import BraggintError
from ..models.experiment import ExperimentList
from ..models.flags import Flags
from ..models.profile import GaussianRSProfile
from ..models.reflection_table import ReflectionTable
from ..models.shoebox import ShoeboxColumn
from ..tasks.corrections import detector_efficiency, lorentz_polarization
from ..tasks.shoebox_geometry import (
    bounding_boxes,
    local_frames,
    partiality,
)
from .absorption import KAPTON_ALGORITHMS, apply_kapton_corrections, kapton_scopes
from .block_kernels import block_kernels
from .block_tasks import BlockJob, BlockReport, fit_block, model_block
from .blocks import assign_to_blocks, plan_blocks, split_across_blocks
from .debug_output import write_block_shoeboxes, write_reference_profiles
from .executor import own_local_workers, run_on_client, starting_scheduler, worker_count
from .filters import apply_significance_filter, flag_ice_rings, overlap_filters
from .heap import limit_malloc_arenas, release_memory
from .local_workers import LocalWorkers
from .memory import (
    available_memory,
    block_memory_needs,
    memory_report,
    too_little_memory,
)
from .predict import predict_reflections
from .part_rows import put_rows
from .profile_fitting import block_local_profiles, calibrate_variances, profiles_with_folds
from .profile_model import estimate_profile, profile_from_parameters
from .reduction import add_arrays, tree_reduce
from .progress import BlockProgress
from .reference import mask_neighbouring_pixels, matched_reference, split_reference
from .report import Table, integration_report, profile_report
from .selection import excluded_frames
from .shoebox_processing import choose_background
from .stills import finalize_stills
from .timing import StageTimes
from .validation import assign_folds, validation_table
from .work_store import WorkStore, inputs_digest

log = logging.getLogger("braggint")

#: dials.integrate's fixed setting that is not a parameter of its command line.
SIGMA_B_MULTIPLIER = 2.0


def prepare(experiments: ExperimentList, references: list[ReflectionTable], params,
            reference_path: str = "reference"):
    """Predictions of every experiment with their profile models, bbox and zeta.

    ``references`` holds the strong-spot table, if any, and is emptied:
    prepare takes the table over, so its shoeboxes are freed as soon as the
    matched rows are copied out.  Returns ``(predicted table, profiles per
    experiment, rubbish rows)``.
    """
    rubbish = ReflectionTable()
    matched = None
    reference = references.pop() if references else None
    # The strong spots' neighbour masking (a compiled kernel that releases the GIL) runs on a thread beside the
    # predictions, which do not read the spots: at 400 2M-like images on one worker, 0.06 s of each.
    with ThreadPoolExecutor(1, thread_name_prefix="braggint-masking") as beside:
        if reference is not None:
            usable, rubbish = split_reference(reference, reference_path, params.output.include_bad_reference)
            masking = beside.submit(mask_neighbouring_pixels, reference, experiments, usable)
        predicted = predict_reflections(experiments, params.prediction)
        if reference is not None:
            log.info(" masked neighbouring pixels in %d shoeboxes", masking.result())
    log.info("Predicting reflections")
    log.info("Predicted %d reflections", predicted.nrows)
    strong_boxes = None  # the strong spots' shoeboxes, which the profile model reads in place
    if reference is not None:
        matched = matched_reference(predicted, reference, reference_path, usable, copy_shoeboxes=False)
        if params.output.include_bad_reference:  # DIALS counts the spots no prediction matched as rubbish too
            rubbish.extend(reference.select(np.setdiff1d(usable, matched["reference_row"])))
        strong_boxes = reference["shoebox"]
        reference = None  # the matched rows and their shoeboxes are all that is needed from here on
    gaussian_rs = params.profile.gaussian_rs
    profiles = []
    stills_profile = None
    if params.create_profile_model and matched is not None and any(e.is_still for e in experiments):
        stills_profile = pooled_stills_profile(experiments, matched, strong_boxes, gaussian_rs)
    for number, experiment in enumerate(experiments):
        if experiment.is_still and stills_profile is not None:
            profiles.append(stills_profile)
            continue
        mine = None
        if matched is not None:  # one experiment's rows: all of them, not copied, when it is the only one
            of_experiment = matched["id"] == number
            mine = matched if of_experiment.all() else matched.select(of_experiment)
        if params.create_profile_model and mine is not None and mine.nrows:
            log.info("Computing profile model for experiment %d", number)
            profiles.append(estimate_profile(experiment, mine, gaussian_rs, strong_boxes))
        else:
            profiles.append(profile_from_parameters(experiment, gaussian_rs))
    matched = strong_boxes = None
    zeta = np.zeros(predicted.nrows)
    bbox = np.zeros((predicted.nrows, 6), np.int32)
    for number, (experiment, profile) in enumerate(zip(experiments, profiles)):
        rows = predicted["id"] == number
        z = predicted["xyzcal.px"][rows, 2]
        s1 = predicted["s1"][rows]
        zeta[rows] = local_frames(experiment, s1, z).zeta
        bbox[rows] = bounding_boxes(experiment, profile, s1, z, predicted["panel"][rows], SIGMA_B_MULTIPLIER)
    predicted["zeta"] = zeta
    predicted["bbox"] = bbox
    predicted.set_flags(np.abs(zeta) < params.integration.filter.min_zeta, Flags.dont_integrate)
    return predicted, profiles, rubbish


def pooled_stills_profile(experiments: ExperimentList, matched: ReflectionTable, shoeboxes: ShoeboxColumn,
                          gaussian_rs):
    """One gaussian_rs model (sigma_b; sigma_m = 0) from the reference spots of every still together
    (``matched`` as :func:`matched_reference` gives it without copies of the strong spots' ``shoeboxes``).

    A still rarely has the spots to model its own profile (DIALS estimates
    each one alone and fails below ``min_spots``); the stills of a run share
    beam and detector, so braggint pools them.
    """
    still_ids = [number for number, experiment in enumerate(experiments) if experiment.is_still]
    rows = np.isin(matched["id"], still_ids)
    log.info("Computing one profile model for %d stills from their %d reference spots", len(still_ids),
             int(rows.sum()))
    return estimate_profile(experiments[still_ids[0]], matched.select(rows), gaussian_rs, shoeboxes)


def apply_corrections(experiments: ExperimentList, table: ReflectionTable) -> None:
    """``lp`` for every row and ``qe`` when the detector has an attenuation coefficient."""
    lp = np.zeros(table.nrows)
    qe = np.zeros(table.nrows)
    with_qe = False
    for number, experiment in enumerate(experiments):
        rows = table["id"] == number
        beam = experiment.beam
        axis = experiment.goniometer.rotation_axis_lab if experiment.goniometer is not None else None
        lp[rows] = lorentz_polarization(table["s1"][rows], beam.s0, axis, beam.polarization_normal,
                                        beam.polarization_fraction)
        panel = experiment.detector[0]
        if panel.mu > 0:
            with_qe = True
            for p in np.unique(table["panel"][rows]):
                sel = rows & (table["panel"] == p)
                this = experiment.detector[int(p)]
                qe[sel] = detector_efficiency(table["s1"][sel], this.normal, this.mu, this.thickness)
    table["lp"] = lp
    if with_qe:
        table["qe"] = qe


@dataclass
class IntegrationResult:
    table: ReflectionTable
    profiles: list[GaussianRSProfile]
    report_tables: list[Table]
    report_arrays: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    seconds: StageTimes = field(default_factory=StageTimes)  # wall time by stage of the parent process


def partiality_of_rows(experiments: ExperimentList, profiles: list[GaussianRSProfile],
                       table: ReflectionTable) -> np.ndarray:
    """The ``partiality`` column: each row's share of its rocking curve inside its bbox frames."""
    values = np.zeros(table.nrows)
    for number, (experiment, profile) in enumerate(zip(experiments, profiles)):
        rows = table["id"] == number
        values[rows] = partiality(experiment, profile, table["zeta"][rows], table["xyzcal.px"][rows, 2],
                                  table["bbox"][rows])
    return values


def all_at_once(mp, n_blocks: int) -> bool:
    """Whether the run's blocks all run at the same time: more than one, on local workers (this run's own
    cluster) at least as many as the blocks.  Then they exchange their profile sums at the end of the
    first pass instead of leaving rows to a second (:mod:`.profile_exchange`)."""
    njobs, nproc = worker_count(mp)
    return own_local_workers(mp) and 1 < n_blocks <= njobs * nproc


def lay_out_blocks(experiments: ExperimentList, predicted: ReflectionTable, params, workers: int):
    """``(blocks, table cut across them, block of each row)``, blocks shrunk until their shoeboxes fit.

    The guard applies to local workers (``mp.method=multiprocessing``): each
    of them may give ``max_memory_usage`` x available memory / workers to
    shoeboxes.  Batch jobs get their memory from the batch system instead.
    """
    integration = params.integration
    fraction = integration.block.max_memory_usage
    budget = int(available_memory() * fraction) if fraction and own_local_workers(integration.mp) else None
    max_frames = None
    while True:
        blocks = plan_blocks(experiments, predicted, params, workers, max_frames)
        table = split_across_blocks(predicted, blocks)
        assignment = assign_to_blocks(table, blocks)
        needs = block_memory_needs(table["bbox"], assignment, len(blocks))
        if budget is None or needs.max(initial=0) <= budget / workers:
            break
        longest = max(b.stop - b.start for b in blocks)
        if longest <= 1:
            raise too_little_memory(needs, blocks, budget, workers, fraction, table)
        max_frames = longest // 2
        log.warning("The shoeboxes of a block of %d frames need %.1f MB, more than the %.1f MB each of %d "
                    "worker(s) may use (integration.block.max_memory_usage=%s): blocks shrunk to %d frames",
                    longest, needs.max() / 1e6, budget / workers / 1e6, workers, fraction, max_frames)
    memory_report(needs, budget, workers)
    return blocks, table, assignment


def block_calls(stage: str, task, jobs: list[BlockJob], shared) -> list[tuple[str, object, tuple]]:
    """``(Dask key, task, arguments)`` of every block's task in ``stage`` (keys such as ``modelling-block-3``)."""
    return [(f"{stage.split()[0]}-block-{job.block.index}", task, (job, *shared)) for job in jobs]


def run_pass(where, stage: str, task, jobs: list[BlockJob], *shared) -> list[BlockReport]:
    """``task(job, *shared)`` for every block, in this process or as Dask tasks on ``where`` (a Dask client
    or the run's :class:`.local_workers.LocalWorkers`).

    Every block runs to its end even when another fails (its results stay
    in the work store for a rerun); then the first failure is raised.
    """
    progress = BlockProgress(stage, len(jobs))
    reports: list = []
    errors: list[BaseException] = []
    try:
        if where == "synchronous":
            for job in jobs:
                try:
                    reports.append(task(job, *shared))
                except BraggintError as error:
                    errors.append(error)
                progress.advance()
        elif isinstance(where, LocalWorkers):  # shared travels with each task, pickled
            reports, errors = where.run(block_calls(stage, task, jobs, shared), progress.advance)
        else:
            if shared:  # one copy per worker; a list, since scatter would key a dict's values
                shared = where.scatter(list(shared), broadcast=True)
            reports, errors = run_on_client(where, block_calls(stage, task, jobs, shared), progress.advance)
    finally:
        progress.close()
    if errors:
        raise errors[0]
    log_reports(stage, reports)
    return reports


def run_blocks(jobs: list[BlockJob], experiments: ExperimentList, profiles: list[GaussianRSProfile],
               params, where, clock: StageTimes) -> tuple[list[BlockReport], list[BlockReport], dict]:
    """Both passes of every block on the scheduler ``where``; also the reference profiles.

    The second pass runs for the blocks the first left incomplete (rows
    whose profiles other blocks teach too).  With validation folds, the
    profiles learned without each fold are made too and the second pass
    fits each fold with them.  ``clock`` gets the wall time of each pass.
    Returns the first pass's reports, the final report of each block (the
    second pass's where it ran) and the reference profiles.
    """
    with clock.stage("first pass"):
        reports = run_pass(where, "modelling and summation", model_block, jobs)
        references, held_out = reference_profiles(reports, experiments, profiles, params)
    final = {report.block: report for report in reports}
    left = [job for job in jobs if not final[job.block.index].complete]
    if references and not any(report.resumed for report in reports):
        log.info("Fitted %d of %d reflections in the first pass (those whose reference profiles only their "
                 "block teaches); %d of %d blocks need a second pass", sum(r.fitted_first for r in reports),
                 sum(r.n_reflections for r in reports), len(left), len(jobs))
    fitted = []
    if references and left:
        with clock.stage("second pass"):
            fitted = run_pass(where, "profile fitting", fit_block, left, references, held_out)
        final.update({report.block: report for report in fitted})
    log.info("Block-task time by stage (summed over blocks): %s",
             StageTimes.summed(r.seconds for r in reports + fitted).as_text())
    return reports, [final[job.block.index] for job in jobs], references


def reference_profiles(reports: list[BlockReport], experiments: ExperimentList, profiles: list[GaussianRSProfile],
                       params) -> tuple[dict, dict]:
    """The reference profiles of each experiment from the blocks' sums, and those without each fold."""
    references, held_out = {}, {}
    if not params.integration.profile.fitting:
        return references, held_out
    sums = tree_reduce([r.profile_sums for r in reports], add_arrays)
    gaussian = params.profile.gaussian_rs.fitting
    for number, (fold_sums, fold_counts) in sums.items():
        references[number], without_fold = profiles_with_folds(experiments[number], profiles[number], gaussian,
                                                               fold_sums, fold_counts)
        if without_fold is not None:
            held_out[number] = without_fold
    if not references:
        log.info("Skipping profile modelling - no reference profiles given")
    return references, held_out


def log_reports(stage: str, reports) -> None:
    resumed = sum(r.resumed for r in reports)
    if resumed:
        log.info("%s: %d of %d blocks were already done (resumed)", stage, resumed, len(reports))
    for report in reports:
        if not report.resumed:
            timing = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in report.seconds.items())
            log.info(" block %d: %d reflections; %s; peak memory %.0f MB; on %s", report.block,
                     report.n_reflections, timing, report.peak_memory / 1e6, report.worker)


def integrate(experiments: ExperimentList, reference: ReflectionTable | None, params,
              reference_path: str = "reference", work_path: str | None = None,
              inputs: bytes = b"", output_directory: str = ".", started=None) -> IntegrationResult:
    """Integrate every experiment: the output table (DIALS's row rules), profiles and report.

    ``work_path`` holds the intermediate results and is left in place for
    the caller to remove once the outputs are safe (a temporary folder,
    removed here, when None); ``inputs`` identifies the run for resuming.
    ``started``: the waiting function of a :func:`.executor.starting_scheduler`
    the caller entered (and stops) itself, so that the workers start while
    it reads the inputs; when None the workers are started and stopped here.
    """
    start = time.perf_counter()
    clock = StageTimes()
    starts_workers = started is None
    holder = [] if reference is None else [reference]
    del reference  # else this frame would keep the strong spots' shoeboxes through the whole run
    with contextlib.ExitStack() as workers:
        if starts_workers:
            started = workers.enter_context(starting_scheduler(params.integration.mp, block_kernels(params)))
        result = _integrate(experiments, holder, params, reference_path, work_path, inputs, output_directory,
                            started, clock)
        stopping = time.perf_counter()
    if starts_workers:
        clock.add("worker stop", time.perf_counter() - stopping)
    log.info("Integrated %d reflections (%d by summation, %d by profile fitting) in %.1f s", result.table.nrows,
             int(result.table.get_flags(Flags.integrated_sum).sum()),
             int(result.table.get_flags(Flags.integrated_prf).sum()), time.perf_counter() - start)
    return result


def _integrate(experiments: ExperimentList, holder: list[ReflectionTable], params, reference_path: str,
               work_path: str | None, inputs: bytes, output_directory: str, started, clock: StageTimes):
    """:func:`integrate` while the workers start: ``started()`` waits for them and returns the scheduler.
    ``holder`` holds the strong-spot table, if any, for :func:`prepare` to take over."""
    start = time.perf_counter()
    limit_malloc_arenas()
    predicted, profiles, rubbish = prepare(experiments, holder, params, reference_path)
    release_memory()
    integration = params.integration
    all_stills = all(experiment.is_still for experiment in experiments)
    if all_stills and integration.profile.fitting:
        log.info("Stills have no rocking curve (sigma_m = 0): integrating by summation only")
        integration.profile.fitting = False
    if integration.filter.ice_rings:
        flag_ice_rings(predicted)
    n_folds = assign_folds(predicted, integration.profile.validation) if integration.profile.fitting else 1
    if integration.filter.max_shoebox_overlap is not None and integration.filter.max_shoebox_overlap < 1.0:
        log.warning("integration.filter.max_shoebox_overlap has no effect (DIALS never applied it); use "
                    "integration.overlaps_filter")
    excluded = excluded_frames(experiments, params.exclude_images)
    algorithm = choose_background(params, experiments)
    log.info("Using %s background modelling", algorithm)
    njobs, nproc = worker_count(integration.mp)
    blocks, table, assignment = lay_out_blocks(experiments, predicted, params, njobs * nproc)
    if table.nrows > predicted.nrows:
        log.info(" Split %d reflections overlapping block boundaries", table.nrows - predicted.nrows)
    predicted = None  # the table laid out holds every row from here on
    table["partiality"] = partiality_of_rows(experiments, profiles, table)
    log.info("Integrating %d reflections in %d block(s) of frames: %s", int((assignment >= 0).sum()), len(blocks),
             ", ".join(f"{b.start}-{b.stop - 1}" for b in blocks))
    keep = integration.debug.output and not integration.debug.separate_files
    temporary = None
    if work_path is None:
        temporary = tempfile.mkdtemp(prefix="braggint-work-")
        work_path = temporary
    layout = repr([(b.experiments, b.start, b.stop) for b in blocks]).encode()
    digest = inputs_digest(inputs, pickle.dumps(table["bbox"]), layout)
    WorkStore(work_path, digest)
    jobs = [BlockJob(block, experiments, profiles, table.select(assignment == block.index), algorithm, params,
                     work_path, digest, excluded, integration.lookup.mask, n_folds) for block in blocks]
    if integration.profile.fitting:
        local = block_local_profiles([job.table for job in jobs], experiments, params.profile.gaussian_rs.fitting)
        exchange = tuple(block.index for block in blocks) if all_at_once(integration.mp, len(blocks)) else ()
        for job, profiles_of_block in zip(jobs, local):
            job.local_profiles = profiles_of_block
            job.exchange_with = exchange
    clock.add("prediction", time.perf_counter() - start)
    try:
        with clock.stage("worker start"):  # the part of the start that preparing did not hide
            where = started()
        first, final, references = run_blocks(jobs, experiments, profiles, params, where, clock)
        reducing = time.perf_counter()
        if isinstance(where, LocalWorkers):  # no task is left: the helper stops the workers meanwhile
            where.stop()
        jobs = None  # their copies of the table rows are not needed any more
        peak = max([r.peak_memory for r in first + final] or [0])
        log.info("Largest peak memory of a block task: %.0f MB", peak / 1e6)
        store = WorkStore(work_path, digest)
        kind = "integrated.refl" if references else "modelled.refl"
        debug = integration.debug
        if debug.reference.output and references:
            write_reference_profiles(os.path.join(output_directory, debug.reference.filename), references)
        for block in blocks:  # one block's results (the columns it computed) in memory at a time
            rows = np.flatnonzero(assignment == block.index)  # indices: each column's write 3x faster than a mask
            put_rows(table, rows, store.load_table(block.index, kind))
            if debug.output and debug.separate_files:
                with_boxes = table.select(rows)
                with_boxes["shoebox"] = store.load_block_shoeboxes(block.index)
                write_block_shoeboxes(output_directory, block.index, with_boxes, params)
                with_boxes = None
        shoeboxes = None
        if keep:
            boxes = [store.load_block_shoeboxes(block.index) for block in blocks]
            order = np.argsort(np.concatenate([np.flatnonzero(assignment == b.index) for b in blocks]), kind="stable")
            shoeboxes = (ShoeboxColumn.concatenate(boxes).select(order), np.flatnonzero(assignment >= 0))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    calibrate_variances(table, integration.profile.variance_model)
    apply_corrections(experiments, table)
    tables = integration_report(experiments, table)
    arrays = {}
    if references:
        profile_table, arrays = profile_report(references)
        tables.append(profile_table)
    if n_folds > 1 and references:
        statistics = tree_reduce([r.validation for r in final], add_arrays)
        tables.append(validation_table(statistics))
        log.info("%s", tables[-1].as_text())
    integrated = table.get_flags(Flags.integrated, all=False)
    log.info("Removing %d unintegrated reflections of %d total", int((~integrated).sum()), table.nrows)
    if shoeboxes is not None:
        boxes, rows_with_boxes = shoeboxes
        position = np.full(table.nrows, -1)
        position[rows_with_boxes] = np.arange(len(rows_with_boxes))
        table = table.select(integrated)
        table["shoebox"] = boxes.select(position[integrated])
    else:
        table = table.select(integrated)
    if all_stills:
        table = finalize_stills(table, integration.summation.detector_gain)
    overlaps = integration.overlaps_filter
    if overlaps.foreground_foreground.enable or overlaps.foreground_background.enable:
        table = table.select(~overlap_filters(table, overlaps.foreground_foreground.enable,
                                              overlaps.foreground_background.enable))
    for scope in params.absorption_correction:
        if scope.apply and scope.algorithm not in KAPTON_ALGORITHMS:
            log.info("absorption_correction.algorithm=%s has no implementation: nothing applied", scope.algorithm)
    table = apply_kapton_corrections(table, kapton_scopes(params))
    if params.significance_filter.enable:
        table = apply_significance_filter(table, params.significance_filter)
    if params.output.include_bad_reference and rubbish.nrows:
        rubbish.set_flags(np.ones(rubbish.nrows, bool), Flags.bad_reference)
        rubbish.unset_flags(np.ones(rubbish.nrows, bool), Flags.integrated)
        # Each side gains the other's columns with default values, as DIALS's tables do when extended.
        table.add_default_columns(rubbish)
        rubbish.add_default_columns(table)
        table.extend(rubbish)
    clock.add("reduction", time.perf_counter() - reducing)
    return IntegrationResult(table, profiles, tables, arrays, references, clock)
