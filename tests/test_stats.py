"""Counters, latency histograms, snapshots and the rate-limited log."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from tiered_bccache.stats import (
    BUCKET_BOUNDS_US,
    CacheStats,
    LatencyHistogram,
    RateLimitedLog,
    TierCounters,
    TierStats,
    snapshot,
)


def test_empty_histogram_reports_zero() -> None:
    """With no observation every quantile is 0.0 and the counts are zero."""
    h = LatencyHistogram()
    assert h.count == 0 and h.total_ns == 0
    assert h.quantile(0.5) == h.quantile(0.99) == 0.0


@pytest.mark.parametrize(
    ("ns", "bucket"),
    [
        (0, 0),
        (999, 0),  # under a microsecond
        (1_000, 1),  # 1 us is in [1, 2) us
        (1_999, 1),
        (2_000, 2),
        (3_999, 2),
        (4_000, 3),
        (1_000_000, 10),  # 1 ms = 1000 us is in [512, 1024) us
        (2**20 * 1_000 - 1, 20),
        (2**20 * 1_000, 21),  # about a second and beyond: the unbounded bucket
        (60 * 10**9, 21),
    ],
)
def test_observation_lands_in_its_power_of_two_bucket(ns: int, bucket: int) -> None:
    """Bucket i holds latencies below BUCKET_BOUNDS_US[i] microseconds and at least the
    previous bound; the last bucket takes everything longer."""
    h = LatencyHistogram()
    h.observe(ns)
    assert h.buckets.index(1) == bucket
    assert sum(h.buckets) == h.count == 1 and h.total_ns == ns
    if bucket < len(BUCKET_BOUNDS_US):
        assert ns < BUCKET_BOUNDS_US[bucket] * 1_000
    if bucket:
        assert ns >= BUCKET_BOUNDS_US[bucket - 1] * 1_000


@pytest.mark.parametrize("ns", [1_000, 1_500, 7_000, 123_456, 999_999, 5_000_000, 700_000_000])
def test_quantile_is_an_upper_bound_within_a_factor_of_two(ns: int) -> None:
    """Below a second a quantile overstates the true latency by less than a factor of two."""
    h = LatencyHistogram()
    for _ in range(10):
        h.observe(ns)
    for q in (0.0, 0.5, 0.99, 1.0):
        seconds = h.quantile(q)
        assert ns / 1e9 < seconds <= 2 * ns / 1e9


def test_quantiles_separate_fast_and_slow_observations() -> None:
    """p50 reflects the bulk and p99 the tail of a mixed distribution."""
    h = LatencyHistogram()
    for _ in range(98):
        h.observe(3_000)  # 3 us
    for _ in range(2):
        h.observe(40_000_000)  # 40 ms
    assert h.quantile(0.5) == 4e-6
    assert 40e-3 < h.quantile(0.99) <= 80e-3
    assert h.quantile(0.98) == 4e-6
    assert h.count == 100 and h.total_ns == 98 * 3_000 + 2 * 40_000_000


def test_quantiles_never_decrease_with_q() -> None:
    """quantile is monotonic in q."""
    h = LatencyHistogram()
    for ns in (500, 2_000, 2_000, 90_000, 3_000_000, 3_000_000, 8_000_000_000):
        h.observe(ns)
    values = [h.quantile(q / 100) for q in range(101)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    ("reason", "field"),
    [
        ("mac", "rejected_mac"),
        ("stale", "rejected_stale"),
        ("format", "rejected_format"),
        ("version", "rejected_format"),
        ("code", "rejected_format"),
    ],
)
def test_reject_counts_each_reason_in_its_counter(reason: str, field: str) -> None:
    """reject() bumps the counter for the EntryError reason; versions and bad code count
    as format rejections."""
    c = TierCounters()
    c.reject(reason)
    c.reject(reason)
    counts = {
        name: getattr(c, name) for name in ("rejected_mac", "rejected_stale", "rejected_format")
    }
    assert counts == {name: 2 if name == field else 0 for name in counts}


def tier_stats(name: str, hits: int, misses: int, **overrides: object) -> TierStats:
    c = TierCounters()
    c.hits, c.misses = hits, misses
    for field, value in overrides.items():
        setattr(c, field, value)
    c.latency.observe(2_500)
    return snapshot(name, c, "closed")


def test_snapshot_copies_the_counters() -> None:
    """A snapshot holds the values at the time it was taken, not live counters."""
    c = TierCounters()
    c.hits, c.misses = 3, 1
    c.reject("mac")
    c.reject("mac")
    c.reject("stale")
    c.latency.observe(2_500)
    s = snapshot("memory", c, "none")
    c.hits += 10
    assert s.hits == 3 and s.rejected == 3 and s.hit_ratio == 0.75
    assert s.latency_count == 1 and s.latency_total == 2.5e-6
    assert s.latency_p50 == s.latency_p99 == 4e-6
    assert s.breaker == "none"


def test_tier_hit_ratio_is_zero_without_lookups() -> None:
    """A tier never asked has a hit ratio of 0.0, not a division by zero."""
    assert tier_stats("memory", 0, 0).hit_ratio == 0.0


def test_cache_hit_ratio() -> None:
    """hit_ratio is hits over lookups, and 0.0 before any lookup."""
    stats = CacheStats(tiers=(), lookups=8, hits=6, misses=2, compiles=2, lease_waits=0)
    assert stats.hit_ratio == 0.75
    assert CacheStats((), 0, 0, 0, 0, 0).hit_ratio == 0.0


def test_as_dict_is_json_serialisable_and_complete() -> None:
    """as_dict() gives plain data that json.dumps accepts, with every tier's counters."""
    stats = CacheStats(
        tiers=(tier_stats("memory", 5, 1), tier_stats("memcached:x", 1, 0, errors=2)),
        lookups=6,
        hits=6,
        misses=0,
        compiles=0,
        lease_waits=1,
    )
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["hit_ratio"] == 1.0 and data["lease_waits"] == 1
    assert [t["name"] for t in data["tiers"]] == ["memory", "memcached:x"]
    assert data["tiers"][1]["errors"] == 2
    assert set(data["tiers"][0]) >= {"hits", "misses", "latency_p99", "breaker"}


LOGGER = "tests.test_stats.ratelimit"


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_rate_limited_log_logs_the_first_message(caplog: pytest.LogCaptureFixture) -> None:
    """The first message of a topic is logged at once, with its arguments."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=60.0)
    log.warning("tier:get", "tier %s failed", "memcached")
    assert messages(caplog) == ["tier memcached failed"]


def test_rate_limited_log_suppresses_repeats_within_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Repeats of a topic within the interval are not logged."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=60.0)
    for i in range(100):
        log.warning("tier:get", "failure %d", i)
    assert messages(caplog) == ["failure 0"]


def test_rate_limited_log_keeps_topics_apart(caplog: pytest.LogCaptureFixture) -> None:
    """A message on one topic does not silence another topic."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=60.0)
    log.warning("memcached:get", "get failed")
    log.warning("memcached:set", "set failed")
    log.warning("memcached:get", "get failed")
    assert messages(caplog) == ["get failed", "set failed"]


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0  # steps of halves stay exact in binary floating point

    def __call__(self) -> float:
        return self.now


def test_rate_limited_log_reports_the_suppressed_count_next_time(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat is suppressed until a full interval has passed since the last message
    logged; then it is logged with the number suppressed since, and the count starts
    again from zero."""
    clock = ManualClock()
    # The log's clock, not the wall: a loaded machine cannot stretch the repeats past
    # the interval, and the boundary is exact.
    monkeypatch.setattr("tiered_bccache.stats.time", SimpleNamespace(monotonic=clock))
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = RateLimitedLog(logging.getLogger(LOGGER), interval=30.0)
    log.warning("t", "failed")
    for _ in range(7):
        clock.now += 4.0  # 28 s after the first message: still within the interval
        log.warning("t", "failed")
    clock.now += 1.5
    log.warning("t", "failed")  # the 8th repeat, 29.5 s after
    clock.now += 0.5
    log.warning("t", "failed")  # exactly 30 s after: logged, with the 8 suppressed
    clock.now += 30.0
    log.warning("t", "failed")  # nothing suppressed since
    assert messages(caplog) == [
        "failed",
        "failed (8 similar messages suppressed)",
        "failed",
    ]
