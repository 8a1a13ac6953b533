"""Templates from strings through the bytecode cache, for code that calls
``environment.from_string`` itself (Flask's ``render_template_string``, Ansible-, dbt- and
Salt-style code building an Environment per task).

Jinja never hands a string to a bytecode cache; :func:`cache_from_string` makes an
environment's ``from_string`` go through :meth:`TieredBytecodeCache.from_string
<tiered_bccache.TieredBytecodeCache.from_string>`. It does so by giving the environment a
subclass of its own class that overrides ``compile`` for template strings and nothing
else, so that
overlays (which copy the class), sandboxed and async environments keep working, and so
that the change is undone by restoring the class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, nodes

from .compiling import BASE_ATTRIBUTE
from .errors import ConfigurationError

__all__ = ["cache_from_string", "uncache_from_string"]


def cache_from_string(environment: Environment) -> Callable[[], None]:
    """Make ``environment.from_string`` (and so Flask's ``render_template_string``)
    go through its bytecode cache, a :class:`~tiered_bccache.TieredBytecodeCache`.
    Returns a function that undoes it (as :func:`uncache_from_string` does); calling it
    twice is harmless, and so is caching an environment twice.

    Raises :class:`~tiered_bccache.ConfigurationError` when the environment's
    ``bytecode_cache`` is not a ``TieredBytecodeCache``.

    Example::

        env = SandboxedEnvironment(bytecode_cache=cache)
        cache_from_string(env)
        env.from_string("{{ x }}").render(x=1)   # compiled once per cache, then loaded
    """
    from .cache import TieredBytecodeCache

    if not isinstance(environment, Environment):
        raise ConfigurationError(
            f"environment must be a jinja2.Environment, got {type(environment).__name__}"
        )
    if not isinstance(environment.bytecode_cache, TieredBytecodeCache):
        raise ConfigurationError(
            "environment.bytecode_cache must be a TieredBytecodeCache to cache strings, "
            f"got {type(environment.bytecode_cache).__name__}"
        )
    cls = type(environment)
    if getattr(cls, BASE_ATTRIBUTE, None) is None:
        environment.__class__ = _caching_class(cls)  # type: ignore[arg-type]
    return functools.partial(uncache_from_string, environment)


def uncache_from_string(environment: Environment) -> None:
    """Give ``environment`` back its own ``from_string`` (a no-op if it was not
    changed by :func:`cache_from_string`)."""
    base = getattr(type(environment), BASE_ATTRIBUTE, None)
    if base is not None:
        environment.__class__ = base


@functools.lru_cache(maxsize=64)
def _caching_class(cls: type) -> type:
    # ``compile`` rather than ``from_string``: Jinja's from_string compiles through it,
    # so a subclass that overrides from_string (to normalise the source, to add
    # imports) keeps its own method, with the cache underneath.
    def compile(
        self: Environment,
        source: str | nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        from .cache import TieredBytecodeCache

        cache = self.bytecode_cache
        if (
            isinstance(source, (str, nodes.Template))
            and name is None
            and filename is None
            and not raw
            and not defer_init
            and isinstance(cache, TieredBytecodeCache)
        ):
            return cache.compile_string(self, source)
        # A named template (Jinja's loader), Python source, or a cache replaced by
        # another kind since: as Jinja does. A string or a parsed tree (from_string,
        # compile_expression) goes through the cache.
        original: Callable[..., Any] = cls.compile  # type: ignore[attr-defined]
        return original(self, source, name, filename, raw, defer_init)

    def __reduce_ex__(self: Environment, protocol: Any) -> Any:
        # Pickled as its own class (this one cannot be imported by name): a copy is an
        # environment without cache_from_string, as its class says.
        own: Any = cls
        reduced = own.__reduce_ex__(self, protocol)
        if isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[1]:
            args = reduced[1]
            if args[0] is type(self):
                # copyreg.__newobj__ insists on the object's own class: use a twin.
                reduced = (_new, (cls, *args[1:]), *reduced[2:])
        return reduced

    compile.__doc__ = Environment.compile.__doc__
    members = {
        "compile": compile,
        "__reduce_ex__": __reduce_ex__,
        BASE_ATTRIBUTE: cls,
        "__slots__": (),
    }
    return type(cls.__name__, (cls,), members)


def _new(cls: type, *args: Any) -> Any:
    """``copyreg.__newobj__`` for an environment pickled as its own class."""
    return cls.__new__(cls, *args)
