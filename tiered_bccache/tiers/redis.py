"""The fleet tier on Redis: one server, a Redis Cluster, or a client of your own."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigurationError
from . import _generation
from ._generation import ROUNDS
from ._server import ServerTier, error_text, given_addresses, parse_server, without_password
from ._validate import positive_int_or_none, positive_number

__all__ = ["EVENTS", "RedisTier"]

#: The URL schemes redis-py reads: TCP, TLS, a unix socket.
SCHEMES = ("redis://", "rediss://", "unix://")
#: An entry this size is already an unusual template; Redis serves one request at a time,
#: so a multi-megabyte value stalls every other client while it is copied.
DEFAULT_MAX_ENTRY_SIZE = 1024 * 1024

#: What :attr:`RedisTier.events` counts, all from 0 when the tier is built: the
#: generation's events (:data:`tiered_bccache.tiers._generation.EVENTS`), then ours.
EVENTS = (*_generation.EVENTS, "entry_not_bytes", "entry_wrong_type")

#: Compare-and-set of the generation key, atomic on the server. ARGV[1] is what the
#: caller read: "" for no key, "wrongtype" for a key of another type, else the SHA-1 of
#: the string it held (a foreign value may be a megabyte: its digest travels, not it).
#: The key is replaced only if it still holds that, so processes racing to repair or
#: bump it agree on one value, as memcached's add/cas give. SET drops any TTL a foreign
#: writer set, and replaces a key of any type.
_CAS = """
local t = redis.call('TYPE', KEYS[1])['ok']
local seen = ''
if t == 'string' then
  seen = redis.sha1hex(redis.call('GET', KEYS[1]))
elseif t ~= 'none' then
  seen = 'wrongtype'
end
if seen ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def _wrong_type(exc: BaseException) -> bool:
    return str(exc).startswith("WRONGTYPE")


class RedisTier(ServerTier):
    """Entries in Redis, shared by every host that points at the same server or cluster.

    ``target`` is one of:

    - a URL, as redis-py reads it: ``redis://[[user]:password@]host:port/db``,
      ``rediss://...`` (TLS), ``unix:///path/redis.sock?db=0``; options in the query
      string (``?socket_timeout=1``) win over ours;
    - a list of Redis Cluster nodes, ``["host:port", ...]`` (any reachable subset:
      redis-py's ``RedisCluster`` learns the rest); the client connects on first use, so
      building a tier never waits on the network;
    - a ready ``redis.Redis`` or ``redis.cluster.RedisCluster``, used as given: it must
      return bytes (``decode_responses=False``), and its timeouts and retries are yours.

    Our defaults differ from redis-py's on purpose: a ``connect_timeout`` and a read
    ``timeout`` of 50 ms (redis-py waits forever on a hung server), no retries (redis-py
    retries three times with back-off; our circuit breaker decides when to try again),
    and a ``BlockingConnectionPool`` of at most ``max_connections`` connections, which a
    thread waits for at most ``pool_timeout`` seconds (a cluster pools per node).

    Entries expire after ``expire`` seconds (7 days; 0 for never), so a clear's old
    namespace ages out. Entries above ``max_entry_size`` are skipped (and counted by the
    cache). ``compress`` zlib-compresses entries, as for
    :class:`~tiered_bccache.MemcachedTier`.

    ``clear()`` never runs ``FLUSHDB``, ``FLUSHALL`` or ``KEYS``: other applications may
    share the server. Every key carries a namespace generation kept at ``<prefix>:gen``
    and clear bumps it; other processes see a clear within ``generation_ttl`` seconds.
    The generation is hardened as memcached's is: anything but a generation of our
    shape at that key (a string of another form, or a list, a hash...) is foreign and
    is replaced, with an atomic compare-and-set on the server, by the generation this
    process was using (a new process starts a time-based one); a lost key (a restart, an
    eviction) is put back the same way, and by every write. In a cluster the key lives
    in one slot: when its master dies, the replica that takes over holds it.

    ``events`` counts what the tier noticed (see :data:`EVENTS`), as
    :attr:`MemcachedTier.events <tiered_bccache.MemcachedTier.events>` does, plus
    ``entry_wrong_type``: a key of another type where an entry belongs (a miss, and the
    next write replaces it). :meth:`server_stats` reads the servers' own figures.

    A child forked from the process (gunicorn ``--preload``, multiprocessing) does not
    share the parent's connections: it builds its own client on first use. A ready
    client is used as it is (redis-py's pools notice a fork themselves).

    Raises :class:`~tiered_bccache.ConfigurationError` for a malformed URL, node, prefix
    or number, or when redis-py is not installed (``pip install tiered-bccache[redis]``).
    """

    _protocol = "redis"
    _picklable_from = "a URL or nodes"

    def __init__(
        self,
        target: str | Sequence[str] | Any,
        *,
        prefix: str = "tbc",
        expire: int = 7 * 24 * 3600,
        connect_timeout: float = 0.05,
        timeout: float = 0.05,
        max_entry_size: int | None = DEFAULT_MAX_ENTRY_SIZE,
        compress: bool = False,
        max_connections: int = 32,
        pool_timeout: float = 0.05,
        generation_ttl: float = 2.0,
    ) -> None:
        super().__init__(prefix, expire, generation_ttl, connect_timeout, timeout)
        self.max_entry_size: int | None = positive_int_or_none("max_entry_size", max_entry_size)
        self.compress = bool(compress)
        limit = positive_int_or_none("max_connections", max_connections)
        if limit is None:
            raise ConfigurationError("max_connections must be a positive integer, got None")
        self.max_connections = limit
        self.pool_timeout = positive_number("pool_timeout", pool_timeout)
        try:
            # Imported here, when a tier is built, not with the package: a worker without
            # Redis never pays for redis-py.
            import redis
        except ImportError:
            raise ConfigurationError(
                "RedisTier needs redis-py: pip install 'tiered-bccache[redis]'"
            ) from None
        self._redis = redis
        self._nodes: list[tuple[str, int]] = []
        given = given_addresses(
            target, "target", "cluster node", "a redis:// URL, a list of cluster nodes or a client"
        )
        if isinstance(given, str):
            if not given.startswith(SCHEMES):
                raise ConfigurationError(
                    f"target: {given!r} is not a redis://, rediss:// or unix:// URL (a "
                    "cluster is a list of 'host:port')"
                )
            name = without_password(given)
        elif given is not None:
            for node in given:
                parsed = parse_server(node)
                if isinstance(parsed, str):
                    raise ConfigurationError(
                        f"target: cluster nodes are 'host:port', got the path {node!r}"
                    )
                self._nodes.append(parsed)
            name = "redis-cluster:" + ",".join(given)
        else:
            name = f"redis:{type(target).__name__}"
            kwargs: object = getattr(target, "get_connection_kwargs", dict)()
            if isinstance(kwargs, dict) and kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "target: the client decodes responses; entries are bytes (build it "
                    "with decode_responses=False)"
                )
        # A cluster's client is built on first use: building it asks a node for the
        # cluster's layout, which a tier's constructor must not wait for.
        self._start(given, target, name, EVENTS, now=isinstance(given, str))

    # Named here for the API reference, which shows a class's own members.
    client = ServerTier.client
    generation = ServerTier.generation
    key = ServerTier.key
    clear = ServerTier.clear
    probe = ServerTier.probe

    def _no_retry(self) -> Any:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return Retry(NoBackoff(), 0)

    def _open(self) -> tuple[Any, Callable[[], object]]:
        url = self._addresses
        if isinstance(url, str):
            pool = self._redis.BlockingConnectionPool.from_url(
                url,
                max_connections=self.max_connections,
                timeout=self.pool_timeout,
                socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.timeout,
                retry=self._no_retry(),
                decode_responses=False,
            )
            if pool.connection_kwargs.get("decode_responses"):
                raise ConfigurationError(f"target: {url!r} asks for decoded responses; remove it")
            # The pool is ours to close: Redis.close() leaves a pool it was given open.
            return self._redis.Redis(connection_pool=pool), pool.disconnect
        from redis.cluster import ClusterNode, RedisCluster

        cluster = RedisCluster(
            startup_nodes=[
                ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in self._nodes
            ],
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=self.timeout,
            max_connections=self.max_connections,
            # Each node's pool; its wait for a free connection is bound here because
            # RedisCluster passes no pool options through.
            connection_pool_class=functools.partial(
                self._redis.BlockingConnectionPool, timeout=self.pool_timeout
            ),
            retry=self._no_retry(),
            # A slot without a master (mid-failover) fails its own keys only.
            require_full_coverage=False,
            decode_responses=False,
        )
        return cluster, cluster.close

    # -- the namespace generation ------------------------------------------------------

    def _read(self) -> tuple[int | None, str]:
        """The generation at the key (None when missing or foreign) and the token a
        compare-and-set of what was read needs."""
        where = repr(self._gen_key)
        try:
            value = self.client.get(self._gen_key)
        except self._redis.exceptions.ResponseError as exc:
            if not _wrong_type(exc):
                raise
            return self._generation.reading(exc, where, "a key of another type"), "wrongtype"
        if value is None:
            return self._generation.reading(None, where), ""
        if isinstance(value, str):  # a ready client that decodes
            value = value.encode("utf-8", "surrogateescape")
        token = hashlib.sha1(bytes(value)).hexdigest()
        return self._generation.reading(value, where), token

    def _cas(self, token: str, target: int) -> bool:
        return bool(self.client.eval(_CAS, 1, self._gen_key, token, str(target)))

    def _bump(self, target: int, force: bool) -> bool:
        number, token = self._read()
        return (number is not None and number >= target and not force) or self._cas(token, target)

    def _fetch_generation(self) -> str:
        """Read the generation; put ours back where it is missing or foreign."""
        for _ in range(ROUNDS):
            number, token = self._read()
            target = self._generation.choose([number])
            if number is not None:
                break  # a generation of our shape: nothing to write
            if self._cas(token, target):
                self.events["generation_repaired" if token == "" else "generation_replaced"] += 1
                break
        else:
            raise ConnectionError(f"redis did not keep the generation key {self._gen_key!r}")
        return self._generation.agreed(target)

    # -- the Tier interface ------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(self.key(key))
        except self._redis.exceptions.TimeoutError as exc:
            raise _timeout(exc) from exc
        except self._redis.exceptions.ResponseError as exc:
            if not _wrong_type(exc):
                raise
            # Someone else's list or hash where our entry belongs: a miss, not a failing
            # server (which would open the breaker for every other key).
            self.events["entry_wrong_type"] += 1
            return None
        if value is None or type(value) is bytes:
            return value
        self._generation.entry_not_bytes(value, "build it with decode_responses=False")
        return None

    def set(self, key: str, value: bytes) -> None:
        try:
            name = self.key(key)
            # After a restart the generation key is gone; a process starting now would
            # pick a new generation and orphan what the running ones write. Putting ours
            # back (a no-op while the key exists) in the same round trip keeps them in
            # agreement.
            pipe = self.client.pipeline(transaction=False)
            pipe.set(name, value, ex=self.expire or None)
            pipe.set(self._gen_key, self._generation.current, nx=True)
            stored, restored = pipe.execute()
        except self._redis.exceptions.TimeoutError as exc:
            raise _timeout(exc) from exc
        if not stored:
            raise ConnectionError(f"redis did not store {len(value)} bytes")
        if restored:
            self.events["generation_repaired"] += 1

    def delete(self, key: str) -> None:
        try:
            self.client.delete(self.key(key))
        except self._redis.exceptions.TimeoutError as exc:
            raise _timeout(exc) from exc

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows (see :meth:`ByteTier.describe
        <tiered_bccache.ByteTier.describe>`): the prefix, the namespace generation (None
        when the server does not answer), :meth:`server_stats` under ``servers``,
        ``reachable`` and, when not, ``error``."""
        report: dict[str, object] = {"name": self.name, "kind": "redis", "prefix": self.prefix}
        try:
            report["generation"] = self.generation()
            report["servers"] = self.server_stats()
            report["reachable"] = True
        except Exception as exc:
            report.setdefault("generation", None)
            report["servers"] = []
            report["reachable"] = False
            report["error"] = error_text(exc)
        return report

    def server_stats(self) -> list[dict[str, Any]]:
        """The server's own figures, one dict per server (per master in a cluster):
        ``server``, ``used_memory``, ``maxmemory``, ``maxmemory_policy``,
        ``evicted_keys``, ``keyspace_hits``, ``keyspace_misses``, ``keys`` (all
        databases). Raises what the client raises when a server does not answer."""
        client = self.client
        if self._nodes:
            info = client.info(target_nodes=client.PRIMARIES)
            pairs = sorted(info.items()) if isinstance(info, dict) else []
        else:
            pairs = [(self.name, client.info())]
        out = []
        for server, figures in pairs:
            keys = sum(
                int(v.get("keys", 0))
                for k, v in figures.items()
                if re.fullmatch(r"db\d+", str(k)) and isinstance(v, dict)
            )
            out.append(
                {
                    "server": str(server),
                    "used_memory": figures.get("used_memory"),
                    "maxmemory": figures.get("maxmemory"),
                    "maxmemory_policy": figures.get("maxmemory_policy"),
                    "evicted_keys": figures.get("evicted_keys"),
                    "keyspace_hits": figures.get("keyspace_hits"),
                    "keyspace_misses": figures.get("keyspace_misses"),
                    "keys": keys,
                }
            )
        return out

    def close(self) -> None:
        """Close the connections (they are reopened on the next use)."""
        client = self._client
        if client is None:
            return
        pool = getattr(client, "connection_pool", None)
        if pool is not None and hasattr(pool, "disconnect"):
            pool.disconnect()
        elif callable(getattr(client, "close", None)) and self._addresses is None:
            client.close()
        elif self._nodes:
            # A cluster client has no pool of its own; closing it drops its nodes'
            # connections, and the next use connects again.
            client.close()


def _timeout(exc: BaseException) -> TimeoutError:
    """redis-py's TimeoutError as Python's: it is not one, and the cache opens a tier's
    breaker at once on a TimeoutError (a hung server would otherwise cost a page a
    second timeout before the breaker opened)."""
    return TimeoutError(f"redis: {exc}")
