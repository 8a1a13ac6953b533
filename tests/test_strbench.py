"""The template-string benchmark: outputs are checked against plain Jinja before any
timing, the admission run shows what one-off strings leave on disk, and a ratio of too
few valid rounds is reported as such."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tiered_bccache.benchkit.corpus import generate_corpus, render_context
from tiered_bccache.benchkit.strings import StringReport, corpus_strings, run_string_bench


def test_corpus_strings_are_distinct_and_render_on_their_own(tmp_path: Path) -> None:
    """The strings taken from the corpus are distinct, include whole templates and
    single expressions, and each renders in a sandbox without a loader lookup failing."""
    generate_corpus(tmp_path, count=36)
    strings = corpus_strings(str(tmp_path), render_context())
    assert len(strings) == len(set(strings)) == 50
    assert any(s.startswith("{{") and s.endswith("}}") and "\n" not in s for s in strings)
    assert max(len(s) for s in strings) > 1000  # whole templates, not only expressions


def test_admission_keeps_one_off_strings_off_the_disk(tmp_path: Path) -> None:
    """With the default admission a one-off string is never written: only the repeated
    strings are on disk; admitting at the first sighting writes every one-off."""
    generate_corpus(tmp_path / "templates", count=36)
    report = run_string_bench(
        str(tmp_path / "templates"),
        str(tmp_path),
        context=render_context(),
        iterations=2,
        rounds=1,
        processes=False,
        secret=os.urandom(32),
    )
    by_admission = {a["admission"]: a for a in report.admission}
    strings = report.strings
    assert by_admission[2]["files"] == strings  # the repeated strings only
    assert by_admission[1]["files"] == strings + 20 * strings  # every one-off too
    assert by_admission[2]["disk_bytes"] * 10 < by_admission[1]["disk_bytes"]
    assert "in-process loop" in report.format_table()


def report_with_process_rounds(
    plain: list[float], plain_base: list[float], ours: list[float], ours_base: list[float]
) -> StringReport:
    """A report whose whole-process rounds took these wall times (seconds)."""
    return StringReport(
        strings=50,
        iterations=2,
        in_process={"plain": [0.2, 0.21, 0.19], "ours": [0.01, 0.012, 0.011]},
        processes={"plain-base": plain_base, "plain": plain, "ours-base": ours_base, "ours": ours},
        admission=[],
    )


@pytest.mark.parametrize(
    ("plain", "valid"),
    [([0.100, 0.099, 0.100], 0), ([0.120, 0.099, 0.100], 1)],
    ids=["no-valid-round", "one-valid-round-of-three"],
)
def test_a_string_cost_of_too_few_valid_rounds_is_not_enough_signal(
    plain: list[float], valid: int
) -> None:
    """When the strings' cost is lost in the start-up noise (plain - plain-base <= 0) in
    most rounds, the table says 'not enough signal' instead of a number or a crash, and
    the JSON holds null and the count of valid rounds."""
    report = report_with_process_rounds(plain, [0.100] * 3, [0.101] * 3, [0.100] * 3)
    table = report.format_table()
    assert f"what the strings cost, ours / plain: not enough signal ({valid} of 3 rounds " in table
    assert "target <= 0.15x: no verdict" in table
    cost = report.as_dict()["ratios"]["string_cost_ours_over_plain"]
    assert cost == {"median": None, "min": None, "max": None, "n": valid, "rounds": 3}
    json.dumps(report.as_dict())  # null, not NaN or an exception


def test_a_string_cost_of_enough_valid_rounds_is_a_number() -> None:
    """Two valid rounds of three are enough: the median of those two, with its spread."""
    report = report_with_process_rounds(
        [0.120, 0.099, 0.140], [0.100] * 3, [0.101, 0.100, 0.102], [0.100] * 3
    )
    cost = report.string_cost_ratio()
    assert cost.spread is not None and (cost.valid, cost.rounds) == (2, 3)
    assert cost.spread.median == pytest.approx((0.001 / 0.020 + 0.002 / 0.040) / 2)
    assert "what the strings cost, ours / plain: 0.050x (0.050..0.050)" in report.format_table()
    assert report.as_dict()["ratios"]["string_cost_ours_over_plain"]["n"] == 2
