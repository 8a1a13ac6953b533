"""RedisTier against a real redis-server: the tier contract, the namespace generation
and whatever another writer leaves at it or at entry keys, configuration, pickling,
server figures, and import cost."""

from __future__ import annotations

import hashlib
import logging
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import SECRET, RedisServer, free_port
from tests.tiers.forking import use_across_a_fork
from tests.tiers.test_memcached import clear_then_read, hold_the_generation_lock
from tests.tiers.test_memcached_generation import FOREIGN_GENERATIONS, is_our_shape
from tiered_bccache import ConfigurationError, MemoryTier, RedisTier, Tier, TieredBytecodeCache

from .tier_suite import ODD_KEYS, TierContract


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def tier_on(server: RedisServer, prefix: str, **options: float) -> RedisTier:
    """A tier with timeouts no loaded test machine trips by accident."""
    options = {"timeout": 1.0, "connect_timeout": 1.0, "pool_timeout": 1.0, **options}
    return RedisTier(server.url, prefix=prefix, **options)  # type: ignore[arg-type]


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client that looks at the server's raw keys, bypassing the tier."""
    client: redis.Redis = redis.Redis(port=redis_server.port, socket_timeout=5)
    yield client
    client.close()


class TestRedisTierContract(TierContract):
    """The Redis tier keeps the byte-tier contract (one prefix per test)."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisServer) -> None:
        self.server = redis_server

    def make_tier(self) -> Tier:
        return tier_on(self.server, new_prefix())


# -- the namespace generation ----------------------------------------------------------


def test_clear_bumps_the_generation_and_never_touches_other_keys(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """clear makes this prefix's entries misses by bumping its generation by one; keys of
    another prefix and of other applications keep their values."""
    ours = tier_on(redis_server, new_prefix())
    theirs = tier_on(redis_server, new_prefix())
    ours.set("k", b"ours")
    theirs.set("k", b"theirs")
    raw.set("someone-elses-key", b"untouched")
    before = int(ours.generation())
    ours.clear()
    assert int(ours.generation()) == before + 1
    assert ours.get("k") is None
    assert theirs.get("k") == b"theirs"
    assert raw.get("someone-elses-key") == b"untouched"


def test_clear_is_seen_by_another_process_within_generation_ttl(
    redis_server: RedisServer,
) -> None:
    """A second tier on the same prefix (another process) misses after the first clears,
    once its generation is re-read (generation_ttl=0: at once)."""
    prefix = new_prefix()
    first = tier_on(redis_server, prefix)
    second = tier_on(redis_server, prefix, generation_ttl=0)
    first.set("k", b"v")
    assert second.get("k") == b"v"
    first.clear()
    assert second.get("k") is None
    assert second.events["generation_changed"] == 1


def test_entries_expire_after_expire_seconds(redis_server: RedisServer, raw: redis.Redis) -> None:
    """An entry carries a TTL of ``expire`` seconds; expire=0 stores it without one."""
    prefix = new_prefix()
    tier = RedisTier(redis_server.url, prefix=prefix, expire=3600)
    tier.set("k", b"v")
    assert 3590 <= raw.ttl(tier.key("k")) <= 3600
    forever = RedisTier(redis_server.url, prefix=new_prefix(), expire=0)
    forever.set("k", b"v")
    assert raw.ttl(forever.key("k")) == -1


def test_odd_keys_become_short_printable_redis_keys(redis_server: RedisServer) -> None:
    """Whatever a key holds, the Redis key is printable ASCII of bounded length."""
    tier = tier_on(redis_server, new_prefix())
    for key in ODD_KEYS:
        name = tier.key(key)
        assert name.isascii() and name.isprintable() and " " not in name
        assert len(name) <= 64 + 17 + 2 + 150


@pytest.mark.parametrize("value", FOREIGN_GENERATIONS.values(), ids=FOREIGN_GENERATIONS.keys())
def test_foreign_generation_is_replaced_and_the_process_keeps_its_entries(
    redis_server: RedisServer, raw: redis.Redis, value: bytes
) -> None:
    """A foreign string written over the generation key is replaced with the generation
    the process was using on its next read: no exception reaches get or set, entries
    written before stay visible, the event is counted."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix, generation_ttl=0)
    tier.set("k", b"before")
    used = tier.generation()
    raw.set(f"{prefix}:gen", value)
    assert tier.get("k") == b"before"
    tier.set("k2", b"after")
    assert tier.get("k2") == b"after"
    assert raw.get(f"{prefix}:gen") == used.encode()
    assert tier.events["generation_foreign"] == 1
    assert tier.events["generation_replaced"] == 1


#: Keys of other types at the generation key: GET on them is a WRONGTYPE error.
FOREIGN_TYPES = {
    "list": lambda r, k: r.rpush(k, b"1", b"2"),
    "hash": lambda r, k: r.hset(k, "gen", "5"),
    "set": lambda r, k: r.sadd(k, b"5"),
    "zset": lambda r, k: r.zadd(k, {b"5": 5.0}),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN_TYPES))
def test_key_of_another_type_at_the_generation_is_replaced(
    redis_server: RedisServer, raw: redis.Redis, kind: str
) -> None:
    """A list, hash, set or sorted set at the generation key is foreign too: replaced
    with the generation in use, no error reaches a lookup."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix, generation_ttl=0)
    tier.set("k", b"v")
    used = tier.generation()
    raw.delete(f"{prefix}:gen")
    FOREIGN_TYPES[kind](raw, f"{prefix}:gen")
    assert tier.get("k") == b"v"
    assert raw.get(f"{prefix}:gen") == used.encode()
    assert tier.events["generation_replaced"] == 1


@pytest.mark.parametrize("value", FOREIGN_GENERATIONS.values(), ids=FOREIGN_GENERATIONS.keys())
def test_new_process_facing_a_foreign_generation_starts_a_fresh_one(
    redis_server: RedisServer, raw: redis.Redis, value: bytes
) -> None:
    """A process starting while the generation key holds a foreign value puts a
    generation of our shape there and works at once; the next process adopts it."""
    prefix = new_prefix()
    raw.set(f"{prefix}:gen", value)
    first = tier_on(redis_server, prefix)
    first.set("k", b"v")
    assert first.get("k") == b"v"
    stored = raw.get(f"{prefix}:gen")
    assert not isinstance(stored, str)
    assert is_our_shape(stored), stored
    assert stored == first.generation().encode()
    second = tier_on(redis_server, prefix)
    assert second.get("k") == b"v"
    assert second.events["generation_foreign"] == 0


def test_foreign_generation_with_a_ttl_is_replaced_by_one_without(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """A foreign writer's TTL on the generation key does not survive its replacement."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix, generation_ttl=0)
    tier.set("k", b"v")
    raw.set(f"{prefix}:gen", b"junk", ex=100)
    assert tier.get("k") == b"v"
    assert raw.ttl(f"{prefix}:gen") == -1


def test_compare_and_set_loses_to_a_writer_that_came_in_between(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """The replacement of a foreign value lands only on the value that was read: a value
    written in between is not overwritten blindly."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix)
    raw.set(f"{prefix}:gen", b"junk")
    token = hashlib.sha1(b"junk").hexdigest()
    raw.set(f"{prefix}:gen", b"12345")
    assert tier._cas(token, 99) is False
    assert raw.get(f"{prefix}:gen") == b"12345"
    assert tier._cas(hashlib.sha1(b"12345").hexdigest(), 99) is True
    assert raw.get(f"{prefix}:gen") == b"99"


def test_foreign_generation_is_logged_once_and_counted_every_time(
    redis_server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that keeps spoiling the generation key is counted every time and logged
    once (rate-limited), naming the key."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix, generation_ttl=0)
    tier.set("k", b"v")
    with caplog.at_level(logging.WARNING, logger="tiered_bccache"):
        for i in range(3):
            raw.set(f"{prefix}:gen", b"spoilt %d" % i)
            assert tier.get("k") == b"v"
    assert tier.events["generation_foreign"] == 3
    logged = [r for r in caplog.records if r.name == "tiered_bccache"]
    assert len(logged) == 1 and f"{prefix}:gen" in logged[0].getMessage()


def test_generation_lost_is_put_back_by_the_next_write(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """After the generation key is deleted (an eviction, a restart), the next write puts
    the process's generation back, so a process starting later agrees with it."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix)
    tier.set("k", b"v")
    used = tier.generation()
    raw.delete(f"{prefix}:gen")
    tier.set("k2", b"v2")
    assert raw.get(f"{prefix}:gen") == used.encode()
    assert tier.events["generation_repaired"] >= 1
    assert tier_on(redis_server, prefix).get("k2") == b"v2"


def test_clear_past_the_limit_starts_a_fresh_generation(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    """A generation at the top of the valid range (only a foreign writer gets there)
    cleared becomes a fresh, time-based one of our shape."""
    prefix = new_prefix()
    raw.set(f"{prefix}:gen", str(2**53 - 1).encode())
    tier = tier_on(redis_server, prefix)
    tier.set("k", b"v")
    tier.clear()
    stored = raw.get(f"{prefix}:gen")
    assert not isinstance(stored, str)
    assert is_our_shape(stored) and stored != str(2**53 - 1).encode()
    assert tier.get("k") is None


# -- foreign values at entry keys ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FOREIGN_TYPES))
def test_key_of_another_type_at_an_entry_is_a_miss_and_is_overwritten(
    redis_server: RedisServer, raw: redis.Redis, kind: str
) -> None:
    """Another type at an entry's key is a counted miss, not an error (which would open
    the breaker for every key), and the next write replaces it."""
    tier = tier_on(redis_server, new_prefix())
    FOREIGN_TYPES[kind](raw, tier.key("k"))
    assert tier.get("k") is None
    assert tier.events["entry_wrong_type"] == 1
    tier.set("k", b"ours")
    assert tier.get("k") == b"ours"


@pytest.mark.parametrize(
    "value",
    [b"", b"\x80\x04\x95 pickle-looking", b"j2" + b"\x00" * 100, "é".encode() * 1000],
    ids=["empty", "pickle", "jinja-bucket", "non-ascii"],
)
def test_foreign_entries_are_rejected_by_the_cache_and_pages_render(
    redis_server: RedisServer, raw: redis.Redis, value: bytes
) -> None:
    """Foreign bytes at an entry key reach the cache as bytes, fail its checks, count
    as rejected; the page renders from a compile and the entry is rewritten."""
    from jinja2 import DictLoader, Environment

    tier = tier_on(redis_server, new_prefix())
    cache = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
    env = Environment(loader=DictLoader({"t.html": "{{ 1 + 2 }}"}), bytecode_cache=cache)
    assert env.get_template("t.html").render() == "3"
    keys = [k for k in raw.scan_iter(match=f"{tier.prefix}:*", count=1000) if b":gen" not in k]
    assert len(keys) == 1
    raw.set(keys[0], value)
    cache.tiers[0].clear()
    env2 = Environment(loader=DictLoader({"t.html": "{{ 1 + 2 }}"}), bytecode_cache=cache)
    assert env2.get_template("t.html").render() == "3"
    assert cache.stats().tiers[1].rejected == 1
    assert cache.stats().tiers[1].errors == 0


# -- configuration, pickling, figures, imports -----------------------------------------


@pytest.mark.parametrize(
    ("target", "options", "named"),
    [
        ("localhost:6379", {}, "target"),
        ("http://localhost", {}, "target"),
        ([], {}, "target"),
        (["localhost"], {}, "servers"),
        (["/tmp/redis.sock"], {}, "cluster nodes"),
        (42, {}, "target"),
        ("redis://localhost", {"prefix": "has space"}, "prefix"),
        ("redis://localhost", {"expire": -1}, "expire"),
        ("redis://localhost", {"timeout": 0}, "timeout"),
        ("redis://localhost", {"connect_timeout": float("nan")}, "connect_timeout"),
        ("redis://localhost", {"max_entry_size": 0}, "max_entry_size"),
        ("redis://localhost", {"max_connections": None}, "max_connections"),
        ("redis://localhost?decode_responses=true", {}, "decoded"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    target: object, options: dict[str, object], named: str
) -> None:
    """A malformed URL, node, prefix or number raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=named):
        RedisTier(target, **options)  # type: ignore[arg-type]


def test_client_that_decodes_responses_is_refused() -> None:
    """A ready client with decode_responses=True would return str: refused up front."""
    client = redis.Redis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode"):
        RedisTier(client)
    client.close()


def test_building_a_tier_opens_no_connection() -> None:
    """Neither a URL nor a cluster tier connects when built: a process starts while
    Redis is down, and the cache's breaker handles it from the first lookup."""
    port = free_port()
    RedisTier(f"redis://127.0.0.1:{port}/0")
    RedisTier([f"127.0.0.1:{port}"])


def test_defaults_are_short_timeouts_no_retries_and_a_bounded_pool(
    redis_server: RedisServer,
) -> None:
    """The client the tier builds has 50 ms timeouts, no retries and a blocking pool of
    max_connections: none of redis-py's defaults (no timeout, 3 retries)."""
    tier = RedisTier(redis_server.url)
    pool = tier.client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 32
    assert pool.connection_kwargs["socket_timeout"] == 0.05
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.05
    assert pool.connection_kwargs["retry"].get_retries() == 0
    assert tier.remote is True
    assert tier.max_entry_size == 1024 * 1024


def test_tier_pickles_by_configuration(redis_server: RedisServer) -> None:
    """A tier built from a URL pickles as its configuration and works on the other side;
    one built on a ready client refuses to pickle."""
    prefix = new_prefix()
    tier = RedisTier(redis_server.url, prefix=prefix, expire=60, timeout=1.0)
    tier.set("k", b"v")
    copy = pickle.loads(pickle.dumps(tier))
    assert (copy.prefix, copy.expire, copy.timeout) == (prefix, 60, 1.0)
    assert copy.get("k") == b"v"
    client = redis.Redis(port=redis_server.port)
    with pytest.raises(TypeError, match="ready client"):
        pickle.dumps(RedisTier(client))
    client.close()


def test_ready_client_is_used_as_given(redis_server: RedisServer) -> None:
    """A ready redis.Redis works as the tier's client."""
    client = redis.Redis(port=redis_server.port)
    tier = RedisTier(client, prefix=new_prefix())
    tier.set("k", b"v")
    assert tier.get("k") == b"v"
    client.close()


def test_server_stats_report_the_servers_figures(redis_server: RedisServer) -> None:
    """server_stats gives INFO's memory, eviction and keyspace figures."""
    tier = tier_on(redis_server, new_prefix())
    tier.set("k", b"v")
    tier.get("k")
    (figures,) = tier.server_stats()
    assert figures["server"] == redis_server.url
    assert figures["used_memory"] > 0 and figures["keys"] >= 2
    assert figures["keyspace_hits"] >= 1
    assert {"maxmemory", "evicted_keys", "keyspace_misses"} <= set(figures)


def test_describe_reports_the_generation_and_the_servers_figures(
    redis_server: RedisServer,
) -> None:
    """describe() gives what stats shows, in its order: the prefix, the generation in use,
    server_stats(), reachable; probe() returns while the server answers."""
    prefix = new_prefix()
    tier = tier_on(redis_server, prefix)
    tier.set("k", b"v")
    tier.probe()
    report = tier.describe()
    assert list(report) == ["name", "kind", "prefix", "generation", "servers", "reachable"]
    assert (report["name"], report["kind"], report["prefix"]) == (redis_server.url, "redis", prefix)
    assert report["generation"] == tier.generation()
    assert report["reachable"] is True
    servers: Any = report["servers"]
    (figures,) = servers
    assert figures["server"] == redis_server.url and figures["keys"] >= 2


def test_probe_raises_and_describe_reports_the_error_once_the_server_is_stopped(
    redis_private: RedisServer,
) -> None:
    """With the server killed, a tier's probe() raises what redis-py raises, and
    describe() reports it under reachable and error instead of raising."""
    redis_private.stop()
    tier = tier_on(redis_private, new_prefix())
    with pytest.raises(redis.exceptions.ConnectionError):
        tier.probe()
    report = tier.describe()
    assert (report["generation"], report["servers"], report["reachable"]) == (None, [], False)
    assert str(report["error"]).startswith("ConnectionError")


def test_password_stays_out_of_the_name() -> None:
    """A password in the URL never appears in the tier's name (logs, stats)."""
    tier = RedisTier("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in tier.name and "s3cret" not in repr(tier)


def test_import_tiered_bccache_leaves_redis_unloaded() -> None:
    """import tiered_bccache (and naming other tiers) never imports redis-py."""
    code = "import sys, tiered_bccache; tiered_bccache.MemcachedTier; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert out.stdout.strip() == b"False"


def test_a_hung_server_raises_pythons_timeout_error(redis_private: RedisServer) -> None:
    """A read timeout reaches the cache as a built-in TimeoutError (redis-py's is not
    one), so the breaker opens on the first timeout."""
    tier = RedisTier(redis_private.url, prefix=new_prefix())
    tier.set("k", b"v")
    redis_private.pause()
    try:
        with pytest.raises(TimeoutError):
            tier.get("k")
        with pytest.raises(TimeoutError):
            tier.set("k", b"v")
        with pytest.raises(TimeoutError):
            tier.delete("k")
    finally:
        redis_private.resume()


# -- fork ------------------------------------------------------------------------------


def test_forked_child_opens_its_own_connections_and_both_get_exact_values(
    redis_server: RedisServer,
) -> None:
    """After a fork (gunicorn --preload, multiprocessing) the child does not share the
    parent's connections: child and parent set and get at the same time, and every value
    each reads back is exactly the one it set."""
    tier = tier_on(redis_server, new_prefix())
    assert use_across_a_fork(tier) == ([], [])


def test_forked_child_is_not_stuck_on_a_lock_a_parent_thread_held(
    redis_server: RedisServer,
) -> None:
    """A child forked while another thread of the parent held the generation lock
    (there is no such thread in the child to release it) clears and round-trips
    normally instead of waiting for ever."""
    tier = tier_on(redis_server, new_prefix())
    tier.set("k", b"v")  # the generation is read: the parent never waits for the lock
    release = hold_the_generation_lock(tier)
    try:
        assert use_across_a_fork(tier, first=clear_then_read) == ([], [])
    finally:
        release()
