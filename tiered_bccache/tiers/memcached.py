"""The fleet tier: memcached through pymemcache, one server or a hashed cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..errors import ConfigurationError
from . import _generation
from ._generation import ROUNDS
from ._server import Server, ServerTier, error_text, given_addresses, parse_server
from ._validate import positive_int_or_none, positive_number

# parse_server, from _server: the command line and the benchmarks import it from here.
__all__ = ["MemcachedTier", "parse_server"]

#: memcached's default item size limit (its -I option); an item also carries its key and
#: a header of about 50 bytes.
DEFAULT_ITEM_SIZE = 1024 * 1024
_ITEM_OVERHEAD = 512

#: What :attr:`MemcachedTier.events` counts, all from 0 when the tier is built: the
#: generation's events (:data:`tiered_bccache.tiers._generation.EVENTS`), then ours.
EVENTS = (*_generation.EVENTS, "generation_node_errors", "entry_not_bytes")


class _RawBytes:
    """A pymemcache serde that leaves values alone: bytes go out with flags 0 and come
    back as stored, whatever flags another writer set. pymemcache's default does the
    same today; saying so keeps a pickle planted under its pickle flag from ever being
    unpickled should that default change."""

    def serialize(self, key: object, value: bytes) -> tuple[bytes, int]:
        return value, 0

    def deserialize(self, key: object, value: bytes, flags: int) -> bytes:
        return value


#: What one node held at the generation key. (Functional form: with postponed
#: annotations, a class form has typing compile each field's annotation at import.)
_Reading = NamedTuple(  # noqa: UP014
    "_Reading",
    [
        ("node", str),
        ("client", Any),
        ("value", bytes | None),
        ("token", bytes | None),
        ("number", int | None),
    ],
)


class MemcachedTier(ServerTier):
    """Entries in memcached, shared by every host that points at the same servers.

    ``servers`` is one ``"host:port"``, a list of them (keys spread with pymemcache's
    ``HashClient`` and rendezvous hashing; a node that fails is dropped at once, so its
    keys move to the live nodes, and tried again after ``dead_timeout`` seconds; with
    pymemcache's default ``retry_attempts=2`` a dead node's keys keep failing until it
    has failed three times), or a ready pymemcache client (used as given: it must be
    thread-safe if the cache is shared by threads, and should return values as bytes;
    the generation is read and written through its ``gets``, ``cas`` and ``add``, per
    node for a ``HashClient``).

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

    The generation is kept at ``<prefix>:gen`` on every node, and re-read from every
    live node at most every ``generation_ttl`` seconds (a lookup in between costs one
    get on one node). The largest valid value wins, and a node that misses it (it
    restarted, or was away during a clear) or holds anything but a generation of our
    shape (a foreign writer) is given it with ``add`` or ``cas``, so processes racing
    to repair it agree on one value. When no node holds a valid generation the tier
    keeps the one it was using (a new process starts a time-based one). So the death of
    any node splits nobody, and a foreign value at the key costs one re-read. A node
    that fails while the generation is read is skipped for ``dead_timeout`` seconds
    while another node answers. Building a tier connects to nothing.

    ``events`` counts what the tier noticed (see :data:`EVENTS`): values of another
    shape at the generation key (``generation_foreign``) and our replacements of them
    (``generation_replaced``), nodes that had lost the key (``generation_missing``) or
    lagged, and were repaired (``generation_repaired``), changes of the generation in
    use (``generation_changed``: a clear anywhere), node failures while reading or
    writing it (``generation_node_errors``), and entry values that were not bytes
    (``entry_not_bytes``: a ready client whose serde decodes; a miss). Counts only grow;
    exact in one thread, an increment may rarely be lost under threads.

    A child forked from the process (gunicorn ``--preload``, multiprocessing) does not
    share the parent's sockets: it closes its copies of them and opens its own on first
    use. A ready client is the application's to reset after a fork.

    Raises :class:`~tiered_bccache.ConfigurationError` for a malformed server, prefix or
    number.
    """

    _protocol = "memcached"
    _picklable_from = "server addresses"

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
        super().__init__(prefix, expire, generation_ttl, connect_timeout, timeout)
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
        given = given_addresses(
            servers, "servers", "server", "'host:port', a list of them or a client"
        )
        listed = [given] if isinstance(given, str) else given
        self._parsed: list[Server] = [parse_server(s) for s in listed or ()]
        #: node name -> time.monotonic() until which generation reads skip it
        self._down_until: dict[str, float] = {}
        name = "memcached:" + ",".join(listed) if listed else f"memcached:{type(servers).__name__}"
        self._start(listed, servers, name, EVENTS)

    # Named here for the API reference, which shows a class's own members.
    client = ServerTier.client
    generation = ServerTier.generation
    key = ServerTier.key
    clear = ServerTier.clear
    probe = ServerTier.probe

    def _open(self) -> tuple[Any, Callable[[], object]]:
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
            "serde": _RawBytes(),
        }
        if len(self._parsed) == 1:
            client = PooledClient(self._parsed[0], **common)
        else:
            client = HashClient(
                self._parsed,
                use_pooling=True,
                retry_attempts=self.retry_attempts,
                retry_timeout=1,
                dead_timeout=self.dead_timeout,
                ignore_exc=False,
                **common,
            )
        return client, client.close

    def _forked(self) -> None:
        super()._forked()
        self._down_until = {}

    def _inherited(self, client: Any) -> None:
        """Close the child's copies of the sockets of ``client`` (ours: a PooledClient,
        or a HashClient of them)."""
        # close(2) drops only the child's descriptor: the parent's connection stays open
        # and in use, where shutdown(2) would end it for both. The pools are read without
        # their locks, which a thread of the parent may have held at the fork.
        clients = getattr(client, "clients", None)
        for pooled in clients.values() if isinstance(clients, dict) else [client]:
            pool = pooled.client_pool
            for each in (*pool.free, *pool.used):
                each.close()

    # -- the namespace generation ------------------------------------------------------

    def _nodes(self) -> list[tuple[str, Any]]:
        """Every node's own client: a HashClient's per-server clients, or the one client.

        A HashClient keeps the client of a server it dropped, and builds a new one when
        the server rejoins: so the clients are looked up each time, and a dropped
        server's is left alone (connected again, it would be thrown away open), unless
        every server was dropped: then all are tried, or the tier could never recover."""
        clients = getattr(self.client, "clients", None)
        if not isinstance(clients, dict) or not clients:
            return [(self.name, self.client)]
        hashed = getattr(getattr(self.client, "hasher", None), "nodes", None)
        in_use = set(hashed) if isinstance(hashed, (list, set, tuple)) else set(clients)
        nodes = [(str(name), client) for name, client in clients.items() if name in in_use]
        return nodes or [(str(name), client) for name, client in clients.items()]

    def _live_nodes(self) -> list[tuple[str, Any]]:
        """The nodes not skipped after a failure; all of them when every one is."""
        nodes = self._nodes()
        now = time.monotonic()
        live = [(name, client) for name, client in nodes if self._down_until.get(name, 0) <= now]
        return live or nodes

    def _node_failed(self, node: str, exc: BaseException) -> None:
        self._down_until[node] = time.monotonic() + self.dead_timeout
        self.events["generation_node_errors"] += 1
        if len(self._nodes()) < 2:
            return  # the error reaches the cache, which logs it
        self._log.warning(
            "generation-node",
            "tiered_bccache: %s: node %s failed on the generation key (%r); its copy is "
            "skipped for %g s while another node answers",
            self.name,
            node,
            exc,
            self.dead_timeout,
        )

    def _read(self, nodes: list[tuple[str, Any]]) -> list[_Reading]:
        """What every node in ``nodes`` holds at the generation key; raises the last
        error when no node answered."""
        readings: list[_Reading] = []
        error: BaseException | None = None
        for node, client in nodes:
            try:
                value, token = client.gets(self._gen_key)
            except Exception as exc:
                self._node_failed(node, exc)
                error = exc
                continue
            number = self._generation.reading(value, f"{self._gen_key!r} on {node}")
            readings.append(_Reading(node, client, value, token, number))
        if not readings:
            assert error is not None
            raise error
        return readings

    def _write(self, readings: list[_Reading], target: int, *, force: bool = False) -> bool:
        """Give every node ``target`` unless it holds it or (without ``force``) a larger
        one. ``add`` where the key is missing and ``cas`` elsewhere, so a write lands only
        on what was read: False when another writer came in between (read again)."""
        payload = str(target).encode()
        settled = True
        for reading in readings:
            number = reading.number
            if number == target or (number is not None and number > target and not force):
                continue
            try:
                if reading.value is None:
                    stored = reading.client.add(self._gen_key, payload, expire=0, noreply=False)
                else:
                    stored = reading.client.cas(
                        self._gen_key, payload, reading.token, expire=0, noreply=False
                    )
            except Exception as exc:
                self._node_failed(reading.node, exc)
                continue
            if not stored:
                settled = False
            elif reading.value is not None and number is None:
                self.events["generation_replaced"] += 1
            else:
                self.events["generation_repaired"] += 1
        return settled

    def _bump(self, target: int, force: bool) -> bool:
        return self._write(self._read(self._live_nodes()), target, force=force)

    def _fetch_generation(self) -> str:
        """Read every live node, agree on the largest valid generation, and repair the
        nodes that hold anything else."""
        nodes = self._live_nodes()
        for _ in range(ROUNDS):
            readings = self._read(nodes)
            target = self._generation.choose(r.number for r in readings)
            if self._write(readings, target):
                break
        else:
            valid = [r.number for r in self._read(nodes) if r.number is not None]
            if not valid:
                raise ConnectionError(
                    f"memcached did not keep the generation key {self._gen_key!r}"
                )
            target = max(valid)
        return self._generation.agreed(target)

    # -- the Tier interface ------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self.key(key))
        if value is None or type(value) is bytes:
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        # Only a ready client whose serde decodes gets here: what it decoded is not
        # ours (bytes(5) would even make five zero bytes of it).
        self._generation.entry_not_bytes(value, "give it a serde that returns bytes")
        return None

    def set(self, key: str, value: bytes) -> None:
        if not self.client.set(self.key(key), value, expire=self.expire, noreply=False):
            raise ConnectionError(
                f"memcached did not store {len(value)} bytes (the server refused them, or "
                "pymemcache is skipping a node that failed)"
            )
        # After a restart of every node the generation key is gone; a process starting
        # now would pick a new generation and orphan what the running ones write.
        # Re-adding ours (a no-op while it exists) keeps them in agreement. Writes follow
        # compiles, and a reply is not awaited: this is cheap.
        payload = self._generation.current.encode()
        for node, client in self._live_nodes():
            try:
                client.add(self._gen_key, payload, expire=0, noreply=True)
            except Exception as exc:
                self._node_failed(node, exc)

    def delete(self, key: str) -> None:
        self.client.delete(self.key(key), noreply=False)

    # -- what the command line reports --------------------------------------------------

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows (see :meth:`ByteTier.describe
        <tiered_bccache.ByteTier.describe>`): the prefix, the namespace generation (None
        when no server answers), ``reachable`` and, when not, ``error`` (each server
        that failed, named when there are several), and under ``servers`` each server's
        own ``stats`` (for the whole server, every prefix): ``curr_items``, ``bytes``,
        ``limit_maxbytes``, ``evictions``, ``get_hits``, ``get_misses``, or its
        ``error``."""
        report: dict[str, object] = {"name": self.name, "kind": "memcached", "prefix": self.prefix}
        servers = self._server_stats()
        down = [
            f"{s['server']}: {s['error']}" if len(servers) > 1 else str(s["error"])
            for s in servers
            if not s["reachable"]
        ]
        try:
            report["generation"] = self.generation()
        except Exception as exc:
            report["generation"] = None
            down = down or [error_text(exc)]
        report["reachable"] = not down
        if down:
            report["error"] = "; ".join(down)
        report["servers"] = servers
        return report

    def _server_stats(self) -> list[dict[str, object]]:
        """The ``stats`` of every server, or the error that stopped it."""
        wanted = ("curr_items", "bytes", "limit_maxbytes", "evictions", "get_hits", "get_misses")
        clients = getattr(self.client, "clients", None)  # a HashClient holds one per server
        pairs = list(clients.items()) if isinstance(clients, dict) else [(self.name, self.client)]
        out: list[dict[str, object]] = []
        for server, client in pairs:
            name = str(server).removeprefix("memcached:")
            try:
                raw = client.stats()
            except Exception as exc:
                out.append({"server": name, "reachable": False, "error": error_text(exc)})
                continue
            values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
            row: dict[str, object] = {"server": name, "reachable": True}
            row.update({k: values.get(k) for k in wanted})
            out.append(row)
        return out

    def close(self) -> None:
        """Close the connections (they are reopened on the next use)."""
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()
