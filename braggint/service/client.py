"""A small client of the braggint service, for scripts: ``Client(url, token).submit(...)``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class ServiceError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read().decode()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise ServiceError(exc.code, message) from None
        return json.loads(text) if kind.startswith("application/json") else text

    def submit(self, experiments: str, output_dir: str, reflections: str | None = None,
               parameters: list[str] | None = None, phil: str | None = None, priority: int = 0,
               idempotency_key: str | None = None) -> dict:
        body = {"experiments": experiments, "output_dir": output_dir, "priority": priority}
        for name, value in (("reflections", reflections), ("parameters", parameters), ("phil", phil),
                            ("idempotency_key", idempotency_key)):
            if value is not None:
                body[name] = value
        return self._call("POST", "/jobs", body)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}")

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict]:
        query = f"?limit={limit}" + (f"&state={state}" if state else "")
        return self._call("GET", "/jobs" + query)["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def log(self, job_id: str) -> str:
        return self._call("GET", f"/jobs/{job_id}/log")

    def report(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}/report")

    def outputs(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{job_id}/outputs")

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 1.0) -> dict:
        """The job once it has succeeded, failed or been cancelled."""
        end = time.time() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled") or time.time() > end:
                return job
            time.sleep(poll)
