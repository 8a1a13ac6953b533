"""The tools' own environments (dbt's three, Ansible's through ``Templar``, MkDocs' and
Sphinx's theme environments, django-jinja's backend), built as each tool builds them in
new processes (:mod:`tiered_bccache.benchkit.toolenvs`): keyed, rendering what the tool
renders without the cache, and shared by a second process that compiles nothing. How
fast is the benchmark's business (``python -m benchmarks.environments``), not these
tests'."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tools.conftest import require_tool
from tiered_bccache.benchkit.toolenvs import TOOLS, keyed, measure, share

pytestmark = pytest.mark.timeout(600)

#: Each tool's two processes, run once per tool for the tests below.
_shared: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}


@pytest.fixture(params=list(TOOLS))
def processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a first and a second process of the tool rendered and counted, over one
    filesystem tier."""
    name: str = request.param
    require_tool(name)
    if name not in _shared:
        _shared[name] = share(name, str(tmp_path_factory.mktemp(name)), timeout=240)
    first, second = _shared[name]
    for which, result in (("first", first), ("second", second)):
        assert "error" not in result, f"{name}, {which} process: {result.get('error')}"
    return first, second


def test_environment_is_keyed_alike_in_every_process(
    processes: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """The tool's environment has a fingerprint that is neither private to the process
    nor empty (uncached), the same in both processes and for a second environment
    configured alike, and no compile was left to Jinja."""
    first, second = processes
    for result in processes:
        assert keyed(result["fingerprint"]) == "keyed", result["fingerprint"]
        assert len(set(result["fingerprints"])) == 1
        assert result["uncached"] == 0
    assert second["fingerprint"] == first["fingerprint"]


def test_cached_renders_equal_the_tools_own(
    processes: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Every string the tool renders (its own filters, tests, extensions, Ansible's
    escape_backslashes both ways and its conditionals) and every theme template renders
    through the cache as the tool renders it without one: compiled by the first
    process, from the filesystem tier in the second, from memory for a second
    environment of each."""
    for result in processes:
        assert result["compared"] > 0
        assert result["differences"] == []


def test_second_process_compiles_nothing(
    processes: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """A second process of the tool finds every string and template the first one
    compiled: no compile, and its strings are hits."""
    first, second = processes
    assert first["compiles"] + first["string_compiles"] > 0
    assert (second["compiles"], second["string_compiles"]) == (0, 0)
    assert second["string_hits"] > 0


def test_new_environments_of_one_configuration_share_one_key(
    tool: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A few new environments built the tool's way in one process all get the key of
    the first (a configuration seen once is recognised), none of them uncached."""
    result = measure(tool, str(tmp_path_factory.mktemp(tool)), count=5, seconds=30, timeout=240)
    assert "error" not in result, result.get("error")
    assert len(result["seen_ns"]) == 5
    assert result["keys"] == [result["fingerprint"]]
    assert keyed(result["fingerprint"]) == "keyed"
    assert result["uncached"] == 0
