"""What ``tiered-bccache bench`` prints: each table as soon as it is measured, one time
unit per column, counts agreeing with their nouns, and "not enough signal" (null in the
JSON, with the count of valid rounds) for a ratio of too few valid rounds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_cli import one_line_error, run_cli
from tiered_bccache.benchkit.hitpath import BenchConfig, BenchReport
from tiered_bccache.benchkit.process import ProcessReport
from tiered_bccache.benchkit.timing import NOT_ENOUGH_SIGNAL, enough_rounds, round_ratios

MS = 1_000_000  # nanoseconds


@pytest.mark.parametrize(
    ("valid", "rounds", "enough"),
    [
        (1, 1, True),  # a run of one round asked for no more
        (0, 1, False),
        (2, 2, True),
        (1, 2, False),
        (2, 3, True),
        (1, 3, False),
        (4, 7, True),
        (3, 7, False),  # most rounds lost: the rest are those the noise favoured
        (0, 0, False),
    ],
)
def test_a_ratio_needs_two_valid_rounds_and_more_than_half(
    valid: int, rounds: int, enough: bool
) -> None:
    """The rule for reporting a ratio at all, and round_ratios applies it."""
    assert enough_rounds(valid, rounds) is enough
    ratio = round_ratios([1.0] * rounds, [1.0] * valid + [0.0] * (rounds - valid))
    assert (ratio.valid, ratio.rounds, ratio.spread is not None) == (valid, rounds, enough)


def hitpath_report(samples: dict[str, list[list[int]]], templates: int) -> BenchReport:
    return BenchReport(BenchConfig(), [f"t{i}.html" for i in range(templates)], samples)


def test_each_column_of_the_hit_path_table_has_one_time_unit() -> None:
    """Corpus loads of 2 to 80 ms are all in ms; per-template times of 0.5 to 20 ms all
    in us (the smallest is under a millisecond): no column mixes ms and us."""
    rounds = 3
    samples = {
        "compile": [[20 * MS] * 4 for _ in range(rounds)],  # 80 ms a corpus
        "memory": [[MS // 2] * 4 for _ in range(rounds)],  # 2 ms a corpus
        "fs": [[3 * MS] * 4 for _ in range(rounds)],  # 12 ms a corpus
    }
    table = hitpath_report(samples, 4).format_table()
    rows = [line for line in table.splitlines() if line.split(" ", 1)[0] in samples]
    assert len(rows) == 3
    units = [re.findall(r"\b(ms|us)\b", row) for row in rows]
    assert all(len(u) == 4 for u in units), rows
    columns = list(zip(*units, strict=True))
    assert columns[0] == ("ms",) * 3, rows  # corpus load
    assert columns[1] == ("us",) * 3, rows  # per template
    for column in columns[2:]:  # the spread's two ends
        assert len(set(column)) == 1, rows
    assert "80.0 ms" in rows[0] and "2.0 ms" in rows[1] and "500.0 us" in rows[1]


def test_one_round_of_one_template_is_said_in_the_singular() -> None:
    """'1 template, 1 round', not '1 templates, 1 rounds'."""
    table = hitpath_report({"compile": [[MS]], "memory": [[MS // 10]]}, 1).format_table()
    assert table.startswith("1 template, 1 round; "), table
    wall = {"python": [0.05], "jinja-fs": [0.06], "floor": [0.055]}
    processes = ProcessReport(1, wall, wall, {}, []).format_table()
    assert processes.startswith("whole processes: 1 template loaded by a new process, 1 round "), (
        processes
    )


def test_a_target_of_too_few_valid_rounds_has_no_number_and_no_verdict() -> None:
    """A ratio whose denominator measured nothing in most rounds: its target row says
    'not enough signal' and how many rounds were valid; the JSON has null and the count."""
    report = ProcessReport(
        templates=3,
        wall={"ours-fs": [1.0, 1.0, 1.0], "jinja-fs": [0.0, 0.0, 2.0], "floor": [0.5] * 3},
        cpu={"ours-fs": [1.0] * 3, "jinja-fs": [1.0] * 3, "floor": [0.5] * 3},
        new_env={},
        notes=[],
    )
    table = report.format_table()
    (row,) = [line for line in table.splitlines() if line.startswith("ours-fs/jinja-fs")]
    assert NOT_ENOUGH_SIGNAL in row and "no verdict" in row and "(1 of 3 rounds valid)" in row
    assert "ours-fs/floor" in table and "2.000x" in table  # the other target is a number
    data = report.as_dict()["ratios"]
    assert data["ours-fs/jinja-fs"] == {
        "median": None,
        "min": None,
        "max": None,
        "n": 1,
        "rounds": 3,
    }
    assert data["ours-fs/floor"]["median"] == 2.0 and data["ours-fs/floor"]["n"] == 3
    json.dumps(data)


def test_the_hit_path_json_says_how_many_rounds_each_ratio_had() -> None:
    """Every ratio of the hit-path JSON carries its valid rounds and all rounds."""
    samples = {
        "memory": [[2000, 2000]] * 3,
        "floor-dict": [[1000, 1000]] * 3,
        "jinja-fs": [[9000, 9000]] * 3,
    }
    ratios = hitpath_report(samples, 2).as_dict()["ratios"]
    assert ratios["memory/floor-dict"]["median"] == 2.0
    assert (ratios["memory/floor-dict"]["n"], ratios["memory/floor-dict"]["rounds"]) == (3, 3)
    assert ratios["memory/floor-dict"]["met"] is False


def test_the_hit_path_table_is_printed_before_a_later_part_fails(tmp_path: Path) -> None:
    """Templates that compile but of which no string renders on its own: the
    template-string part cannot run (exit 2, one line saying why), yet the hit-path table,
    measured before it, is on stdout."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "page.html").write_text("<p>{{ order.missing.attribute }}</p>\n")
    result = run_cli(
        "bench",
        "--quick",
        "--templates",
        str(templates),
        "--no-memcached",
        "--no-redis",
        "--no-processes",
        "--dir",
        str(tmp_path / "work"),
    )
    assert result.returncode == 2, result.stderr
    assert "no string of the corpus renders on its own" in one_line_error(result)
    assert result.stdout.startswith("1 template, 3 rounds; "), result.stdout
    assert "\ncompile " in result.stdout and "\nfloor-dict " in result.stdout
    assert "memory/floor-dict" in result.stdout
