"""Where block tasks run: in this process, on a local Dask cluster, or on a batch system.

``integration.mp.method`` chooses: ``multiprocessing`` runs njobs x nproc
local worker processes (in-process when that is 1); ``sge``, ``lsf``,
``pbs`` and ``slurm`` submit njobs batch jobs of nproc single-threaded
workers through dask-jobqueue (queue, account, walltime and memory from
the standard dask-jobqueue configuration, ``~/.config/dask/jobqueue.yaml``
or ``DASK_JOBQUEUE__...`` variables); ``drmaa`` submits the same Grid Engine jobs
through the DRMAA library (:mod:`.drmaa_cluster`); ``BRAGGINT_SCHEDULER=tcp://host:port``
attaches to a running Dask scheduler instead.  Dask is imported only where
it is used: not by a run in this process, and for local workers only by
their helper process (:mod:`.local_workers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shlex
import time

from ..errors import BraggintError, ParameterError

log = logging.getLogger("braggint")


#: dask-jobqueue's cluster class for each batch ``integration.mp.method`` (drmaa: Grid Engine jobs via libdrmaa).
BATCH_CLUSTER_CLASSES = {"sge": "SGECluster", "drmaa": "SGECluster", "lsf": "LSFCluster", "pbs": "PBSCluster",
                         "slurm": "SLURMCluster"}


class BatchSubmissionError(BraggintError):
    """The batch system refused or never accepted the worker jobs."""


def usable_cores() -> int:
    """CPU cores this process may use (affinity and cgroup CPU quota honoured)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cores, 1)


def worker_count(mp) -> tuple[int, int]:
    """``(njobs, nproc)`` with ``nproc=Auto`` resolved to the usable cores."""
    from ..params.phil import Auto

    nproc = usable_cores() if mp.nproc is Auto or mp.nproc is None else int(mp.nproc)
    njobs = 1 if mp.njobs is None or mp.njobs is Auto else int(mp.njobs)
    return njobs, nproc


def own_local_workers(mp) -> bool:
    """Whether the run starts its own local workers (``mp.method=multiprocessing``, no external scheduler)."""
    return mp.method == "multiprocessing" and not os.environ.get("BRAGGINT_SCHEDULER")


#: glibc held to its one main heap in worker processes: a worker runs its block task on a thread of its own,
#: which glibc otherwise gives a heap of its own or a share of another's as it happens, and a block on a
#: secondary heap paid for its memory afresh (see :func:`.local_workers._start_cluster`, whose forked workers
#: inherit the same setting from their helper).
WORKER_MALLOC_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}


def worker_environment() -> dict:
    """Environment of local Dask worker processes: Dask's, without its ``MALLOC_TRIM_THRESHOLD_``, and with
    :data:`WORKER_MALLOC_ENVIRONMENT` (for workers started as fresh interpreters).

    Setting that variable freezes glibc's mmap threshold, so every image-sized
    array is a fresh mmap whose pages the kernel must zero: block tasks then
    spent as long in page faults as in reading images.  glibc's default
    (adaptive) thresholds reuse freed image buffers instead.
    """
    import dask
    import distributed  # noqa: F401 - registers Distributed's configuration defaults with Dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    environ.update(WORKER_MALLOC_ENVIRONMENT)
    return environ


#: Dask settings of the workers braggint starts (a local cluster's scheduler and nannies too; a nanny hands
#: its settings to its worker, and batch jobs export them, see :func:`dask_environment`).  Dask's defaults
#: suit long-lived clusters watched on a dashboard: each worker samples its threads' stacks every 10 ms and
#: merges them into a profile every second, checks its event loop every 20 ms and its memory every 100 ms,
#: and records system figures every 500 ms.  A worker's event loop shares the interpreter lock with its
#: block task: on sweep400 with two local workers that loop took 0.3-0.5 s of CPU a worker (7-10 % of its
#: block), 0.15 s with these settings.  Memory limits are still enforced, checked each second.
QUIET_WORKER_SETTINGS = {"distributed.worker.profile.enabled": False,
                         "distributed.admin.tick.interval": "1s",
                         "distributed.admin.system-monitor.interval": "5s",
                         "distributed.worker.memory.monitor-interval": "1s"}


def dask_environment(settings: dict) -> dict[str, str]:
    """The environment variables that give a Dask process ``settings`` (dotted keys): ``DASK_`` and the
    key's parts joined by ``__``, in capitals; the value as Python writes it, which Dask reads back."""
    return {"DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split(".")):
            value if isinstance(value, str) else repr(value) for key, value in settings.items()}


def _client(where):
    """A Dask client of a cluster or scheduler address that is nobody's default.

    Made and closed explicitly, not as the current client: the workers may
    be started in one thread and stopped in another (see
    :func:`starting_scheduler`), which Dask's context variable refuses.
    """
    from distributed import Client

    return contextlib.closing(Client(where, set_as_default=False))


@contextlib.contextmanager
def scheduler(mp, kernels: tuple[str, ...] = ()):
    """Where the run's blocks run, torn down afterwards: ``"synchronous"`` (this process), the run's
    :class:`.local_workers.LocalWorkers` (starting: its methods wait for the workers, which start with the
    cached ``kernels`` loaded), or a Dask client of batch jobs or of ``BRAGGINT_SCHEDULER``."""
    address = os.environ.get("BRAGGINT_SCHEDULER")
    njobs, nproc = worker_count(mp)
    if address:
        with _client(address) as client:
            log.info("Using the Dask scheduler at %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    if mp.method == "multiprocessing":
        if njobs * nproc == 1:
            yield "synchronous"
            return
        from .local_workers import LocalWorkers

        with LocalWorkers(njobs, nproc, kernels) as workers:
            yield workers
        return
    failures: list[Exception] = []
    cluster = batch_cluster(mp.method, njobs, nproc, failures)
    try:
        with _client(cluster) as client:
            cluster.scale(jobs=njobs)
            wait_for_submission(cluster, mp.method, failures)
            log.info("Submitted %d %s jobs of %d workers (dashboard %s)", njobs, mp.method, nproc,
                     client.dashboard_link)
            yield client
    finally:
        try:
            cluster.close()
        except Exception as error:  # a job that never started cannot be closed cleanly; nothing is lost
            log.debug("Closing the %s cluster: %r", mp.method, error)


def run_on_client(client, calls: list[tuple[str, object, tuple]], advance) -> tuple[list, list[BaseException]]:
    """``function(*arguments)`` of every ``(key, function, arguments)`` as a Dask task on ``client``'s workers;
    ``advance()`` as each one ends.  Returns ``(results, errors)``: every task runs to its end, whether or not
    another fails, and each failure is returned, not raised."""
    from distributed import as_completed

    futures = [client.submit(function, *arguments, key=key, pure=False) for key, function, arguments in calls]
    for _ in as_completed(futures, loop=client.loop):
        advance()
    results, errors = [], []
    for future in futures:
        if future.status == "error":
            errors.append(future.exception())
        else:
            results.append(future.result())
    return results, errors


class WorkerStartError(BraggintError):
    """The run's local worker processes did not start."""


#: Tries at starting the local workers: a worker process that dies while starting (killed, out of memory)
#: fails the whole cluster's start, and a second try usually succeeds.
LOCAL_START_TRIES = 2


def local_cluster(njobs: int, nproc: int):
    """A started Dask LocalCluster of ``njobs`` x ``nproc`` single-threaded worker processes; tried again once
    when a worker dies while starting, then a :class:`WorkerStartError`."""
    from distributed import LocalCluster

    # The scheduler asks for the processor's name (platform runs `uname -p`, once per process) when the first
    # worker registers, on its event-loop thread, while the nannies fork the next workers from other threads:
    # a worker forked meanwhile inherits that child's output pipe, and the scheduler then waits for ever for
    # the pipe to close (a CI run of 4 workers hung so, 2026-12-05).  Asked here, before the cluster starts a
    # thread, the answer is cached for the scheduler and inherited by every forked worker.
    platform.processor()
    setting = f"integration.mp.nproc={nproc}" + (f" x njobs={njobs}" if njobs > 1 else "")
    for attempt in range(1, LOCAL_START_TRIES + 1):
        try:
            return LocalCluster(n_workers=njobs * nproc, threads_per_worker=1, processes=True, dashboard_address=":0",
                                silence_logs=logging.ERROR)
        except Exception as error:  # Dask raises RuntimeError("Nanny failed to start.") and the like
            reason = f"{error} ({error.__cause__})" if error.__cause__ else str(error)
            if attempt == LOCAL_START_TRIES:
                raise WorkerStartError(f"{setting}: the local Dask workers did not start after {attempt} tries: "
                                       f"{reason}") from None
            log.warning("The local Dask workers did not start (%s); trying again", reason)


@contextlib.contextmanager
def starting_scheduler(mp, kernels: tuple[str, ...] = ()):
    """Start the run's workers in the background while this thread prepares the run (local workers with the
    cached ``kernels`` loaded: :func:`.block_kernels.block_kernels`).

    Yields a function that waits for the start and returns the scheduler
    (as :func:`scheduler` yields); the workers are stopped when the block
    ends.  A failure to start is raised by that function; if the run fails
    before calling it, the run's own error is the one that surfaces.  Local
    workers start in a helper process forked here, which must be before this
    process starts any thread of its own (:mod:`.local_workers`); the others
    from a thread.
    """
    from concurrent.futures import ThreadPoolExecutor

    njobs, nproc = worker_count(mp)
    if own_local_workers(mp) and njobs * nproc > 1:
        with scheduler(mp, kernels) as workers:  # forks the helper now, before any thread of this process
            yield workers.wait
        return
    if mp.method in BATCH_CLUSTER_CLASSES:
        with contextlib.suppress(ImportError):  # batch_cluster says what is missing
            import dask_jobqueue  # noqa: F401 - its import installs signal handlers, which only the main thread may

    workers = contextlib.ExitStack()
    with ThreadPoolExecutor(1, thread_name_prefix="braggint-workers") as pool:
        started = pool.submit(workers.enter_context, scheduler(mp))
        try:
            yield started.result
        finally:
            with contextlib.suppress(Exception):
                started.result()
            workers.close()


def submission_error(method: str, error: Exception) -> BatchSubmissionError:
    """One line from a failed submission command (its stderr when it printed one)."""
    text = str(error)
    if "stderr:" in text:
        text = text.split("stderr:", 1)[1]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip() and line.strip() != "Exiting.")
    return BatchSubmissionError(f"integration.mp.method={method}: the batch system refused the worker job: {text}")


def wait_for_submission(cluster, method: str, failures: list[Exception], timeout: float = 120.0) -> None:
    """Return once every batch job has a job id; a clear error if submission fails or hangs.

    Waiting for the jobs to *start* has no limit (queues can be long); a
    job that could not even be submitted would otherwise leave the run
    waiting for workers forever.  ``failures`` collects the exceptions of
    job submissions (see :func:`batch_cluster`).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if failures:
            raise submission_error(method, failures[0])
        jobs = list(cluster.workers.values())
        if jobs and all(getattr(job, "job_id", None) for job in jobs):
            log.info("Batch job ids: %s", ", ".join(str(job.job_id) for job in jobs))
            return
        time.sleep(0.5)
    raise BatchSubmissionError(f"integration.mp.method={method}: the batch jobs were not submitted within "
                               f"{timeout:.0f} s (see the submission error above, or check the batch system "
                               f"and the jobqueue.{'sge' if method == 'drmaa' else method} configuration)")


def batch_cluster(method: str, njobs: int, nproc: int, failures: list[Exception]):
    """A dask-jobqueue cluster object for ``method``; its jobs each run ``nproc`` workers of one core.

    A job whose submission fails appends its exception to ``failures``
    (dask-jobqueue itself only logs it).
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ParameterError(f"integration.mp.method={method} needs dask-jobqueue (pip install dask-jobqueue)") \
            from None
    if method not in BATCH_CLUSTER_CLASSES:
        raise ParameterError(f"integration.mp.method={method} is not a known back end")
    if method == "drmaa":
        from .drmaa_cluster import drmaa_cluster_class, drmaa_library

        drmaa_library()  # a clear error now rather than a failed submission later
        cluster_class = drmaa_cluster_class()
    else:
        cluster_class = getattr(dask_jobqueue, BATCH_CLUSTER_CLASSES[method])
    config_name = "sge" if method == "drmaa" else method

    class RecordedJob(cluster_class.job_cls):
        async def start(self):
            try:
                await super().start()
            except Exception as error:
                failures.append(error)
                raise

    import dask

    options = {"cores": nproc, "processes": nproc}
    for key, default in (("memory", f"{2 * nproc}GB"),):
        if dask.config.get(f"jobqueue.{config_name}.{key}", None) is None:
            options[key] = default
    # After the configured prologue, the job exports the workers' quieter settings and glibc's one heap.
    options["job_script_prologue"] = list(dask.config.get(f"jobqueue.{config_name}.job-script-prologue", None) or [])
    exported = {**dask_environment(QUIET_WORKER_SETTINGS), **WORKER_MALLOC_ENVIRONMENT}
    options["job_script_prologue"] += [f"export {name}={shlex.quote(value)}" for name, value in exported.items()]
    # dask-jobqueue logs a failed submission with a traceback; braggint reports it in one line instead.
    logging.getLogger("tornado.application").setLevel(logging.CRITICAL)
    return cluster_class(job_cls=RecordedJob, **options)
