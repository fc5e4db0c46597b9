"""Wall time by stage: block tasks and the parent process both keep one of these.

Stages are named for what the time was spent on (``read``, ``background``,
``profile fitting``, ...); the log prints them in the order they first ran,
and ``benchmarks/run.py`` reads them from there.
"""

from __future__ import annotations

import contextlib
import time


class StageTimes(dict):
    """Seconds per stage name, summed over every time the stage ran."""

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds

    @classmethod
    def summed(cls, many) -> "StageTimes":
        """Stage-wise sum of several stage-time dicts (e.g. every block's)."""
        total = cls()
        for times in many:
            for name, seconds in times.items():
                total.add(name, seconds)
        return total

    def as_text(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.items())
