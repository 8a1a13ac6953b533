"""``tiered-bccache bench``: check the servers it was given, run the benchmark engine of
:mod:`tiered_bccache.benchkit.hitpath`, print its tables, write its JSON and chart."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..tiers.memcached import MemcachedTier, parse_server
from ..tiers.redis import RedisTier
from .common import check_plot, plot_needs_matplotlib, read_secret, write_json
from .defaults import MEMCACHED_TIMEOUT, REDIS_TIMEOUT
from .errors import CommandError, describe_error, usage_error
from .progress import ProgressBar, progress_bar

if TYPE_CHECKING:
    from ..benchkit.tools import ToolsReport

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """``tiered-bccache bench``."""
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
        threads=args.threads,
        quick=args.quick,
        processes=not args.no_processes,
        string_iterations=2 if args.quick and args.string_iterations else args.string_iterations,
    )
    bar = progress_bar(args)
    try:
        report = run_bench(config, progress=bar, log=bar.log)
    except ValueError as exc:  # ConfigurationError included: what we were given is wrong
        raise usage_error(str(exc)) from exc
    finally:
        bar.done()
    print(report.format_table())
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
