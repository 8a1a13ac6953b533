"""``.. command-help:: [COMMAND]``: what ``tiered-bccache [COMMAND] --help`` prints, as a
literal block, so that the command line reference is the parser's own text and cannot
drift from it. An unknown command is an error (and fails the warnings-as-errors build)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_text(command: str | None) -> str:
    """``tiered-bccache [command] --help``, wrapped at the 88 columns the texts are
    written for (argparse wraps at ``$COLUMNS`` - 2)."""
    from tiered_bccache.cli.parser import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"
    try:
        parser = build_parser()
        if command is not None:
            commands = _commands(parser)
            if command not in commands:
                raise KeyError(f"no command {command!r}; the commands are {sorted(commands)}")
            parser = commands[command]
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


class CommandHelp(SphinxDirective):
    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        try:
            text = help_text(self.arguments[0] if self.arguments else None)
        except KeyError as exc:
            raise self.error(str(exc.args[0])) from None
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("command-help", CommandHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
