"""``tiered-bccache warm``: compile every template of a source and write it through to
every tier of a cache, in one process or a pool of spawned ones."""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import time
from dataclasses import dataclass

from jinja2 import Environment, FileSystemLoader

from ..cache import TieredBytecodeCache
from ..humanize import counted
from .common import CACHE_WAYS, load_cache_from_args, read_secret, require_reachable
from .defaults import MEMCACHED_TIMEOUT, REDIS_TIMEOUT
from .errors import CommandError, describe_error, print_error, usage_error
from .loading import load_cache, load_object
from .progress import ProgressBar, progress_bar

__all__ = ["WarmPlan", "WarmResult", "run"]


@dataclass(frozen=True, slots=True)
class WarmPlan:
    """What each warming process needs to build its own environment and cache."""

    source: str
    cache_target: str | None
    tier_specs: tuple[str, ...]
    secret: bytes | None
    allow_unsigned: bool


@dataclass(frozen=True, slots=True)
class WarmResult:
    """One template: its error line (None if it compiled), and the tiers that failed to
    store it or skipped it."""

    name: str
    error: str | None
    failed_tiers: tuple[str, ...] = ()
    skipped_tiers: tuple[str, ...] = ()


def run(args: argparse.Namespace) -> int:
    """``tiered-bccache warm``."""
    started = time.monotonic()
    env = _source_environment(args.source)
    target = _cache_target(args, env)
    cache = load_cache_from_args(args, target)
    names = _template_names(env, args.extensions, args.source)
    if not names:
        raise usage_error(f"SOURCE {args.source!r} holds no templates")
    require_reachable(cache)
    bar = progress_bar(args)
    jobs = min(args.jobs, len(names))
    results: list[WarmResult] = []
    if jobs == 1:
        warmer = _Warmer(env, cache)
        for name in names:
            results.append(warmer.warm(name))
            bar("warm", len(results), len(names))
        cache.close()
    else:
        cache.close()
        plan = WarmPlan(
            args.source,
            target,
            tuple(args.tier),
            read_secret(args),
            args.allow_unsigned,
        )
        results = _warm_in_pool(plan, names, jobs, bar)
    bar.done()
    return _report(cache, names, results, jobs, time.monotonic() - started)


def _source_environment(source: str) -> Environment:
    if os.path.isdir(source):
        return Environment(loader=FileSystemLoader(source))
    if ":" not in source or os.sep in source:
        raise usage_error(f"SOURCE {source!r} is neither a directory nor module:attribute")
    env = load_object(source)
    if not isinstance(env, Environment):
        raise usage_error(f"SOURCE {source!r} is a {type(env).__name__}, not a jinja2.Environment")
    if env.loader is None:
        raise usage_error(f"SOURCE {source!r}: the environment has no loader")
    return env


def _cache_target(args: argparse.Namespace, env: Environment) -> str | None:
    """The cache to fill, as module:attribute: CACHE or --cache; with neither, nor any
    --tier, the cache of the application's environment that SOURCE names (the one its
    lookups will read). None leaves the cache to the --tier specs."""
    if args.cache is not None or args.tier or os.path.isdir(args.source):
        return str(args.cache) if args.cache is not None else None
    if not isinstance(env.bytecode_cache, TieredBytecodeCache):
        held = type(env.bytecode_cache).__name__ if env.bytecode_cache is not None else "None"
        raise usage_error(
            f"SOURCE {args.source!r} is a jinja2.Environment whose bytecode_cache is {held}, "
            f"not a TieredBytecodeCache: give the cache to fill as {CACHE_WAYS}"
        )
    return str(args.source)


def _template_names(env: Environment, extensions: str | None, source: str) -> list[str]:
    exts = [e.strip().lstrip(".") for e in extensions.split(",")] if extensions else None
    try:
        return sorted(env.list_templates(extensions=exts))
    except TypeError as exc:  # FunctionLoader and friends cannot list
        raise usage_error(f"SOURCE {source!r}: its loader cannot list templates ({exc})") from exc


_TRIPPED = ("open", "half-open")


class _Warmer:
    """Compiles templates of one environment into one cache, one at a time."""

    def __init__(self, env: Environment, cache: TieredBytecodeCache) -> None:
        self.env = env
        self.cache = cache

    def warm(self, name: str) -> WarmResult:
        env, cache = self.env, self.cache
        before = cache.stats().tiers
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            # Compiled and keyed as a lookup through Jinja's loader does, written to
            # every tier.
            cache.put(env, name, filename, source)
        except Exception as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if isinstance(line, int) else ""
            return WarmResult(name, " ".join(describe_error(exc).split()) + where)
        after = zip(cache.stats().tiers, before, strict=True)
        failed, skipped = [], []
        for a, b in after:
            # A skip behind an open breaker is a failure too: the entry is not there.
            if a.errors > b.errors or (a.skipped > b.skipped and a.breaker in _TRIPPED):
                failed.append(a.name)
            elif a.skipped > b.skipped:
                skipped.append(a.name)
        return WarmResult(name, None, tuple(failed), tuple(skipped))


# -- the process pool -------------------------------------------------------------------------

# Each warming process builds its environment and cache once, in the pool's initializer;
# the tasks then find them here. Only worker processes ever set it.
_worker: _Warmer | None = None


def _worker_init(plan: WarmPlan) -> None:
    global _worker
    env = _source_environment(plan.source)
    cache = load_cache(
        plan.cache_target,
        list(plan.tier_specs),
        memcached_timeout=MEMCACHED_TIMEOUT,
        redis_timeout=REDIS_TIMEOUT,
        secret=plan.secret,
        allow_unsigned=plan.allow_unsigned,
    )
    _worker = _Warmer(env, cache)


def _worker_warm(name: str) -> WarmResult:
    assert _worker is not None
    return _worker.warm(name)


def _warm_in_pool(
    plan: WarmPlan, names: list[str], jobs: int, bar: ProgressBar
) -> list[WarmResult]:
    # spawn, not fork: a fresh interpreter per worker imports the application's module
    # as the user would, and inherits no threads or sockets of ours.
    context = multiprocessing.get_context("spawn")
    results: list[WarmResult] = []
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(plan,)
    ) as pool:
        try:
            # A chunk per task keeps the inter-process chatter well below the compile
            # time, while the bar still moves often.
            chunksize = max(1, len(names) // (jobs * 8))
            for result in pool.map(_worker_warm, names, chunksize=chunksize):
                results.append(result)
                bar("warm", len(results), len(names))
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise CommandError(
                f"a warming process died ({exc}); run with --jobs 1 to see why"
            ) from exc
    return results


# -- the report -------------------------------------------------------------------------------


def _report(
    cache: TieredBytecodeCache,
    names: list[str],
    results: list[WarmResult],
    jobs: int,
    seconds: float,
) -> int:
    failed = [r for r in results if r.error is not None]
    tiers = ", ".join(getattr(t, "name", type(t).__name__) for t in cache.tiers)
    processes = counted(jobs, "process", "processes")
    print(
        f"compiled {len(results) - len(failed)} of {counted(len(names), 'template')} into "
        f"{tiers} ({processes}, {seconds:.1f} s)"
    )
    tier_failures: dict[str, int] = {}
    skips: dict[str, int] = {}
    for r in results:
        for name in r.failed_tiers:
            tier_failures[name] = tier_failures.get(name, 0) + 1
        for name in r.skipped_tiers:
            skips[name] = skips.get(name, 0) + 1
    for name, n in skips.items():
        print(f"note: {name} skipped {counted(n, 'template')}, too large for it")
    if any(getattr(t, "holds_objects", False) for t in cache.tiers):
        print("note: a memory tier lives in one process: warming it has no lasting effect")
    if failed:
        print(f"failed to compile ({len(failed)}):")
        for r in failed:
            print(f"  {r.name}: {r.error}")
    for name, n in tier_failures.items():
        print_error(f"{name} failed to store {counted(n, 'template')}")
    return 1 if failed or tier_failures else 0
