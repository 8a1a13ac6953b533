"""Counters and latency per tier, and the snapshot ``cache.stats()`` returns.

Counters are plain attributes bumped without a lock: they sit on the hit path, and a lock
there would cost more than the hit. Under threads an increment can very rarely be lost
(``x += 1`` is not atomic), so counts are exact single-threaded and approximate, never
decreasing, under threads.
"""

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import logging

__all__ = ["CacheStats", "LatencyHistogram", "TierCounters", "TierStats"]

#: Upper bounds, in microseconds, of the latency buckets (the last is unbounded).
BUCKET_BOUNDS_US: tuple[int, ...] = tuple(2**i for i in range(21))  # 1 us .. ~1 s


class LatencyHistogram:
    """Power-of-two buckets from 1 microsecond to about a second, plus count and total."""

    __slots__ = ("buckets", "count", "total_ns")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKET_BOUNDS_US) + 1)
        self.count = 0
        self.total_ns = 0

    def observe(self, ns: int) -> None:
        self.count += 1
        self.total_ns += ns
        self.buckets[min((ns // 1000).bit_length(), len(BUCKET_BOUNDS_US))] += 1

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile, in seconds (0.0 with no observation)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                bound = (
                    BUCKET_BOUNDS_US[i] if i < len(BUCKET_BOUNDS_US) else 2 * BUCKET_BOUNDS_US[-1]
                )
                return bound / 1e6
        return 2 * BUCKET_BOUNDS_US[-1] / 1e6


_COUNTERS = (
    "hits",
    "misses",
    "promotions",
    "writes",
    "rejected_mac",
    "rejected_format",
    "rejected_stale",
    "skipped",
    "errors",
    "bytes_read",
    "bytes_written",
)


class TierCounters:
    """The live, mutable counters of one tier (owned by the cache). A plain class: a
    dataclass costs a process more to define than the rest of this module."""

    __slots__ = (*_COUNTERS, "latency")

    def __init__(self) -> None:
        self.hits = self.misses = self.promotions = self.writes = 0
        self.rejected_mac = self.rejected_format = self.rejected_stale = 0
        self.skipped = self.errors = self.bytes_read = self.bytes_written = 0
        self.latency = LatencyHistogram()

    def reject(self, reason: str) -> None:
        if reason == "mac":
            self.rejected_mac += 1
        elif reason == "stale":
            self.rejected_stale += 1
        else:
            self.rejected_format += 1


#: What a tier without events reports (shared, and read-only so that it stays empty).
_NO_EVENTS: Mapping[str, int] = MappingProxyType({})


class TierStats(NamedTuple):
    """A snapshot of one tier's counters.

    ``skipped`` counts calls not made: an entry too large for the tier, or the tier's
    circuit breaker open. ``rejected_*`` count entries found but refused: a failed MAC,
    an unknown format or another Python/Jinja version, a changed source.
    """

    name: str
    hits: int
    misses: int
    promotions: int
    writes: int
    rejected_mac: int
    rejected_format: int
    rejected_stale: int
    skipped: int
    errors: int
    bytes_read: int
    bytes_written: int
    latency_count: int
    latency_total: float
    latency_p50: float
    latency_p99: float
    breaker: str
    #: Notable events inside the tier, counted by the tier itself (its ``events``
    #: attribute), e.g. a foreign value replaced at memcached's generation key.
    events: Mapping[str, int] = _NO_EVENTS

    @property
    def rejected(self) -> int:
        return self.rejected_mac + self.rejected_format + self.rejected_stale

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class CacheStats(NamedTuple):
    """A snapshot of the whole cache: ``tiers`` in lookup order, plus totals.

    ``hits`` are lookups some tier answered, ``misses`` lookups that went to the
    compiler, ``compiles`` code written back after one: of named templates (Jinja's
    loaders). The ``string_*`` counters are the same for template strings
    (``from_string``), and ``strings_not_admitted`` counts strings compiled but not
    stored, seen fewer times than the admission threshold. Tier counters hold both.
    ``uncached`` counts compiles the cache could not take charge of (an environment
    that cannot be keyed, or whose compile with stand-ins failed): compiled by Jinja
    as if there were no cache, and never stored. ``compile_seconds`` is the time the
    cache's own compiles took.
    """

    tiers: tuple[TierStats, ...]
    lookups: int
    hits: int
    misses: int
    compiles: int
    lease_waits: int
    string_lookups: int = 0
    string_hits: int = 0
    string_misses: int = 0
    string_compiles: int = 0
    strings_not_admitted: int = 0
    uncached: int = 0
    #: Seconds spent in the compiles the cache made (named templates and strings).
    compile_seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain data, for JSON."""
        out: dict[str, object] = {
            "lookups": self.lookups,
            "hits": self.hits,
            "misses": self.misses,
            "compiles": self.compiles,
            "lease_waits": self.lease_waits,
            "hit_ratio": self.hit_ratio,
            "string_lookups": self.string_lookups,
            "string_hits": self.string_hits,
            "string_misses": self.string_misses,
            "string_compiles": self.string_compiles,
            "strings_not_admitted": self.strings_not_admitted,
            "uncached": self.uncached,
            "compile_seconds": self.compile_seconds,
        }
        out["tiers"] = [{**t._asdict(), "events": dict(t.events)} for t in self.tiers]
        return out


def snapshot(
    name: str, c: TierCounters, breaker: str, events: Mapping[str, int] | None = None
) -> TierStats:
    lat = c.latency
    return TierStats(
        name=name,
        hits=c.hits,
        misses=c.misses,
        promotions=c.promotions,
        writes=c.writes,
        rejected_mac=c.rejected_mac,
        rejected_format=c.rejected_format,
        rejected_stale=c.rejected_stale,
        skipped=c.skipped,
        errors=c.errors,
        bytes_read=c.bytes_read,
        bytes_written=c.bytes_written,
        latency_count=lat.count,
        latency_total=lat.total_ns / 1e9,
        latency_p50=lat.quantile(0.5),
        latency_p99=lat.quantile(0.99),
        breaker=breaker,
        events=MappingProxyType(dict(events)) if events else _NO_EVENTS,
    )


class RateLimitedLog:
    """Logs the first of a run of like messages, then at most one per ``interval``
    seconds with the count suppressed since: a tier that fails on every render must not
    write a line per render."""

    __slots__ = ("_last", "_logger", "_suppressed", "interval")

    def __init__(self, logger: "logging.Logger | None" = None, interval: float = 30.0) -> None:
        #: None: the ``tiered_bccache`` logger, looked up when first needed.
        self._logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, topic: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(topic)
        if last is not None and now - last < self.interval:
            self._suppressed[topic] = self._suppressed.get(topic, 0) + 1
            return
        self._last[topic] = now
        suppressed = self._suppressed.pop(topic, 0)
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        (self._logger or logger()).warning(message, *args)


def logger() -> "logging.Logger":
    """The ``tiered_bccache`` logger. ``logging`` is imported when something is first
    logged: it costs a process that never logs a quarter of what Jinja's import does."""
    import logging

    return logging.getLogger("tiered_bccache")
