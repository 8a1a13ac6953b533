"""The tier interface: a user-written tier passes the contract and serves the cache."""

from __future__ import annotations

import errno

import pytest
from jinja2 import DictLoader, Environment

from tests.conftest import SECRET
from tiered_bccache import (
    ByteTier,
    InsecureConfigurationError,
    MemoryTier,
    Tier,
    TieredBytecodeCache,
)

from .tier_suite import TierContract

TEMPLATES = {
    "base.html": "<h1>{% block title %}{% endblock %}</h1>",
    "page.html": "{% extends 'base.html' %}{% block title %}{{ name|title }}{% endblock %}",
}


class DictTier(ByteTier):
    """The user-written tier of ``tiers/base.py``'s docstring: a dict."""

    name = "dict"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def clear(self) -> None:
        self.data.clear()


class DuckTier:
    """A tier that does not inherit from anything, only has the four methods."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def clear(self) -> None:
        pass


class NoClearTier:
    """Not a tier: ``clear`` is missing."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        pass

    def delete(self, key: str) -> None:
        pass


class TestDictTierContract(TierContract):
    """The user-written tier passes the same suite as the built-in ones."""

    def make_tier(self) -> Tier:
        return DictTier()


def render(cache: TieredBytecodeCache) -> str:
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    return env.get_template("page.html").render(name="hello world")


def test_user_tier_serves_the_cache_and_a_fresh_cache_hits_it() -> None:
    """The cache writes compiled templates through to a user tier, and a new cache over
    the same tier loads them from it instead of compiling."""
    tier = DictTier()
    first = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
    assert render(first) == "<h1>Hello World</h1>"
    assert len(tier.data) == 2
    assert all(isinstance(value, bytes) for value in tier.data.values())

    second = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
    assert render(second) == "<h1>Hello World</h1>"
    stats = second.stats()
    assert stats.compiles == 0
    assert [t.name for t in stats.tiers] == ["memory", "dict"]
    assert [t.hits for t in stats.tiers] == [0, 2]


def test_user_tier_without_a_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user tier may be shared, so the cache will not put unsigned code in it."""
    monkeypatch.delenv("TIERED_BCCACHE_SECRET", raising=False)
    with pytest.raises(InsecureConfigurationError, match="dict"):
        TieredBytecodeCache([MemoryTier(), DictTier()])


class FailingTier(ByteTier):
    """A user-written tier whose disk is gone: every call fails (EIO), and is counted."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        raise OSError(errno.EIO, "input/output error")

    def get(self, key: str) -> bytes | None:
        self._fail()
        return None

    def set(self, key: str, value: bytes) -> None:
        self._fail()

    def delete(self, key: str) -> None:
        self._fail()

    def clear(self) -> None:
        self._fail()


class RemoteFailingTier(FailingTier):
    """The same, declared remote."""

    remote = True


def test_byte_tier_subclass_is_local_so_a_failing_one_is_asked_on_every_lookup() -> None:
    """A ByteTier subclass that leaves ``remote`` alone gets no circuit breaker: a tier
    failing every call is still asked on every read and write, each failure counted,
    while the same tier declared remote is skipped once two calls in a row failed."""
    local, remote = FailingTier(), RemoteFailingTier()
    for tier in (local, remote):
        cache = TieredBytecodeCache([tier], secret=SECRET, breaker_cooldown=600)
        for _ in range(3):
            assert render(cache) == "<h1>Hello World</h1>"  # 2 templates, read and written
        assert cache.stats().tiers[0].errors == tier.calls
    assert (local.calls, remote.calls) == (12, 2)


def test_byte_tier_methods_must_be_implemented() -> None:
    """ByteTier alone is not a storage: each of its methods raises NotImplementedError."""
    tier = ByteTier()
    with pytest.raises(NotImplementedError):
        tier.get("k")
    with pytest.raises(NotImplementedError):
        tier.set("k", b"v")
    with pytest.raises(NotImplementedError):
        tier.delete("k")
    with pytest.raises(NotImplementedError):
        tier.clear()


def test_duck_typed_tier_is_a_tier() -> None:
    """Any object with get, set, delete and clear satisfies the Tier protocol."""
    assert isinstance(DuckTier(), Tier)
    assert isinstance(DictTier(), Tier)


def test_object_missing_a_method_is_not_a_tier() -> None:
    """An object without clear (or any other of the four methods) is not a Tier."""
    assert not isinstance(NoClearTier(), Tier)
    assert not isinstance(object(), Tier)


def test_duck_typed_tier_is_accepted_by_the_cache() -> None:
    """The cache takes a tier by its methods, not its class."""
    cache = TieredBytecodeCache([MemoryTier(), DuckTier()], secret=SECRET)
    assert render(cache) == "<h1>Hello World</h1>"
