"""The help texts tell a new user what the README's command-line reference tells: how
each command takes its cache, what bench prints and how it ends, how errors and the
library's warnings reach the terminal."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

import pytest

from tiered_bccache.cli.parser import build_parser


@pytest.fixture(autouse=True)
def columns() -> Iterator[None]:
    """The 88 columns the texts are written for (argparse wraps at $COLUMNS - 2)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def help_of(command: str | None = None) -> str:
    """What ``tiered-bccache [COMMAND] --help`` prints."""
    parser = build_parser()
    if command is None:
        return parser.format_help()
    (commands,) = (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return str(commands[command].format_help())


def flat(text: str) -> str:
    """``text`` with its line breaks and indentation folded into single spaces."""
    return " ".join(text.split())


def test_the_top_level_help_says_how_errors_and_warnings_are_shown() -> None:
    """As the README says: python -m is the same program; an error is one line and never
    a traceback unless --debug; the library's warnings come after a success only."""
    text = flat(help_of())
    assert "'python -m tiered_bccache' is the same program" in text
    assert "one line on stderr, never a traceback (--debug shows it)" in text
    assert "printed after the command succeeds and dropped when it fails" in text


@pytest.mark.parametrize("command", ["warm", "stats", "clear"])
def test_every_command_with_a_cache_shows_the_same_three_ways(command: str) -> None:
    """warm, stats and clear each list CACHE, --cache CACHE and --tier in one group."""
    text = help_of(command)
    usage = flat(text.split("\n\n", 1)[0])
    assert "[--cache CACHE]" in usage and "[--tier SPEC]" in usage
    assert usage.endswith("SOURCE [CACHE]" if command == "warm" else "[CACHE]"), usage
    assert "the cache: CACHE or --cache CACHE (module:attribute), or --tier specs:" in text
    assert "--allow-unsigned accept a memcached or redis tier without a key" in flat(text)


def test_warm_says_what_its_cache_defaults_to() -> None:
    """warm's help, like the README, shows 'warm myapp.templating:env' warming the
    application's own cache, and keys a directory with the path as given."""
    text = flat(help_of("warm"))
    assert "'tiered-bccache warm myapp.templating:env' warms the application's own cache" in (text)
    assert "keyed with the path as given" in text
    assert "(default for a SOURCE module:attribute: its environment's cache)" in text


def test_bench_says_what_it_prints_and_how_it_ends() -> None:
    """bench's help names its three parts, the Redis contenders, "not enough signal",
    the clean end after SIGTERM and SIGHUP with their exit statuses, and no option that
    does nothing (--threads was never read)."""
    text = flat(help_of("bench"))
    assert "each table printed as soon as it is measured" in text
    assert "a plain Redis bytecode cache" in text and "redis tiers" in text
    assert '"not enough signal"' in text
    assert "Ctrl-C, SIGTERM or SIGHUP alike" in text
    assert "128 + N after signal N (SIGTERM 143, SIGHUP 129)" in text
    assert "--threads" not in text


def test_run_lists_its_specs_without_what_it_does_not_take() -> None:
    """run takes its specs in --tiers or $TIERED_BCCACHE_TIERS, not as --tier or as
    module:attribute: its epilog says so."""
    text = help_of("run")
    epilog = flat(text.split("\ntier specs ", 1)[1])
    assert epilog.startswith("(in --tiers or $TIERED_BCCACHE_TIERS, whitespace-separated")
    assert "memory:512" in epilog and "redis+cluster://" in epilog
    assert "repeat --tier" not in text and "module:attribute" not in text
    assert "from_string and compile_expression cached" in flat(text)


def test_secret_help_names_redis_as_well() -> None:
    """The key signs Redis entries too, and a redis tier is refused without one."""
    text = flat(help_of("stats"))
    assert "entries in files, memcached and Redis are signed" in text
    assert "a memcached or redis tier is refused unless --allow-unsigned" in text
    assert "memcached and redis timeouts: 1 s here" in text
