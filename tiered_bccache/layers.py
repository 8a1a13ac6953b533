"""Layers: each tier behind one small protocol, so the walk never asks what a tier holds.

A layer wraps one tier with its :class:`~tiered_bccache.guard.Guard` and what the tier
declared once (:func:`~tiered_bccache.tiers.base.capabilities`). Two kinds:

- :class:`ObjectLayer`, over a tier of ready code objects (the memory tier): it stores
  a :class:`Held` record and checks a hit against the exact source;
- :class:`ByteLayer`, over a tier of bytes: it stores entries the codec encoded (with
  the tier's compression, within its size limit) and lets nothing it reads run before
  the codec verified it.

Both answer :meth:`Layer.fetch` (a lookup's entry, or None, counted) and
:meth:`Layer.put` (write a :class:`Payload`, counted; a failure is the guard's). A
lookup is whatever carries the fields of :class:`Probe`; the cache's is Jinja's bucket.
"""

from __future__ import annotations

import marshal
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .entry import EntryCodec, is_compressed
from .errors import EntryError
from .guard import Guard
from .stats import TierCounters

if TYPE_CHECKING:
    from filelock import FileLock

    from .compiling import Dependencies
    from .tiers.base import Capabilities

__all__ = ["ByteLayer", "Held", "Layer", "ObjectLayer", "Payload", "Probe"]


class Probe(Protocol):
    """What a layer reads of a lookup, and marks on it."""

    key: str
    #: The exact source, when the lookup has it (a bucket Jinja built may not).
    source: str | None
    #: Misses and failures counted, one bit per tier (see :mod:`tiered_bccache.guard`).
    seen: int
    failed: int
    #: The dependencies of the first entry found under the key that does not fit.
    foreign: Dependencies | None

    @property
    def checksum(self) -> str: ...

    def holds(self, dependencies: Dependencies) -> bool:
        """Whether an entry compiled against ``dependencies`` is this lookup's code."""
        ...


class Held:
    """What an object layer stores for a template: the code, ready to run, with what a
    hit checks (the exact source, or its checksum when a bucket Jinja built carries no
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


class Payload:
    """One template's code on its way into layers: a fresh compile (``raw``, the
    marshalled dependencies and code) or a hit being promoted (``data``, the entry as a
    byte layer read it, or neither from an object layer; ``size`` the marshalled size).
    Each form the layers need is made once, when the first layer asks for it."""

    __slots__ = (
        "_encoded",
        "_loaded",
        "checksum",
        "code",
        "data",
        "dependencies",
        "key",
        "promoted",
        "raw",
        "size",
        "source",
    )

    def __init__(
        self,
        key: str,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        dependencies: Dependencies,
        *,
        raw: bytes | None = None,
        data: bytes | None = None,
        size: int = 0,
    ) -> None:
        self.key = key
        self.source = source
        self.checksum = checksum
        self.code = code
        self.dependencies = dependencies
        self.raw = raw
        self.data = data
        self.size = size if size else (len(raw) if raw is not None else 0)
        #: A promotion, not a compile (counted as such by the layers it fills).
        self.promoted = raw is None
        self._encoded: dict[bool, bytes] | None = None  # made when first needed
        self._loaded: types.CodeType | None = None

    def marshalled(self) -> bytes:
        """The dependencies and code, marshalled (what the codec signs)."""
        if self.raw is None:
            self.raw = marshal.dumps((self.dependencies, self.code))
            self.size = len(self.raw)
        return self.raw

    def weight(self) -> int:
        """The marshalled size: what an object layer weighs the entry by."""
        return self.size or len(self.marshalled())

    def resident_code(self) -> types.CodeType:
        """The code an object layer keeps. For a fresh compile, a copy loaded from
        ``raw``: marshal.dumps left a cached copy of the bytecode on every code object of
        the freshly compiled template (CPython 3.11+ caches co_code when it is read),
        40% more memory than a loaded copy."""
        if self.promoted:
            return self.code
        if self._loaded is None:
            self._loaded = marshal.loads(self.marshalled())[1]
        return self._loaded

    def encoded(self, codec: EntryCodec, compress: bool) -> bytes:
        """The entry for a byte layer: as read when it is compressed as the layer wants,
        else encoded (once per compression)."""
        data = self.data
        if data is not None and is_compressed(data) == compress:
            return data
        if self._encoded is None:
            self._encoded = {}
        entry = self._encoded.get(compress)
        if entry is None:
            entry = codec.encode(self.key, self.checksum, self.marshalled(), compress=compress)
            self._encoded[compress] = entry
        return entry


class Layer:
    """One tier as the stack drives it. ``objects``: it holds code objects (and may
    hold a private environment's entries); ``lease``: the compile lease it offers."""

    __slots__ = ("close", "compress", "events", "guard", "lease", "max_entry_size", "name", "tier")

    objects = False

    def __init__(self, tier: Any, capabilities: Capabilities, guard: Guard) -> None:
        self.tier = tier
        self.name = capabilities.name
        self.max_entry_size = capabilities.max_entry_size
        #: Entries for this tier are zlib-compressed (a byte layer's concern).
        self.compress = capabilities.compress
        self.lease: Callable[[str], FileLock] | None = capabilities.lease
        self.events = capabilities.events
        self.close = capabilities.close
        self.guard = guard

    @property
    def counters(self) -> TierCounters:
        return self.guard.counters

    def fetch(self, lookup: Probe) -> Payload | None:
        """The lookup's entry in this tier, counted as a hit; None, counted as a miss (or
        a failure) once per lookup, when it holds none that fits."""
        raise NotImplementedError

    def put(self, payload: Payload) -> None:
        """Write ``payload`` (counted as a write, and a promotion when it is one); an
        entry too large for the tier, or a breaker open, is skipped and counted."""
        raise NotImplementedError

    def _foreign(self, lookup: Probe, dependencies: Dependencies) -> None:
        """An entry written by an environment whose filters or tests differ where the
        template uses them: not this lookup's code, a miss. The first one the lookup
        meets decides its variant key (see :meth:`TierStack.load_variant
        <tiered_bccache.stack.TierStack.load_variant>`)."""
        if lookup.foreign is None:
            lookup.foreign = dependencies
        self.guard.miss(lookup)

    def _too_large(self, size: int) -> bool:
        # Every reason to skip the tier comes before the breaker: a probe it hands out
        # must be answered, or it stays half-open for good.
        if self.max_entry_size is not None and size > self.max_entry_size:
            self.guard.counters.skipped += 1
            return True
        return False


class ObjectLayer(Layer):
    """A tier of ready code objects (:class:`~tiered_bccache.MemoryTier`): in this
    process, so its calls need no breaker (the stack gives it none); a call that raises
    is still counted and logged by its guard."""

    __slots__ = ()

    objects = True

    def fetch(self, lookup: Probe) -> Payload | None:
        guard = self.guard
        try:
            held: Held | None = self.tier.get(lookup.key)
        except Exception as exc:
            guard.failed("get", exc, lookup)
            return None
        if held is None:
            guard.miss(lookup)
            return None
        source = lookup.source
        if (
            held.source != source
            if source is not None and held.source is not None
            else held.checksum != lookup.checksum
        ):
            guard.rejected(EntryError("stale", "compiled from another source"), lookup)
            return None
        if not lookup.holds(held.dependencies):
            self._foreign(lookup, held.dependencies)
            return None
        guard.counters.hits += 1
        return Payload(
            lookup.key, source, held.checksum, held.code, held.dependencies, size=held.size
        )

    def put(self, payload: Payload) -> None:
        weight = payload.weight()
        if self._too_large(weight):
            return
        held = Held(
            payload.source,
            payload.checksum,
            payload.code if payload.promoted else payload.resident_code(),
            weight,
            payload.dependencies,
        )
        guard = self.guard
        try:
            self.tier.set(payload.key, held, weight)
        except Exception as exc:
            guard.failed("set", exc)
            return
        counters = guard.counters
        counters.writes += 1
        if payload.promoted:
            counters.promotions += 1


class ByteLayer(Layer):
    """A tier of bytes, with the codec that signs and verifies its entries and the
    compression it wants."""

    __slots__ = ("codec",)

    def __init__(
        self, tier: Any, capabilities: Capabilities, guard: Guard, codec: EntryCodec
    ) -> None:
        super().__init__(tier, capabilities, guard)
        self.codec = codec

    def fetch(self, lookup: Probe) -> Payload | None:
        guard = self.guard
        if guard.breaker is not None and not guard.allow():  # a local tier has none
            return None
        key = lookup.key
        data: bytes | None = None
        with guard.call("get", lookup, timed=True) as call:
            data = self.tier.get(key)
        if call.failed:
            return None
        if data is None:
            guard.miss(lookup)
            return None
        guard.counters.bytes_read += len(data)
        try:
            code, dependencies, size = self.codec.decode_sized(key, lookup.checksum, data)
        except EntryError as exc:
            # Something is stored under the key, but not an entry written for this
            # source: a miss, never code that runs.
            guard.rejected(exc, lookup)
            return None
        if not lookup.holds(dependencies):
            self._foreign(lookup, dependencies)
            return None
        guard.counters.hits += 1
        return Payload(
            key, lookup.source, lookup.checksum, code, dependencies, data=data, size=size
        )

    def put(self, payload: Payload) -> None:
        value = payload.encoded(self.codec, self.compress)
        if self._too_large(len(value)):
            return
        guard = self.guard
        if guard.breaker is not None and not guard.allow():  # a local tier has none
            return
        with guard.call("set") as call:
            self.tier.set(payload.key, value)
        if call.failed:
            return
        counters = guard.counters
        counters.bytes_written += len(value)
        counters.writes += 1
        if payload.promoted:
            counters.promotions += 1
