"""The one-pass hit curves against brute-force LRU simulations with cachetools.

Each access is a lookup; a miss inserts. Sizes follow the rule :func:`hit_curves`
documents: a key is charged the largest size it has been recorded with so far, and the
cached entry is updated to that size when it grows.
"""

from __future__ import annotations

import math
from fractions import Fraction

from cachetools import LRUCache
from hypothesis import given
from hypothesis import strategies as st

from tiered_bccache.trace import TraceRecord
from tiered_bccache.tune import hit_curves, recommend

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
# Sizes vary between accesses of one key (edits, and 0 for a miss before compile).
TRACES = st.lists(st.builds(TraceRecord, KEYS, st.integers(0, 20)), max_size=60)


def _identity(size: int) -> int:
    return size


def simulate_entries(records: list[TraceRecord], capacity: int) -> int:
    """Hits of a cachetools LRU of ``capacity`` entries over ``records``."""
    cache: LRUCache[str, int] = LRUCache(maxsize=capacity)
    hits = 0
    for key, size in records:
        if key in cache:
            hits += 1
            cache[key]  # a lookup: the key becomes the most recent
        else:
            cache[key] = size
    return hits


def simulate_bytes(records: list[TraceRecord], capacity: int) -> int:
    """Hits of a cachetools LRU of ``capacity`` bytes over ``records``, charging each key
    the largest size seen for it so far."""
    cache: LRUCache[str, int] = LRUCache(maxsize=capacity, getsizeof=_identity)
    charged: dict[str, int] = {}
    hits = 0
    for key, size in records:
        charged[key] = max(charged.get(key, 0), size)
        if key in cache:
            hits += 1
            if cache[key] < charged[key]:
                # Reinsert rather than overwrite: cachetools' in-place growth counts the
                # old size too and could evict the entry itself.
                del cache[key]
                cache[key] = charged[key]
        else:
            cache[key] = charged[key]
    return hits


@given(TRACES)
def test_entry_curve_matches_lru_simulation_at_every_capacity(records: list[TraceRecord]) -> None:
    """entry_hits[c - 1] equals a simulated c-entry LRU's hits for every c up to the keys."""
    curves = hit_curves(records)
    assert curves.distinct_keys == len({key for key, _ in records})
    expected = [simulate_entries(records, c) for c in range(1, curves.distinct_keys + 1)]
    assert list(curves.entry_hits) == expected


@given(TRACES)
def test_byte_curve_matches_lru_simulation_at_every_capacity(records: list[TraceRecord]) -> None:
    """hits_at(C) equals a simulated C-byte LRU's hits for every C from the largest entry up
    to the total size, and one past it."""
    curve = hit_curves(records).byte_curve
    for capacity in range(curve.max_size, curve.total_size + 2):
        assert curve.hits_at(capacity) == simulate_bytes(records, capacity), capacity


@given(TRACES.filter(bool), st.floats(0.01, 1.0))
def test_recommendation_is_the_smallest_size_reaching_the_share(
    records: list[TraceRecord], share: float
) -> None:
    """The recommended bounds reach the share of the best hits and one less would not."""
    curves = hit_curves(records)
    rec = recommend(curves, share=share)
    needed = math.ceil(Fraction(share) * curves.best_hits)
    assert simulate_entries(records, rec.max_entries) >= needed
    assert rec.max_entries == 1 or simulate_entries(records, rec.max_entries - 1) < needed
    assert simulate_bytes(records, rec.max_bytes) >= needed
    floor = max(curves.byte_curve.max_size, 1)
    assert rec.max_bytes == floor or simulate_bytes(records, rec.max_bytes - 1) < needed
