"""The memcached tier's namespace generation against real servers: whatever another
writer leaves at the generation key or at an entry key, lookups keep working; the
generation is replicated on every node, so one node's death or restart neither splits
the fleet nor loses the surviving nodes' entries; it is re-read at most every
``generation_ttl``; building a tier does no network I/O."""

from __future__ import annotations

import logging
import pickle
import socket
import time

import pytest
from pymemcache.client.rendezvous import RendezvousHash

from tests.conftest import SECRET, MemcachedServer
from tiered_bccache import MemcachedTier, TieredBytecodeCache

from .test_memcached import CONNECTION_ERRORS, direct

#: What another writer may leave at ``<prefix>:gen``: none of it has the shape this tier
#: writes (1 to 16 ASCII digits, no sign, no leading zero, below 2**53).
FOREIGN_GENERATIONS = {
    "empty": b"",
    "non_ascii": "génération".encode(),
    "binary": b"\xff\xfe\x00\x01",
    "with_a_space": b"17 42",
    "with_a_newline": b"1742\n",
    "negative": b"-5",
    "zero": b"0",
    "leading_zero": b"0123",
    "fraction": b"1.5",
    "text": b"generation",
    "digits_300": b"9" * 300,
    "above_2_53": str(2**53).encode(),
    "huge_1mb_of_digits": b"7" * (1024 * 1024),
}


def gen_key(prefix: str) -> str:
    return f"{prefix}:gen"


def is_our_shape(value: bytes | None) -> bool:
    """The generation shape the tier writes, restated independently of its code."""
    return (
        value is not None
        and 1 <= len(value) <= 16
        and value.isdigit()
        and value.isascii()
        and not value.startswith(b"0")
        and int(value) < 2**53
    )


def tier_on(servers: str | list[str], prefix: str, **options: float) -> MemcachedTier:
    """A tier with timeouts no loaded test machine trips by accident."""
    options = {"timeout": 1.0, "connect_timeout": 1.0, **options}
    return MemcachedTier(servers, prefix=prefix, **options)  # type: ignore[arg-type]


# -- foreign values at the generation key ----------------------------------------------


@pytest.mark.parametrize("value", FOREIGN_GENERATIONS.values(), ids=FOREIGN_GENERATIONS.keys())
def test_foreign_generation_is_replaced_and_the_process_keeps_its_entries(
    memcached_big: MemcachedServer, mc_prefix: str, value: bytes
) -> None:
    """A foreign value written over the generation key is replaced with the generation
    the process was using on its next read of the key: no exception reaches get or set,
    the entries written before stay visible, the event is counted."""
    tier = tier_on(memcached_big.address, mc_prefix, generation_ttl=0)
    tier.set("k", b"before")
    used = tier.generation()
    with direct(memcached_big) as raw:
        assert raw.set(gen_key(mc_prefix), value, noreply=False)
        assert tier.get("k") == b"before"
        tier.set("k2", b"after")
        assert tier.get("k2") == b"after"
        assert raw.get(gen_key(mc_prefix)) == used.encode()
    assert tier.generation() == used
    assert tier.events["generation_foreign"] == 1
    assert tier.events["generation_replaced"] == 1


@pytest.mark.parametrize("value", FOREIGN_GENERATIONS.values(), ids=FOREIGN_GENERATIONS.keys())
def test_new_process_facing_a_foreign_generation_starts_a_fresh_one(
    memcached_big: MemcachedServer, mc_prefix: str, value: bytes
) -> None:
    """A process that starts while the generation key holds a foreign value replaces it
    with a generation of the tier's shape and works at once; the next process adopts it."""
    with direct(memcached_big) as raw:
        assert raw.set(gen_key(mc_prefix), value, noreply=False)
        first = tier_on(memcached_big.address, mc_prefix)
        first.set("k", b"v")
        assert first.get("k") == b"v"
        stored = raw.get(gen_key(mc_prefix))
    assert is_our_shape(stored), stored
    assert stored == first.generation().encode()
    assert first.events["generation_foreign"] == 1
    second = tier_on(memcached_big.address, mc_prefix)
    assert second.get("k") == b"v"
    assert second.events["generation_foreign"] == 0


def test_foreign_generation_is_logged_once_and_counted_every_time(
    memcached: MemcachedServer, mc_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that keeps spoiling the generation key is counted every time, and logged
    once (rate-limited) on the ``tiered_bccache`` logger, naming the key."""
    tier = tier_on(memcached.address, mc_prefix, generation_ttl=0)
    tier.set("k", b"v")
    with caplog.at_level(logging.WARNING, logger="tiered_bccache"), direct(memcached) as raw:
        for i in range(3):
            assert raw.set(gen_key(mc_prefix), b"spoilt %d" % i, noreply=False)
            assert tier.get("k") == b"v"
    assert tier.events["generation_foreign"] == 3
    assert tier.events["generation_replaced"] == 3
    logged = [r for r in caplog.records if r.name == "tiered_bccache"]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert gen_key(mc_prefix) in logged[0].getMessage()


# -- foreign values at entry keys ------------------------------------------------------

UNPICKLED: list[str] = []


def _tripwire() -> str:
    UNPICKLED.append("unpickled")
    return "tripped"


class Tripwire:
    """Records it when unpickled: a value planted with pymemcache's pickle flag."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_tripwire, ())


#: memcached flags pymemcache's serdes give meaning to: pickle, int, long, zlib, text,
#: and a combination.
FLAGS = [1, 2, 4, 8, 16, 1 | 8, 65535]


@pytest.mark.parametrize("flags", FLAGS)
def test_flagged_value_at_an_entry_key_comes_back_as_the_raw_bytes(
    memcached: MemcachedServer, mc_prefix: str, flags: int
) -> None:
    """A value planted at an entry key with memcached flags set (a pickle under
    pymemcache's pickle flag, non-numbers under the int flags, non-zlib under the zlib
    flag) is returned as the bytes stored: never unpickled, decoded or decompressed,
    never an exception."""
    tier = tier_on(memcached.address, mc_prefix)
    payload = pickle.dumps(Tripwire())
    UNPICKLED.clear()
    with direct(memcached) as raw:
        assert raw.set(tier.key("k"), payload, flags=flags, noreply=False)
    value = tier.get("k")
    assert type(value) is bytes and value == payload
    assert UNPICKLED == []


def test_flagged_foreign_entries_are_rejected_by_the_cache_and_pages_render(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Every entry of a warm cache replaced by a flagged pickle: the cache rejects each
    (a short value fails the format check before the MAC), compiles, renders right, and
    nothing is unpickled."""
    from jinja2 import DictLoader, Environment

    templates = {f"t{i}.html": f"<p>{i} {{{{ x }}}}</p>" for i in range(5)}
    tier = tier_on(memcached.address, mc_prefix)
    writer = TieredBytecodeCache([tier], secret=SECRET)
    env = Environment(loader=DictLoader(templates), bytecode_cache=writer, cache_size=0)
    for name in templates:
        env.get_template(name)
    entries = [k for k in memcached.keys() if k.startswith(mc_prefix + ":")]
    entries.remove(gen_key(mc_prefix))
    assert len(entries) == len(templates)
    UNPICKLED.clear()
    with direct(memcached) as raw:
        for key in entries:
            assert raw.set(key, pickle.dumps(Tripwire()), flags=1, noreply=False)
    reader = TieredBytecodeCache([tier_on(memcached.address, mc_prefix)], secret=SECRET)
    env = Environment(loader=DictLoader(templates), bytecode_cache=reader, cache_size=0)
    for i, name in enumerate(templates):
        assert env.get_template(name).render(x="y") == f"<p>{i} y</p>"
    stats = reader.stats().tiers[0]
    assert stats.rejected_mac + stats.rejected_format == len(templates)
    assert stats.errors == 0
    assert UNPICKLED == []


# -- the generation is re-read at most every generation_ttl ----------------------------


def _gets_served(servers: list[MemcachedServer]) -> int:
    total = 0
    for server in servers:
        with direct(server) as raw:
            total += int(raw.stats()[b"cmd_get"])
    return total


@pytest.mark.parametrize("nodes", [1, 3])
def test_lookups_within_generation_ttl_make_one_request_each(
    memcached_cluster: list[MemcachedServer], mc_prefix: str, nodes: int
) -> None:
    """Within ``generation_ttl`` a lookup is one get on one node, on one server or on a
    cluster: the replicated generation costs nothing on the lookup path."""
    servers = memcached_cluster[:nodes]
    addresses = [s.address for s in servers]
    tier = tier_on(addresses if nodes > 1 else addresses[0], mc_prefix, generation_ttl=3600)
    for i in range(20):
        tier.set(f"k{i}", b"v")
    before = _gets_served(servers)
    assert [tier.get(f"k{i}") for i in range(20)] == [b"v"] * 20
    assert _gets_served(servers) - before == 20


def test_building_a_tier_opens_no_connection(mc_prefix: str) -> None:
    """Constructing a tier (one server or three) connects to nothing: a worker that
    never looks a template up never talks to memcached."""
    listeners = []
    try:
        for _ in range(3):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            listeners.append(listener)
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners]
        tiers = [tier_on(addresses[0], mc_prefix), tier_on(addresses, mc_prefix)]
        for listener in listeners:
            with pytest.raises(BlockingIOError):
                listener.accept()
        assert len(tiers) == 2
    finally:
        for listener in listeners:
            listener.close()


# -- a cluster: the generation on every node -------------------------------------------


def generation_home(addresses: list[str], prefix: str) -> int:
    """The index of the node pymemcache's rendezvous hash sends the generation key to."""
    node = RendezvousHash(nodes=addresses).get_node(gen_key(prefix))
    return addresses.index(node)


def stored_generations(servers: list[MemcachedServer], prefix: str) -> list[bytes | None]:
    out: list[bytes | None] = []
    for server in servers:
        with direct(server) as raw:
            out.append(raw.get(gen_key(prefix)))
    return out


def test_generation_is_written_on_every_node(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """On a cluster the generation is stored on every node, the same value on each."""
    tier = tier_on([s.address for s in memcached_cluster], mc_prefix)
    tier.set("k", b"v")
    assert stored_generations(memcached_cluster, mc_prefix) == [tier.generation().encode()] * 3


def test_clear_bumps_the_generation_on_every_node(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """clear on a cluster leaves every node holding the same, newer generation, and
    another process reading any of them sees the clear."""
    addresses = [s.address for s in memcached_cluster]
    tier = tier_on(addresses, mc_prefix)
    other = tier_on(addresses, mc_prefix, generation_ttl=0)
    tier.set("k", b"v")
    assert other.get("k") == b"v"
    old = int(tier.generation())
    tier.clear()
    stored = stored_generations(memcached_cluster, mc_prefix)
    assert len(set(stored)) == 1 and stored[0] is not None and int(stored[0]) > old
    assert other.get("k") is None
    assert other.generation() == tier.generation() == stored[0].decode()


def test_node_that_missed_a_clear_is_raised_to_the_newest_generation(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """A node left holding an older generation (it was away during a clear) does not
    pull the fleet back: the largest generation wins and the node is repaired."""
    addresses = [s.address for s in memcached_cluster]
    tier = tier_on(addresses, mc_prefix, generation_ttl=0)
    tier.set("k", b"v")
    newest = int(tier.generation())
    with direct(memcached_cluster[1]) as raw:
        assert raw.set(gen_key(mc_prefix), str(newest - 5).encode(), noreply=False)
    fresh = tier_on(addresses, mc_prefix)
    assert fresh.get("k") == b"v"
    assert fresh.generation() == str(newest)
    assert stored_generations(memcached_cluster, mc_prefix) == [str(newest).encode()] * 3
    assert fresh.events["generation_repaired"] == 1


def test_node_restarted_empty_gets_the_generation_back(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """A node restarted empty is given the fleet's generation again on the next read of
    it, while processes started meanwhile already agree through the other nodes."""
    addresses = [s.address for s in memcached_cluster]
    tier = tier_on(addresses, mc_prefix, generation_ttl=0, dead_timeout=0.1)
    tier.set("k", b"v")
    used = tier.generation()
    home = generation_home(addresses, mc_prefix)
    memcached_cluster[home].restart()
    assert tier_on(addresses, mc_prefix).generation() == used
    deadline = time.monotonic() + 10
    for _ in range(1000):
        try:
            tier.get("k")
        except CONNECTION_ERRORS:  # the connections the restart broke
            pass
        if stored_generations(memcached_cluster, mc_prefix)[home] == used.encode():
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert stored_generations(memcached_cluster, mc_prefix) == [used.encode()] * 3
    assert tier.generation() == used


def test_generation_node_killed_new_process_keeps_the_namespace_and_the_live_entries(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """Of three nodes, the one the generation key hashes to is killed: a process that
    was running and one started afterwards use the same generation, and every entry on
    the two surviving nodes is a hit for the new process."""
    addresses = [s.address for s in memcached_cluster]
    running = tier_on(addresses, mc_prefix, generation_ttl=0)
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        running.set(key, key.encode())
    home = generation_home(addresses, mc_prefix)
    with direct(memcached_cluster[home]) as raw:
        on_victim = {key for key in keys if raw.get(running.key(key)) is not None}
    assert 0 < len(on_victim) < len(keys)
    used = running.generation()
    memcached_cluster[home].stop()

    assert running.generation() == used
    started_after = tier_on(addresses, mc_prefix)
    assert started_after.generation() == used
    hits, errors = 0, 0
    for key in keys:
        try:
            value = started_after.get(key)
        except OSError:  # the first call to the dead node; pymemcache then drops it
            errors += 1
            continue
        if value is not None:
            assert key not in on_victim and value == key.encode()
            hits += 1
    assert hits == len(keys) - len(on_victim)
    assert errors <= 1


def test_hung_node_costs_one_timeout_per_dead_timeout_on_generation_reads(
    memcached_cluster: list[MemcachedServer], mc_prefix: str
) -> None:
    """A node that stops answering (SIGSTOP) costs the generation reads one timeout;
    later reads skip it until ``dead_timeout`` has passed, and agree on the generation
    through the live nodes."""
    addresses = [s.address for s in memcached_cluster]
    writer = tier_on(addresses, mc_prefix)
    writer.set("k", b"v")
    used = writer.generation()
    hung = memcached_cluster[0]
    hung.pause()
    try:
        tier = tier_on(
            addresses,
            mc_prefix,
            generation_ttl=0,
            timeout=0.2,
            connect_timeout=0.2,
            dead_timeout=3600,
        )
        assert [tier.generation() for _ in range(5)] == [used] * 5
        assert tier.events["generation_node_errors"] == 1
    finally:
        hung.resume()
