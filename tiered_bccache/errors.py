"""The package's exceptions: one base, and the few a user may want to catch."""

from __future__ import annotations


class TieredCacheError(Exception):
    """Base class of every exception this package raises."""


class ConfigurationError(TieredCacheError, ValueError):
    """Raised at construction when an argument is wrong; the message names the argument."""


class InsecureConfigurationError(ConfigurationError):
    """Raised at construction when a shared tier would hold unsigned code (no secret given)."""


class TierError(TieredCacheError):
    """Raised in ``strict`` mode when a tier fails; ``tier`` names it and ``__cause__`` is the
    original exception. Outside strict mode the same failure is only counted and logged."""

    def __init__(self, tier: str, operation: str, cause: BaseException) -> None:
        super().__init__(f"tier {tier!r} failed during {operation}: {cause!r}")
        self.tier = tier
        self.operation = operation


class EntryError(TieredCacheError):
    """Raised by :meth:`EntryCodec.decode <tiered_bccache.entry.EntryCodec.decode>` when an
    entry is corrupt, truncated, foreign, stale, or fails its MAC, and by a tier's ``get``
    (reason ``"format"``) when what is stored under a key is not an entry at all. The cache
    turns it into a counted miss."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        #: One of ``"format"``, ``"version"``, ``"mac"``, ``"stale"``, ``"code"``.
        self.reason = reason
