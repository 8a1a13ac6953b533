"""MemcachedTier against real memcached: namespaces, key validity, restarts, dead and
hung nodes, configuration errors, pickling."""

from __future__ import annotations

import gc
import pickle
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymemcache.client.base import Client, PooledClient
from pymemcache.exceptions import MemcacheError

from tests.conftest import MemcachedServer, free_port
from tiered_bccache import ConfigurationError, MemcachedTier, Tier

from .forking import FORK_DEADLINE, use_across_a_fork
from .tier_suite import ODD_KEYS, TierContract


class TestMemcachedTierContract(TierContract):
    """The memcached tier keeps the byte-tier contract (one prefix per test)."""

    @pytest.fixture(autouse=True)
    def _server(self, memcached: MemcachedServer, mc_prefix: str) -> None:
        self.address = memcached.address
        self.prefix = mc_prefix

    def make_tier(self) -> Tier:
        return MemcachedTier(self.address, prefix=self.prefix)


#: What a call on a dead or restarted server raises: pymemcache reports a connection
#: closed mid-reply as MemcacheUnexpectedCloseError, which is not an OSError.
CONNECTION_ERRORS = (OSError, MemcacheError)


@contextmanager
def direct(server: MemcachedServer) -> Iterator[Client]:
    """A plain client that looks at one server's raw keys, bypassing the tier."""
    client = Client(("127.0.0.1", server.port), timeout=2, connect_timeout=2, default_noreply=False)
    try:
        yield client
    finally:
        client.close()


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def server_keys(server: MemcachedServer, prefix: str, expected: int) -> set[str]:
    """The server's keys under ``prefix``. A metadump walks the LRU while items move
    between its segments, so one dump may miss an item: merge up to five dumps."""
    found: set[str] = set()
    for _ in range(5):
        found |= {key for key in server.keys() if key.startswith(prefix + ":")}
        if len(found) >= expected:
            break
        time.sleep(0.05)
    return found


# -- namespaces: clear by generation ---------------------------------------------------


def test_clear_never_touches_another_prefix(memcached: MemcachedServer, mc_prefix: str) -> None:
    """clear bumps this prefix's generation only: a tier with another prefix on the same
    server keeps its entries and its generation, byte for byte."""
    ours = MemcachedTier(memcached.address, prefix=mc_prefix)
    theirs = MemcachedTier(memcached.address, prefix=new_prefix())
    for i in range(5):
        ours.set(f"k{i}", b"ours")
        theirs.set(f"k{i}", b"theirs")
    their_keys = [theirs.key(f"k{i}") for i in range(5)] + [f"{theirs.prefix}:gen"]
    with direct(memcached) as raw:
        before = raw.get_many(their_keys)
        ours.clear()
        assert [ours.get(f"k{i}") for i in range(5)] == [None] * 5
        assert [theirs.get(f"k{i}") for i in range(5)] == [b"theirs"] * 5
        assert raw.get_many(their_keys) == before
    assert len(before) == 6


def test_clear_is_seen_by_another_tier_object_with_the_same_prefix(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Another process's tier (another object, same prefix) that re-reads the
    generation on every call sees a clear at once."""
    writer = MemcachedTier(memcached.address, prefix=mc_prefix)
    reader = MemcachedTier(memcached.address, prefix=mc_prefix, generation_ttl=0)
    writer.set("k", b"v")
    assert reader.get("k") == b"v"
    writer.clear()
    assert reader.get("k") is None
    reader.set("k", b"new")
    assert writer.get("k") == b"new"


def test_clear_is_seen_by_another_tier_object_within_generation_ttl(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """A tier that caches the generation keeps using it for ``generation_ttl`` and sees
    another tier's clear after that, on its own."""
    writer = MemcachedTier(memcached.address, prefix=mc_prefix)
    reader = MemcachedTier(memcached.address, prefix=mc_prefix, generation_ttl=0.3)
    writer.set("k", b"v")
    assert reader.get("k") == b"v"
    writer.clear()
    seen = False
    deadline = time.monotonic() + 10
    for _ in range(1000):
        if reader.get("k") is None:
            seen = True
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert seen, "the reader still saw the entry 10 s after the clear"
    assert reader.generation() == writer.generation()


# -- keys and values -------------------------------------------------------------------


def test_every_key_is_valid_for_memcached(memcached: MemcachedServer) -> None:
    """Whatever the key (10 kB of unicode, spaces, control characters, a 150-character
    literal under a 64-character prefix), the key sent is at most 250 bytes of printable
    ASCII without whitespace, and the server stores each under its own key."""
    prefix = ("p" * 52 + uuid.uuid4().hex)[:64]
    tier = MemcachedTier(memcached.address, prefix=prefix)
    keys = [*ODD_KEYS, "ключ🔑 " * 1500, "k" * 150, "k" * 151, "\ud800"]
    for i, key in enumerate(keys):
        tier.set(key, b"%d" % i)
    sent = {tier.key(key) for key in keys}
    assert len(sent) == len(keys)
    for name in sent:
        assert len(name.encode()) <= 250 and all("!" <= c <= "~" for c in name), name
    stored = server_keys(memcached, prefix, len(keys) + 1)
    assert stored == sent | {f"{prefix}:gen"}
    assert [tier.get(key) for key in keys] == [b"%d" % i for i in range(len(keys))]


def test_max_entry_size_leaves_room_under_the_item_size(memcached: MemcachedServer) -> None:
    """The cache skips entries over max_entry_size; that limit is below memcached's item
    size, and an entry of exactly max_entry_size is stored by a default server."""
    tier = MemcachedTier(memcached.address, prefix=new_prefix())
    assert tier.max_entry_size is not None
    assert tier.max_entry_size < tier.max_item_size
    value = b"x" * tier.max_entry_size
    tier.set("largest", value)
    assert tier.get("largest") == value


def test_value_the_server_refuses_raises(memcached: MemcachedServer) -> None:
    """A write memcached rejects (larger than its item size) raises: it is never a
    silent no-op, since the tier waits for every reply."""
    tier = MemcachedTier(memcached.address, prefix=new_prefix())
    with pytest.raises(Exception, match="too large"):
        tier.set("huge", b"x" * (tier.max_item_size + 1))
    assert tier.get("huge") is None


# -- restarts, dead nodes, hung servers ------------------------------------------------


def test_restart_empties_the_cache_and_the_tier_recovers(
    memcached_private: MemcachedServer, mc_prefix: str
) -> None:
    """After a server restart the old entries are gone, at most the first call on the
    broken connection fails, the generation key is created again, and reads and
    writes work."""
    tier = MemcachedTier(memcached_private.address, prefix=mc_prefix, generation_ttl=0)
    tier.set("k", b"before")
    memcached_private.restart()
    failures = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and failures < 5:
        try:
            assert tier.get("k") is None
            break
        except CONNECTION_ERRORS:
            failures += 1
    else:
        pytest.fail("the tier did not recover after the restart")
    assert failures <= 1
    with direct(memcached_private) as raw:
        assert raw.get(f"{mc_prefix}:gen") is not None
    tier.set("k", b"after")
    assert tier.get("k") == b"after"


def test_cluster_spreads_keys_and_survives_a_dead_node(
    memcached_private: MemcachedServer, mc_prefix: str
) -> None:
    """Keys spread over all three nodes. With one node killed, its keys miss or raise (a
    bounded number of times, never a value) while the others still read; within seconds
    pymemcache marks the node dead and every key can be written and read again on the
    live nodes."""
    extra = [MemcachedServer(free_port()), MemcachedServer(free_port())]
    try:
        for server in extra:
            server.start()
        nodes = [memcached_private, *extra]
        tier = MemcachedTier(
            [node.address for node in nodes],
            prefix=mc_prefix,
            timeout=0.2,
            connect_timeout=0.2,
            retry_attempts=1,
            dead_timeout=60,
        )
        keys = [f"k{i}" for i in range(60)]
        for key in keys:
            tier.set(key, key.encode())
        home: dict[str, list[int]] = {key: [] for key in keys}
        for n, node in enumerate(nodes):
            with direct(node) as raw:
                for key in keys:
                    if raw.get(tier.key(key)) is not None:
                        home[key].append(n)
        assert all(len(where) == 1 for where in home.values()), home
        assert {where[0] for where in home.values()} == {0, 1, 2}

        victim = 2
        nodes[victim].stop()
        lost = [key for key in keys if home[key] == [victim]]
        kept = [key for key in keys if home[key] != [victim]]
        assert [tier.get(key) for key in kept] == [key.encode() for key in kept]
        outcomes: list[bytes | str | None] = []
        for key in lost:
            try:
                outcomes.append(tier.get(key))
            except CONNECTION_ERRORS:
                outcomes.append("raised")
        # A closed pooled connection, then a refusal per attempt, then pymemcache skips
        # the node: never a value.
        assert set(outcomes) <= {None, "raised"}
        assert outcomes.count("raised") <= 2 + tier.retry_attempts

        deadline = time.monotonic() + 10
        pending = list(lost)
        while pending and time.monotonic() < deadline:
            for key in list(pending):
                try:
                    tier.set(key, b"moved")
                    pending.remove(key)
                except CONNECTION_ERRORS:
                    pass
            time.sleep(0.05)
        assert pending == [], "keys of the dead node still fail after 10 s"
        assert [tier.get(key) for key in lost] == [b"moved"] * len(lost)
        assert [tier.get(key) for key in kept] == [key.encode() for key in kept]
    finally:
        for server in extra:
            server.stop()


def test_paused_server_makes_get_raise_timeout_error_instead_of_hanging(
    memcached_private: MemcachedServer, mc_prefix: str
) -> None:
    """A server that stops answering (SIGSTOP) makes a get raise TimeoutError, on an open
    connection and on a new one (whose first call reads the generation), instead of
    hanging; the bound is generous (pymemcache's default is to wait forever)."""
    timeout = 0.25
    tier = MemcachedTier(
        memcached_private.address, prefix=mc_prefix, timeout=timeout, connect_timeout=timeout
    )
    tier.set("k", b"v")
    fresh = MemcachedTier(
        memcached_private.address, prefix=mc_prefix, timeout=timeout, connect_timeout=timeout
    )
    memcached_private.pause()
    try:
        for each in (tier, fresh):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                each.get("k")
            assert time.monotonic() - started < 40 * timeout
    finally:
        memcached_private.resume()
    assert tier.get("k") == b"v"


# -- configuration ----------------------------------------------------------------------

ADDRESS = "127.0.0.1:11211"


@pytest.mark.parametrize(
    ("servers", "options", "argument"),
    [
        ("localhost", {}, "servers"),
        ("host:99999", {}, "servers"),
        ("", {}, "servers"),
        ([], {}, "servers"),
        (42, {}, "servers"),
        ([ADDRESS, "nohost"], {}, "servers"),
        (ADDRESS, {"prefix": "has space"}, "prefix"),
        (ADDRESS, {"prefix": ""}, "prefix"),
        (ADDRESS, {"prefix": "p" * 65}, "prefix"),
        (ADDRESS, {"expire": -1}, "expire"),
        (ADDRESS, {"expire": 1.5}, "expire"),
        (ADDRESS, {"timeout": 0}, "timeout"),
        (ADDRESS, {"timeout": float("inf")}, "timeout"),
        (ADDRESS, {"connect_timeout": 0}, "connect_timeout"),
        (ADDRESS, {"max_item_size": 100}, "max_item_size"),
        (ADDRESS, {"max_pool_size": 0}, "max_pool_size"),
        (ADDRESS, {"retry_attempts": -1}, "retry_attempts"),
        (ADDRESS, {"dead_timeout": 0}, "dead_timeout"),
        (ADDRESS, {"generation_ttl": -1}, "generation_ttl"),
    ],
)
def test_bad_argument_raises_configuration_error_naming_it(
    servers: Any, options: dict[str, Any], argument: str
) -> None:
    """A malformed server, prefix or number fails at construction, before any
    connection, with the argument's name in the message."""
    with pytest.raises(ConfigurationError, match=rf"\b{argument}\b"):
        MemcachedTier(servers, **options)


def test_ready_client_is_used_as_given(memcached: MemcachedServer, mc_prefix: str) -> None:
    """A pymemcache client built by the application is accepted and used for every
    call, clear included."""
    client = PooledClient(
        ("127.0.0.1", memcached.port), timeout=1, connect_timeout=1, default_noreply=False
    )
    try:
        tier = MemcachedTier(client, prefix=mc_prefix)
        tier.set("k", b"v")
        assert tier.get("k") == b"v"
        with direct(memcached) as raw:
            assert raw.get(tier.key("k")) == b"v"
        tier.clear()
        assert tier.get("k") is None
    finally:
        client.close()


def test_pickled_tier_talks_to_the_same_server(memcached: MemcachedServer, mc_prefix: str) -> None:
    """A copy of a tier built from addresses has the same options, opens its own
    connections and sees the original's entries."""
    tier = MemcachedTier(memcached.address, prefix=mc_prefix, timeout=0.3, expire=60)
    tier.set("k", b"v")
    copy = pickle.loads(pickle.dumps(tier))
    assert (copy.prefix, copy.timeout, copy.expire) == (mc_prefix, 0.3, 60)
    assert copy.client is not tier.client
    assert copy.get("k") == b"v"
    copy.set("k2", b"v2")
    assert tier.get("k2") == b"v2"


def test_pickling_a_tier_on_a_ready_client_raises_type_error(memcached: MemcachedServer) -> None:
    """A tier on the application's own client cannot be copied: the client is not
    described by addresses."""
    client = PooledClient(("127.0.0.1", memcached.port), timeout=1, default_noreply=False)
    try:
        with pytest.raises(TypeError, match="ready client"):
            pickle.dumps(MemcachedTier(client, prefix=new_prefix()))
    finally:
        client.close()


# -- what the command line reports -----------------------------------------------------


def test_describe_reports_the_generation_and_each_servers_own_stats(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """describe() gives what stats shows, in its order: the prefix, the generation in
    use, reachable, and each server's stats; probe() returns while the server answers."""
    tier = MemcachedTier(memcached.address, prefix=mc_prefix, timeout=1, connect_timeout=1)
    tier.set("k", b"v")
    tier.probe()
    report = tier.describe()
    assert list(report) == ["name", "kind", "prefix", "generation", "reachable", "servers"]
    assert report["name"] == f"memcached:{memcached.address}"
    assert (report["kind"], report["prefix"]) == ("memcached", mc_prefix)
    assert report["generation"] == tier.generation()
    assert report["reachable"] is True
    servers: Any = report["servers"]
    (server,) = servers
    assert (server["server"], server["reachable"]) == (memcached.address, True)
    assert server["curr_items"] >= 2 and server["limit_maxbytes"] > 0  # the entry and gen
    assert {"bytes", "evictions", "get_hits", "get_misses"} <= set(server)


def test_probe_raises_and_describe_reports_the_error_once_the_server_is_stopped(
    memcached_private: MemcachedServer, mc_prefix: str
) -> None:
    """With the server killed, a tier's probe() raises what the client raises, and
    describe() reports it under reachable and error instead of raising."""
    memcached_private.stop()
    tier = MemcachedTier(memcached_private.address, prefix=mc_prefix, connect_timeout=1)
    with pytest.raises(ConnectionRefusedError):
        tier.probe()
    report = tier.describe()
    assert (report["generation"], report["reachable"]) == (None, False)
    assert str(report["error"]).startswith("ConnectionRefusedError")
    assert report["servers"] == [
        {"server": memcached_private.address, "reachable": False, "error": report["error"]}
    ]


# -- fork ------------------------------------------------------------------------------


def clear_then_read(tier: Tier) -> list[str]:
    """A forked child's first step: clear (which waits for the generation lock), then
    check that the parent's entry is gone."""
    tier.clear()
    got = tier.get("before-the-fork")
    return [] if got is None else [f"the clear did not clear: {got!r}"]


@pytest.mark.parametrize("servers", ["one server", "a cluster of three"])
def test_forked_child_opens_its_own_connections_and_both_get_exact_values(
    request: pytest.FixtureRequest, mc_prefix: str, servers: str
) -> None:
    """After a fork (gunicorn --preload, multiprocessing) the child does not share the
    parent's sockets: child and parent set and get at the same time, and every value
    each reads back is exactly the one it set."""
    if servers == "one server":
        addresses: str | list[str] = request.getfixturevalue("memcached").address
    else:
        addresses = [s.address for s in request.getfixturevalue("memcached_cluster")]
    tier = MemcachedTier(addresses, prefix=mc_prefix, timeout=1.0, connect_timeout=1.0)
    assert use_across_a_fork(tier) == ([], [])


def hold_the_generation_lock(tier: Any) -> Callable[[], None]:
    """A thread of this process takes the tier's generation lock, as a thread reading
    the generation from a slow server does; returns what lets it go."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with tier._generation.lock:
            held.set()
            done.wait(FORK_DEADLINE + 10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)

    def release() -> None:
        done.set()
        thread.join(10)

    return release


def test_forked_child_is_not_stuck_on_a_lock_a_parent_thread_held(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """A child forked while another thread of the parent held the generation lock
    (there is no such thread in the child to release it) clears and round-trips
    normally instead of waiting for ever."""
    tier = MemcachedTier(memcached.address, prefix=mc_prefix, timeout=1.0, connect_timeout=1.0)
    tier.set("k", b"v")  # the generation is read: the parent never waits for the lock
    release = hold_the_generation_lock(tier)
    try:
        assert use_across_a_fork(tier, first=clear_then_read) == ([], [])
    finally:
        release()


def test_a_tier_is_not_kept_alive_for_forks(memcached: MemcachedServer, mc_prefix: str) -> None:
    """What resets tiers in a forked child holds them weakly: a tier nobody uses any
    more is collected, and its connections closed, as before."""
    tier = MemcachedTier(memcached.address, prefix=mc_prefix)
    tier.set("k", b"v")
    ref = weakref.ref(tier)
    del tier
    gc.collect()
    assert ref() is None
