"""module:attribute targets and tier specs: what the command line turns into a cache."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from jinja2 import Environment

from tests.conftest import SECRET
from tiered_bccache import (
    FileSystemTier,
    InsecureConfigurationError,
    MemcachedTier,
    MemoryTier,
    TieredBytecodeCache,
)
from tiered_bccache.cli.loading import load_cache, load_object
from tiered_bccache.secret import ENV_VAR
from tiered_bccache.spec import SpecError


def test_load_cache_builds_the_tiers_in_the_order_given(tmp_path: Path) -> None:
    """Tier specs become a TieredBytecodeCache with the tiers in lookup order."""
    cache = load_cache(None, ["memory:8", f"fs:{tmp_path}"])
    assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]
    cache.close()


def test_load_cache_passes_the_secret_to_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """secret= reaches the cache: a memcached tier is accepted with it, refused without."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(InsecureConfigurationError):
        load_cache(None, ["memcached:127.0.0.1:11211"])
    cache = load_cache(None, ["memcached:127.0.0.1:11211"], secret=SECRET)
    assert isinstance(cache.tiers[0], MemcachedTier)
    cache.close()
    unsigned = load_cache(None, ["memcached:127.0.0.1:11211"], allow_unsigned=True)
    unsigned.close()


def test_load_cache_refuses_both_or_neither_target_and_specs() -> None:
    """A cache is named one way: module:attribute, or specs, never both or neither."""
    with pytest.raises(SpecError, match="not both"):
        load_cache("os:path", ["memory"])
    with pytest.raises(SpecError, match="no cache given"):
        load_cache(None, [])


def test_load_cache_wraps_a_refused_configuration(tmp_path: Path) -> None:
    """A configuration the cache refuses (the same directory twice) is a SpecError."""
    with pytest.raises(SpecError, match="same directory"):
        load_cache(None, [f"fs:{tmp_path}", f"fs:{tmp_path}"])


def _app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """Write a module of the application into the current directory; return its name."""
    name = "app_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_module_attribute_names_an_environment_or_a_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """module:attribute (dotted too), imported from the cwd, gives the app's own cache."""
    module = _app_module(
        tmp_path,
        monkeypatch,
        "from types import SimpleNamespace\n"
        "from jinja2 import Environment\n"
        "from tiered_bccache import TieredBytecodeCache, MemoryTier\n"
        "cache = TieredBytecodeCache([MemoryTier(5)])\n"
        "env = Environment(bytecode_cache=cache)\n"
        "holder = SimpleNamespace(env=env)\n",
    )
    try:
        from_cache = load_cache(f"{module}:cache", [])
        assert from_cache is load_object(f"{module}:cache")
        assert load_cache(f"{module}:env", []) is from_cache
        assert load_cache(f"{module}:holder.env", []) is from_cache
        assert isinstance(load_object(f"{module}:env"), Environment)
    finally:
        sys.modules.pop(module, None)


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ("plain", "bytecode_cache is None, not a TieredBytecodeCache"),
        ("number", "is a int, not a TieredBytecodeCache"),
        ("missing", "has no attribute 'missing'"),
    ],
)
def test_module_attribute_of_the_wrong_kind_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attribute: str, fragment: str
) -> None:
    """A missing attribute, or one not a cache or Environment using one, is a SpecError."""
    module = _app_module(
        tmp_path, monkeypatch, "from jinja2 import Environment\nplain = Environment()\nnumber = 3\n"
    )
    try:
        with pytest.raises(SpecError) as info:
            load_cache(f"{module}:{attribute}", [])
        assert fragment in str(info.value)
        assert f"{module}:{attribute}" in str(info.value)
    finally:
        sys.modules.pop(module, None)


def test_a_module_that_fails_to_import_is_a_spec_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing module, or one raising at import, is a SpecError with the cause in one line."""
    module = _app_module(tmp_path, monkeypatch, "raise RuntimeError('no database')\n")
    with pytest.raises(SpecError, match="RuntimeError: no database"):
        load_object(f"{module}:env")
    with pytest.raises(SpecError, match="No module named 'surely_not_a_module'"):
        load_object("surely_not_a_module:env")
    with pytest.raises(SpecError, match="is not module:attribute"):
        load_object("no-colon-here")


def test_options_with_an_application_cache_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret given with module:attribute would be ignored, so it is an error instead."""
    module = _app_module(
        tmp_path,
        monkeypatch,
        "from tiered_bccache import TieredBytecodeCache, MemoryTier\n"
        "cache = TieredBytecodeCache([MemoryTier(5)])\n",
    )
    try:
        with pytest.raises(SpecError, match="secret cannot apply"):
            load_cache(f"{module}:cache", [], secret=SECRET)
        assert isinstance(load_cache(f"{module}:cache", [], secret=None), TieredBytecodeCache)
    finally:
        sys.modules.pop(module, None)
