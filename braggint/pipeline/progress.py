"""A one-line progress bar of finished blocks, on the terminal only.

Drawn on standard error when it is a terminal (or when
``BRAGGINT_PROGRESS=1`` asks for it, e.g. to see it through a pipe); the
log file gets the per-block lines instead.
"""

from __future__ import annotations

import os
import sys
import time

BAR_WIDTH = 30


class BlockProgress:
    """``stage [#####.....] done/total blocks, elapsed`` redrawn in place as blocks finish."""

    def __init__(self, stage: str, total: int, stream=None):
        self.stage = stage
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        forced = os.environ.get("BRAGGINT_PROGRESS")
        self.enabled = forced == "1" if forced in ("0", "1") else self.stream.isatty()
        self.start = time.monotonic()
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        self.stream.write(f"\r{self.stage} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
                          f"blocks, {time.monotonic() - self.start:.0f} s")
        self.stream.flush()
