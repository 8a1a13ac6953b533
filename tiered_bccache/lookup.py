"""A lookup as Jinja sees it: the bucket :meth:`TieredBytecodeCache.get_bucket` returns,
which is also the record the stack walks with (:class:`tiered_bccache.stack.Lookup`),
and the memory hit, the one path short enough to skip both."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from jinja2 import Environment
from jinja2.bccache import Bucket

from .compiling import Dependencies, dependencies_hold, variant
from .entry import source_digest

if TYPE_CHECKING:
    from .layers import Held, Layer
    from .recorder import Recorder

__all__ = ["Lookup", "memory_hit"]


class Lookup(Bucket):
    """One lookup: Jinja's bucket, with the source kept for the memory tier's exact
    comparison, the checksum computed only when a byte tier needs it, the layers the
    environment may use, an entry found under the key but compiled for other filters or
    tests (``foreign``), and the tiers whose misses and failures it counted."""

    def __init__(
        self,
        environment: Environment,
        key: str,
        source: str | None,
        layers: tuple[Layer, ...],
    ) -> None:
        self.environment = environment
        self.key = key
        self.source = source
        self.layers = layers
        self._checksum: str | None = None
        self.code: types.CodeType | None = None
        self.foreign: Dependencies | None = None
        #: One bit per tier (see :mod:`tiered_bccache.guard`).
        self.seen = 0
        self.failed = 0

    @property
    def checksum(self) -> str:
        if self._checksum is None:
            assert self.source is not None
            self._checksum = source_digest(self.source)
        return self._checksum

    @checksum.setter
    def checksum(self, value: str) -> None:
        self._checksum = value

    def holds(self, dependencies: Dependencies) -> bool:
        """Whether the environment's filters and tests are what a compile found."""
        return dependencies_hold(self.environment, dependencies)

    def variant(self, foreign: Dependencies) -> str | None:
        """The variant of this environment's filters and tests under the names the
        compile of a foreign entry looked up."""
        return variant(self.environment, foreign)


def memory_hit(
    first: Layer | None, env: Environment, key: str, source: str, rec: Recorder
) -> tuple[types.CodeType | None, int]:
    """The hit path: when the first tier holds code objects, a hit for the very same
    source costs one dict lookup, one string comparison (no hashing of the source) and
    a look at the filters and tests the code was compiled against. Returns the code, or
    None and the layer the walk starts from: past the first when it holds nothing under
    the key (its miss counted here), else from the top, so that the walk tells a stale
    or foreign entry apart and counts it."""
    if first is None:
        return None, 0
    held: Held | None = first.tier.get(key)
    if held is None:
        first.guard.counters.misses += 1
        return None, 1
    if held.source != source or not dependencies_hold(env, held.dependencies):
        return None, 0
    first.guard.counters.hits += 1
    if rec.trace is not None:
        rec.record(key, held.size)
    return held.code, 0
