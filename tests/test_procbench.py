"""The whole-process benchmark: every contender is a real new process that loads the
same code, and the report's ratios are taken per round."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import MemcachedServer
from tiered_bccache.benchkit.corpus import generate_corpus
from tiered_bccache.benchkit.process import ProcessReport, run_process_bench
from tiered_bccache.benchkit.timing import Spread

#: Every contender of a run with memcached and the compile rounds: each must have run.
ALL_CONTENDERS = {
    "python",
    "import-ours",
    "none",
    "floor",
    "floor-signed",
    "jinja-fs",
    "ours-fs",
    "jinja-mc",
    "ours-mc",
}


def test_every_contender_loads_the_same_code_in_new_processes(
    tmp_path: Path, memcached: MemcachedServer
) -> None:
    """One round over three templates: every contender ran (the warm-up compares what
    each process loaded, code object by code object), the new-Environment figures are
    there, and the table names every target."""
    names = generate_corpus(tmp_path / "templates", count=3)
    report = run_process_bench(
        str(tmp_path / "templates"),
        names,
        str(tmp_path / "work"),
        secret=os.urandom(32),
        memcached=memcached.address,
        rounds=1,
    )
    assert set(report.wall) == ALL_CONTENDERS
    assert report.new_env["fingerprint_us"] > 0 and report.new_env["first_hit_ratio"] > 0
    table = report.format_table()
    for ratio in (
        "ours-fs/jinja-fs",
        "ours-fs/floor",
        "ours-fs/floor-signed",
        "import-ours/python",
    ):
        assert ratio in table
    # The entries were really written by the warm-up processes.
    assert any(name.endswith(".tbc") for name in os.listdir(tmp_path / "work" / "ours-fs"))


def test_ratios_are_taken_per_round_then_summarised() -> None:
    """The ratio of two contenders is the median of the per-round ratios, with their
    range: a slow round for both does not skew it."""
    report = ProcessReport(
        templates=1,
        wall={"ours-fs": [1.0, 4.0, 2.0], "jinja-fs": [2.0, 4.0, 1.0]},
        cpu={"ours-fs": [1.0, 1.0, 1.0], "jinja-fs": [1.0, 1.0, 1.0]},
        new_env={},
        notes=[],
    )
    ratio = report.ratio("ours-fs", "jinja-fs")
    assert ratio is not None and ratio.spread == Spread(1.0, 0.5, 2.0, 3)
    assert report.ratio("ours-fs", "floor") is None


def test_a_failing_contender_is_an_error_not_a_row(tmp_path: Path) -> None:
    """A template that does not compile makes the run fail with the child's error rather
    than report times for processes that did not do the work."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "broken.html").write_text("{% if %}")
    with pytest.raises(RuntimeError, match="benchmark child .* failed"):
        run_process_bench(
            str(tmp_path / "templates"),
            ["broken.html"],
            str(tmp_path / "work"),
            secret=os.urandom(32),
            memcached=None,
            rounds=1,
        )
