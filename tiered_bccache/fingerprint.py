"""What of an Environment goes into the cache key.

Jinja bakes many settings into the code it generates (delimiters, async mode, how each
filter is called, finalize applied to constants at compile time, autoescape...). Jinja's
own caches leave them out of the key, so environments that share a cache get each other's
code (pallets/jinja#1738). Everything that changes generated code is hashed here; nothing
that only matters at render time (loader, globals, undefined, cache sizes) is, so that
environments configured alike in different processes share entries.

The digest must be equal across processes and hosts: no ``id()``, no ``hash()`` of
strings (randomised per process), no reprs that embed memory addresses.
"""

from __future__ import annotations

import copyreg
import enum
import functools
import hashlib
import importlib.util
import logging
import marshal
import secrets
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import Environment
from jinja2.bccache import bc_version
from jinja2.utils import _PassArg

__all__ = ["autoescape_flag", "environment_fingerprint", "environment_shape"]

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
#: Attributes that extensions set on the environment and that change what they parse.
_EXTENSION_SETTINGS = ("newstyle_gettext",)


#: How deep callables inside closures, defaults and state are followed (cycles stop here).
_MAX_DEPTH = 4
_PLAIN = (type(None), bool, int, float, complex, str, bytes, type(Ellipsis))
_ROUTINES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
    type,
)


def callable_identity(obj: object, _depth: int = 0) -> str:
    """A name for a callable that is stable across processes: where it is defined, and a
    digest of its code and of the data it computes with (closure cells, defaults, bound
    arguments, the state of a bound or callable object), so that two lambdas in one module,
    two closures from one factory, or two configured objects of one class do not look
    alike. Jinja calls finalize, and filters and tests applied to constants, at compile
    time: what they return is baked into the code."""
    if isinstance(obj, functools.partial):
        bound = _digest((obj.args, obj.keywords), _depth)
        return f"partial({callable_identity(obj.func, _depth + 1)})#{bound}"
    if not isinstance(obj, _ROUTINES):
        # A callable object: its class's __call__, and its state.
        call = callable_identity(type(obj).__call__, _depth + 1)
        return f"instance({call})@{_digest(_state(obj), _depth)}"
    func: Any = getattr(obj, "__func__", obj)  # bound methods
    qualname = getattr(func, "__qualname__", type(func).__qualname__)
    name = f"{getattr(func, '__module__', '?')}.{qualname}"
    code = getattr(func, "__code__", None)
    if code is not None:
        try:
            cells = tuple(c.cell_contents for c in getattr(func, "__closure__", None) or ())
        except ValueError:  # a cell not yet filled
            cells = ()
        defaults = (getattr(func, "__defaults__", None), getattr(func, "__kwdefaults__", None))
        # Module-level values the code reads by name (a CURRENCY constant in a filter).
        module_globals = getattr(func, "__globals__", {})
        used = tuple(
            (n, module_globals[n])
            for n in _names(code)
            if n in module_globals and not isinstance(module_globals[n], types.ModuleType)
        )
        name += "#" + _digest((code, defaults, cells, used), _depth)
    owner = getattr(obj, "__self__", None)
    if owner is not None and not isinstance(owner, (types.ModuleType, type)):
        name += "@" + _digest(_state(owner), _depth)
    return name


def _names(code: types.CodeType) -> list[str]:
    """The global names ``code`` and the code nested in it read, sorted."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_names(const))
    return sorted(names)


def _state(obj: object) -> object:
    """An object's data: its ``__dict__`` and every ``__slots__`` value up its classes."""
    state: dict[str, object] = dict(getattr(obj, "__dict__", None) or {})
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                state[f"{cls.__qualname__}.{slot}"] = getattr(obj, slot)
    return state


def _digest(value: object, depth: int = 0) -> str:
    # Version 2: from version 3 on, marshal flags every object whose refcount is above one,
    # so the bytes would depend on who else happens to hold a constant.
    return hashlib.sha256(marshal.dumps(_canonical(value, depth), 2)).hexdigest()[:16]


def _canonical(value: object, depth: int = 0) -> Any:
    """``value`` as data marshal writes the same way in every process: plain data as it
    is, callables by :func:`callable_identity`, anything else by its type."""
    if type(value) in _PLAIN:
        return value
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
        return ("code", value.co_code, _canonical(value.co_consts, depth), value.co_names)
    if isinstance(value, (tuple, list)):
        return tuple(_canonical(item, depth) for item in value)
    if isinstance(value, dict):
        return (
            "dict",
            tuple((_canonical(k, depth), _canonical(v, depth)) for k, v in value.items()),
        )
    if isinstance(value, (set, frozenset)):
        # Before Python 3.11 marshal writes a set in hash order, which is per process.
        return ("set", tuple(sorted(marshal.dumps(_canonical(item, depth), 2) for item in value)))
    if callable(value):
        return ("callable", callable_identity(value, depth + 1))
    if isinstance(value, types.ModuleType):
        return ("module", value.__name__)
    # Anything else (a Decimal, a configured object) is what it pickles to. Failing that,
    # fail closed: a token no other computation shares, so this environment never shares
    # entries, rather than ever sharing them wrongly.
    try:
        reducer = copyreg.dispatch_table.get(type(value))  # re.Pattern pickles this way
        reduced = reducer(value) if reducer is not None else value.__reduce_ex__(2)
    except Exception:
        logging.getLogger("tiered_bccache").warning(
            "tiered_bccache: cannot describe a %s that a compile-time callable uses; "
            "this environment will not share cache entries with other processes",
            kind,
        )
        return ("opaque", kind, secrets.token_hex(16))
    if isinstance(reduced, str):
        return ("global", kind, reduced)
    return ("reduced", kind, _canonical(tuple(reduced)[1:], depth + 1))


def _pass_arg(func: Callable[..., Any]) -> str:
    pass_arg = _PassArg.from_obj(func)
    return pass_arg.name if pass_arg is not None else "-"


def _calling_conventions(mapping: Mapping[str, Any]) -> Iterable[str]:
    # The compiler writes ``context``, ``eval_ctx`` or ``environment`` into the call of
    # each filter and test depending on how it is decorated, and refuses unknown names;
    # the optimizer calls them on constants, so what they compute is baked in too.
    for name in sorted(mapping):
        func = mapping[name]
        yield f"{name}={_pass_arg(func)} {callable_identity(func)}"


def environment_fingerprint(env: Environment) -> str:
    """A 32-hex-digit digest of every setting of ``env`` that changes generated code,
    plus the Python and Jinja versions. Autoescape is here only when it is a bool; a
    callable autoescape is per template (see :func:`autoescape_flag`)."""
    env_type = type(env)
    parts: list[str] = [
        f"python {importlib.util.MAGIC_NUMBER.hex()} {sys.implementation.cache_tag}",
        f"jinja2 {jinja2.__version__} bc{bc_version}",
        f"class {env_type.__module__}.{env_type.__qualname__}",
        f"codegen {callable_identity(env.code_generator_class)}",
        f"async {env.is_async}",
        f"optimized {env.optimized}",
        f"sandboxed {getattr(env, 'sandboxed', False)}",
        f"binops {sorted(getattr(env, 'intercepted_binops', ()))}",
        f"unops {sorted(getattr(env, 'intercepted_unops', ()))}",
    ]
    parts += [f"{name} {getattr(env, name)!r}" for name in _LEXER_SETTINGS]
    autoescape = env.autoescape
    if callable(autoescape):
        parts.append(f"autoescape per-template {callable_identity(autoescape)}")
    else:
        parts.append(f"autoescape {bool(autoescape)}")
    if env.finalize is None:
        parts.append("finalize none")
    else:
        # Without a pass_* decorator finalize runs on constants at compile time, so its
        # identity, not only its calling convention, is baked into the code.
        finalize = env.finalize
        parts.append(f"finalize {_pass_arg(finalize)} {callable_identity(finalize)}")
    for ext_name in sorted(env.extensions):
        ext = env.extensions[ext_name]
        parts.append(f"ext {ext_name} priority={ext.priority}")
    parts += [
        f"{name} {getattr(env, name)!r}" for name in _EXTENSION_SETTINGS if hasattr(env, name)
    ]
    # Policies: filters folded at compile time read them (urlize.*, truncate.leeway,
    # json.*), and the i18n extension reads ext.i18n.trimmed while parsing.
    parts += [f"policy {k} {_digest(v)}" for k, v in sorted(env.policies.items())]
    parts += [f"filter {item}" for item in _calling_conventions(env.filters)]
    parts += [f"test {item}" for item in _calling_conventions(env.tests)]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32]


def environment_shape(env: Environment) -> tuple[object, ...]:
    """A cheap token that changes when the settings users most often change after first
    use do (a filter or test added, autoescape or finalize replaced). Compared on every
    lookup, so it reads attributes only; other late changes need ``cache.refresh(env)``."""
    return (
        len(env.filters),
        len(env.tests),
        len(env.extensions),
        env.autoescape,
        env.finalize,
        env.is_async,
    )


def autoescape_flag(env: Environment, name: str | None) -> str:
    """The per-template part of the key: ``"e"`` or ``"r"`` when autoescape is a function
    of the template name (``select_autoescape``), empty when it is a plain bool."""
    autoescape = env.autoescape
    if not callable(autoescape):
        return ""
    return "e" if autoescape(name) else "r"
