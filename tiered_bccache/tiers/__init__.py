"""The tiers: one module each, plus the interface they share."""

from .base import ByteTier, Tier
from .filesystem import FileSystemTier
from .memcached import MemcachedTier
from .memory import MemoryTier

__all__ = ("ByteTier", "FileSystemTier", "MemcachedTier", "MemoryTier", "Tier")
