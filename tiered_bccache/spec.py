"""Tier specs: a cache described on the command line, one short string per tier.

A cache is either an object of the application, named ``module:attribute`` (a
:class:`~tiered_bccache.TieredBytecodeCache`, or a ``jinja2.Environment`` whose
``bytecode_cache`` is one), which the command line imports, or a list of tier specs in
lookup order, fastest first, which this module reads:

===================================== =======================================================
``memory``                            :class:`~tiered_bccache.MemoryTier` with its defaults
``memory:512``                        at most 512 entries (``memory:entries=512`` says the same)
``memory:bytes=64MB``                 at most 64 MB of marshalled code (``memory:512,bytes=64M``)
``fs``                                :class:`~tiered_bccache.FileSystemTier` in the private
                                      per-user default directory
``fs:/path``                          entries as files in ``/path``
``fs:/path,max_bytes=1GB``            ... pruned to stay under 1 GB
``memcached:host:port``               :class:`~tiered_bccache.MemcachedTier` on one server
``memcached:h1:port,h2:port``         a cluster (keys spread by rendezvous hashing)
``memcached:host:port;prefix=NAME``   keys under ``NAME`` instead of ``tbc``
``memcached:host:port;timeout=0.5``   connect and read timeouts in seconds (also
                                      ``;connect_timeout=S``); options chain with ``;``
``redis://host:port/db``              :class:`~tiered_bccache.RedisTier` on one server (the
                                      URL as redis-py reads it: ``redis://:password@...``)
``rediss://host:port/db``             ... over TLS
``redis+unix:///path/redis.sock``     ... on a unix socket (``?db=N`` picks the database)
``redis+cluster://h1:port,h2:port``   a Redis Cluster, from any of its nodes
``redis://host:port/0;prefix=NAME``   the same ``;prefix=``, ``;timeout=``,
                                      ``;connect_timeout=`` options as memcached's
``sqlite:/path/cache.db``             :class:`~tiered_bccache.tiers.sqlite.SQLiteTier`: one
                                      SQLite file shared by the host's processes
``sqlite:/path/db;max_entries=N``     ... pruned to the N most recent writes (also
                                      ``;timeout=S``, the busy timeout)
===================================== =======================================================

Sizes are a number of bytes with an optional suffix ``k``, ``M``, ``G`` (also ``KB``,
``MB``, ``GB``, ``KiB``, ``MiB``, ``GiB``; case-insensitive), all powers of 1024, as
memcached's ``-m`` counts: ``64MB`` is 67108864 bytes. A ``,name=value`` option at the end
of a filesystem spec is read as an option only when ``name`` is one the tier knows, so a
path may hold commas.

The list can live in the environment, as twelve-factor applications keep configuration:
``$TIERED_BCCACHE_TIERS`` holds the specs separated by whitespace (spaces or newlines; so
a path in a spec cannot hold a space), read by :func:`parse_specs` when it is given no list.

This module builds the tiers, never the cache (it does not import it):
:func:`~tiered_bccache.from_specs` and ``TieredBytecodeCache.from_specs`` put the tiers
:func:`parse_specs` returns under one.

Example::

    tiers = parse_specs(["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"])
    tiers = parse_specs()  # TIERED_BCCACHE_TIERS="memory:512 fs:/var/cache/app redis://..."
    cache = TieredBytecodeCache(tiers, secret=key)  # what from_specs(secret=key) does
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .autoconfig import TIERS_ENV_VAR
from .errors import ConfigurationError
from .tiers._validate import seconds_option
from .tiers.base import Tier
from .tiers.filesystem import FileSystemTier
from .tiers.memcached import MemcachedTier
from .tiers.memory import MemoryTier

if TYPE_CHECKING:
    from .tiers.redis import RedisTier

__all__ = [
    "TIERS_ENV_VAR",
    "SpecError",
    "filesystem_options",
    "parse_size",
    "parse_specs",
    "parse_tier",
    "split_specs",
]


class SpecError(ConfigurationError):
    """Raised when a tier spec or a ``module:attribute`` target is wrong; the message
    quotes the offending text and says what was expected."""


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str, *, what: str = "size") -> int:
    """``"64MB"`` -> 67108864: a byte count with an optional k/M/G suffix (powers of 1024).

    Raises :class:`SpecError` for anything else, or a size of zero.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise SpecError(
            f"{what}: {text!r} is not a size (a number of bytes, optionally with a "
            "k/M/G or KB/MB/GB suffix, e.g. 64MB)"
        )
    unit = (match[2] or "").lower()
    value = float(match[1]) * _UNITS[unit]
    if value < 1 or (value != int(value) and not unit):
        raise SpecError(f"{what}: {text!r} must be a whole, positive number of bytes")
    return int(value)


def _count(text: str, *, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise SpecError(f"{what}: {text!r} is not a positive integer")
    return int(text)


def parse_tier(
    spec: str, *, memcached_timeout: float | None = None, redis_timeout: float | None = None
) -> Tier:
    """Build one tier from its spec (see the module docstring for the syntax).

    ``memcached_timeout`` and ``redis_timeout`` replace the remote tiers' default
    timeouts (tens of milliseconds, sized for a page render) where the spec sets none: a
    command-line tool would rather wait than count a busy server as down.

    Raises :class:`SpecError` naming the spec for an unknown kind, a malformed option or
    size, or an argument the tier refuses.
    """
    if not isinstance(spec, str):
        raise SpecError(f"tier {spec!r}: a spec is a string, not a {type(spec).__name__}")
    text = spec.strip()
    kind, _, rest = text.partition(":")
    known = _KINDS.get(kind)
    if known is None:
        forms = [form for _, form in _KINDS.values() if form]
        raise SpecError(
            f"tier {spec!r}: unknown kind {kind!r}; expected {', '.join(forms[:-1])} or {forms[-1]}"
        )
    try:
        return known[0](text, rest, _Timeouts(memcached_timeout, redis_timeout))
    except SpecError as exc:
        raise SpecError(f"tier {spec!r}: {exc}") from None
    except ConfigurationError as exc:
        raise SpecError(f"tier {spec!r}: {exc}") from exc


#: The remote tiers' timeouts :func:`parse_tier` was given, for a spec setting none.
#: (Functional form: with postponed annotations, a class form has typing compile each
#: field's annotation in every process that reads a spec.)
_Timeouts = NamedTuple("_Timeouts", [("memcached", float | None), ("redis", float | None)])  # noqa: UP014


def _memory(spec: str, rest: str, timeouts: _Timeouts) -> MemoryTier:
    if not rest:
        return MemoryTier()
    entries: int | None = None
    max_bytes: int | None = None
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq:
            name, value = "entries", name
        if name in ("entries", "max_entries"):
            entries = _count(value, what="max_entries")
        elif name in ("bytes", "max_bytes"):
            max_bytes = parse_size(value, what="max_bytes")
        else:
            raise SpecError(f"unknown option {name!r}; expected a count, entries=N or bytes=SIZE")
    return MemoryTier(entries, max_bytes=max_bytes)


def _filesystem(spec: str, rest: str, timeouts: _Timeouts) -> FileSystemTier:
    directory, max_bytes = filesystem_options(rest)
    return FileSystemTier(directory, max_bytes=max_bytes)


def filesystem_options(rest: str) -> tuple[str | None, int | None]:
    """What an ``fs:`` spec says after its colon, read without building the tier (which
    creates its directory): the directory (None for the default) and ``max_bytes``.

    Raises :class:`SpecError` for an option the tier does not know or a bad size."""
    parts = rest.split(",")
    max_bytes: int | None = None
    # Options come last, each ,NAME=VALUE with NAME a word; anything before them,
    # commas included, is the path. A word the tier does not know is a typo, never
    # part of a directory name (a path ending in ,word=... needs a trailing /).
    while len(parts) > 1:
        option = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=(.*)", parts[-1])
        if option is None:
            break
        if option[1] != "max_bytes":
            raise SpecError(f"unknown option {option[1]!r}; expected fs:PATH,max_bytes=SIZE")
        max_bytes = parse_size(option[2], what="max_bytes")
        parts.pop()
    path = ",".join(parts)
    return (os.path.expanduser(path) if path else None), max_bytes


def _remote_options(options: list[str], timeout: float | None) -> dict[str, Any]:
    """``;prefix=NAME``, ``;timeout=S``, ``;connect_timeout=S`` as keyword arguments."""
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = kwargs["connect_timeout"] = timeout
    for option in options:
        name, eq, value = option.strip().partition("=")
        if name == "prefix" and eq:
            kwargs["prefix"] = value
        elif name in ("timeout", "connect_timeout") and eq:
            kwargs[name] = seconds_option(name, value)
            if name == "timeout" and not any(o.startswith("connect_timeout=") for o in options):
                kwargs["connect_timeout"] = kwargs[name]
        else:
            raise SpecError(
                f"unknown option {option!r}; expected ;prefix=NAME, ;timeout=SECONDS or "
                ";connect_timeout=SECONDS"
            )
    return kwargs


def _memcached(spec: str, rest: str, timeouts: _Timeouts) -> MemcachedTier:
    # memcached://HOST:PORT, as URLs are written, is the same as memcached:HOST:PORT (a
    # unix socket is memcached:/path, one slash).
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest or rest.startswith("/"):
            raise SpecError("expected memcached://HOST:PORT (or memcached:/path/to.sock)")
    servers, *options = rest.split(";")
    kwargs = _remote_options(options, timeouts.memcached)
    addresses = [s.strip() for s in servers.split(",") if s.strip()]
    if not addresses:
        raise SpecError("expected memcached:HOST:PORT[,HOST:PORT...][;prefix=NAME]")
    return MemcachedTier(addresses if len(addresses) > 1 else addresses[0], **kwargs)


def _redis(spec: str, rest: str, timeouts: _Timeouts) -> RedisTier:
    # Imported here, not with the other tiers: a process that never names a redis tier
    # never pays for redis-py.
    from .tiers.redis import RedisTier

    url, *options = spec.split(";")
    kwargs = _remote_options(options, timeouts.redis)
    if url.startswith("redis+cluster://"):
        nodes = [n.strip() for n in url.removeprefix("redis+cluster://").split(",") if n.strip()]
        if not nodes:
            raise SpecError("expected redis+cluster://HOST:PORT[,HOST:PORT...]")
        return RedisTier(nodes, **kwargs)
    if url.startswith("redis+unix://"):
        url = "unix://" + url.removeprefix("redis+unix://")
    elif not url.startswith(("redis://", "rediss://")):
        raise SpecError(_REDIS_FORMS)
    _check_redis_url(url)
    return RedisTier(url, **kwargs)


_REDIS_FORMS = (
    "expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB, redis+unix:///PATH?db=N or "
    "redis+cluster://HOST:PORT,..."
)


def _check_redis_url(url: str) -> None:
    """What redis-py would refuse with a bare ValueError, or take silently (a database
    that is not a number reads as db 0): a SpecError here."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises for a port out of range or not a number)
    except ValueError as exc:
        raise SpecError(f"{exc}; {_REDIS_FORMS}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise SpecError(f"no host; {_REDIS_FORMS}")
    dbs = [parts.path.strip("/")] if parts.scheme != "unix" and parts.path.strip("/") else []
    dbs += parse_qs(parts.query).get("db", [])
    for db in dbs:
        if not db.isdigit():
            raise SpecError(f"database {db!r} is not a number; {_REDIS_FORMS}")


def _from_spec(path: str) -> _Parser:
    """The parser of a tier class that reads its own specs (a ``from_spec`` class
    method), named ``"module:Class"``: its module is imported when a spec of its kind is
    first parsed."""

    def parse(spec: str, rest: str, timeouts: _Timeouts) -> Tier:
        module, _, name = path.partition(":")
        tier: Tier = getattr(importlib.import_module(module), name).from_spec(spec)
        return tier

    return parse


_Parser = Callable[[str, str, _Timeouts], Tier]

#: Every kind of tier, by the text before the spec's first colon, one line each: its
#: parser (given the whole spec, the text after the kind's colon and the timeouts, it
#: returns the tier or raises SpecError saying what is wrong; parse_tier quotes the spec)
#: and the form an unknown kind's message lists (empty for an alias).
_KINDS: dict[str, tuple[_Parser, str]] = {
    "memory": (_memory, "memory[:...]"),
    "fs": (_filesystem, "fs[:PATH]"),
    "filesystem": (_filesystem, ""),
    "memcached": (_memcached, "memcached:HOST:PORT"),
    "redis": (_redis, "redis://HOST:PORT/DB"),
    "rediss": (_redis, "rediss://HOST:PORT/DB"),
    "redis+unix": (_redis, "redis+unix:///PATH"),
    "redis+cluster": (_redis, "redis+cluster://HOST:PORT,..."),
    "sqlite": (_from_spec("tiered_bccache.tiers.sqlite:SQLiteTier"), "sqlite:PATH"),
}


def split_specs(text: str) -> list[str]:
    """The specs in ``text``, separated by whitespace (as ``$TIERED_BCCACHE_TIERS``
    holds them)."""
    return text.split()


def parse_specs(
    specs: Sequence[str] | str | None = None, *, environ: Mapping[str, str] | None = None
) -> list[Tier]:
    """The tiers ``specs`` describe, fastest first (the syntax is in this module's
    docstring)::

        tiers = parse_specs(["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"])

    ``specs`` is a list of specs, or one string of specs separated by whitespace; None
    (the default) reads that string from ``$TIERED_BCCACHE_TIERS`` in ``environ``
    (default ``os.environ``).

    Raises :class:`SpecError` naming the spec that is wrong, or where none was given.
    """
    where = "specs"
    if specs is None:
        environ = os.environ if environ is None else environ
        specs = environ.get(TIERS_ENV_VAR, "")
        where = f"${TIERS_ENV_VAR}"
    if isinstance(specs, str):
        specs = split_specs(specs)
    specs = list(specs)
    if not specs:
        raise SpecError(f"{where}: no tier spec given (e.g. 'memory:512 fs:/var/cache/app')")
    return [parse_tier(spec) for spec in specs]
