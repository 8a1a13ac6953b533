"""How warm, stats and clear are told which cache: each takes it the same way, as the
positional CACHE or as --cache CACHE (module:attribute), or as --tier specs; exactly one
way, or a usage error naming the arguments. warm of an application's environment
fills the cache that environment uses when no other is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import one_line_error, run_cli
from tiered_bccache import FileSystemTier
from tiered_bccache.benchkit.corpus import generate_corpus


def write_app(where: Path, *, cache: bool = True) -> tuple[Path, list[str]]:
    """``myapp.py`` in ``where``: an Environment over a generated corpus, with (or without)
    a TieredBytecodeCache over a filesystem tier in ``where/fs``; its templates' names."""
    templates = where / "templates"
    names = generate_corpus(templates, count=4, seed=2, max_size=4 * 1024)
    bytecode_cache = "cache" if cache else "None"
    (where / "myapp.py").write_text(
        "from jinja2 import Environment, FileSystemLoader\n"
        "from tiered_bccache import TieredBytecodeCache, MemoryTier, FileSystemTier\n"
        f"cache = TieredBytecodeCache([MemoryTier(64), FileSystemTier({str(where / 'fs')!r})])\n"
        f"env = Environment(loader=FileSystemLoader({str(templates)!r}),"
        f" bytecode_cache={bytecode_cache})\n"
    )
    return templates, names


def entries(directory: Path) -> int:
    return FileSystemTier(directory).size()[0]


def test_warm_of_an_applications_environment_fills_the_cache_it_uses(tmp_path: Path) -> None:
    """``warm myapp:env`` with no cache given warms the environment's own cache."""
    _, names = write_app(tmp_path)
    result = run_cli("warm", "myapp:env", "--jobs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"compiled {len(names)} of {len(names)} templates" in result.stdout
    assert entries(tmp_path / "fs") == len(names)


@pytest.mark.parametrize("how", ["positional", "option"])
def test_warm_takes_the_cache_as_cache_or_as_the_option(tmp_path: Path, how: str) -> None:
    """``warm DIR myapp:cache`` and ``warm DIR --cache myapp:cache`` do the same."""
    templates, names = write_app(tmp_path)
    cache = ["myapp:cache"] if how == "positional" else ["--cache", "myapp:cache"]
    result = run_cli("warm", str(templates), *cache, "--jobs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert entries(tmp_path / "fs") == len(names)


@pytest.mark.parametrize("command", ["stats", "clear"])
@pytest.mark.parametrize("how", ["positional", "option"])
def test_stats_and_clear_take_the_cache_as_cache_or_as_the_option(
    tmp_path: Path, command: str, how: str
) -> None:
    """``stats``/``clear`` accept ``myapp:cache`` and ``--cache myapp:cache`` alike."""
    templates, names = write_app(tmp_path)
    assert run_cli("warm", "myapp:env", "--jobs", "1", cwd=tmp_path).returncode == 0
    cache = ["myapp:cache"] if how == "positional" else ["--cache", "myapp:cache"]
    result = run_cli(command, *cache, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    fs = f"filesystem:{tmp_path / 'fs'}"
    if command == "stats":
        assert fs in result.stdout and f"entries {len(names)}, " in result.stdout
    else:
        assert f"cleared {fs}: {len(names)} entries" in result.stdout
        assert entries(tmp_path / "fs") == 0


GIVEN_TWICE = [
    ["stats", "myapp:cache", "--cache", "myapp:cache"],
    ["clear", "--cache", "myapp:cache", "myapp:cache"],
    ["warm", "templates", "myapp:cache", "--cache", "myapp:cache"],
]


@pytest.mark.parametrize("args", GIVEN_TWICE, ids=[a[0] for a in GIVEN_TWICE])
def test_the_cache_given_both_ways_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    """CACHE and --cache together: exit 2, one line naming both, and nothing is done."""
    write_app(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "CACHE" in line and "--cache" in line and "not both" in line
    assert not (tmp_path / "fs").exists() or entries(tmp_path / "fs") == 0


NO_CACHE = [["stats"], ["clear"], ["warm", "templates"]]


@pytest.mark.parametrize("args", NO_CACHE, ids=[a[0] for a in NO_CACHE])
def test_no_cache_at_all_says_every_way_to_give_one(tmp_path: Path, args: list[str]) -> None:
    """No CACHE, --cache or --tier: exit 2 with one line naming the three ways."""
    write_app(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "no cache given" in line
    assert "CACHE" in line and "--cache" in line and "--tier" in line


def test_warm_of_an_environment_without_our_cache_says_to_give_one(tmp_path: Path) -> None:
    """An environment whose bytecode_cache is not ours names no cache to fill: exit 2,
    the line says so and how to name one."""
    write_app(tmp_path, cache=False)
    result = run_cli("warm", "myapp:env", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "'myapp:env'" in line and "bytecode_cache is None" in line
    assert "CACHE" in line and "--tier" in line


def test_a_cache_and_tier_specs_together_are_a_usage_error(tmp_path: Path) -> None:
    """A named cache and --tier specs are two caches: exit 2, naming both."""
    templates, _ = write_app(tmp_path)
    result = run_cli("warm", str(templates), "myapp:cache", "--tier", "memory", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert "'myapp:cache'" in line and "--tier" in line and "not both" in line
