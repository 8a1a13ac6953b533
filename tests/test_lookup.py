"""The lookup Jinja sees (a bucket carrying the source, a lazy checksum and what the walk
marks) and the memory hit path: a hit for the very same source and filters, a miss
that starts the walk past the first tier, and everything else left to the walk."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment
from jinja2.bccache import Bucket

from tests.walking import BRANDED, KEY, SOURCE, brand, brand_in_context, compiled, env_with_brand
from tiered_bccache import MemoryTier
from tiered_bccache.entry import source_digest
from tiered_bccache.guard import Guard
from tiered_bccache.layers import Held, ObjectLayer, Payload
from tiered_bccache.lookup import Lookup, memory_hit
from tiered_bccache.recorder import Recorder
from tiered_bccache.stats import RateLimitedLog
from tiered_bccache.tiers.base import capabilities
from tiered_bccache.trace import TraceRecord, read_trace


def memory_layer(tier: MemoryTier) -> ObjectLayer:
    return ObjectLayer(tier, capabilities(tier), Guard(tier.name, None, RateLimitedLog()))


def stored(env: Environment | None = None, source: str = SOURCE) -> tuple[ObjectLayer, Held]:
    """A memory layer holding a fresh compile of ``source`` under KEY, and its record."""
    tier = MemoryTier()
    layer = memory_layer(tier)
    code, dependencies, raw = compiled(env, source)
    layer.put(Payload(KEY, source, source_digest(source), code, dependencies, raw=raw))
    held = tier.get(KEY)
    assert isinstance(held, Held)
    return layer, held


# -- Lookup -------------------------------------------------------------------------------


def test_a_lookup_is_a_jinja_bucket_with_nothing_found_or_counted_yet() -> None:
    """A lookup is Jinja's Bucket, for the environment and key it was made with, holding
    no code, no foreign entry and no tier's bits."""
    env = Environment()
    lookup = Lookup(env, KEY, SOURCE, ())
    assert isinstance(lookup, Bucket)
    assert (lookup.environment, lookup.key, lookup.source, lookup.layers) == (
        env,
        KEY,
        SOURCE,
        (),
    )
    assert (lookup.code, lookup.foreign, lookup.seen, lookup.failed) == (None, None, 0, 0)


def test_the_checksum_is_the_source_digest_computed_when_first_read() -> None:
    """The checksum is the digest of the source as it is when first read, and is kept
    from then on."""
    lookup = Lookup(Environment(), KEY, "first", ())
    lookup.source = SOURCE
    assert lookup.checksum == source_digest(SOURCE)
    lookup.source = "changed after the first read"
    assert lookup.checksum == source_digest(SOURCE)


def test_the_checksum_can_be_set_without_a_source() -> None:
    """A checksum set on a lookup without a source (a string's digest known already) is
    what it reads back, and the source is never consulted."""
    lookup = Lookup(Environment(), KEY, None, ())
    lookup.checksum = "f" * 64
    assert lookup.checksum == "f" * 64
    with_source = Lookup(Environment(), KEY, SOURCE, ())
    with_source.checksum = "e" * 64
    assert with_source.checksum == "e" * 64


def test_a_lookup_holds_what_its_own_environment_compiled() -> None:
    """holds() is true for the dependencies of a compile in the lookup's environment and
    in one with the same filters."""
    env = env_with_brand(brand)
    _, dependencies, _ = compiled(env, BRANDED)
    assert Lookup(env, KEY, BRANDED, ()).holds(dependencies)
    assert Lookup(env_with_brand(brand), KEY, BRANDED, ()).holds(dependencies)


def test_a_lookup_does_not_hold_a_compile_against_another_calling_convention() -> None:
    """holds() is false when a filter the template uses has another calling convention
    in the lookup's environment, or is missing from it."""
    _, dependencies, _ = compiled(env_with_brand(brand), BRANDED)
    assert not Lookup(env_with_brand(brand_in_context), KEY, BRANDED, ()).holds(dependencies)
    assert not Lookup(Environment(), KEY, BRANDED, ()).holds(dependencies)


def test_the_variant_is_16_hex_digits_that_tell_conventions_apart() -> None:
    """variant() of a foreign entry's dependencies is 16 hex digits, the same for
    environments alike under those names and different where a convention differs."""
    _, foreign, _ = compiled(env_with_brand(brand), BRANDED)
    plain = Lookup(env_with_brand(brand), KEY, BRANDED, ()).variant(foreign)
    again = Lookup(env_with_brand(brand), KEY, BRANDED, ()).variant(foreign)
    in_context = Lookup(env_with_brand(brand_in_context), KEY, BRANDED, ()).variant(foreign)
    assert plain is not None and in_context is not None
    assert re.fullmatch("[0-9a-f]{16}", plain)
    assert re.fullmatch("[0-9a-f]{16}", in_context)
    assert plain == again
    assert plain != in_context


# -- memory_hit ---------------------------------------------------------------------------


def test_without_an_object_layer_first_the_walk_starts_at_the_top() -> None:
    """With no first layer for the hit path the answer is no code, walk from layer 0."""
    assert memory_hit(None, Environment(), KEY, SOURCE, Recorder()) == (None, 0)


def test_an_absent_key_is_a_miss_counted_and_the_walk_starts_past_the_first() -> None:
    """A key the first tier does not hold counts one miss there, and the walk starts at
    layer 1."""
    layer = memory_layer(MemoryTier())
    assert memory_hit(layer, Environment(), KEY, SOURCE, Recorder()) == (None, 1)
    counters = layer.counters
    assert (counters.misses, counters.hits) == (1, 0)


def test_the_same_source_and_filters_is_a_hit_with_the_held_code() -> None:
    """Held code for the very same source, compiled against filters the environment
    still has, is returned with walk start 0 and counted as a hit, nothing else."""
    layer, held = stored()
    code, start = memory_hit(layer, Environment(), KEY, SOURCE, Recorder())
    assert code is held.code and start == 0
    counters = layer.counters
    assert (counters.hits, counters.misses, counters.rejected_stale) == (1, 0, 0)


def test_a_hit_is_recorded_in_the_trace_with_the_held_size(tmp_path: Path) -> None:
    """While a trace is recorded, a memory hit writes its key and the held entry's
    marshalled size; a miss writes nothing here."""
    layer, held = stored()
    rec = Recorder()
    path = tmp_path / "trace.txt"
    rec.start_trace(path)
    memory_hit(layer, Environment(), KEY, SOURCE, rec)
    memory_hit(memory_layer(MemoryTier()), Environment(), KEY, SOURCE, rec)
    rec.stop_trace()
    assert list(read_trace(path)) == [TraceRecord(KEY, held.size)]
    assert held.size > 0


def test_a_hit_without_a_trace_records_nothing(tmp_path: Path) -> None:
    """Without a trace a hit writes nothing; a trace stopped before the hit stays as it
    was."""
    layer, _ = stored()
    rec = Recorder()
    path = tmp_path / "trace.txt"
    rec.start_trace(path)
    rec.stop_trace()
    code, _ = memory_hit(layer, Environment(), KEY, SOURCE, rec)
    assert code is not None
    assert list(read_trace(path)) == []


def test_another_source_is_left_to_the_walk_and_counted_nowhere() -> None:
    """Code held for another source is no hit, and the walk starts at the top (where the
    object layer tells a stale entry apart and counts it); nothing is counted here."""
    layer, _ = stored()
    assert memory_hit(layer, Environment(), KEY, SOURCE + "<hr>", Recorder()) == (None, 0)
    counters = layer.counters
    assert (counters.hits, counters.misses, counters.rejected_stale) == (0, 0, 0)


def test_code_for_other_filters_is_left_to_the_walk_and_counted_nowhere() -> None:
    """Code held for the same source but compiled against another calling convention of
    a filter it uses is no hit, and the walk starts at the top; nothing is counted."""
    writer = env_with_brand(brand)
    layer, held = stored(writer, BRANDED)
    reader = env_with_brand(brand_in_context)
    assert memory_hit(layer, reader, KEY, BRANDED, Recorder()) == (None, 0)
    assert (layer.counters.hits, layer.counters.misses) == (0, 0)
    assert memory_hit(layer, writer, KEY, BRANDED, Recorder()) == (held.code, 0)
