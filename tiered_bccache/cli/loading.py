"""The cache a command works on: an object of the application, named
``module:attribute``, or a cache built from tier specs (:mod:`tiered_bccache.spec`).

Example::

    cache = load_cache("myapp.templating:env", [])
    cache = load_cache(None, ["memory:512", "fs:/var/cache/app"], secret=key)
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from jinja2 import Environment

from ..cache import TieredBytecodeCache
from ..errors import ConfigurationError
from ..spec import SpecError, parse_tier

__all__ = ["cache_of", "load_cache", "load_object"]

_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def load_object(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) and return the object.
    The current directory is importable, as it is for ``python -m``.

    Raises :class:`SpecError` when the text is malformed, the module does not import, or
    the attribute is missing.
    """
    if _TARGET.fullmatch(target) is None:
        raise SpecError(f"{target!r} is not module:attribute (e.g. myapp.templating:env)")
    module_name, _, attribute = target.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(
            f"cannot import {module_name!r} (from {target!r}): {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(
                f"{target!r}: {type(obj).__name__} {module_name!r} has no attribute {part!r}"
            ) from None
    return obj


def cache_of(obj: object, target: str) -> TieredBytecodeCache:
    """The cache ``obj`` is or uses; raises :class:`SpecError` naming ``target`` otherwise."""
    if isinstance(obj, TieredBytecodeCache):
        return obj
    if isinstance(obj, Environment):
        if isinstance(obj.bytecode_cache, TieredBytecodeCache):
            return obj.bytecode_cache
        held = type(obj.bytecode_cache).__name__ if obj.bytecode_cache is not None else "None"
        raise SpecError(
            f"{target!r} is a jinja2.Environment whose bytecode_cache is {held}, "
            "not a TieredBytecodeCache"
        )
    raise SpecError(
        f"{target!r} is a {type(obj).__name__}, not a TieredBytecodeCache or a "
        "jinja2.Environment using one"
    )


def load_cache(
    target: str | None,
    tier_specs: list[str],
    *,
    memcached_timeout: float | None = None,
    redis_timeout: float | None = None,
    **options: Any,
) -> TieredBytecodeCache:
    """The cache named by ``target`` (``module:attribute``), or built from ``tier_specs``
    (``memcached_timeout`` and ``redis_timeout`` as for :func:`parse_tier`).

    ``options`` go to :class:`~tiered_bccache.TieredBytecodeCache` when the cache is built
    from specs (``secret``, ``allow_unsigned``, ``trace``...); options left at None or
    False are not passed. A cache named by ``module:attribute`` is the application's own,
    configured by it: giving options with one is an error, not silently ignored.

    Raises :class:`SpecError` when both or neither of ``target`` and ``tier_specs`` are
    given, for a bad spec or target, and when the cache refuses its configuration
    (:class:`~tiered_bccache.InsecureConfigurationError` passes through unchanged, so a
    caller can tell a missing secret apart).
    """
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    if target is not None and tier_specs:
        raise SpecError("name the cache either as module:attribute or with tier specs, not both")
    if target is not None:
        if given:
            raise SpecError(
                f"{', '.join(sorted(given))} cannot apply to {target!r}: the application "
                "configures its own cache"
            )
        return cache_of(load_object(target), target)
    if not tier_specs:
        raise SpecError("no cache given: name one as module:attribute or with tier specs")
    tiers = [
        parse_tier(spec, memcached_timeout=memcached_timeout, redis_timeout=redis_timeout)
        for spec in tier_specs
    ]
    try:
        return TieredBytecodeCache(tiers, **given)
    except SpecError:
        raise
    except ConfigurationError as exc:
        if type(exc) is not ConfigurationError:
            raise
        raise SpecError(str(exc)) from exc
