"""Runs queued jobs, each ``braggint.integrate`` in its own process, up to the concurrency limit."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading

from .jobs import JobStore

log = logging.getLogger("braggint.service")

#: The phil text of a request is written here, in the job's output directory.
PHIL_NAME = "service_request.phil"


def command_for(request: dict) -> list[str]:
    command = [sys.executable, "-m", "braggint.cli.integrate", request["experiments"]]
    if request.get("reflections"):
        command.append(request["reflections"])
    command += list(request.get("parameters", []))
    if request.get("phil"):
        command.append(PHIL_NAME)
    return command


def progress(output_dir: str) -> dict:
    """Blocks finished so far, from the job's log (first pass and, with profile fitting, the second)."""
    path = os.path.join(output_dir, "dials.integrate.log")
    try:
        text = open(path).read()
    except OSError:
        return {"blocks_done": 0, "blocks_total": None, "stage": "starting"}
    match = re.search(r"in (\d+) block\(s\) of frames", text)
    total = int(match.group(1)) if match else None
    fitting = "profile.fitting = False" not in text and "fitting = False" not in text
    done = len(re.findall(r"^ block \d+:", text, re.M)) + len(re.findall(r"(\d+) of \d+ blocks were already done",
                                                                           text))
    stage = "integrating" if total else "preparing"
    if "Saving" in text and "reflections to" in text:
        stage = "writing"
    return {"blocks_done": done, "blocks_total": (2 * total if fitting else total) if total else None,
            "stage": stage}


def _die_with_parent() -> None:
    """In the job's process (Linux): be killed when the service dies, so that a restarted service can
    resume the job from its finished blocks without another copy still writing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Runner:
    def __init__(self, store: JobStore, max_concurrent: int):
        self.store = store
        self.max_concurrent = max_concurrent
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="braggint-runner", daemon=True)

    def start(self) -> None:
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("re-queued %d job(s) interrupted by the last shutdown", requeued)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for process in self._processes.values():
                process.send_signal(signal.SIGTERM)
        self._thread.join(timeout=10)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            process = self._processes.get(job_id)
        if process is not None:
            process.terminate()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                free = self.max_concurrent - len(self._processes)
            job = self.store.claim_next() if free > 0 else None
            if job is None:
                self._stop.wait(0.2)
                continue
            threading.Thread(target=self._run, args=(job,), daemon=True).start()

    def _run(self, job: dict) -> None:
        request, output_dir = job["request"], job["output_dir"]
        os.makedirs(output_dir, exist_ok=True)
        if request.get("phil"):
            with open(os.path.join(output_dir, PHIL_NAME), "w") as handle:
                handle.write(request["phil"])
        with open(os.path.join(output_dir, "service.stderr"), "w") as stderr:
            process = subprocess.Popen(command_for(request), cwd=output_dir, stdout=subprocess.DEVNULL,
                                       stderr=stderr, start_new_session=True, preexec_fn=_die_with_parent)
            with self._lock:
                self._processes[job["id"]] = process
            code = process.wait()
        with self._lock:
            self._processes.pop(job["id"], None)
        if self._stop.is_set():
            return  # the service is stopping: the job stays 'running' and is re-queued on restart
        current = self.store.get(job["id"])
        if current and current["state"] == "cancelled":
            return
        if code == 0:
            self.store.finish(job["id"], "succeeded")
        else:
            error = open(os.path.join(output_dir, "service.stderr")).read().strip().splitlines()
            self.store.finish(job["id"], "failed", error[-1] if error else f"exit status {code}")

