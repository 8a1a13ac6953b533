"""Django: the cache from settings, for Django's Jinja2 template backend.

In ``settings.py``::

    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.jinja2.Jinja2",
            "DIRS": [BASE_DIR / "jinja2"],
            "APP_DIRS": True,
            "OPTIONS": {"environment": "tiered_bccache.django.environment"},
        },
    ]
    TIERED_BCCACHE_TIERS = ["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"]
    TIERED_BCCACHE_SECRET = env("TIERED_BCCACHE_SECRET")  # or leave it to the variable

A project with an environment function of its own passes
``bytecode_cache=tiered_bccache.django.bytecode_cache()`` to its ``Environment``.

This module is never imported by ``import tiered_bccache``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from jinja2 import Environment

from .autoconfig import TIERS_ENV_VAR
from .cache import TieredBytecodeCache
from .errors import ConfigurationError
from .secret import ENV_VAR
from .strings import cache_from_string

__all__ = ["bytecode_cache", "environment"]

_lock = threading.Lock()
#: One cache per configuration per process: Django builds an environment per backend,
#: and every environment configured alike shares the cache's memory tier.
_caches: dict[tuple[Any, ...], TieredBytecodeCache] = {}


def bytecode_cache() -> TieredBytecodeCache:
    """The process's cache, built on first use from Django's settings:
    ``TIERED_BCCACHE_TIERS`` (a list of tier specs, or one whitespace-separated string),
    ``TIERED_BCCACHE_SECRET`` and ``TIERED_BCCACHE_OPTIONS`` (a dict of
    :class:`~tiered_bccache.TieredBytecodeCache` options); the first two fall back to the
    environment variables of the same name.

    Raises :class:`~tiered_bccache.ConfigurationError` when no tiers are configured or a
    spec is wrong (naming it).
    """
    from django.conf import settings

    specs = getattr(settings, "TIERED_BCCACHE_TIERS", None) or os.environ.get(TIERS_ENV_VAR)
    if not specs:
        raise ConfigurationError(
            "TIERED_BCCACHE_TIERS: set it in Django's settings or the environment (tier "
            "specs, e.g. ['memory:512', 'fs:/var/cache/app', 'redis://10.0.0.5:6379/0'])"
        )
    secret = getattr(settings, "TIERED_BCCACHE_SECRET", None)
    options = dict(getattr(settings, "TIERED_BCCACHE_OPTIONS", None) or {})
    if secret:
        options.setdefault("secret", secret)
    options.setdefault("secret_env", ENV_VAR)
    key = (
        specs if isinstance(specs, str) else tuple(specs),
        tuple(sorted((k, repr(v)) for k, v in options.items())),
    )
    with _lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = TieredBytecodeCache.from_specs(specs, **options)
        return cache


def environment(**options: Any) -> Environment:
    """A ``jinja2.Environment`` built with Django's ``OPTIONS`` (the loader, autoescape,
    auto_reload... Django passes) and :func:`bytecode_cache`; ``from_string`` goes
    through the cache too. An explicit ``bytecode_cache`` in ``OPTIONS`` wins."""
    options.setdefault("bytecode_cache", bytecode_cache())
    env = Environment(**options)
    if isinstance(env.bytecode_cache, TieredBytecodeCache):
        cache_from_string(env)
    return env
