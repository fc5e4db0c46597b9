"""The HTTP API of ``braggint.serve`` (JSON over HTTP, standard library server, one thread per request).

    GET  /health                      liveness (no token needed)
    GET  /ready                       the runner is accepting jobs (no token needed)
    GET  /openapi.json                this API, described
    POST /jobs                        submit {experiments, reflections?, parameters?, phil?, output_dir,
                                      priority?, idempotency_key?}
    GET  /jobs[?state=queued&limit=N] list jobs (newest first, 100 unless limit says otherwise)
    GET  /jobs/<id>                   one job, with block progress
    POST /jobs/<id>/cancel            cancel a queued or running job
    GET  /jobs/<id>/log               the job's dials.integrate.log (text)
    GET  /jobs/<id>/report            its integration report (JSON), when finished
    GET  /jobs/<id>/outputs           the paths of its output files

Every other request needs ``Authorization: Bearer <token>``.  Paths in a
job must lie, after resolving links, under one of the configured data
roots.  Errors come back as ``{"error": message}`` with a 4xx status.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import BraggintError
from ..params import ParameterSet, integrate_master_text
from .config import ServiceConfig, hash_token
from .jobs import STATES, JobStore
from .runner import Runner, progress

log = logging.getLogger("braggint.service")

#: Files a finished job leaves in its output directory.
OUTPUTS = ("integrated.refl", "integrated.expt", "dials.integrate.log", "dials.integrate.phil", "report.json")


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def inside_roots(path: str, roots: list[str], what: str) -> str:
    """The resolved ``path`` when it lies under a data root (links resolved), else a 403."""
    if not isinstance(path, str) or not path:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{what}: a path is required")
    if not os.path.isabs(path):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{what}: {path!r} is not an absolute path")
    resolved = os.path.realpath(path)
    if not any(resolved == root or resolved.startswith(root + os.sep) for root in roots):
        raise RequestError(HTTPStatus.FORBIDDEN, f"{what}: {path!r} is outside the service's data roots")
    return resolved


def validate_request(body: dict, config: ServiceConfig) -> tuple[dict, str, int, str | None]:
    """A checked job request: ``(request, output_dir, priority, idempotency_key)``."""
    if not isinstance(body, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
    unknown = set(body) - {"experiments", "reflections", "parameters", "phil", "output_dir", "priority",
                           "idempotency_key"}
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(sorted(unknown))}")
    roots = config.data_roots
    request = {"experiments": inside_roots(body.get("experiments"), roots, "experiments")}
    if not os.path.isfile(request["experiments"]):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"experiments: {body['experiments']} does not exist")
    if body.get("reflections"):
        request["reflections"] = inside_roots(body["reflections"], roots, "reflections")
        if not os.path.isfile(request["reflections"]):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"reflections: {body['reflections']} does not exist")
    parameters = body.get("parameters", [])
    if not isinstance(parameters, list) or not all(isinstance(p, str) and "=" in p for p in parameters):
        raise RequestError(HTTPStatus.BAD_REQUEST, "parameters: a list of 'name=value' strings")
    master = ParameterSet.from_text(integrate_master_text(), "integrate.phil")
    try:
        for item in parameters:
            name, value = item.split("=", 1)
            if name.split(".")[-1] in ("log", "phil", "experiments", "reflections") and "output" in name:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"parameters: {name} is set by the service")
            master.assign(name, value)
        if body.get("phil"):
            master.apply_phil(str(body["phil"]), "request phil")
        master.extract()
    except BraggintError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    request["parameters"] = parameters + ["output.report=report.json"]
    if body.get("phil"):
        request["phil"] = str(body["phil"])
    output_dir = inside_roots(body.get("output_dir"), roots, "output_dir")
    priority = body.get("priority", 0)
    if not isinstance(priority, int):
        raise RequestError(HTTPStatus.BAD_REQUEST, "priority: an integer")
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or len(key) > 200):
        raise RequestError(HTTPStatus.BAD_REQUEST, "idempotency_key: a string of at most 200 characters")
    return request, output_dir, priority, key


def job_view(job: dict) -> dict:
    view = {k: job[k] for k in ("id", "state", "priority", "created", "started", "finished", "error", "output_dir",
                                "idempotency_key", "attempts")}
    view["request"] = job["request"]
    view["progress"] = progress(job["output_dir"]) if job["state"] != "queued" else None
    return view


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "braggint service", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": {"summary": "liveness", "security": []}},
        "/ready": {"get": {"summary": "readiness", "security": []}},
        "/jobs": {"get": {"summary": "list jobs", "parameters": [
                      {"name": "state", "in": "query", "schema": {"enum": list(STATES)}},
                      {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": 10000}}]},
                  "post": {"summary": "submit a job", "requestBody": {"content": {"application/json": {
                      "schema": {"type": "object", "required": ["experiments", "output_dir"], "properties": {
                          "experiments": {"type": "string"}, "reflections": {"type": "string"},
                          "parameters": {"type": "array", "items": {"type": "string"}},
                          "phil": {"type": "string"}, "output_dir": {"type": "string"},
                          "priority": {"type": "integer"}, "idempotency_key": {"type": "string"}}}}}}}},
        "/jobs/{id}": {"get": {"summary": "job status and progress"}},
        "/jobs/{id}/cancel": {"post": {"summary": "cancel a job"}},
        "/jobs/{id}/log": {"get": {"summary": "the job's log"}},
        "/jobs/{id}/report": {"get": {"summary": "the integration report"}},
        "/jobs/{id}/outputs": {"get": {"summary": "paths of the output files"}},
    },
}


class Service:
    """The state behind the HTTP handlers."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        os.makedirs(config.state_dir, exist_ok=True)
        self.store = JobStore(os.path.join(config.state_dir, "jobs.sqlite"))
        self.runner = Runner(self.store, config.max_concurrent_jobs)
        self._token_hashes = [t.lower() for t in config.token_sha256]

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        digest = hash_token(header[len("Bearer "):].strip())
        return any(hmac.compare_digest(digest, known) for known in self._token_hashes)

    def handle(self, method: str, path: str, query: dict, body: dict | None, auth: str | None):
        """``(status, payload)``; payload is a dict (JSON) or a str (text)."""
        if method == "GET" and path == "/health":
            return HTTPStatus.OK, {"status": "ok"}
        if method == "GET" and path == "/ready":
            ready = self.runner._thread.is_alive()
            return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), {"ready": ready}
        if not self.authorised(auth):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "a valid bearer token is required")
        if method == "GET" and path == "/openapi.json":
            return HTTPStatus.OK, OPENAPI
        if path == "/jobs":
            if method == "POST":
                request, output_dir, priority, key = validate_request(body, self.config)
                job, created = self.store.submit(request, output_dir, priority, key)
                return (HTTPStatus.CREATED if created else HTTPStatus.OK), job_view(job)
            if method == "GET":
                state = query.get("state")
                if state is not None and state not in STATES:
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"state must be one of {', '.join(STATES)}")
                try:
                    limit = int(query.get("limit", 100))
                except ValueError:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "limit must be a whole number") from None
                if not 1 <= limit <= 10_000:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "limit must be between 1 and 10000")
                return HTTPStatus.OK, {"jobs": [job_view(j) for j in self.store.list(state, limit)]}
        match = re.fullmatch(r"/jobs/([0-9a-f]{32})(/(cancel|log|report|outputs))?", path)
        if match is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {method} {path}")
        job = self.store.get(match.group(1))
        if job is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no job {match.group(1)}")
        action = match.group(3)
        if action is None and method == "GET":
            return HTTPStatus.OK, job_view(job)
        if action == "cancel" and method == "POST":
            job = self.store.cancel(job["id"])
            self.runner.cancel(job["id"])
            return HTTPStatus.OK, job_view(job)
        if action == "log" and method == "GET":
            try:
                return HTTPStatus.OK, open(os.path.join(job["output_dir"], "dials.integrate.log")).read()
            except OSError:
                raise RequestError(HTTPStatus.NOT_FOUND, "the job has no log yet") from None
        if action == "report" and method == "GET":
            try:
                return HTTPStatus.OK, json.load(open(os.path.join(job["output_dir"], "report.json")))
            except OSError:
                raise RequestError(HTTPStatus.NOT_FOUND, "the job has no report yet") from None
        if action == "outputs" and method == "GET":
            files = {name: os.path.join(job["output_dir"], name) for name in OUTPUTS
                     if os.path.exists(os.path.join(job["output_dir"], name))}
            return HTTPStatus.OK, {"state": job["state"], "files": files}
        raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}")


def make_handler(service: Service):
    class Handler(BaseHTTPRequestHandler):
        server_version = "braggint"

        def _respond(self, status: HTTPStatus, payload) -> None:
            if isinstance(payload, str):
                data, kind = payload.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            path, _, query_text = self.path.partition("?")
            query = dict(part.split("=", 1) for part in query_text.split("&") if "=" in part)
            body = None
            try:
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > 1 << 20:
                        # Drain a moderately large body so that the client reads the answer, not a reset.
                        remaining = min(length, 16 << 20)
                        while remaining > 0:
                            remaining -= len(self.rfile.read(min(remaining, 1 << 16)) or b"x" * remaining)
                        self.close_connection = True
                        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body over 1 MiB")
                    raw = self.rfile.read(length) if length else b"{}"
                    try:
                        body = json.loads(raw or b"{}")
                    except json.JSONDecodeError as exc:
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
                status, payload = service.handle(method, path.rstrip("/") or "/", query, body,
                                                 self.headers.get("Authorization"))
            except RequestError as exc:
                status, payload = exc.status, {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - the service keeps running; the client gets a 500
                log.exception("internal error on %s %s", method, self.path)
                status, payload = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}"}
            self._respond(status, payload)

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._dispatch("GET")

        def do_POST(self):  # noqa: N802
            self._dispatch("POST")

        def log_message(self, fmt, *args):
            log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def serve(config: ServiceConfig) -> ThreadingHTTPServer:
    """Start the runner and return the (not yet serving) HTTP server bound to the configured address."""
    service = Service(config)
    server = ThreadingHTTPServer((config.host, config.port), make_handler(service))
    server.service = service
    service.runner.start()
    return server
