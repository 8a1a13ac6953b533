"""What a broken memcached costs a cold worker: load the corpus from cold (everything
compiles) with a healthy, a dead (connection refused), a hung (SIGSTOP) memcached, and one
node of three dead, against the same load with no memcached tier at all; and how soon the
tier is used again after the server comes back.

    python -m benchmarks.faults [--quick] [--json FILE]

Targets (issue 5): hung within 1.5x and dead within 1.2x of no memcached tier; the tier is
used again within seconds of coming back, without a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from jinja2 import Environment, FileSystemLoader

from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.bench import private_memcached, private_memcached_process
from tiered_bccache.corpus import generate_corpus

SECRET = secrets.token_bytes(32)
COOLDOWN = 2.0


@contextmanager
def _server() -> Iterator[tuple[str, int]]:
    """A private memcached and the pid of the very process we started."""
    with private_memcached_process() as started:
        if started is None:
            raise SystemExit("benchmarks.faults needs memcached: apt-get install memcached")
        address, proc = started
        yield address, proc.pid


def _cold_load(loader_dir: str, names: list[str], tiers: list[Any]) -> tuple[float, dict[str, Any]]:
    cache = TieredBytecodeCache(tiers, secret=SECRET, breaker_cooldown=COOLDOWN)
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    started = time.perf_counter()
    for name in names:
        env.get_template(name)
    elapsed = time.perf_counter() - started
    stats = cache.stats()
    cache.close()
    return elapsed, {"errors": sum(t.errors for t in stats.tiers), "compiles": stats.compiles}


def _recovery(address: str, pid: int, loader_dir: str, name: str) -> float:
    """Seconds from SIGCONT of a hung server until the cache writes to it again."""
    memory = MemoryTier()
    tier = MemcachedTier(address, prefix="rec" + secrets.token_hex(4))
    cache = TieredBytecodeCache([memory, tier], secret=SECRET, breaker_cooldown=COOLDOWN)
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(3):  # enough failures to open the breaker
            memory.clear()
            env.get_template(name)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    deadline = resumed + 30
    while time.monotonic() < deadline:
        memory.clear()
        env.get_template(name)
        if cache.stats().tiers[1].hits or cache.stats().tiers[1].writes:
            return time.monotonic() - resumed
        time.sleep(0.01)
    return float("inf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer templates and repeats")
    parser.add_argument("--count", type=int, default=None, help="templates in the corpus")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    count = args.count or (12 if args.quick else 36)
    repeats = args.repeats or (3 if args.quick else 5)
    results: dict[str, list[float]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbc-faults-"))
        loader_dir = os.path.join(work, "templates")
        names = generate_corpus(loader_dir, count=count)
        healthy, _ = stack.enter_context(_server())
        hung, hung_pid = stack.enter_context(_server())
        node2, _ = stack.enter_context(_server())
        node3, _ = stack.enter_context(_server())
        with private_memcached() as gone:
            dead = gone  # a port whose server has exited: connection refused
        assert dead is not None
        os.kill(hung_pid, signal.SIGSTOP)
        stack.callback(os.kill, hung_pid, signal.SIGCONT)

        def fs() -> FileSystemTier:
            return FileSystemTier(tempfile.mkdtemp(dir=work))

        def mc(address: str | list[str]) -> MemcachedTier:
            return MemcachedTier(address, prefix="f" + secrets.token_hex(4))

        scenarios: dict[str, Callable[[], list[Any]]] = {
            "no memcached tier": lambda: [MemoryTier(), fs()],
            "memcached healthy": lambda: [MemoryTier(), fs(), mc(healthy)],
            "memcached dead (refused)": lambda: [MemoryTier(), fs(), mc(dead)],
            "memcached hung (SIGSTOP)": lambda: [MemoryTier(), fs(), mc(hung)],
            "cluster, 1 of 3 nodes dead": lambda: [MemoryTier(), fs(), mc([node2, node3, dead])],
        }
        for r in range(repeats):
            order = list(scenarios.items())
            order = order[r % len(order) :] + order[: r % len(order)]
            for label, make in order:
                elapsed, info = _cold_load(loader_dir, names, make())
                results.setdefault(label, []).append(elapsed)
                details.setdefault(label, []).append(info)
        os.kill(hung_pid, signal.SIGCONT)
        recovery = _recovery(hung, hung_pid, loader_dir, names[-1])

    base = results["no memcached tier"]
    targets = {"memcached dead (refused)": 1.2, "memcached hung (SIGSTOP)": 1.5}
    print(f"cold load of {count} templates, {repeats} repeats, breaker cooldown {COOLDOWN:g} s")
    print(f"{'scenario':<30} {'median':>9} {'ratio':>7} {'spread':>13} {'errors':>7}  target")
    report: dict[str, Any] = {"count": count, "repeats": repeats, "scenarios": {}}
    for label, times in results.items():
        ratios = [t / b for t, b in zip(times, base, strict=True)]
        med = statistics.median(ratios)
        errors = statistics.median(d["errors"] for d in details[label])
        limit = targets.get(label)
        verdict = "" if limit is None else f"<= {limit:g}x {'met' if med <= limit else 'MISSED'}"
        print(
            f"{label:<30} {statistics.median(times) * 1000:>7.0f}ms {med:>6.2f}x "
            f"{min(ratios):>5.2f}..{max(ratios):<5.2f} {errors:>7.0f}  {verdict}"
        )
        report["scenarios"][label] = {
            "seconds": times,
            "ratio_median": med,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "errors_median": errors,
        }
    print(f"back in use {recovery:.2f} s after a hung server resumed (cooldown {COOLDOWN:g} s)")
    report["recovery_seconds"] = recovery
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
