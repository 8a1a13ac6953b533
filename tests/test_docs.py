"""The documentation in docs/: it builds with warnings as errors (so every docstring the
API reference renders is valid reStructuredText), and it leaves out no public name and no
command."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import tiered_bccache
from tiered_bccache.cli.parser import build_parser

from .conftest import missing

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_a_warning(tmp_path: Path) -> None:
    """``sphinx -W`` builds every page, the command help and the API reference from the
    docstrings, and prints no warning."""
    if importlib.util.find_spec("sphinx") is None:
        missing("sphinx is not installed (pip install 'tiered-bccache[test]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in ("index", "usage", "semantics", "tools", "cli", "api", "changelog"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    assert 'id="tiered_bccache.TieredBytecodeCache"' in api


def test_the_api_reference_documents_every_public_name() -> None:
    """Every name in ``tiered_bccache.__all__`` has its autodoc entry in docs/api.rst."""
    documented = set(re.findall(r"^\.\. auto\w+:: (\w+)", (DOCS / "api.rst").read_text(), re.M))
    assert set(tiered_bccache.__all__) - {"__version__"} <= documented


def test_the_command_line_reference_shows_every_command() -> None:
    """docs/cli.rst shows the help of every command the parser has."""
    parser = build_parser()
    (commands,) = (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    shown = set(re.findall(r"^\.\. command-help:: (\S+)", (DOCS / "cli.rst").read_text(), re.M))
    assert set(commands) == shown
