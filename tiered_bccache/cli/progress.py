"""The progress display of the long commands (``bench``, ``warm``): one line on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """A one-line progress bar, redrawn in place with ``\\r``; a ``progress(stage, done,
    total)`` callback. Disabled, it draws nothing; :meth:`log` still prints."""

    def __init__(self, stream: IO[str], *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self._open = False
        self._drawn = 0.0
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage != self._stage:
            self.done()  # a new stage gets a line of its own
            self._stage = stage
        # Redrawing on every step of a long run would cost more than the run's own work.
        elif done < total and now - self._drawn < 0.05:
            return
        self._drawn = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{stage:<10} [{bar}] {done}/{total}")
        self._open = True
        if done >= total:
            self.done()
        else:
            self.stream.flush()

    def done(self) -> None:
        """End the bar's line, if one is drawn."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def log(self, message: str) -> None:
        """Print ``message`` on its own line, below the bar."""
        self.done()
        print(message, file=self.stream, flush=True)


def progress_bar(args: argparse.Namespace) -> ProgressBar:
    """The bar on stderr, drawn when stderr is a terminal or ``--progress`` was given."""
    return ProgressBar(sys.stderr, enabled=bool(args.progress) or sys.stderr.isatty())
