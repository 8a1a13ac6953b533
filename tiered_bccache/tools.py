"""What known tools keep outside the Environment that changes the code they compile,
and the key context that accounts for it (``TieredBytecodeCache(key_context=...)``;
``tiered-bccache run`` uses :func:`key_context`).

Each entry says why. A tool not listed needs nothing: its compiles depend only on its
Environments, which the key covers.

=============== ==========================================================================
ansible-core    ``AnsibleLexer`` escapes backslashes in string constants of ``{{ }}`` when
                an ambient ``_TemplateCompileContext(escape_backslashes=True)`` is active
                (a playbook's templates, which YAML has unescaped once) and not otherwise
                (includes and imports compiled at render time): the same source under the
                same Environment compiles two ways. The context's flag joins the key.
dbt-core        nothing: a new ``MacroFuzzEnvironment`` or native sandbox per render,
                configured alike; its ``_compile`` only registers the source with
                ``linecache`` for tracebacks (a cached template's traceback lines show
                the generated file name without its source).
Sphinx, MkDocs  nothing: one theme Environment per build.
=============== ==========================================================================
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable

from jinja2 import Environment

__all__ = ["ADAPTERS", "key_context"]


def _ansible(env: Environment) -> str:
    bits = sys.modules.get("ansible._internal._templating._jinja_bits")
    if bits is None:
        return ""
    context = bits._TemplateCompileContext.current(optional=True)
    return "ab1" if context is not None and context.escape_backslashes else ""


#: Top-level package of the Environment's class -> its key context.
ADAPTERS: dict[str, Callable[[Environment], str]] = {"ansible": _ansible}
#: Environment class -> its adapter, or None (held weakly: classes come and go).
_by_class: weakref.WeakKeyDictionary[type, Callable[[Environment], str] | None] = (
    weakref.WeakKeyDictionary()
)


def key_context(env: Environment) -> str:
    """The key context of ``env``'s tool: what the tool's adapter answers, empty for
    environments of other code."""
    cls = type(env)
    try:
        adapter = _by_class[cls]
    except KeyError:
        adapter = _by_class[cls] = next(
            (
                ADAPTERS[base.__module__.partition(".")[0]]
                for base in cls.__mro__
                if base.__module__.partition(".")[0] in ADAPTERS
            ),
            None,
        )
    return adapter(env) if adapter is not None else ""
