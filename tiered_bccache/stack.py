"""The stack of tiers: the walk down them, promotion, write-through and the compile
lease.

:class:`TierStack` holds the tiers of one cache in lookup order, each as a
:class:`~tiered_bccache.layers.Layer`. A lookup walks from the top; the first entry
that fits wins and is promoted into every layer above it; a compile is written through
to every layer. What a tier's failure costs is its guard's
(:mod:`tiered_bccache.guard`), what a tier holds its layer's; the stack never asks
either. Nothing here knows Jinja: a lookup is any record with the fields of
:class:`Lookup`, and the cache's is Jinja's bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .breaker import CircuitBreaker
from .entry import EntryCodec
from .guard import Guard
from .keys import Key
from .layers import ByteLayer, Layer, ObjectLayer, Payload, Probe
from .stats import RateLimitedLog, logger
from .tiers.base import capabilities

if TYPE_CHECKING:
    import types

    from filelock import FileLock  # imported when a lease is taken, not on a hit

    from .compiling import Dependencies


__all__ = ["Lookup", "TierStack"]


class Lookup(Probe, Protocol):
    """One lookup as the stack drives it: what a layer reads (:class:`Probe`), the
    layers it may use, and the code it found."""

    #: The layers this lookup may use (the object layers only, for an environment whose
    #: entries must not leave the process).
    layers: tuple[Layer, ...]
    code: types.CodeType | None

    def variant(self, foreign: Dependencies) -> str | None:
        """The ``VARIANT`` part of this lookup's key, given the dependencies of the entry
        found under its base key (None when they cannot be read)."""
        ...


class TierStack:
    """The tiers of one cache, in lookup order, and the walk over them.

    ``codec`` signs and verifies what byte tiers hold; ``breakers`` builds the circuit
    breaker of a remote tier; ``strict`` raises a tier's failure instead of isolating
    it."""

    def __init__(
        self,
        tiers: Sequence[Any],
        codec: EntryCodec,
        breakers: Callable[[], CircuitBreaker],
        *,
        strict: bool,
        log: RateLimitedLog,
    ) -> None:
        layers: list[Layer] = []
        for index, tier in enumerate(tiers):
            caps = capabilities(tier)
            guard = Guard(
                caps.name,
                # A tier of code objects is in this process, whatever it says.
                breakers() if caps.remote and not caps.holds_objects else None,
                log,
                bit=1 << index,
                strict=strict,
            )
            if caps.holds_objects:
                layers.append(ObjectLayer(tier, caps, guard))
            else:
                layers.append(ByteLayer(tier, caps, guard, codec))
        self.layers: tuple[Layer, ...] = tuple(layers)
        #: The first layer offering a compile lease (the filesystem tier), if any.
        self.lease_layer = next((la for la in self.layers if la.lease is not None), None)
        #: Where the entries of an environment that must not leave the process go.
        self.private_layers = tuple(la for la in self.layers if la.objects)
        self._strict = bool(strict)

    @property
    def strict(self) -> bool:
        return self._strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._strict = bool(value)
        for layer in self.layers:
            layer.guard.strict = self._strict

    def load(self, lookup: Lookup, start: int = 0) -> int | None:
        """Walk the lookup's layers from ``start``; on a hit set ``lookup.code``, promote
        the entry into the layers above, and return its marshalled size; on a miss
        return None. Each layer counts what it found, once per lookup."""
        layers = lookup.layers
        for index in range(start, len(layers)):
            found = layers[index].fetch(lookup)
            if found is None:
                continue
            lookup.code = found.code
            for upper in layers[:index]:
                upper.put(found)
            return found.size
        return None

    def load_variant(self, lookup: Lookup) -> int | None:
        """The walk found an entry under the lookup's key compiled against other filters
        or tests than this environment's where the template uses them (two environments
        alike but for a filter's calling convention). Move the lookup to the variant key
        of this environment's filters and tests under those names, and look there; a
        compile after a miss is stored there too, so the two never overwrite each
        other."""
        key = Key.parse(lookup.key)
        if key.variant:
            # A variant this environment used before no longer fits (a filter replaced
            # since): the first writer's entry, under the base key, may.
            _rekey(lookup, str(key.base()))
            size = self.load(lookup)
            if size is not None or lookup.foreign is None:
                return size
        assert lookup.foreign is not None
        suffix = lookup.variant(lookup.foreign)
        if suffix is None:
            lookup.foreign = None
            return None  # a lookup failed: the compile will say why
        _rekey(lookup, str(key.with_variant(suffix)))
        return self.load(lookup)

    def store(
        self,
        layers: Sequence[Layer],
        key: str,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        dependencies: Dependencies,
        raw: bytes,
    ) -> None:
        """Write a fresh compile (``raw``: its dependencies and code, marshalled) into
        ``layers``. One tier failing never stops the others."""
        payload = Payload(key, source, checksum, code, dependencies, raw=raw)
        for layer in layers:
            layer.put(payload)

    def under_lease(
        self,
        lookup: Lookup,
        compile_here: Callable[[], None],
        waiting: Callable[[], None],
        timeout: float,
    ) -> int | None:
        """After a miss everywhere, make sure only one process of the host compiles the
        template: take its lease from the first layer offering one (waiting at most
        ``timeout`` for a holder; ``waiting`` is told when it has to), look again (the
        holder has written its entry by now, unless its compile failed), and on a
        second miss ``compile_here`` (which writes through), then release the lease.

        A compile that raises releases the lease at once, and the error reaches the
        caller exactly as Jinja's own compile raises it. Returns the entry's size when
        the second look hits, else None (compiled here, or without the lease when the
        holder is stuck or the lease cannot be had)."""
        from filelock import Timeout  # only a process that compiles pays for filelock

        layer = self.lease_layer
        assert layer is not None and layer.lease is not None
        lock: FileLock | None = None
        try:
            lock = layer.lease(lookup.key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                waiting()
                try:
                    lock.acquire(timeout=timeout, poll_interval=0.002)
                except Timeout:
                    lock = None  # the holder is stuck: compile without it
        except Exception as exc:
            layer.guard.failed("lease", exc)
            lock = None
        if lock is None:
            compile_here()
            return None
        try:
            size = self.load(lookup, lookup.layers.index(layer))
            if size is not None:
                return size
            compile_here()
            return None
        finally:
            _release(lock)

    def clear(self) -> None:
        """Empty every tier; a failure is counted and logged, and the others go on."""
        for layer in self.layers:
            with layer.guard.call("clear"):
                layer.tier.clear()

    def close(self) -> None:
        """Close every tier that has connections."""
        for layer in self.layers:
            if layer.close is not None:
                layer.close()


def _rekey(lookup: Lookup, key: str) -> None:
    """Move ``lookup`` to another key: its misses there are new ones (a failure stays
    counted: it is the tier's, not the key's)."""
    lookup.key = key
    lookup.foreign = None
    lookup.seen = 0


def _release(lock: FileLock) -> None:
    try:
        lock.release(force=True)
    except Exception as exc:  # a lock file removed under us: nothing left to release
        logger().debug("tiered_bccache: releasing a compile lease failed: %r", exc)
