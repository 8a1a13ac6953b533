"""TieredBytecodeCache: Jinja's bytecode cache over a stack of tiers.

The adapter: Jinja's hooks (``get_bucket``, ``load_bytecode``), ``from_string``,
``put``, ``clear``, ``stats``, ``close`` and pickling. What goes into a key is
:mod:`tiered_bccache.keys`'s, the walk over the tiers :mod:`tiered_bccache.stack`'s
(each tier a :mod:`~tiered_bccache.layers` layer behind its
:mod:`~tiered_bccache.guard`), the bucket :mod:`tiered_bccache.lookup`'s, the compile
and its write-through :class:`tiered_bccache.compiling.Compiler`'s, the counters
:mod:`tiered_bccache.recorder`'s, which strings are stored
:mod:`tiered_bccache.admission`'s.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from jinja2 import Environment, Template, nodes
from jinja2.bccache import Bucket, BytecodeCache

from .admission import Admission
from .breaker import CircuitBreaker
from .compiling import Compiler, own_class
from .entry import EntryCodec, source_digest
from .errors import ConfigurationError
from .keys import Keyring, name_key
from .lookup import Lookup, memory_hit
from .recorder import Recorder
from .secret import ENV_VAR, resolve_secret
from .stack import TierStack
from .stats import CacheStats, RateLimitedLog, TierCounters
from .tiers._validate import positive_int_or_none, positive_number
from .tiers.base import Tier, check_tiers, tier_name

__all__ = ["TieredBytecodeCache"]


class TieredBytecodeCache(BytecodeCache):
    """A Jinja bytecode cache over an ordered list of tiers, fastest first.

    A lookup walks the tiers in order; the first valid entry for this template, this
    exact source and this environment's settings wins and is promoted into every tier
    above it. A dump writes through to every tier. Keys include a fingerprint of the
    settings that change generated code (see :mod:`tiered_bccache.fingerprint`), so one
    cache may serve differently configured environments.

    :param tiers: the tiers, fastest first (any non-empty list; each instance once).
    :param secret: the MAC key for entries in byte tiers (at least 16 bytes, the same on
        every host sharing a remote tier); default ``$TIERED_BCCACHE_SECRET``, else a
        random host key in the first filesystem tier's directory.
    :param allow_unsigned: accept a remote tier without a secret. Unsafe: whoever can
        write to the tier runs code in the application.
    :param strict: raise tier failures as :class:`TierError` instead of isolating them.
    :param lease_timeout: how long a process waits for another process of the host that
        is compiling the same template (through the first tier offering ``lease``).
    :param breaker_threshold: consecutive failures that open a remote tier's circuit
        breaker.
    :param breaker_cooldown: seconds before an open breaker lets one probe through.
    :param secret_env: the environment variable ``secret`` is read from when it is not
        given (``TIERED_BCCACHE_SECRET``).
    :param string_admission: how many times this process must compile a template string
        (see :meth:`from_string`) before it is stored; 1 stores every string.
    :param trace: a file to record an access trace to (for ``tiered-bccache tune``).
    :param key_context: a function of the environment, called at every lookup, whose
        answer joins the key: state a tool keeps outside the Environment that changes
        the code it compiles (ansible-core's lexer escapes backslashes in some compiles
        and not in others; see :mod:`tiered_bccache.tools`). Short ASCII letters and
        digits are used as they are, anything else by a digest; an exception means the
        lookup is compiled uncached.

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
        key_context: Callable[[Environment], str] | None = None,
    ) -> None:
        from .tiers.filesystem import FileSystemTier  # host key files, shared directories

        self._tiers = check_tiers(tiers, FileSystemTier)
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
            "key_context": key_context,
        }
        self._admission = Admission(string_admission)
        if key_context is not None and not callable(key_context):
            raise ConfigurationError(f"key_context must be callable, got {key_context!r}")
        #: digest of a string -> times compiled here without being stored (the policy's).
        self._sightings = self._admission.sightings
        self.lease_timeout = positive_number("lease_timeout", lease_timeout, allow_zero=True)
        threshold = positive_int_or_none("breaker_threshold", breaker_threshold) or 2
        cooldown = positive_number("breaker_cooldown", breaker_cooldown)
        byte_tiers = [t for t in self._tiers if not getattr(t, "holds_objects", False)]
        key = resolve_secret(
            secret,
            key_file_dirs=[t.directory for t in byte_tiers if isinstance(t, FileSystemTier)],
            unsigned_tiers=[tier_name(t) for t in byte_tiers if not isinstance(t, FileSystemTier)],
            allow_unsigned=bool(allow_unsigned),
            env_var=secret_env,
        )
        self._log = RateLimitedLog()
        self._stack = TierStack(
            self._tiers,
            EntryCodec(key),
            lambda: CircuitBreaker(failure_threshold=threshold, cooldown=cooldown),
            strict=bool(strict),
            log=self._log,
        )
        first = self._stack.layers[0]
        #: The layer of the memory hit path (see :func:`~tiered_bccache.lookup.memory_hit`).
        self._first = first if first.objects and first.guard.breaker is None else None
        self._keys = Keyring(self._stack.layers, self._stack.private_layers, key_context, self._log)
        #: Each environment's state, by id (the keyring's).
        self._states = self._keys.states
        self._rec = Recorder()
        self._compiler = Compiler(self._stack, self._rec, self._log)
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
        keyword arguments (``secret=``...). See :mod:`tiered_bccache.spec` for the
        syntax; a wrong spec raises ``ConfigurationError`` naming it."""
        # Imported here: a process that builds its tiers itself never loads the parser.
        from .spec import parse_specs

        return cls(parse_specs(specs, environ=environ), **options)

    # -- pickling: a copy is the configuration, with empty memory and fresh connections --

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (list(self._tiers), self._options))

    def __repr__(self) -> str:
        return f"TieredBytecodeCache({list(self._tiers)!r})"

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The tiers, in lookup order."""
        return self._tiers

    @property
    def strict(self) -> bool:
        """Whether a tier's failure raises :class:`TierError` instead of being isolated."""
        return self._stack.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._stack.strict = bool(value)

    # -- environments -------------------------------------------------------------------

    def refresh(self, environment: Environment) -> None:
        """Recompute ``environment``'s fingerprint after changing a setting that the
        per-lookup check does not see (it sees extensions added, and autoescape,
        finalize and async mode replaced; filters and tests need no refresh), or after
        patching the code of its classes in place."""
        self._keys.refresh(environment)

    def fingerprint(self, environment: Environment) -> str:
        """The digest of ``environment``'s code-generation settings used in keys (a token
        of this environment alone when it is private, empty when it cannot be read)."""
        return self._keys.state(environment).fingerprint

    def template_key(self, environment: Environment, name: str, filename: str | None = None) -> str:
        """The key a lookup of template ``name`` in ``environment`` uses first (the same in
        every tier; a variant key follows when another environment's entry is there
        first). Empty when the environment cannot be keyed."""
        state = self._keys.state(environment)
        return self._keys.template_key(state, environment, name, filename) or ""

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        """Jinja's key for a template name, for names with lone surrogates too."""
        return name_key(name, filename)

    def get_source_checksum(self, source: str) -> str:
        """Jinja's checksum of a source, for sources with lone surrogates too."""
        return source_digest(source)

    # -- Jinja's interface ----------------------------------------------------------------

    def get_bucket(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> Bucket:
        """Look the template up in every tier; on a miss everywhere compile it here,
        with the application's callables non-foldable (see
        :mod:`tiered_bccache.compiling`), and write it through, so Jinja finds
        ``bucket.code`` set and does not compile. A compile that raises raises as
        Jinja's own does. Under the template's lease when another process of the host
        may be compiling it (see the class docstring)."""
        keys, rec = self._keys, self._rec
        state = keys.state(environment)
        rec.lookups += 1
        key = keys.template_key(state, environment, name, filename)
        if key is None:
            return self._uncached(environment, source)
        bucket = Lookup(environment, key, source, state.layers)
        code, start = memory_hit(self._first, environment, key, source, rec)
        if code is not None:
            rec.hits += 1
            bucket.code = code
            return bucket
        size = self._stack.load(bucket, start)
        if size is None and bucket.foreign is not None:
            size = self._stack.load_variant(bucket)
            # Later lookups of this environment go to the variant at once.
            self._keys.remember(state, name, filename, bucket.key)
        if size is None:
            fresh = self._keys.recheck(environment, state)
            if fresh is not state:
                # A setting changed in place since the fingerprint: what is compiled now
                # goes under the key of the settings it is compiled with.
                state, key = fresh, keys.template_key(fresh, environment, name, filename)
                if key is None:
                    return self._uncached(environment, source)
                bucket = Lookup(environment, key, source, state.layers)
                size = self._stack.load(bucket)
        if size is None and self._stack.lease_layer is not None and not state.private:
            compile_here = functools.partial(
                self._compiler.compile, bucket, state, name, filename, source
            )
            size = self._stack.under_lease(bucket, compile_here, rec.waited, self.lease_timeout)
        elif size is None:
            self._compiler.compile(bucket, state, name, filename, source)
        if size is None:
            rec.misses += 1
        else:
            rec.hits += 1
            if rec.trace is not None:
                rec.record(key, size)
        return bucket

    def _uncached(self, environment: Environment, source: str) -> Lookup:
        # Jinja compiles and hands the bucket to set_bucket, which stores nothing.
        self._rec.misses += 1
        self._rec.uncached += 1
        return Lookup(environment, "", source, ())

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
        ``nodes.Template`` is keyed by its ``repr`` (see :meth:`compile_string`).
        """
        cls = template_class or environment.template_class
        code = self.compile_string(environment, source)
        return cls.from_code(environment, code, environment.make_globals(globals), None)

    def compile_string(
        self, environment: Environment, source: str | nodes.Template
    ) -> types.CodeType:
        """The code ``environment.compile(source)`` returns for a template string, from
        the tiers when it is there (what :meth:`from_string` and
        :func:`~tiered_bccache.cache_from_string` use). A parsed tree (what Jinja's
        ``compile_expression`` and ``from_string(tree)`` compile; Ansible's conditionals)
        is keyed by its ``repr``, which names every field of every node, as the code
        Jinja generates from it writes its constants by their ``repr``."""
        text = source if isinstance(source, str) else repr(source)
        tail = ("s" if isinstance(source, str) else "t") + source_digest(text)
        keys, rec = self._keys, self._rec
        state = keys.state(environment)
        rec.string_lookups += 1
        key = keys.string_key(state, environment, tail)
        if key is None:
            rec.string_misses += 1
            rec.uncached += 1
            return own_class(environment).compile(environment, source)
        code, start = memory_hit(self._first, environment, key, text, rec)
        if code is not None:
            rec.string_hits += 1
            return code
        bucket = Lookup(environment, key, text, state.layers)
        bucket.checksum = digest = tail[1:]
        size = self._stack.load(bucket, start)
        if size is None and bucket.foreign is not None:
            size = self._stack.load_variant(bucket)
            key = bucket.key
        if size is not None and bucket.code is not None:
            rec.string_hits += 1
            if rec.trace is not None:
                rec.record(key, size)
            return bucket.code
        rec.string_misses += 1
        fresh = keys.recheck(environment, state)
        if fresh is not state:
            # A setting changed in place since the fingerprint (see get_bucket).
            state, key = fresh, keys.string_key(fresh, environment, tail)
            if key is None:
                rec.uncached += 1
                return own_class(environment).compile(environment, source)
        code, dependencies = self._compiler.isolated(environment, state, source, None, None)
        if dependencies is None:
            return code  # Jinja's, uncached
        if not self._admission.admit(digest):
            rec.strings_not_admitted += 1
            if rec.trace is not None:
                rec.record(key, 0)  # a lookup all the same; its size is not known
            return code
        rec.string_compiles += 1
        self._compiler.write(state.layers, key, text, digest, code, dependencies)
        return code

    def put(
        self, environment: Environment, name: str, filename: str | None, source: str
    ) -> types.CodeType:
        """Compile template ``name`` as a lookup in ``environment`` would and write it to
        every tier under the key such a lookup uses (what ``tiered-bccache warm``
        does); return the code. Raises what Jinja's compile raises."""
        state = self._keys.state(environment)
        key = self._keys.template_key(state, environment, name, filename)
        if key is None:
            self._rec.uncached += 1
            return own_class(environment).compile(environment, source, name, filename)
        bucket = Lookup(environment, key, source, state.layers)
        self._compiler.compile(bucket, state, name, filename, source)
        assert bucket.code is not None
        return bucket.code

    def set_bucket(self, bucket: Bucket) -> None:
        """Nothing: Jinja calls this only after compiling a template itself, which
        happens only where the cache could not take charge of the compile. Code Jinja
        compiled has the application's callables folded into it and is never stored."""

    def load_bytecode(self, bucket: Bucket) -> None:
        """Fill ``bucket.code`` from the first tier holding a valid entry (a no-op on a
        miss). Works for Jinja's own buckets too; for those, a callable autoescape is
        keyed as unknown, since the template name is not known."""
        if isinstance(bucket, Lookup):
            if self._stack.load(bucket) is not None:
                self._rec.hits += 1
            return
        state = self._keys.state(bucket.environment)
        if state.uncached:
            return
        bucket.key = key = self._keys.bucket_key(state, bucket.key)
        lookup = Lookup(bucket.environment, key, None, state.layers)
        lookup.checksum = bucket.checksum
        if self._stack.load(lookup) is not None:
            bucket.code = lookup.code
            self._rec.hits += 1

    def dump_bytecode(self, bucket: Bucket) -> None:
        """Nothing, as :meth:`set_bucket`: only code the cache compiled is stored."""

    def clear(self) -> None:
        """Empty every tier (memcached by namespace generation, never ``flush_all``)."""
        self._stack.clear()

    # -- observability --------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """A snapshot of the counters of every tier and of the whole cache."""
        return self._rec.stats(self._stack.layers)

    def reset_stats(self) -> None:
        """Start every counter from zero."""
        for layer in self._stack.layers:
            layer.guard.counters = TierCounters()
        self._rec.reset()

    def start_trace(self, path: str | os.PathLike[str]) -> None:
        """Record every lookup (key and entry size) to ``path`` until :meth:`stop_trace`."""
        self._rec.start_trace(path)

    def stop_trace(self) -> None:
        self._rec.stop_trace()

    def close(self) -> None:
        """Stop tracing and close the tiers' connections."""
        self.stop_trace()
        self._stack.close()

    def __enter__(self) -> TieredBytecodeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild(tiers: list[Tier], options: dict[str, Any]) -> TieredBytecodeCache:
    return TieredBytecodeCache(tiers, **options)
