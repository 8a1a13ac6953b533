"""What a cache counts as a whole, and its access trace.

The tiers' own counters live on their guards (:mod:`tiered_bccache.guard`); a
:class:`Recorder` holds the cache's: lookups, hits and misses of named templates and of
strings, compiles, waits for a lease, what could not be cached, and the time compiles
took, plus the trace (``tiered-bccache tune`` reads it) while one is recorded.
Counters are plain attributes bumped without a lock, as the tiers' are (see
:mod:`tiered_bccache.stats`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .stats import CacheStats, logger, snapshot

if TYPE_CHECKING:
    from .layers import Layer
    from .trace import TraceWriter

__all__ = ["Recorder"]


class Recorder:
    """The cache's counters (see :class:`~tiered_bccache.CacheStats` for what each
    counts) and its trace."""

    __slots__ = (
        "compile_seconds",
        "compiles",
        "hits",
        "lease_waits",
        "lookups",
        "misses",
        "string_compiles",
        "string_hits",
        "string_lookups",
        "string_misses",
        "strings_not_admitted",
        "trace",
        "uncached",
    )

    def __init__(self) -> None:
        self.trace: TraceWriter | None = None
        self.reset()

    def reset(self) -> None:
        """Every counter from zero (the trace goes on)."""
        self.lookups = 0
        self.hits = 0
        self.misses = 0
        self.compiles = 0
        self.lease_waits = 0
        self.string_lookups = 0
        self.string_hits = 0
        self.string_misses = 0
        self.string_compiles = 0
        self.strings_not_admitted = 0
        self.uncached = 0
        self.compile_seconds = 0.0

    def waited(self) -> None:
        """A lookup waited for another process's lease."""
        self.lease_waits += 1

    def stats(self, layers: Iterable[Layer]) -> CacheStats:
        """A snapshot of these counters and of the tiers' in ``layers``."""
        return CacheStats(
            tiers=tuple(
                snapshot(
                    layer.name,
                    layer.guard.counters,
                    layer.guard.breaker.state if layer.guard.breaker is not None else "none",
                    layer.events,
                )
                for layer in layers
            ),
            lookups=self.lookups,
            hits=self.hits,
            misses=self.misses,
            compiles=self.compiles,
            lease_waits=self.lease_waits,
            string_lookups=self.string_lookups,
            string_hits=self.string_hits,
            string_misses=self.string_misses,
            string_compiles=self.string_compiles,
            strings_not_admitted=self.strings_not_admitted,
            uncached=self.uncached,
            compile_seconds=self.compile_seconds,
        )

    def start_trace(self, path: str | os.PathLike[str]) -> None:
        """Record every lookup (key and entry size) to ``path`` until :meth:`stop_trace`."""
        from .trace import TraceWriter  # only users who trace pay for the import

        self.stop_trace()
        self.trace = TraceWriter(path)

    def stop_trace(self) -> None:
        trace, self.trace = self.trace, None
        if trace is not None:
            trace.close()

    def record(self, key: str, size: int) -> None:
        """One lookup in the trace, if one is recorded. Never raises into a render: a
        trace stopped by another thread meanwhile is fine, and a trace that cannot be
        written (a full disk) is stopped, with one warning."""
        trace = self.trace
        if trace is None:
            return
        try:
            trace.record(key, size)
        except ValueError:  # closed by stop_trace in another thread since we looked
            pass
        except OSError as exc:
            self.trace = None
            logger().warning(
                "tiered_bccache: the access trace cannot be written (%r); tracing stopped", exc
            )
            try:
                trace.close()
            except OSError:  # what is left in its buffer cannot be written either
                pass
