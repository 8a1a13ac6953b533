"""``tiered-bccache stats`` and ``clear``: what each tier holds now and emptying it. Each
tier describes itself (``describe()``, see :class:`~tiered_bccache.ByteTier`); what is
printed is read from those reports, so a new tier needs no code here."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..cache import TieredBytecodeCache
from ..humanize import counted, human_bytes
from .common import (
    FileSystemSpec,
    filesystem_spec,
    load_cache_from_args,
    read_secret,
    require_reachable,
    write_json,
)
from .errors import print_error

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
    before = {id(t): _describe(t) for t in (cache.tiers if cache is not None else ())}
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
        report = before[id(tier)]
        what = _holdings(report) or "cleared"
        if report.get("generation") is not None:
            # Read again: the clear bumped it.
            after = _describe(tier).get("generation") or "unknown (unreachable)"
            what += f" -> {after} (the old entries age out)"
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
    report = _describe(tier)
    if report.get("this_process_only"):
        # Whose process: the application's module was imported here, or the tier is new.
        report["from_application"] = named
    return report


def _describe(tier: Any) -> dict[str, object]:
    """The tier's own report (its name and type for a tier with the four methods only)."""
    describe = getattr(tier, "describe", None)
    report = dict(describe()) if callable(describe) else {}
    report.setdefault("name", str(getattr(tier, "name", type(tier).__name__)))
    report.setdefault("kind", type(tier).__name__)
    return report


def _holdings(report: dict[str, object]) -> str | None:
    """What ``clear`` says a tier held, from the keys of its report every tier may give:
    ``entries``, ``bytes``, ``generation``; None when it gives none of them."""
    parts = []
    entries = report.get("entries")
    if isinstance(entries, int):
        parts.append(counted(entries, "entry", "entries"))
        nbytes = report.get("bytes")
        if isinstance(nbytes, int):
            parts.append(human_bytes(nbytes))
    if "generation" in report:
        parts.append(f"namespace generation {report['generation']}")
    if not parts:
        return None
    where = " (this process's memory)" if report.get("this_process_only") else ""
    return ", ".join(parts) + where


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
        else:
            _print_other(t)
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


def _print_other(t: dict[str, Any]) -> None:
    """A kind of tier with no layout here: what its report gives beyond name and kind."""
    shown = [f"{key} {value}" for key, value in t.items() if key not in ("name", "kind")]
    if shown:
        print(f"   {', '.join(shown)}")


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
