"""How a command fails: one ``tiered-bccache: error: ...`` line on stderr and an exit status
(2 for a usage or configuration error, 1 for a failure at run time). The library's
warnings are :mod:`.logs`'."""

from __future__ import annotations

import sys

from ..errors import ConfigurationError

__all__ = [
    "PROG",
    "CommandError",
    "classify",
    "describe_error",
    "print_error",
    "usage_error",
]

PROG = "tiered-bccache"


class CommandError(Exception):
    """A failure to report as one line, with the exit status to return."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CommandError:
    """A :class:`CommandError` with exit status 2: what we were given is wrong."""
    return CommandError(message, 2)


def describe_error(exc: BaseException) -> str:
    """``TypeName: message``, or the type's name alone when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def print_error(message: str) -> None:
    """Print ``tiered-bccache: error: message`` on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def classify(exc: Exception) -> tuple[int, str]:
    """The exit status and the one line to print for an exception that reached main."""
    if isinstance(exc, CommandError):
        return exc.status, str(exc)
    if isinstance(exc, ConfigurationError):
        return 2, str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return 1, f"{exc.strerror or exc}{where}"
    return 1, f"{describe_error(exc)} (run with --debug for the traceback)"
