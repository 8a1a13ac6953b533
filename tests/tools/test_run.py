"""``tiered-bccache run`` on the real tools: dbt (dbt-duckdb), ansible-playbook,
sphinx-build and mkdocs over small generated projects (the tools benchmark's
generators, :mod:`tiered_bccache.benchkit.tools`, at their ``TEST`` size), each run a
new process tree as a user runs it. What each tool writes under the cache is what it
writes without it, a second run compiles nothing, and the activation reaches forked
workers, subprocesses, and processes started without the wrapper. How much faster is
the benchmark's business (``python -m benchmarks.tools``), not these tests'."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import missing
from tiered_bccache.auto import AUTO_VAR, STATS_VAR
from tiered_bccache.benchkit.tools import (
    TEST,
    Outcome,
    Project,
    ansible_project,
    collect,
    dbt_projects,
    differences,
    hook_missing,
    missing_tools,
    mkdocs_project,
    run_project,
    sphinx_project,
)
from tiered_bccache.cli.run import summarize
from tiered_bccache.spec import TIERS_ENV_VAR

pytestmark = pytest.mark.timeout(300)


def require_hook() -> None:
    """Go on only when the start-up hook is installed next to this interpreter."""
    problem = hook_missing()
    if problem is not None:
        missing(problem)


def require(tool: str) -> None:
    """Go on only when ``tool`` and the start-up hook are installed next to this
    interpreter (``.venv-tools``)."""
    require_hook()
    if missing_tools([tool]):
        missing(
            f"{tool} is not installed next to {sys.executable} (the bench-tools extra, in "
            ".venv-tools: TOOLS=1 bash scripts/setup.sh)"
        )


def generate(tool: str, root: Path) -> Project:
    """``tool``'s small project under ``root`` (dbt: its ``dbt compile``)."""
    if tool == "dbt":
        return dbt_projects(str(root), models=TEST.dbt_models)[0]
    if tool == "ansible":
        return ansible_project(str(root), tasks=TEST.ansible_tasks)
    if tool == "sphinx":
        return sphinx_project(str(root), pages=TEST.pages)
    return mkdocs_project(str(root), pages=TEST.pages)


@dataclass(frozen=True)
class Runs:
    """A project, run as it is, then twice under ``tiered-bccache run --dir``."""

    project: Project
    cache: Path
    baseline: Outcome
    cold: Outcome
    warm: Outcome


_runs: dict[str, Runs] = {}


def runs_of(tool: str, factory: pytest.TempPathFactory) -> Runs:
    """``tool``'s runs, made once per session."""
    require(tool)
    if tool not in _runs:
        work = factory.mktemp(tool)
        project = generate(tool, work / "project")
        cache = work / "cache"
        baseline = run_project(project)
        cold = run_project(project, cache_dir=str(cache))
        warm = run_project(project, cache_dir=str(cache))
        _runs[tool] = Runs(project, cache, baseline, cold, warm)
    return _runs[tool]


@pytest.fixture(params=["dbt", "ansible", "sphinx", "mkdocs"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Each tool's runs in turn, when it is installed."""
    return runs_of(request.param, tmp_path_factory)


def test_outputs_under_run_equal_the_tools_own_cold_and_warm(runs: Runs) -> None:
    """Every file the tool writes (dbt's target/compiled, Ansible's rendered files and
    task results, the HTML trees) is byte for byte what it writes without the cache,
    from an empty cache directory and from a full one."""
    assert runs.baseline.outputs, "the tool wrote nothing to compare"
    assert differences(runs.baseline.outputs, runs.cold.outputs) == []
    assert differences(runs.baseline.outputs, runs.warm.outputs) == []


def test_the_first_run_compiles_and_the_second_compiles_nothing(runs: Runs) -> None:
    """The summary line: the cold run compiles, the warm one serves everything from the
    directory (nothing compiled, nothing left uncached)."""
    cold, warm = runs.cold.summary, runs.warm.summary
    assert cold is not None and warm is not None, runs.warm.log
    assert cold.compiled > 0 and cold.uncached == 0
    assert warm.compiled == 0, runs.warm.log
    assert warm.uncached == 0
    assert warm.templates + warm.strings >= cold.compiled
    assert warm.processes == cold.processes


def test_ansible_backslashes_render_as_ansible_renders_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """ansible-core compiles one source two ways (escape_backslashes): ``{{ 'a\\tb' }}``
    from double- and single-quoted YAML renders a backslash and a t, from a template file
    (the template lookup, the template module, an include) a tab; warm, each still does,
    and a template's include and import, compiled at render time, render alike."""
    runs = runs_of("ansible", tmp_path_factory)
    warm = runs.warm.outputs
    assert warm["out/tab.txt"] == b"a\tb"
    facts: dict[str, object] = {}
    for line in warm["results.jsonl"].decode().splitlines():
        facts.update(json.loads(line).get("result", {}).get("ansible_facts", {}))
    assert facts["tab_yaml_dq"] == facts["tab_yaml_sq"] == "a\\tb"
    assert facts["tab_file"] == "a\tb"
    assert facts["tab_yaml_0"] == "a\tb-0"  # YAML's own \t escape: a tab before Jinja
    hosts = warm["out/group_000_hosts"].decode()
    assert "# tab: a\tb | regex: value=key" in hosts  # from the included header.j2
    assert warm == runs.baseline.outputs


def test_ansibles_forked_workers_use_the_cache_and_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Ansible runs each task in a forked worker: the workers report to the run (more
    processes than the controller alone) and, warm, compile nothing either."""
    runs = runs_of("ansible", tmp_path_factory)
    assert runs.warm.summary is not None and runs.cold.summary is not None
    assert runs.cold.summary.processes > TEST.ansible_tasks // 2
    assert runs.warm.summary.processes == runs.cold.summary.processes
    assert runs.warm.summary.compiled == 0


_DRIVER = """\
import multiprocessing, subprocess, sys
import jinja2


def render(n):
    env = jinja2.Environment(loader=jinja2.DictLoader({"w.txt": "{{ n * 2 }}|{{ 'a\\\\tb' }}"}))
    print(env.get_template("w.txt").render(n=n), env.from_string("<{{ n }}>").render(n=n),
          flush=True)


if __name__ == "__main__":
    render(1)
    child = multiprocessing.get_context("fork").Process(target=render, args=(2,))
    child.start()
    child.join()
    subprocess.run(sys.argv[1:], check=True)
"""


def test_a_forked_worker_and_a_subprocess_share_the_cache(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Python program rendering in itself, in a multiprocessing worker (fork) and in a
    ``mkdocs build`` it starts: three processes report, the site is the one mkdocs
    builds alone, and a second run compiles nothing in any of them."""
    mkdocs = runs_of("mkdocs", tmp_path_factory)
    (tmp_path / "driver.py").write_text(_DRIVER)
    build = [os.path.join(sysconfig.get_path("scripts"), "mkdocs"), *mkdocs.project.argv[1:]]
    project = dataclasses.replace(
        mkdocs.project, argv=("python", str(tmp_path / "driver.py"), *build)
    )
    cache = str(tmp_path / "cache")
    first = run_project(project, cache_dir=cache)
    second = run_project(project, cache_dir=cache)
    for outcome in (first, second):
        assert "2|a\tb <1>" in outcome.log and "4|a\tb <2>" in outcome.log
        assert differences(mkdocs.baseline.outputs, outcome.outputs) == []
    assert first.summary is not None and second.summary is not None
    assert first.summary.processes == second.summary.processes == 3
    assert first.summary.compiled > 0
    assert second.summary.compiled == 0 and second.summary.uncached == 0


def test_the_variables_alone_cache_dbt(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``TIERED_BCCACHE_AUTO=1 TIERED_BCCACHE_TIERS="memory fs:DIR" dbt compile``, no
    wrapper: the directory fills, a second run finds everything there (its processes'
    counters, from ``$TIERED_BCCACHE_RUN_STATS``, show no compile) and leaves it as it
    was, and the compiled SQL is dbt's own."""
    dbt = runs_of("dbt", tmp_path_factory)
    directory = tmp_path / "cache"
    counted = []
    for n in (1, 2):
        stats = tmp_path / f"stats{n}"
        stats.mkdir()
        env = {AUTO_VAR: "1", TIERS_ENV_VAR: f"memory fs:{directory}", STATS_VAR: str(stats)}
        outcome = run_project(dbt.project, env=env)
        assert differences(dbt.baseline.outputs, outcome.outputs) == []
        totals, processes = summarize(str(stats))
        assert processes == 1
        entries = sorted(p.name for p in directory.rglob("*") if p.is_file())
        counted.append((totals, entries))
    (first, entries_first), (second, entries_second) = counted
    assert first["compiles"] + first["string_compiles"] > 0
    assert entries_first
    assert second["compiles"] + second["string_compiles"] == 0
    assert second["hits"] + second["string_hits"] > 0
    assert entries_second == entries_first


def test_a_process_that_never_imports_jinja_imports_nothing_of_ours(tmp_path: Path) -> None:
    """With ``TIERED_BCCACHE_AUTO=1`` a process that does not use Jinja (as Ansible's
    module processes) imports the hook's finder and neither jinja2 nor the package."""
    require_hook()
    code = (
        "import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] "
        "in ('jinja2', 'tiered_bccache', '_tiered_bccache_hook'))))"
    )
    project = Project(
        name="python",
        tool="python",
        size="",
        root=str(tmp_path),
        argv=("python", "-c", code),
        env={},
        clean=(),
        compare=(),
    )
    outcome = run_project(project, env={AUTO_VAR: "1"})
    assert json.loads(outcome.log.strip().splitlines()[-1]) == ["_tiered_bccache_hook"]


def test_a_users_sitecustomize_still_runs_and_the_cache_works(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A sitecustomize on PYTHONPATH runs in every process of ``tiered-bccache run --
    mkdocs build`` (the start-up hook is a .pth line, not a sitecustomize), and the
    cache works beside it: the second run compiles nothing."""
    mkdocs = runs_of("mkdocs", tmp_path_factory)
    site = tmp_path / "site-dir"
    site.mkdir()
    marker = tmp_path / "marker"
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""\
            import os
            with open({str(marker)!r}, "a") as f:
                f.write(str(os.getpid()) + "\\n")
            """
        )
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    cache = str(tmp_path / "cache")
    outcomes = [
        run_project(mkdocs.project, cache_dir=cache, env={"PYTHONPATH": path}) for _ in (1, 2)
    ]
    pids = marker.read_text().split()
    assert len(pids) >= 4  # the wrapper and mkdocs, twice
    first, second = (o.summary for o in outcomes)
    assert first is not None and first.compiled > 0
    assert second is not None and second.compiled == 0 and second.templates > 0
    assert collect(mkdocs.project) == mkdocs.baseline.outputs
