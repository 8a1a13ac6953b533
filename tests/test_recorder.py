"""The recorder: the cache's own counters, their snapshot with the tiers', reset, and the
access trace it starts, stops and records to."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tiered_bccache import MemoryTier
from tiered_bccache.breaker import CircuitBreaker
from tiered_bccache.guard import Guard
from tiered_bccache.layers import ObjectLayer
from tiered_bccache.recorder import Recorder
from tiered_bccache.stats import CacheStats, RateLimitedLog
from tiered_bccache.tiers.base import capabilities
from tiered_bccache.trace import TraceRecord, read_trace

#: Every counter of a Recorder: its slots but the trace.
COUNTERS = tuple(name for name in Recorder.__slots__ if name != "trace")


class EventfulTier(MemoryTier):
    """A tier that counts notable events of its own, as memcached's does."""

    name = "eventful"

    def __init__(self) -> None:
        super().__init__()
        self.events = {"foreign_generation": 2}


def bumped() -> Recorder:
    """A recorder whose every counter holds a value of its own (1, 2, 3...)."""
    rec = Recorder()
    for value, name in enumerate(COUNTERS, start=1):
        setattr(rec, name, float(value) if name == "compile_seconds" else value)
    return rec


def test_a_new_recorder_counts_nothing_and_traces_nothing() -> None:
    """Every counter starts at zero, with no trace."""
    rec = Recorder()
    assert COUNTERS and all(getattr(rec, name) == 0 for name in COUNTERS)
    assert rec.trace is None


def test_reset_zeroes_every_counter_and_keeps_the_trace(tmp_path: Path) -> None:
    """After reset every counter is zero again, whatever it held, and a trace being
    recorded goes on."""
    rec = bumped()
    rec.start_trace(tmp_path / "trace.txt")
    trace = rec.trace
    rec.reset()
    assert {name: getattr(rec, name) for name in COUNTERS} == dict.fromkeys(COUNTERS, 0)
    assert rec.trace is trace and trace is not None and not trace.closed
    rec.stop_trace()


def test_waited_counts_lease_waits() -> None:
    """Each wait for another process's lease is one lease_wait, and nothing else."""
    rec = Recorder()
    rec.waited()
    rec.waited()
    assert rec.lease_waits == 2
    assert all(getattr(rec, name) == 0 for name in COUNTERS if name != "lease_waits")


def test_stats_reports_every_counter_under_its_name() -> None:
    """The snapshot's totals are the recorder's counters, each under its own name (no
    counter left out, none crossed with another)."""
    rec = bumped()
    stats = rec.stats(())
    totals = {field for field in CacheStats._fields if field != "tiers"}
    assert totals == set(COUNTERS)
    assert {name: getattr(stats, name) for name in totals} == {
        name: getattr(rec, name) for name in COUNTERS
    }
    assert stats.tiers == ()


def test_stats_is_a_snapshot() -> None:
    """Counting after a snapshot does not change it."""
    rec = Recorder()
    rec.lookups = 3
    stats = rec.stats(())
    rec.lookups += 1
    rec.reset()
    assert stats.lookups == 3


def layer(tier: MemoryTier, name: str, breaker: CircuitBreaker | None) -> ObjectLayer:
    tier.name = name
    return ObjectLayer(tier, capabilities(tier), Guard(name, breaker, RateLimitedLog()))


def test_stats_reports_the_layers_in_order_with_their_counters() -> None:
    """Each layer is one tier in the snapshot, in the order given: its name, its
    counters, its breaker's state ("none" without one) and the tier's own events."""
    plain = layer(MemoryTier(), "first", None)
    breaker = CircuitBreaker(failure_threshold=1, cooldown=60.0)
    remote = layer(MemoryTier(), "second", breaker)
    eventful = layer(EventfulTier(), "third", CircuitBreaker())
    plain.counters.hits, plain.counters.misses = 5, 2
    remote.counters.errors, remote.counters.bytes_read = 1, 100
    breaker.failure()
    tiers = Recorder().stats([plain, remote, eventful]).tiers
    assert [t.name for t in tiers] == ["first", "second", "third"]
    assert [t.breaker for t in tiers] == ["none", "open", "closed"]
    assert (tiers[0].hits, tiers[0].misses, tiers[0].errors) == (5, 2, 0)
    assert (tiers[1].hits, tiers[1].errors, tiers[1].bytes_read) == (0, 1, 100)
    assert tiers[0].events == {} and tiers[2].events == {"foreign_generation": 2}


def test_a_trace_reads_back_what_was_recorded(tmp_path: Path) -> None:
    """Between start_trace and stop_trace every record lands in the file, in order, and
    the trace reader reads them back."""
    rec = Recorder()
    path = tmp_path / "trace.txt"
    rec.start_trace(path)
    assert rec.trace is not None
    rec.record("3f2a", 2048)
    rec.record("b-7~a1", 0)
    rec.record("3f2a", 2048)
    rec.stop_trace()
    assert rec.trace is None
    assert list(read_trace(path)) == [
        TraceRecord("3f2a", 2048),
        TraceRecord("b-7~a1", 0),
        TraceRecord("3f2a", 2048),
    ]


def test_starting_a_trace_again_closes_the_first(tmp_path: Path) -> None:
    """A second start_trace closes the first file (complete, readable) and records to
    the second from then on."""
    rec = Recorder()
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    rec.start_trace(first)
    old = rec.trace
    assert old is not None
    rec.record("a", 1)
    rec.start_trace(second)
    assert old.closed and rec.trace is not old and rec.trace is not None
    rec.record("b", 2)
    rec.stop_trace()
    assert list(read_trace(first)) == [TraceRecord("a", 1)]
    assert list(read_trace(second)) == [TraceRecord("b", 2)]


def test_stopping_without_a_trace_is_harmless(tmp_path: Path) -> None:
    """stop_trace with no trace, or twice, does nothing."""
    rec = Recorder()
    rec.stop_trace()
    rec.start_trace(tmp_path / "trace.txt")
    rec.stop_trace()
    rec.stop_trace()
    assert rec.trace is None


def test_record_on_a_trace_closed_meanwhile_does_not_raise(tmp_path: Path) -> None:
    """A lookup that finds the trace just as another thread closes it records nothing
    and raises nothing; the file holds what came before."""
    rec = Recorder()
    path = tmp_path / "trace.txt"
    rec.start_trace(path)
    trace = rec.trace
    assert trace is not None
    rec.record("before", 1)
    trace.close()  # what stop_trace in another thread does between our look and write
    rec.record("after", 2)
    assert list(read_trace(path)) == [TraceRecord("before", 1)]


def test_record_without_a_trace_does_nothing() -> None:
    rec = Recorder()
    rec.record("a", 1)
    assert rec.trace is None


def test_a_trace_that_cannot_be_written_is_stopped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk (/dev/full) fails the trace's write once its buffer fills: tracing
    stops, one warning says why, and nothing raises into the lookup."""
    rec = Recorder()
    rec.start_trace("/dev/full")
    with caplog.at_level(logging.WARNING, logger="tiered_bccache"):
        for i in range(200_000):  # the buffer is far smaller than this many records
            rec.record(f"key-{i}", i)
            if rec.trace is None:
                break
    assert rec.trace is None
    warnings = [r for r in caplog.records if "trace cannot be written" in r.getMessage()]
    assert len(warnings) == 1
    rec.record("after", 1)  # harmless once stopped
    rec.stop_trace()
