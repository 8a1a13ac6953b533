"""``tiered-bccache stats`` and ``clear``: what each tier holds now and emptying it. Both
look into the tiers and their servers (memcached's and Redis's own statistics, the
namespace generation), which lives here once."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..cache import TieredBytecodeCache
from ..humanize import counted, human_bytes
from ..tiers.filesystem import FileSystemTier
from ..tiers.memcached import MemcachedTier
from ..tiers.memory import MemoryTier
from ..tiers.redis import RedisTier
from .common import (
    FileSystemSpec,
    filesystem_spec,
    load_cache_from_args,
    read_secret,
    require_reachable,
    write_json,
)
from .errors import describe_error, print_error

__all__ = ["run_clear", "run_stats"]

_ABSENT = "does not exist (nothing stored; not created)"


def run_stats(args: argparse.Namespace) -> int:
    """``tiered-bccache stats``."""
    cache, absent = _load(args)
    named = args.cache is not None
    tiers = [_tier_report(t, named) for t in _in_order(cache, absent)]
    counters = None if cache is None else cache.stats()
    if args.json:
        write_json(
            {"tiers": tiers, "counters": None if counters is None else counters.as_dict()},
            sys.stdout,
        )
    else:
        _print_stats(tiers, counters)
    unreachable = [t for t in tiers if t.get("reachable") is False]
    for t in unreachable:
        print_error(f"{t['name']} is unreachable: {t['error']}")
    return 1 if unreachable else 0


def run_clear(args: argparse.Namespace) -> int:
    """``tiered-bccache clear``."""
    cache, absent = _load(args)
    if cache is not None:
        require_reachable(cache)
    before: dict[int, str] = {}
    for tier in cache.tiers if cache is not None else ():
        if isinstance(tier, MemoryTier):
            before[id(tier)] = f"{counted(len(tier), 'entry', 'entries')} (this process's memory)"
        elif isinstance(tier, FileSystemTier):
            entries, nbytes = tier.size()
            before[id(tier)] = f"{counted(entries, 'entry', 'entries')}, {human_bytes(nbytes)}"
        elif isinstance(tier, (MemcachedTier, RedisTier)):
            before[id(tier)] = f"namespace generation {tier.generation()}"
    if cache is not None:
        cache.clear()
    errors = (
        {}
        if cache is None
        else {id(t): c.errors for t, c in zip(cache.tiers, cache.stats().tiers, strict=True)}
    )
    failed = []
    for tier in _in_order(cache, absent):
        if isinstance(tier, FileSystemSpec):
            print(f"cleared {tier.name}: nothing to clear, the directory does not exist")
            continue
        name = str(getattr(tier, "name", type(tier).__name__))
        if errors[id(tier)]:
            failed.append(name)
            continue
        what = before.get(id(tier), "cleared")
        if isinstance(tier, (MemcachedTier, RedisTier)):
            what += f" -> {tier.generation()} (the old entries age out)"
        print(f"cleared {name}: {what}")
    for name in failed:
        print_error(f"could not clear {name} (see the warning above)")
    return 1 if failed else 0


# -- looking into the tiers -------------------------------------------------------------------


def _load(
    args: argparse.Namespace,
) -> tuple[TieredBytecodeCache | None, dict[int, FileSystemSpec]]:
    """The cache to look into, and the fs tiers of the --tier specs whose directory does
    not exist, by position. Those are left out of the cache: building them would create
    the directory, and looking must change nothing. The cache is None when no tier is
    left to build."""
    absent: dict[int, FileSystemSpec] = {}
    if args.cache is None:
        for i, spec in enumerate(args.tier):
            fs = filesystem_spec(spec)
            # lexists: whatever is at the path (a file, a dangling link) is the tier's to
            # refuse, in its own words.
            if fs is not None and not os.path.lexists(fs.directory):
                absent[i] = fs
    present = [spec for i, spec in enumerate(args.tier) if i not in absent]
    if absent and not present:
        read_secret(args)  # the key options are still checked
        return None, absent
    cache = load_cache_from_args(args, args.cache, tier_specs=present, reads_entries=False)
    return cache, absent


def _in_order(cache: TieredBytecodeCache | None, absent: dict[int, FileSystemSpec]) -> list[Any]:
    """The tiers in lookup order, the absent directories in their places."""
    built = iter(cache.tiers if cache is not None else ())
    count = len(absent) + (len(cache.tiers) if cache is not None else 0)
    return [absent[i] if i in absent else next(built) for i in range(count)]


def _tier_report(tier: Any, named: bool) -> dict[str, object]:
    if isinstance(tier, FileSystemSpec):
        return {
            "name": tier.name,
            "kind": "filesystem",
            "directory": tier.directory,
            "exists": False,
            "entries": 0,
            "bytes": 0,
            "max_bytes": tier.max_bytes,
        }
    name = str(getattr(tier, "name", type(tier).__name__))
    if isinstance(tier, MemoryTier):
        return {
            "name": name,
            "kind": "memory",
            "entries": len(tier),
            "currsize": tier.currsize,
            "max_entries": tier.max_entries,
            "max_bytes": tier.max_bytes,
            "this_process_only": True,
            "from_application": named,
        }
    if isinstance(tier, FileSystemTier):
        entries, nbytes = tier.size()
        return {
            "name": name,
            "kind": "filesystem",
            "directory": tier.directory,
            "exists": True,
            "entries": entries,
            "bytes": nbytes,
            "max_bytes": tier.max_bytes,
        }
    if isinstance(tier, MemcachedTier):
        return _memcached_report(tier, name)
    if isinstance(tier, RedisTier):
        return _redis_report(tier, name)
    return {"name": name, "kind": type(tier).__name__}


def _memcached_report(tier: MemcachedTier, name: str) -> dict[str, object]:
    report: dict[str, object] = {"name": name, "kind": "memcached", "prefix": tier.prefix}
    servers = _server_stats(tier)
    down = [
        f"{s['server']}: {s['error']}" if len(servers) > 1 else str(s["error"])
        for s in servers
        if not s["reachable"]
    ]
    try:
        report["generation"] = tier.generation()
    except Exception as exc:
        report["generation"] = None
        down = down or [describe_error(exc)]
    report["reachable"] = not down
    if down:
        report["error"] = "; ".join(down)
    report["servers"] = servers
    return report


def _redis_report(tier: RedisTier, name: str) -> dict[str, object]:
    report: dict[str, object] = {"name": name, "kind": "redis", "prefix": tier.prefix}
    try:
        report["generation"] = tier.generation()
        report["servers"] = tier.server_stats()
        report["reachable"] = True
    except Exception as exc:
        report.setdefault("generation", None)
        report["servers"] = []
        report["reachable"] = False
        report["error"] = describe_error(exc)
    return report


def _server_stats(tier: MemcachedTier) -> list[dict[str, object]]:
    """The ``stats`` of every server of the tier, or the error that stopped it."""
    wanted = (
        "curr_items",
        "bytes",
        "limit_maxbytes",
        "evictions",
        "get_hits",
        "get_misses",
    )
    clients = getattr(tier.client, "clients", None)  # a HashClient holds one per server
    pairs = list(clients.items()) if isinstance(clients, dict) else [(tier.name, tier.client)]
    out: list[dict[str, object]] = []
    for server, client in pairs:
        name = str(server).removeprefix("memcached:")
        try:
            raw = client.stats()
        except Exception as exc:
            out.append({"server": name, "reachable": False, "error": describe_error(exc)})
            continue
        values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
        row: dict[str, object] = {"server": name, "reachable": True}
        row.update({k: values.get(k) for k in wanted})
        out.append(row)
    return out


# -- the text report --------------------------------------------------------------------------


def _print_stats(tiers: list[dict[str, Any]], counters: Any) -> None:
    print(f"{counted(len(tiers), 'tier')}, in lookup order:")
    for i, t in enumerate(tiers, 1):
        print(f"{i}. {t['name']}")
        if t["kind"] == "memory":
            _print_memory(t)
        elif t["kind"] == "filesystem":
            limit = "no max_bytes" if t["max_bytes"] is None else f"max_bytes {t['max_bytes']}"
            if not t["exists"]:
                print(f"   directory {t['directory']} {_ABSENT}; {limit}")
                continue
            print(f"   directory {t['directory']}")
            print(
                f"   entries {t['entries']}, {t['bytes']} bytes ({human_bytes(t['bytes'])}); "
                f"{limit}"
            )
        elif t["kind"] == "memcached":
            _print_memcached(t)
        elif t["kind"] == "redis":
            _print_redis(t)
    print()
    if counters is None:
        print("counters: none, no tier was built (every directory is missing)")
        return
    print(
        f"counters (this process): lookups {counters.lookups}, hits {counters.hits}, "
        f"misses {counters.misses}, compiles {counters.compiles}, "
        f"lease_waits {counters.lease_waits}"
    )
    columns = ("hits", "misses", "promotions", "writes", "rejected", "skipped", "errors")
    width = max(len(t.name) for t in counters.tiers)
    print(f"  {'tier':<{width}} " + " ".join(f"{c:>10}" for c in columns) + "    breaker")
    for t in counters.tiers:
        cells = " ".join(f"{getattr(t, c):>10}" for c in columns)
        print(f"  {t.name:<{width}} {cells}    {t.breaker}")


def _print_memory(t: dict[str, Any]) -> None:
    bounds = ", ".join(f"{k} {t[k]}" for k in ("max_entries", "max_bytes") if t[k] is not None)
    where = (
        "this process's copy of the application's cache"
        if t["from_application"]
        else "new in this process: the application's memory tiers live in its processes"
    )
    print(f"   entries {t['entries']}, currsize {t['currsize']} ({bounds}); {where}")


def _print_memcached(t: dict[str, Any]) -> None:
    generation = t["generation"] or "unknown (unreachable)"
    print(f"   prefix {t['prefix']}, namespace generation {generation}")
    for s in t["servers"]:
        if not s["reachable"]:
            print(f"   server {s['server']}: unreachable: {s['error']}")
            continue
        print(
            f"   server {s['server']} (the whole server, every prefix): curr_items "
            f"{s['curr_items']}, bytes {s['bytes']} ({human_bytes(s['bytes'] or 0)}), "
            f"limit_maxbytes {s['limit_maxbytes']} ({human_bytes(s['limit_maxbytes'] or 0)}),"
            f" evictions {s['evictions']}, get_hits {s['get_hits']}, "
            f"get_misses {s['get_misses']}"
        )


def _print_redis(t: dict[str, Any]) -> None:
    generation = t["generation"] or "unknown (unreachable)"
    print(f"   prefix {t['prefix']}, namespace generation {generation}")
    if not t["reachable"]:
        print(f"   unreachable: {t['error']}")
    for s in t["servers"]:
        maxmemory = s["maxmemory"] or 0
        limit = f"{maxmemory} ({human_bytes(maxmemory)})" if maxmemory else "0 (no limit)"
        print(
            f"   server {s['server']} (the whole server, every prefix): keys "
            f"{s['keys']}, used_memory {s['used_memory']} "
            f"({human_bytes(s['used_memory'] or 0)}), maxmemory {limit}, policy "
            f"{s['maxmemory_policy']}, evicted_keys {s['evicted_keys']}, "
            f"keyspace_hits {s['keyspace_hits']}, keyspace_misses {s['keyspace_misses']}"
        )
