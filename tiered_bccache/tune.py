"""Sizing the memory tier from an access trace: LRU hit curves and a recommendation.

One pass over a trace gives the hits an LRU would have had at every capacity, counted in
entries and in bytes, with Mattson's stack-distance algorithm (Mattson et al., 1970): an
access hits an LRU of capacity ``c`` iff its stack distance, the number of distinct keys
(or their total size) since the key's previous access, including the key itself, is at
most ``c``. The distances come from Fenwick trees indexed by access time, renumbered when
they fill up, so the pass takes O(n log m) time for n accesses to m distinct keys, and
memory for m keys plus one breakpoint per distinct byte distance.

For when there is no trace yet, :func:`zipf_trace` makes a synthetic one.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, zip_longest
from operator import itemgetter

from .humanize import human_bytes
from .trace import TraceRecord

__all__ = [
    "ByteCurve",
    "HitCurves",
    "Recommendation",
    "format_report",
    "hit_curves",
    "recommend",
    "zipf_trace",
]


@dataclass(frozen=True, slots=True)
class ByteCurve:
    """Hits of a byte-capacity LRU as a step function of its capacity.

    ``breakpoints`` are ``(byte_distance, cumulative_hits)`` pairs sorted by distance: an
    LRU of ``capacity`` bytes has the hits of the last breakpoint at or below it.

    The curve is exact only for capacities of at least ``max_size``, the largest entry:
    below that, an entry larger than the cache is never inserted, so the cache no longer
    holds a prefix of the recency stack and no single pass can tell what it holds.
    """

    breakpoints: tuple[tuple[int, int], ...]
    #: The largest size any key was charged: the smallest capacity the curve covers.
    max_size: int
    #: The total size of the distinct keys: from here up, every reuse hits.
    total_size: int

    def hits_at(self, capacity: int) -> int:
        """The hits an LRU of ``capacity`` bytes would have had.

        Raises :class:`ValueError` if ``capacity`` is below :attr:`max_size`.
        """
        if capacity < self.max_size:
            raise ValueError(
                f"capacity {capacity} is below the largest entry ({self.max_size} bytes): "
                "the curve is exact only from there up"
            )
        i = bisect_right(self.breakpoints, capacity, key=itemgetter(0))
        return self.breakpoints[i - 1][1] if i else 0


@dataclass(frozen=True, slots=True)
class HitCurves:
    """The hits an LRU of every size would have had on one trace (cold start, every miss
    inserted), counted in entries and in bytes."""

    #: The number of lookups in the trace.
    accesses: int
    #: ``entry_hits[c - 1]`` is the hits of an LRU of ``c`` entries, ``c`` from 1 to the
    #: number of distinct keys (beyond that, nothing changes).
    entry_hits: tuple[int, ...]
    byte_curve: ByteCurve

    @property
    def distinct_keys(self) -> int:
        """The number of distinct keys, each of which misses once whatever the capacity."""
        return len(self.entry_hits)

    @property
    def best_hits(self) -> int:
        """The hits of an unbounded cache: every access but the compulsory misses."""
        return self.accesses - self.distinct_keys


class _RecencyStack:
    """The LRU recency stack of a trace, as Fenwick trees over access times.

    Each key has a mark at the time of its last access: a count of 1 in one tree and its
    size in the other. The keys above a key in the stack are exactly the marks after its
    previous access, so a prefix query gives its stack distance in entries and in bytes.
    """

    __slots__ = ("_counts", "_sizes", "_capacity", "last", "time", "live_bytes")

    def __init__(self) -> None:
        self._capacity = 1  # a power of two, which is what makes _grow a copy
        self._counts = [0, 0]
        self._sizes = [0, 0]
        #: key -> (time of its last access, the size it is charged).
        self.last: dict[str, tuple[int, int]] = {}
        self.time = 0
        self.live_bytes = 0

    def touch(self, key: str, size: int) -> tuple[int, int] | None:
        """Access ``key`` with ``size`` and return its stack distance in entries and in
        bytes before this access, or None on its first access."""
        self.time += 1
        if self.time > self._capacity:
            self._make_room()
        counts, sizes, capacity = self._counts, self._sizes, self._capacity
        previous = self.last.get(key)
        distances = None
        charged = size
        if previous is not None:
            then, charged_then = previous
            count_to = bytes_to = 0
            i = then
            while i:
                count_to += counts[i]
                bytes_to += sizes[i]
                i &= i - 1
            # Every live mark is at or before `then` or after it; those after are the
            # distinct keys accessed since, and the key's own mark is at `then`.
            distances = (
                len(self.last) - count_to + 1,
                self.live_bytes - bytes_to + charged_then,
            )
            i = then
            while i <= capacity:
                counts[i] -= 1
                sizes[i] -= charged_then
                i += i & -i
            self.live_bytes -= charged_then
            charged = max(charged_then, size)
        i = self.time
        while i <= capacity:
            counts[i] += 1
            sizes[i] += charged
            i += i & -i
        self.live_bytes += charged
        self.last[key] = (self.time, charged)
        return distances

    def _make_room(self) -> None:
        """Make room for one more access time: renumber the live marks 1..m when that
        frees at least half the trees, else double them."""
        if 2 * len(self.last) <= self._capacity:
            self._compact()
        else:
            # Doubling a Fenwick tree of power-of-two size: the old nodes keep their
            # ranges, the new top node covers everything (the old top's sum), and every
            # other new node covers only empty times.
            old = self._capacity
            self._capacity = 2 * old
            for tree in (self._counts, self._sizes):
                tree.extend([0] * old)
                tree[self._capacity] = tree[old]

    def _compact(self) -> None:
        """Renumber the live marks 1..m in time order and rebuild the trees in O(capacity)."""
        capacity = self._capacity
        counts = [0] * (capacity + 1)
        sizes = [0] * (capacity + 1)
        ordered = sorted(self.last.items(), key=lambda item: item[1][0])
        for new_time, (key, (_, charged)) in enumerate(ordered, start=1):
            self.last[key] = (new_time, charged)
            counts[new_time] = 1
            sizes[new_time] = charged
        for i in range(1, capacity + 1):
            parent = i + (i & -i)
            if parent <= capacity:
                counts[parent] += counts[i]
                sizes[parent] += sizes[i]
        self._counts, self._sizes = counts, sizes
        self.time = len(ordered) + 1


def hit_curves(records: Iterable[tuple[str, int]]) -> HitCurves:
    """Compute the entry and byte LRU hit curves of a trace in one pass.

    ``records`` are ``(key, size)`` pairs such as :func:`~tiered_bccache.trace.read_trace`
    yields; they are read once, so an iterator over a long trace is fine.

    Sizes: each key is charged the largest size it has been recorded with so far. A key's
    size changes when its template is edited, and a miss may be recorded as 0 (not yet
    compiled). Letting sizes only grow keeps LRU's inclusion property (a byte-capacity
    cache holds the longest prefix of the recency stack that fits, the cached entry being
    updated to the new size on each access), which is what makes one pass exact. Taking
    the latest size instead would break it: after an edit shrinks one entry, another
    evicted earlier would count as fitting again, which no LRU can undo, and every miss
    recorded as 0 would make its entry weigh nothing.
    """
    stack = _RecencyStack()
    accesses = 0
    max_size = 0
    by_entries = [0]  # by_entries[d]: accesses at entry stack distance d
    by_bytes: dict[int, int] = {}
    for key, size in records:
        accesses += 1
        max_size = max(max_size, size)
        distances = stack.touch(key, size)
        if distances is None:
            by_entries.append(0)
        else:
            entries, nbytes = distances
            by_entries[entries] += 1
            by_bytes[nbytes] = by_bytes.get(nbytes, 0) + 1
    distances_sorted = sorted(by_bytes)
    cumulative = accumulate(by_bytes[d] for d in distances_sorted)
    return HitCurves(
        accesses=accesses,
        entry_hits=tuple(accumulate(by_entries[1:])),
        byte_curve=ByteCurve(
            breakpoints=tuple(zip(distances_sorted, cumulative, strict=True)),
            max_size=max_size,
            total_size=stack.live_bytes,
        ),
    )


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The smallest memory-tier bounds that reach ``share`` of the best hit ratio.

    The bounds are named as :class:`~tiered_bccache.tiers.memory.MemoryTier` takes them;
    each comes with the hit ratio it would have had on the trace.
    """

    share: float
    accesses: int
    #: The hit ratio of an unbounded cache: all but the compulsory misses hit.
    best_hit_ratio: float
    max_entries: int
    entries_hit_ratio: float
    #: At least the largest entry (below it the byte curve is not exact) and at least 1.
    max_bytes: int
    bytes_hit_ratio: float


def recommend(curves: HitCurves, *, share: float = 0.95) -> Recommendation:
    """The smallest entry count and byte size whose hits reach ``share`` of the best.

    Raises :class:`ValueError` if ``share`` is not in (0, 1] or the trace is empty.
    """
    _check_share(share)
    if curves.accesses == 0:
        raise ValueError("cannot size a cache from an empty trace")
    # Exact arithmetic: a float product could round a reachable target up by one hit.
    needed = math.ceil(Fraction(share) * curves.best_hits)
    entries = bisect_left(curves.entry_hits, needed) + 1
    breakpoints = curves.byte_curve.breakpoints
    i = bisect_left(breakpoints, needed, key=itemgetter(1))
    distance = breakpoints[i][0] if needed else 0
    max_bytes = max(distance, curves.byte_curve.max_size, 1)
    return Recommendation(
        share=share,
        accesses=curves.accesses,
        best_hit_ratio=curves.best_hits / curves.accesses,
        max_entries=entries,
        entries_hit_ratio=curves.entry_hits[entries - 1] / curves.accesses,
        max_bytes=max_bytes,
        bytes_hit_ratio=curves.byte_curve.hits_at(max_bytes) / curves.accesses,
    )


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")


_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)


def format_report(curves: HitCurves, *, share: float = 0.95) -> str:
    """A short text report for the command line: the trace, the hit ratio at a few
    sizes in entries and in bytes, and the :func:`recommend`-ed bounds (marked ``*``).

    Raises :class:`ValueError` if ``share`` is not in (0, 1].
    """
    _check_share(share)
    if curves.accesses == 0:
        return "empty trace: no accesses to size a cache from\n"
    rec = recommend(curves, share=share)
    byte_curve = curves.byte_curve
    m, total = curves.distinct_keys, byte_curve.total_size
    entry_sizes = sorted({max(1, math.ceil(m * f)) for f in _FRACTIONS} | {rec.max_entries})
    floor = max(byte_curve.max_size, 1)
    byte_sizes = sorted({max(floor, math.ceil(total * f)) for f in _FRACTIONS} | {rec.max_bytes})

    def cell(size: str, hits: int, recommended: bool) -> str:
        return f"{size:>11}  {100 * hits / curves.accesses:8.1f}%{'*' if recommended else ' '}"

    left = [cell(str(c), curves.entry_hits[c - 1], c == rec.max_entries) for c in entry_sizes]
    right = [cell(human_bytes(c), byte_curve.hits_at(c), c == rec.max_bytes) for c in byte_sizes]
    lines = [
        f"{curves.accesses} accesses, {m} distinct keys ({human_bytes(total)}), "
        f"largest entry {human_bytes(byte_curve.max_size)}",
        f"best possible hit ratio {100 * rec.best_hit_ratio:.1f}% (only the {m} compulsory misses)",
        "",
        f"{'max_entries':>11}  {'hit ratio':>9}    {'max_bytes':>11}  {'hit ratio':>9}",
    ]
    blank = " " * len(cell("", 0, False))
    lines += [f"{a}   {b}".rstrip() for a, b in zip_longest(left, right, fillvalue=blank)]
    lines += [
        "",
        f"* recommended for {100 * share:g}% of the best: "
        f"max_entries={rec.max_entries} ({100 * rec.entries_hit_ratio:.1f}%), "
        f"max_bytes={rec.max_bytes} ({human_bytes(rec.max_bytes)}, "
        f"{100 * rec.bytes_hit_ratio:.1f}%)",
    ]
    return "\n".join(lines) + "\n"


def zipf_trace(
    names_and_sizes: Sequence[tuple[str, int]],
    accesses: int,
    *,
    s: float = 1.1,
    seed: int = 0,
) -> list[TraceRecord]:
    """A synthetic trace of ``accesses`` lookups, for sizing without a real trace.

    The ``i``-th of ``names_and_sizes`` (from 1, so list them most popular first) is drawn
    with probability proportional to ``1 / i**s``; ``s`` near 1 is typical of web
    workloads. The same ``seed`` gives the same trace.

    Raises :class:`ValueError` if ``accesses`` is negative, or positive with no names.
    """
    if accesses < 0:
        raise ValueError(f"accesses must be >= 0, got {accesses!r}")
    if accesses and not names_and_sizes:
        raise ValueError("names_and_sizes is empty: there is nothing to draw from")
    if not accesses:
        return []
    population = [TraceRecord(name, size) for name, size in names_and_sizes]
    weights = accumulate(1.0 / rank**s for rank in range(1, len(population) + 1))
    return random.Random(seed).choices(population, cum_weights=list(weights), k=accesses)
