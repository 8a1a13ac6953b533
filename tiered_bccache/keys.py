"""Keys: what of an environment and a template goes into a cache key.

A key reads ``FINGERPRINT FLAG CONTEXT - TAIL [~ VARIANT]``:

- ``FINGERPRINT``: the digest of the environment's code-generation settings
  (:mod:`tiered_bccache.fingerprint`), or a token of this environment alone when a
  setting is not plain data (a *private* environment, whose entries stay in memory);
- ``FLAG``: ``e`` or ``r`` when autoescape is a function of the template name
  (``select_autoescape``), its answer for this name; ``?`` for a bucket Jinja built
  itself with such a function; empty otherwise;
- ``CONTEXT``: ``.`` and what the cache's ``key_context`` function answered (at most 16
  letters and digits as they are, else ``_`` and a digest), empty without one;
- ``TAIL``: the digest of the template's name and file name, or ``s`` / ``t`` and the
  digest of a template string or of a parsed tree's ``repr``;
- ``VARIANT``: a digest of the filters and tests of an environment that shares the
  fingerprint but not the callables under the names the template uses.

:class:`Keyring` keeps each environment's :class:`EnvState` (computed once, checked on
every lookup) and remembers the key of each template for it. Nothing here raises into a
render: an environment that cannot be read is compiled uncached.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable
from typing import Any

from jinja2 import Environment

from .compiling import own_class
from .entry import source_digest
from .fingerprint import Fingerprinter, Unkeyable
from .stats import RateLimitedLog

__all__ = ["FINGERPRINT_LENGTH", "EnvState", "Key", "Keyring", "name_key"]

#: Beyond this many (name, filename) keys remembered for one environment, its memo
#: starts over.
_MAX_MEMO = 4096


def name_key(name: str, filename: str | None) -> str:
    """The key part of a template name (and its file name, as Jinja's
    ``BytecodeCache.get_cache_key`` joins them), for any name a loader may give."""
    return source_digest(name if filename is None else f"{name}|{filename}")


#: The length of every fingerprint: a digest's 32 hex digits, or a private token.
FINGERPRINT_LENGTH = 32


class Key:
    """A key's parts (see the module docstring); ``str(key)`` is the key the tiers use,
    :meth:`parse` reads one back. The one place the format is written. (A plain class:
    a ``NamedTuple`` costs every process that imports the cache a compile.)"""

    __slots__ = ("context", "fingerprint", "flag", "tail", "variant")

    def __init__(
        self, fingerprint: str, flag: str, context: str, tail: str, variant: str = ""
    ) -> None:
        self.fingerprint = fingerprint
        self.flag = flag
        self.context = context
        self.tail = tail
        self.variant = variant

    def _parts(self) -> tuple[str, str, str, str, str]:
        return (self.fingerprint, self.flag, self.context, self.tail, self.variant)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and self._parts() == other._parts()

    def __hash__(self) -> int:
        return hash(self._parts())

    def __repr__(self) -> str:
        return f"Key{self._parts()!r}"

    def __str__(self) -> str:
        text = f"{self.fingerprint}{self.flag}{self.context}-{self.tail}"
        return f"{text}~{self.variant}" if self.variant else text

    @classmethod
    def parse(cls, text: str) -> Key:
        """The parts of a key this module wrote; ValueError for anything else."""
        head, dash, rest = text.partition("-")
        if not dash or len(head) < FINGERPRINT_LENGTH:
            raise ValueError(f"not a template key: {text!r}")
        fingerprint, middle = head[:FINGERPRINT_LENGTH], head[FINGERPRINT_LENGTH:]
        dot = middle.find(".")
        flag, context = (middle[:dot], middle[dot:]) if dot >= 0 else (middle, "")
        if flag not in ("", "e", "r", "?"):
            raise ValueError(f"not a template key: {text!r}")
        tail, _, variant_part = rest.partition("~")
        return cls(fingerprint, flag, context, tail, variant_part)

    def base(self) -> Key:
        """The key without its ``VARIANT``."""
        return Key(self.fingerprint, self.flag, self.context, self.tail)

    def with_variant(self, variant_part: str) -> Key:
        """The key of a ``VARIANT`` of this key's base."""
        return Key(self.fingerprint, self.flag, self.context, self.tail, variant_part)


class EnvState:
    """What the cache computed once for one environment, and what it checks on every
    lookup to notice a setting changed after first use (filters and tests need no
    check: every entry's dependencies are checked against the live tables)."""

    __slots__ = (
        "autoescape",
        "base",
        "binops",
        "env_ref",
        "extensions",
        "finalize",
        "fingerprint",
        "is_async",
        "keys",
        "layers",
        "private",
        "unops",
        "uncached",
    )

    def __init__(self, env: Environment, env_ref: weakref.ref[Environment]) -> None:
        self.env_ref = env_ref
        #: The environment's own class (not the one ``cache_from_string`` gives it).
        self.base: type[Environment] = own_class(env)
        self.fingerprint = ""
        #: Some setting is not plain data: the fingerprint is a token of this
        #: environment only, so its entries stay in this process's memory tiers.
        self.private = False
        #: The environment could not be read at all: Jinja compiles, nothing is stored.
        self.uncached = False
        #: The layers this environment's entries may use (the cache's; the object layers
        #: only when private).
        self.layers: tuple[Any, ...] = ()
        #: (name, filename, key context) -> key
        self.keys: dict[tuple[str, str | None, str], str] = {}
        self.extensions = len(env.extensions)
        self.autoescape = env.autoescape
        self.finalize = env.finalize
        self.is_async = env.is_async
        self.binops = getattr(env, "intercepted_binops", None)
        self.unops = getattr(env, "intercepted_unops", None)

    def matches(self, env: Environment) -> bool:
        """Whether ``env`` still has the settings the fingerprint was computed from
        (those users change after first use; others need ``cache.refresh``)."""
        return (
            self.env_ref() is env
            and self.autoescape is env.autoescape
            and self.finalize is env.finalize
            and self.is_async is env.is_async
            and self.extensions == len(env.extensions)
            and self.binops is getattr(env, "intercepted_binops", None)
            and self.unops is getattr(env, "intercepted_unops", None)
        )

    def flag(self, name: str | None) -> str | None:
        """The per-template part of the key: ``"e"`` or ``"r"`` when autoescape is a
        function of the template name (``select_autoescape``), empty when it is a bool;
        None when the function raised (Jinja then raises it from its own compile)."""
        autoescape = self.autoescape
        if not callable(autoescape):
            return ""
        try:
            return "e" if autoescape(name) else "r"
        except Exception:
            return None


class Keyring:
    """The keys of one cache: each environment's :class:`EnvState`, held by the
    environment's id and forgotten with it, and the key of each template for it.

    ``layers`` are the layers an environment's entries go to, ``private_layers`` those of a
    private environment (opaque here); ``key_context`` is the cache's option of that
    name; ``log`` the cache's rate-limited log."""

    def __init__(
        self,
        layers: tuple[Any, ...],
        private_layers: tuple[Any, ...],
        key_context: Callable[[Environment], str] | None,
        log: RateLimitedLog,
    ) -> None:
        self.states: dict[int, EnvState] = {}
        self.fingerprinter = Fingerprinter()
        self.key_context = key_context
        self._layers = layers
        self._private_layers = private_layers
        self._log = log
        #: Private environments get tokens of this cache object alone.
        self._salt = os.urandom(8).hex()
        self._private_count = 0

    def state(self, env: Environment) -> EnvState:
        """The environment's state, computed again when it is missing or stale. Never
        raises: an environment that cannot be read is compiled uncached."""
        state = self.states.get(id(env))
        if state is not None and state.matches(env):
            return state
        env_id = id(env)
        # The weak reference forgets the environment when it goes away, so that a new
        # object that happens to get the same id() is never served its predecessor's
        # fingerprint. A state replaced by a refresh takes its reference with it.
        fresh = EnvState(env, weakref.ref(env, functools.partial(self._forget, env_id)))
        try:
            fresh.fingerprint = self.fingerprinter.fingerprint(env, fresh.base)
            fresh.layers = self._layers
        except Unkeyable as exc:
            self._private_count += 1
            fresh.private = True
            # A token of this environment alone, as long as a fingerprint, never shared.
            fresh.fingerprint = f"p{self._salt}{self._private_count:015x}"
            fresh.layers = self._private_layers
            self._log.warning(
                "fingerprint:private",
                "tiered_bccache: %s; this environment's entries stay in this process's "
                "memory tiers",
                exc,
            )
        except Exception as exc:
            fresh.uncached = True
            self._log.warning(
                "fingerprint:uncached",
                "tiered_bccache: cannot read the settings of a %s (%r); its templates "
                "are compiled uncached",
                type(env).__name__,
                exc,
            )
        self.states[env_id] = fresh
        return fresh

    def _forget(self, env_id: int, ref: weakref.ref[Environment]) -> None:
        state = self.states.get(env_id)
        if state is not None and state.env_ref is ref:
            del self.states[env_id]

    def refresh(self, environment: Environment) -> None:
        """Have the next lookup fingerprint ``environment`` again, its classes too."""
        self.fingerprinter.forget(
            own_class(environment),
            environment.code_generator_class,
            *(type(ext) for ext in environment.extensions.values()),
        )
        state = self.states.get(id(environment))
        if state is not None and state.env_ref() is environment:
            state.extensions = -1  # no longer matches: the next lookup recomputes

    def recheck(self, env: Environment, state: EnvState) -> EnvState:
        """Before a compile, the state of ``env`` as its settings are now: the same one
        when its fingerprint still holds (a few microseconds against a compile's
        milliseconds), else a new one. So a setting changed in place after first use
        (``env.intercepted_binops = ...``, a policy) never puts code under the key of
        the settings it was not compiled with."""
        if state.private or state.uncached:
            return state
        try:
            if self.fingerprinter.fingerprint(env, state.base) == state.fingerprint:
                return state
        except Exception:  # state() says what it cannot read
            pass
        state.extensions = -1  # no longer matches
        return self.state(env)

    def template_key(
        self, state: EnvState, env: Environment, name: str, filename: str | None
    ) -> str | None:
        """The key of template ``name`` for an environment with ``state``, remembered per
        environment (the autoescape flag is that environment's answer for the name, the
        context the ``key_context`` function's now); None when either raised, or when
        the environment cannot be read (``state.uncached``)."""
        if state.uncached:
            return None
        context = "" if self.key_context is None else self.context(env)
        if context is None:
            return None
        memo = (name, filename, context)
        key = state.keys.get(memo)
        if key is None:
            flag = state.flag(name)
            if flag is None:
                return None
            if len(state.keys) >= _MAX_MEMO:
                state.keys.clear()
            key = str(Key(state.fingerprint, flag, context, name_key(name, filename)))
            state.keys[memo] = key
        return key

    def string_key(self, state: EnvState, env: Environment, tail: str) -> str | None:
        """The key of a template string (``tail``: its kind and digest) for an
        environment with ``state``; None as for :meth:`template_key`."""
        if state.uncached:
            return None
        flag = state.flag(None)
        context = "" if self.key_context is None else self.context(env)
        if flag is None or context is None:
            return None
        return str(Key(state.fingerprint, flag, context, tail))

    def bucket_key(self, state: EnvState, key: str) -> str:
        """The key for a bucket Jinja built (``key`` is Jinja's name key, or one of ours
        already): the template name is not known, so a callable autoescape is keyed as
        unknown (``?``)."""
        if "-" in key:
            return key
        return str(Key(state.fingerprint, "?" if callable(state.autoescape) else "", "", key))

    def remember(self, state: EnvState, name: str, filename: str | None, key: str) -> None:
        """Have later lookups of ``name`` in the environment of ``state`` go to ``key``
        (a variant) at once."""
        state.keys[name, filename, Key.parse(key).context] = key

    def context(self, env: Environment) -> str | None:
        """The ``CONTEXT`` part of a key: ``"."`` and what the function answered
        (letters and digits, at most 16), or ``"._"`` and a digest of anything else (an
        answer that is not a string, as its ``str``); empty for an empty answer; None
        when the function raised."""
        assert self.key_context is not None
        try:
            answer = self.key_context(env)
            if not isinstance(answer, str):
                answer = str(answer)
        except Exception as exc:
            self._log.warning(
                "key_context", "tiered_bccache: key_context raised %r; compiling uncached", exc
            )
            return None
        if not answer:
            return ""
        if len(answer) <= 16 and answer.isascii() and answer.isalnum():
            return "." + answer
        # "_" is never part of an answer kept as it is: the two forms never meet.
        return "._" + source_digest(answer)[:16]
