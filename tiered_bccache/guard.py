"""What a tier's failing costs, in one place: its breaker, its counters and the log.

A :class:`Guard` stands in front of one tier. Every call to the tier runs inside
``with guard.call(operation, lookup) as call:``; when the block raises, the guard decides
what that means, and ``call.failed`` tells the caller to move on:

- an :class:`~tiered_bccache.EntryError` (what is stored under the key is not an entry,
  such as a file planted where the filesystem tier keeps one) is a rejected entry and a
  miss: the tier answered;
- any other ``Exception`` is a failure of the tier: counted, logged at most once per
  30 s per tier and operation, reported to the breaker (a timeout opens it at once), and
  raised as :class:`~tiered_bccache.TierError` in ``strict`` mode;
- a ``BaseException`` (gevent's ``Timeout``, ``KeyboardInterrupt``) goes on up, and
  the breaker lets the next call probe rather than stay half-open.

A lookup that looks at a tier twice (a second look under the compile lease, a variant
key) counts each failure, miss and rejection of a tier once: the lookup record carries
one bit per tier for what was counted (``seen`` for misses and rejections, ``failed``
for failures). Nothing here knows Jinja.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol

from .errors import EntryError, TierError
from .stats import RateLimitedLog, TierCounters

if TYPE_CHECKING:
    from types import TracebackType

    from .breaker import CircuitBreaker

__all__ = ["Call", "Counted", "Guard"]


class Counted(Protocol):
    """What a guard reads and marks on a lookup: one bit per tier (``Guard.bit``)."""

    seen: int
    failed: int


class Guard:
    """The breaker (None for a local tier), counters and log of one tier."""

    __slots__ = ("bit", "breaker", "counters", "log", "name", "strict")

    def __init__(
        self,
        name: str,
        breaker: CircuitBreaker | None,
        log: RateLimitedLog,
        *,
        bit: int = 1,
        strict: bool = False,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.counters = TierCounters()
        self.log = log
        #: This tier's bit in a lookup's ``seen`` and ``failed``.
        self.bit = bit
        self.strict = strict

    def allow(self) -> bool:
        """Whether to call the tier now: False (counted as skipped) while its breaker is
        open. A call allowed must then be made inside :meth:`call`: a probe the breaker
        hands out has to be answered, or it stays half-open."""
        breaker = self.breaker
        if breaker is None or breaker.allow():
            return True
        self.counters.skipped += 1
        return False

    def call(self, operation: str, lookup: Counted | None = None, *, timed: bool = False) -> Call:
        """The context around one call to the tier (see the module docstring); ``timed``
        observes its latency."""
        return Call(self, operation, lookup, timed)

    def miss(self, lookup: Counted | None) -> None:
        """The tier holds nothing usable under the key: a miss, once per lookup."""
        if lookup is not None:
            if lookup.seen & self.bit:
                return
            lookup.seen |= self.bit
        self.counters.misses += 1

    def rejected(self, exc: EntryError, lookup: Counted | None) -> None:
        """An entry refused by its checks: a miss counted by its reason (once per
        lookup), logged unless it is only stale (a changed template is routine)."""
        if lookup is not None:
            if lookup.seen & self.bit:
                return
            lookup.seen |= self.bit
        counters = self.counters
        counters.reject(exc.reason)
        counters.misses += 1
        if exc.reason != "stale":
            self.log.warning(
                f"{self.name}:reject",
                "tiered_bccache: %s rejected an entry: %s",
                self.name,
                exc,
            )

    def failed(self, operation: str, exc: Exception, lookup: Counted | None = None) -> None:
        """Count and log a failure of the tier and tell its breaker; raise it as
        :class:`~tiered_bccache.TierError` in strict mode. A failure this lookup has
        already counted is not counted or logged again, but the breaker still hears of
        it (a probe it handed out must be answered), and its opening is logged."""
        # A timeout means a hung server: open at once rather than pay a second one.
        breaker = self.breaker
        opened = breaker is not None and breaker.failure(trip=isinstance(exc, TimeoutError))
        repeat = False
        if lookup is not None:
            repeat = bool(lookup.failed & self.bit)
            lookup.failed |= self.bit
        if not repeat:
            self.counters.errors += 1
        if opened:
            assert breaker is not None
            self.log.warning(
                f"{self.name}:breaker",
                "tiered_bccache: %s is failing (%r); skipping it for %.1f s",
                self.name,
                exc,
                breaker.cooldown,
            )
        elif not repeat:
            self.log.warning(
                f"{self.name}:{operation}",
                "tiered_bccache: %s failed during %s: %r",
                self.name,
                operation,
                exc,
            )
        if self.strict and not repeat:
            raise TierError(self.name, operation, exc) from exc


class Call:
    """One call to a tier under its :class:`Guard`; ``failed`` is True after the block
    when it raised (a failure or a rejected entry, both already counted)."""

    __slots__ = ("failed", "guard", "lookup", "operation", "started")

    def __init__(self, guard: Guard, operation: str, lookup: Counted | None, timed: bool) -> None:
        self.guard = guard
        self.operation = operation
        self.lookup = lookup
        self.failed = False
        self.started = perf_counter_ns() if timed else 0

    def __enter__(self) -> Call:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        guard = self.guard
        if self.started:
            guard.counters.latency.observe(perf_counter_ns() - self.started)
        breaker = guard.breaker
        if exc is None:
            if breaker is not None:
                breaker.success()
            return False
        if isinstance(exc, EntryError):
            # Something is stored under the key, but not an entry: a miss, never code
            # that runs. The tier answered.
            if breaker is not None:
                breaker.success()
            guard.rejected(exc, self.lookup)
        elif isinstance(exc, Exception):
            self.failed = True  # before a strict failure raises out of here
            guard.failed(self.operation, exc, self.lookup)
        else:
            if breaker is not None:
                breaker.abandon()
            return False
        self.failed = True
        return True
