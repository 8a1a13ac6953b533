"""What the library logs while a command runs (a tier failing, an entry rejected): on
stderr through a handler of our own that is removed again when the command ends, so that
a caller's logging stays as it was. Without ``--debug`` the messages are held until the
command ends: printed after a success, dropped after a failure, whose one line says what
went wrong."""

from __future__ import annotations

import logging
import sys
from typing import IO

__all__ = ["HeldWarnings", "LibraryLogs"]


class HeldWarnings(logging.Handler):
    """Keeps the library's messages until the command has ended."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def flush_to(self, stream: IO[str]) -> None:
        """Print the held lines on ``stream`` and forget them."""
        for line in self.lines:
            print(line, file=stream)
        self.lines.clear()


class LibraryLogs:
    """The ``tiered_bccache`` logger's output for the duration of one command: held
    (:class:`HeldWarnings`) or, with ``debug``, shown as it happens with tracebacks'
    level of detail. :meth:`close` puts the logger back as it was."""

    def __init__(self, debug: bool) -> None:
        self._handler: logging.Handler = (
            logging.StreamHandler(sys.stderr) if debug else HeldWarnings()
        )
        self._handler.setFormatter(
            logging.Formatter("%(name)s: %(levelname)s: %(message)s" if debug else "%(message)s")
        )
        self._logger = logging.getLogger("tiered_bccache")
        self._level = self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.DEBUG if debug else logging.WARNING)

    def flush_to(self, stream: IO[str]) -> None:
        """Print what was held (nothing with ``debug``: it was shown already)."""
        if isinstance(self._handler, HeldWarnings):
            self._handler.flush_to(stream)

    def close(self) -> None:
        logger = self._logger
        logger.removeHandler(self._handler)
        logger.setLevel(self._level)
        if not logger.handlers:
            # What the library logs after the command ended (a connection closed at
            # exit) is not news; without a handler Python would print it on stderr.
            logger.addHandler(logging.NullHandler())
