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
import logging
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    from .errors import PROG, HeldWarnings, classify, print_error
    from .parser import build_parser

    args = build_parser().parse_args(argv)
    debug = bool(args.debug)
    # The library's warnings (a tier failing, an entry rejected) go to stderr through a
    # handler of our own that main removes again, so a caller's logging stays as it was.
    # Without --debug they are held until the command ends: printed after a success,
    # dropped after a failure, whose one line says what went wrong.
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if debug else HeldWarnings()
    handler.setFormatter(
        logging.Formatter("%(name)s: %(levelname)s: %(message)s" if debug else "%(message)s")
    )
    logger = logging.getLogger("tiered_bccache")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        module, _, function = str(args.run).partition(":")
        run: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f".{module}", __name__), function
        )
        status = run(args)
        if isinstance(handler, HeldWarnings) and status == 0:
            handler.flush_to(sys.stderr)
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
        logger.removeHandler(handler)
        logger.setLevel(level)
        if not logger.handlers:
            # What the library logs after the command ended (a connection closed at
            # exit) is not news; without a handler Python would print it on stderr.
            logger.addHandler(logging.NullHandler())
