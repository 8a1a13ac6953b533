"""A tiered, authenticated, environment-safe bytecode cache for Jinja2."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache import TieredBytecodeCache
from .errors import (
    ConfigurationError,
    EntryError,
    InsecureConfigurationError,
    TieredCacheError,
    TierError,
)
from .stats import CacheStats, TierStats
from .tiers import ByteTier, Tier

if TYPE_CHECKING:
    from .spec import from_specs
    from .strings import cache_from_string, uncache_from_string
    from .tiers import FileSystemTier, MemcachedTier, MemoryTier, RedisTier

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

#: Names imported when first asked for, and where they live.
_LAZY = {
    "cache_from_string": ".strings",
    "from_specs": ".spec",
    "uncache_from_string": ".strings",
}


def __getattr__(name: str) -> Any:
    # The tier classes are imported when first asked for (see tiered_bccache.tiers): a
    # process pays only for the tiers it configures.
    from . import tiers

    if name in tiers._MODULES:
        value = getattr(tiers, name)
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
