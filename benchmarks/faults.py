"""What a broken memcached costs a cold worker: load the corpus from cold (everything
compiles) with a healthy, a dead (connection refused), a hung (SIGSTOP) memcached, and one
node of three dead, against the same load with no memcached tier at all; and how soon the
tier is used again after the server comes back.

    python -m benchmarks.faults [--quick] [--json FILE]

Targets (issue 5): hung within 1.5x and dead within 1.2x of no memcached tier; the tier is
used again within seconds of coming back, without a restart.

With ``--redis``, the same for Redis, printed as JSON: cold loads with a SIGSTOPped and a
killed redis-server against no Redis tier, and a 3-master cluster with replicas losing
the master of the generation key mid-run (the exceptions that reached a render, which
must be 0, and the seconds until Redis hits resume).

    python -m benchmarks.faults --redis [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from jinja2 import Environment, FileSystemLoader

from tiered_bccache import (
    FileSystemTier,
    MemcachedTier,
    MemoryTier,
    RedisTier,
    TieredBytecodeCache,
)
from tiered_bccache.benchkit import servers
from tiered_bccache.benchkit.corpus import generate_corpus
from tiered_bccache.benchkit.timing import Target, ratios, rotated, verdict

from .common import parser, write_json

SECRET = secrets.token_bytes(32)
COOLDOWN = 2.0


def _cold_load(loader_dir: str, names: list[str], tiers: list[Any]) -> tuple[float, dict[str, Any]]:
    """Seconds to load every template with a new cache over ``tiers`` (a new process's
    first page views: with the remote tier unusable, every template compiles), and the
    tier errors and compiles counted."""
    cache = TieredBytecodeCache(tiers, secret=SECRET, breaker_cooldown=COOLDOWN)
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    started = time.perf_counter()
    for name in names:
        env.get_template(name)
    elapsed = time.perf_counter() - started
    stats = cache.stats()
    cache.close()
    return elapsed, {"errors": sum(t.errors for t in stats.tiers), "compiles": stats.compiles}


def _interleaved(
    loader_dir: str, names: list[str], scenarios: dict[str, Callable[[], list[Any]]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    """Cold loads of every scenario, ``repeats`` rounds in a rotating order."""
    times: dict[str, list[float]] = {label: [] for label in scenarios}
    details: dict[str, list[dict[str, Any]]] = {label: [] for label in scenarios}
    for r in range(repeats):
        for label in rotated(list(scenarios), r):
            elapsed, info = _cold_load(loader_dir, names, scenarios[label]())
            times[label].append(elapsed)
            details[label].append(info)
    return times, details


def _recovery(server: servers.MemcachedServer, loader_dir: str, name: str) -> float:
    """Seconds from SIGCONT of a hung server until the cache writes to it again."""
    memory = MemoryTier()
    tier = MemcachedTier(server.address, prefix="rec" + secrets.token_hex(4))
    cache = TieredBytecodeCache([memory, tier], secret=SECRET, breaker_cooldown=COOLDOWN)
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    server.pause()
    try:
        for _ in range(3):  # enough failures to open the breaker
            memory.clear()
            env.get_template(name)
    finally:
        server.resume()
    resumed = time.monotonic()
    deadline = resumed + 30
    while time.monotonic() < deadline:
        memory.clear()
        env.get_template(name)
        if cache.stats().tiers[1].hits or cache.stats().tiers[1].writes:
            return time.monotonic() - resumed
        time.sleep(0.01)
    return float("inf")


def memcached_faults(count: int, repeats: int) -> dict[str, Any]:
    """The memcached scenarios and the recovery of a hung server, printed as a table."""
    if servers.memcached_binary() is None:
        raise SystemExit("benchmarks.faults needs memcached: apt-get install memcached")
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbc-faults-"))
        loader_dir = os.path.join(work, "templates")
        names = generate_corpus(loader_dir, count=count)
        four = [servers.MemcachedServer(servers.free_port(), ["-m", "256"]) for _ in range(4)]
        healthy, hung, node2, node3 = stack.enter_context(servers.running(four))
        dead = f"127.0.0.1:{servers.free_port()}"  # nobody listens: connection refused
        hung.pause()

        def fs() -> FileSystemTier:
            return FileSystemTier(tempfile.mkdtemp(dir=work))

        def mc(address: str | list[str]) -> MemcachedTier:
            return MemcachedTier(address, prefix="f" + secrets.token_hex(4))

        scenarios: dict[str, Callable[[], list[Any]]] = {
            "no memcached tier": lambda: [MemoryTier(), fs()],
            "memcached healthy": lambda: [MemoryTier(), fs(), mc(healthy.address)],
            "memcached dead (refused)": lambda: [MemoryTier(), fs(), mc(dead)],
            "memcached hung (SIGSTOP)": lambda: [MemoryTier(), fs(), mc(hung.address)],
            "cluster, 1 of 3 nodes dead": lambda: [
                MemoryTier(),
                fs(),
                mc([node2.address, node3.address, dead]),
            ],
        }
        results, details = _interleaved(loader_dir, names, scenarios, repeats)
        hung.resume()
        recovery = _recovery(hung, loader_dir, names[-1])

    base = results["no memcached tier"]
    targets = {"memcached dead (refused)": 1.2, "memcached hung (SIGSTOP)": 1.5}
    print(f"cold load of {count} templates, {repeats} repeats, breaker cooldown {COOLDOWN:g} s")
    print(f"{'scenario':<30} {'median':>9} {'ratio':>7} {'spread':>13} {'errors':>7}  target")
    report: dict[str, Any] = {"count": count, "repeats": repeats, "scenarios": {}}
    for label, times in results.items():
        r = ratios(times, base)
        errors = statistics.median(d["errors"] for d in details[label])
        limit = targets.get(label)
        goal = "" if limit is None else verdict(Target(label, "", "", limit), r.median)
        print(
            f"{label:<30} {statistics.median(times) * 1000:>7.0f}ms {r.median:>6.2f}x "
            f"{r.low:>5.2f}..{r.high:<5.2f} {errors:>7.0f}  {goal}"
        )
        report["scenarios"][label] = {
            "seconds": times,
            "ratio_median": r.median,
            "ratio_min": r.low,
            "ratio_max": r.high,
            "errors_median": errors,
        }
    print(f"back in use {recovery:.2f} s after a hung server resumed (cooldown {COOLDOWN:g} s)")
    report["recovery_seconds"] = recovery
    return report


def redis_faults(count: int, repeats: int) -> dict[str, Any]:
    """Cold loads with a SIGSTOPped and a killed Redis against no Redis tier at all, and
    a cluster losing the master of the generation key mid-run; printed as JSON."""
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbc-faults-"))
        loader_dir = os.path.join(work, "templates")
        names = generate_corpus(loader_dir, count=count)
        hung = stack.enter_context(servers.private_redis_process())
        if hung is None:
            raise SystemExit(
                "benchmarks.faults --redis needs redis-server: apt-get install redis-server"
            )
        hung.pause()
        dead = f"redis://127.0.0.1:{servers.free_port()}/0"

        def redis(url: str) -> list[Any]:
            return [MemoryTier(), RedisTier(url, prefix="f" + secrets.token_hex(4))]

        scenarios: dict[str, Callable[[], list[Any]]] = {
            "none": lambda: [MemoryTier()],
            "sigstop": lambda: redis(hung.url),
            "killed": lambda: redis(dead),
        }
        samples, _ = _interleaved(loader_dir, names, scenarios, repeats)
        out: dict[str, Any] = {
            "templates": len(names),
            "cold_load_none_ms": statistics.median(samples["none"]) * 1000,
            **{
                f"{mode}_vs_none": ratios(samples[mode], samples["none"]).as_dict()
                for mode in ("sigstop", "killed")
            },
        }
        out["cluster"] = _cluster_failover(stack, work, names, loader_dir)
    print(json.dumps(out, indent=2))
    return out


def _cluster_failover(
    stack: ExitStack, work: str, names: list[str], loader_dir: str
) -> dict[str, Any]:
    """Kill the master holding the generation key of a 3+3 cluster mid-run."""
    nodes = [
        servers.RedisServer(
            servers.free_cluster_port(),
            servers.redis_cluster_args(),
            directory=tempfile.mkdtemp(dir=work),
        )
        for _ in range(6)
    ]
    stack.enter_context(servers.running(nodes))
    servers.create_redis_cluster(nodes)
    memory = MemoryTier()
    tier = RedisTier([n.address for n in nodes[:2]], prefix="failover")
    cache = TieredBytecodeCache([memory, tier], secret=SECRET, breaker_cooldown=1.0)
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    for name in names:
        env.get_template(name)
    node = tier.client.get_node_from_key(f"{tier.prefix}:gen")
    next(n for n in nodes if n.address == f"{node.host}:{node.port}").stop()
    killed = time.monotonic()
    render_errors = 0
    resumed: float | None = None
    loads = 0
    while time.monotonic() - killed < 60:
        memory.clear()
        before = cache.stats().tiers[1]
        for name in names[:4]:
            try:
                env.get_template(name)
            except Exception:
                render_errors += 1
            loads += 1
        after = cache.stats().tiers[1]
        if after.hits - before.hits == 4 and after.errors == before.errors:
            resumed = time.monotonic() - killed
            break
        time.sleep(0.01)
    tier.close()
    return {
        "render_errors": render_errors,
        "loads_during_failover": loads,
        "seconds_until_hits_resume": resumed,
        "tier_errors_counted": cache.stats().tiers[1].errors,
        "cluster_node_timeout_ms": servers.CLUSTER_NODE_TIMEOUT_MS,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("faults", __doc__)
    p.add_argument("--redis", action="store_true", help="Redis faults instead (JSON)")
    p.add_argument("--count", type=int, default=None, help="templates in the corpus")
    p.add_argument("--repeats", dest="rounds", type=int, help="the same as --rounds")
    args = p.parse_args(argv)
    count = args.count or (12 if args.quick else 36)
    repeats = args.rounds or (3 if args.quick else (7 if args.redis else 5))
    write_json(args.json, (redis_faults if args.redis else memcached_faults)(count, repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
