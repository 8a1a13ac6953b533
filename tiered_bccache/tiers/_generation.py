"""The namespace generation of the fleet tiers (memcached, Redis): what they share.

Every key a fleet tier writes is ``<prefix>:<generation>:<key>``. The generation is a
number kept on the servers at ``<prefix>:gen``; ``clear()`` bumps it, so the old keys
are never read again and age out (the servers are never flushed: other applications
may share them). Each process caches the generation for ``generation_ttl`` seconds.

Anything at ``<prefix>:gen`` but a generation of the one shape the tiers write is
foreign (another application, a typo'd prefix, an attacker) and is replaced. When no
server holds a valid generation, a tier keeps the one it was using, so that entries
written since stay visible; a new process starts a time-based one.

This module holds the logic and the bookkeeping, and does no I/O: a tier reads and
writes ``<prefix>:gen`` with its own protocol (memcached's ``gets``/``cas``/``add`` on
every node, Redis's compare-and-set in Lua) and hands what it read to
:class:`Generation`, which checks its shape, chooses among readings, counts events and
logs foreign values. :func:`check_options` checks the options that shape the namespace
(prefix, expire, generation_ttl), and :func:`rebuild_options` gives what a pickled tier
is built again with.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigurationError
from ..stats import RateLimitedLog
from ._validate import positive_number

__all__ = [
    "EVENTS",
    "LIMIT",
    "ROUNDS",
    "Generation",
    "check_options",
    "describe",
    "fresh",
    "parse",
    "rebuild_options",
]

_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Printable ASCII, no space: valid in memcached and Redis. Not starting with "#", which
# marks a digest, so that a key that happens to be another key's digest never shares its
# item.
_SAFE_KEY = re.compile(r"(?!#)[!-~]{1,150}")

#: The one shape of a namespace generation, the shape the tiers write: ASCII digits, no
#: sign, no leading zero, at most 16 of them, below 2**53. A fleet starts at the time in
#: milliseconds (13 digits) and a clear adds one, so the bound is centuries away, and far
#: below memcached's 64-bit counters. Anything else at the key is foreign.
_SHAPE = re.compile(rb"[1-9][0-9]{0,15}")
LIMIT = 2**53
#: Rounds of read-then-write before giving up on agreeing with writers racing us.
ROUNDS = 4

#: The events every fleet tier counts about its generation, in a tier's ``events``:
#: the key missing on a server (``generation_missing``: a restart, an eviction), a value
#: of another shape there (``generation_foreign``) and our replacements of it
#: (``generation_replaced``), the key put back where it was missing or lagged
#: (``generation_repaired``), and changes of the generation in use
#: (``generation_changed``: a clear anywhere). A tier adds its own after these.
EVENTS = (
    "generation_missing",
    "generation_foreign",
    "generation_replaced",
    "generation_repaired",
    "generation_changed",
)


def check_options(prefix: object, expire: object, ttl: object) -> tuple[str, int, float]:
    """A fleet tier's namespace options, checked: ``prefix`` starts every key (1-64
    characters of [A-Za-z0-9_.:-]), ``expire`` is the seconds an entry lives (0: for
    ever; it is what makes a cleared generation's entries go away), ``ttl`` (the tier's
    ``generation_ttl``) how long a process uses the generation before reading it again
    (0: at every use)."""
    if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
        raise ConfigurationError(
            f"prefix must be 1-64 characters of [A-Za-z0-9_.:-], got {prefix!r}"
        )
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
        raise ConfigurationError(f"expire must be a non-negative integer (seconds), got {expire!r}")
    return prefix, expire, positive_number("generation_ttl", ttl, allow_zero=True)


def rebuild_options(tier: object) -> dict[str, Any]:
    """The options a pickled ``tier`` is built again with: every keyword-only argument
    of its class, read from the attribute of the same name (each fleet tier keeps its
    options so, checked), so that no option can be left out of a copy."""
    import inspect  # only when pickling

    parameters = inspect.signature(type(tier)).parameters.values()
    return {p.name: getattr(tier, p.name) for p in parameters if p.kind is p.KEYWORD_ONLY}


def parse(value: object) -> int | None:
    """The generation ``value`` holds, or None when it is not of our shape."""
    if not isinstance(value, (bytes, bytearray)) or _SHAPE.fullmatch(value) is None:
        return None
    number = int(value)
    return number if number < LIMIT else None


def describe(value: object) -> str:
    """A short, safe description of a foreign value (it may be a megabyte of anything)."""
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes: {bytes(value[:32])!r}"
    return f"a {type(value).__name__}"


def fresh() -> int:
    """A new generation. Time-based, so that a fleet starting over never reuses an old
    namespace's number."""
    return time.time_ns() // 1_000_000


class Generation:
    """One tier's namespace generation: the one in use, when it was last read, the
    tier's ``events`` and its rate-limited log.

    ``tier`` is the tier's name (for logs), ``events`` the names the tier counts (those
    of :data:`EVENTS` first), ``ttl`` the tier's ``generation_ttl``. The tier passes its
    own way of reading the servers to :meth:`get`, and holds :attr:`lock` while it
    clears.
    """

    def __init__(
        self,
        tier: str,
        prefix: str,
        *,
        ttl: float,
        events: Iterable[str],
        log: RateLimitedLog,
    ) -> None:
        self.tier = tier
        self.prefix = prefix
        #: Where the servers keep the generation.
        self.key = f"{prefix}:gen"
        self.ttl = ttl
        #: The generation in use; "" until first read.
        self.current = ""
        self._checked = -1.0e9
        #: Held while the generation is read from the servers or bumped.
        self.lock = threading.Lock()
        #: What the tier noticed, all from 0; counts only grow (exact in one thread, an
        #: increment may rarely be lost under threads).
        self.events: dict[str, int] = dict.fromkeys(events, 0)
        self.log = log

    # -- the generation in use ---------------------------------------------------------

    def get(self, fetch: Callable[[], str]) -> str:
        """The generation in use, re-read with ``fetch`` (the tier's own read of the
        servers) at most every ``ttl`` seconds."""
        if time.monotonic() - self._checked < self.ttl:
            return self.current
        # While one thread re-reads it, the others go on with the generation they have
        # rather than queue behind a slow server.
        if not self.lock.acquire(blocking=not self.current):
            return self.current
        try:
            if time.monotonic() - self._checked >= self.ttl:
                self.current = fetch()
                self._checked = time.monotonic()
            return self.current
        finally:
            self.lock.release()

    def entry_key(self, key: str, generation: str) -> str:
        """The server key for the entry ``key`` under ``generation``: printable ASCII
        without spaces, at most 232 characters, whatever ``key`` holds."""
        if _SAFE_KEY.fullmatch(key) is None:
            key = "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}:{generation}:{key}"

    # -- reading it ----------------------------------------------------------------------

    def reading(self, value: object, where: str, description: str | None = None) -> int | None:
        """The generation in ``value``, what a server held at :attr:`key` (None: no
        key), or None when it is missing or foreign. Counts either, and logs a foreign
        value (rate-limited). ``where`` names the key (and the node) for the log;
        ``description`` replaces :func:`describe`'s of ``value``."""
        if value is None:
            self.events["generation_missing"] += 1
            return None
        number = parse(value)
        if number is None:
            self.events["generation_foreign"] += 1
            self.log.warning(
                "generation-foreign",
                "tiered_bccache: %s: foreign value at %s (%s); replacing it with a generation",
                self.tier,
                where,
                description or describe(value),
            )
        return number

    def choose(self, numbers: Iterable[int | None]) -> int:
        """The generation to agree on, given what the servers hold (None: missing or
        foreign): the largest valid one. When there is none (lost everywhere: a
        restart, an eviction, a foreign writer), the one in use, so that entries written
        since stay visible; a new process starts a fresh one."""
        valid = [n for n in numbers if n is not None]
        if valid:
            return max(valid)
        return int(self.current) if self.current else fresh()

    def agreed(self, number: int) -> str:
        """``number``, read and agreed on, as the generation in keys; counts a change
        from the one in use (a clear somewhere)."""
        generation = str(number)
        if self.current and generation != self.current:
            self.events["generation_changed"] += 1
        return generation

    # -- clearing ------------------------------------------------------------------------

    def bumped(self, agreed: str) -> tuple[int, bool]:
        """The generation a clear writes after ``agreed``: one past it, and False. Past
        :data:`LIMIT` (only a foreign writer gets there), a fresh one, and True: it is
        written even over larger values."""
        target = int(agreed) + 1
        if target >= LIMIT:
            return fresh(), True
        return target, False

    def cleared(self, target: int) -> None:
        """Use ``target``, which this process wrote; re-read at the next use."""
        self.current = str(target)
        self._checked = -1.0e9

    # -- foreign entries -----------------------------------------------------------------

    def entry_not_bytes(self, value: object, advice: str) -> None:
        """Count and log (rate-limited) an entry the client decoded into something other
        than bytes: not ours, a miss. ``advice`` says how to build the client instead."""
        self.events["entry_not_bytes"] += 1
        self.log.warning(
            "entry-not-bytes",
            "tiered_bccache: %s: the client decoded an entry into %s; a miss (%s)",
            self.tier,
            type(value).__name__,
            advice,
        )
