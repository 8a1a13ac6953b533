"""The circuit breaker: closed, open, half-open with one probe, and under threads."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable

from tiered_bccache.breaker import CircuitBreaker


class Clock:
    """A clock the test moves by hand: a list read by a closure, not a mock of time. It
    never goes backwards, even when threads advance it together."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = [start]
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now[0] += seconds


def breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(failure_threshold=threshold, cooldown=cooldown, clock=clock), clock


def opened_breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    b, clock = breaker(threshold, cooldown)
    for _ in range(threshold):
        b.failure()
    assert b.state == "open"
    return b, clock


def test_new_breaker_is_closed_and_allows_calls() -> None:
    """A fresh breaker lets every call through."""
    b, _ = breaker()
    assert b.state == "closed"
    assert all(b.allow() for _ in range(100))
    assert b.opened == 0


def test_opens_after_threshold_consecutive_failures() -> None:
    """failure_threshold consecutive failures open the breaker, and not one fewer."""
    b, _ = breaker(threshold=3)
    assert b.failure() is False
    assert b.failure() is False
    assert b.state == "closed" and b.allow()
    assert b.failure() is True
    assert b.state == "open"
    assert not b.allow()


def test_a_success_in_between_resets_the_count() -> None:
    """Failures separated by a success are not consecutive and do not open the breaker."""
    b, _ = breaker(threshold=3)
    for _ in range(10):
        b.failure()
        b.failure()
        b.success()
    assert b.state == "closed" and b.opened == 0


def test_trip_opens_at_once() -> None:
    """failure(trip=True), a timeout, opens a closed breaker on the first failure."""
    b, _ = breaker(threshold=5)
    assert b.failure(trip=True) is True
    assert b.state == "open" and b.opened == 1


def test_open_breaker_rejects_until_the_cooldown_has_passed() -> None:
    """While open, allow() is False at every moment before the cooldown ends."""
    b, clock = opened_breaker(cooldown=10.0)
    for _ in range(9):
        assert not b.allow()
        clock.advance(1.0)
    clock.advance(0.999)
    assert not b.allow()
    assert b.state == "open"


def test_after_cooldown_exactly_one_probe_is_allowed() -> None:
    """Once the cooldown is over one call goes through as a probe; the rest are refused."""
    b, clock = opened_breaker(cooldown=10.0)
    clock.advance(10.0)
    assert b.state == "half-open"
    assert b.allow() is True
    assert [b.allow() for _ in range(20)] == [False] * 20
    clock.advance(100.0)  # however long the probe takes, it stays the only one
    assert not b.allow()


def test_probe_success_closes_the_breaker() -> None:
    """A successful probe closes the breaker and every call is allowed again."""
    b, clock = opened_breaker()
    clock.advance(10.0)
    assert b.allow()
    b.success()
    assert b.state == "closed"
    assert all(b.allow() for _ in range(10))


def test_breaker_closed_by_a_probe_needs_a_full_threshold_to_open_again() -> None:
    """After closing, the failure count starts from zero."""
    b, clock = opened_breaker(threshold=3)
    clock.advance(10.0)
    assert b.allow()
    b.success()
    b.failure()
    b.failure()
    assert b.state == "closed"
    assert b.failure() is True


def test_probe_failure_reopens_for_another_cooldown() -> None:
    """A failed probe opens the breaker again, measured from the probe's failure."""
    b, clock = opened_breaker(cooldown=10.0)
    clock.advance(15.0)
    assert b.allow()
    assert b.failure() is False  # a re-opening, not a new opening
    assert b.state == "open"
    clock.advance(9.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()  # the next probe
    assert not b.allow()


def test_failures_while_open_do_not_extend_the_cooldown() -> None:
    """Late failures of calls made before the breaker opened do not push the probe back."""
    b, clock = opened_breaker(cooldown=10.0)
    clock.advance(5.0)
    b.failure()
    b.failure()
    clock.advance(5.0)
    assert b.allow()


def test_opened_counts_openings_and_failure_returns_true_only_then() -> None:
    """opened counts closed-to-open transitions; failure() is True exactly on those."""
    b, clock = breaker(threshold=2, cooldown=1.0)
    transitions = []
    for _ in range(3):
        transitions += [b.failure(), b.failure(), b.failure()]  # open, then one more
        clock.advance(1.0)
        assert b.allow()
        transitions.append(b.failure())  # the probe fails: re-opened, not opened
        clock.advance(1.0)
        assert b.allow()
        b.success()
    assert transitions == [False, True, False, False] * 3
    assert b.opened == 3


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together, switching between them
    as often as the interpreter allows; fail on any error."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _run_threads(count, target)
    finally:
        sys.setswitchinterval(previous)


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)
    errors: list[Exception] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            target(i)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_threads_calling_every_method_raise_nothing() -> None:
    """Eight threads mixing allow, failure, trip and success for a bounded number of
    iterations leave the breaker in a valid state, with no exception."""
    clock = Clock()
    b = CircuitBreaker(failure_threshold=2, cooldown=0.5, clock=clock)
    failures_that_opened = [0] * 8

    def work(i: int) -> None:
        rng = random.Random(i)
        for _ in range(3000):
            if b.allow():
                if rng.random() < 0.6:
                    failures_that_opened[i] += b.failure(trip=rng.random() < 0.1)
                else:
                    b.success()
            assert b.state in ("closed", "open", "half-open")
            if rng.random() < 0.05:
                clock.advance(0.1)

    run_threads(8, work)
    assert b.opened == sum(failures_that_opened) > 0


def test_threads_never_have_two_probes_in_flight() -> None:
    """With eight threads racing allow() on a half-open breaker, at most one call is ever
    in flight, round after round of failed probes."""
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    b.failure()
    lock = threading.Lock()
    in_flight = [0]
    most = [0]
    probes = [0]

    def work(i: int) -> None:
        for n in range(2000):
            if b.allow():
                with lock:
                    in_flight[0] += 1
                    probes[0] += 1
                    most[0] = max(most[0], in_flight[0])
                time.sleep(0.0001)  # the call to the tier: others keep asking meanwhile
                with lock:
                    in_flight[0] -= 1
                b.failure()
            if n % 50 == i:
                clock.advance(1.0)

    run_threads(8, work)
    assert probes[0] > 10  # the clock moved often enough for many rounds of probes
    assert most[0] == 1


def test_threads_racing_one_half_open_breaker_get_one_probe() -> None:
    """Of eight threads released together on a half-open breaker, exactly one gets the
    probe, in each of many rounds."""
    for _ in range(50):
        b, clock = opened_breaker(threshold=1, cooldown=1.0)
        clock.advance(1.0)
        granted = [False] * 8

        def work(i: int, b: CircuitBreaker = b, granted: list[bool] = granted) -> None:
            granted[i] = b.allow()

        run_threads(8, work)
        assert sum(granted) == 1


def test_abandoned_probe_lets_the_next_call_probe() -> None:
    """A probe handed out and abandoned (neither success nor failure) is given back: the
    breaker stays half-open and the next call is the probe."""
    b, clock = opened_breaker(cooldown=5.0)
    clock.advance(5.0)
    assert b.allow()  # the probe
    assert not b.allow()  # one at a time
    b.abandon()
    assert b.state == "half-open"
    assert b.allow()
    b.success()
    assert b.state == "closed"
