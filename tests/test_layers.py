"""Layers: the payload on its way into tiers (each form made once), the object layer
(exact-source and dependency checks, Held records weighed by the marshalled size) and
the byte layer (entries verified before use, compression, size limits before the
breaker), each counting through its guard."""

from __future__ import annotations

import marshal

import pytest
from jinja2 import Environment

from tests.conftest import SECRET
from tests.walking import (
    BRANDED,
    KEY,
    SOURCE,
    DictTier,
    brand,
    brand_in_context,
    brand_in_environment,
    compiled,
    env_with_brand,
)
from tiered_bccache import MemoryTier, TierError
from tiered_bccache.breaker import CircuitBreaker
from tiered_bccache.entry import EntryCodec, is_compressed, source_digest
from tiered_bccache.errors import EntryError
from tiered_bccache.guard import Guard
from tiered_bccache.layers import ByteLayer, Held, ObjectLayer, Payload
from tiered_bccache.lookup import Lookup
from tiered_bccache.stack import TierStack
from tiered_bccache.stats import RateLimitedLog
from tiered_bccache.tiers.base import capabilities

EDITED = SOURCE + "<hr>"
CHECKSUM = source_digest(SOURCE)
CODEC = EntryCodec(SECRET)


class FailingMemoryTier(MemoryTier):
    """A memory tier whose get or set raises (a bug in a tier of code objects)."""

    def __init__(
        self, *, fail_get: Exception | None = None, fail_set: Exception | None = None
    ) -> None:
        super().__init__()
        self.fail_get = fail_get
        self.fail_set = fail_set

    def get(self, key: str) -> object:
        if self.fail_get is not None:
            raise self.fail_get
        return super().get(key)

    def set(self, key: str, value: object, size: int = 1) -> None:
        if self.fail_set is not None:
            raise self.fail_set
        super().set(key, value, size)


class Clock:
    """A monotonic clock a test moves by hand, so a breaker's cool-down passes at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fresh(env: Environment | None = None, source: str = SOURCE) -> Payload:
    """The payload of a fresh compile of ``source``."""
    code, dependencies, raw = compiled(env, source)
    return Payload(KEY, source, source_digest(source), code, dependencies, raw=raw)


def object_layer(tier: MemoryTier | None = None, *, bit: int = 1) -> ObjectLayer:
    tier = tier if tier is not None else MemoryTier()
    return ObjectLayer(tier, capabilities(tier), Guard(tier.name, None, RateLimitedLog(), bit=bit))


def byte_layer(
    tier: DictTier, breaker: CircuitBreaker | None = None, *, strict: bool = False
) -> ByteLayer:
    guard = Guard(tier.name, breaker, RateLimitedLog(), strict=strict)
    return ByteLayer(tier, capabilities(tier), guard, CODEC)


def lookup(env: Environment | None = None, source: str | None = SOURCE) -> Lookup:
    return Lookup(env or Environment(), KEY, source, ())


def half_open_breaker(clock: Clock) -> CircuitBreaker:
    """A breaker one failure opened, whose cool-down is over: its next allow() hands out
    the probe."""
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 2.0
    assert breaker.state == "half-open"
    return breaker


# -- Payload ------------------------------------------------------------------------------


def test_a_promotion_is_marshalled_once_and_its_size_filled_in() -> None:
    """A payload without raw marshals the dependencies and code when first asked, fills
    in its size from that, and hands out the same bytes after."""
    code, dependencies, _ = compiled()
    payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies)
    assert (payload.promoted, payload.size, payload.raw) == (True, 0, None)
    raw = payload.marshalled()
    assert marshal.loads(raw) == (dependencies, code)
    assert payload.size == len(raw)
    assert payload.marshalled() is raw


def test_a_fresh_compile_hands_out_its_raw_as_marshalled() -> None:
    """A payload given raw is not a promotion, weighs len(raw), and marshals nothing."""
    code, dependencies, raw = compiled()
    payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, raw=raw)
    assert (payload.promoted, payload.size) == (False, len(raw))
    assert payload.marshalled() is raw


def test_weight_is_the_size_given_without_marshalling() -> None:
    """A promotion carrying its size weighs that size and is not marshalled for it; one
    without a size is marshalled to weigh it."""
    code, dependencies, raw = compiled()
    sized = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, size=12345)
    assert sized.weight() == 12345
    assert sized.raw is None
    unsized = Payload(KEY, SOURCE, CHECKSUM, code, dependencies)
    assert unsized.weight() == len(unsized.marshalled()) == len(raw)


def test_the_resident_code_of_a_fresh_compile_is_a_loaded_copy() -> None:
    """For a fresh compile the code an object layer keeps is loaded from raw, once: not
    the compiled object, but the same bytecode."""
    code, dependencies, raw = compiled()
    payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, raw=raw)
    resident = payload.resident_code()
    assert resident is not code
    assert resident.co_code == code.co_code
    assert resident == code
    assert payload.resident_code() is resident


def test_the_resident_code_of_a_promotion_is_its_code() -> None:
    """A promotion's code is already a loaded copy: it is kept as it is."""
    code, dependencies, raw = compiled()
    payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, size=len(raw))
    assert payload.resident_code() is code


def test_an_entry_read_compressed_as_wanted_is_passed_on_as_read() -> None:
    """A payload read from a byte tier hands out the very bytes it read to a layer that
    wants the same compression, and encodes nothing."""
    code, dependencies, raw = compiled()
    for compress in (True, False):
        data = CODEC.encode(KEY, CHECKSUM, raw, compress=compress)
        payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, data=data, size=len(raw))
        assert payload.encoded(CODEC, compress) is data
        assert payload.raw is None


def test_an_entry_read_with_other_compression_is_encoded_once_for_the_layer() -> None:
    """Wanted with the other compression, a read entry is encoded again, once: the same
    object on a second call, compressed as asked, and the codec reads it back."""
    code, dependencies, raw = compiled()
    for compress in (True, False):
        data = CODEC.encode(KEY, CHECKSUM, raw, compress=not compress)
        payload = Payload(KEY, SOURCE, CHECKSUM, code, dependencies, data=data, size=len(raw))
        entry = payload.encoded(CODEC, compress)
        assert entry != data
        assert is_compressed(entry) is compress
        assert payload.encoded(CODEC, compress) is entry
        decoded, found, size = CODEC.decode_sized(KEY, CHECKSUM, entry)
        assert (decoded, found, size) == (code, dependencies, len(raw))


def test_a_fresh_compile_is_encoded_once_per_compression() -> None:
    """A fresh compile is encoded once for plain layers and once for compressing ones,
    each entry handed out again on later calls and each decoding to the code."""
    payload = fresh()
    plain, zipped = payload.encoded(CODEC, False), payload.encoded(CODEC, True)
    assert (is_compressed(plain), is_compressed(zipped)) == (False, True)
    assert payload.encoded(CODEC, False) is plain
    assert payload.encoded(CODEC, True) is zipped
    for entry in (plain, zipped):
        assert CODEC.decode(KEY, CHECKSUM, entry) == payload.code


# -- layers -------------------------------------------------------------------------------


def test_a_layer_takes_what_its_tier_declares() -> None:
    """A layer reads the tier's name, compression and size limit once, shares its
    guard's counters, and says whether it holds code objects."""
    tier = DictTier("remote", compress=True, max_entry_size=1000)
    layer = byte_layer(tier)
    assert (layer.name, layer.compress, layer.max_entry_size) == ("remote", True, 1000)
    assert (layer.objects, layer.lease, layer.close) == (False, None, None)
    assert layer.counters is layer.guard.counters
    memory = object_layer(MemoryTier(max_bytes=4096))
    assert (memory.name, memory.objects, memory.max_entry_size) == ("memory", True, 4096)


# -- ObjectLayer.fetch --------------------------------------------------------------------


def test_an_object_layer_miss_is_counted_once_per_lookup() -> None:
    """An empty key is a miss; a second fetch for the same lookup counts nothing, one
    for another lookup counts again."""
    layer = object_layer()
    probe = lookup()
    assert layer.fetch(probe) is None
    assert layer.fetch(probe) is None
    assert layer.counters.misses == 1
    assert layer.fetch(lookup()) is None
    counters = layer.counters
    assert (counters.misses, counters.hits, counters.errors) == (2, 0, 0)


def test_an_object_layer_hit_is_a_promotion_of_the_held_code() -> None:
    """A hit returns a payload that is a promotion: the held code itself, its
    dependencies and checksum, and the size the entry was weighed by; a hit is
    counted."""
    tier = MemoryTier()
    layer = object_layer(tier)
    payload = fresh()
    layer.put(payload)
    held = tier.get(KEY)
    assert isinstance(held, Held)
    found = layer.fetch(lookup())
    assert found is not None
    assert found.code is held.code
    assert (found.key, found.source, found.checksum) == (KEY, SOURCE, CHECKSUM)
    assert found.dependencies == payload.dependencies
    assert (found.promoted, found.size, found.raw, found.data) == (
        True,
        len(payload.marshalled()),
        None,
        None,
    )
    assert (layer.counters.hits, layer.counters.misses) == (1, 0)


def test_an_object_layer_entry_for_another_source_is_a_stale_miss_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Code held for another source is refused as stale: counted as rejected_stale and a
    miss, once per lookup, and not logged."""
    layer = object_layer()
    layer.put(fresh())
    probe = lookup(source=EDITED)
    assert layer.fetch(probe) is None
    assert layer.fetch(probe) is None
    counters = layer.counters
    assert (counters.rejected_stale, counters.misses, counters.hits) == (1, 1, 0)
    assert caplog.records == []


def test_an_object_layer_compares_checksums_when_a_source_is_missing() -> None:
    """When the lookup or the held entry has no source (a bucket Jinja built), the
    checksums decide: the source's digest is a hit, another digest a stale miss."""
    layer = object_layer()
    layer.put(fresh())
    by_checksum = lookup(source=None)
    by_checksum.checksum = CHECKSUM
    assert layer.fetch(by_checksum) is not None
    other = lookup(source=None)
    other.checksum = source_digest(EDITED)
    assert layer.fetch(other) is None
    assert (layer.counters.hits, layer.counters.rejected_stale) == (1, 1)

    sourceless = object_layer()
    code, dependencies, raw = compiled()
    sourceless.put(Payload(KEY, None, CHECKSUM, code, dependencies, raw=raw))
    assert sourceless.fetch(lookup()) is not None
    assert sourceless.fetch(lookup(source=EDITED)) is None
    assert (sourceless.counters.hits, sourceless.counters.rejected_stale) == (1, 1)


def test_an_object_layer_entry_for_other_filters_is_a_foreign_miss() -> None:
    """Code compiled against another calling convention of a filter the template uses is
    a miss, once per lookup, and the lookup carries that entry's dependencies; the
    environment that compiled it hits."""
    writer = env_with_brand(brand)
    layer = object_layer()
    payload = fresh(writer, BRANDED)
    layer.put(payload)
    probe = lookup(env_with_brand(brand_in_context), BRANDED)
    assert layer.fetch(probe) is None
    assert layer.fetch(probe) is None
    assert probe.foreign == payload.dependencies
    assert (layer.counters.misses, layer.counters.hits, layer.counters.rejected_stale) == (
        1,
        0,
        0,
    )
    assert layer.fetch(lookup(writer, BRANDED)) is not None


def test_only_the_first_foreign_entry_a_lookup_meets_is_kept() -> None:
    """Two layers holding entries of two other conventions: the lookup keeps the
    dependencies of the first it met, and each layer counts a miss."""
    upper, lower = object_layer(bit=1), object_layer(bit=2)
    first = fresh(env_with_brand(brand), BRANDED)
    second = fresh(env_with_brand(brand_in_environment), BRANDED)
    assert first.dependencies != second.dependencies
    upper.put(first)
    lower.put(second)
    probe = lookup(env_with_brand(brand_in_context), BRANDED)
    assert upper.fetch(probe) is None
    assert lower.fetch(probe) is None
    assert probe.foreign == first.dependencies
    assert (upper.counters.misses, lower.counters.misses) == (1, 1)


def test_an_object_tier_that_raises_on_get_is_counted_through_the_guard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A get that raises is an error of the tier (not a miss), logged; the fetch finds
    nothing."""
    layer = object_layer(FailingMemoryTier(fail_get=RuntimeError("broken LRU")))
    assert layer.fetch(lookup()) is None
    counters = layer.counters
    assert (counters.errors, counters.misses, counters.hits) == (1, 0, 0)
    assert "memory failed during get" in caplog.text


def test_a_tier_of_objects_that_says_it_is_remote_gets_no_breaker() -> None:
    """A tier of code objects lives in this process whatever its ``remote`` says: the
    stack puts no breaker in front of it (a breaker would skip the memory tier)."""

    class RemoteMemory(MemoryTier):
        remote = True

    stack = TierStack(
        [RemoteMemory(), DictTier(remote=True)],
        EntryCodec(SECRET),
        CircuitBreaker,
        strict=False,
        log=RateLimitedLog(),
    )
    assert [layer.objects for layer in stack.layers] == [True, False]
    assert stack.layers[0].guard.breaker is None
    assert stack.layers[1].guard.breaker is not None


# -- ObjectLayer.put ----------------------------------------------------------------------


def test_an_object_layer_stores_a_held_record_weighed_by_the_marshalled_size() -> None:
    """A fresh compile is stored as a Held with the source, checksum, the loaded copy of
    the code, its dependencies and the marshalled size, which the tier weighs it by;
    counted as a write, not a promotion."""
    tier = MemoryTier(max_bytes=1 << 20)
    layer = object_layer(tier)
    payload = fresh()
    layer.put(payload)
    held = tier.get(KEY)
    assert isinstance(held, Held)
    size = len(payload.marshalled())
    assert (held.source, held.checksum, held.size) == (SOURCE, CHECKSUM, size)
    assert held.code is payload.resident_code() and held.code is not payload.code
    assert held.dependencies == payload.dependencies
    assert tier.currsize == size
    counters = layer.counters
    assert (counters.writes, counters.promotions, counters.bytes_written) == (1, 0, 0)


def test_an_object_layer_counts_a_promotion_only_for_a_promoted_payload() -> None:
    """A promotion is stored as it is (its code, its size) and counted as a write and a
    promotion."""
    tier = MemoryTier(max_bytes=1 << 20)
    layer = object_layer(tier)
    code, dependencies, raw = compiled()
    layer.put(Payload(KEY, SOURCE, CHECKSUM, code, dependencies, size=len(raw)))
    held = tier.get(KEY)
    assert isinstance(held, Held) and held.code is code and held.size == len(raw)
    assert (layer.counters.writes, layer.counters.promotions) == (1, 1)
    layer.put(fresh())
    assert (layer.counters.writes, layer.counters.promotions) == (2, 1)


def test_an_entry_too_large_for_an_object_layer_is_skipped() -> None:
    """A payload weighing more than the tier's max_bytes is skipped and counted, not
    written; one weighing exactly that much is written."""
    payload = fresh()
    size = len(payload.marshalled())
    small = object_layer(MemoryTier(max_bytes=size - 1))
    small.put(payload)
    assert len(small.tier) == 0
    assert (small.counters.skipped, small.counters.writes) == (1, 0)
    exact = object_layer(MemoryTier(max_bytes=size))
    exact.put(payload)
    assert KEY in exact.tier
    assert (exact.counters.skipped, exact.counters.writes) == (0, 1)


def test_an_object_tier_that_raises_on_set_is_counted_through_the_guard() -> None:
    """A set that raises counts an error and no write; in strict mode it is raised as
    TierError for the operation set."""
    layer = object_layer(FailingMemoryTier(fail_set=RuntimeError("broken LRU")))
    layer.put(fresh())
    counters = layer.counters
    assert (counters.errors, counters.writes, counters.promotions) == (1, 0, 0)
    tier = FailingMemoryTier(fail_set=RuntimeError("broken LRU"))
    strict = ObjectLayer(
        tier, capabilities(tier), Guard("memory", None, RateLimitedLog(), strict=True)
    )
    with pytest.raises(TierError) as info:
        strict.put(fresh())
    assert info.value.operation == "set"
    assert strict.counters.writes == 0


# -- ByteLayer.fetch ----------------------------------------------------------------------


def test_a_byte_layer_miss_is_counted_once_per_lookup_and_timed() -> None:
    """An empty key is a miss counted once per lookup; every get is timed."""
    tier = DictTier()
    layer = byte_layer(tier)
    probe = lookup()
    assert layer.fetch(probe) is None
    assert layer.fetch(probe) is None
    counters = layer.counters
    assert (counters.misses, counters.hits, counters.bytes_read) == (1, 0, 0)
    assert (tier.gets, counters.latency.count) == (2, 2)


def test_a_byte_layer_hit_returns_the_code_and_the_bytes_as_read() -> None:
    """A verified entry is a hit: the payload has the decoded code and dependencies, the
    marshalled size, and as data the very bytes read (counted in bytes_read)."""
    tier = DictTier()
    code, dependencies, raw = compiled()
    entry = CODEC.encode(KEY, CHECKSUM, raw, compress=True)
    tier.data[KEY] = entry
    layer = byte_layer(tier)
    found = layer.fetch(lookup())
    assert found is not None
    assert found.data is entry
    assert (found.code, found.dependencies, found.size) == (code, dependencies, len(raw))
    assert (found.key, found.source, found.checksum, found.promoted) == (
        KEY,
        SOURCE,
        CHECKSUM,
        True,
    )
    counters = layer.counters
    assert (counters.hits, counters.misses, counters.bytes_read) == (1, 0, len(entry))


def test_garbage_in_a_byte_layer_is_a_rejected_format_miss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bytes that are not an entry are refused before anything is unmarshalled: counted
    as rejected_format and a miss (once per lookup), read bytes counted, logged, never
    an error."""
    tier = DictTier()
    tier.data[KEY] = b"garbage" * 20
    layer = byte_layer(tier, strict=True)
    probe = lookup()
    assert layer.fetch(probe) is None
    assert layer.fetch(probe) is None
    counters = layer.counters
    assert (counters.rejected_format, counters.misses, counters.errors) == (1, 1, 0)
    assert counters.bytes_read == 2 * 140
    assert "dict rejected an entry" in caplog.text


def test_a_byte_layer_entry_for_another_source_is_a_stale_miss() -> None:
    """An entry signed for another source's checksum is rejected as stale."""
    tier = DictTier()
    tier.data[KEY] = CODEC.encode(KEY, CHECKSUM, compiled()[2])
    layer = byte_layer(tier)
    assert layer.fetch(lookup(source=EDITED)) is None
    assert (layer.counters.rejected_stale, layer.counters.misses) == (1, 1)


def test_a_byte_tier_refusing_what_it_holds_is_a_rejected_miss() -> None:
    """A get that raises EntryError (a FIFO planted where a file should be) is a rejected
    entry and a miss, not an error."""
    tier = DictTier(fail_get=EntryError("format", "not a regular file"))
    layer = byte_layer(tier)
    assert layer.fetch(lookup()) is None
    counters = layer.counters
    assert (counters.rejected_format, counters.misses, counters.errors) == (1, 1, 0)


def test_a_byte_layer_entry_for_other_filters_is_a_foreign_miss() -> None:
    """A verified entry compiled against another calling convention is a miss, and the
    lookup carries its dependencies unless it already carries some."""
    payload = fresh(env_with_brand(brand), BRANDED)
    tier = DictTier()
    tier.data[KEY] = payload.encoded(CODEC, False)
    layer = byte_layer(tier)
    probe = lookup(env_with_brand(brand_in_context), BRANDED)
    assert layer.fetch(probe) is None
    assert probe.foreign == payload.dependencies
    assert (layer.counters.misses, layer.counters.hits) == (1, 0)
    earlier = fresh(env_with_brand(brand_in_environment), BRANDED).dependencies
    again = lookup(env_with_brand(brand_in_context), BRANDED)
    again.foreign = earlier
    assert layer.fetch(again) is None
    assert again.foreign == earlier


def test_a_byte_layer_behind_an_open_breaker_is_skipped_without_asking_the_tier() -> None:
    """With its breaker open the layer counts a skip and never calls the tier."""
    tier = DictTier(remote=True)
    breaker = CircuitBreaker(failure_threshold=1, cooldown=60.0)
    breaker.failure()
    layer = byte_layer(tier, breaker)
    assert layer.fetch(lookup()) is None
    assert tier.gets == 0
    counters = layer.counters
    assert (counters.skipped, counters.misses, counters.errors) == (1, 0, 0)


def test_a_byte_tier_that_raises_on_get_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A get that raises counts an error (not a miss), logged and timed; in strict mode
    it is raised as TierError."""
    tier = DictTier(fail_get=OSError(5, "Input/output error"))
    layer = byte_layer(tier)
    assert layer.fetch(lookup()) is None
    counters = layer.counters
    assert (counters.errors, counters.misses, counters.latency.count) == (1, 0, 1)
    assert "dict failed during get" in caplog.text
    strict = byte_layer(DictTier(fail_get=OSError(5, "Input/output error")), strict=True)
    with pytest.raises(TierError) as info:
        strict.fetch(lookup())
    assert (info.value.tier, info.value.operation) == ("dict", "get")


# -- ByteLayer.put ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_a_byte_layer_writes_an_entry_compressed_as_its_tier_wants(compress: bool) -> None:
    """A fresh compile is written as an entry compressed as the tier declares, which the
    codec verifies; counted as a write and its bytes, not a promotion."""
    tier = DictTier(compress=compress)
    layer = byte_layer(tier)
    payload = fresh()
    layer.put(payload)
    entry = tier.data[KEY]
    assert is_compressed(entry) is compress
    assert CODEC.decode(KEY, CHECKSUM, entry) == payload.code
    counters = layer.counters
    assert (counters.writes, counters.promotions, counters.bytes_written) == (1, 0, len(entry))


def test_a_byte_layer_passes_a_promotion_on_as_read_and_counts_it() -> None:
    """A payload read with the tier's compression is written as read, counted as a write
    and a promotion."""
    tier = DictTier(compress=True)
    layer = byte_layer(tier)
    code, dependencies, raw = compiled()
    data = CODEC.encode(KEY, CHECKSUM, raw, compress=True)
    layer.put(Payload(KEY, SOURCE, CHECKSUM, code, dependencies, data=data, size=len(raw)))
    assert tier.data[KEY] is data
    counters = layer.counters
    assert (counters.writes, counters.promotions, counters.bytes_written) == (1, 1, len(data))


def test_an_entry_too_large_for_a_byte_tier_is_skipped_before_the_breaker_is_asked() -> None:
    """An entry over max_entry_size is skipped and counted without asking the breaker, so
    a half-open breaker's probe is still there for the next call; an entry of exactly
    max_entry_size is written."""
    payload = fresh()
    size = len(payload.encoded(CODEC, False))
    clock = Clock()
    breaker = half_open_breaker(clock)
    tier = DictTier(remote=True, max_entry_size=size - 1)
    layer = byte_layer(tier, breaker)
    layer.put(payload)
    assert tier.sets == 0
    assert (layer.counters.skipped, layer.counters.writes) == (1, 0)
    assert breaker.allow() is True  # the probe was not handed out
    exact = DictTier(max_entry_size=size)
    exact_layer = byte_layer(exact)
    exact_layer.put(payload)
    assert KEY in exact.data
    assert (exact_layer.counters.skipped, exact_layer.counters.writes) == (0, 1)


def test_a_byte_layer_write_behind_an_open_breaker_is_skipped() -> None:
    """With its breaker open a write is skipped and counted; the tier is not called."""
    tier = DictTier(remote=True)
    breaker = CircuitBreaker(failure_threshold=1, cooldown=60.0)
    breaker.failure()
    layer = byte_layer(tier, breaker)
    layer.put(fresh())
    assert (tier.sets, tier.data) == (0, {})
    counters = layer.counters
    assert (counters.skipped, counters.writes, counters.bytes_written) == (1, 0, 0)


def test_a_byte_tier_that_raises_on_set_is_an_error() -> None:
    """A set that raises counts an error and neither a write nor bytes written."""
    tier = DictTier(fail_set=OSError(28, "No space left on device"))
    layer = byte_layer(tier)
    layer.put(fresh())
    counters = layer.counters
    assert (counters.errors, counters.writes, counters.bytes_written) == (1, 0, 0)
