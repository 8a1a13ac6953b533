"""The stateful cache machine of ``test_cache_stateful`` with Redis as the shared tier:
the same edits, loads, restarts, clears and corruptions, with a RedisTier where the
machine has its memcached tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis.stateful import run_state_machine_as_test

import tests.property.test_cache_stateful as stateful
from tests.conftest import RedisServer
from tiered_bccache import RedisTier


def redis_tier(url: str, *, prefix: str, **options: Any) -> RedisTier:
    """A RedisTier built with the arguments the machine gives its memcached tier (its
    generous timeouts included), plus as long a wait for a pooled connection."""
    return RedisTier(url, prefix=prefix, pool_timeout=5, **options)


class RedisCacheMachine(stateful.CacheMachine):
    """The machine, building a RedisTier wherever it builds its shared tier."""

    def _start(self, memory_entries: int) -> None:
        # The machine builds its tiers in _start, by the module's name MemcachedTier:
        # rebinding that name while it runs reuses every rule and invariant unchanged,
        # where a copy of _start would drift from the original.
        names = vars(stateful)
        original = names["MemcachedTier"]
        names["MemcachedTier"] = redis_tier
        try:
            super()._start(memory_entries)
        finally:
            names["MemcachedTier"] = original
        assert isinstance(self.mc, RedisTier)


@pytest.mark.timeout(0 if stateful._THOROUGH else 120)
def test_cache_state_machine_over_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    """Any edits, loads, restarts, clears and corruptions over memory, filesystem and
    Redis: renders as uncached, no tier errs."""

    def factory() -> RedisCacheMachine:
        return RedisCacheMachine(redis_server.url, str(tmp_path))

    run: Any = run_state_machine_as_test
    run(factory, settings=stateful.MACHINE_SETTINGS)
