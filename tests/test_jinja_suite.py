"""Jinja's own test suite, with one shared cache in every Environment it builds.

scripts/setup.sh unpacks the suite of the installed Jinja (its sdist's ``tests/``) into
``.cache/jinja-tests/VERSION/``. The suite runs three times, each in a new process: plain,
then with :mod:`tests.jinja_suite_plugin` over an empty filesystem tier (cold), then
again over what the cold run left (warm). Every test that passes plainly must pass cold
and warm: a cache shared by hundreds of differently configured environments (sandboxes,
custom delimiters, filters, finalize, autoescape, async, extensions) gives each its own
code, whether it compiled it or a previous process did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import missing, require_extra
from tests.jinja_suite_plugin import DIR_VAR, STATS_VAR

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / ".cache" / "jinja-tests" / version("jinja2")

#: Where the sdist keeps its pytest settings (setup.cfg before Jinja 3.1.3).
CONFIGS = (SUITE / "pyproject.toml", SUITE / "setup.cfg")

#: Jinja's tests that fail here without any cache: none with Jinja 3.1.6 on Python 3.11
#: (909 pass). Listed by node id if an environment ever needs it.
FAIL_PLAINLY: frozenset[str] = frozenset()

#: Each run of the suite takes about 6 s here.
RUN_TIMEOUT = 35


def run_suite(tmp_path: Path, label: str, cache_dir: Path | None) -> dict[str, str]:
    """Run Jinja's suite in a new process; return each test's outcome by node id
    (``passed``, ``skipped``, or ``failed: `` and the error's first line), from
    pytest's JUnit XML report."""
    report = tmp_path / f"{label}.xml"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_BCCACHE")}
    environ["PYTHONPATH"] = str(REPO)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE / "tests"),
        "--rootdir",
        str(SUITE),
        "-c",
        str(next((p for p in CONFIGS if p.is_file()), CONFIGS[0])),
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={report}",
    ]
    if cache_dir is not None:
        command += ["-p", "tests.jinja_suite_plugin"]
        environ[DIR_VAR] = str(cache_dir)
        environ[STATS_VAR] = str(tmp_path / f"{label}.json")
    try:
        done = subprocess.run(
            command,
            cwd=SUITE,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=environ,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {label} run of Jinja's suite took more than {RUN_TIMEOUT} s")
    assert done.returncode in (0, 1), f"{label} run:\n{done.stdout[-3000:]}\n{done.stderr}"
    outcomes = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        node = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag: child for child in case}
        failure = tags.get("failure", tags.get("error"))
        if failure is not None:
            outcomes[node] = "failed: " + (failure.get("message") or "").split("\n")[0][:200]
        elif "skipped" in tags:
            outcomes[node] = "skipped"
        else:
            outcomes[node] = "passed"
    return outcomes


def cache_stats(tmp_path: Path, label: str) -> dict[str, int | list[int]]:
    stats: dict[str, int | list[int]] = json.loads((tmp_path / f"{label}.json").read_text())
    return stats


def broken(plain: dict[str, str], cached: dict[str, str]) -> list[str]:
    """The tests that pass plainly and do not pass with the cache, with what happened."""
    return sorted(
        f"{node}: {cached.get(node, 'not run')}"
        for node, outcome in plain.items()
        if outcome == "passed" and node not in FAIL_PLAINLY and cached.get(node) != "passed"
    )


@pytest.mark.slow
def test_jinja_suite_passes_with_one_shared_cache_cold_and_warm(tmp_path: Path) -> None:
    """Every test of Jinja's suite that passes without a cache passes with one shared
    TieredBytecodeCache (memory over a filesystem tier) injected into every Environment,
    in a process that fills the directory and in a new one that loads from it."""
    if not (SUITE / "tests" / "conftest.py").is_file():
        missing(f"Jinja's test suite is not in {SUITE} (bash scripts/setup.sh unpacks it)")
    require_extra("trio", "test")  # Jinja's async tests import it at module level
    plain = run_suite(tmp_path, "plain", None)
    passed = sum(outcome == "passed" for outcome in plain.values())
    assert passed > 800, f"only {passed} of Jinja's tests passed: is {SUITE} complete?"
    failing = {node for node, outcome in plain.items() if outcome.startswith("failed")}
    assert failing <= FAIL_PLAINLY, f"Jinja's suite fails without a cache: {sorted(failing)}"

    cache_dir = tmp_path / "cache"
    cold = run_suite(tmp_path, "cold", cache_dir)
    warm = run_suite(tmp_path, "warm", cache_dir)
    failures = [
        f"{run}: {line}"
        for run, done in (("cold", cold), ("warm", warm))
        for line in broken(plain, done)
    ]
    assert not failures, "tests of Jinja's that pass without the cache fail with it:\n" + (
        "\n".join(failures)
    )

    # The cache was in the way: the cold run filled the directory, the warm one read it.
    filled, loaded = cache_stats(tmp_path, "cold"), cache_stats(tmp_path, "warm")
    assert isinstance(filled["tier_writes"], list) and filled["tier_writes"][1] > 0, filled
    assert isinstance(loaded["tier_hits"], list) and loaded["tier_hits"][1] > 0, loaded
