"""The template-string benchmark: outputs are checked against plain Jinja before any
timing, and the admission run shows what one-off strings leave on disk."""

from __future__ import annotations

import os
from pathlib import Path

from tiered_bccache.benchkit.corpus import generate_corpus, render_context
from tiered_bccache.benchkit.strings import corpus_strings, run_string_bench


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
