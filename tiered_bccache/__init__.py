"""A tiered, authenticated, environment-safe bytecode cache for Jinja2."""

from .cache import TieredBytecodeCache
from .errors import (
    ConfigurationError,
    EntryError,
    InsecureConfigurationError,
    TieredCacheError,
    TierError,
)
from .stats import CacheStats, TierStats
from .tiers import ByteTier, FileSystemTier, MemcachedTier, MemoryTier, Tier

__version__ = "0.1.0"

__all__ = (
    "ByteTier",
    "CacheStats",
    "ConfigurationError",
    "EntryError",
    "FileSystemTier",
    "InsecureConfigurationError",
    "MemcachedTier",
    "MemoryTier",
    "Tier",
    "TierError",
    "TierStats",
    "TieredBytecodeCache",
    "TieredCacheError",
    "__version__",
)
