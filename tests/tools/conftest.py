"""The real tools (dbt, ansible-core, MkDocs, Sphinx, django-jinja), for the tests in
this directory: they run in ``.venv-tools`` with ``TIERED_BCCACHE_TOOL_TESTS=1``
(``scripts/test.sh`` does both). A tool that is not installed skips its tests, and fails
them under ``CI=true``."""

from __future__ import annotations

import pytest

from tests.conftest import missing
from tiered_bccache.benchkit.toolenvs import TOOLS, missing_modules

__all__ = ["require_tool"]


def require_tool(name: str) -> None:
    """Go on only when tool ``name`` (a key of ``toolenvs.TOOLS``) is installed."""
    gone = missing_modules(name)
    if gone:
        missing(
            f"{name}: {', '.join(gone)} not installed (the bench-tools and test extras, "
            "in .venv-tools: TOOLS=1 bash scripts/setup.sh)"
        )


@pytest.fixture(params=list(TOOLS))
def tool(request: pytest.FixtureRequest) -> str:
    """Each tool in turn, when it is installed."""
    name: str = request.param
    require_tool(name)
    return name
