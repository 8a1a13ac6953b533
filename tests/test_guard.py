"""The guard in front of one tier: its breaker asked before a call and told after it,
what a call that raises counts (a rejected entry, a failure, an interruption), latency,
strict mode, and counting once per lookup through the lookup's bits."""

from __future__ import annotations

import time

import pytest

from tiered_bccache.breaker import CircuitBreaker
from tiered_bccache.errors import EntryError, TierError
from tiered_bccache.guard import Guard
from tiered_bccache.stats import RateLimitedLog


class Record:
    """The least a lookup carries for a guard: one bit per tier for what it counted."""

    def __init__(self) -> None:
        self.seen = 0
        self.failed = 0


class Clock:
    """A monotonic clock a test moves by hand, so a breaker's cool-down passes at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_guard(
    breaker: CircuitBreaker | None = None, *, bit: int = 1, strict: bool = False
) -> Guard:
    return Guard("dict", breaker, RateLimitedLog(), bit=bit, strict=strict)


def opened_breaker(clock: Clock, *, cooldown: float = 1.0) -> CircuitBreaker:
    """A breaker that one failure opened, its cool-down not yet over."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=cooldown, clock=clock)
    assert breaker.failure() is True
    return breaker


def half_open_breaker(clock: Clock) -> CircuitBreaker:
    """A breaker whose cool-down is over: its next allow() hands out the probe."""
    breaker = opened_breaker(clock)
    clock.now += 2.0
    assert breaker.state == "half-open"
    return breaker


# -- allow --------------------------------------------------------------------------------


def test_a_tier_without_a_breaker_is_always_allowed() -> None:
    """With no breaker (a local tier) allow() is True every time and counts nothing."""
    guard = make_guard()
    assert all(guard.allow() for _ in range(3))
    assert guard.counters.skipped == 0


def test_a_closed_breaker_allows_the_call_and_counts_nothing() -> None:
    """A closed breaker lets the call through and nothing is counted as skipped."""
    guard = make_guard(CircuitBreaker(failure_threshold=2, cooldown=60.0))
    assert guard.allow() is True
    assert guard.counters.skipped == 0


def test_an_open_breaker_refuses_the_call_and_counts_it_as_skipped() -> None:
    """While the breaker is open allow() is False, and each refusal counts as skipped."""
    guard = make_guard(opened_breaker(Clock()))
    assert guard.allow() is False
    assert guard.allow() is False
    assert guard.counters.skipped == 2


# -- a call that returns ------------------------------------------------------------------


def test_a_call_that_returns_tells_the_breaker_of_a_success() -> None:
    """A block that returns resets the breaker's count of failures, so one failure before
    it and one after do not reach a threshold of two; nothing is counted."""
    breaker = CircuitBreaker(failure_threshold=2, cooldown=60.0)
    guard = make_guard(breaker)
    breaker.failure()
    with guard.call("get") as call:
        pass
    assert call.failed is False
    assert breaker.failure() is False
    assert breaker.state == "closed"
    counters = guard.counters
    assert (counters.errors, counters.misses, counters.skipped) == (0, 0, 0)


def test_a_probe_that_returns_closes_the_breaker() -> None:
    """The half-open probe handed out by allow() and answered by a block that returns
    closes the breaker."""
    clock = Clock()
    breaker = half_open_breaker(clock)
    guard = make_guard(breaker)
    assert guard.allow() is True
    with guard.call("get"):
        pass
    assert breaker.state == "closed"


# -- a rejected entry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "counter"),
    [
        ("mac", "rejected_mac"),
        ("stale", "rejected_stale"),
        ("format", "rejected_format"),
        ("version", "rejected_format"),
        ("code", "rejected_format"),
    ],
)
def test_an_entry_error_in_the_block_is_a_rejected_miss_counted_by_reason(
    reason: str, counter: str
) -> None:
    """An EntryError raised in the block is swallowed and counted as a miss and as a
    rejection under its reason, never as an error; call.failed is True."""
    guard = make_guard()
    with guard.call("get") as call:
        raise EntryError(reason, "planted")
    assert call.failed is True
    counters = guard.counters
    assert getattr(counters, counter) == 1
    rejected = counters.rejected_mac + counters.rejected_format + counters.rejected_stale
    assert (rejected, counters.misses, counters.errors) == (1, 1, 0)


def test_a_rejected_entry_is_logged_unless_it_is_only_stale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rejection for a failed MAC is logged with the tier's name; a stale one (an edited
    template) is counted but not logged."""
    guard = make_guard()
    with guard.call("get"):
        raise EntryError("stale", "the template source changed")
    assert guard.counters.rejected_stale == 1
    assert caplog.records == []
    with guard.call("get"):
        raise EntryError("mac", "MAC mismatch")
    assert guard.counters.rejected_mac == 1
    assert "dict rejected an entry: mac: MAC mismatch" in caplog.text


def test_a_rejected_entry_tells_the_breaker_of_a_success() -> None:
    """A rejected entry is an answer from the tier: the half-open probe it answers closes
    the breaker, and a closed breaker's count of failures starts again."""
    clock = Clock()
    breaker = half_open_breaker(clock)
    guard = make_guard(breaker)
    assert guard.allow() is True
    with guard.call("get"):
        raise EntryError("format", "a FIFO")
    assert breaker.state == "closed"
    counting = CircuitBreaker(failure_threshold=2, cooldown=60.0)
    counting.failure()
    with make_guard(counting).call("get"):
        raise EntryError("format", "a FIFO")
    assert counting.failure() is False
    assert counting.state == "closed"


# -- a failure ----------------------------------------------------------------------------


def test_an_exception_in_the_block_is_counted_as_an_error_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any other Exception is swallowed and counted as an error (not a miss), logged as
    the tier failing during the operation; call.failed is True."""
    guard = make_guard()
    with guard.call("set") as call:
        raise OSError(28, "No space left on device")
    assert call.failed is True
    counters = guard.counters
    assert (counters.errors, counters.misses, counters.rejected_format) == (1, 0, 0)
    assert "dict failed during set: OSError(28, 'No space left on device')" in caplog.text


def test_a_failure_is_reported_to_the_breaker_and_the_one_that_opens_it_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each failure counts toward the breaker's threshold; the one that opens it is
    logged as the tier failing and being skipped for the cool-down."""
    breaker = CircuitBreaker(failure_threshold=2, cooldown=60.0)
    guard = make_guard(breaker)
    with guard.call("get"):
        raise ConnectionRefusedError(111, "refused")
    assert breaker.state == "closed"
    assert "is failing" not in caplog.text
    with guard.call("get"):
        raise ConnectionRefusedError(111, "refused")
    assert breaker.state == "open"
    assert "dict is failing (ConnectionRefusedError(111, 'refused')); skipping it for 60.0 s" in (
        caplog.text
    )
    assert guard.counters.errors == 2


def test_a_timeout_opens_the_breaker_at_once() -> None:
    """A TimeoutError trips the breaker on the first failure, whatever its threshold;
    another OSError does not."""
    slow = CircuitBreaker(failure_threshold=5, cooldown=60.0)
    with make_guard(slow).call("get"):
        raise TimeoutError("timed out")
    assert slow.state == "open"
    refused = CircuitBreaker(failure_threshold=5, cooldown=60.0)
    with make_guard(refused).call("get"):
        raise ConnectionRefusedError(111, "refused")
    assert refused.state == "closed"


def test_strict_mode_raises_a_failure_as_tier_error_with_its_cause() -> None:
    """In strict mode a failure is counted, then raised as TierError naming the tier and
    the operation, the original exception its cause; call.failed is True all the same."""
    guard = make_guard(strict=True)
    cause = OSError(5, "Input/output error")
    with pytest.raises(TierError) as info:
        with guard.call("get") as call:
            raise cause
    assert (info.value.tier, info.value.operation) == ("dict", "get")
    assert info.value.__cause__ is cause
    assert call.failed is True
    assert guard.counters.errors == 1


def test_strict_mode_does_not_raise_a_rejected_entry() -> None:
    """A rejected entry is a miss in strict mode too, never a TierError."""
    guard = make_guard(strict=True)
    with guard.call("get") as call:
        raise EntryError("format", "garbage")
    assert call.failed is True
    assert (guard.counters.rejected_format, guard.counters.errors) == (1, 0)


def test_failures_of_different_operations_are_logged_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log is rate-limited per tier and operation: a second failure of get is not
    logged again, a first failure of set is."""
    guard = make_guard()
    for operation in ("get", "get", "set"):
        with guard.call(operation):
            raise OSError(5, "Input/output error")
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(": ")[1] for m in messages] == [
        "dict failed during get",
        "dict failed during set",
    ]
    assert guard.counters.errors == 3


# -- an interruption ----------------------------------------------------------------------


def test_a_base_exception_goes_on_up_and_hands_the_probe_back() -> None:
    """A KeyboardInterrupt in the block propagates, counts nothing, and abandons the
    breaker's half-open probe: the next allow() gets a probe again instead of the
    breaker staying half-open for good."""
    clock = Clock()
    breaker = half_open_breaker(clock)
    guard = make_guard(breaker)
    assert guard.allow() is True  # the probe
    assert guard.allow() is False  # one probe at a time
    with pytest.raises(KeyboardInterrupt):
        with guard.call("get") as call:
            raise KeyboardInterrupt
    assert call.failed is False
    assert guard.allow() is True
    counters = guard.counters
    assert (counters.errors, counters.misses, counters.skipped) == (0, 0, 1)


def test_a_half_open_probe_interrupted_in_real_time_is_handed_back() -> None:
    """The same with the breaker's own monotonic clock: open it, wait past a tiny
    cool-down, and a probe interrupted by KeyboardInterrupt is probed again."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=0.01)
    breaker.failure()
    guard = make_guard(breaker)
    assert guard.allow() is False
    time.sleep(0.02)
    assert guard.allow() is True
    with pytest.raises(KeyboardInterrupt):
        with guard.call("get"):
            raise KeyboardInterrupt
    assert guard.allow() is True


# -- latency ------------------------------------------------------------------------------


def test_latency_is_observed_only_for_a_timed_call() -> None:
    """A timed call observes its latency, whether it returns or fails; an untimed call
    observes none."""
    guard = make_guard()
    with guard.call("get"):
        pass
    with guard.call("get"):
        raise OSError(5, "Input/output error")
    assert guard.counters.latency.count == 0
    with guard.call("get", timed=True):
        pass
    with guard.call("get", timed=True):
        raise OSError(5, "Input/output error")
    assert guard.counters.latency.count == 2
    assert guard.counters.latency.total_ns > 0


# -- once per lookup ----------------------------------------------------------------------


def test_a_miss_counts_once_per_lookup() -> None:
    """A second miss within one lookup counts nothing; without a lookup every miss
    counts."""
    guard = make_guard(bit=4)
    record = Record()
    guard.miss(record)
    guard.miss(record)
    assert guard.counters.misses == 1
    assert (record.seen, record.failed) == (4, 0)
    guard.miss(Record())
    assert guard.counters.misses == 2
    guard.miss(None)
    guard.miss(None)
    assert guard.counters.misses == 4


def test_a_rejection_counts_once_per_lookup_and_shares_the_bit_with_misses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rejection after a miss of the same lookup is not counted or logged, nor a miss
    after a rejection; a rejection in a call with the lookup marks it."""
    guard = make_guard()
    first = Record()
    guard.miss(first)
    guard.rejected(EntryError("mac", "MAC mismatch"), first)
    assert (guard.counters.misses, guard.counters.rejected_mac) == (1, 0)
    assert caplog.records == []
    second = Record()
    with guard.call("get", second):
        raise EntryError("mac", "MAC mismatch")
    assert second.seen == 1
    guard.miss(second)
    with guard.call("get", second):
        raise EntryError("format", "garbage")
    counters = guard.counters
    assert (counters.misses, counters.rejected_mac, counters.rejected_format) == (2, 1, 0)
    assert len(caplog.records) == 1


def test_a_failure_counts_once_per_lookup(caplog: pytest.LogCaptureFixture) -> None:
    """A failure met twice within one lookup is counted and logged once; a failure of
    another lookup is counted again."""
    guard = Guard("dict", None, RateLimitedLog(interval=0.0), bit=2)
    record = Record()
    for _ in range(2):
        with guard.call("get", record) as call:
            raise OSError(5, "Input/output error")
        assert call.failed is True
    assert guard.counters.errors == 1
    assert len(caplog.records) == 1
    assert (record.seen, record.failed) == (0, 2)
    with guard.call("get", Record()):
        raise OSError(5, "Input/output error")
    assert guard.counters.errors == 2
    assert len(caplog.records) == 2


def test_a_failure_and_a_miss_of_one_lookup_are_both_counted() -> None:
    """Misses and failures keep separate bits: a failure after a miss of the same lookup
    counts, and a miss after a failure counts."""
    guard = make_guard()
    record = Record()
    guard.miss(record)
    guard.failed("get", OSError(5, "Input/output error"), record)
    assert (guard.counters.misses, guard.counters.errors) == (1, 1)
    other = Record()
    guard.failed("get", OSError(5, "Input/output error"), other)
    guard.miss(other)
    assert (guard.counters.misses, guard.counters.errors) == (2, 2)


def test_the_bits_of_different_guards_do_not_interfere() -> None:
    """Two tiers' guards mark one lookup with their own bits: each counts its first miss,
    rejection and failure, and neither its second."""
    one, two = make_guard(bit=1), make_guard(bit=2)
    record = Record()
    for _ in range(2):
        one.miss(record)
        two.rejected(EntryError("mac", "MAC mismatch"), record)
        one.failed("get", OSError(5, "Input/output error"), record)
        two.failed("get", OSError(5, "Input/output error"), record)
    assert (record.seen, record.failed) == (3, 3)
    assert (one.counters.misses, one.counters.rejected_mac, one.counters.errors) == (1, 0, 1)
    assert (two.counters.misses, two.counters.rejected_mac, two.counters.errors) == (1, 1, 1)


def test_a_repeated_failure_within_a_lookup_still_tells_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure the lookup already counted is still reported to the breaker: two of them
    reach a threshold of two (the opening is logged, the repeat is not counted), and a
    half-open probe answered so reopens it."""
    breaker = CircuitBreaker(failure_threshold=2, cooldown=60.0)
    guard = make_guard(breaker)
    record = Record()
    guard.failed("get", OSError(5, "Input/output error"), record)
    guard.failed("get", OSError(5, "Input/output error"), record)
    assert breaker.state == "open"
    assert guard.counters.errors == 1
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "tiered_bccache: dict failed during get: OSError(5, 'Input/output error')",
        "tiered_bccache: dict is failing",
    ]
    clock = Clock()
    probed = half_open_breaker(clock)
    guard = make_guard(probed)
    record = Record()
    for _ in range(2):  # a lookup's first look, then its second under the lease
        assert guard.allow() is True  # the probe
        with guard.call("get", record):
            raise OSError(5, "Input/output error")
        assert probed.state == "open"
        clock.now += 2.0
    assert guard.counters.errors == 1
