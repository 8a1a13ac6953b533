"""What of an Environment goes into the cache key.

Jinja bakes many settings into the code it generates (delimiters, async mode, how each
filter is called, finalize applied to constants at compile time, autoescape...). Jinja's
own caches leave them out of the key, so environments that share a cache get each other's
code (pallets/jinja#1738). Everything that changes generated code is hashed here; nothing
that only matters at render time (loader, globals, undefined, cache sizes) is, so that
environments configured alike in different processes share entries.

The digest must be equal across processes and hosts: no ``id()``, no ``hash()`` of
strings (randomised per process), no reprs that embed memory addresses.

Cost: Jinja's own filters, tests, extensions, code generator and environment classes are
named with Jinja's version (the entry stamp carries it too) instead of being hashed, and
a :class:`Fingerprinter` remembers what it computed: a new Environment configured like
one already seen costs a comparison of its settings with the remembered ones, plus a
re-check of the data that the application's own callables read.
"""

from __future__ import annotations

import copyreg
import enum
import functools
import hashlib
import importlib.util
import inspect
import marshal
import operator
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import Environment
from jinja2.bccache import bc_version
from jinja2.utils import _PassArg

__all__ = [
    "Fingerprinter",
    "autoescape_flag",
    "callable_identity",
    "environment_fingerprint",
]

_LEXER_SETTINGS = (
    "block_start_string",
    "block_end_string",
    "variable_start_string",
    "variable_end_string",
    "comment_start_string",
    "comment_end_string",
    "line_statement_prefix",
    "line_comment_prefix",
    "trim_blocks",
    "lstrip_blocks",
    "newline_sequence",
    "keep_trailing_newline",
)

#: How deep callables inside closures, defaults and state are followed (cycles stop here).
_MAX_DEPTH = 4
#: Beyond this many remembered callables or configurations, the memo starts over.
_MAX_MEMO = 4096
_PLAIN = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))
_WEAK = (weakref.ref, weakref.ProxyType, weakref.CallableProxyType)
_ROUTINES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_JINJA = f"jinja2 {jinja2.__version__} bc{bc_version}"
_PYTHON = f"python {importlib.util.MAGIC_NUMBER.hex()} {sys.implementation.cache_tag}"


def _jinja_own() -> dict[int, tuple[object, str, str]]:
    """Jinja's own filters, tests, extensions, code generator and environments, by id:
    named with Jinja's version rather than hashed (their code ships with that version).
    Only modules already imported are listed (importing the sandbox or the extensions
    would cost a process that uses neither); the table is the same in every process that
    has them, and an object from a module not imported yet is in no environment."""
    modules = sys.modules
    return _own_table(("jinja2.ext" in modules, "jinja2.sandbox" in modules))


_OPTIONAL_MODULES = ("jinja2.ext", "jinja2.sandbox")


@functools.lru_cache(maxsize=4)
def _own_table(loaded: tuple[bool, ...]) -> dict[int, tuple[object, str, str]]:
    from jinja2 import compiler
    from jinja2.filters import FILTERS
    from jinja2.tests import TESTS

    own: dict[int, tuple[object, str, str]] = {}

    def add(obj: Any, name: str, pass_arg: str = "-") -> None:
        own[id(obj)] = (obj, f"jinja2:{name}@{jinja2.__version__}", pass_arg)

    for kind, table in (("filter", FILTERS), ("test", TESTS)):
        for name, func in table.items():
            add(func, f"{kind}.{name}", _pass_arg(func))
    modules = [compiler, jinja2.environment]
    modules += [sys.modules[m] for m, there in zip(_OPTIONAL_MODULES, loaded, strict=True) if there]
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__:
                add(value, f"{module.__name__}.{name}")
                if module.__name__ == "jinja2.ext":
                    # The i18n extension puts bound methods on the environment
                    # (install_gettext_translations...).
                    for attr, member in vars(value).items():
                        if isinstance(member, types.FunctionType):
                            add(member, f"{module.__name__}.{name}.{attr}")
    return own


def _names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` and the code nested in it read, sorted."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_names(const))
    return tuple(sorted(names))


_names_of = functools.lru_cache(maxsize=4096)(_names)  # code objects are immutable


def _state(obj: object, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """An object's data: its ``__dict__`` and every ``__slots__`` value up its classes.
    An object that will not say (a context-local proxy raising outside its context) is
    described as undescribable, never an error in a render."""
    try:
        state: dict[str, object] = {
            k: v for k, v in (getattr(obj, "__dict__", None) or {}).items() if k not in skip
        }
        for cls in type(obj).__mro__:
            slots = cls.__dict__.get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                    state[f"{cls.__qualname__}.{slot}"] = getattr(obj, slot)
    except Exception:
        return {"<state>": _Undescribable()}
    return state


class _Undescribable:
    """Stands for data that could not be read: it has no pickle form, so it fails the
    fingerprint closed (private to the process)."""

    def __reduce_ex__(self, protocol: object) -> Any:
        raise TypeError("undescribable")


def _inputs(obj: Any) -> tuple[str, tuple[object, ...]]:
    """What a routine's identity is made of: a name, and the data its result depends on
    (code, defaults, closure cells, the module constants it reads, its bound object)."""
    func: Any = getattr(obj, "__func__", obj)  # bound methods
    qualname = getattr(func, "__qualname__", type(func).__qualname__)
    name = f"{getattr(func, '__module__', '?')}.{qualname}"
    inputs: list[object] = []
    code = getattr(func, "__code__", None)
    if code is not None:
        try:
            cells = tuple(c.cell_contents for c in getattr(func, "__closure__", None) or ())
        except ValueError:  # a cell not yet filled
            cells = ()
        module_globals = getattr(func, "__globals__", {})
        # Module-level values the code reads by name (a CURRENCY constant in a filter).
        used = tuple(
            (n, module_globals[n])
            for n in _names_of(code)
            if n in module_globals and not isinstance(module_globals[n], types.ModuleType)
        )
        inputs.append(
            (code, (func.__defaults__, getattr(func, "__kwdefaults__", None)), cells, used)
        )
    owner = getattr(obj, "__self__", None)
    if owner is not None and not isinstance(owner, (types.ModuleType, type)):
        inputs.append(("self", _read_state(owner, func)))
    return name, tuple(inputs)


def _read_state(owner: object, func: Any) -> dict[str, object]:
    """What ``func``, called on ``owner``, can read of it: the attributes named in its
    code and in the code of the methods it reaches through ``self`` (instance data, and
    class-level data and methods). A method of a large object (Flask's
    ``select_jinja_autoescape`` on the app) thus depends on what it reads, not on the
    whole application; code that reads attributes by computed name gets the whole
    state."""
    cls: Any = type(owner)
    names = _names_read(cls, func)
    if names is None:
        return _state(owner, ("environment",))
    state = _state(owner, ("environment",))
    read: dict[str, object] = {k: v for k, v in state.items() if k.rpartition(".")[2] in names}
    for name in sorted(names - read.keys()):
        try:
            member = inspect.getattr_static(type(owner), name)
        except AttributeError:
            continue
        if not isinstance(member, (types.MemberDescriptorType, types.GetSetDescriptorType)):
            read[f"class.{name}"] = _member(member)
    return read


#: Names whose presence in code means "any attribute, by computed name".
_DYNAMIC = frozenset(("__dict__", "getattr", "vars", "__getattribute__", "__getattr__"))


@functools.lru_cache(maxsize=1024)
def _names_read(cls: Any, func: Any) -> frozenset[str] | None:
    """The names ``func``'s code reads, followed through the methods of ``cls`` it
    names; None when the code may read attributes by computed name."""
    names: set[str] = set()
    seen: set[int] = set()
    stack = [func]
    while stack:
        current = stack.pop()
        code = getattr(current, "__code__", None)
        if code is None or id(code) in seen:
            continue
        seen.add(id(code))
        for name in _names_of(code):
            if name in _DYNAMIC:
                return None
            names.add(name)
            try:
                member = _member(inspect.getattr_static(cls, name))
            except AttributeError:
                continue
            members = member[1:] if isinstance(member, tuple) else (member,)
            stack += [m for m in members if isinstance(m, types.FunctionType)]
    return frozenset(names)


class Fingerprinter:
    """Computes environment fingerprints and remembers what it computed.

    A memo entry is reused only when the data it was computed from is still the same: the
    settings compare equal and identical, and the data the application's callables read
    (closure cells, defaults, module constants, object state) is described again and
    compared. Only the hashing and Jinja's own objects are skipped. Safe under threads
    (at worst two threads compute the same value).
    """

    __slots__ = (
        "_configs",
        "_identities",
        "_lock",
        "_mappings",
        "_opaque",
        "_plain",
        "_private",
        "_salt",
    )

    def __init__(self) -> None:
        #: id(obj) and depth -> (obj, canonical inputs, identity, private)
        self._identities: dict[tuple[int, int], tuple[object, object, str, bool]] = {}
        #: memo key -> [(filters, tests, fingerprint, private, (callable, identity) pairs
        #: to re-check)]
        self._configs: dict[object, list[_Config]] = {}
        #: filters or tests (as items) -> their lines, None where a callable is not Jinja's
        self._mappings: dict[tuple[object, ...], tuple[str | None, ...]] = {}
        #: marshal bytes of plain data -> its digest
        self._plain: dict[bytes, str] = {}
        #: Values that cannot be described, kept alive so their ids stay theirs.
        self._opaque: dict[int, tuple[object, str]] = {}
        self._salt = os.urandom(8).hex()
        self._private = False
        self._lock = threading.RLock()

    # -- identities of callables --------------------------------------------------------

    def identity(self, obj: object, depth: int = 0) -> str:
        """A name for a callable that is stable across processes: where it is defined,
        and a digest of its code and of the data it computes with (closure cells,
        defaults, bound arguments, the state of a bound or callable object), so that two
        lambdas in one module, two closures from one factory, or two configured objects
        of one class do not look alike. Jinja calls finalize, and filters and tests
        applied to constants, at compile time: what they return is baked into the code."""
        own = _jinja_own()
        known = own.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        if isinstance(obj, types.MethodType):
            known = own.get(id(obj.__func__))
            if known is not None and known[0] is obj.__func__:
                # One of Jinja's methods: bound to one of Jinja's objects (the i18n
                # extension's install_gettext_translations...) it is named; bound to
                # another object, that object's data may matter.
                owner = own.get(id(type(obj.__self__)))
                if owner is not None and owner[0] is type(obj.__self__):
                    return known[1]
                state = _read_state(obj.__self__, obj.__func__)
                return f"{known[1]}@{self._digest(state)}"
        if isinstance(obj, functools.partial):
            return (
                f"partial({self.identity(obj.func, depth + 1)})"
                f"#{self._digest((obj.args, obj.keywords), depth)}"
            )
        if isinstance(obj, type):
            name, inputs = _class_inputs(obj)
        elif isinstance(obj, _ROUTINES):
            name, inputs = _inputs(obj)
        else:
            # A callable object: its class's __call__, and what it reads of the object.
            call = type(obj).__call__
            state = _read_state(obj, getattr(call, "__func__", call))
            return f"instance({self.identity(call, depth + 1)})@{self._digest(state, depth)}"
        if not inputs:
            return name
        key = (id(obj), depth)
        private = self._private
        self._private = False
        try:
            canonical = self._canonical(inputs, depth)
            memo = self._identities.get(key)
            if memo is not None and memo[0] is obj and memo[1] == canonical:
                self._private = memo[3]
                return memo[2]
            identity = f"{name}#{_hash(canonical)}"
            if len(self._identities) >= _MAX_MEMO:
                self._identities.clear()
            self._identities[key] = (obj, canonical, identity, self._private)
            return identity
        finally:
            self._private = private or self._private

    def _digest(self, value: object, depth: int = 0) -> str:
        try:
            # Plain data (policies, options) marshals in C: its bytes are a cheap memo
            # key. Anything marshal refuses (a function, Markup) is described each time.
            raw = marshal.dumps(value, 2)  # type: ignore[arg-type]
        except ValueError:
            return _hash(self._canonical(value, depth))
        digest = self._plain.get(raw)
        if digest is None:
            digest = _hash(self._canonical(value, depth))
            if len(self._plain) >= _MAX_MEMO:
                self._plain.clear()
            self._plain[raw] = digest
        return digest

    def _canonical(self, value: object, depth: int = 0) -> Any:
        """``value`` as data marshal writes the same way in every process: plain data as
        it is, callables by :meth:`identity`, anything else by its type."""
        cls = type(value)
        if cls in _PLAIN:
            # A bool and an int compare equal; the memo compares canonical forms.
            return ("bool", value) if cls is bool else value
        if cls is tuple or cls is list:
            return tuple([self._canonical(item, depth) for item in value])  # type: ignore[attr-defined]
        if cls is dict:
            return (
                "dict",
                tuple(
                    [
                        (self._canonical(k, depth), self._canonical(v, depth))
                        for k, v in value.items()  # type: ignore[attr-defined]
                    ]
                ),
            )
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        if depth > _MAX_DEPTH:
            return f"<{kind}>"
        if isinstance(value, enum.Enum):
            return ("enum", kind, value.name)
        for base in (bool, int, float, complex, str, bytes):
            if isinstance(value, base):
                # Markup and other subclasses of plain types: the type and the plain value.
                convert: Callable[[Any], Any] = base
                return ("sub", kind, convert(value))
        if isinstance(value, types.CodeType):
            return (
                "code",
                value.co_code,
                self._canonical(value.co_consts, depth),
                value.co_names,
            )
        if isinstance(value, (tuple, list)):
            return tuple(self._canonical(item, depth) for item in value)
        if isinstance(value, dict):
            return (
                "dict",
                tuple(
                    (self._canonical(k, depth), self._canonical(v, depth)) for k, v in value.items()
                ),
            )
        if isinstance(value, (set, frozenset)):
            # Before Python 3.11 marshal writes a set in hash order, which is per process.
            return (
                "set",
                tuple(sorted(marshal.dumps(self._canonical(item, depth), 2) for item in value)),
            )
        if isinstance(value, _WEAK):
            # A weak reference points at an object owned elsewhere, most often back at
            # a container (Flask's JSON provider at its app): following it would describe
            # the world. The reference is data; what it points at is not.
            return ("weakref",)
        if callable(value):
            return ("callable", self.identity(value, depth + 1))
        if isinstance(value, types.ModuleType):
            return ("module", value.__name__)
        # Anything else (a Decimal, a configured object) is what it pickles to. Failing
        # that, fail closed: a token of this process only, so that this environment's
        # entries stay in the process's memory tiers rather than being shared wrongly.
        try:
            reducer = copyreg.dispatch_table.get(type(value))  # re.Pattern pickles this way
            reduced = reducer(value) if reducer is not None else value.__reduce_ex__(2)
        except Exception:
            return ("opaque", kind, self._opaque_token(value, kind))
        if isinstance(reduced, str):
            return ("global", kind, reduced)
        return ("reduced", kind, self._canonical(tuple(reduced)[1:], depth + 1))

    def _opaque_token(self, value: object, kind: str) -> str:
        self._private = True
        known = self._opaque.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        from .stats import logger

        logger().warning(
            "tiered_bccache: cannot describe a %s that a compile-time callable uses; "
            "this environment's entries stay in this process's memory tiers",
            kind,
        )
        token = f"{self._salt}:{len(self._opaque)}"
        self._opaque[id(value)] = (value, token)
        return token

    # -- environments -------------------------------------------------------------------

    def fingerprint(self, env: Environment) -> tuple[str, bool]:
        """``(digest, private)``: a 32-hex-digit digest of every setting of ``env`` that
        changes generated code, plus the Python and Jinja versions; ``private`` is True
        when some value could not be described, so the digest holds a token of this
        process and the entries must not leave it. Autoescape is here only when it is a
        bool; a callable autoescape is per template (see :func:`autoescape_flag`)."""
        with self._lock:
            key = self._memo_key(env)
            # Seen before: the same settings and the same objects. Only what the
            # application's own callables read (closure cells, module constants, object
            # state) may have changed since; describe that again and compare.
            for filters, tests, digest, private, checks in self._configs.get(key, ()):
                if (
                    filters == env.filters
                    and tests == env.tests
                    and all(self.identity(o) == i for o, i in checks)
                ):
                    return digest, private
            self._private = False
            parts = [*self._settings_part(env), *self._callables_part(env)]
            private, self._private = self._private, False
            digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32]
            if key is not None:
                checks = tuple((o, self.identity(o)) for o in _not_jinjas(env))
                seen = self._configs.setdefault(key, [])
                if len(self._configs) >= _MAX_MEMO or len(seen) >= 8:
                    self._configs.clear()
                    seen = self._configs.setdefault(key, [])
                seen.append((dict(env.filters), dict(env.tests), digest, private, checks))
            return digest, private

    def _option(self, value: object) -> object:
        """An attribute a plain Environment lacks, as data: an extension's option (plain
        data, a callable) as it is; any other object (the Flask app Flask's environment
        keeps for its loader) by its type, since an extension's options are data and
        describing an application object would describe the whole application."""
        if isinstance(value, (*_ROUTINES, functools.partial, type, types.ModuleType)):
            if isinstance(value, types.MethodType):
                # By the function and the class it is bound to, not the object's state.
                owner = type(value.__self__)
                return ("method", value.__func__, f"{owner.__module__}.{owner.__qualname__}")
            return value
        try:
            marshal.dumps(value, 2)  # type: ignore[arg-type]
        except ValueError:
            kind = type(value)
            return ("object", f"{kind.__module__}.{kind.__qualname__}")
        return value

    def _memo_key(self, env: Environment) -> tuple[object, ...] | None:
        """A key equal for environments whose settings other than filters and tests are
        the same, with the same objects; None when something cannot be keyed cheaply (a
        third-party extension, an unhashable value), and the fingerprint is computed in
        full. Filters and tests are compared as dicts (identity of the callables)."""
        own = _jinja_own()
        extensions = []
        for name, ext in sorted(env.extensions.items()):
            known = own.get(id(type(ext)))
            if known is None or known[0] is not type(ext) or not vars(ext).keys() <= _EXT_OWN:
                return None
            extensions.append((name, type(ext), ext.priority))
        extended: list[object] = []
        for name in sorted(vars(env).keys() - _not_extended()):
            value = getattr(env, name)
            if type(value) in _PLAIN:
                extended.append((name, type(value), value))
                continue
            # One of Jinja's methods bound to one of Jinja's objects (the i18n
            # extension's install_gettext_translations...).
            func = getattr(value, "__func__", None)
            known = own.get(id(func))
            owner = own.get(id(type(getattr(value, "__self__", None))))
            if known is None or known[0] is not func or owner is None:
                return None
            extended.append((name, func))
        try:
            policies = marshal.dumps(env.policies, 2)
            key = (_snapshot(env), tuple(extensions), tuple(extended), policies)
            hash(key)
        except (ValueError, TypeError):  # not plain data, or not hashable
            return None
        return key

    def _settings_part(self, env: Environment) -> list[str]:
        """What the snapshot compares exactly (plain values and classes)."""
        parts = [
            _PYTHON,
            _JINJA,
            f"async {env.is_async}",
            f"optimized {env.optimized}",
            f"binops {sorted(getattr(env, 'intercepted_binops', ()))}",
            f"unops {sorted(getattr(env, 'intercepted_unops', ()))}",
        ]
        parts += [f"{name} {getattr(env, name)!r}" for name in _LEXER_SETTINGS]
        if not callable(env.autoescape):
            parts.append(f"autoescape {bool(env.autoescape)}")
        return parts

    def _callables_part(self, env: Environment) -> tuple[str, ...]:
        """What depends on objects whose data may change in place: described again on
        every new environment (cheap for Jinja's own, which are named)."""
        parts = [
            f"class {self.identity(_env_class(env))}",
            f"codegen {self.identity(env.code_generator_class)}",
        ]
        if callable(env.autoescape):
            parts.append(f"autoescape per-template {self.identity(env.autoescape)}")
        if env.finalize is None:
            parts.append("finalize none")
        else:
            # Without a pass_* decorator finalize runs on constants at compile time, so
            # its identity, not only its calling convention, is baked into the code.
            finalize = env.finalize
            parts.append(f"finalize {_pass_arg(finalize)} {self.identity(finalize)}")
        for ext_name in sorted(env.extensions):
            ext = env.extensions[ext_name]
            parts.append(
                f"ext {ext_name} priority={ext.priority} {self.identity(type(ext))}"
                f" state={self._digest(_state(ext, ('environment',)))}"
            )
        # What extensions put on the environment with extend() (newstyle_gettext, a
        # third-party extension's options): attributes a plain Environment lacks.
        extra = sorted(vars(env).keys() - _not_extended())
        extended = [(n, self._option(getattr(env, n))) for n in extra]
        parts.append(f"extended {self._digest(extended)}")
        # Policies: filters folded at compile time read them (urlize.*, truncate.leeway,
        # json.*), and the i18n extension reads ext.i18n.trimmed while parsing.
        parts.append(f"policies {self._digest(sorted(env.policies.items()))}")
        parts += self._calling_conventions("filter", env.filters)
        parts += self._calling_conventions("test", env.tests)
        return tuple(parts)

    def _calling_conventions(self, kind: str, mapping: Mapping[str, Any]) -> list[str]:
        # The compiler writes ``context``, ``eval_ctx`` or ``environment`` into the call
        # of each filter and test depending on how it is decorated, and refuses unknown
        # names; the optimizer calls them on constants, so what they compute is baked in.
        # Jinja's own are named; the lines of a mapping seen before are reused, and only
        # the application's callables are described again.
        items = tuple(mapping.items())
        try:
            memo = self._mappings.get(items)
        except TypeError:  # a callable object that is not hashable
            memo, items = None, ()
        if memo is None:
            own = _jinja_own()
            lines: list[str | None] = []
            for name in sorted(mapping):
                func = mapping[name]
                known = own.get(id(func))
                lines.append(
                    f"{kind} {name}={known[2]} {known[1]}"
                    if known is not None and known[0] is func
                    else None
                )
            memo = tuple(lines)
            if items:
                if len(self._mappings) >= _MAX_MEMO:
                    self._mappings.clear()
                self._mappings[items] = memo
        if None not in memo:
            return list(memo)  # type: ignore[arg-type]
        names = sorted(mapping)
        return [
            line
            if line is not None
            else f"{kind} {names[i]}={_pass_arg(mapping[names[i]])} "
            f"{self.identity(mapping[names[i]])}"
            for i, line in enumerate(memo)
        ]


_Config = tuple[dict[str, Any], dict[str, Any], str, bool, tuple[tuple[object, str], ...]]
#: What Jinja's own extensions hold: a reference to their environment, nothing else.
_EXT_OWN = frozenset(("environment",))


def _not_jinjas(env: Environment) -> list[object]:
    """The callables and classes of ``env`` that are not Jinja's own: the objects whose
    data may change in place and is described again on every new environment."""
    own = _jinja_own()
    candidates = [*env.filters.values(), *env.tests.values(), _env_class(env)]
    candidates += [env.code_generator_class, env.autoescape, env.finalize]
    return [
        obj
        for obj in candidates
        if callable(obj) and (own.get(id(obj)) is None or own[id(obj)][0] is not obj)
    ]


def _class_inputs(cls: type) -> tuple[str, tuple[object, ...]]:
    """A class's identity: its name and, for each class up its MRO that is neither
    Jinja's nor the standard library's, what it defines (methods by identity, other
    attributes by value). A subclass overriding a compiler method writes other code."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    own = _jinja_own()
    bodies: list[object] = []
    for base in cls.__mro__:
        known = own.get(id(base))
        if known is not None and known[0] is base:
            bodies.append(known[1])
        elif base.__module__.partition(".")[0] not in sys.stdlib_module_names:
            members = {
                k: _member(v)
                for k, v in sorted(vars(base).items())
                if k not in _CLASS_NOISE
                and not k.startswith("_abc")
                and not isinstance(v, (types.MemberDescriptorType, types.GetSetDescriptorType))
            }
            bodies.append((f"{base.__module__}.{base.__qualname__}", members))
    return name, tuple(bodies)


#: Attributes environments carry beyond a plain one's that only matter at render time
#: (the sandbox's operator tables; ``intercepted_binops`` is what the compiler reads).
_RENDER_TIME = frozenset(("binop_table", "unop_table"))
_CLASS_NOISE = frozenset(("__dict__", "__weakref__", "__doc__", "__module__", "__slots__"))


def _member(value: object) -> object:
    """A class attribute as the data behind it (descriptors unwrapped)."""
    if isinstance(value, (staticmethod, classmethod)):
        return (type(value).__name__, value.__func__)
    if isinstance(value, property):
        return ("property", value.fget, value.fset, value.fdel)
    if isinstance(value, functools.cached_property):
        return ("cached_property", value.func)
    return value


@functools.lru_cache(maxsize=1)
def _not_extended() -> frozenset[str]:
    """The attributes of an environment that are not extension settings: those of a
    plain Environment, and the sandbox's render-time operator tables."""
    return frozenset(vars(Environment())) | _RENDER_TIME


def _snapshot(env: Environment) -> tuple[object, ...]:
    """Everything :meth:`Fingerprinter._settings_part` reads, plus the identity of every
    callable and extension: equal snapshots mean equal settings parts, and the same
    callables (whose data :meth:`Fingerprinter._callables_part` re-checks)."""
    return (
        _env_class(env),
        env.code_generator_class,
        env.is_async,
        env.optimized,
        getattr(env, "intercepted_binops", None),
        getattr(env, "intercepted_unops", None),
        _lexer_settings(env),
        env.autoescape,
        env.finalize,
    )


_lexer_settings = operator.attrgetter(*_LEXER_SETTINGS)


def _env_class(env: Environment) -> type:
    """The environment's class, seen through the subclass ``cache_from_string`` gives
    it (which overrides ``from_string`` only and changes no generated code)."""
    cls = type(env)
    base: type | None = getattr(cls, "_tiered_bccache_base", None)
    return base if base is not None else cls


def _hash(canonical: object) -> str:
    # Version 2: from version 3 on, marshal flags every object whose refcount is above
    # one, so the bytes would depend on who else happens to hold a constant.
    return hashlib.sha256(marshal.dumps(canonical, 2)).hexdigest()[:16]  # type: ignore[arg-type]


def _pass_arg(func: Any) -> str:
    pass_arg = _PassArg.from_obj(func)
    return pass_arg.name if pass_arg is not None else "-"


def callable_identity(obj: object) -> str:
    """:meth:`Fingerprinter.identity` computed afresh."""
    return Fingerprinter().identity(obj)


def environment_fingerprint(env: Environment) -> str:
    """The digest :meth:`Fingerprinter.fingerprint` gives, computed afresh."""
    return Fingerprinter().fingerprint(env)[0]


def autoescape_flag(env: Environment, name: str | None) -> str:
    """The per-template part of the key: ``"e"`` or ``"r"`` when autoescape is a function
    of the template name (``select_autoescape``), empty when it is a plain bool."""
    autoescape = env.autoescape
    if not callable(autoescape):
        return ""
    return "e" if autoescape(name) else "r"
