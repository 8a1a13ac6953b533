"""TieredBytecodeCache: the walk down the tiers, promotion, write-through."""

from __future__ import annotations

import functools
import marshal
import os
import time
import types
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from hashlib import sha1
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, Template, nodes
from jinja2.bccache import Bucket, BytecodeCache

from .breaker import CircuitBreaker
from .entry import EntryCodec
from .errors import ConfigurationError, EntryError, TierError
from .fingerprint import Fingerprinter, autoescape_flag
from .secret import ENV_VAR, resolve_secret
from .stats import CacheStats, RateLimitedLog, TierCounters, logger, snapshot
from .tiers._validate import positive_int_or_none, positive_number
from .tiers.base import Tier

if TYPE_CHECKING:
    from filelock import FileLock  # imported when a lease is taken, not on a hit

    from .tiers.filesystem import FileSystemTier
    from .trace import TraceWriter

__all__ = ["TieredBytecodeCache"]


#: Beyond this many (fingerprint, name, filename) keys the key memo starts over.
_MAX_MEMO = 65536
#: Beyond this many strings seen but not yet stored, the count of sightings starts over.
_MAX_SIGHTINGS = 16384


class _Bucket(Bucket):
    """Jinja's bucket, with the source kept for the memory tier's exact comparison and the
    checksum computed only when a byte tier needs it."""

    def __init__(
        self,
        environment: Environment,
        key: str,
        source: str | None,
        slots: tuple[_Slot, ...],
    ) -> None:
        self.environment = environment
        self.key = key
        self.source = source
        #: The tiers this bucket may use (memory only for a private environment).
        self.slots = slots
        self._checksum: str | None = None
        self.code: types.CodeType | None = None

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            assert self.source is not None
            self._checksum = sha1(self.source.encode("utf-8")).hexdigest()
        return self._checksum

    @checksum.setter
    def checksum(self, value: str) -> None:
        self._checksum = value


class _EnvState:
    """What the cache computed once for one environment, and what it checks on every
    lookup to notice a setting changed after first use."""

    __slots__ = (
        "autoescape",
        "env_ref",
        "extensions",
        "filters",
        "finalize",
        "fingerprint",
        "is_async",
        "private",
        "slots",
        "tests",
    )

    def __init__(self, env: Environment, env_ref: weakref.ref[Environment]) -> None:
        self.env_ref = env_ref
        self.fingerprint = ""
        #: Some value could not be described: the fingerprint holds a token of this
        #: process, so entries stay in its memory tiers.
        self.private = False
        self.slots: tuple[_Slot, ...] = ()
        # Copies: comparing them with the live dicts notices a filter or test added,
        # removed or replaced by another function (identity, not only the count).
        self.filters = dict(env.filters)
        self.tests = dict(env.tests)
        self.extensions = len(env.extensions)
        self.autoescape = env.autoescape
        self.finalize = env.finalize
        self.is_async = env.is_async

    def matches(self, env: Environment) -> bool:
        """Whether ``env`` still has the settings the fingerprint was computed from
        (those users change after first use; others need ``cache.refresh``)."""
        return (
            self.env_ref() is env
            and self.autoescape is env.autoescape
            and self.finalize is env.finalize
            and self.is_async is env.is_async
            and self.extensions == len(env.extensions)
            and self.filters == env.filters
            and self.tests == env.tests
        )


class _Slot:
    """One tier as the cache drives it: its counters and, for a remote tier, a breaker."""

    __slots__ = (
        "breaker",
        "compress",
        "counters",
        "lease",
        "max_entry_size",
        "name",
        "objects",
        "tier",
    )

    def __init__(self, tier: Any, name: str, breaker: CircuitBreaker | None) -> None:
        self.tier = tier
        self.name = name
        self.objects = bool(getattr(tier, "holds_objects", False))
        self.compress = bool(getattr(tier, "compress", False))
        self.max_entry_size: int | None = getattr(tier, "max_entry_size", None)
        self.breaker = breaker
        lease = getattr(tier, "lease", None)
        self.lease: Callable[[str], FileLock] | None = lease if callable(lease) else None
        self.counters = TierCounters()


class TieredBytecodeCache(BytecodeCache):
    """A Jinja bytecode cache over an ordered list of tiers, fastest first.

    A lookup walks the tiers in order; the first valid entry for this template, this
    exact source and this environment's settings wins and is promoted into every tier
    above it. A dump writes through to every tier. Keys include a fingerprint of the
    settings that change generated code (see :mod:`tiered_bccache.fingerprint`), so one
    cache may serve differently configured environments.

    Arguments:
        tiers: the tiers, fastest first (any non-empty list; each instance once).
        secret: the MAC key for entries in byte tiers (at least 16 bytes, the same on
            every host sharing a remote tier); default ``$TIERED_BCCACHE_SECRET``, else a
            random host key in the first filesystem tier's directory.
        allow_unsigned: accept a remote tier without a secret. Unsafe: whoever can write
            to the tier runs code in the application.
        strict: raise tier failures as :class:`TierError` instead of isolating them.
        lease_timeout: how long a process waits for another process of the host that is
            compiling the same template (through the first tier offering ``lease``).
        breaker_threshold, breaker_cooldown: consecutive failures that open a remote
            tier's circuit breaker, and seconds before it is probed again.
        secret_env: the environment variable ``secret`` is read from when it is not
            given (``TIERED_BCCACHE_SECRET``).
        string_admission: how many times this process must compile a template string
            (see :meth:`from_string`) before it is stored; 1 stores every string.
        trace: a file to record an access trace to (for ``tiered-bccache tune``).

    Pickling: a copy is the configuration (tiers with empty memory and fresh
    connections). It carries ``secret`` when one was passed; a secret read from
    ``secret_env`` or a host key file is read again where the copy is loaded.

    Error handling:
        At construction, a wrong argument raises :class:`ConfigurationError` naming it
        (:class:`InsecureConfigurationError` for a remote tier with no secret).
        At lookup and dump, nothing raises into a render unless ``strict`` is set: an
        exception from a tier is counted in ``stats()``, logged to the
        ``tiered_bccache`` logger at most once per 30 s per tier and operation, and the
        walk goes on with the next tier (a dump still writes to the others). A remote
        tier that keeps failing is skipped by its circuit breaker. An entry that is
        corrupt, truncated, from another Python or Jinja version, signed with another
        key, or for an older source is a miss, counted as rejected and never
        unmarshalled; the template is compiled and the entry overwritten. With
        ``strict=True``, tier exceptions raise :class:`TierError` (rejected entries
        stay misses). The composite succeeds when the template renders; every failure
        is visible in ``stats()`` and the log.

    Example::

        cache = TieredBytecodeCache(
            [MemoryTier(max_entries=512), FileSystemTier("/var/cache/app/jinja")],
        )
        env = Environment(loader=FileSystemLoader("templates"), bytecode_cache=cache)
    """

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        secret: bytes | str | None = None,
        allow_unsigned: bool = False,
        strict: bool = False,
        lease_timeout: float = 2.0,
        breaker_threshold: int = 2,
        breaker_cooldown: float = 2.0,
        secret_env: str = ENV_VAR,
        string_admission: int = 2,
        trace: str | os.PathLike[str] | None = None,
    ) -> None:
        from .tiers.filesystem import FileSystemTier  # host key files, shared directories

        self._tiers = _check_tiers(tiers, FileSystemTier)
        if not isinstance(secret_env, str) or not secret_env:
            raise ConfigurationError(f"secret_env must name a variable, got {secret_env!r}")
        self._options: dict[str, Any] = {
            "secret": secret,
            "allow_unsigned": allow_unsigned,
            "strict": strict,
            "lease_timeout": lease_timeout,
            "breaker_threshold": breaker_threshold,
            "breaker_cooldown": breaker_cooldown,
            "secret_env": secret_env,
            "string_admission": string_admission,
        }
        if (
            isinstance(string_admission, bool)
            or not isinstance(string_admission, int)
            or string_admission < 1
        ):
            raise ConfigurationError(
                f"string_admission must be a positive integer, got {string_admission!r}"
            )
        self._string_admission = string_admission
        #: sha1 of a string -> times compiled here without being stored (bounded).
        self._sightings: dict[str, int] = {}
        self.strict = bool(strict)
        self.lease_timeout = positive_number("lease_timeout", lease_timeout, allow_zero=True)
        threshold = positive_int_or_none("breaker_threshold", breaker_threshold)
        cooldown = positive_number("breaker_cooldown", breaker_cooldown)
        byte_tiers = [t for t in self._tiers if not getattr(t, "holds_objects", False)]
        key = resolve_secret(
            secret,
            key_file_dirs=[t.directory for t in byte_tiers if isinstance(t, FileSystemTier)],
            unsigned_tiers=[_name(t) for t in byte_tiers if not isinstance(t, FileSystemTier)],
            allow_unsigned=bool(allow_unsigned),
            env_var=secret_env,
        )
        self._codec = EntryCodec(key)
        self._slots: tuple[_Slot, ...] = tuple(
            _Slot(
                tier,
                _name(tier),
                CircuitBreaker(failure_threshold=threshold or 2, cooldown=cooldown)
                if getattr(tier, "remote", False)
                else None,
            )
            for tier in self._tiers
        )
        self._lease_slot = next((s for s in self._slots if s.lease is not None), None)
        #: Where the entries of an environment that must not leave the process go.
        self._private_slots = tuple(s for s in self._slots if s.objects)
        self._fingerprinter = Fingerprinter()
        self._states: dict[int, _EnvState] = {}
        #: (fingerprint, name, filename) -> key; bounded, starts over when full.
        self._keys: dict[tuple[str, str, str | None], str] = {}
        self._log = RateLimitedLog()
        self._trace: TraceWriter | None = None
        self._reset_totals()
        if trace is not None:
            self.start_trace(trace)

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[str] | str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> TieredBytecodeCache:
        """A cache built from tier specs, fastest first (``["memory:512",
        "fs:/var/cache/app", "redis://10.0.0.5:6379/0"]``, or one whitespace-separated
        string); with none, from ``$TIERED_BCCACHE_TIERS``. ``options`` are this class's
        keyword arguments (``secret=``...). See :func:`tiered_bccache.spec.from_specs`
        for the syntax; a wrong spec raises ``ConfigurationError`` naming it."""
        from .spec import from_specs

        return from_specs(specs, environ=environ, **options)

    # -- pickling: a copy is the configuration, with empty memory and fresh connections --

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (list(self._tiers), self._options))

    def __repr__(self) -> str:
        return f"TieredBytecodeCache({list(self._tiers)!r})"

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The tiers, in lookup order."""
        return self._tiers

    # -- environments -------------------------------------------------------------------

    def _state(self, env: Environment) -> _EnvState:
        """The environment's state, computed again when it is missing or stale."""
        state = self._states.get(id(env))
        if state is not None and state.matches(env):
            return state
        digest, private = self._fingerprinter.fingerprint(env)
        env_id = id(env)
        # The weak reference forgets the environment when it goes away, so that a new
        # object that happens to get the same id() is never served its predecessor's
        # fingerprint. A state replaced by a refresh takes its reference with it.
        fresh = _EnvState(env, weakref.ref(env, functools.partial(self._forget, env_id)))
        fresh.fingerprint = digest
        fresh.private = private
        fresh.slots = self._private_slots if private else self._slots
        self._states[env_id] = fresh
        return fresh

    def _forget(self, env_id: int, ref: weakref.ref[Environment]) -> None:
        state = self._states.get(env_id)
        if state is not None and state.env_ref is ref:
            del self._states[env_id]

    def refresh(self, environment: Environment) -> None:
        """Recompute ``environment``'s fingerprint after changing a setting that the
        per-lookup check does not see (it sees filters and tests added, removed or
        replaced, extensions added, autoescape, finalize and async mode replaced)."""
        state = self._states.get(id(environment))
        if state is not None and state.env_ref() is environment:
            state.extensions = -1  # no longer matches: the next lookup recomputes

    def fingerprint(self, environment: Environment) -> str:
        """The digest of ``environment``'s code-generation settings used in keys."""
        return self._state(environment).fingerprint

    def _tier_key(self, state: _EnvState, env: Environment, name: str, filename: str | None) -> str:
        """The key of template ``name`` for environments with ``state``'s fingerprint,
        remembered per fingerprint (a new Environment configured like one seen reuses
        them; a callable autoescape is part of the fingerprint, so its answer for a name
        is too)."""
        memo = (state.fingerprint, name, filename)
        key = self._keys.get(memo)
        if key is None:
            if len(self._keys) >= _MAX_MEMO:
                self._keys.clear()
            flag = autoescape_flag(env, name)
            key = f"{state.fingerprint}{flag}-{self.get_cache_key(name, filename)}"
            self._keys[memo] = key
        return key

    # -- Jinja's interface ----------------------------------------------------------------

    def get_bucket(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> Bucket:
        """Look the template up in every tier; Jinja compiles when ``bucket.code`` is
        None and hands the bucket back to :meth:`set_bucket`. After a miss everywhere,
        when another process of the host may be compiling the same template, the
        compile happens here, under the template's lease (see the class docstring)."""
        state = self._state(environment)
        key = self._tier_key(state, environment, name, filename)
        bucket = _Bucket(environment, key, source, state.slots)
        self.lookups += 1
        code = self._memory_hit(key, source)
        if code is not None:
            self.hits += 1
            bucket.code = code
            return bucket
        size = self._load(bucket, source)
        if size is None and self._lease_slot is not None and not state.private:
            size = self._compile_under_lease(bucket, name, filename, source)
        if size is None:
            self.misses += 1
        else:
            self.hits += 1
            trace = self._trace
            if trace is not None:
                _record(trace, key, size)
        return bucket

    def from_string(
        self,
        environment: Environment,
        source: str | nodes.Template,
        globals: MutableMapping[str, Any] | None = None,
        template_class: type[Template] | None = None,
    ) -> Template:
        """What ``environment.from_string(source, globals, template_class)`` returns, with
        the code from the tiers when it is there: Jinja never gives a string to a bytecode
        cache, so applications that template strings in fresh environments (Ansible,
        dbt, Salt) otherwise compile every string every time.

        Keyed by the environment's fingerprint and a digest of the source (there is no
        name). A string that does not compile raises Jinja's ``TemplateSyntaxError``, as
        ``from_string`` does, and nothing is cached. One-off strings do not fill the
        shared tiers: a string is stored after it has been seen ``string_admission``
        times in this process (2 by default), unless a tier already holds it. A parsed
        ``nodes.Template`` is compiled as Jinja does, uncached.
        """
        if not isinstance(source, str):
            cls = template_class or environment.template_class
            code = environment.compile(source)
            return cls.from_code(environment, code, environment.make_globals(globals), None)
        code = self._string_code(environment, source)
        cls = template_class or environment.template_class
        return cls.from_code(environment, code, environment.make_globals(globals), None)

    def _string_code(self, environment: Environment, source: str) -> types.CodeType:
        state = self._state(environment)
        digest = sha1(source.encode("utf-8")).hexdigest()
        key = f"{state.fingerprint}{autoescape_flag(environment, None)}-s{digest}"
        self.string_lookups += 1
        code = self._memory_hit(key, source)
        if code is not None:
            self.string_hits += 1
            return code
        bucket = _Bucket(environment, key, source, state.slots)
        bucket.checksum = digest
        size = self._load(bucket, source)
        if size is not None and bucket.code is not None:
            self.string_hits += 1
            trace = self._trace
            if trace is not None:
                _record(trace, key, size)
            return bucket.code
        self.string_misses += 1
        code = environment.compile(source)  # raises as from_string does; nothing cached
        sightings = self._sightings.get(digest, 0) + 1
        if sightings < self._string_admission:
            if len(self._sightings) >= _MAX_SIGHTINGS:
                self._sightings.clear()
            self._sightings[digest] = sightings
            self.strings_not_admitted += 1
            trace = self._trace
            if trace is not None:
                _record(trace, key, 0)  # a lookup all the same; its size is not known
            return code
        self._sightings.pop(digest, None)
        raw = marshal.dumps(code)
        self.string_compiles += 1
        self._store(state.slots, key, source, digest, code, raw, None, promotion=False)
        trace = self._trace
        if trace is not None:
            _record(trace, key, len(raw))
        return code

    def _memory_hit(self, key: str, source: str) -> types.CodeType | None:
        """The hit path: when the first tier is a memory tier, a hit for the very same
        source costs one dict lookup and one string comparison (no hashing of the
        source). Anything else is the walk's business, counting included."""
        first = self._slots[0]
        if not first.objects:
            return None
        entry = first.tier.get(key)
        if entry is None or entry[0] != source:
            return None
        first.counters.hits += 1
        trace = self._trace
        if trace is not None:
            _record(trace, key, entry[3])
        code: types.CodeType = entry[2]
        return code

    def put(
        self,
        environment: Environment,
        name: str,
        filename: str | None,
        source: str,
        code: types.CodeType,
    ) -> None:
        """Write ``code``, compiled from ``source``, to every tier under the key a lookup
        of ``name`` in ``environment`` uses (what ``tiered-bccache warm`` does)."""
        state = self._state(environment)
        key = self._tier_key(state, environment, name, filename)
        bucket = _Bucket(environment, key, source, state.slots)
        bucket.code = code
        self.dump_bytecode(bucket)

    def set_bucket(self, bucket: Bucket) -> None:
        """Write freshly compiled code through to every tier."""
        self.dump_bytecode(bucket)

    def load_bytecode(self, bucket: Bucket) -> None:
        """Fill ``bucket.code`` from the first tier holding a valid entry (a no-op on a
        miss). Works for Jinja's own buckets too; for those, a callable autoescape is
        keyed by its identity, since the template name is not known."""
        if not isinstance(bucket, _Bucket):
            self._adopt(bucket)
        if self._load(bucket, getattr(bucket, "source", None)) is not None:
            self.hits += 1

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Write ``bucket.code`` to every tier (to memory tiers only for an environment
        whose settings cannot be described; see ``private`` in the fingerprint)."""
        code = bucket.code
        if code is None:
            return
        if not isinstance(bucket, _Bucket):
            self._adopt(bucket)
        elif bucket.slots is not self._private_slots:
            state = self._states.get(id(bucket.environment))
            if state is None or not state.matches(bucket.environment):
                # A setting changed between the lookup and this dump (a filter replaced
                # while the template compiled): the code was compiled with the new one,
                # so it goes under the new fingerprint, never under the old.
                self._rekey(bucket)
        raw = marshal.dumps(code)
        self.compiles += 1
        source = getattr(bucket, "source", None)
        slots: tuple[_Slot, ...] = getattr(bucket, "slots", self._slots)
        self._store(slots, bucket.key, source, bucket.checksum, code, raw, None, promotion=False)
        trace = self._trace
        if trace is not None:
            _record(trace, bucket.key, len(raw))

    def clear(self) -> None:
        """Empty every tier (memcached by namespace generation, never ``flush_all``)."""
        for slot in self._slots:
            try:
                slot.tier.clear()
            except Exception as exc:
                self._failed(slot, "clear", exc)

    def _adopt(self, bucket: Bucket) -> None:
        """Key one of Jinja's own buckets (whose key is the bare name hash) like ours."""
        env = bucket.environment
        state = self._state(env)
        bucket.slots = state.slots  # type: ignore[attr-defined]
        if "-" not in bucket.key:  # not already one of ours
            flag = "?" if callable(env.autoescape) else ""
            bucket.key = f"{state.fingerprint}{flag}-{bucket.key}"

    def _rekey(self, bucket: _Bucket) -> None:
        # A key is the 32-digit fingerprint, the autoescape flag, "-" and the name hash.
        state = self._state(bucket.environment)
        bucket.slots = state.slots
        bucket.key = state.fingerprint + bucket.key[len(state.fingerprint) :]

    # -- the walk -------------------------------------------------------------------------

    def _load(
        self, bucket: Bucket, source: str | None, start: int = 0, *, again: bool = False
    ) -> int | None:
        """Walk the bucket's tiers from ``start``; on a hit fill ``bucket.code``, promote,
        and return the entry size; on a miss return None. ``again`` marks a second look
        in the same lookup: its misses and rejections were counted the first time."""
        key = bucket.key
        slots: tuple[_Slot, ...] = getattr(bucket, "slots", self._slots)
        for index in range(start, len(slots)):
            slot = slots[index]
            counters = slot.counters
            breaker = slot.breaker
            if breaker is not None and not breaker.allow():
                counters.skipped += 1
                continue
            data: bytes | None = None
            if slot.objects:
                try:
                    entry = slot.tier.get(key)
                except Exception as exc:
                    self._failed(slot, "get", exc, quiet=again)
                    continue
                if entry is None:
                    counters.misses += 0 if again else 1
                    continue
                fresh = (
                    entry[0] == source
                    if source is not None and entry[0] is not None
                    else entry[1] == bucket.checksum
                )
                if not fresh:
                    if not again:
                        counters.rejected_stale += 1
                        counters.misses += 1
                    continue
                code: types.CodeType = entry[2]
                size: int = entry[3]
            else:
                started = time.perf_counter_ns()
                try:
                    data = slot.tier.get(key)
                    if data is not None:
                        counters.bytes_read += len(data)
                        code, size = self._codec.decode_sized(key, bucket.checksum, data)
                except EntryError as exc:
                    # Something is stored under the key, but not an entry we wrote for
                    # this source: a miss, never code that runs. The tier answered.
                    if breaker is not None:
                        breaker.success()
                    if not again:
                        self._rejected(slot, exc)
                    continue
                except Exception as exc:
                    self._failed(slot, "get", exc, quiet=again)
                    continue
                except BaseException:
                    # gevent's Timeout, KeyboardInterrupt: the call did not answer, so
                    # let the next one probe rather than leave the breaker half-open.
                    if breaker is not None:
                        breaker.abandon()
                    raise
                finally:
                    counters.latency.observe(time.perf_counter_ns() - started)
                if breaker is not None:
                    breaker.success()
                if data is None:
                    counters.misses += 0 if again else 1
                    continue
            counters.hits += 1
            bucket.code = code
            if index:
                # Promote: a memory tier weighs the entry by its marshalled size
                # (``size``), a byte tier takes the entry as read.
                self._store(
                    slots[:index],
                    key,
                    source,
                    bucket.checksum,
                    code,
                    None,
                    data,
                    promotion=True,
                    size=size,
                )
            return size
        return None

    def _rejected(self, slot: _Slot, exc: EntryError) -> None:
        slot.counters.reject(exc.reason)
        slot.counters.misses += 1
        if exc.reason != "stale":  # a changed template is routine, not news
            self._log.warning(
                f"{slot.name}:reject",
                "tiered_bccache: %s rejected an entry: %s",
                slot.name,
                exc,
            )

    def _store(
        self,
        slots: Sequence[_Slot],
        key: str,
        source: str | None,
        checksum: str,
        code: types.CodeType,
        raw: bytes | None,
        data: bytes | None,
        *,
        promotion: bool,
        size: int = 0,
    ) -> None:
        """Write one entry into ``slots``: the code object into memory tiers, an entry
        into byte tiers (``data`` as read from a lower tier when promoting, so it is not
        encoded again). ``size`` is the marshalled size when ``raw`` is not at hand. One
        tier failing never stops the others."""
        encoded: dict[bool, bytes] = {}
        stored: types.CodeType | None = None
        for slot in slots:
            counters = slot.counters
            value: Any
            if slot.objects:
                weight = len(raw) if raw is not None else size
                if not weight:
                    raw = marshal.dumps(code)
                    weight = len(raw)
                if not promotion and raw is not None and stored is None:
                    # marshal.dumps left a cached copy of the bytecode on every code
                    # object of the freshly compiled template (CPython 3.11+ caches
                    # co_code when it is read): 40% more memory than a loaded copy.
                    stored = marshal.loads(raw)
                value = (source, checksum, stored if stored is not None else code, weight)
            else:
                value = data if data is not None else encoded.get(slot.compress)
                if value is None:
                    if raw is None:
                        raw = marshal.dumps(code)
                    value = self._codec.encode(key, checksum, raw, compress=slot.compress)
                    encoded[slot.compress] = value
                weight = len(value)
            # Every reason to skip the tier comes before the breaker: a probe it hands
            # out must be answered, or it stays half-open for good.
            if slot.max_entry_size is not None and weight > slot.max_entry_size:
                counters.skipped += 1
                continue
            breaker = slot.breaker
            if breaker is not None and not breaker.allow():
                counters.skipped += 1
                continue
            try:
                if slot.objects:
                    slot.tier.set(key, value, weight)
                else:
                    slot.tier.set(key, value)
            except Exception as exc:
                self._failed(slot, "set", exc)
                continue
            except BaseException:
                if breaker is not None:
                    breaker.abandon()
                raise
            if breaker is not None:
                breaker.success()
            if not slot.objects:
                counters.bytes_written += weight
            counters.writes += 1
            if promotion:
                counters.promotions += 1

    # -- the compile lease ----------------------------------------------------------------

    def _compile_under_lease(
        self, bucket: _Bucket, name: str, filename: str | None, source: str
    ) -> int | None:
        """After a miss everywhere, make sure only one process of the host compiles the
        template: take its lease (waiting at most ``lease_timeout`` for a holder), look
        again (the holder has written its entry by now, unless its compile failed),
        and on a second miss compile here, write through, and release the lease.

        Jinja gives a bytecode cache no hook around its compile, so the compile under
        the lease happens in this call (Jinja then uses ``bucket.code`` as it is): a
        compile that raises releases the lease at once, and the error reaches the
        caller exactly as Jinja's own compile raises it. Returns the entry's size when
        the second look hits, else None."""
        from filelock import Timeout  # only a process that compiles pays for filelock

        slot = self._lease_slot
        assert slot is not None and slot.lease is not None
        try:
            lock = slot.lease(bucket.key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self.lease_waits += 1
                try:
                    lock.acquire(timeout=self.lease_timeout, poll_interval=0.002)
                except Timeout:
                    return None  # the holder is stuck: let Jinja compile without it
        except Exception as exc:
            self._failed(slot, "lease", exc)
            return None
        try:
            size = self._load(bucket, source, bucket.slots.index(slot), again=True)
            if size is not None:
                return size
            bucket.code = bucket.environment.compile(source, name, filename)
            self.dump_bytecode(bucket)
            return None
        finally:
            _release(lock)

    # -- errors ---------------------------------------------------------------------------

    def _failed(self, slot: _Slot, operation: str, exc: Exception, *, quiet: bool = False) -> None:
        """Count and log a tier's failure and tell its breaker. ``quiet``: a second
        failure within one lookup, already counted and logged; the breaker still hears
        of it (a probe it handed out must be answered)."""
        # A timeout means a hung server: open at once rather than pay a second one.
        opened = slot.breaker is not None and slot.breaker.failure(
            trip=isinstance(exc, TimeoutError)
        )
        if quiet:
            return
        slot.counters.errors += 1
        if opened:
            assert slot.breaker is not None
            self._log.warning(
                f"{slot.name}:breaker",
                "tiered_bccache: %s is failing (%r); skipping it for %.1f s",
                slot.name,
                exc,
                slot.breaker.cooldown,
            )
        else:
            self._log.warning(
                f"{slot.name}:{operation}",
                "tiered_bccache: %s failed during %s: %r",
                slot.name,
                operation,
                exc,
            )
        if self.strict:
            raise TierError(slot.name, operation, exc) from exc

    # -- observability --------------------------------------------------------------------

    def _reset_totals(self) -> None:
        self.lookups = 0
        self.hits = 0
        self.misses = 0
        self.compiles = 0
        self.lease_waits = 0
        self.string_lookups = 0
        self.string_hits = 0
        self.string_misses = 0
        self.string_compiles = 0
        self.strings_not_admitted = 0

    def stats(self) -> CacheStats:
        """A snapshot of the counters of every tier and of the whole cache."""
        return CacheStats(
            tiers=tuple(
                snapshot(
                    s.name,
                    s.counters,
                    s.breaker.state if s.breaker is not None else "none",
                    getattr(s.tier, "events", None),
                )
                for s in self._slots
            ),
            lookups=self.lookups,
            hits=self.hits,
            misses=self.misses,
            compiles=self.compiles,
            lease_waits=self.lease_waits,
            string_lookups=self.string_lookups,
            string_hits=self.string_hits,
            string_misses=self.string_misses,
            string_compiles=self.string_compiles,
            strings_not_admitted=self.strings_not_admitted,
        )

    def reset_stats(self) -> None:
        """Start every counter from zero."""
        for slot in self._slots:
            slot.counters = TierCounters()
        self._reset_totals()

    def start_trace(self, path: str | os.PathLike[str]) -> None:
        """Record every lookup (key and entry size) to ``path`` until :meth:`stop_trace`."""
        from .trace import TraceWriter  # only users who trace pay for the import

        self.stop_trace()
        self._trace = TraceWriter(path)

    def stop_trace(self) -> None:
        trace, self._trace = self._trace, None
        if trace is not None:
            trace.close()

    def close(self) -> None:
        """Stop tracing and close the tiers' connections."""
        self.stop_trace()
        for tier in self._tiers:
            closer = getattr(tier, "close", None)
            if callable(closer):
                closer()

    def __enter__(self) -> TieredBytecodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name(tier: object) -> str:
    return str(getattr(tier, "name", type(tier).__name__))


def _record(trace: TraceWriter, key: str, size: int) -> None:
    try:
        trace.record(key, size)
    except ValueError:  # closed by stop_trace in another thread since we looked
        pass


def _release(lock: FileLock) -> None:
    try:
        lock.release(force=True)
    except Exception as exc:  # a lock file removed under us: nothing left to release
        logger().debug("tiered_bccache: releasing a compile lease failed: %r", exc)


def _check_tiers(tiers: object, filesystem: type[FileSystemTier]) -> tuple[Tier, ...]:
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Sequence):
        raise ConfigurationError(f"tiers must be a list of tiers, got {type(tiers).__name__}")
    if not tiers:
        raise ConfigurationError("tiers must name at least one tier")
    seen: dict[int, int] = {}
    directories: dict[str, int] = {}
    for index, tier in enumerate(tiers):
        if not isinstance(tier, Tier):
            raise ConfigurationError(
                f"tiers[{index}] is a {type(tier).__name__}, not a tier "
                "(a tier has get, set, delete and clear methods)"
            )
        if id(tier) in seen:
            raise ConfigurationError(
                f"tiers[{index}] is the same object as tiers[{seen[id(tier)]}]"
            )
        seen[id(tier)] = index
        if isinstance(tier, filesystem):
            if tier.directory in directories:
                first = directories[tier.directory]
                raise ConfigurationError(
                    f"tiers[{index}] uses the same directory as tiers[{first}]"
                )
            directories[tier.directory] = index
    return tuple(tiers)


def _rebuild(tiers: list[Tier], options: dict[str, Any]) -> TieredBytecodeCache:
    return TieredBytecodeCache(tiers, **options)
