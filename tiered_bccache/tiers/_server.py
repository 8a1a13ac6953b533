"""What the tiers on servers (memcached, Redis) share beyond the namespace generation:
addresses or a ready client, our client and its closing, forks, pickling, clearing,
probing. A tier subclasses :class:`ServerTier`, and implements its ``_open``,
``_fetch_generation`` and ``_bump``, the byte-tier methods with its own protocol, and
``describe`` with its servers' own figures."""

from __future__ import annotations

import functools
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from ..errors import ConfigurationError
from ..stats import RateLimitedLog
from ._fork import reset_in_forked_children
from ._generation import ROUNDS, Generation, check_options, rebuild_options
from ._validate import positive_number

__all__ = [
    "Server",
    "ServerTier",
    "error_text",
    "given_addresses",
    "parse_server",
    "without_password",
]

_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})"
)

Server = tuple[str, int] | str
#: What a tier was given: one address, a list of them, or None for a ready client.
Addresses = str | list[str] | None


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


def given_addresses(given: object, argument: str, one: str, expected: str) -> Addresses:
    """What a tier was given as its ``argument``: one address (a string), a non-empty
    list of them, or None for a ready client (anything with a ``get`` and a ``set``).
    ``one`` names an address, ``expected`` all that is accepted, for the errors."""
    if isinstance(given, str):
        return given
    if isinstance(given, Sequence) and not isinstance(given, (bytes, bytearray)):
        listed = list(given)
        if not listed:
            raise ConfigurationError(f"{argument} must name at least one {one}")
        return listed
    if callable(getattr(given, "get", None)) and callable(getattr(given, "set", None)):
        return None
    raise ConfigurationError(f"{argument}: expected {expected}, got {given!r}")


def without_password(url: str) -> str:
    """``url`` as it may appear in logs and stats: no password."""
    return re.sub(r"//[^@/]*@", "//", url)


def error_text(exc: BaseException) -> str:
    """``TypeName: message``, or the type's name alone when the message is empty: how a
    tier's ``describe`` reports a server that did not answer."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ServerTier:
    """The base of the tiers on servers. A subclass checks its options, then calls
    :meth:`_start`; options it keeps under their own names are what a pickled tier is
    built again with (:func:`~tiered_bccache.tiers._generation.rebuild_options`)."""

    remote = True
    holds_objects: ClassVar[bool] = False
    #: How errors name the protocol.
    _protocol: ClassVar[str]
    #: What a tier on a ready client, which cannot be pickled, should be given instead.
    _picklable_from: ClassVar[str]

    def __init__(
        self, prefix: str, expire: int, ttl: float, connect: float, timeout: float
    ) -> None:
        self.prefix, self.expire, self.generation_ttl = check_options(prefix, expire, ttl)
        self.connect_timeout = positive_number("connect_timeout", connect)
        self.timeout = positive_number("timeout", timeout)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._closer: weakref.finalize[..., Any] | None = None

    def _start(
        self, addresses: Addresses, client: Any, name: str, events: Iterable[str], now: bool = True
    ) -> None:
        """Use ``addresses``, with our client built ``now`` or else on first use, or
        ``client`` when they are None."""
        self._addresses = addresses
        if addresses is None:
            self._client = client
        elif now:
            self._client = self._connect()
        self.name = name
        self._log = RateLimitedLog()
        self._generation = Generation(
            name, self.prefix, ttl=self.generation_ttl, events=events, log=self._log
        )
        self._gen_key = self._generation.key
        self.events = self._generation.events
        reset_in_forked_children(self)

    # -- the client --------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The tier's client (pymemcache's, redis-py's): the one given, or ours (in a
        forked child, its own, built on first use)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    def _connect(self) -> Any:
        client, close = self._open()
        # Connections we opened are closed when the tier goes away.
        self._closer = weakref.finalize(self, close)
        return client

    def _open(self) -> tuple[Any, Callable[[], object]]:
        """A new client for the addresses, and what closes its connections."""
        raise NotImplementedError

    def _forked(self) -> None:
        """In a child just forked (its only thread): forget the parent's client and
        locks; the child's own client is built on first use. A ready client is the
        application's to reset."""
        # A thread of the parent may have held these locks at the fork; the child has no
        # thread to release them.
        self._client_lock = threading.Lock()
        self._generation.lock = threading.Lock()
        if self._addresses is None:
            return
        client, self._client = self._client, None
        if self._closer is not None:
            self._closer.detach()
        if client is not None:
            self._inherited(client)

    def _inherited(self, client: Any) -> None:
        """The child's copy of the parent's ``client``, after a fork: dropped, for a client
        that notices a fork itself (redis-py's pools close a connection found in another
        process without shutdown(2), leaving the parent's as it is)."""

    def __repr__(self) -> str:
        shown = self._addresses
        if isinstance(shown, str):
            shown = without_password(shown)
        return f"{type(self).__name__}({shown!r}, prefix={self.prefix!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._addresses is None:
            raise TypeError(
                f"a {type(self).__name__} built on a ready client cannot be pickled; "
                f"pass {self._picklable_from}"
            )
        # Rebuilt by calling the class again with the same arguments.
        return functools.partial(type(self), **rebuild_options(self)), (self._addresses,)

    # -- the namespace generation ------------------------------------------------------

    def generation(self) -> str:
        """The namespace generation in every key, re-read from the servers at most every
        ``generation_ttl`` seconds; :meth:`clear` bumps it."""
        return self._generation.get(self._fetch_generation)

    def _fetch_generation(self) -> str:
        """The generation read from the servers, put back where it is missing or foreign."""
        raise NotImplementedError

    def _bump(self, target: int, force: bool) -> bool:
        """One round of a clear: ``target`` written over smaller generations (any, with
        ``force``); False when another writer came in between."""
        raise NotImplementedError

    def probe(self) -> None:
        """Read the namespace generation, as every lookup does: raises what the client
        raises when no server answers. (One read within the last ``generation_ttl``
        seconds is used instead: a probe of a new tier always asks the servers.)"""
        self.generation()

    def key(self, key: str) -> str:
        """The key on the servers for ``key``: valid whatever ``key`` holds (at most 250
        bytes, printable ASCII without spaces)."""
        return self._generation.entry_key(key, self.generation())

    def clear(self) -> None:
        """Bump the generation wherever the live servers keep it: one past the agreed
        one. Clears racing each other may make one bump, which clears for all of them."""
        with self._generation.lock:
            target, force = self._generation.bumped(self._fetch_generation())
            for _ in range(ROUNDS):
                if self._bump(target, force):
                    break
            else:
                raise ConnectionError(
                    f"{self._protocol}: could not bump {self._gen_key!r}: other writers kept racing"
                )
            self._generation.cleared(target)
