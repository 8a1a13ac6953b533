"""Sphinx configuration: the guide pages, the command line reference from the parser's
own help (``_ext/clihelp.py``), and the API reference from the package's docstrings
(plain reStructuredText: autodoc, no other extension).

Build it as the tests do (tests/test_docs.py), with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
# The package from this checkout (an unpacked sdist included), installed or not; and
# this directory's own extension.
sys.path[:0] = [os.path.dirname(HERE), os.path.join(HERE, "_ext")]

from tiered_bccache import __version__  # noqa: E402

project = "tiered_bccache"
author = "the tiered_bccache authors"
copyright = "2026, the tiered_bccache authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "clihelp"]
exclude_patterns = ["_build"]
# `Single backticks` are code, as in Markdown: the changelog page includes CHANGELOG.md,
# which is written in the part of Markdown that is also reStructuredText.
default_role = "literal"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

html_theme = "alabaster"
html_title = f"tiered_bccache {release}"

_FIELD_ALIAS = re.compile(r"Alias for field number \d+")


def _drop_field_aliases(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # A NamedTuple field without a comment of its own gets this docstring from
    # collections; the class docstring says what the fields mean.
    if len(lines) == 1 and _FIELD_ALIAS.fullmatch(lines[0]):
        lines.clear()


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _drop_field_aliases)
