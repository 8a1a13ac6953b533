"""What of an Environment goes into the cache key.

The cache compiles with the application's callables made non-foldable (see
:mod:`tiered_bccache.compiling`), so the code depends only on what code generation reads:
the syntax and lexer settings, async mode, ``optimized``, the sandbox's intercepted
operators, the classes whose code generates or parses (the Environment class, the code
generator, the extensions), the extensions' options, the policies Jinja's own filters
read when they are folded, whether ``finalize`` is set and how it is called, and whether
autoescape is a bool or chosen per template. Filters and tests are not in the key: an
entry carries what its compile found under each name it looked up, and a lookup checks
that against the environment at hand.

Nothing here describes what an application callable computes, and nothing holds an
application object: classes are remembered weakly, everything else is reduced to plain
data at once. The digest is equal across processes and hosts (no ``id()``, no
``hash()`` of strings, no reprs with addresses).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.util
import marshal
import operator
import sys
import threading
import types
import weakref
from typing import Any

import jinja2
from jinja2 import Environment
from jinja2.bccache import bc_version

from .compiling import convention, own_class, plain

__all__ = ["Fingerprinter", "Unkeyable", "environment_fingerprint"]

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
_lexer_settings = operator.attrgetter(*_LEXER_SETTINGS)

#: Bumped whenever what the key covers changes.
_KEY_VERSION = "key 3"
_JINJA = f"jinja2 {jinja2.__version__} bc{bc_version}"
_PYTHON = f"python {importlib.util.MAGIC_NUMBER.hex()} {sys.implementation.cache_tag}"
#: Beyond this many remembered configurations, the memo starts over.
_MAX_MEMO = 4096
#: How many values describing one class may take (a class holding a huge table is
#: not described, and its environments are not shared).
_CLASS_BUDGET = 20_000
_ROUTINES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_CLASS_NOISE = frozenset(("__dict__", "__weakref__", "__doc__", "__module__", "__slots__"))
#: Attributes environments carry beyond a plain one's that only matter at render time
#: (the sandbox's operator tables; ``intercepted_binops`` is what the compiler reads).
_RENDER_TIME = frozenset(("binop_table", "unop_table"))


class Unkeyable(Exception):
    """Something of the environment cannot be reduced to plain data: its entries must not
    leave the process."""


def _jinja_module(name: str) -> bool:
    return name == "jinja2" or name.startswith("jinja2.")


def _describe_code(code: types.CodeType, budget: list[int]) -> tuple[object, ...]:
    """A code object as plain data: what it does, not where it was loaded."""
    budget[0] -= 1
    if budget[0] < 0:
        raise Unkeyable("class too large to describe")
    consts = tuple(
        ("code", _describe_code(c, budget)) if isinstance(c, types.CodeType) else _const(c)
        for c in code.co_consts
    )
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_argcount)


def _const(value: object) -> object:
    if type(value) in (frozenset, set):
        # Sets marshal in hash order, which differs between processes.
        return ("set", tuple(sorted(repr(v) for v in value)))  # type: ignore[attr-defined]
    if type(value) is tuple:
        return tuple(_const(v) for v in value)
    return value


class Fingerprinter:
    """Computes environment fingerprints and remembers the parts that cost: a digest per
    configuration (a tuple of plain data) and a key per class (weakly, by the class
    object). Safe under threads."""

    __slots__ = ("_classes", "_digests", "_lock")

    def __init__(self) -> None:
        #: id(class) -> (a weak reference to it, its key or None when it cannot be
        #: described); an entry leaves with its class.
        self._classes: dict[int, tuple[weakref.ref[type], str | None]] = {}
        #: configuration (plain data) -> digest
        self._digests: dict[tuple[object, ...], str] = {}
        self._lock = threading.Lock()

    def fingerprint(self, env: Environment, base: type[Environment]) -> str:
        """A 32-hex-digit digest of every setting of ``env`` that code generation reads
        (``base`` is the environment's own class). Raises :class:`Unkeyable` when some
        of it cannot be reduced to plain data; any other exception means the
        environment could not be read at all."""
        config = self.configuration(env, base)
        try:
            digest = self._digests.get(config)
        except TypeError:  # a setting that is not even hashable
            raise Unkeyable("a setting is not plain data") from None
        if digest is None:
            try:
                data = marshal.dumps(config, 2)  # type: ignore[arg-type]
            except ValueError:
                raise Unkeyable("a lexer setting is not plain data") from None
            digest = hashlib.sha256(data).hexdigest()[:32]
            with self._lock:
                if len(self._digests) >= _MAX_MEMO:
                    self._digests.clear()
                self._digests[config] = digest
        return digest

    def configuration(self, env: Environment, base: type[Environment]) -> tuple[object, ...]:
        """What the digest is computed from. Plain data once the fingerprint has checked
        that it marshals (the lexer settings are taken as they are: a value that equals
        a plain one lexes as that one)."""
        autoescape = env.autoescape
        finalize = env.finalize
        extensions = env.extensions
        return (
            _KEY_VERSION,
            _PYTHON,
            _JINJA,
            self.class_key(base),
            self.class_key(env.code_generator_class),
            bool(env.is_async),
            bool(env.optimized),
            tuple(sorted(getattr(env, "intercepted_binops", ()))),
            tuple(sorted(getattr(env, "intercepted_unops", ()))),
            _lexer_settings(env),
            "per-template" if callable(autoescape) else bool(autoescape),
            convention(finalize) if finalize else None,
            self._extensions(extensions) if extensions else (),
            self._extended(env),
            _policies(env.policies),
        )

    def class_key(self, cls: type) -> str:
        """A class's key: Jinja's own by name (the key carries Jinja's version), an
        application's by name and what it defines up its MRO, computed once per class
        object."""
        known = self._classes.get(id(cls))
        if known is not None and known[0]() is cls:
            key = known[1]
        else:
            key = _class_key(cls)
            try:
                ref = weakref.ref(cls, functools.partial(self._forget, id(cls)))
            except TypeError:  # not weakly referenceable: described each time
                pass
            else:
                with self._lock:
                    self._classes[id(cls)] = (ref, key)
        if key is None:
            raise Unkeyable(f"class {cls.__module__}.{cls.__qualname__} cannot be described")
        return key

    def _forget(self, cls_id: int, ref: weakref.ref[type]) -> None:
        known = self._classes.get(cls_id)
        if known is not None and known[0] is ref:
            del self._classes[cls_id]

    def forget(self, *classes: type) -> None:
        """Describe these classes again next time (their code was patched in place)."""
        with self._lock:
            for cls in classes:
                self._classes.pop(id(cls), None)

    def _extensions(self, extensions: dict[str, Any]) -> tuple[object, ...]:
        parts = []
        for name in sorted(extensions):
            ext = extensions[name]
            state: tuple[object, ...] = ()
            attributes = vars(ext)
            if attributes.keys() != _ENVIRONMENT_ONLY:  # Jinja's own hold nothing else
                state = tuple(sorted((k, v) for k, v in attributes.items() if k != "environment"))
                if not plain(state):
                    raise Unkeyable(f"extension {name} holds options that are not plain data")
            parts.append((name, ext.priority, self.class_key(type(ext)), state))
        return tuple(parts)

    def _extended(self, env: Environment) -> tuple[object, ...]:
        """What extensions put on the environment with ``extend()`` (``newstyle_gettext``,
        a third-party extension's options) and what subclasses add in ``__init__``:
        attributes a plain Environment lacks. Plain data by value; a method of an
        extension class by its class's key and name; any other object by its type (the
        Flask app Flask's environment keeps for its loader); a free-standing function
        cannot be described."""
        attributes = vars(env)
        names = attributes.keys() - _not_extended()
        if not names:
            return ()
        extensions = {id(ext): ext.identifier for ext in env.extensions.values()}
        parts: list[tuple[object, ...]] = []
        for name in sorted(names):
            value = attributes[name]
            kind = type(value)
            if kind in _SCALARS:
                parts.append((name, "=", value))
            elif kind is types.MethodType and id(value.__self__) in extensions:
                # A method of one of this environment's extensions (the i18n extension's
                # install_gettext_translations...), whose class the key has already.
                parts.append((name, "method", extensions[id(value.__self__)], value.__name__))
            elif kind is types.MethodType and _is_extension(value.__self__):
                owner = self.class_key(type(value.__self__))
                parts.append((name, "method", owner, value.__func__.__name__))
            elif isinstance(value, type):
                parts.append((name, "class", self.class_key(value)))
            elif isinstance(value, (*_ROUTINES, functools.partial)):
                raise Unkeyable(f"environment attribute {name} is a function")
            elif plain(value):
                parts.append((name, "=", value))
            else:
                parts.append((name, "object", self.class_key(kind)))
        return tuple(parts)


_ENVIRONMENT_ONLY = {"environment": None}.keys()
_SCALARS = frozenset((type(None), bool, int, float, str, bytes))


def _is_extension(value: object) -> bool:
    ext = sys.modules.get("jinja2.ext")  # not imported: no extension exists
    return ext is not None and isinstance(value, ext.Extension)


def _policies(policies: dict[str, Any]) -> bytes:
    """The policies Jinja's own filters read when folded (``urlize.*``,
    ``truncate.leeway``, ``json.*``) and the i18n extension reads while parsing: plain
    data by value; anything else is made to raise at compile time (see
    :func:`tiered_bccache.compiling.policies_for_compile`), so only its presence counts."""
    try:
        return marshal.dumps(policies, 2)
    except (ValueError, TypeError):
        items = sorted((k, v if plain(v) else ("<not plain data>",)) for k, v in policies.items())
        return marshal.dumps(items, 2)


def _class_key(cls: type) -> str | None:
    """A class's name, and for each class up its MRO that is neither Jinja's nor the
    standard library's, what it defines: functions by their code, nested classes by
    name, plain data by value, other objects by their type. None when it cannot be
    described within the budget."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _jinja_module(cls.__module__):
        return name
    budget = [_CLASS_BUDGET]
    bodies: list[object] = []
    try:
        for base in cls.__mro__:
            module = base.__module__
            if _jinja_module(module):
                bodies.append(f"{module}.{base.__qualname__}")
                continue
            if _stdlib(base):
                continue
            members = []
            for attr, value in sorted(vars(base).items()):
                if attr in _CLASS_NOISE or attr.startswith("_abc"):
                    continue
                members.append((attr, _member(value, budget)))
            bodies.append((f"{module}.{base.__qualname__}", tuple(members)))
        digest = hashlib.sha256(marshal.dumps(tuple(bodies), 2)).hexdigest()[:16]  # type: ignore[arg-type]
    except Exception:  # a class that will not say what it holds is not described
        return None
    return f"{name}#{digest}"


def _stdlib(cls: type) -> bool:
    """Whether ``cls`` is the standard library's (it ships with the Python the key
    names). A class made by ``exec`` claims the module ``builtins``: it is not."""
    module = sys.modules.get(cls.__module__)
    return (
        cls.__module__.partition(".")[0] in sys.stdlib_module_names
        and getattr(module, cls.__name__, None) is cls
    )


def _member(value: object, budget: list[int]) -> object:
    """A class attribute as plain data."""
    if isinstance(value, (staticmethod, classmethod)):
        return (type(value).__name__, _member(value.__func__, budget))
    if isinstance(value, property):
        return ("property", *(_member(f, budget) for f in (value.fget, value.fset, value.fdel)))
    code = getattr(value, "__code__", None)
    if isinstance(code, types.CodeType):
        return ("function", _describe_code(code, budget))
    if isinstance(value, type):
        return ("class", f"{value.__module__}.{value.__qualname__}")
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, value.name)
    if isinstance(value, (frozenset, set)):
        return _const(value) if plain(tuple(value)) else ("set",)
    if plain(value):
        return value
    kind = type(value)
    return ("object", f"{kind.__module__}.{kind.__qualname__}")


_NOT_EXTENDED: frozenset[str] | None = None


def _not_extended() -> frozenset[str]:
    """The attributes of an environment that are not extension settings: those of a
    plain Environment, and the sandbox's render-time operator tables."""
    global _NOT_EXTENDED
    if _NOT_EXTENDED is None:
        _NOT_EXTENDED = frozenset(vars(Environment())) | _RENDER_TIME
    return _NOT_EXTENDED


def environment_fingerprint(env: Environment) -> str:
    """The digest :meth:`Fingerprinter.fingerprint` gives, computed afresh."""
    return Fingerprinter().fingerprint(env, own_class(env))
