"""Prometheus metrics for a cache: a collector over ``cache.stats()`` (optional extra).

The collector reads one snapshot per scrape, so it adds nothing to the hit path::

    from prometheus_client import REGISTRY
    from tiered_bccache.prometheus import TieredCacheCollector

    REGISTRY.register(TieredCacheCollector(cache))

Metric families (``tiered_bccache`` is the default namespace), per tier with a ``tier``
label: ``tier_hits_total``, ``tier_misses_total``, ``tier_promotions_total``,
``tier_writes_total``, ``tier_rejected_total`` (``reason``: mac, format, stale),
``tier_skipped_total``, ``tier_errors_total``, ``tier_read_bytes_total``,
``tier_written_bytes_total``, ``tier_latency_seconds`` (a summary: count and sum of byte
tier calls), ``tier_breaker_state`` (remote tiers; one series per ``state``, 1 for the
current one), ``tier_entries`` and ``tier_weight`` (memory tiers, as this process holds
them); and for the whole cache ``lookups_total``, ``hits_total``, ``misses_total``,
``compiles_total``, ``lease_waits_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .cache import TieredBytecodeCache

__all__ = ["TieredCacheCollector"]

_BREAKER_STATES = ("closed", "half-open", "open")

_TIER_COUNTERS = (
    ("hits", "hits", "Lookups this tier answered."),
    ("misses", "misses", "Lookups this tier did not answer (rejected entries included)."),
    ("promotions", "promotions", "Entries copied into this tier after a hit below it."),
    ("writes", "writes", "Entries written to this tier (promotions included)."),
    ("skipped", "skipped", "Calls not made: entry too large, or circuit breaker open."),
    ("errors", "errors", "Calls that raised; counted and logged by the cache."),
    ("read_bytes", "bytes_read", "Bytes read from this tier."),
    ("written_bytes", "bytes_written", "Bytes written to this tier."),
)

_TOTALS = (
    ("lookups", "Template lookups."),
    ("hits", "Lookups some tier answered."),
    ("misses", "Lookups that went to the compiler."),
    ("compiles", "Compiled templates written back to the tiers."),
    ("lease_waits", "Lookups that waited for another process compiling the same template."),
)


_MISSING = "TieredCacheCollector needs prometheus_client: pip install 'tiered-bccache[prometheus]'"


def _core() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return core


class TieredCacheCollector:
    """A Prometheus collector exposing ``cache.stats()``, per tier and in total.

    :param cache: the cache to report on.
    :param namespace: the prefix of every metric name.

    Raises :class:`ImportError`, naming the ``prometheus`` extra, when prometheus_client
    is not installed.
    """

    def __init__(self, cache: TieredBytecodeCache, namespace: str = "tiered_bccache") -> None:
        self._core = _core()
        self.cache = cache
        self.namespace = namespace

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of one snapshot (called by the registry per scrape)."""
        core = self._core
        ns = self.namespace
        stats = self.cache.stats()
        names = _unique([t.name for t in stats.tiers])
        tiers = list(zip(names, stats.tiers, strict=True))
        for suffix, field, doc in _TIER_COUNTERS:
            family = core.CounterMetricFamily(f"{ns}_tier_{suffix}", doc, labels=["tier"])
            for name, t in tiers:
                family.add_metric([name], getattr(t, field))
            yield family
        rejected = core.CounterMetricFamily(
            f"{ns}_tier_rejected",
            "Entries found but refused: a failed MAC, another format or version, or a "
            "changed source.",
            labels=["tier", "reason"],
        )
        for name, t in tiers:
            rejected.add_metric([name, "mac"], t.rejected_mac)
            rejected.add_metric([name, "format"], t.rejected_format)
            rejected.add_metric([name, "stale"], t.rejected_stale)
        yield rejected
        latency = core.SummaryMetricFamily(
            f"{ns}_tier_latency_seconds", "Time of byte-tier reads.", labels=["tier"]
        )
        for name, t in tiers:
            latency.add_metric([name], count_value=t.latency_count, sum_value=t.latency_total)
        yield latency
        breaker = core.GaugeMetricFamily(
            f"{ns}_tier_breaker_state",
            "The circuit breaker of a remote tier: 1 for its current state.",
            labels=["tier", "state"],
        )
        for name, t in tiers:
            if t.breaker in _BREAKER_STATES:
                for state in _BREAKER_STATES:
                    breaker.add_metric([name, state], 1.0 if t.breaker == state else 0.0)
        yield breaker
        entries = core.GaugeMetricFamily(
            f"{ns}_tier_entries", "Entries a memory tier holds in this process.", labels=["tier"]
        )
        weight = core.GaugeMetricFamily(
            f"{ns}_tier_weight",
            "What a memory tier holds in this process: bytes with max_bytes, else entries.",
            labels=["tier"],
        )
        for tier, name in zip(self.cache.tiers, names, strict=True):
            if getattr(tier, "holds_objects", False):
                memory: Any = tier  # the in-process tier: MemoryTier's len() and currsize
                entries.add_metric([name], len(memory))
                weight.add_metric([name], memory.currsize)
        yield entries
        yield weight
        for name, doc in _TOTALS:
            yield core.CounterMetricFamily(f"{ns}_{name}", doc, value=getattr(stats, name))


def _unique(names: list[str]) -> list[str]:
    """Tier names as label values: a repeated name (two memory tiers) gets ``#2``, ``#3``,
    since two series with the same labels in one family are invalid."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
