"""``tiered-bccache bench``: check the servers it was given, run the benchmark engine of
:mod:`tiered_bccache.benchkit.hitpath`, print each table as soon as it is measured, write
the JSON and chart. SIGTERM and SIGHUP end it as Ctrl-C does: the private servers it
started are stopped and its temporary directory removed."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..tiers.memcached import MemcachedTier, parse_server
from ..tiers.redis import RedisTier
from .common import check_plot, plot_needs_matplotlib, read_secret, write_json
from .defaults import MEMCACHED_TIMEOUT, REDIS_TIMEOUT
from .errors import PROG, CommandError, describe_error, usage_error
from .progress import ProgressBar, progress_bar

if TYPE_CHECKING:
    from ..benchkit.tools import ToolsReport

__all__ = ["Terminated", "run"]


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives during ``bench``, so that
    the run unwinds through the same ``finally`` blocks and context managers as after
    Ctrl-C. A BaseException, as KeyboardInterrupt is: no ``except Exception`` on the way
    may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: The signals that end a run as Ctrl-C does: ``kill`` and ``timeout`` send SIGTERM, a
#: closed terminal SIGHUP.
_ENDING = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _ending_signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` for the duration, then put the
    previous handlers back.

    Their default action kills the process at once: no ``finally`` runs, the private
    memcached and redis-server live on (re-parented to init) and the temporary directory
    stays. Only the first signal raises: a second one, while the first unwinds, must not
    cut short the clean-up it asked for. A signal the caller ignores (``nohup`` ignores
    SIGHUP) stays ignored, and outside the main thread, where Python cannot set a
    handler, nothing changes."""
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated(signum)

    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for ending in _ENDING:
            if signal.getsignal(ending) is not signal.SIG_IGN:
                previous[ending] = signal.signal(ending, handler)
    try:
        yield
    finally:
        for ending, old in previous.items():
            signal.signal(ending, old)


def run(args: argparse.Namespace) -> int:
    """``tiered-bccache bench``; exit status 128 + the signal number when SIGTERM or
    SIGHUP ends it, after the clean-up."""
    bar = progress_bar(args)
    try:
        with _ending_signals_raise():
            return _run(args, bar)
    except Terminated as exc:
        bar.done()
        name = signal.Signals(exc.signum).name
        print(f"{PROG}: terminated by {name}", file=sys.stderr)
        return 128 + exc.signum


def _run(args: argparse.Namespace, bar: ProgressBar) -> int:
    # The engine and its corpus generator are tooling of their own: imported only here.
    from ..benchkit.hitpath import BenchConfig, run_bench

    check_plot(args.plot)
    if args.templates is not None and not os.path.isdir(args.templates):
        raise usage_error(f"--templates {args.templates}: not a directory")
    if args.memcached is not None:
        _probe_memcached(args.memcached)
    if args.redis is not None:
        _probe_redis(args.redis)
    config = BenchConfig(
        templates=args.templates,
        count=args.count,
        rounds=args.rounds,
        memcached=args.memcached,
        no_memcached=args.no_memcached,
        redis=args.redis,
        no_redis=args.no_redis,
        directory=args.dir,
        secret=read_secret(args),
        quick=args.quick,
        processes=not args.no_processes,
        string_iterations=2 if args.quick and args.string_iterations else args.string_iterations,
    )
    shown = 0

    def show(table: str) -> None:
        # Each table as soon as it is measured: a run that fails or is stopped later
        # keeps what it measured. The bar's line ends first, for a terminal showing both.
        nonlocal shown
        bar.done()
        print(("\n" if shown else "") + table, flush=True)
        shown += 1

    try:
        report = run_bench(config, progress=bar, log=bar.log, show=show)
    except ConfigurationError as exc:  # what we were given is wrong (the templates)
        raise usage_error(str(exc)) from exc
    finally:
        bar.done()
    data = report.as_dict()
    tools = _run_tools(bar) if args.tools else None
    if tools is not None:
        data["tools"] = tools.as_dict()
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as file:
            write_json(data, file)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot is not None:
        try:
            report.plot(args.plot)
        except ImportError as exc:
            raise plot_needs_matplotlib() from exc
        print(f"wrote {args.plot}", file=sys.stderr)
    if tools is not None and tools.failed():
        raise CommandError(
            "tools benchmark: a tool failed, or its outputs differed from its baseline"
        )
    return 0


def _run_tools(bar: ProgressBar) -> ToolsReport | None:
    """The tools benchmark, quick, over the tools installed next to this interpreter;
    None (and a line saying why) when none is."""
    from ..benchkit.tools import QUICK, TOOLS, ToolsConfig, missing_tools, run_tools_bench

    print()
    missing = missing_tools()
    if len(missing) == len(TOOLS):
        print(
            f"tools benchmark: left out, none of its tools is installed ({', '.join(missing)}): "
            "pip install 'tiered-bccache[bench-tools]'"
        )
        return None
    config = ToolsConfig(sizes=QUICK, rounds=3, startup_rounds=7)
    try:
        report = run_tools_bench(config, progress=bar)
    finally:
        bar.done()
    print(report.format_table())
    return report


def _probe_memcached(address: str) -> None:
    """Fail before the run when --memcached is malformed or does not answer."""
    try:
        parse_server(address)
    except ConfigurationError as exc:
        raise usage_error(f"--memcached: {exc}") from exc
    probe = MemcachedTier(
        address,
        prefix="tiered-bccache-probe",
        timeout=MEMCACHED_TIMEOUT,
        connect_timeout=MEMCACHED_TIMEOUT,
    )
    _ask("memcached", address, probe, probe.client.version)


def _probe_redis(address: str) -> None:
    """Fail before the run when --redis is malformed or does not answer."""
    try:
        parse_server(address)
        probe = RedisTier(
            f"redis://{address}/0", timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT
        )
    except ConfigurationError as exc:
        raise usage_error(f"--redis: {exc}") from exc
    _ask("redis", address, probe, probe.client.ping)


def _ask(
    kind: str, address: str, probe: MemcachedTier | RedisTier, ask: Callable[[], object]
) -> None:
    """Call ``ask`` (a request to the server), then close ``probe``; no answer is a
    failure to report."""
    try:
        ask()
    except Exception as exc:
        raise CommandError(f"{kind} at {address} is unreachable: {describe_error(exc)}") from exc
    finally:
        probe.close()
