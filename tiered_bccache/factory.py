"""``from_specs``: a cache from tier specs, as a function of the package.

It lives here rather than in :mod:`tiered_bccache.spec` so that the spec parser never
imports the cache: the parser turns specs into tiers, the cache imports the parser when
asked to build itself from specs, and this module sits above both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cache import TieredBytecodeCache

__all__ = ["from_specs"]


def from_specs(
    specs: Sequence[str] | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **cache_options: Any,
) -> TieredBytecodeCache:
    """A :class:`~tiered_bccache.TieredBytecodeCache` over the tiers ``specs`` describe,
    fastest first (the syntax is in :mod:`tiered_bccache.spec`)::

        cache = from_specs(["memory:512", "fs:/var/cache/app", "redis://10.0.0.5:6379/0"],
                           secret=key)

    ``specs`` is a list of specs, or one string of specs separated by whitespace; None
    (the default) reads that string from ``$TIERED_BCCACHE_TIERS`` in ``environ``
    (default ``os.environ``). ``cache_options`` go to the cache unchanged (``secret``,
    ``strict``, ``breaker_cooldown``...; without ``secret`` the cache reads
    ``$TIERED_BCCACHE_SECRET``). The same as ``TieredBytecodeCache.from_specs``.

    Raises :class:`~tiered_bccache.spec.SpecError` (a
    :class:`~tiered_bccache.ConfigurationError`) naming the spec that is wrong, or when no
    spec is given; the cache's own configuration errors pass through
    (:class:`~tiered_bccache.InsecureConfigurationError` for a shared tier without a
    secret).
    """
    return TieredBytecodeCache.from_specs(specs, environ=environ, **cache_options)
