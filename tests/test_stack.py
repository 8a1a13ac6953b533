"""The stack of tiers: slots, the walk down with its counters, promotion, write-through,
a failing tier (isolated, or raised in strict mode), breakers, and the compile lease."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock
from jinja2 import Environment, Template

from tests.conftest import SECRET
from tests.walking import KEY, SOURCE, DictTier, brand, brand_in_context, compiled
from tiered_bccache import FileSystemTier, MemoryTier, TierError
from tiered_bccache.breaker import CircuitBreaker
from tiered_bccache.entry import EntryCodec, is_compressed, source_digest
from tiered_bccache.layers import Held
from tiered_bccache.lookup import Lookup
from tiered_bccache.stack import TierStack
from tiered_bccache.stats import RateLimitedLog


def make_stack(
    tiers: list[object],
    *,
    strict: bool = False,
    breakers: Callable[[], CircuitBreaker] | None = None,
    secret: bytes = SECRET,
) -> TierStack:
    return TierStack(
        tiers,
        EntryCodec(secret),
        breakers or (lambda: CircuitBreaker(failure_threshold=2, cooldown=60.0)),
        strict=strict,
        log=RateLimitedLog(),
    )


def bucket_for(
    stack: TierStack, env: Environment | None = None, source: str = SOURCE, key: str = KEY
) -> Lookup:
    return Lookup(env or Environment(), key, source, stack.layers)


def write_through(stack: TierStack, start: int = 0, env: Environment | None = None) -> bytes:
    """Store a fresh compile of SOURCE into the stack's slots from ``start``; the raw."""
    code, dependencies, raw = compiled(env)
    stack.store(stack.layers[start:], KEY, SOURCE, source_digest(SOURCE), code, dependencies, raw)
    return raw


def render(code: types.CodeType | None) -> str:
    env = Environment()
    assert code is not None
    return Template.from_code(env, code, env.make_globals(None), None).render(items=["a", "b"])


# -- slots --------------------------------------------------------------------------------


def test_layers_follow_the_tiers_and_only_remote_tiers_get_breakers(tmp_path: Path) -> None:
    """One layer per tier in order, named by the tier; the filesystem tier is the lease layer,
    the memory tier the private one; each remote tier gets a breaker of its own."""
    built: list[CircuitBreaker] = []

    def breakers() -> CircuitBreaker:
        built.append(CircuitBreaker())
        return built[-1]

    memory, fs = MemoryTier(), FileSystemTier(tmp_path)
    remote_a = DictTier("a", remote=True, compress=True, max_entry_size=1000)
    remote_b = DictTier("b", remote=True)
    stack = make_stack([memory, fs, remote_a, remote_b], breakers=breakers)
    assert [s.tier for s in stack.layers] == [memory, fs, remote_a, remote_b]
    assert [s.name for s in stack.layers] == ["memory", fs.name, "a", "b"]
    assert [s.objects for s in stack.layers] == [True, False, False, False]
    assert stack.lease_layer is stack.layers[1]
    assert stack.private_layers == (stack.layers[0],)
    assert [s.guard.breaker for s in stack.layers] == [None, None, built[0], built[1]]
    assert built[0] is not built[1]
    assert (stack.layers[2].compress, stack.layers[2].max_entry_size) == (True, 1000)
    assert (stack.layers[3].compress, stack.layers[3].max_entry_size) == (False, None)


def test_a_stack_without_a_lease_or_a_memory_tier_has_neither() -> None:
    """Without a tier offering a lease there is no lease layer, and without a memory tier
    no private layer."""
    stack = make_stack([DictTier("a"), DictTier("b")])
    assert stack.lease_layer is None
    assert stack.private_layers == ()


# -- write-through and the walk -----------------------------------------------------------


def test_a_fresh_compile_is_written_through_to_every_tier(tmp_path: Path) -> None:
    """The memory tier gets a Held weighing the marshalled code, the byte tier an entry
    the codec reads back; each counts a write, none a promotion, and only the byte tier
    counts the bytes."""
    memory, fs = MemoryTier(), FileSystemTier(tmp_path)
    stack = make_stack([memory, fs])
    raw = write_through(stack)
    held = memory.get(KEY)
    assert isinstance(held, Held)
    code, dependencies, _ = compiled()
    assert (held.source, held.checksum, held.size) == (SOURCE, source_digest(SOURCE), len(raw))
    assert held.dependencies == dependencies and held.code == code
    entry = fs.get(KEY)
    assert entry is not None
    assert EntryCodec(SECRET).decode(KEY, source_digest(SOURCE), entry) == code
    mem, disk = (s.counters for s in stack.layers)
    assert (mem.writes, mem.promotions, mem.bytes_written) == (1, 0, 0)
    assert (disk.writes, disk.promotions, disk.bytes_written) == (1, 0, len(entry))


def test_store_then_load_round_trips_through_the_byte_tier(tmp_path: Path) -> None:
    """An entry written to the filesystem tier alone is found there: the bucket gets code
    that renders, the load returns the marshalled size, and the entry is promoted into
    the memory tier as a Held."""
    memory, fs = MemoryTier(), FileSystemTier(tmp_path)
    stack = make_stack([memory, fs])
    raw = write_through(stack, start=1)
    entry = fs.get(KEY)
    assert entry is not None and memory.get(KEY) is None
    bucket = bucket_for(stack)
    assert stack.load(bucket) == len(raw)
    assert render(bucket.code) == "<li>A</li><li>B</li>"
    mem, disk = (s.counters for s in stack.layers)
    assert (mem.hits, mem.misses, mem.writes, mem.promotions) == (0, 1, 1, 1)
    assert (disk.hits, disk.misses, disk.bytes_read, disk.writes) == (1, 0, len(entry), 1)
    held = memory.get(KEY)
    assert isinstance(held, Held)
    assert (held.source, held.checksum, held.size) == (SOURCE, source_digest(SOURCE), len(raw))
    assert held.code == bucket.code and held.dependencies == compiled()[1]


def test_a_promoted_entry_is_then_a_memory_hit(tmp_path: Path) -> None:
    """After a promotion the next load is answered by the memory tier; the byte tier is
    not asked."""
    fs = FileSystemTier(tmp_path)
    stack = make_stack([MemoryTier(), fs])
    raw = write_through(stack, start=1)
    stack.load(bucket_for(stack))
    bucket = bucket_for(stack)
    assert stack.load(bucket) == len(raw)
    assert render(bucket.code) == "<li>A</li><li>B</li>"
    mem, disk = (s.counters for s in stack.layers)
    assert (mem.hits, disk.hits, disk.latency.count) == (1, 1, 1)


def test_a_hit_two_tiers_down_is_promoted_into_both_above_as_read() -> None:
    """A hit in the third tier is written into the memory tier and, byte for byte as read,
    into the byte tier above it, each counting a promotion."""
    memory, middle, bottom = MemoryTier(), DictTier("middle"), DictTier("bottom")
    stack = make_stack([memory, middle, bottom])
    raw = write_through(stack, start=2)
    assert stack.load(bucket_for(stack)) == len(raw)
    assert middle.data == bottom.data
    held = memory.get(KEY)
    assert isinstance(held, Held) and held.size == len(raw)
    counters = [s.counters for s in stack.layers]
    assert [c.promotions for c in counters] == [1, 1, 0]
    assert [c.misses for c in counters] == [1, 1, 0]
    assert counters[1].bytes_written == len(bottom.data[KEY])


def test_a_compressing_tier_gets_a_smaller_entry_and_memory_weighs_the_code() -> None:
    """A compressing byte tier stores a compressed entry, a plain one the plain entry
    (encoded once for both plain tiers); promoted from the compressing tier, the memory
    tier weighs the entry by its marshalled size, not its compressed bytes."""
    memory = MemoryTier()
    plain_a, plain_b = DictTier("plain-a"), DictTier("plain-b")
    zipped = DictTier("zipped", compress=True)
    source = "".join(f"<p>{i} {{{{ x }}}}</p>" for i in range(200))
    code, dependencies, raw = compiled(source=source)
    writer = make_stack([plain_a, zipped, plain_b])
    writer.store(writer.layers, KEY, source, source_digest(source), code, dependencies, raw)
    assert plain_a.data[KEY] is plain_b.data[KEY]
    assert len(zipped.data[KEY]) < len(plain_a.data[KEY])
    reader = make_stack([memory, zipped])
    bucket = bucket_for(reader, source=source)
    assert reader.load(bucket) == len(raw)
    held = memory.get(KEY)
    assert isinstance(held, Held) and held.size == len(raw)


def test_a_missing_key_is_one_miss_per_tier_and_a_second_look_counts_none(
    tmp_path: Path,
) -> None:
    """A load that finds nothing counts one miss in every tier it asked; a second look
    within the same lookup (under the lease) counts none."""
    stack = make_stack([MemoryTier(), FileSystemTier(tmp_path), DictTier()])
    bucket = bucket_for(stack)
    assert stack.load(bucket) is None
    assert bucket.code is None
    assert [s.counters.misses for s in stack.layers] == [1, 1, 1]
    assert stack.load(bucket) is None
    assert [s.counters.misses for s in stack.layers] == [1, 1, 1]
    assert [s.counters.hits for s in stack.layers] == [0, 0, 0]


def test_a_walk_from_start_skips_the_tiers_above() -> None:
    """load(start=1) does not ask the first tier (the cache has already looked there)."""
    top = DictTier("top")
    stack = make_stack([top, DictTier("below")])
    assert stack.load(bucket_for(stack), 1) is None
    assert top.gets == 0
    assert [s.counters.misses for s in stack.layers] == [0, 1]


def test_a_changed_source_is_a_stale_miss_in_every_tier(tmp_path: Path) -> None:
    """An entry for another source is refused by the memory tier's source check and the
    byte tier's checksum, each counted as stale and a miss; a second look counts
    nothing."""
    stack = make_stack([MemoryTier(), FileSystemTier(tmp_path)])
    write_through(stack)
    edited = SOURCE + "<hr>"
    bucket = bucket_for(stack, source=edited)
    assert stack.load(bucket) is None
    assert bucket.code is None
    assert [(s.counters.rejected_stale, s.counters.misses) for s in stack.layers] == [
        (1, 1),
        (1, 1),
    ]
    assert stack.load(bucket) is None
    assert [(s.counters.rejected_stale, s.counters.misses) for s in stack.layers] == [
        (1, 1),
        (1, 1),
    ]


def test_an_entry_signed_with_another_secret_is_rejected_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entry whose MAC fails is a miss counted as rejected_mac, logged; a stale entry
    is counted but not logged (an edited template is routine)."""
    tier = DictTier()
    write_through(make_stack([tier], secret=b"another secret, 32 bytes long!!!"))
    stack = make_stack([tier])
    assert stack.load(bucket_for(stack)) is None
    counters = stack.layers[0].counters
    assert (counters.rejected_mac, counters.misses, counters.errors) == (1, 1, 0)
    assert "rejected an entry" in caplog.text
    caplog.clear()
    fresh = make_stack([tier])
    write_through(fresh)
    edited = SOURCE + "<hr>"
    assert fresh.load(bucket_for(fresh, source=edited)) is None
    assert fresh.layers[0].counters.rejected_stale == 1
    assert "rejected" not in caplog.text


def test_garbage_under_the_key_is_a_rejected_miss_in_strict_mode_too() -> None:
    """What is not an entry is a miss counted as rejected_format, never a TierError."""
    tier = DictTier()
    tier.data[KEY] = b"garbage" * 20
    stack = make_stack([tier], strict=True)
    assert stack.load(bucket_for(stack)) is None
    counters = stack.layers[0].counters
    assert (counters.rejected_format, counters.misses, counters.errors) == (1, 1, 0)


@pytest.mark.parametrize("in_memory", [True, False])
def test_an_entry_compiled_against_other_filters_is_a_foreign_miss(in_memory: bool) -> None:
    """An entry whose compile found another calling convention under a filter name the
    template uses is a miss, and the bucket carries that entry's dependencies (for the
    cache's variant key)."""
    source = "{{ 'b'|brand }}"
    writer_env, reader_env = Environment(), Environment()
    writer_env.filters["brand"] = brand
    reader_env.filters["brand"] = brand_in_context
    tier: object = MemoryTier() if in_memory else DictTier()
    code, dependencies, raw = compiled(writer_env, source)
    stack = make_stack([tier])
    stack.store(stack.layers, KEY, source, source_digest(source), code, dependencies, raw)
    bucket = bucket_for(stack, env=reader_env, source=source)
    assert stack.load(bucket) is None
    assert bucket.code is None
    assert bucket.foreign == dependencies
    assert stack.layers[0].counters.misses == 1
    same = bucket_for(stack, env=writer_env, source=source)
    assert stack.load(same) == len(raw) and same.foreign is None


# -- a failing tier -----------------------------------------------------------------------


def test_a_tier_that_raises_is_counted_and_the_walk_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A get that raises counts an error in that tier and is logged; the tier below
    answers, and the entry is promoted into the failing tier all the same."""
    broken = DictTier("broken", fail_get=OSError(5, "Input/output error"))
    below = DictTier("below")
    stack = make_stack([broken, below])
    raw = write_through(stack, start=1)
    bucket = bucket_for(stack)
    assert stack.load(bucket) == len(raw)
    assert render(bucket.code) == "<li>A</li><li>B</li>"
    top, bottom = (s.counters for s in stack.layers)
    assert (top.errors, top.misses, top.promotions) == (1, 0, 1)
    assert (bottom.hits, bottom.errors) == (1, 0)
    assert broken.data == below.data
    assert "broken failed during get" in caplog.text
    stack.load(bucket)
    assert top.errors == 1  # a second look does not count the same failure again


def test_strict_mode_raises_a_tier_s_failure_as_tier_error() -> None:
    """With strict=True a get that raises becomes TierError naming the tier and the
    operation, the original as its cause; it is counted first."""
    cause = OSError(5, "Input/output error")
    stack = make_stack([DictTier("broken", fail_get=cause), DictTier("below")], strict=True)
    with pytest.raises(TierError) as info:
        stack.load(bucket_for(stack))
    assert (info.value.tier, info.value.operation) == ("broken", "get")
    assert info.value.__cause__ is cause
    assert stack.layers[0].counters.errors == 1
    assert stack.layers[1].tier.gets == 0


def test_a_tier_that_fails_a_write_does_not_stop_the_others() -> None:
    """A set that raises counts an error in its tier; the tiers after it are written."""
    memory = MemoryTier()
    broken = DictTier("broken", fail_set=OSError(28, "No space left on device"))
    below = DictTier("below")
    stack = make_stack([memory, broken, below])
    write_through(stack)
    assert KEY in memory and KEY in below.data and broken.data == {}
    assert [s.counters.writes for s in stack.layers] == [1, 0, 1]
    assert [s.counters.errors for s in stack.layers] == [0, 1, 0]


def test_a_failed_write_raises_in_strict_mode() -> None:
    """With strict=True a set that raises becomes TierError for the operation set."""
    stack = make_stack([DictTier("broken", fail_set=OSError(28, "full"))], strict=True)
    with pytest.raises(TierError) as info:
        write_through(stack)
    assert (info.value.tier, info.value.operation) == ("broken", "set")


def test_an_entry_too_large_for_a_tier_is_skipped_there() -> None:
    """A byte tier whose max_entry_size is below the entry is skipped and counts it; a
    memory tier bounded below the marshalled size is skipped the same way."""
    small = DictTier("small", max_entry_size=16)
    large = DictTier("large")
    tiny_memory = MemoryTier(max_bytes=16)
    stack = make_stack([tiny_memory, small, large])
    write_through(stack)
    assert len(tiny_memory) == 0 and small.data == {} and KEY in large.data
    assert [s.counters.skipped for s in stack.layers] == [1, 1, 0]
    assert [s.counters.writes for s in stack.layers] == [0, 0, 1]


# -- breakers -----------------------------------------------------------------------------


def test_a_remote_tier_that_keeps_failing_is_skipped_by_its_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures up to the threshold open the remote tier's breaker (logged); from then on
    the tier is not asked and each walk counts it as skipped."""
    remote = DictTier("remote", remote=True, fail_get=ConnectionRefusedError(111, "refused"))
    stack = make_stack(
        [remote], breakers=lambda: CircuitBreaker(failure_threshold=2, cooldown=60.0)
    )
    for _ in range(2):
        assert stack.load(bucket_for(stack)) is None
    slot = stack.layers[0]
    assert slot.guard.breaker is not None and slot.guard.breaker.state == "open"
    assert "remote is failing" in caplog.text
    for _ in range(3):
        assert stack.load(bucket_for(stack)) is None
    assert remote.gets == 2
    assert (slot.counters.errors, slot.counters.skipped) == (2, 3)


def test_a_timeout_opens_the_breaker_at_once() -> None:
    """A TimeoutError from a remote tier opens its breaker on the first failure, whatever
    the threshold."""
    remote = DictTier("remote", remote=True, fail_get=TimeoutError("timed out"))
    stack = make_stack(
        [remote], breakers=lambda: CircuitBreaker(failure_threshold=5, cooldown=60.0)
    )
    stack.load(bucket_for(stack))
    breaker = stack.layers[0].guard.breaker
    assert breaker is not None and breaker.state == "open"


def test_a_remote_tier_that_answers_keeps_its_breaker_closed() -> None:
    """A miss and a rejected entry are answers: each tells the breaker of a success, so
    failures in between never add up to the threshold."""
    remote = DictTier("remote", remote=True)
    stack = make_stack(
        [remote], breakers=lambda: CircuitBreaker(failure_threshold=2, cooldown=60.0)
    )
    flaky = OSError(5, "flaky")
    steps: list[tuple[Exception | None, bytes | None]] = [
        (flaky, None),
        (None, None),  # a miss
        (flaky, None),
        (None, b"garbage" * 20),  # a rejected entry
        (flaky, None),
        (None, None),
    ]
    for fail, stored in steps:
        remote.fail_get = fail
        remote.data = {} if stored is None else {KEY: stored}
        assert stack.load(bucket_for(stack)) is None
    breaker = stack.layers[0].guard.breaker
    assert breaker is not None and breaker.state == "closed"
    assert stack.layers[0].counters.errors == 3


def test_a_write_skipped_by_an_open_breaker_is_counted() -> None:
    """While a remote tier's breaker is open, a write-through skips it and counts that."""
    remote = DictTier("remote", remote=True, fail_get=TimeoutError("timed out"))
    stack = make_stack([remote])
    stack.load(bucket_for(stack))
    write_through(stack)
    assert remote.data == {}
    assert stack.layers[0].counters.skipped == 1


# -- the compile lease --------------------------------------------------------------------


class Calls:
    """Records the callbacks under_lease makes."""

    def __init__(self) -> None:
        self.compiles = 0
        self.waits = 0

    def compile_here(self) -> None:
        self.compiles += 1

    def waiting(self) -> None:
        self.waits += 1


def lease_is_free(fs: FileSystemTier) -> bool:
    lock = fs.lease(KEY)
    try:
        lock.acquire(timeout=0)
    except Exception:
        return False
    lock.release(force=True)
    return True


class KeepingFileSystemTier(FileSystemTier):
    """A filesystem tier that keeps every lease it hands out, so a test can see whether
    the stack released it (rather than the garbage collector)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.leases: list[FileLock] = []

    def lease(self, key: str) -> FileLock:
        self.leases.append(super().lease(key))
        return self.leases[-1]


def test_under_a_free_lease_a_second_miss_compiles_here_once(tmp_path: Path) -> None:
    """With nobody holding the lease, a second miss compiles here, once, without waiting
    and holding the lease, and under_lease itself releases it."""
    fs = KeepingFileSystemTier(tmp_path)
    stack = make_stack([MemoryTier(), fs])
    held_while_compiling: list[bool] = []

    def compile_here() -> None:
        held_while_compiling.append(fs.leases[0].is_locked and not lease_is_free(fs))
        write_through(stack)

    calls = Calls()
    bucket = bucket_for(stack)
    assert stack.under_lease(bucket, compile_here, calls.waiting, 1.0) is None
    assert held_while_compiling == [True] and calls.waits == 0
    assert fs.get(KEY) is not None
    assert not fs.leases[0].is_locked


def test_under_the_lease_an_entry_written_meanwhile_is_a_hit(tmp_path: Path) -> None:
    """When the entry has arrived by the second look, under_lease returns its size and
    does not compile; the second look starts at the lease tier."""
    fs = KeepingFileSystemTier(tmp_path)
    stack = make_stack([MemoryTier(), fs])
    raw = write_through(stack, start=1)  # another process's compile, done meanwhile
    calls = Calls()
    bucket = bucket_for(stack)
    size = stack.under_lease(bucket, calls.compile_here, calls.waiting, 1.0)
    assert size == len(raw) and calls.compiles == 0
    assert render(bucket.code) == "<li>A</li><li>B</li>"
    mem, disk = (s.counters for s in stack.layers)
    assert (mem.misses, mem.promotions, disk.hits) == (0, 1, 1)
    assert len(fs.leases) == 1 and not fs.leases[0].is_locked


def test_a_lease_held_by_another_is_waited_for_then_compiled_without(tmp_path: Path) -> None:
    """A lease another holder keeps past the timeout: waiting is told once, then the
    template is compiled here without the lease."""
    fs = FileSystemTier(tmp_path)
    stack = make_stack([MemoryTier(), fs])
    holder: FileLock = fs.lease(KEY)
    holder.acquire(timeout=0)
    try:
        calls = Calls()
        result = stack.under_lease(bucket_for(stack), calls.compile_here, calls.waiting, 0.05)
        assert result is None
        assert (calls.compiles, calls.waits) == (1, 1)
    finally:
        holder.release(force=True)


def test_a_compile_that_raises_releases_the_lease(tmp_path: Path) -> None:
    """A compile that raises under the lease reaches the caller as it is, and the lease
    is released at once."""
    fs = KeepingFileSystemTier(tmp_path)
    stack = make_stack([MemoryTier(), fs])

    def compile_here() -> None:
        raise SyntaxError("bad template")

    with pytest.raises(SyntaxError, match="bad template"):
        stack.under_lease(bucket_for(stack), compile_here, lambda: None, 1.0)
    assert len(fs.leases) == 1 and not fs.leases[0].is_locked


class UnleasableTier(DictTier):
    """A tier whose lease cannot be had (a .locks directory another user owns)."""

    def lease(self, key: str) -> FileLock:
        raise PermissionError(13, "Permission denied", ".locks")


def test_a_lease_that_cannot_be_had_is_counted_and_the_template_compiled() -> None:
    """A lease that raises counts an error in its tier, and the template is compiled
    without it."""
    stack = make_stack([MemoryTier(), UnleasableTier("unleasable")])
    assert stack.lease_layer is stack.layers[1]
    calls = Calls()
    assert stack.under_lease(bucket_for(stack), calls.compile_here, calls.waiting, 1.0) is None
    assert calls.compiles == 1
    assert stack.layers[1].counters.errors == 1


def test_a_failure_seen_only_on_the_second_look_is_counted_and_raised_when_strict() -> None:
    """The second look under a lease counts a tier's failure it did not meet on the
    first look (a plain miss then): counted, logged, and raised when strict."""
    tier = DictTier("flaky")
    stack = make_stack([tier], strict=True)
    bucket = bucket_for(stack)
    assert stack.load(bucket) is None  # a plain miss, counted
    tier.fail_get = OSError(5, "Input/output error")
    with pytest.raises(TierError):
        stack.load(bucket)
    assert stack.layers[0].counters.errors == 1


def test_a_failure_met_on_both_looks_is_counted_once() -> None:
    tier = DictTier("flaky")
    tier.fail_get = OSError(5, "Input/output error")
    stack = make_stack([tier])
    bucket = bucket_for(stack)
    assert stack.load(bucket) is None
    assert stack.load(bucket) is None
    assert stack.layers[0].counters.errors == 1


@pytest.mark.parametrize("upper_compresses", [True, False])
def test_promotion_encodes_the_entry_as_the_upper_tier_wants(upper_compresses: bool) -> None:
    """An entry promoted from a byte tier is passed on as read only when it is
    compressed as the tier above wants; otherwise it is encoded again for it."""
    upper = DictTier("upper", compress=upper_compresses)
    lower = DictTier("lower", compress=not upper_compresses)
    stack = make_stack([upper, lower])
    write_through(stack, start=1)
    assert stack.load(bucket_for(stack)) is not None
    assert is_compressed(upper.data[KEY]) is upper_compresses
    assert is_compressed(lower.data[KEY]) is not upper_compresses
    # And the promoted entry reads back through the upper tier alone.
    assert stack.load(bucket_for(stack)) is not None
    assert stack.layers[0].counters.hits == 1
