"""Automatic activation (``TIERED_BCCACHE_AUTO=1`` and the start-up hook): every
Environment of every Python process given the cache, at no cost to processes that never
import Jinja, with no output of its own and without displacing a user's sitecustomize.
Each case runs in fresh interpreters, as a tool would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tiered_bccache.auto import AUTO_VAR, STATS_VAR
from tiered_bccache.spec import TIERS_ENV_VAR

from .conftest import SECRET, missing

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _hook_installed() -> None:
    """The hook is where this interpreter reads .pth files (setup.sh puts it there)."""
    if not (Path(sysconfig.get_paths()["purelib"]) / "tiered_bccache.pth").exists():
        missing("tiered_bccache.pth is not installed in this interpreter's site-packages")


def python(
    code: str, tmp_path: Path, *, auto: bool = True, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter from ``tmp_path`` (not the repository), with the
    cache in ``tmp_path/cache`` and the run's counters in ``tmp_path/stats``."""
    (tmp_path / "stats").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERED_BCCACHE") and k != "CI"}
    env.update(
        {
            TIERS_ENV_VAR: f"memory fs:{tmp_path / 'cache'}",
            STATS_VAR: str(tmp_path / "stats"),
            "TIERED_BCCACHE_SECRET": SECRET.decode(),
        }
    )
    if auto:
        env[AUTO_VAR] = "1"
    env.update(extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def reports(tmp_path: Path) -> list[dict[str, float]]:
    """What every process of the run wrote as it ended."""
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "stats").iterdir())]


RENDER = textwrap.dedent(
    """
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({"t.html": "{{ x|upper }}!"}))
    print(type(env.bytecode_cache).__name__)
    print(env.get_template("t.html").render(x="a"), env.from_string("{{ 1 + 1 }}").render())
    """
)


def test_every_environment_gets_the_cache_and_a_second_process_compiles_nothing(
    tmp_path: Path,
) -> None:
    """With the variable set, a plain Environment gets the shared cache, its named
    templates and strings go through it, and a new process finds both on disk."""
    first = python(RENDER, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["TieredBytecodeCache", "A!", "2"]
    assert first.stderr == ""
    second = python(RENDER, tmp_path)
    assert second.stdout == first.stdout
    one, two = reports(tmp_path)[:1], reports(tmp_path)
    assert one[0]["compiles"] + one[0]["string_compiles"] == 2
    later = [r for r in two if r not in one]
    assert later[0]["compiles"] == later[0]["string_compiles"] == 0
    assert later[0]["hits"] == later[0]["string_hits"] == 1


def test_without_the_variable_nothing_changes(tmp_path: Path) -> None:
    """The hook installed but the variable unset (or "0"): Jinja as it is."""
    for extra in ({}, {AUTO_VAR: "0"}):
        out = python(RENDER, tmp_path, auto=False, extra=extra)
        assert out.stdout.split()[0] == "NoneType", out.stderr
    assert not (tmp_path / "cache").exists()


def test_a_process_that_never_imports_jinja_imports_nothing_of_ours(tmp_path: Path) -> None:
    """Activation waits for Jinja's import: a Python process without Jinja pays a finder
    on sys.meta_path and imports neither tiered_bccache nor jinja2."""
    out = python(
        "import sys, json; print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith(('jinja2', 'tiered_bccache', 'markupsafe')))))",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_an_environment_with_a_cache_of_its_own_keeps_it(tmp_path: Path) -> None:
    """A tool that configured a bytecode cache keeps it."""
    out = python(
        """
        import jinja2
        own = jinja2.FileSystemBytecodeCache(".")
        print(jinja2.Environment(bytecode_cache=own).bytecode_cache is own)
        """,
        tmp_path,
    )
    assert out.stdout.strip() == "True", out.stderr


def test_jinja_imported_before_activation_is_patched_all_the_same(tmp_path: Path) -> None:
    """Activation after Jinja's import (a tool importing it from its own start-up code)
    gives the next Environments the cache."""
    out = python(
        """
        import jinja2, _tiered_bccache_hook
        _tiered_bccache_hook.install()
        print(type(jinja2.Environment().bytecode_cache).__name__)
        """,
        tmp_path,
        auto=False,
    )
    assert out.stdout.strip() == "TieredBytecodeCache", out.stderr


def test_a_users_sitecustomize_still_runs(tmp_path: Path) -> None:
    """The hook is a .pth line, not a sitecustomize: the user's own one runs, and the
    cache works beside it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n")
    out = python(
        RENDER + "import os; print(os.environ.get('USER_SITECUSTOMIZE'))\n",
        tmp_path,
        extra={"PYTHONPATH": str(site)},
    )
    assert out.stdout.split() == ["TieredBytecodeCache", "A!", "2", "ran"], out.stderr


def test_a_broken_configuration_leaves_environments_alone_and_stderr_empty(
    tmp_path: Path,
) -> None:
    """A tier spec that does not parse: the tool runs as without the cache, and writes
    nothing to stderr (Ansible flags workers that do); the reason reaches logging."""
    out = python(
        RENDER
        + "import logging\n"
        + "import tiered_bccache.auto as a; print(a.shared_cache() is None)\n",
        tmp_path,
        extra={TIERS_ENV_VAR: "nosuchtier:1"},
    )
    assert out.returncode == 0
    assert out.stdout.split() == ["NoneType", "A!", "2", "True"]
    assert out.stderr == ""
    logged = python(
        "import logging; logging.basicConfig()\n" + RENDER,
        tmp_path,
        extra={TIERS_ENV_VAR: "nosuchtier:1"},
    )
    assert "automatic cache not used" in logged.stderr


FORKS = """
    import multiprocessing, os, subprocess, sys
    import jinja2

    def work(i):
        return jinja2.Environment().from_string("{{ i * 2 }}").render(i=i)

    if __name__ == "__main__":
        print(work(0))
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=work, args=(i,)) for i in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        pid = os.fork()
        if pid == 0:
            work(3)
            sys.exit(0)  # an ordinary exit: atexit runs
        os.waitpid(pid, 0)
        subprocess.run([sys.executable, "-c", "import jinja2; jinja2.Environment()"
                        ".from_string('{{ 4 }}').render()"], check=True)
"""


def test_forked_workers_and_subprocesses_report_their_own_work(tmp_path: Path) -> None:
    """multiprocessing workers (which end with os._exit), a plain fork and a subprocess
    each write their own counters: five processes, one string compiled by the first
    and found by the others."""
    script = tmp_path / "forks.py"
    script.write_text(textwrap.dedent(FORKS))
    out = python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", tmp_path)
    assert out.returncode == 0, out.stderr
    records = reports(tmp_path)
    assert len(records) == 5, records
    assert len({r["pid"] for r in records}) == 5
    assert sum(r["string_lookups"] for r in records) == 5
    # Two strings: the one the parent compiled before forking (its children find it in
    # the memory they inherited) and the subprocess's own.
    assert sum(r["string_compiles"] for r in records) == 2
    assert sum(r["string_hits"] for r in records) == 3
    for report in (tmp_path / "stats").iterdir():
        report.unlink()
    again = python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')", tmp_path)
    assert again.returncode == 0, again.stderr
    records = reports(tmp_path)
    assert sum(r["string_compiles"] for r in records) == 0
    assert sum(r["string_hits"] for r in records) == 5
