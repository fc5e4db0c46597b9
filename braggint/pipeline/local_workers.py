"""A run's local Dask workers, behind a helper process forked from the command.

A run on several local workers (``mp.method=multiprocessing``, njobs x
nproc > 1) forks one helper process from the command, before the command
starts any thread and after its own imports (numpy, numba, braggint).
The helper imports Dask and the block tasks, initialises numba's CPU
target and starts a Dask LocalCluster whose nannies fork their workers from
it (Dask's ``fork`` multiprocessing method): every worker starts with all
a block task needs loaded, and the helper paid for it once.  The command
leaves its block tasks pickled in files, sends the helper their names
through a pipe and gets their reports back; it never imports Dask.  Off
Linux the helper and the workers are fresh interpreters instead
(:data:`START_METHOD`).  Before each fork the forking process freezes its
objects out of the cyclic garbage collector: a child's collections would
otherwise write to every page it shares with its parent and so copy it
(sweep400 summation only on two workers: a worker's private memory at its
end 147-151 -> 123-125 MB, the run's minor page faults 140-168 k -> 127-141 k).

Why: on two cores the command's serial part (reading the inputs, the
predictions, the profile model) is what the workers wait for, and Dask in
the command's process took that part's interpreter lock.  Dask's import
(0.35-0.45 s of CPU) ran beside the reading of the inputs, and the local
cluster's scheduler and nannies (0.3 s to start) ran in the command's
event loop.  Before, a fork server imported numpy, numba, Dask and braggint
afresh for the workers (1.1-1.5 s of CPU on the other core).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import sys
import tempfile

from ..collector import collector_paused
from ..compiler import load_cached_kernels
from ..errors import BraggintError
from .heap import limit_malloc_arenas

log = logging.getLogger("braggint")

#: Seconds the command waits for the helper to stop its workers and exit before it kills it.
STOP_TIMEOUT = 30.0

#: How the helper is started, and how its nannies start the workers: forks on Linux; elsewhere (macOS, whose
#: system libraries are not safe to fork) fresh interpreters, which import what they need themselves, more
#: slowly but safely.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class HelperProcessError(BraggintError):
    """The helper process of the local workers ended while the run still needed it."""


class LocalWorkers:
    """The command's side of the helper: starts it, hands it block tasks, stops it.

    Start it before this process starts any thread (a fork copies only the
    calling thread); ``wait`` returns once the workers are up.
    """

    def __init__(self, njobs: int, nproc: int, kernels: tuple[str, ...] = ()):
        context = multiprocessing.get_context(START_METHOD)
        self._connection, theirs = context.Pipe()
        for stream in (sys.stdout, sys.stderr):  # else the helper would write their buffered text again
            stream.flush()
        self._process = context.Process(target=_serve, args=(theirs, njobs, nproc, kernels, START_METHOD),
                                        name="braggint-workers")
        _before_fork(START_METHOD)
        self._process.start()
        theirs.close()
        self._ready = False
        self._stopping = False

    def wait(self) -> LocalWorkers:
        """Wait until the workers have started (logging it); a failure to start is raised here."""
        if not self._ready:
            kind, content = self._receive()
            if kind == "failed":
                raise content
            log.info("%s", content)
            self._ready = True
        return self

    def run(self, calls: list[tuple[str, object, tuple]], advance) -> tuple[list, list[BaseException]]:
        """``function(*arguments)`` of every ``(key, function, arguments)`` as Dask tasks on the workers (see
        :func:`.executor.run_on_client`); ``advance()`` as each one ends.  Returns ``(results, errors)``.

        Each call is pickled to a file of its own in a temporary folder
        (``TMPDIR``), removed once every task has ended, and the task only
        names the file (:func:`run_parcel`).  A block's rows (6 MB a block
        at 400 images on two workers) thus neither go through the pipe to
        the helper nor through Dask's scheduler: handed over as pickled
        bytes that way, they reached the workers 0.10-0.12 s after the
        command let them go (the pipe 30 ms of it).
        """
        self.wait()
        with tempfile.TemporaryDirectory(prefix="braggint-tasks-") as folder:
            parcels = []
            for number, (key, function, arguments) in enumerate(calls):
                path = os.path.join(folder, f"{number}.pickle")
                with open(path, "wb") as handle:
                    pickle.dump((function, arguments), handle, protocol=pickle.HIGHEST_PROTOCOL)
                parcels.append((key, path))
            self._send(("run", parcels))
            while True:
                kind, content = self._receive()
                if kind == "done":
                    advance()
                else:
                    return content

    def on_every_worker(self, function) -> dict:
        """``function()`` run on every worker (Dask's ``Client.run``): ``{worker address: its result}``."""
        self.wait()
        self._send(("each", function))
        return self._receive()[1]

    def stop(self) -> None:
        """Ask the helper to stop the workers and end, without waiting: it does so while this process goes
        on (a run's reduction and output), and :meth:`close` then finds it ended or nearly so."""
        if not self._stopping:
            self._stopping = True
            try:
                self._connection.send(("close", None))
            except OSError:  # the helper is gone already
                pass

    def close(self) -> None:
        """Stop the workers and the helper; it is killed when it does not end within :data:`STOP_TIMEOUT`."""
        self.stop()
        self._process.join(STOP_TIMEOUT)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send(self, message) -> None:
        try:
            self._connection.send(message)
        except OSError:
            raise self._ended() from None

    def _receive(self):
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            raise self._ended() from None

    def _ended(self) -> HelperProcessError:
        self._process.join(1.0)
        return HelperProcessError(f"the helper process of the local workers ended unexpectedly (exit status "
                                  f"{self._process.exitcode}); integration.mp.nproc=1 runs without it")


def run_parcel(path: str):
    """``function(*arguments)`` of the ``(function, arguments)`` pickled in the file ``path``: a task of
    :meth:`LocalWorkers.run`."""
    with open(path, "rb") as handle:
        function, arguments = pickle.load(handle)
    return function(*arguments)


def _serve(connection, njobs: int, nproc: int, kernels: tuple[str, ...], method: str) -> None:
    """The helper's life: start the cluster (its workers by the multiprocessing start ``method``, with the
    cached ``kernels`` loaded), then run what the command asks until it says ``close`` (or goes away)."""
    try:
        client, cluster = _start_cluster(njobs, nproc, kernels, method)
    except BaseException as error:  # noqa: BLE001 - whatever it is, the command raises it
        connection.send(("failed", error))
        return
    from .executor import run_on_client

    connection.send(("ready", f"Started {njobs * nproc} local Dask workers (dashboard {client.dashboard_link})"))
    try:
        while True:
            try:
                kind, content = connection.recv()
            except EOFError:  # the command has gone
                break
            if kind == "run":
                calls = [(key, run_parcel, (path,)) for key, path in content]
                outcome = run_on_client(client, calls, lambda: connection.send(("done", None)))
                connection.send(("finished", outcome))
            elif kind == "each":
                connection.send(("each", client.run(content)))
            else:
                break
    finally:
        client.close()
        cluster.close()


def _before_fork(method: str) -> None:
    """Before this process forks (``method`` "fork"): move every object it holds out of the cyclic garbage
    collector's reach (``gc.freeze``), so that the children's collections do not write to the pages they
    share with it and copy them (each copied page is memory the child touches afresh)."""
    if method == "fork":
        gc.freeze()


def _start_cluster(njobs: int, nproc: int, kernels: tuple[str, ...], method: str):
    """``(client, cluster)``: a local cluster whose workers are forks of this (helper) process, which first
    loads what they need, the cached ``kernels`` included (``method`` "fork"), or fresh interpreters
    ("spawn"), which load the kernels as their blocks call them.

    Before any thread starts here, glibc is held to its one main heap
    (:func:`.heap.limit_malloc_arenas`), which the forks inherit: a worker
    runs its block task on a thread of its own, and that thread was given a
    heap of its own or a share of another's as it happened.  A block on a
    secondary heap paid for its parts' memory afresh (the large case on two
    workers, summation only: 160-210 k page faults against 27-32 k in the
    other block, that block ending 0.3-0.5 s later; with one heap 27-31 k in
    each, 4 alternating runs)."""
    limit_malloc_arenas(1)
    with collector_paused():  # Dask's modules and the block tasks'
        import dask
        from distributed import Client

        from . import worker_preload  # noqa: F401 - numba's CPU target and the block tasks
        from .executor import QUIET_WORKER_SETTINGS, local_cluster, worker_environment

    if method == "fork":
        load_cached_kernels(kernels)
    dask.config.set({**QUIET_WORKER_SETTINGS, "distributed.nanny.pre-spawn-environ": worker_environment(),
                     "distributed.worker.multiprocessing-method": method})
    _before_fork(method)
    cluster = local_cluster(njobs, nproc)
    return Client(cluster, set_as_default=False), cluster
