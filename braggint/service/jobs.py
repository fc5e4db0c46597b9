"""The job database (SQLite in the service's state directory): nothing is lost when the service restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

STATES = ("queued", "running", "succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    request TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, created);
"""


class JobStore:
    """Thread-safe access to the jobs table."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA journal_mode=WAL")

    def _row(self, row) -> dict | None:
        if row is None:
            return None
        job = dict(row)
        job["request"] = json.loads(job["request"])
        return job

    def submit(self, request: dict, output_dir: str, priority: int, idempotency_key: str | None) -> tuple[dict, bool]:
        """Add a job; returns ``(job, created)`` (an existing job for a repeated idempotency key)."""
        with self._lock:
            if idempotency_key:
                existing = self._db.execute("SELECT * FROM jobs WHERE idempotency_key = ?",
                                            (idempotency_key,)).fetchone()
                if existing is not None:
                    return self._row(existing), False
            job_id = uuid.uuid4().hex
            self._db.execute("INSERT INTO jobs (id, idempotency_key, state, priority, created, request, output_dir) "
                             "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                             (job_id, idempotency_key, priority, time.time(), json.dumps(request), output_dir))
            return self.get(job_id, locked=True), True

    def get(self, job_id: str, locked: bool = False) -> dict | None:
        if locked:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(self, state: str | None = None, limit: int = 100) -> list[dict]:
        with self._lock:
            if state:
                rows = self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY created DESC LIMIT ?",
                                        (state, limit)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
            return [self._row(r) for r in rows]

    def claim_next(self) -> dict | None:
        """The highest-priority, oldest queued job, marked running."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, created "
                                   "LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
                             (time.time(), row["id"]))
            return self.get(row["id"], locked=True)

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ? AND state = 'running'",
                             (state, time.time(), error, job_id))

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued job at once; a running one is marked cancelled (its process is stopped)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state IN "
                             "('queued', 'running')", (time.time(), job_id))
            return self.get(job_id, locked=True)

    def requeue_interrupted(self) -> int:
        """Jobs left running by a previous service process go back to the queue (they resume from the
        blocks they finished)."""
        with self._lock:
            cursor = self._db.execute("UPDATE jobs SET state = 'queued', started = NULL WHERE state = 'running'")
            return cursor.rowcount
