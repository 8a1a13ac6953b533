"""Tests for sizing from a trace: hit curves, the recommendation, the report, Zipf traces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tiered_bccache.trace import TraceRecord, TraceWriter, read_trace
from tiered_bccache.tune import (
    ByteCurve,
    HitCurves,
    format_report,
    hit_curves,
    recommend,
    zipf_trace,
)


def trace(*accesses: tuple[str, int]) -> list[TraceRecord]:
    return [TraceRecord(key, size) for key, size in accesses]


# a b a c b a with a=1, b=2, c=3 bytes. Reuses, with what was accessed since the previous
# access: a@3 {b} -> 2 entries, 2+1=3 bytes; b@5 {a,c} -> 3 entries, 1+3+2=6 bytes;
# a@6 {c,b} -> 3 entries, 3+2+1=6 bytes.
TINY = trace(("a", 1), ("b", 2), ("a", 1), ("c", 3), ("b", 2), ("a", 1))


def test_tiny_trace_entry_curve_matches_hand_computation() -> None:
    """Entry stack distances 2, 3, 3 give 0, 1 and 3 hits at capacities 1, 2 and 3."""
    curves = hit_curves(TINY)
    assert curves.accesses == 6
    assert curves.entry_hits == (0, 1, 3)
    assert curves.distinct_keys == 3
    assert curves.best_hits == 3


def test_tiny_trace_byte_curve_matches_hand_computation() -> None:
    """Byte stack distances 3, 6, 6 give breakpoints (3, 1), (6, 3) and a step function."""
    curve = hit_curves(TINY).byte_curve
    assert curve == ByteCurve(breakpoints=((3, 1), (6, 3)), max_size=3, total_size=6)
    assert [curve.hits_at(c) for c in (3, 4, 5, 6, 7, 10**9)] == [1, 1, 1, 3, 3, 3]


def test_byte_curve_refuses_capacities_below_the_largest_entry() -> None:
    """hits_at below the largest entry raises, since the one-pass curve is not exact there."""
    with pytest.raises(ValueError, match="below the largest entry"):
        hit_curves(TINY).byte_curve.hits_at(2)


def test_a_key_is_charged_the_largest_size_it_was_recorded_with() -> None:
    """A key recorded at 5 then 2 bytes still weighs 5; one recorded 0 then 4 weighs 4."""
    # a@3: {b} -> 1 + 5. b@4: {a}, charged max(5, 2) = 5 -> 5 + 1, not 2 + 1.
    curve = hit_curves(trace(("a", 5), ("b", 1), ("a", 2), ("b", 1))).byte_curve
    assert curve.breakpoints == ((6, 2),)
    assert curve.max_size == 5
    assert curve.total_size == 6
    grown = hit_curves(trace(("a", 0), ("b", 3), ("a", 4), ("b", 3))).byte_curve
    # a@3: {b} -> 3 + 0 (a's size so far); b@4: {a} -> 4 + 3.
    assert grown.breakpoints == ((3, 1), (7, 2))
    assert grown.total_size == 7


def test_empty_trace_gives_empty_curves() -> None:
    """No accesses give no capacities, no breakpoints and zero hits everywhere."""
    curves = hit_curves([])
    assert curves == HitCurves(0, (), ByteCurve((), 0, 0))
    assert curves.byte_curve.hits_at(0) == 0


def test_long_trace_over_few_keys_survives_renumbering() -> None:
    """A cycle over 3 keys repeated 10,000 times hits only at capacity 3, however long."""
    keys = [("x", 10), ("y", 20), ("z", 30)]
    curves = hit_curves(trace(*(keys * 10_000)))
    assert curves.entry_hits == (0, 0, 29_997)
    assert curves.byte_curve.breakpoints == ((60, 29_997),)


def test_curves_read_a_trace_file_in_one_pass(tmp_path: Path) -> None:
    """hit_curves accepts read_trace's generator directly and agrees with the list."""
    path = tmp_path / "trace.txt"
    with TraceWriter(path) as writer:
        for key, size in TINY:
            writer.record(key, size)
    assert hit_curves(read_trace(path)) == hit_curves(TINY)


def test_recommendation_for_a_cyclic_working_set_is_the_whole_set() -> None:
    """Cycling over 10 keys of 100 bytes, LRU hits nothing below 10 entries or 1000 bytes."""
    cycle = [(f"k{i}", 100) for i in range(10)]
    rec = recommend(hit_curves(trace(*(cycle * 100))))
    assert (rec.max_entries, rec.max_bytes) == (10, 1000)
    assert rec.best_hit_ratio == rec.entries_hit_ratio == rec.bytes_hit_ratio == 0.99
    assert rec.accesses == 1000
    assert rec.share == 0.95


def test_recommendation_is_the_smallest_size_reaching_the_share() -> None:
    """A hot key and a cold cycle: one entry of 50 bytes gets half the hits, enough for 0.5."""
    accesses = []
    for i in range(100):
        accesses += [("hot", 50), (f"cold{i % 4}", 10), ("hot", 50)]
    curves = hit_curves(trace(*accesses))
    rec = recommend(curves, share=0.5)
    assert rec.max_entries == 2
    assert curves.entry_hits[rec.max_entries - 1] >= 0.5 * curves.best_hits
    assert curves.entry_hits[rec.max_entries - 2] < 0.5 * curves.best_hits
    assert rec.max_bytes == 60
    assert curves.byte_curve.hits_at(59) < 0.5 * curves.best_hits
    full = recommend(curves, share=1.0)
    assert (full.max_entries, full.max_bytes) == (5, 90)


def test_recommendation_without_reuse_is_the_smallest_valid_tier() -> None:
    """When every access is a compulsory miss, one entry and the largest entry's bytes do."""
    rec = recommend(hit_curves(trace(("a", 7), ("b", 9))))
    assert (rec.max_entries, rec.max_bytes) == (1, 9)
    assert rec.best_hit_ratio == 0.0
    zero = recommend(hit_curves(trace(("a", 0), ("a", 0))))
    assert zero.max_bytes == 1
    assert zero.bytes_hit_ratio == 0.5


@pytest.mark.parametrize("share", [0.0, -0.1, 1.01])
def test_recommend_rejects_a_share_outside_0_to_1(share: float) -> None:
    """A share that is not in (0, 1] raises ValueError naming `share`."""
    with pytest.raises(ValueError, match="share"):
        recommend(hit_curves(TINY), share=share)
    with pytest.raises(ValueError, match="share"):
        format_report(hit_curves(TINY), share=share)


def test_recommend_rejects_an_empty_trace() -> None:
    """There is nothing to size from an empty trace, and recommend says so."""
    with pytest.raises(ValueError, match="empty trace"):
        recommend(hit_curves([]))


def test_report_shows_sizes_ratios_and_the_recommendation() -> None:
    """The report names the trace, the best ratio, and marks the recommended bounds."""
    cycle = [(f"k{i}", 100) for i in range(10)]
    report = format_report(hit_curves(trace(*(cycle * 100))))
    assert report.startswith("1000 accesses, 10 distinct keys (1000 B), largest entry 100 B\n")
    assert "best possible hit ratio 99.0%" in report
    rows = report.splitlines()
    assert any(row.split()[:2] == ["10", "99.0%*"] for row in rows if row.strip())
    assert "max_entries=10 (99.0%), max_bytes=1000 (1000 B, 99.0%)" in report
    assert report.endswith("\n")


def test_report_on_an_empty_trace_says_so() -> None:
    """An empty trace gets a one-line explanation instead of a table."""
    assert format_report(hit_curves([])) == "empty trace: no accesses to size a cache from\n"


NAMES = [(f"{i:040x}", 1000 + i) for i in range(50)]


def test_zipf_trace_is_determined_by_its_seed() -> None:
    """The same seed gives the same trace; another seed gives another one."""
    first = zipf_trace(NAMES, 500, seed=3)
    assert first == zipf_trace(NAMES, 500, seed=3)
    assert first != zipf_trace(NAMES, 500, seed=4)
    assert len(first) == 500
    assert set(first) <= {TraceRecord(key, size) for key, size in NAMES}


def test_zipf_trace_favours_the_first_names() -> None:
    """Earlier names are drawn more often: rank 1 beats rank 10, which beats rank 50."""
    counts = Counter(key for key, _ in zipf_trace(NAMES, 20_000, s=1.1, seed=0))
    assert counts[NAMES[0][0]] > counts[NAMES[9][0]] > counts[NAMES[49][0]]


def test_zipf_trace_validates_its_arguments() -> None:
    """Negative accesses, or accesses with no names to draw from, raise ValueError."""
    with pytest.raises(ValueError, match="accesses"):
        zipf_trace(NAMES, -1)
    with pytest.raises(ValueError, match="empty"):
        zipf_trace([], 1)
    assert zipf_trace([], 0) == []
