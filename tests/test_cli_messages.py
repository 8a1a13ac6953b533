"""What the command line says in the small cases: a typo in a command's option points to
that command's help, an empty key variable is called empty rather than unset, counts
agree with their nouns, and stats and clear look at a filesystem tier without creating
its directory or a key file in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import one_line_error, run_cli
from tiered_bccache import FileSystemTier
from tiered_bccache.secret import ENV_VAR, KEY_FILE
from tiered_bccache.spec import parse_tier

# -- the hint of a usage error -----------------------------------------------------------


@pytest.mark.parametrize("command", ["bench", "tune", "warm", "stats", "clear"])
def test_an_unknown_option_of_a_command_points_to_that_commands_help(command: str) -> None:
    """``stats --teir`` (a typo) names the option and 'tiered-bccache stats --help'."""
    result = run_cli(command, "--teir", "memory")
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "unrecognized arguments: --teir" in line
    assert line.endswith(f"(see 'tiered-bccache {command} --help')"), line


def test_an_unknown_option_before_the_command_points_to_the_top_level_help() -> None:
    """A typo before any command has only the top-level help to point to."""
    result = run_cli("--degub", "stats")
    assert result.returncode == 2, result.stderr
    assert one_line_error(result).endswith("(see 'tiered-bccache --help')")


# -- an empty key variable ----------------------------------------------------------------


def test_an_empty_secret_variable_is_called_empty_not_unset() -> None:
    """TIERED_BCCACHE_SECRET= with a memcached tier: the line says the variable is set
    but empty (a typo in a deployment's template), not 'set it'."""
    result = run_cli("stats", "--tier", "memcached:127.0.0.1:1", secret=False, env={ENV_VAR: ""})
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert f"${ENV_VAR} is set but empty" in line, line
    assert "--secret-file" in line and "--allow-unsigned" in line


def test_an_empty_secret_env_variable_is_called_empty_not_unset() -> None:
    """--secret-env VAR with VAR set to nothing: 'set but empty', naming the option."""
    result = run_cli(
        "stats", "--tier", "memory", "--secret-env", "TBC_EMPTY_KEY", env={"TBC_EMPTY_KEY": ""}
    )
    assert result.returncode == 2, result.stderr
    assert "--secret-env TBC_EMPTY_KEY: the variable is set but empty" in one_line_error(result)


# -- counts and their nouns ----------------------------------------------------------------


def test_stats_of_one_tier_says_one_tier(tmp_path: Path) -> None:
    """'1 tier, in lookup order', not '1 tiers'."""
    result = run_cli("stats", "--tier", "memory")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1 tier, in lookup order:\n"), result.stdout
    two = run_cli("stats", "--tier", "memory", "--tier", f"fs:{tmp_path}")
    assert two.stdout.startswith("2 tiers, in lookup order:\n"), two.stdout


def test_warm_of_one_template_says_one_template(tmp_path: Path) -> None:
    """'compiled 1 of 1 template', not '1 templates'."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "only.html").write_text("{{ 1 + 1 }}")
    result = run_cli("warm", str(tmp_path / "templates"), "--tier", f"fs:{tmp_path / 'fs'}")
    assert result.returncode == 0, result.stderr
    assert "compiled 1 of 1 template into " in result.stdout, result.stdout


# -- stats and clear create nothing -------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_a_missing_cache_directory_is_reported_not_created(tmp_path: Path, command: str) -> None:
    """stats and clear of an fs tier whose directory does not exist say so, exit 0, and
    leave the directory (and its missing parents) uncreated; the other tiers are shown."""
    missing = tmp_path / "no" / "such"
    result = run_cli(command, "--tier", "memory", "--tier", f"fs:{missing},max_bytes=1M")
    assert result.returncode == 0, result.stderr
    assert f"filesystem:{missing}" in result.stdout
    assert "does not exist" in result.stdout, result.stdout
    assert not (tmp_path / "no").exists()
    if command == "stats":
        report = json.loads(
            run_cli(
                "stats", "--tier", "memory", "--tier", f"fs:{missing},max_bytes=1M", "--json"
            ).stdout
        )
        memory, filesystem = report["tiers"]
        assert memory["kind"] == "memory"
        assert filesystem == {
            "name": f"filesystem:{missing}",
            "kind": "filesystem",
            "directory": str(missing),
            "exists": False,
            "entries": 0,
            "bytes": 0,
            "max_bytes": 1024 * 1024,
        }
        assert not (tmp_path / "no").exists()


def test_stats_of_only_missing_directories_shows_them_and_no_counters(tmp_path: Path) -> None:
    """With no tier that exists there is no cache to count for: the tiers are listed as
    missing, the counters are said to be absent, nothing is created."""
    result = run_cli("stats", "--tier", f"fs:{tmp_path / 'gone'}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tiers"][0]["exists"] is False and report["counters"] is None
    text = run_cli("stats", "--tier", f"fs:{tmp_path / 'gone'}")
    assert "does not exist" in text.stdout and "counters" in text.stdout
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("command", ["stats", "clear"])
def test_stats_and_clear_without_a_key_leave_no_key_file(tmp_path: Path, command: str) -> None:
    """With no key anywhere, a filesystem-only cache would make a host key file in its
    directory: stats and clear, which read no entry, must not (and stats writes nothing
    at all; clear takes the tier's own lock directory to delete under)."""
    (tmp_path / "fs").mkdir()
    result = run_cli(command, "--tier", f"fs:{tmp_path / 'fs'}", secret=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "fs" / KEY_FILE).exists()
    if command == "stats":
        assert list((tmp_path / "fs").iterdir()) == []


FS_SPECS = [
    "fs:{d}/plain",
    "fs:{d}/with,comma",
    "fs:{d}/sized,max_bytes=64M",
    "filesystem:{d}/long-kind",
    "fs:{d}/trailing/,max_bytes=2k",
    "fs:{d}/x/../dotdot",
]


@pytest.mark.parametrize("spec", FS_SPECS)
def test_the_directory_read_from_a_spec_is_the_one_the_tier_uses(tmp_path: Path, spec: str) -> None:
    """The command line reads an fs spec's directory and max_bytes without building the
    tier (which would create the directory): they must be the tier's own."""
    from tiered_bccache.cli.common import filesystem_spec

    text = spec.format(d=tmp_path)
    read = filesystem_spec(text)
    assert read is not None
    tier = parse_tier(text)
    assert isinstance(tier, FileSystemTier)
    assert (read.directory, read.max_bytes, read.name) == (
        tier.directory,
        tier.max_bytes,
        tier.name,
    )


def test_the_default_directory_read_from_fs_is_the_tiers_default() -> None:
    """``fs`` alone: the per-user default directory, the same as FileSystemTier()'s."""
    from tiered_bccache.cli.common import filesystem_spec

    read = filesystem_spec("fs")
    assert read is not None
    tier = parse_tier("fs")
    assert isinstance(tier, FileSystemTier)
    assert read.directory == tier.directory


@pytest.mark.parametrize("spec", ["memory", "memcached:127.0.0.1:1", "fs:/x,bogus=1", "fsx:/y"])
def test_a_spec_that_is_no_valid_fs_spec_is_left_to_the_library(spec: str) -> None:
    """Other kinds, and fs specs the library would refuse, are not read here: the
    library builds them, or refuses them with its own message."""
    from tiered_bccache.cli.common import filesystem_spec

    assert filesystem_spec(spec) is None
