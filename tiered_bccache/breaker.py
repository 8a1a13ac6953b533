"""The circuit breaker the cache puts in front of every remote tier.

A hung server costs a full timeout per call. After ``failure_threshold`` consecutive
failures the breaker opens and the tier is skipped outright; after ``cooldown`` seconds
one call is let through as a probe: success closes the breaker, failure opens it again.
So a dead or hung memcached costs a page at most one timeout per cool-down, and the tier
is back in use within one cool-down of the server coming back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed, open or half-open; thread-safe. ``allow()`` is one attribute read while
    closed, so it can sit on the hit path."""

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_open_until",
        "_probing",
        "cooldown",
        "failure_threshold",
        "opened",
    )

    def __init__(
        self,
        *,
        failure_threshold: int = 2,
        cooldown: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0  # 0.0 means closed
        self._probing = False
        #: How many times the breaker has opened (for stats).
        self.opened = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        if self._open_until == 0.0:
            return "closed"
        return "half-open" if self._clock() >= self._open_until else "open"

    def allow(self) -> bool:
        """Whether the next call may go to the tier. A True must be answered by
        :meth:`success` or :meth:`failure`: when half-open it is the one probe, and no other
        call is let through until the probe reports."""
        if self._open_until == 0.0:
            return True
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True  # exactly one probe at a time
            return True

    def success(self) -> None:
        """Record a call that worked."""
        if self._failures or self._open_until:
            with self._lock:
                self._failures = 0
                self._open_until = 0.0
                self._probing = False

    def abandon(self) -> None:
        """Record a call that neither worked nor failed (interrupted by a
        ``BaseException``: gevent's ``Timeout``, ``KeyboardInterrupt``): a probe it held
        is handed back, so the next call probes instead of the breaker staying
        half-open for good."""
        if self._probing:
            with self._lock:
                self._probing = False

    def failure(self, *, trip: bool = False) -> bool:
        """Record a call that failed; True when this failure opened the breaker.

        ``trip`` opens the breaker at once whatever the count: a call that timed out
        already cost the page a full timeout, and the next one would cost another."""
        with self._lock:
            self._failures += 1
            threshold_reached = trip or self._failures >= self.failure_threshold
            if self._probing or (self._open_until == 0.0 and threshold_reached):
                was_closed = self._open_until == 0.0
                self._open_until = self._clock() + self.cooldown
                self._probing = False
                if was_closed:
                    self.opened += 1
                return was_closed
            return False
