"""The fleet tier: memcached through pymemcache, one server or a hashed cluster."""

from __future__ import annotations

import hashlib
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from ..errors import ConfigurationError
from ._validate import positive_int_or_none, positive_number

__all__ = ["MemcachedTier", "parse_server"]

_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Printable ASCII, no space: valid in memcached. Not starting with "#", which marks a
# digest, so that a key that happens to be another key's digest never shares its item.
_SAFE_KEY = re.compile(r"(?!#)[!-~]{1,150}")
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})"
)
#: memcached's default item size limit (its -I option); an item also carries its key and
#: a header of about 50 bytes.
DEFAULT_ITEM_SIZE = 1024 * 1024
_ITEM_OVERHEAD = 512

Server = tuple[str, int] | str


def parse_server(spec: str) -> Server:
    """``"host:port"``, ``"[v6addr]:port"`` or a unix socket path, checked here so a
    typo fails at construction rather than at the first page render."""
    if not isinstance(spec, str):
        raise ConfigurationError(f"servers: expected 'host:port', got {spec!r}")
    if spec.startswith("/"):
        return spec
    match = _HOST_PORT.fullmatch(spec.strip())
    if match is None:
        raise ConfigurationError(
            f"servers: {spec!r} is not 'host:port', '[ipv6]:port' or a socket path"
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ConfigurationError(f"servers: port {port} in {spec!r} is out of range")
    return (match["v6"] or match["host"], port)


class MemcachedTier:
    """Entries in memcached, shared by every host that points at the same servers.

    ``servers`` is one ``"host:port"``, a list of them (keys spread with pymemcache's
    ``HashClient`` and rendezvous hashing; a node that fails is dropped at once, so its
    keys move to the live nodes, and tried again after ``dead_timeout`` seconds; with
    pymemcache's default ``retry_attempts=2`` a dead node's keys, the namespace
    generation among them, keep failing until it has failed three times), or a ready
    pymemcache client (used as given: it must be thread-safe if the cache is shared by
    threads).

    Our defaults differ from pymemcache's on purpose: connections are pooled (its plain
    ``Client`` is not thread-safe), TCP_NODELAY is on, a ``connect_timeout`` and a read
    ``timeout`` are set (its default is to wait forever on a hung server), and writes wait
    for the reply (its default ``noreply`` hides a rejected write). On a LAN memcached
    answers in well under a millisecond, so the timeouts are tens of milliseconds.

    ``compress`` zlib-compresses entries: marshalled templates shrink to about 28%, so a
    shared memcached holds 3.5x as many, at about 80 us of decompression per 40 kB entry.
    That pays on links slower than about 3 Gbit/s (``python -m benchmarks.compression``);
    on faster ones it costs time on every hit, so it is off by default. Turn it on for a
    gigabit network or a memcached short of memory.

    ``clear()`` never flushes the server, which other applications may share: every key
    carries a namespace generation, and clear bumps it (the old entries age out). Other
    processes see a clear within ``generation_ttl`` seconds.

    Raises :class:`~tiered_bccache.ConfigurationError` for a malformed server, prefix or
    number.
    """

    remote = True
    holds_objects: ClassVar[bool] = False

    def __init__(
        self,
        servers: str | Sequence[str] | Any,
        *,
        prefix: str = "tbc",
        expire: int = 7 * 24 * 3600,
        connect_timeout: float = 0.05,
        timeout: float = 0.05,
        max_item_size: int = DEFAULT_ITEM_SIZE,
        compress: bool = False,
        max_pool_size: int = 32,
        retry_attempts: int = 0,
        dead_timeout: float = 10.0,
        generation_ttl: float = 2.0,
    ) -> None:
        if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
            raise ConfigurationError(
                f"prefix must be 1-64 characters of [A-Za-z0-9_.:-], got {prefix!r}"
            )
        if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
            raise ConfigurationError(
                f"expire must be a non-negative integer (seconds), got {expire!r}"
            )
        self.prefix = prefix
        self.expire = expire
        self.connect_timeout = positive_number("connect_timeout", connect_timeout)
        self.timeout = positive_number("timeout", timeout)
        item = positive_int_or_none("max_item_size", max_item_size)
        if item is None or item <= _ITEM_OVERHEAD:
            raise ConfigurationError(
                f"max_item_size must exceed {_ITEM_OVERHEAD}, got {max_item_size!r}"
            )
        self.max_item_size = item
        self.max_entry_size: int | None = item - _ITEM_OVERHEAD
        self.compress = bool(compress)
        self.max_pool_size = positive_int_or_none("max_pool_size", max_pool_size)
        if (
            isinstance(retry_attempts, bool)
            or not isinstance(retry_attempts, int)
            or retry_attempts < 0
        ):
            raise ConfigurationError(
                f"retry_attempts must be a non-negative integer, got {retry_attempts!r}"
            )
        self.retry_attempts = retry_attempts
        self.dead_timeout = positive_number("dead_timeout", dead_timeout)
        self.generation_ttl = positive_number("generation_ttl", generation_ttl, allow_zero=True)
        self._servers: list[str] | None
        if isinstance(servers, str):
            self._servers = [servers]
        elif isinstance(servers, Sequence) and not isinstance(servers, (bytes, bytearray)):
            self._servers = list(servers)
            if not self._servers:
                raise ConfigurationError("servers must name at least one server")
        elif callable(getattr(servers, "get", None)) and callable(getattr(servers, "set", None)):
            self._servers = None
        else:
            raise ConfigurationError(
                f"servers: expected 'host:port', a list of them or a client, got {servers!r}"
            )
        if self._servers is not None:
            parsed = [parse_server(s) for s in self._servers]
            self.client: Any = self._make_client(parsed)
            self.name = "memcached:" + ",".join(self._servers)
            # Connections we opened are closed when the tier goes away.
            weakref.finalize(self, self.client.close)
        else:
            self.client = servers
            self.name = f"memcached:{type(servers).__name__}"
        self._gen_key = f"{prefix}:gen"
        self._gen = ""
        self._gen_checked = -1.0e9
        self._gen_lock = threading.Lock()

    def _make_client(self, servers: list[Server]) -> Any:
        # Imported here, when a tier is built, not with the package: pymemcache brings in
        # socket and ssl (about 22 ms), which a worker without memcached never needs.
        from pymemcache.client.base import PooledClient
        from pymemcache.client.hash import HashClient

        common: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "no_delay": True,
            "default_noreply": False,
            "max_pool_size": self.max_pool_size,
        }
        if len(servers) == 1:
            return PooledClient(servers[0], **common)
        return HashClient(
            servers,
            use_pooling=True,
            retry_attempts=self.retry_attempts,
            retry_timeout=1,
            dead_timeout=self.dead_timeout,
            ignore_exc=False,
            **common,
        )

    def __repr__(self) -> str:
        return f"MemcachedTier({self._servers!r}, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._servers is None:
            raise TypeError(
                "a MemcachedTier built on a ready client cannot be pickled; pass server addresses"
            )
        options = {
            "prefix": self.prefix,
            "expire": self.expire,
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "max_item_size": self.max_item_size,
            "compress": self.compress,
            "max_pool_size": self.max_pool_size,
            "retry_attempts": self.retry_attempts,
            "dead_timeout": self.dead_timeout,
            "generation_ttl": self.generation_ttl,
        }
        return (_rebuild, (self._servers, options))

    # -- the namespace generation ------------------------------------------------------

    def generation(self) -> str:
        """The namespace generation in every key, re-read from the server at most every
        ``generation_ttl`` seconds; :meth:`clear` bumps it."""
        if time.monotonic() - self._gen_checked < self.generation_ttl:
            return self._gen
        with self._gen_lock:
            if time.monotonic() - self._gen_checked >= self.generation_ttl:
                self._gen = self._fetch_generation()
                self._gen_checked = time.monotonic()
        return self._gen

    def _fetch_generation(self) -> str:
        value = self.client.get(self._gen_key)
        if value is None:
            # Missing after a restart or an eviction. Keep the generation we were using
            # so that entries written since stay visible; a fresh cache starts at a
            # time-based number so that it never resurrects entries of an old namespace.
            start = self._gen or str(time.time_ns() // 1_000_000)
            self.client.add(self._gen_key, start.encode(), expire=0, noreply=False)
            value = self.client.get(self._gen_key)
            if value is None:
                raise ConnectionError(
                    f"memcached did not keep the generation key {self._gen_key!r}"
                )
        return bytes(value).decode("ascii")

    def key(self, key: str) -> str:
        """The memcached key for ``key``: valid whatever ``key`` holds (at most 250 bytes,
        printable ASCII without spaces)."""
        if _SAFE_KEY.fullmatch(key) is None:
            key = "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}:{self.generation()}:{key}"

    # -- the Tier interface ------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self.key(key))
        return None if value is None else bytes(value)

    def set(self, key: str, value: bytes) -> None:
        if not self.client.set(self.key(key), value, expire=self.expire, noreply=False):
            raise ConnectionError(
                f"memcached did not store {len(value)} bytes (the server refused them, or "
                "pymemcache is skipping a node that failed)"
            )
        # After a restart the generation key is gone; a process starting now would pick a
        # new generation and orphan what the running ones write. Re-adding ours (a no-op
        # while it exists) keeps them in agreement. Writes follow compiles: this is cheap.
        self.client.add(self._gen_key, self._gen.encode(), expire=0, noreply=True)

    def delete(self, key: str) -> None:
        self.client.delete(self.key(key), noreply=False)

    def clear(self) -> None:
        with self._gen_lock:
            if self.client.incr(self._gen_key, 1, noreply=False) is None:
                self.client.add(self._gen_key, str(time.time_ns() // 1_000_000).encode(), expire=0)
            self._gen_checked = -1.0e9

    def close(self) -> None:
        """Close the connections (they are reopened on the next use)."""
        closer = getattr(self.client, "close", None)
        if callable(closer):
            closer()


def _rebuild(servers: list[str], options: dict[str, Any]) -> MemcachedTier:
    return MemcachedTier(servers, **options)
