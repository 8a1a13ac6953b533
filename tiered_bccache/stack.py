"""The stack of tiers: the walk down them, promotion, write-through, and what a tier
failing costs (its breaker, its counters, the log).

:class:`TierStack` drives the tiers of one cache in lookup order, each through a
:class:`Slot` (the tier, its counters and, for a remote tier, its circuit breaker). A
lookup walks from the top; the first valid entry wins and is promoted into every tier
above it; a compile is written through to every tier. An exception from a tier is
counted and logged and the walk goes on (``strict`` raises it as
:class:`~tiered_bccache.TierError`); an entry refused by the codec is a miss, counted
by its reason.
"""

from __future__ import annotations

import marshal
import time
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from jinja2.bccache import Bucket

from .breaker import CircuitBreaker
from .compiling import Dependencies, dependencies_hold, variant
from .entry import EntryCodec, is_compressed, source_digest
from .errors import EntryError, TierError
from .keys import split_variant, with_variant
from .stats import RateLimitedLog, TierCounters, logger

if TYPE_CHECKING:
    from filelock import FileLock  # imported when a lease is taken, not on a hit
    from jinja2 import Environment


__all__ = ["Held", "Lookup", "Slot", "TierStack"]


class Held:
    """What a memory tier holds for a template: the code, ready to run, with what a hit
    checks (the exact source, or its checksum when a bucket Jinja built carries no
    source, and the filters and tests the compile found) and the marshalled size the
    tier weighs it by."""

    __slots__ = ("checksum", "code", "dependencies", "size", "source")

    def __init__(
        self,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        size: int,
        dependencies: Dependencies,
    ) -> None:
        self.source = source
        self.checksum = checksum
        self.code = code
        self.size = size
        self.dependencies = dependencies


class Lookup(Bucket):
    """One lookup: Jinja's bucket, with the source kept for the memory tier's exact
    comparison, the checksum computed only when a byte tier needs it, the tiers the
    environment may use, and an entry found under the key but compiled for other
    filters or tests (``foreign``, see :meth:`TierStack.load_variant`)."""

    def __init__(
        self,
        environment: Environment,
        key: str,
        source: str | None,
        slots: tuple[Slot, ...],
    ) -> None:
        self.environment = environment
        self.key = key
        self.source = source
        #: The tiers this bucket may use (memory only for a private environment).
        self.slots = slots
        self._checksum: str | None = None
        self.code: types.CodeType | None = None
        #: The dependencies of an entry found under the key but compiled against other
        #: filters or tests (see :meth:`TierStack.load_variant`).
        self.foreign: Dependencies | None = None
        #: The tiers (by position) whose failure this lookup has counted and logged: a
        #: second look counts only a new one. (A new set only when a tier fails: a
        #: lookup allocates nothing it does not need.)
        self.failures: frozenset[int] = frozenset()

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            assert self.source is not None
            self._checksum = source_digest(self.source)
        return self._checksum

    @checksum.setter
    def checksum(self, value: str) -> None:
        self._checksum = value


class Slot:
    """One tier as the cache drives it: its counters and, for a remote tier, a breaker."""

    __slots__ = (
        "breaker",
        "compress",
        "counters",
        "lease",
        "max_entry_size",
        "name",
        "objects",
        "tier",
    )

    def __init__(self, tier: Any, name: str, breaker: CircuitBreaker | None) -> None:
        self.tier = tier
        self.name = name
        self.objects = bool(getattr(tier, "holds_objects", False))
        self.compress = bool(getattr(tier, "compress", False))
        self.max_entry_size: int | None = getattr(tier, "max_entry_size", None)
        self.breaker = breaker
        lease = getattr(tier, "lease", None)
        self.lease: Callable[[str], FileLock] | None = lease if callable(lease) else None
        self.counters = TierCounters()


class TierStack:
    """The tiers of one cache, in lookup order, and the walk over them.

    ``breakers`` builds the circuit breaker of a remote tier; ``strict`` raises a
    tier's failure instead of isolating it."""

    def __init__(
        self,
        tiers: Sequence[Any],
        names: Sequence[str],
        codec: EntryCodec,
        breakers: Callable[[], CircuitBreaker],
        *,
        strict: bool,
        log: RateLimitedLog,
    ) -> None:
        self.slots: tuple[Slot, ...] = tuple(
            Slot(tier, name, breakers() if getattr(tier, "remote", False) else None)
            for tier, name in zip(tiers, names, strict=True)
        )
        #: The first tier offering a compile lease (the filesystem tier), if any.
        self.lease_slot = next((s for s in self.slots if s.lease is not None), None)
        #: Where the entries of an environment that must not leave the process go.
        self.private_slots = tuple(s for s in self.slots if s.objects)
        self.codec = codec
        self.strict = strict
        self.log = log

    def load(
        self, bucket: Bucket, source: str | None, start: int = 0, *, again: bool = False
    ) -> int | None:
        """Walk the bucket's tiers from ``start``; on a hit fill ``bucket.code``, promote,
        and return the entry size; on a miss return None. ``again`` marks a second look
        in the same lookup: its misses and rejections were counted the first time, and
        so was a failure of a tier that failed then (``bucket.failures``)."""
        key = bucket.key
        env = bucket.environment
        slots: tuple[Slot, ...] = getattr(bucket, "slots", self.slots)
        failures: frozenset[int] = getattr(bucket, "failures", frozenset())
        for index in range(start, len(slots)):
            slot = slots[index]
            counters = slot.counters
            breaker = slot.breaker
            if breaker is not None and not breaker.allow():
                counters.skipped += 1
                continue
            data: bytes | None = None
            if slot.objects:
                try:
                    held: Held | None = slot.tier.get(key)
                except Exception as exc:
                    self.failed(slot, "get", exc, quiet=again and index in failures)
                    failures = _failed_at(bucket, failures, index)
                    continue
                if held is None:
                    counters.misses += 0 if again else 1
                    continue
                fresh = (
                    held.source == source
                    if source is not None and held.source is not None
                    else held.checksum == bucket.checksum
                )
                if not fresh:
                    if not again:
                        counters.rejected_stale += 1
                        counters.misses += 1
                    continue
                if not dependencies_hold(env, held.dependencies):
                    _foreign(bucket, held.dependencies)
                    counters.misses += 0 if again else 1
                    continue
                code: types.CodeType = held.code
                size: int = held.size
                dependencies: Dependencies = held.dependencies
            else:
                started = time.perf_counter_ns()
                try:
                    data = slot.tier.get(key)
                    if data is not None:
                        counters.bytes_read += len(data)
                        code, dependencies, size = self.codec.decode_sized(
                            key, bucket.checksum, data
                        )
                        if not dependencies_hold(env, dependencies):
                            # Written by an environment whose filters or tests differ
                            # where this template uses them: not this one's code.
                            _foreign(bucket, dependencies)
                            data = None
                except EntryError as exc:
                    # Something is stored under the key, but not an entry we wrote for
                    # this source: a miss, never code that runs. The tier answered.
                    if breaker is not None:
                        breaker.success()
                    if not again:
                        self.rejected(slot, exc)
                    continue
                except Exception as exc:
                    self.failed(slot, "get", exc, quiet=again and index in failures)
                    failures = _failed_at(bucket, failures, index)
                    continue
                except BaseException:
                    # gevent's Timeout, KeyboardInterrupt: the call did not answer, so
                    # let the next one probe rather than leave the breaker half-open.
                    if breaker is not None:
                        breaker.abandon()
                    raise
                finally:
                    counters.latency.observe(time.perf_counter_ns() - started)
                if breaker is not None:
                    breaker.success()
                if data is None:
                    counters.misses += 0 if again else 1
                    continue
            counters.hits += 1
            bucket.code = code
            if index == 1 and size and slots[0].objects and slots[0].breaker is None:
                # The common walk, [memory, byte tier]: promote without store()'s modes.
                self.remember(slots[0], key, source, bucket.checksum, code, dependencies, size)
            elif index:
                # Promote: a memory tier weighs the entry by its marshalled size
                # (``size``), a byte tier takes the entry as read.
                self.store(
                    slots[:index],
                    key,
                    source,
                    bucket.checksum,
                    code,
                    dependencies,
                    None,
                    data,
                    size=size,
                )
            return size
        return None

    def load_variant(self, bucket: Lookup, source: str | None) -> int | None:
        """The walk found an entry under the bucket's key compiled against other filters
        or tests than this environment's where the template uses them (two
        environments alike but for a filter's calling convention). Move the bucket to
        the variant key of this environment's filters and tests under those names, and
        look there; a compile after a miss is stored there too, so the two never
        overwrite each other."""
        base, variant_key = split_variant(bucket.key)
        if variant_key:
            # A variant this environment used before no longer fits (a filter replaced
            # since): the first writer's entry, under the base key, may.
            bucket.key = base
            bucket.foreign = None
            size = self.load(bucket, source)
            if size is not None or bucket.foreign is None:
                return size
        assert bucket.foreign is not None
        suffix = variant(bucket.environment, bucket.foreign)
        bucket.foreign = None
        if suffix is None:
            return None  # a lookup failed: the compile will say why
        bucket.key = with_variant(base, suffix)
        return self.load(bucket, source)

    def remember(
        self,
        slot: Slot,
        key: str,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        dependencies: Dependencies,
        size: int,
    ) -> None:
        """Promote a hit into one memory tier: what :meth:`store` does for it, and only
        that (a memory tier has no breaker)."""
        counters = slot.counters
        if slot.max_entry_size is not None and size > slot.max_entry_size:
            counters.skipped += 1
            return
        try:
            slot.tier.set(key, Held(source, checksum, code, size, dependencies), size)
        except Exception as exc:
            self.failed(slot, "set", exc)
            return
        counters.writes += 1
        counters.promotions += 1

    def rejected(self, slot: Slot, exc: EntryError) -> None:
        slot.counters.reject(exc.reason)
        slot.counters.misses += 1
        if exc.reason != "stale":  # a changed template is routine, not news
            self.log.warning(
                f"{slot.name}:reject",
                "tiered_bccache: %s rejected an entry: %s",
                slot.name,
                exc,
            )

    def store(
        self,
        slots: Sequence[Slot],
        key: str,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        dependencies: Dependencies,
        raw: bytes | None,
        data: bytes | None,
        *,
        size: int = 0,
    ) -> None:
        """Write one entry into ``slots``: the code object into memory tiers, an entry
        into byte tiers. A fresh compile passes ``raw`` (the marshalled dependencies and
        code); a promotion passes ``data`` (the entry as read from a lower tier, so it
        is not encoded again) or, from a memory tier, neither, with ``size`` the
        marshalled size. One tier failing never stops the others."""
        promotion = raw is None
        encoded: dict[bool, bytes] = {}
        stored: types.CodeType | None = None
        for slot in slots:
            counters = slot.counters
            value: Any
            if slot.objects:
                weight = len(raw) if raw is not None else size
                if not weight:
                    raw = marshal.dumps((dependencies, code))
                    weight = len(raw)
                if not promotion and raw is not None and stored is None:
                    # marshal.dumps left a cached copy of the bytecode on every code
                    # object of the freshly compiled template (CPython 3.11+ caches
                    # co_code when it is read): 40% more memory than a loaded copy.
                    stored = marshal.loads(raw)[1]
                value = Held(
                    source,
                    checksum,
                    stored if stored is not None else code,
                    weight,
                    dependencies,
                )
            else:
                # An entry as read is passed on when it is compressed as this tier wants.
                value = (
                    data
                    if data is not None and is_compressed(data) == slot.compress
                    else encoded.get(slot.compress)
                )
                if value is None:
                    if raw is None:
                        raw = marshal.dumps((dependencies, code))
                    value = self.codec.encode(key, checksum, raw, compress=slot.compress)
                    encoded[slot.compress] = value
                weight = len(value)
            # Every reason to skip the tier comes before the breaker: a probe it hands
            # out must be answered, or it stays half-open for good.
            if slot.max_entry_size is not None and weight > slot.max_entry_size:
                counters.skipped += 1
                continue
            breaker = slot.breaker
            if breaker is not None and not breaker.allow():
                counters.skipped += 1
                continue
            try:
                if slot.objects:
                    slot.tier.set(key, value, weight)
                else:
                    slot.tier.set(key, value)
            except Exception as exc:
                self.failed(slot, "set", exc)
                continue
            except BaseException:
                if breaker is not None:
                    breaker.abandon()
                raise
            if breaker is not None:
                breaker.success()
            if not slot.objects:
                counters.bytes_written += weight
            counters.writes += 1
            if promotion:
                counters.promotions += 1

    def under_lease(
        self,
        bucket: Bucket,
        source: str | None,
        compile_here: Callable[[], None],
        waiting: Callable[[], None],
        timeout: float,
    ) -> int | None:
        """After a miss everywhere, make sure only one process of the host compiles the
        template: take its lease from the first tier offering one (waiting at most
        ``timeout`` for a holder; ``waiting`` is told when it has to), look again (the
        holder has written its entry by now, unless its compile failed), and on a
        second miss ``compile_here`` (which writes through), then release the lease.

        A compile that raises releases the lease at once, and the error reaches the
        caller exactly as Jinja's own compile raises it. Returns the entry's size when
        the second look hits, else None (compiled here, or without the lease when the
        holder is stuck or the lease cannot be had)."""
        from filelock import Timeout  # only a process that compiles pays for filelock

        slot = self.lease_slot
        assert slot is not None and slot.lease is not None
        lock: FileLock | None = None
        try:
            lock = slot.lease(bucket.key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                waiting()
                try:
                    lock.acquire(timeout=timeout, poll_interval=0.002)
                except Timeout:
                    lock = None  # the holder is stuck: compile without it
        except Exception as exc:
            self.failed(slot, "lease", exc)
            lock = None
        if lock is None:
            compile_here()
            return None
        try:
            size = self.load(bucket, source, bucket.slots.index(slot), again=True)  # type: ignore[attr-defined]
            if size is not None:
                return size
            compile_here()
            return None
        finally:
            _release(lock)

    def failed(self, slot: Slot, operation: str, exc: Exception, *, quiet: bool = False) -> None:
        """Count and log a tier's failure and tell its breaker. ``quiet``: a second
        failure within one lookup, already counted and logged; the breaker still hears
        of it (a probe it handed out must be answered)."""
        # A timeout means a hung server: open at once rather than pay a second one.
        opened = slot.breaker is not None and slot.breaker.failure(
            trip=isinstance(exc, TimeoutError)
        )
        if quiet:
            return
        slot.counters.errors += 1
        if opened:
            assert slot.breaker is not None
            self.log.warning(
                f"{slot.name}:breaker",
                "tiered_bccache: %s is failing (%r); skipping it for %.1f s",
                slot.name,
                exc,
                slot.breaker.cooldown,
            )
        else:
            self.log.warning(
                f"{slot.name}:{operation}",
                "tiered_bccache: %s failed during %s: %r",
                slot.name,
                operation,
                exc,
            )
        if self.strict:
            raise TierError(slot.name, operation, exc) from exc


def _failed_at(bucket: Bucket, failures: frozenset[int], index: int) -> frozenset[int]:
    """Note on the bucket that the tier at ``index`` failed in this lookup."""
    failures = failures | {index}
    bucket.failures = failures  # type: ignore[attr-defined]
    return failures


def _foreign(bucket: Bucket, dependencies: Dependencies) -> None:
    if getattr(bucket, "foreign", None) is None:
        bucket.foreign = dependencies  # type: ignore[attr-defined]


def _release(lock: FileLock) -> None:
    try:
        lock.release(force=True)
    except Exception as exc:  # a lock file removed under us: nothing left to release
        logger().debug("tiered_bccache: releasing a compile lease failed: %r", exc)
