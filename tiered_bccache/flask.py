"""Flask: the cache from the app's configuration, in one call.

::

    from flask import Flask
    import tiered_bccache.flask

    app = Flask(__name__)
    app.config["TIERED_BCCACHE_TIERS"] = "memory:512 fs:/var/cache/app redis://10.0.0.5:6379/0"
    app.config["TIERED_BCCACHE_SECRET"] = "..."  # or $TIERED_BCCACHE_SECRET
    tiered_bccache.flask.init_app(app)

This module is never imported by ``import tiered_bccache``; it imports nothing of Flask.
"""

from __future__ import annotations

import os
from typing import Any

from .autoconfig import TIERS_ENV_VAR
from .cache import TieredBytecodeCache
from .errors import ConfigurationError
from .secret import ENV_VAR
from .strings import cache_from_string

__all__ = ["init_app"]

#: Where :func:`init_app` keeps the cache: ``app.extensions["tiered_bccache"]``.
EXTENSION = "tiered_bccache"


def init_app(app: Any, *, cache_strings: bool = True, **cache_options: Any) -> TieredBytecodeCache:
    """Build the cache from ``app.config`` and make ``app``'s templates load through it.

    Reads ``TIERED_BCCACHE_TIERS`` (a list of tier specs, or one string of them
    separated by whitespace) and ``TIERED_BCCACHE_SECRET`` from ``app.config``, each
    falling back to the environment variable of the same name. The cache is set before
    the first template is loaded: in ``app.jinja_options``, and on ``app.jinja_env``
    (Flask builds it here if it had not yet). With ``cache_strings`` (the default),
    ``render_template_string`` goes through the cache too
    (:func:`~tiered_bccache.cache_from_string`). ``cache_options`` go to
    :class:`~tiered_bccache.TieredBytecodeCache` (``strict``, ``breaker_cooldown``...).

    Returns the cache, also kept in ``app.extensions["tiered_bccache"]``.

    Raises :class:`~tiered_bccache.ConfigurationError` when no tiers are configured, a
    spec is wrong (naming it), or the cache refuses its configuration.
    """
    specs = app.config.get("TIERED_BCCACHE_TIERS") or os.environ.get(TIERS_ENV_VAR)
    if not specs:
        raise ConfigurationError(
            "TIERED_BCCACHE_TIERS: set it in app.config or the environment (tier specs, "
            "e.g. 'memory:512 fs:/var/cache/app redis://10.0.0.5:6379/0')"
        )
    secret = app.config.get("TIERED_BCCACHE_SECRET")
    if secret:
        cache_options.setdefault("secret", secret)
    # Without a secret in app.config the cache reads $TIERED_BCCACHE_SECRET itself, by
    # name, so that a copy pickled to a worker carries the name and not the key.
    cache_options.setdefault("secret_env", ENV_VAR)
    cache = TieredBytecodeCache.from_specs(specs, **cache_options)
    # jinja_options serves an environment Flask has not built yet; an existing one
    # (built by an extension, or by an earlier call) gets the cache directly.
    app.jinja_options = {**app.jinja_options, "bytecode_cache": cache}
    env = app.jinja_env
    env.bytecode_cache = cache
    if cache_strings:
        cache_from_string(env)
    app.extensions[EXTENSION] = cache
    return cache
