"""Compiling under the cache's control, so that cached code never depends on what the
application's callables compute.

Jinja's optimizer calls filters and tests on constant arguments at compile time
(``nodes._FilterTestCommon.as_const``), applies ``finalize`` to constant output
(``CodeGenerator._output_child_to_const``) and builds ``environment.undefined`` objects
for lookups on constants (``nodes.Getattr.as_const``), and bakes the *results* into the
code. Python callables cannot all be described (a bound builtin method, an
``lru_cache`` wrapper and a closure over a connection all look alike from outside), so
instead of describing them the cache compiles with a copy of the environment in which:

- every filter and test that is not Jinja's own is a stand-in with the same calling
  convention that raises when called, so the optimizer leaves the call to render time;
- ``finalize`` likewise;
- ``undefined`` is a class whose construction raises, so no lookup on a constant is
  folded into an undefined object;
- every policy that is not plain data raises when used (``json.dumps_function``);
- ``autoescape`` is the flag the key carries for this template.

Code generation itself reads of a filter or test only whether it exists and its calling
convention (``_PassArg``). The copy records, for every filter and test name the compile
looked up, what it found there (Jinja's own function, a convention, or nothing): the
entry carries that list and a lookup checks it against the environment at hand, so an
entry is only ever used where code generation would have written the same code.

:class:`Compiler` is the cache's use of this: it compiles so, falls back to Jinja's own
compile (uncached) where a template needs the real callables to compile at all, and
writes what it compiled through the tiers.
"""

from __future__ import annotations

import hashlib
import marshal
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, Undefined, nodes
from jinja2.filters import FILTERS
from jinja2.tests import TESTS
from jinja2.utils import _PassArg, pass_context, pass_environment, pass_eval_context

if TYPE_CHECKING:
    from .keys import EnvState
    from .layers import Layer
    from .lookup import Lookup
    from .recorder import Recorder
    from .stack import TierStack
    from .stats import RateLimitedLog

__all__ = [
    "ABSENT",
    "Compiler",
    "BASE_ATTRIBUTE",
    "Dependencies",
    "compile_for_cache",
    "compile_isolated",
    "dependencies_hold",
    "own_class",
    "signature",
    "variant",
]

#: What a compile looked up: ``(filters, tests)``, each a tuple of ``(name, signature)``.
Dependencies = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
#: The signature of a name that is not there.
ABSENT = "-"
NO_DEPENDENCIES: Dependencies = ((), ())


class _NotAtCompileTime(Exception):
    """Raised by the stand-ins: Jinja's optimizer catches it and leaves the node to
    render time."""


def _refuse(*args: object, **kwargs: object) -> Any:
    raise _NotAtCompileTime()


def _standin(decorate: Callable[[Any], Any] | None) -> Callable[..., Any]:
    def standin(*args: object, **kwargs: object) -> Any:
        raise _NotAtCompileTime()

    return decorate(standin) if decorate is not None else standin


#: One stand-in per calling convention: code generation reads nothing else.
_STANDINS: dict[str, Callable[..., Any]] = {
    "": _standin(None),
    _PassArg.context.name: _standin(pass_context),
    _PassArg.eval_context.name: _standin(pass_eval_context),
    _PassArg.environment.name: _standin(pass_environment),
}


def _own_functions() -> dict[int, tuple[object, str]]:
    """Jinja's own filters and tests, by id (they live as long as Jinja's modules)."""
    own: dict[int, tuple[object, str]] = {}
    for kind, table in (("filter", FILTERS), ("test", TESTS)):
        for name, func in table.items():
            own.setdefault(id(func), (func, f"jinja2.{kind}.{name}"))
    return own


_OWN = _own_functions()
#: The signature of each of Jinja's own functions, by id alone: ``_OWN`` holds every one
#: of them, so no other object can ever have its id.
_OWN_SIGNATURE = {key: sig for key, (_, sig) in _OWN.items()}


#: Set by ``cache_from_string`` on the subclass it gives an environment: the class it
#: stands in for (which alone decides the code).
BASE_ATTRIBUTE = "_tiered_bccache_base"


def own_class(env: Environment) -> type[Environment]:
    """The environment's class, seen through the subclass ``cache_from_string`` gives
    it (which overrides ``compile`` for strings only and changes no generated code)."""
    cls = type(env)
    base: type[Environment] | None = getattr(cls, BASE_ATTRIBUTE, None)
    return base if base is not None else cls


def signature(func: object) -> str:
    """What code generation reads of a filter or test: absent, one of Jinja's own
    functions (which the optimizer may call at compile time: they are folded), or the
    calling convention of an application's callable (never called at compile time)."""
    if func is None:
        return ABSENT
    own = _OWN.get(id(func))
    if own is not None and own[0] is func:
        return own[1]
    pass_arg = getattr(func, "jinja_pass_arg", None)
    return pass_arg.name if isinstance(pass_arg, _PassArg) else ""


def convention(func: object) -> str:
    """The calling convention alone (for ``finalize``, which is never Jinja's own)."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    return pass_arg.name if isinstance(pass_arg, _PassArg) else ""


class _Recording(Mapping[str, Any]):
    """A filter or test table as the compile sees it: stand-ins for the application's
    callables, and a note of every name looked up."""

    __slots__ = ("_real", "seen")

    def __init__(self, real: Mapping[str, Any]) -> None:
        self._real = real
        self.seen: dict[str, str] = {}

    def get(self, name: str, default: Any = None) -> Any:
        func = self._real.get(name)
        sig = signature(func)
        self.seen[name] = sig
        if func is None:
            return default
        return func if sig.startswith("jinja2.") else _STANDINS[sig]

    def __getitem__(self, name: str) -> Any:
        func = self.get(name)
        if func is None:
            raise KeyError(name)
        return func

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        for name in self._real:
            self.get(name)
            yield name

    def __len__(self) -> int:
        return len(self._real)

    def dependencies(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.seen.items()))


class _NoFoldUndefined(Undefined):
    """The compile copy's ``undefined``: a lookup on a constant that would make one is
    left to render time, where the environment's own class answers."""

    __slots__ = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise _NotAtCompileTime()


class _Poison:
    """A policy value that is not plain data: any use at compile time raises, so the
    filter reading it runs at render time."""

    __slots__ = ()
    __call__ = __getattr__ = __iter__ = __str__ = __bool__ = __len__ = _refuse


_POISON = _Poison()


def plain(value: object) -> bool:
    """Whether ``value`` is plain data: what ``marshal`` writes (no str subclass such as
    Markup, no object of an application class), so the same value is the same bytes in
    every process (but for the order of a set, which only costs a miss)."""
    try:
        marshal.dumps(value, 2)  # type: ignore[arg-type]
    except (ValueError, TypeError):  # unmarshallable, or nested too deep
        return False
    return True


def policies_for_compile(policies: Mapping[str, Any]) -> dict[str, Any]:
    """The policies the compile copy gets: plain data as it is, anything else poisoned."""
    return {k: v if plain(v) else _POISON for k, v in policies.items()}


def compile_isolated(
    env: Environment,
    base: type[Environment],
    source: str | nodes.Template,
    name: str | None,
    filename: str | None,
    autoescape: bool,
) -> tuple[types.CodeType, Dependencies]:
    """Compile ``source`` as ``env`` would, but with the application's callables
    non-foldable (see the module docstring); return the code and what it depends on.
    ``base`` is the environment's own class (not the one ``cache_from_string`` gives
    it). Raises whatever the compile raises."""
    copy: Any = object.__new__(base)
    copy.__dict__.update(env.__dict__)
    copy.overlayed = True
    copy.linked_to = env
    copy.cache = None
    filters = _Recording(env.filters)
    tests = _Recording(env.tests)
    copy.filters = filters
    copy.tests = tests
    if env.finalize:
        copy.finalize = _STANDINS[convention(env.finalize)]
    copy.undefined = _NoFoldUndefined
    copy.autoescape = autoescape
    copy.policies = policies_for_compile(env.policies)
    copy.extensions = {key: ext.bind(copy) for key, ext in env.extensions.items()}
    if isinstance(source, nodes.Template):
        # A parsed tree's nodes name the environment the optimizer folds with.
        source.set_environment(copy)
        try:
            code = base.compile(copy, source, name, filename)
        finally:
            source.set_environment(env)
    else:
        code = base.compile(copy, source, name, filename)
    return code, (filters.dependencies(), tests.dependencies())


def compile_for_cache(
    env: Environment,
    base: type[Environment],
    source: str | nodes.Template,
    name: str | None,
    filename: str | None,
    autoescape: bool,
) -> tuple[types.CodeType, Dependencies | None, Exception | None]:
    """:func:`compile_isolated`, and when that fails, the environment's own compile,
    whose exception is then the one the caller gets (raised outside the handler: no
    "during handling" context). Returns the code, its dependencies (None for Jinja's
    code, which is not the cache's to store) and why the isolated compile failed."""
    try:
        code, dependencies = compile_isolated(env, base, source, name, filename, autoescape)
        return code, dependencies, None
    except Exception as exc:
        isolated = exc
    return base.compile(env, source, name, filename), None, isolated


def dependencies_hold(env: Environment, dependencies: Dependencies) -> bool:
    """Whether ``env``'s filters and tests are what the compile that produced an entry
    found (so code generation would write the same code here). This runs on every hit,
    memory hits included: one of Jinja's own functions is recognised by its id alone,
    and only other callables take :func:`signature`."""
    filter_deps, test_deps = dependencies
    own = _OWN_SIGNATURE.get
    try:
        if filter_deps:
            find = env.filters.get
            for name, sig in filter_deps:
                func = find(name)
                if own(id(func)) != sig and signature(func) != sig:
                    return False
        if test_deps:
            find_test = env.tests.get
            for name, sig in test_deps:
                func = find_test(name)
                if own(id(func)) != sig and signature(func) != sig:
                    return False
    except Exception:  # a table that fails a lookup: compile, and let Jinja say why
        return False
    return True


def variant(env: Environment, dependencies: Dependencies) -> str | None:
    """A short digest of what ``env`` has under the names another compile of the same
    template looked up: environments that share a fingerprint but whose filters or
    tests differ where a template uses them keep their entries apart under it (rather
    than overwriting each other's). None when a lookup fails."""
    filter_deps, test_deps = dependencies
    try:
        filters = env.filters
        tests = env.tests
        found = (
            tuple((name, signature(filters.get(name))) for name, _ in filter_deps),
            tuple((name, signature(tests.get(name))) for name, _ in test_deps),
        )
    except Exception:
        return None
    return hashlib.sha256(marshal.dumps(found)).hexdigest()[:16]


def valid_dependencies(value: object) -> bool:
    """Whether an unmarshalled value has the shape of :data:`Dependencies`."""
    if type(value) is not tuple or len(value) != 2:
        return False
    for table in value:
        if type(table) is not tuple:
            return False
        for item in table:
            if (
                type(item) is not tuple
                or len(item) != 2
                or type(item[0]) is not str
                or type(item[1]) is not str
            ):
                return False
    return True


class Compiler:
    """Compiles for one cache, under its control, and writes what it compiled through
    its stack; the time and the outcome go to the cache's recorder and log."""

    __slots__ = ("log", "rec", "stack")

    def __init__(self, stack: TierStack, rec: Recorder, log: RateLimitedLog) -> None:
        self.stack = stack
        self.rec = rec
        self.log = log

    def isolated(
        self,
        env: Environment,
        state: EnvState,
        source: str | nodes.Template,
        name: str | None,
        filename: str | None,
    ) -> tuple[types.CodeType, Dependencies | None]:
        """Compile with the application's callables non-foldable and autoescape as the
        key says for ``name``; where that fails, Jinja's code, uncached (see
        :func:`compile_for_cache`)."""
        flag = state.flag(name)
        autoescape = flag == "e" if flag else bool(state.autoescape)
        started = time.perf_counter()
        try:
            code, dependencies, isolated = compile_for_cache(
                env, state.base, source, name, filename, autoescape
            )
        finally:
            self.rec.compile_seconds += time.perf_counter() - started
        if isolated is not None:
            self.rec.uncached += 1
            self.log.warning(
                "compile:uncached",
                "tiered_bccache: a template compiles in Jinja but not with the cache's "
                "stand-ins for application callables (%r); it is compiled uncached",
                isolated,
            )
        return code, dependencies

    def compile(
        self,
        bucket: Lookup,
        state: EnvState,
        name: str | None,
        filename: str | None,
        source: str,
    ) -> None:
        """Compile the bucket's template, set ``bucket.code`` and write it through."""
        code, dependencies = self.isolated(bucket.environment, state, source, name, filename)
        bucket.code = code
        if dependencies is not None:
            self.rec.compiles += 1
            self.write(bucket.layers, bucket.key, source, bucket.checksum, code, dependencies)

    def write(
        self,
        layers: tuple[Layer, ...],
        key: str,
        source: str,
        checksum: str,
        code: types.CodeType,
        dependencies: Dependencies,
    ) -> None:
        """Write a compile through ``layers`` under ``key`` (and into the trace)."""
        raw = marshal.dumps((dependencies, code))
        self.stack.store(layers, key, source, checksum, code, dependencies, raw)
        if self.rec.trace is not None:
            self.rec.record(key, len(raw))
