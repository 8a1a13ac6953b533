"""A tiered, authenticated, environment-safe bytecode cache for Jinja2."""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    EntryError,
    InsecureConfigurationError,
    TieredCacheError,
    TierError,
)

# Not typing.TYPE_CHECKING: importing typing costs ``tiered-bccache run`` milliseconds
# (type checkers read any constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .cache import TieredBytecodeCache
    from .factory import from_specs
    from .stats import CacheStats, TierStats
    from .strings import cache_from_string, uncache_from_string
    from .tiers import ByteTier, FileSystemTier, MemcachedTier, MemoryTier, RedisTier, Tier

__version__ = "0.2.0"

__all__ = (
    "ByteTier",
    "CacheStats",
    "ConfigurationError",
    "EntryError",
    "FileSystemTier",
    "InsecureConfigurationError",
    "MemcachedTier",
    "MemoryTier",
    "RedisTier",
    "Tier",
    "TierError",
    "TierStats",
    "TieredBytecodeCache",
    "TieredCacheError",
    "__version__",
    "cache_from_string",
    "from_specs",
    "uncache_from_string",
)

#: Names imported when first asked for, and where they live: ``import tiered_bccache``
#: imports neither Jinja nor the cache (``tiered-bccache run`` starts a tool without them).
_LAZY = {
    "ByteTier": ".tiers",
    "CacheStats": ".stats",
    "TierStats": ".stats",
    "Tier": ".tiers",
    "TieredBytecodeCache": ".cache",
    "cache_from_string": ".strings",
    "from_specs": ".factory",
    "uncache_from_string": ".strings",
}


def __getattr__(name: str) -> Any:
    # The tier classes are imported when first asked for (see tiered_bccache.tiers): a
    # process pays only for the tiers it configures. Submodules are not names of ours:
    # ``from . import x`` asks for them before importing them.
    import importlib

    tiers = importlib.import_module(".tiers", __name__)
    if name in tiers._MODULES:
        value = getattr(tiers, name)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
