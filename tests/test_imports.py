"""What a process pays for ``import tiered_bccache`` and a hit: only the modules the
configured tiers need (pinned in real subprocesses, since imports are per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Never loaded by importing the package and loading templates from a warm
#: [memory, filesystem] cache: other tiers' clients, the compile lease's lock library,
#: the tooling, and the standard modules that cost a tenth of Jinja's import each.
NOT_ON_THE_HIT_PATH = (
    "pymemcache",
    "filelock",
    "redis",
    "tiered_bccache.tiers.memcached",
    "tiered_bccache.cli",
    "tiered_bccache.benchkit",
    "tiered_bccache.prometheus",
    "tiered_bccache.tune",
    "tiered_bccache.spec",
    "tiered_bccache.trace",
    "logging",
    "dataclasses",
)

SCRIPT = """
import json, sys
from jinja2 import DictLoader, Environment
import tiered_bccache
after_import = sorted(sys.modules)
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(sys.argv[1])], secret=b"k" * 32)
templates = {"a.html": "{{ x|upper }}", "b.html": "{% if y %}y{% endif %}"}
env = Environment(loader=DictLoader(templates), bytecode_cache=cache)
for name in ("a.html", "b.html"):
    env.get_template(name)
print(json.dumps({"import": after_import, "hits": sorted(sys.modules),
                  "stats": [cache.stats().hits, cache.stats().misses]}))
"""


def python(*args: str) -> str:
    """Run ``python -c`` in a new process from the checkout; its stdout."""
    return subprocess.run(
        [sys.executable, "-c", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def run(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(python(SCRIPT, str(directory)))
    return data


def loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A process that compiles both templates, then a new one that finds them on disk."""
    directory = tmp_path_factory.mktemp("cache")
    first = run(directory)
    assert first["stats"] == [0, 2]
    return run(directory)


@pytest.mark.parametrize("module", NOT_ON_THE_HIT_PATH)
def test_import_and_hits_from_a_warm_filesystem_tier_leave_a_module_unloaded(
    warm_run: dict[str, Any], module: str
) -> None:
    """Importing the package and loading templates from a warm [memory, fs] cache loads
    neither the tooling nor what other tiers or the compile lease need."""
    assert warm_run["stats"] == [2, 0]  # both were hits: the path under test ran
    assert not loaded(warm_run["hits"], module)


def test_import_alone_loads_no_tier_module() -> None:
    """``import tiered_bccache`` loads no tier's module: each comes with its class."""
    with_import = run_import_only()
    for tier in ("memory", "filesystem", "memcached"):
        assert f"tiered_bccache.tiers.{tier}" not in with_import
    assert "cachetools" not in with_import


def test_import_alone_loads_neither_jinja_nor_the_cache() -> None:
    """``import tiered_bccache`` costs its errors module: every public name comes when
    first asked for (``tiered-bccache run`` imports the package, never Jinja)."""
    with_import = run_import_only()
    assert not loaded(with_import, "jinja2")
    assert "tiered_bccache.cache" not in with_import
    assert "typing" not in with_import


def test_every_public_name_is_importable() -> None:
    """What ``__all__`` lists, ``from tiered_bccache import *`` gives: the lazy names
    included."""
    import tiered_bccache

    namespace: dict[str, object] = {}
    exec("from tiered_bccache import *", namespace)
    assert set(tiered_bccache.__all__) <= set(namespace)


def run_import_only() -> list[str]:
    return python("import sys, tiered_bccache; print(' '.join(sys.modules))").split()


def test_tier_classes_are_the_tier_modules_own() -> None:
    """The lazily imported names are the classes themselves, for isinstance and typing."""
    import tiered_bccache
    from tiered_bccache.tiers.filesystem import FileSystemTier
    from tiered_bccache.tiers.memcached import MemcachedTier
    from tiered_bccache.tiers.memory import MemoryTier

    assert tiered_bccache.FileSystemTier is FileSystemTier
    assert tiered_bccache.MemcachedTier is MemcachedTier
    assert tiered_bccache.MemoryTier is MemoryTier
    with pytest.raises(AttributeError, match="NoSuchTier"):
        tiered_bccache.NoSuchTier  # noqa: B018
