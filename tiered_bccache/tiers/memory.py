"""The in-process tier: a thread-safe LRU of ready code objects."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from cachetools import Cache, LRUCache

from ..errors import ConfigurationError
from ._validate import positive_int_or_none

__all__ = ["MemoryTier"]


#: Reads an entry without touching the LRU order (cachetools' base-class lookup).
_peek = Cache.__getitem__


def _weight(item: tuple[Any, int]) -> int:
    return item[1]


class MemoryTier:
    """An LRU of values the cache hands it (code objects with their source), so a hit
    costs no unmarshalling and no MAC: nothing here ever left the process.

    ``max_entries`` bounds the count, ``max_bytes`` the total weight (an entry weighs its
    marshalled size); give either or both. The resident size of an entry is about twice
    its weight (the code objects, plus the template source kept for the exact hit
    check): size ``max_bytes`` at about half the memory you mean to give the tier
    (``python -m benchmarks.footprint`` measures it for your templates).

    Safe under threads: cachetools' caches are not, so every dictionary operation holds
    a lock, and only that; a reader never waits for it (see :meth:`get`).

    Raises :class:`~tiered_bccache.ConfigurationError` for a bound that is not a positive
    integer, or when both are None.
    """

    name = "memory"
    remote = False
    compress = False
    holds_objects: ClassVar[bool] = True

    def __init__(self, max_entries: int | None = 512, *, max_bytes: int | None = None) -> None:
        self.max_entries = positive_int_or_none("max_entries", max_entries)
        self.max_bytes = positive_int_or_none("max_bytes", max_bytes)
        if self.max_entries is None and self.max_bytes is None:
            raise ConfigurationError("MemoryTier needs max_entries or max_bytes (or both)")
        #: An entry larger than the whole tier is skipped rather than flushing everything.
        self.max_entry_size = self.max_bytes
        self._lock = threading.Lock()
        self._lru: LRUCache[str, tuple[Any, int]]
        if self.max_bytes is not None:
            self._lru = LRUCache(self.max_bytes, getsizeof=_weight)
        else:
            assert self.max_entries is not None
            self._lru = LRUCache(self.max_entries)

    def __repr__(self) -> str:
        return f"MemoryTier(max_entries={self.max_entries!r}, max_bytes={self.max_bytes!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy is a new, empty tier with the same bounds: code objects stay in-process.
        return (_rebuild, (self.max_entries, self.max_bytes))

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or None; a hit becomes the most recent entry
        (unless another thread is inside the LRU at that moment: see below)."""
        # cachetools runs Python code under the lock, so the interpreter may switch
        # threads while one holds it; every other reader would then queue behind it (a
        # lock convoy: 4 threads ran at 0.55x of one). A reader that finds the lock taken
        # reads without refreshing recency instead. A dict read is atomic, so this is
        # safe; the price is an LRU order that is approximate under contention.
        if self._lock.acquire(blocking=False):
            try:
                item = self._lru.get(key)
            finally:
                self._lock.release()
        else:
            try:
                item = _peek(self._lru, key)
            except KeyError:
                return None
        return None if item is None else item[0]

    def set(self, key: str, value: Any, size: int = 1) -> None:
        """Store ``value`` weighing ``size`` bytes, evicting the least recently used."""
        item = (value, max(size, 1))
        with self._lock:
            if self.max_bytes is not None and item[1] > self.max_bytes:
                self._lru.pop(key, None)  # never leave the key holding its old value
                return
            # With both bounds cachetools enforces only the weight. Make room for a new
            # key before inserting it, not after: len() is read without the lock, and
            # must never see max_entries + 1, even for an instant.
            if self.max_entries is not None and self.max_bytes is not None:
                while len(self._lru) >= self.max_entries and key not in self._lru:
                    self._lru.popitem()
            self._lru[key] = item

    def delete(self, key: str) -> None:
        with self._lock:
            self._lru.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def currsize(self) -> int:
        """The total weight held: bytes with ``max_bytes``, else the entry count."""
        return int(self._lru.currsize)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held, without making it the most recent."""
        with self._lock:
            return key in self._lru

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows: the count and weight held in this process,
        and the bounds (see :meth:`ByteTier.describe <tiered_bccache.ByteTier.describe>`)."""
        return {
            "name": self.name,
            "kind": "memory",
            "entries": len(self),
            "currsize": self.currsize,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "this_process_only": True,
        }

    def probe(self) -> None:
        """Return: the tier is in this process."""


def _rebuild(max_entries: int | None, max_bytes: int | None) -> MemoryTier:
    return MemoryTier(max_entries, max_bytes=max_bytes)
