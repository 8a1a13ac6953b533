"""The distribution as pip builds it: the sdist holds what its tests, docs and benchmarks
need (its tests run from an unpacked copy), the wheel holds the start-up hook, the
license and the type marker, and the metadata claims exactly the Python versions that
scripts/matrix.sh tests. Built with setuptools' own PEP 517 hooks from a copy of the
tree, as ``python -m build --no-isolation`` would."""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import tiered_bccache

from .conftest import missing

ROOT = Path(__file__).resolve().parent.parent

#: What the build does not need and a copy should not carry (virtualenvs, caches, builds).
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    ".cache",
    ".hypothesis",
    ".*_cache",
    "build",
    "dist",
    "bench-results",
    "*.egg-info",
    "__pycache__",
    "_build",
)

#: What an unpacked sdist must hold for ``pytest tests`` and the docs build to run there.
_SDIST_MUST_HOLD = [
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "ARCHITECTURE.md",
    "setup.py",
    "tiered_bccache.pth",
    "_tiered_bccache_hook.py",
    "tiered_bccache/py.typed",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/tiers/__init__.py",
    "tests/tiers/tier_suite.py",
    "tests/property/__init__.py",
    "tests/stress/__init__.py",
    "tests/tools/__init__.py",
    "benchmarks/__main__.py",
    "scripts/setup.sh",
    "scripts/matrix.sh",
    "docs/conf.py",
    "docs/index.rst",
]

#: Tracked files that are the repository's machinery, not the project's.
_MACHINERY = re.compile(r"^(\.ci/|\.github/|\.gitignore$)")


def _build(hook: str, tmp_path: Path) -> Path:
    """Run setuptools' PEP 517 hook ``hook`` on a copy of the tree; return the archive."""
    spec = importlib.util.find_spec("setuptools")
    if spec is None or int(importlib.metadata.version("setuptools").split(".")[0]) < 77:
        missing("setuptools>=77 is not installed (pip install 'tiered-bccache[test]')")
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=_NOT_COPIED)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))",
            str(out),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (archive,) = out.iterdir()
    return archive


@pytest.fixture(scope="module")
def sdist_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The paths in the sdist, relative to its top directory."""
    archive = _build("build_sdist", tmp_path_factory.mktemp("sdist"))
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel, open."""
    archive = _build("build_wheel", tmp_path_factory.mktemp("wheel"))
    with zipfile.ZipFile(archive) as opened:
        yield opened


def test_the_sdist_holds_the_tests_docs_benchmarks_and_license(sdist_files: set[str]) -> None:
    """The sdist holds every file ``pytest tests`` and the docs build need when unpacked."""
    assert [path for path in _SDIST_MUST_HOLD if path not in sdist_files] == []


def test_the_sdist_holds_every_tracked_file_but_the_machinery(sdist_files: set[str]) -> None:
    """Every file git tracks is in the sdist, except CI's and git's own."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist): the previous test covers it")
    tracked = {path for path in listed.stdout.splitlines() if not _MACHINERY.match(path)}
    assert sorted(tracked - sdist_files) == []


def test_the_wheel_holds_the_hook_license_and_type_marker(wheel: zipfile.ZipFile) -> None:
    """The start-up hook sits at the wheel's root, beside its module; the license and
    py.typed are in."""
    names = set(wheel.namelist())
    assert {"tiered_bccache.pth", "_tiered_bccache_hook.py", "tiered_bccache/py.typed"} <= names
    version = tiered_bccache.__version__
    assert f"tiered_bccache-{version}.dist-info/licenses/LICENSE" in names


def test_the_metadata_claims_exactly_the_versions_the_matrix_tests(
    wheel: zipfile.ZipFile,
) -> None:
    """Requires-Python and the classifiers name the versions scripts/matrix.sh runs, the
    version is ``tiered_bccache.__version__``, and the license is an SPDX expression."""
    (metadata_name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode("utf-8"))
    matrix = (ROOT / "scripts" / "matrix.sh").read_text(encoding="utf-8")
    (versions,) = re.findall(r"^VERSIONS=\(([^)]*)\)", matrix, re.M)
    tested = versions.split()
    claimed = [
        c.rsplit(" :: ", 1)[1]
        for c in metadata.get_all("Classifier", [])
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert claimed == tested
    low, high = tested[0], tested[-1]
    next_minor = f"3.{int(high.split('.')[1]) + 1}"
    assert sorted(metadata["Requires-Python"].split(",")) == sorted([f">={low}", f"<{next_minor}"])
    assert metadata["Version"] == tiered_bccache.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert set(metadata.get_all("Provides-Extra", [])) >= {
        "redis",
        "flask",
        "django",
        "prometheus",
        "plot",
        "test",
    }
