"""The command line, ``tiered-bccache``: thin over the library.

Every command builds what it needs with the library's public API and prints the result;
one module per command (:mod:`.bench`, :mod:`.tune`, :mod:`.warm`, :mod:`.inspect` for
``stats`` and ``clear``), the parser in :mod:`.parser`. Errors reach the user as one
``tiered-bccache: error: ...`` line on stderr (:mod:`.errors`): exit status 2 for a usage
or configuration error, 1 for a failure at run time; ``--debug`` shows the traceback
instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# Not typing.TYPE_CHECKING: ``tiered-bccache run`` does not import typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .logs import LibraryLogs as _LibraryLogs

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    from .errors import PROG, classify, print_error
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    debug = bool(args.debug)
    module, _, function = str(args.run).partition(":")
    # ``run`` only waits for its command: the library logs nothing in this process, and
    # the wrapper's start-up is all it adds to the command (no logging imported).
    held = _held_library_logs(debug) if module != "run" else None
    try:
        run: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f".{module}", __name__), function
        )
        status = run(args)
        if held is not None and status == 0:
            held.flush_to(sys.stderr)
        return status
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, and keep the interpreter from
        # complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if debug:
            raise
        status, message = classify(exc)
        print_error(message)
        return status
    finally:
        if held is not None:
            held.close()


def _held_library_logs(debug: bool) -> _LibraryLogs:
    from .logs import LibraryLogs

    return LibraryLogs(debug)
