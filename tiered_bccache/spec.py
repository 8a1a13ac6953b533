"""Tier specs: a cache described on the command line, one short string per tier.

A cache is either an object of the application, named ``module:attribute`` (a
:class:`~tiered_bccache.TieredBytecodeCache`, or a ``jinja2.Environment`` whose
``bytecode_cache`` is one), or a list of tier specs in lookup order, fastest first:

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
===================================== =======================================================

Sizes are a number of bytes with an optional suffix ``k``, ``M``, ``G`` (also ``KB``,
``MB``, ``GB``, ``KiB``, ``MiB``, ``GiB``; case-insensitive), all powers of 1024, as
memcached's ``-m`` counts: ``64MB`` is 67108864 bytes. A ``,name=value`` option at the end
of a filesystem spec is read as an option only when ``name`` is one the tier knows, so a
path may hold commas.

The list can live in the environment, as twelve-factor applications keep configuration:
``$TIERED_BCCACHE_TIERS`` holds the specs separated by whitespace (spaces or newlines; so
a path in a spec cannot hold a space), read by :func:`from_specs` when it is given no list.

Example::

    cache = from_specs(["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"],
                       secret=key)
    cache = from_specs()  # TIERED_BCCACHE_TIERS="memory:512 fs:/var/cache/app redis://..."
    cache = load_cache("myapp.templating:env", [])
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jinja2 import Environment

from .autoconfig import TIERS_ENV_VAR
from .cache import TieredBytecodeCache
from .errors import ConfigurationError
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
    "from_specs",
    "load_cache",
    "load_object",
    "parse_size",
    "parse_tier",
    "split_specs",
]


class SpecError(ConfigurationError):
    """Raised when a tier spec or a ``module:attribute`` target is wrong; the message
    quotes the offending text and says what was expected."""


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


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
    kind, _, rest = spec.strip().partition(":")
    try:
        if kind == "memory":
            return _memory(rest)
        if kind in ("fs", "filesystem"):
            return _filesystem(rest)
        if kind == "memcached":
            return _memcached(rest, memcached_timeout)
        if kind in ("redis", "rediss", "redis+unix", "redis+cluster"):
            return _redis(spec.strip(), redis_timeout)
    except SpecError as exc:
        raise SpecError(f"tier {spec!r}: {exc}") from None
    except ConfigurationError as exc:
        raise SpecError(f"tier {spec!r}: {exc}") from exc
    raise SpecError(
        f"tier {spec!r}: unknown kind {kind!r}; expected memory[:...], fs[:PATH], "
        "memcached:HOST:PORT, redis://HOST:PORT/DB, rediss://HOST:PORT/DB, "
        "redis+unix:///PATH or redis+cluster://HOST:PORT,..."
    )


def _memory(rest: str) -> MemoryTier:
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


def _filesystem(rest: str) -> FileSystemTier:
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


def _seconds(text: str, *, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SpecError(f"{what}: {text!r} is not a positive number of seconds")
    return value


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
            kwargs[name] = _seconds(value, what=name)
            if name == "timeout" and not any(o.startswith("connect_timeout=") for o in options):
                kwargs["connect_timeout"] = kwargs[name]
        else:
            raise SpecError(
                f"unknown option {option!r}; expected ;prefix=NAME, ;timeout=SECONDS or "
                ";connect_timeout=SECONDS"
            )
    return kwargs


def _memcached(rest: str, timeout: float | None) -> MemcachedTier:
    # memcached://HOST:PORT, as URLs are written, is the same as memcached:HOST:PORT (a
    # unix socket is memcached:/path, one slash).
    if rest.startswith("//"):
        rest = rest[2:]
        if not rest or rest.startswith("/"):
            raise SpecError("expected memcached://HOST:PORT (or memcached:/path/to.sock)")
    servers, *options = rest.split(";")
    kwargs = _remote_options(options, timeout)
    addresses = [s.strip() for s in servers.split(",") if s.strip()]
    if not addresses:
        raise SpecError("expected memcached:HOST:PORT[,HOST:PORT...][;prefix=NAME]")
    return MemcachedTier(addresses if len(addresses) > 1 else addresses[0], **kwargs)


def _redis(spec: str, timeout: float | None) -> RedisTier:
    from .tiers.redis import RedisTier

    url, *options = spec.split(";")
    kwargs = _remote_options(options, timeout)
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


def split_specs(text: str) -> list[str]:
    """The specs in ``text``, separated by whitespace (as ``$TIERED_BCCACHE_TIERS``
    holds them)."""
    return text.split()


def from_specs(
    specs: Sequence[str] | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **cache_options: Any,
) -> TieredBytecodeCache:
    """A :class:`~tiered_bccache.TieredBytecodeCache` over the tiers ``specs`` describe,
    fastest first (the syntax is in this module's docstring)::

        cache = from_specs(["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"],
                           secret=key)

    ``specs`` is a list of specs, or one string of specs separated by whitespace; None
    (the default) reads that string from ``$TIERED_BCCACHE_TIERS`` in ``environ``
    (default ``os.environ``). ``cache_options`` go to the cache unchanged (``secret``,
    ``strict``, ``breaker_cooldown``...; without ``secret`` the cache reads
    ``$TIERED_BCCACHE_SECRET``).

    Raises :class:`SpecError` (a :class:`~tiered_bccache.ConfigurationError`) naming the
    spec that is wrong, or when no spec is given; the cache's own configuration errors
    pass through (:class:`~tiered_bccache.InsecureConfigurationError` for a shared tier
    without a secret).
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
    tiers = [parse_tier(spec) for spec in specs]
    return TieredBytecodeCache(tiers, **cache_options)


def load_object(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) and return the object.
    The current directory is importable, as it is for ``python -m``.

    Raises :class:`SpecError` when the text is malformed, the module does not import, or
    the attribute is missing.
    """
    if _TARGET.fullmatch(target) is None:
        raise SpecError(f"{target!r} is not module:attribute (e.g. myapp.templating:env)")
    module_name, _, attribute = target.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(
            f"cannot import {module_name!r} (from {target!r}): {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(
                f"{target!r}: {type(obj).__name__} {module_name!r} has no attribute {part!r}"
            ) from None
    return obj


def cache_of(obj: object, target: str) -> TieredBytecodeCache:
    """The cache ``obj`` is or uses; raises :class:`SpecError` naming ``target`` otherwise."""
    if isinstance(obj, TieredBytecodeCache):
        return obj
    if isinstance(obj, Environment):
        if isinstance(obj.bytecode_cache, TieredBytecodeCache):
            return obj.bytecode_cache
        held = type(obj.bytecode_cache).__name__ if obj.bytecode_cache is not None else "None"
        raise SpecError(
            f"{target!r} is a jinja2.Environment whose bytecode_cache is {held}, "
            "not a TieredBytecodeCache"
        )
    raise SpecError(
        f"{target!r} is a {type(obj).__name__}, not a TieredBytecodeCache or a "
        "jinja2.Environment using one"
    )


def load_cache(
    target: str | None,
    tier_specs: list[str],
    *,
    memcached_timeout: float | None = None,
    redis_timeout: float | None = None,
    **options: Any,
) -> TieredBytecodeCache:
    """The cache named by ``target`` (``module:attribute``), or built from ``tier_specs``
    (``memcached_timeout`` and ``redis_timeout`` as for :func:`parse_tier`).

    ``options`` go to :class:`~tiered_bccache.TieredBytecodeCache` when the cache is built
    from specs (``secret``, ``allow_unsigned``, ``trace``...); options left at None or
    False are not passed. A cache named by ``module:attribute`` is the application's own,
    configured by it: giving options with one is an error, not silently ignored.

    Raises :class:`SpecError` when both or neither of ``target`` and ``tier_specs`` are
    given, for a bad spec or target, and when the cache refuses its configuration
    (:class:`~tiered_bccache.InsecureConfigurationError` passes through unchanged, so a
    caller can tell a missing secret apart).
    """
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    if target is not None and tier_specs:
        raise SpecError("name the cache either as module:attribute or with tier specs, not both")
    if target is not None:
        if given:
            raise SpecError(
                f"{', '.join(sorted(given))} cannot apply to {target!r}: the application "
                "configures its own cache"
            )
        return cache_of(load_object(target), target)
    if not tier_specs:
        raise SpecError("no cache given: name one as module:attribute or with tier specs")
    tiers = [
        parse_tier(spec, memcached_timeout=memcached_timeout, redis_timeout=redis_timeout)
        for spec in tier_specs
    ]
    try:
        return TieredBytecodeCache(tiers, **given)
    except SpecError:
        raise
    except ConfigurationError as exc:
        if type(exc) is not ConfigurationError:
            raise
        raise SpecError(str(exc)) from exc
