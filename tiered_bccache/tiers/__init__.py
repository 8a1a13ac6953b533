"""The tiers: one module each, plus the interface they share.

Each tier's module is imported when its class is first asked for, so that a process
pays only for the tiers it configures (no pymemcache, no redis-py, no cachetools for a
process that uses none of them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ByteTier, Tier

if TYPE_CHECKING:
    from .filesystem import FileSystemTier
    from .memcached import MemcachedTier
    from .memory import MemoryTier
    from .redis import RedisTier

__all__ = ("ByteTier", "FileSystemTier", "MemcachedTier", "MemoryTier", "RedisTier", "Tier")

#: Where each lazily imported class lives.
_MODULES = {
    "FileSystemTier": ".filesystem",
    "MemcachedTier": ".memcached",
    "MemoryTier": ".memory",
    "RedisTier": ".redis",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
