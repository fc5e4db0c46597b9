"""Where block tasks run: in this process, on a local Dask cluster, or on a batch system.

``integration.mp.method`` chooses: ``multiprocessing`` runs njobs x nproc
local worker processes (in-process when that is 1); ``sge``, ``lsf``,
``pbs`` and ``slurm`` submit njobs batch jobs of nproc single-threaded
workers through dask-jobqueue (queue, account, walltime and memory from
the standard dask-jobqueue configuration, ``~/.config/dask/jobqueue.yaml``
or ``DASK_JOBQUEUE__...`` variables); ``drmaa`` does the same through Grid
Engine's DRMAA-compatible submission; ``BRAGGINT_SCHEDULER=tcp://host:port``
attaches to a running Dask scheduler instead.
"""

from __future__ import annotations

import contextlib
import logging
import os

import dask

from ..errors import ParameterError

log = logging.getLogger("braggint")


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


@contextlib.contextmanager
def scheduler(mp):
    """A ``dask.compute`` scheduler argument for the run, torn down afterwards."""
    address = os.environ.get("BRAGGINT_SCHEDULER")
    njobs, nproc = worker_count(mp)
    if address:
        from distributed import Client

        with Client(address) as client:
            log.info("Using the Dask scheduler at %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    if mp.method == "multiprocessing":
        if njobs * nproc == 1:
            yield "synchronous"
            return
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=njobs * nproc, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            log.info("Started %d local Dask workers (dashboard %s)", njobs * nproc, client.dashboard_link)
            yield client
        return
    cluster = batch_cluster(mp.method, njobs, nproc)
    from distributed import Client

    with cluster, Client(cluster) as client:
        cluster.scale(jobs=njobs)
        log.info("Submitted %d %s jobs of %d workers (dashboard %s)", njobs, mp.method, nproc,
                 client.dashboard_link)
        yield client


def batch_cluster(method: str, njobs: int, nproc: int):
    """A dask-jobqueue cluster object for ``method``; its jobs each run ``nproc`` workers of one core."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ParameterError(f"integration.mp.method={method} needs dask-jobqueue (pip install dask-jobqueue)") \
            from None
    classes = {"sge": "SGECluster", "drmaa": "SGECluster", "lsf": "LSFCluster", "pbs": "PBSCluster",
               "slurm": "SLURMCluster"}
    if method not in classes:
        raise ParameterError(f"integration.mp.method={method} is not a known back end")
    cluster_class = getattr(dask_jobqueue, classes[method])
    config_name = "sge" if method == "drmaa" else method
    options = {"cores": nproc, "processes": nproc}
    for key, default in (("memory", f"{2 * nproc}GB"),):
        if dask.config.get(f"jobqueue.{config_name}.{key}", None) is None:
            options[key] = default
    return cluster_class(**options)
