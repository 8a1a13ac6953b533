"""``tiered-bccache run -- CMD ARGS...``: a command run with every Jinja Environment of
every Python process it starts given the cache (see :mod:`tiered_bccache.auto`), and one
line at the end saying what the cache did.

It imports neither Jinja nor the cache: the command's processes do, each for itself, and
this process only waits for them (its start-up is the wrapper's whole cost)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..autoconfig import AUTO_VAR, STATS_VAR, TIERS_ENV_VAR, default_specs
from .errors import PROG, usage_error

__all__ = ["run", "summarize"]

#: Counters each process reports, added up over the run.
_FIELDS = (
    "lookups",
    "hits",
    "compiles",
    "string_lookups",
    "string_hits",
    "string_compiles",
    "uncached",
    "compile_seconds",
)


def run(args: argparse.Namespace) -> int:
    """``tiered-bccache run``: the command's exit status (128 + N when a signal N ended
    it, as a shell reports it). With ``--quiet`` the command replaces this process (there
    is nothing to wait for), so it costs the command nothing but this start-up."""
    command: list[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise usage_error("run: give a command after --, e.g. tiered-bccache run -- dbt compile")
    _require_hook()
    env = dict(os.environ)
    env[AUTO_VAR] = "1"
    if args.tiers:
        env[TIERS_ENV_VAR] = args.tiers
    elif args.dir:
        env[TIERS_ENV_VAR] = " ".join(default_specs(os.path.abspath(args.dir)))
    if args.quiet:
        # No summary: no process of the command writes its counters.
        env.pop(STATS_VAR, None)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvpe(command[0], command, env)
        except OSError as exc:
            raise _cannot_run(command[0], exc) from exc
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tbc-run-") as stats_dir:
        env[STATS_VAR] = stats_dir
        status = _call(command, env)
        totals, processes = summarize(stats_dir)
    print(_line(totals, processes), file=sys.stderr)
    return 128 - status if status < 0 else status


def _call(command: list[str], env: dict[str, str]) -> int:
    """Run the command and wait for it; its exit code (-N for signal N).

    ``posix_spawnp`` rather than :mod:`subprocess`, whose import (locale, threading,
    selectors) would cost every wrapped command milliseconds."""
    # The command owns the terminal: Ctrl-C reaches it (and us, which waits for it
    # with SIGINT ignored; the command gets the default handler back).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            pid = os.posix_spawnp(command[0], command, env, setsigdef=(signal.SIGINT,))
        except OSError as exc:
            raise _cannot_run(command[0], exc) from exc
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cannot_run(program: str, exc: OSError) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return usage_error(f"run: {program!r}: command not found")
    return usage_error(f"run: {program!r}: {exc.strerror or exc}")


def summarize(directory: str) -> tuple[dict[str, float], int]:
    """The counters every process of a run wrote to ``directory``, added up, and how many
    processes used the cache."""
    import json  # only now: the command has ended

    totals: dict[str, float] = dict.fromkeys(_FIELDS, 0)
    processes = 0
    for name in os.listdir(directory):
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                record: dict[str, object] = json.load(f)
        except (OSError, ValueError):  # a process killed while writing
            continue
        processes += 1
        for field in _FIELDS:
            value = record.get(field, 0)
            if isinstance(value, (int, float)):
                totals[field] += value
    return totals, processes


def _line(totals: dict[str, float], processes: int) -> str:
    if not processes:
        return f"{PROG}: no Jinja template went through the cache"
    compiled = int(totals["compiles"] + totals["string_compiles"])
    uncached = int(totals["uncached"])
    parts = [
        f"{int(totals['hits']):,} templates and {int(totals['string_hits']):,} strings "
        "from the cache",
        f"{compiled:,} compiled ({totals['compile_seconds']:.2f} s)",
    ]
    if uncached:
        parts.append(f"{uncached:,} compiled uncached")
    plural = "es" if processes != 1 else ""
    return f"{PROG}: " + ", ".join(parts) + f", in {processes} process{plural}"


def _require_hook() -> None:
    """The start-up hook must be where the command's Python will read it (``site``'s
    directories, as ``site`` computed them: sysconfig would cost the wrapper's start-up
    milliseconds)."""
    import site

    directories = [*site.getsitepackages(), site.getusersitepackages()]
    if any(os.path.exists(os.path.join(d, "tiered_bccache.pth")) for d in directories):
        return
    purelib = directories[0]
    import importlib.util

    if importlib.util.find_spec("_tiered_bccache_hook") is not None:
        raise usage_error(
            f"run: the start-up hook tiered_bccache.pth is not in {purelib} (an editable "
            "install does not carry it: pip install . without -e, or copy it there)"
        )
    raise usage_error("run: the package is not installed with its start-up hook")
