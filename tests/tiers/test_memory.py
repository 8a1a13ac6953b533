"""MemoryTier: an LRU of objects bounded by count, by weight, or both, safe under threads."""

from __future__ import annotations

import pickle
import random
import sys
import threading
import time
from typing import Any

import pytest

from tiered_bccache import ConfigurationError, MemoryTier, Tier

from .tier_suite import TierContract


class TestMemoryTierContract(TierContract):
    """Given bytes, the memory tier keeps the byte-tier contract too."""

    def make_tier(self) -> Tier:
        return MemoryTier()


def test_stores_any_object_as_is() -> None:
    """get returns the very object that was set: nothing is copied or serialized."""
    tier = MemoryTier()
    value = ("source", compile("1 + 1", "<t>", "eval"))
    tier.set("k", value, 100)
    assert tier.get("k") is value


def test_count_bound_evicts_the_least_recently_used_not_the_first_inserted() -> None:
    """A get refreshes an entry, so the oldest *unused* entry goes when the count is full."""
    tier = MemoryTier(3)
    for key in "abc":
        tier.set(key, key)
    assert tier.get("a") == "a"
    tier.set("d", "d")
    assert ("a" in tier, "b" in tier, "c" in tier, "d" in tier) == (True, False, True, True)
    assert len(tier) == 3


def test_set_of_an_existing_key_refreshes_it() -> None:
    """Overwriting an entry makes it the most recent one."""
    tier = MemoryTier(2)
    tier.set("a", 1)
    tier.set("b", 2)
    tier.set("a", 3)
    tier.set("c", 4)
    assert ("a" in tier, "b" in tier) == (True, False)
    assert tier.get("a") == 3


def test_byte_bound_evicts_by_weight_in_lru_order() -> None:
    """With max_bytes, entries weigh their size and the least recently used go first."""
    tier = MemoryTier(None, max_bytes=100)
    tier.set("a", "a", 40)
    tier.set("b", "b", 40)
    assert tier.get("a") == "a"
    tier.set("c", "c", 40)
    assert ("a" in tier, "b" in tier, "c" in tier) == (True, False, True)
    assert tier.currsize == 80
    tier.set("d", "d", 60)
    assert ("a" in tier, "c" in tier, "d" in tier) == (False, True, True)
    assert tier.currsize == 100


def test_byte_bound_alone_does_not_bound_the_count_of_heavy_entries() -> None:
    """Without max_entries, only the weight counts: many light entries fit."""
    tier = MemoryTier(None, max_bytes=1000)
    for i in range(500):
        tier.set(f"k{i}", i, 2)
    assert len(tier) == 500
    assert tier.currsize == 1000


def test_entry_weighs_at_least_one_byte() -> None:
    """A size of 0 still weighs 1, so max_bytes also bounds the number of entries."""
    tier = MemoryTier(None, max_bytes=5)
    for i in range(10):
        tier.set(f"k{i}", i, 0)
    assert len(tier) == 5


def test_both_bounds_hold_together() -> None:
    """With max_entries and max_bytes, whichever is reached first evicts, in LRU order."""
    tier = MemoryTier(3, max_bytes=100)
    for key in "abcd":
        tier.set(key, key, 10)
    assert (len(tier), "a" in tier) == (3, False)
    assert tier.get("b") == "b"
    tier.set("e", "e", 85)
    # 10 (b) + 85 (e) fits in 100 once c and d, the least recently used, are gone.
    assert sorted(k for k in "bcde" if k in tier) == ["b", "e"]
    assert tier.currsize == 95


def test_entry_larger_than_max_bytes_is_skipped_without_flushing_the_others() -> None:
    """An entry heavier than the whole tier is not stored, and everything else stays."""
    tier = MemoryTier(None, max_bytes=100)
    tier.set("a", "a", 30)
    tier.set("b", "b", 30)
    tier.set("huge", "huge", 101)
    assert "huge" not in tier
    assert (tier.get("a"), tier.get("b"), tier.currsize) == ("a", "b", 60)
    assert tier.max_entry_size == 100


def test_overwrite_with_a_value_too_large_drops_the_old_value() -> None:
    """A key whose new value does not fit is removed, never left holding the old value."""
    tier = MemoryTier(None, max_bytes=100)
    tier.set("a", "old", 10)
    tier.set("b", "b", 10)
    tier.set("a", "new", 500)
    assert (tier.get("a"), tier.get("b")) == (None, "b")


def test_contains_does_not_refresh() -> None:
    """``key in tier`` peeks: the entry stays the next to be evicted."""
    tier = MemoryTier(2)
    tier.set("a", 1)
    tier.set("b", 2)
    assert "a" in tier
    tier.set("c", 3)
    assert "a" not in tier
    assert ("b" in tier, "c" in tier) == (True, True)


def test_threads_hammering_every_operation_keep_the_bounds() -> None:
    """Eight threads mixing get, set, delete and clear raise nothing and leave the tier
    within both bounds (cachetools alone would corrupt its LRU order under threads)."""
    tier = MemoryTier(50, max_bytes=2000)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 10.0
    start = threading.Barrier(8)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait(timeout=10)
            for _ in range(5000):
                if time.monotonic() > deadline:
                    return
                key = f"k{rng.randrange(200)}"
                op = rng.random()
                if op < 0.45:
                    tier.get(key)
                elif op < 0.9:
                    tier.set(key, key, rng.randrange(1, 150))
                elif op < 0.99:
                    tier.delete(key)
                else:
                    tier.clear()
                assert len(tier) <= 50
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
    # Switch threads far more often than the default 5 ms, so that an unlocked
    # operation would be interrupted halfway (without the lock this fails with KeyError).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(tier) <= 50
    assert tier.currsize <= 2000
    tier.set("after", "after", 10)
    assert tier.get("after") == "after"


def test_count_bound_holds_at_every_instant_with_both_bounds() -> None:
    """With max_entries and max_bytes, len() read by other threads while keys are being
    added never exceeds max_entries, not even between an insertion and an eviction."""
    tier = MemoryTier(8, max_bytes=1_000_000)
    for i in range(8):
        tier.set(f"warm{i}", i, 10)  # full from the start: every later set evicts
    seen: list[int] = []
    stop = threading.Event()
    deadline = time.monotonic() + 10.0

    def read_len() -> None:
        worst = 0
        while not stop.is_set() and time.monotonic() < deadline:
            worst = max(worst, len(tier))
        seen.append(worst)

    def write(seed: int) -> None:
        for i in range(20_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            tier.set(f"w{seed}-{i}", i, 10)

    readers = [threading.Thread(target=read_len) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interrupt set() halfway as often as possible
    try:
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=15)
        stop.set()
        for thread in readers:
            thread.join(timeout=15)
    finally:
        stop.set()
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in readers + writers)
    assert len(seen) == 2 and max(seen) == 8, seen


def test_pickled_tier_is_empty_with_the_same_bounds() -> None:
    """A copy (as a process pool makes) keeps the configuration, not the code objects."""
    tier = MemoryTier(7, max_bytes=900)
    tier.set("k", "v", 10)
    copy = pickle.loads(pickle.dumps(tier))
    assert isinstance(copy, MemoryTier)
    assert (copy.max_entries, copy.max_bytes, len(copy)) == (7, 900, 0)
    assert copy.get("k") is None
    copy.set("k", "v", 10)
    assert copy.get("k") == "v"


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
@pytest.mark.parametrize("argument", ["max_entries", "max_bytes"])
def test_bad_bound_raises_configuration_error_naming_it(argument: str, value: Any) -> None:
    """A bound that is not a positive integer fails at construction, naming the argument."""
    with pytest.raises(ConfigurationError, match=argument):
        MemoryTier(**{argument: value})


def test_no_bound_at_all_raises_configuration_error_naming_both() -> None:
    """max_entries=None with no max_bytes would grow forever: refused at construction."""
    with pytest.raises(ConfigurationError) as info:
        MemoryTier(None)
    assert "max_entries" in str(info.value) and "max_bytes" in str(info.value)


# -- what the command line reports -----------------------------------------------------


def test_describe_reports_the_count_weight_and_bounds_held_in_this_process() -> None:
    """describe() gives what stats shows: entries, currsize, both bounds, this process only;
    probe() returns, since nothing is out of reach."""
    tier = MemoryTier(5, max_bytes=1000)
    tier.set("a", "x", 100)
    tier.set("b", "y", 30)
    assert tier.describe() == {
        "name": "memory",
        "kind": "memory",
        "entries": 2,
        "currsize": 130,
        "max_entries": 5,
        "max_bytes": 1000,
        "this_process_only": True,
    }
    tier.probe()  # returns
