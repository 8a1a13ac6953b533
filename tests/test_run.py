"""``tiered-bccache run -- CMD``: the command as it is, its exit status, and one line
saying what the cache did, children included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tiered_bccache.cli.run import summarize

from .conftest import SECRET, missing

SCRIPT = """
import subprocess, sys
import jinja2
env = jinja2.Environment(loader=jinja2.DictLoader({"a.html": "{{ x }}|{{ 'k'|upper }}"}))
print(env.get_template("a.html").render(x=1), env.from_string("{{ 2 }}").render())
if len(sys.argv) > 1:
    subprocess.run([sys.executable, __file__], check=True)
"""
SUMMARY = re.compile(
    r"tiered-bccache: (\d+) templates and (\d+) strings from the cache, (\d+) compiled "
    r"\([\d.]+ s\)(?:, (\d+) compiled uncached)?, in (\d+) process(?:es)?$"
)


@pytest.fixture(autouse=True)
def _hook_installed() -> None:
    if not (Path(sysconfig.get_paths()["purelib"]) / "tiered_bccache.pth").exists():
        missing("tiered_bccache.pth is not installed in this interpreter's site-packages")


def clean_environment() -> dict[str, str]:
    """This process's environment without our variables, and with the test key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_BCCACHE")}
    env["TIERED_BCCACHE_SECRET"] = SECRET.decode()
    return env


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``tmp_path`` under :func:`clean_environment`, its output kept."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python(tmp_path, "-m", "tiered_bccache", "run", *args)


def summary(stderr: str) -> tuple[int, ...]:
    match = SUMMARY.search(stderr.strip().splitlines()[-1])
    assert match, stderr
    return tuple(int(g or 0) for g in match.groups())


def test_run_caches_the_command_and_its_children_and_says_so(tmp_path: Path) -> None:
    """The command's output is its own; the summary counts the parent and its child;
    the second run compiles nothing."""
    (tmp_path / "t.py").write_text(SCRIPT)
    args = ("--dir", str(tmp_path / "cache"), "--", sys.executable, "t.py", "child")
    first = tool(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "1|K 2\n1|K 2\n"
    templates, strings, compiled, uncached, processes = summary(first.stderr)
    assert (compiled, processes, uncached) == (2, 2, 0)
    assert (templates, strings) == (1, 1)  # the child finds what the parent wrote
    second = tool(tmp_path, *args)
    assert second.stdout == first.stdout
    assert summary(second.stderr) == (2, 2, 0, 0, 2)


def test_run_returns_the_command_s_exit_status(tmp_path: Path) -> None:
    """An exit status passes through; a command killed by signal N gives 128 + N, as a
    shell reports it. With --quiet the command is the process: killed, it dies of the
    signal itself."""
    kill = "import os; os.kill(os.getpid(), 15)"
    assert tool(tmp_path, "--", sys.executable, "-c", "exit(3)").returncode == 3
    assert tool(tmp_path, "--quiet", "--", sys.executable, "-c", "exit(3)").returncode == 3
    assert tool(tmp_path, "--", sys.executable, "-c", kill).returncode == 128 + 15
    killed = tool(tmp_path, "--quiet", "--", sys.executable, "-c", kill)
    assert killed.returncode == -15
    assert killed.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a command after --"),
        (("--", "no-such-command-x"), "command not found"),
        (("--quiet", "--", "no-such-command-x"), "command not found"),
    ],
)
def test_run_without_a_runnable_command_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """No command, or one that is not there: exit 2 and one line."""
    out = tool(tmp_path, *args)
    assert out.returncode == 2
    assert message in out.stderr


@pytest.mark.parametrize("quiet", [(), ("--quiet",)])
def test_a_file_that_cannot_run_is_a_usage_error(tmp_path: Path, quiet: tuple[str, ...]) -> None:
    """A path that is not an executable: exit 2, and why."""
    (tmp_path / "notes.txt").write_text("not a program\n")
    (tmp_path / "notes.txt").chmod(0o644)
    out = tool(tmp_path, *quiet, "--", "./notes.txt")
    assert out.returncode == 2
    assert out.stderr.startswith("tiered-bccache: error: run: './notes.txt': "), out.stderr


def test_a_command_that_uses_no_jinja_says_so(tmp_path: Path) -> None:
    """Nothing went through the cache: the line says that, not a row of zeros."""
    out = tool(tmp_path, "--", sys.executable, "-c", "pass")
    assert out.stderr.strip().endswith("no Jinja template went through the cache")


def test_quiet_run_becomes_the_command(tmp_path: Path) -> None:
    """With nothing to report, the command replaces the wrapper (same process): no
    process waits, and the exit status and signals are the command's own."""
    child = "import os, sys; print(os.getpid(), os.environ.get('TIERED_BCCACHE_AUTO')); sys.exit(3)"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiered_bccache",
            "run",
            "--quiet",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        cwd=tmp_path,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert out.split() == [str(process.pid), "1"]
    assert err == ""


def test_the_wrapper_imports_neither_jinja_nor_the_cache(tmp_path: Path) -> None:
    """The wrapper's start-up is all it adds to a command: it leaves Jinja and the cache
    to the command's own processes."""
    script = (
        "import sys\n"
        "from tiered_bccache.cli import main\n"
        "status = main(['run', '--', sys.executable, '-c', 'pass'])\n"
        "names = ('jinja2', 'tiered_bccache.cache', 'tiered_bccache.auto', 'typing')\n"
        "print(status, *sorted(m for m in sys.modules if m.partition('.')[0] == 'jinja2' "
        "or m in names))\n"
    )
    out = python(tmp_path, "-c", script)
    assert out.stdout.split() == ["0"], out.stdout + out.stderr


def test_summarize_skips_reports_cut_short(tmp_path: Path) -> None:
    """A process killed while writing its report leaves a partial file: it is skipped."""
    (tmp_path / "1.json").write_text('{"hits": 2, "compiles": 1, "compile_seconds": 0.5}')
    (tmp_path / "2.json").write_text('{"hits": 3, "comp')
    totals, processes = summarize(str(tmp_path))
    assert processes == 1 and totals["hits"] == 2 and totals["compile_seconds"] == 0.5
