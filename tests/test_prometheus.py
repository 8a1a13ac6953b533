"""The Prometheus collector: cache.stats() as metric families, per tier and in total."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment

from tests.conftest import SECRET, MemcachedServer, require_extra
from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.prometheus import TieredCacheCollector

TEMPLATES = {"a.html": "{{ x }}", "b.html": "{% for i in y %}{{ i }}{% endfor %}"}


def scrape(cache: TieredBytecodeCache, namespace: str = "tiered_bccache") -> dict[str, float]:
    """Register a collector in a fresh registry and return every sample, keyed by name and
    sorted labels as Prometheus prints them."""
    require_extra("prometheus_client", "prometheus")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    registry.register(TieredCacheCollector(cache, namespace=namespace))
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def load(cache: TieredBytecodeCache) -> None:
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    for name in TEMPLATES:
        env.get_template(name)


def test_per_tier_counters_follow_the_cache(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Per-tier counters and totals match cache.stats() after loads through three tiers."""
    remote = MemcachedTier(memcached.address, prefix=mc_prefix)
    load(TieredBytecodeCache([remote], secret=SECRET))
    fs_tier = FileSystemTier(tmp_path)
    cache = TieredBytecodeCache(
        [MemoryTier(), fs_tier, MemcachedTier(memcached.address, prefix=mc_prefix)],
        secret=SECRET,
    )
    load(cache)  # memcached hits, promoted into the filesystem and memory tiers
    load(cache)  # memory hits
    fs = f'tier="{fs_tier.name}"'
    mc = f'tier="memcached:{memcached.address}"'
    m = scrape(cache)
    assert m['tiered_bccache_tier_hits_total{tier="memory"}'] == 2
    assert m['tiered_bccache_tier_misses_total{tier="memory"}'] == 2
    assert m[f"tiered_bccache_tier_hits_total{{{mc}}}"] == 2
    assert m[f"tiered_bccache_tier_promotions_total{{{fs}}}"] == 2
    assert m[f"tiered_bccache_tier_writes_total{{{fs}}}"] == 2
    assert m[f"tiered_bccache_tier_written_bytes_total{{{fs}}}"] > 0
    assert m[f"tiered_bccache_tier_read_bytes_total{{{mc}}}"] > 0
    assert m[f"tiered_bccache_tier_latency_seconds_count{{{mc}}}"] == 2
    assert m[f"tiered_bccache_tier_latency_seconds_sum{{{mc}}}"] > 0
    assert m['tiered_bccache_tier_entries{tier="memory"}'] == 2
    assert m["tiered_bccache_lookups_total{}"] == 4
    assert m["tiered_bccache_hits_total{}"] == 4
    assert m["tiered_bccache_compiles_total{}"] == 0
    cache.close()
    remote.close()


def test_rejections_carry_their_reason(tmp_path: Path) -> None:
    """An entry signed with another key counts under reason="mac", the others stay at 0."""
    load(TieredBytecodeCache([FileSystemTier(tmp_path)], secret=b"another-key-0123456789"))
    tier = FileSystemTier(tmp_path)
    cache = TieredBytecodeCache([tier], secret=SECRET)
    load(cache)
    m = scrape(cache)
    label = f'tier="{tier.name}"'
    assert m[f'tiered_bccache_tier_rejected_total{{reason="mac",{label}}}'] == 2
    assert m[f'tiered_bccache_tier_rejected_total{{reason="format",{label}}}'] == 0
    assert m[f'tiered_bccache_tier_rejected_total{{reason="stale",{label}}}'] == 0


def test_breaker_state_is_one_series_per_state_for_remote_tiers(
    memcached_private: MemcachedServer,
) -> None:
    """A remote tier's breaker series reads closed, then open once its server is gone."""
    tier = MemcachedTier(memcached_private.address, prefix="breaker")
    cache = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
    name = f'tier="{tier.name}"'
    m = scrape(cache)
    assert m[f'tiered_bccache_tier_breaker_state{{state="closed",{name}}}'] == 1
    assert m[f'tiered_bccache_tier_breaker_state{{state="open",{name}}}'] == 0
    assert not any("breaker_state" in key and 'tier="memory"' in key for key in m)
    memcached_private.stop()
    load(cache)
    m = scrape(cache)
    assert m[f'tiered_bccache_tier_breaker_state{{state="open",{name}}}'] == 1
    assert m[f"tiered_bccache_tier_errors_total{{{name}}}"] >= 1
    cache.close()


def test_namespace_prefixes_every_name_and_repeated_tier_names_stay_distinct() -> None:
    """namespace= prefixes every metric; two memory tiers get distinct tier labels."""
    cache = TieredBytecodeCache([MemoryTier(4), MemoryTier(8)])
    load(cache)
    m = scrape(cache, namespace="myapp_templates")
    assert all(key.startswith("myapp_templates_") for key in m)
    assert m['myapp_templates_tier_writes_total{tier="memory"}'] == 2
    assert m['myapp_templates_tier_writes_total{tier="memory#2"}'] == 2


def test_missing_prometheus_client_raises_import_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without prometheus_client the collector raises ImportError with the pip extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'tiered-bccache\[prometheus\]'"):
        TieredCacheCollector(TieredBytecodeCache([MemoryTier()]))
