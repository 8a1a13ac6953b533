"""The access-trace format: one line per cache lookup, for sizing the cache afterwards.

A trace is a text file whose first line is exactly ``# tiered_bccache trace v1``, followed
by one line per lookup::

    <key> <size>

``key`` is a non-empty run of printable ASCII without whitespace (the cache's keys are hex
digests), ``size`` a non-negative decimal integer: the bytes of the entry's marshalled code,
or 0 when it is not known yet (a miss, recorded before the template is compiled). Every
line, the last one included, ends with ``\\n``, so a trace torn by a killed writer is
detected instead of yielding a truncated key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple

from .errors import TieredCacheError

__all__ = ["HEADER", "TraceFormatError", "TraceRecord", "TraceWriter", "read_trace"]

#: The first line of every trace, newline excluded.
HEADER = "# tiered_bccache trace v1"

_HEADER_LINE = HEADER.encode("ascii") + b"\n"
_RECORD = re.compile(rb"([\x21-\x7e]+) ([0-9]+)\n")


class TraceRecord(NamedTuple):
    """One lookup: the entry's key and the size of its marshalled code (0 if unknown)."""

    key: str
    size: int


class TraceFormatError(TieredCacheError, ValueError):
    """Raised by :func:`read_trace` on a wrong header or a malformed line; the message
    starts with ``<path>:<line>:`` and :attr:`path` / :attr:`lineno` hold the same."""

    def __init__(self, path: str, lineno: int, reason: str) -> None:
        super().__init__(f"{path}:{lineno}: {reason}")
        self.path = path
        self.lineno = lineno


class TraceWriter:
    """Writes a trace: the header at construction, then one line per :meth:`record`.

    The file is created or truncated. :meth:`record` does not validate its arguments,
    because it runs on the cache's hit path; :func:`read_trace` rejects anything malformed,
    naming the line. Writing after :meth:`close` raises :class:`ValueError`.

    Example::

        with TraceWriter("trace.txt") as trace:
            trace.record("3f2a9c", 2048)
    """

    __slots__ = ("_file", "_write")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Binary mode: BufferedWriter.write holds the buffer's own lock for the whole call,
        # so one write() per line is enough for lines from concurrent threads never to
        # interleave, and the hit path needs no lock of ours. (TextIOWrapper adds a
        # layer of pending state above that lock and promises nothing.)
        self._file = open(path, "wb")
        self._write = self._file.write
        self._write(_HEADER_LINE)

    def record(self, key: str, size: int) -> None:
        """Append one lookup of ``key`` whose entry is ``size`` bytes (0 if unknown)."""
        # One buffered write of one preformatted line, nothing else: see __init__.
        self._write(f"{key} {size}\n".encode())

    def close(self) -> None:
        """Flush and close the file; closing twice is harmless."""
        self._file.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._file.closed

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_trace(path: str | os.PathLike[str]) -> Iterator[TraceRecord]:
    """Yield the records of the trace at ``path``, in order, reading it lazily.

    Raises :class:`TraceFormatError` (when iteration reaches it) if the first line is not
    the header or a later line is not ``<key> <size>\\n``, and :class:`OSError` if the file
    cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as file:
        first = file.readline()
        if first != _HEADER_LINE:
            raise TraceFormatError(name, 1, f"expected the header {HEADER!r}, got {first[:80]!r}")
        match = _RECORD.fullmatch
        for lineno, line in enumerate(file, start=2):
            m = match(line)
            if m is None:
                raise TraceFormatError(name, lineno, _why(line))
            yield TraceRecord(m[1].decode("ascii"), int(m[2]))


def _why(line: bytes) -> str:
    """Say what is wrong with a line the record pattern rejected."""
    if not line.endswith(b"\n"):
        return f"no newline at the end of {line[:80]!r}: the trace is truncated"
    return f"expected '<key> <size>', got {line[:80]!r}"
