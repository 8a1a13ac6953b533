"""The composite: the walk down, promotion, write-through, clear, and Jinja's interface."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, FileSystemLoader, pass_context
from jinja2.bccache import Bucket
from jinja2.ext import Extension

from tests.conftest import SECRET, MemcachedServer
from tests.stress.workers import lease_key
from tests.tiers.test_base import DictTier
from tiered_bccache import (
    ConfigurationError,
    FileSystemTier,
    InsecureConfigurationError,
    MemcachedTier,
    MemoryTier,
    Tier,
    TieredBytecodeCache,
    TierError,
)
from tiered_bccache.compiling import compile_isolated

TEMPLATES = {
    "base.html": "<title>{% block title %}{% endblock %}</title>{% block body %}{% endblock %}",
    "macros.html": "{% macro item(x) %}<li>{{ x|title }}</li>{% endmacro %}",
    "page.html": (
        "{% extends 'base.html' %}{% import 'macros.html' as m %}"
        "{% block title %}Page{% endblock %}"
        "{% block body %}{% for x in items %}{{ m.item(x) }}{% endfor %}{% endblock %}"
    ),
}
EXPECTED = "<title>Page</title><li>A</li><li>B</li>"


class BrokenTier(DictTier):
    """A tier whose storage fails on every call, as a full or vanished disk would."""

    name = "broken"

    def get(self, key: str) -> bytes | None:
        raise OSError(28, "No space left on device")

    def set(self, key: str, value: bytes) -> None:
        raise OSError(28, "No space left on device")

    def clear(self) -> None:
        raise OSError(28, "No space left on device")


def render(
    cache: TieredBytecodeCache, templates: dict[str, str] | None = None, **env_options: Any
) -> str:
    env = Environment(
        loader=DictLoader(templates or TEMPLATES), bytecode_cache=cache, cache_size=0, **env_options
    )
    return env.get_template("page.html").render(items=["a", "b"])


def fs_entries(tier: FileSystemTier) -> int:
    return tier.size()[0]


def test_snippet_from_the_readme_works_with_three_tiers(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """The three-tier configuration renders, and a new cache over the same shared tiers hits."""
    tiers: list[Tier] = [
        MemoryTier(max_entries=512),
        FileSystemTier(tmp_path),
        MemcachedTier([memcached.address], prefix=mc_prefix),
    ]
    cache = TieredBytecodeCache(tiers, secret=SECRET)
    assert render(cache) == EXPECTED
    assert cache.stats().compiles == 3
    again = TieredBytecodeCache(
        [
            MemoryTier(max_entries=512),
            FileSystemTier(tmp_path),
            MemcachedTier([memcached.address], prefix=mc_prefix),
        ],
        secret=SECRET,
    )
    assert render(again) == EXPECTED
    stats = again.stats()
    assert stats.compiles == 0
    assert [t.hits for t in stats.tiers] == [0, 3, 0]


def test_hit_in_second_tier_promotes_into_first(tmp_path: Path) -> None:
    """A filesystem hit fills the memory tier above it, so the next lookup is a memory hit."""
    fs = FileSystemTier(tmp_path)
    render(TieredBytecodeCache([fs]))
    memory = MemoryTier()
    cache = TieredBytecodeCache([memory, FileSystemTier(tmp_path)])
    assert render(cache) == EXPECTED
    assert len(memory) == 3
    assert [t.promotions for t in cache.stats().tiers] == [3, 0]
    assert render(cache) == EXPECTED
    assert [t.hits for t in cache.stats().tiers] == [3, 3]


def test_hit_in_third_tier_promotes_into_second_and_first(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """A memcached hit fills the filesystem and the memory tiers above it."""
    render(TieredBytecodeCache([MemcachedTier(memcached.address, prefix=mc_prefix)], secret=SECRET))
    memory, fs = MemoryTier(), FileSystemTier(tmp_path)
    cache = TieredBytecodeCache(
        [memory, fs, MemcachedTier(memcached.address, prefix=mc_prefix)], secret=SECRET
    )
    assert render(cache) == EXPECTED
    assert len(memory) == 3 and fs_entries(fs) == 3
    assert [t.promotions for t in cache.stats().tiers] == [3, 3, 0]
    assert cache.stats().compiles == 0


def test_dump_writes_through_to_every_tier(tmp_path: Path) -> None:
    """A compile stores the entry in each tier, byte tiers and memory alike."""
    memory, fs, user = MemoryTier(), FileSystemTier(tmp_path / "fs"), DictTier()
    cache = TieredBytecodeCache([memory, fs, user], secret=SECRET)
    render(cache)
    assert len(memory) == 3 and fs_entries(fs) == 3 and len(user.data) == 3
    assert [t.writes for t in cache.stats().tiers] == [3, 3, 3]


def test_failing_tier_does_not_stop_the_others_or_the_render(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tier that raises is counted and logged; the tiers below still get the write."""
    user = DictTier()
    cache = TieredBytecodeCache([MemoryTier(), BrokenTier(), user], secret=SECRET)
    assert render(cache) == EXPECTED
    stats = cache.stats()
    assert stats.tiers[1].errors == 6  # three gets, three sets
    assert len(user.data) == 3
    assert any("broken failed" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if "broken failed during set" in r.getMessage()]) == 1


def test_strict_mode_raises_tier_errors(tmp_path: Path) -> None:
    """With strict=True a tier failure surfaces as TierError naming the tier."""
    cache = TieredBytecodeCache([BrokenTier()], secret=SECRET, strict=True)
    with pytest.raises(TierError, match="broken"):
        render(cache)


def test_changed_source_is_never_served_old_code(tmp_path: Path) -> None:
    """After an edit every tier misses on the old entry and the new source renders."""
    loader_dir = tmp_path / "templates"
    loader_dir.mkdir()
    (loader_dir / "t.html").write_text("old {{ x }}")
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "cache")])
    env = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=cache, cache_size=0)
    assert env.get_template("t.html").render(x=1) == "old 1"
    (loader_dir / "t.html").write_text("new {{ x }}")
    assert env.get_template("t.html").render(x=1) == "new 1"
    fresh = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path / "cache")])
    env2 = Environment(loader=FileSystemLoader(loader_dir), bytecode_cache=fresh, cache_size=0)
    assert env2.get_template("t.html").render(x=2) == "new 2"
    assert fresh.stats().compiles == 0


def test_clear_empties_every_tier(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """clear() leaves no entry in memory, on disk or in memcached (by generation)."""
    memory, fs = MemoryTier(), FileSystemTier(tmp_path)
    mc = MemcachedTier(memcached.address, prefix=mc_prefix)
    cache = TieredBytecodeCache([memory, fs, mc], secret=SECRET)
    render(cache)
    cache.clear()
    assert len(memory) == 0 and fs_entries(fs) == 0
    cache.reset_stats()
    render(cache)
    assert cache.stats().compiles == 3


def test_any_order_one_tier_and_same_kind_twice(tmp_path: Path) -> None:
    """Tier lists of any shape work: one tier, memory last, two directories."""
    for tiers in (
        [MemoryTier()],
        [FileSystemTier(tmp_path / "a")],
        [FileSystemTier(tmp_path / "b"), MemoryTier()],
        [FileSystemTier(tmp_path / "c"), FileSystemTier(tmp_path / "d")],
    ):
        cache = TieredBytecodeCache(tiers)  # type: ignore[arg-type]
        assert render(cache) == EXPECTED
        assert render(cache) == EXPECTED
        assert cache.stats().compiles == 3
    # A memory tier below a filesystem tier is promoted from into the filesystem tier.
    fs = FileSystemTier(tmp_path / "e")
    memory = MemoryTier()
    cache = TieredBytecodeCache([fs, memory])
    render(cache)
    for entry in os.scandir(fs.directory):
        if entry.name.endswith(".tbc"):
            os.unlink(entry.path)
    assert render(cache) == EXPECTED
    assert fs_entries(fs) == 3
    assert cache.stats().tiers[0].promotions == 3


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([], "at least one tier"),
        ("memory", "list of tiers"),
        ([object()], r"tiers\[0\] is a object"),
    ],
)
def test_bad_tier_lists_are_refused_at_construction(tiers: object, message: str) -> None:
    """An empty list, a string, or a non-tier raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        TieredBytecodeCache(tiers)  # type: ignore[arg-type]


def test_same_tier_twice_is_refused(tmp_path: Path) -> None:
    """One tier instance twice, or one directory twice, is a configuration error."""
    memory = MemoryTier()
    with pytest.raises(ConfigurationError, match=r"tiers\[1\] is the same object as tiers\[0\]"):
        TieredBytecodeCache([memory, memory])
    with pytest.raises(ConfigurationError, match="same directory"):
        TieredBytecodeCache([FileSystemTier(tmp_path), FileSystemTier(tmp_path)])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lease_timeout", -1),
        ("breaker_threshold", 0),
        ("breaker_cooldown", 0),
        ("secret", b"short"),
    ],
)
def test_bad_options_are_refused_naming_them(option: str, value: object) -> None:
    """Each numeric option and the secret are checked at construction."""
    with pytest.raises(ConfigurationError, match=option):
        TieredBytecodeCache([MemoryTier()], **{option: value})  # type: ignore[arg-type]


def test_memcached_without_secret_is_refused(memcached: MemcachedServer) -> None:
    """A remote tier needs a secret unless allow_unsigned=True says otherwise."""
    with pytest.raises(InsecureConfigurationError, match="secret"):
        TieredBytecodeCache([MemcachedTier(memcached.address)])
    TieredBytecodeCache([MemcachedTier(memcached.address)], allow_unsigned=True)


def test_environment_with_the_cache_pickles_as_configuration(tmp_path: Path) -> None:
    """A pickled environment's cache has the same tiers, an empty memory tier, and works."""
    cache = TieredBytecodeCache([MemoryTier(max_entries=7), FileSystemTier(tmp_path)])
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    env.get_template("page.html").render(items=[])
    copy = pickle.loads(pickle.dumps(env))
    copied = copy.bytecode_cache
    assert isinstance(copied, TieredBytecodeCache)
    memory = copied.tiers[0]
    assert isinstance(memory, MemoryTier) and len(memory) == 0 and memory.max_entries == 7
    assert copy.get_template("page.html").render(items=["a", "b"]) == EXPECTED
    assert copied.stats().tiers[1].hits == 3


def test_plain_jinja_buckets_load_what_the_cache_compiled(tmp_path: Path) -> None:
    """load_bytecode on a bucket made by Jinja's own interface finds the entry a lookup
    compiled and stored; dump_bytecode of code Jinja compiled stores nothing."""
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)])
    env = Environment(loader=DictLoader({"t": "hello {{ name }}"}), bytecode_cache=cache)
    source = "hello {{ name }}"
    key = cache.get_cache_key("t", None)
    bucket = Bucket(env, key, cache.get_source_checksum(source))
    cache.load_bytecode(bucket)
    assert bucket.code is None
    bucket.code = env.compile(source, "t")
    cache.dump_bytecode(bucket)
    assert FileSystemTier(tmp_path).size()[0] == 0
    env.get_template("t")
    again = Bucket(env, key, cache.get_source_checksum(source))
    fresh = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)])
    fresh.load_bytecode(again)
    assert again.code is not None
    assert (
        env.template_class.from_code(env, again.code, env.make_globals(None)).render(name="x")
        == "hello x"
    )


def test_filter_given_another_calling_convention_after_first_use_is_not_served_old_code(
    tmp_path: Path,
) -> None:
    """A filter replaced after the first load by one that takes the context is called
    with the context from then on: the entry compiled for the old convention is not used."""
    cache = TieredBytecodeCache([MemoryTier()])
    env = Environment(
        loader=DictLoader({"t": "{{ 'a'|shout }}"}), bytecode_cache=cache, cache_size=0
    )
    env.filters["shout"] = str.upper
    assert env.get_template("t").render() == "A"
    env.filters["shout"] = pass_context(lambda context, value: value + str(context["n"]))
    assert env.get_template("t").render(n=1) == "a1"
    assert cache.stats().compiles == 2
    env.filters["shout"] = str.upper
    assert env.get_template("t").render() == "A"
    assert cache.stats().compiles == 2  # the first entry is still there


def test_second_process_finds_entries_in_filesystem_and_memcached(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Entries written by this process are hits in another process, from disk and from memcached."""
    templates = tmp_path / "templates"
    templates.mkdir()
    for name, source in TEMPLATES.items():
        (templates / name).write_text(source)
    render_dir = str(templates)
    cache = TieredBytecodeCache(
        [
            MemoryTier(),
            FileSystemTier(tmp_path / "fs"),
            MemcachedTier(memcached.address, prefix=mc_prefix),
        ],
        secret=SECRET,
    )
    env = Environment(loader=FileSystemLoader(render_dir), bytecode_cache=cache)
    env.get_template("page.html").render(items=["a", "b"])
    child = textwrap.dedent(
        f"""
        import json, sys
        from jinja2 import Environment, FileSystemLoader
        from tiered_bccache import *
        tiers = [MemoryTier()]
        if sys.argv[1] == "fs":
            tiers.append(FileSystemTier({str(tmp_path / "fs")!r}))
        tiers.append(MemcachedTier({memcached.address!r}, prefix={mc_prefix!r}))
        cache = TieredBytecodeCache(tiers, secret={SECRET!r})
        env = Environment(loader=FileSystemLoader({render_dir!r}), bytecode_cache=cache)
        out = env.get_template("page.html").render(items=["a", "b"])
        s = cache.stats()
        print(json.dumps([out, s.compiles, [t.hits for t in s.tiers]]))
        """
    )
    for where, hits in (("fs", [0, 3, 0]), ("mc", [0, 3])):
        result = subprocess.run(
            [sys.executable, "-c", child, where],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        out, compiles, tier_hits = json.loads(result.stdout)
        assert (out, compiles, tier_hits) == (EXPECTED, 0, hits)


class PlantedPickle:
    """Unpickling this creates a file: what an attacker plants in a shared cache."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (Path(self.path),))


def _plant_cases(valid: bytes, other_secret_entry: bytes, evil_path: str) -> dict[str, bytes]:
    from jinja2.bccache import bc_magic

    flipped = bytearray(valid)
    flipped[len(flipped) // 2] ^= 0x01
    return {
        "flipped byte": bytes(flipped),
        "truncated": valid[: len(valid) // 2],
        "other secret": other_secret_entry,
        "jinja format with a pickle": bc_magic + pickle.dumps(PlantedPickle(evil_path), 2),
        "garbage": os.urandom(300),
        "empty": b"",
    }


def _planted_tier_test(tmp_path: Path, make_tier: object) -> None:
    evil_path = str(tmp_path / "pwned")
    assert callable(make_tier)
    tier = make_tier()
    first = TieredBytecodeCache([tier], secret=SECRET)
    render(first)
    keys = _keys_of(first)
    assert len(keys) == 3
    valid = {k: tier.get(k) for k in keys}
    other = make_tier()
    render(TieredBytecodeCache([other], secret=b"another-secret-of-enough-length"))
    other_entries = {k: other.get(k) for k in keys}
    for label in _plant_cases(b"x" * 100, b"", evil_path):
        for key in keys:
            entry, other_entry = valid[key], other_entries[key]
            assert entry is not None and other_entry is not None
            tier.set(key, _plant_cases(entry, other_entry, evil_path)[label])
        cache = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
        assert render(cache) == EXPECTED, label
        stats = cache.stats()
        assert stats.compiles == 3, label
        assert stats.tiers[1].rejected == 3, label
        assert stats.tiers[1].errors == 0, label
        assert not os.path.exists(evil_path), f"{label}: the planted pickle ran"
        # The rejected entries were overwritten with valid ones.
        assert render(TieredBytecodeCache([tier], secret=SECRET)) == EXPECTED


def _keys_of(cache: TieredBytecodeCache) -> list[str]:
    """The keys the cache uses for TEMPLATES (all hits by now, so no lease is taken)."""
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    return sorted(
        cache.get_bucket(env, name, None, source).key for name, source in TEMPLATES.items()
    )


def test_planted_entries_on_disk_are_misses_and_never_run(tmp_path: Path) -> None:
    """Flipped, truncated, foreign-secret, pickled and garbage files are rejected misses."""
    directory = tmp_path / "cache"
    _planted_tier_test(tmp_path, lambda: FileSystemTier(directory))


def test_planted_entries_in_memcached_are_misses_and_never_run(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """The same plants in a real memcached are rejected misses too."""
    _planted_tier_test(tmp_path, lambda: MemcachedTier(memcached.address, prefix=mc_prefix))


def test_jinja_own_cache_runs_the_planted_pickle(tmp_path: Path) -> None:
    """The baseline: Jinja's FileSystemBytecodeCache executes what is planted in its directory."""
    from jinja2 import FileSystemBytecodeCache
    from jinja2.bccache import bc_magic

    (tmp_path / "jinja").mkdir()
    jinja_cache = FileSystemBytecodeCache(str(tmp_path / "jinja"))
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=jinja_cache, cache_size=0)
    env.get_template("base.html")
    (entry,) = [p for p in (tmp_path / "jinja").iterdir() if p.name.endswith(".cache")]
    evil_path = tmp_path / "pwned"
    entry.write_bytes(bc_magic + pickle.dumps(PlantedPickle(str(evil_path)), 2))
    try:
        env.get_template("base.html")
    except Exception:
        pass  # it may fail afterwards; the damage is done when unpickling
    assert evil_path.exists()


def test_rejections_are_logged_at_most_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A tier full of bad entries logs one line per interval, not one per lookup."""
    fs = FileSystemTier(tmp_path)
    render(TieredBytecodeCache([fs]))
    for entry in os.scandir(fs.directory):
        if entry.name.endswith(".tbc"):
            Path(entry.path).write_bytes(b"garbage" * 20)
    cache = TieredBytecodeCache([fs])
    caplog.set_level("WARNING", logger="tiered_bccache")
    render(cache)
    assert cache.stats().tiers[0].rejected_format == 3
    assert len([r for r in caplog.records if "rejected an entry" in r.getMessage()]) == 1


def test_trace_records_every_lookup_with_entry_sizes(tmp_path: Path) -> None:
    """With trace= every lookup is one record: hits with the entry size, misses at dump."""
    from tiered_bccache.trace import read_trace

    trace = tmp_path / "trace.txt"
    cache = TieredBytecodeCache([MemoryTier()], trace=trace)
    render(cache)
    render(cache)
    cache.stop_trace()
    records = list(read_trace(trace))
    assert len(records) == 6
    assert all(r.size > 0 for r in records)
    assert len({r.key for r in records}) == 3


def test_breaker_probe_is_not_lost_on_an_entry_too_large_for_the_tier() -> None:
    """A write skipped for size never takes the breaker's probe, so the tier is retried."""
    tier = MemcachedTier("127.0.0.1:1", max_item_size=2048)  # nobody listens: refused
    cache = TieredBytecodeCache([tier], secret=SECRET, breaker_cooldown=0.05)
    big = "".join(f"{{{{ x{i} }}}}" for i in range(400))
    env = Environment(loader=DictLoader({"big": big, "small": "{{ y }}"}), bytecode_cache=cache)
    for _ in range(3):
        env.get_template("small")
        env.cache.clear()  # type: ignore[union-attr]
    assert cache.stats().tiers[0].breaker == "open"
    bucket = cache.get_bucket(env, "big", None, big)  # refused while open
    bucket.code = env.compile(big, "big")
    deadline = time.monotonic() + 5
    while cache.stats().tiers[0].breaker == "open" and time.monotonic() < deadline:
        time.sleep(0.01)
    # The cooldown ended during the "compile": the write-back of an entry too large for
    # the tier must not take the probe.
    errors_before = cache.stats().tiers[0].errors
    cache.set_bucket(bucket)
    assert cache.stats().tiers[0].skipped >= 2
    env.cache.clear()  # type: ignore[union-attr]
    env.get_template("small")  # the probe goes to the server (and fails: refused)
    assert cache.stats().tiers[0].errors > errors_before


# -- issue 11: never the wrong bytecode, round two ---------------------------------------


def brand_v1(value: str) -> str:
    return value + "-v1"


def brand_v2(value: str) -> str:
    return value + "-v2"


# The optimizer folds a filter applied to a constant into the code: "b-v1" is baked in.
BRANDED = {"first.html": "{{ 1 }}", "second.html": "{{ 'b'|brand }}"}


def branded_env(cache: TieredBytecodeCache, brand: Any) -> Environment:
    env = Environment(loader=DictLoader(BRANDED), bytecode_cache=cache, cache_size=0)
    env.filters["brand"] = brand
    return env


def test_filter_replaced_after_first_use_never_reaches_another_worker(tmp_path: Path) -> None:
    """Worker A replaces a folded filter after its first template and compiles another;
    worker B, configured with the old filter from the start, renders what it would
    without a cache (b-v1), not A's code (b-v2)."""
    worker_a = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET)
    env_a = branded_env(worker_a, brand_v1)
    env_a.get_template("first.html").render()
    env_a.filters["brand"] = brand_v2  # same name, another function, after first use
    assert env_a.get_template("second.html").render() == "b-v2"
    worker_b = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET)
    assert branded_env(worker_b, brand_v1).get_template("second.html").render() == "b-v1"
    assert branded_env(worker_b, brand_v2).get_template("second.html").render() == "b-v2"


def test_code_jinja_compiled_itself_is_never_stored() -> None:
    """Jinja's get_bucket / compile / set_bucket sequence, run by hand with code Jinja
    compiled (the folded output of the filter baked in): set_bucket stores nothing, so
    no other environment is ever served it."""
    shared = DictTier()
    cache = TieredBytecodeCache([MemoryTier(), shared], secret=SECRET)
    env = branded_env(cache, brand_v1)
    source = BRANDED["second.html"]
    bucket = Bucket(env, cache.get_cache_key("second.html"), cache.get_source_checksum(source))
    bucket.code = env.compile(source, "second.html")
    cache.set_bucket(bucket)
    cache.dump_bytecode(bucket)
    assert shared.data == {}
    fresh = TieredBytecodeCache([MemoryTier(), shared], secret=SECRET)
    assert branded_env(fresh, brand_v2).get_template("second.html").render() == "b-v2"
    assert fresh.stats().compiles == 1
    assert branded_env(fresh, brand_v1).get_template("second.html").render() == "b-v1"
    assert fresh.stats().compiles == 1  # one code serves both: the filter runs at render


class LockingExtension(Extension):
    """A third-party extension whose options hold a lock: not plain data, so its
    environment cannot be described for other processes."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        import threading

        self.lock = threading.Lock()


def test_undescribable_environment_keeps_its_entries_in_memory(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An environment holding a value that cannot be described writes nothing to the
    shared tiers (no entries, no lease lock files) across restarts, and still hits its
    memory tier."""
    for _ in range(4):  # four restarts
        fs = FileSystemTier(tmp_path)
        cache = TieredBytecodeCache(
            [MemoryTier(), fs, MemcachedTier(memcached.address, prefix=mc_prefix)], secret=SECRET
        )
        env = Environment(
            loader=DictLoader(TEMPLATES),
            bytecode_cache=cache,
            cache_size=0,
            extensions=[LockingExtension],
        )
        for _ in range(2):
            assert env.get_template("page.html").render(items=["a", "b"]) == EXPECTED
        stats = cache.stats()
        assert stats.hits == 3 and stats.misses == 3  # the memory tier served the second
        assert [t.writes for t in stats.tiers] == [3, 0, 0]
        assert fs_entries(fs) == 0
        assert not (tmp_path / ".locks").exists() or not os.listdir(tmp_path / ".locks")
    assert "not plain data" in caplog.text


def test_compile_that_raises_releases_its_lease_at_once(tmp_path: Path) -> None:
    """A template that does not compile releases its compile lease when the compile
    raises, with the garbage collector off and no further lookup: another process takes
    the lease without waiting."""
    import gc

    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET)
    env = Environment(loader=DictLoader({"bad.html": "{% if %}"}), bytecode_cache=cache)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(Exception, match="Expected an expression"):
            env.get_template("bad.html")
        key = lease_key(env, "bad.html")
        lock_path = FileSystemTier(tmp_path).lease(key).lock_file
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from filelock import FileLock, Timeout\n"
                "try:\n    FileLock(sys.argv[1]).acquire(timeout=0)\n"
                "except Timeout:\n    sys.exit(3)",
                lock_path,
            ],
            timeout=60,
        )
    finally:
        if was_enabled:
            gc.enable()
    assert probe.returncode == 0, "the lease of the failed compile is still held"


def test_misses_never_decrease_when_the_second_look_under_the_lease_hits(
    tmp_path: Path,
) -> None:
    """A lookup that misses, takes the lease and then finds the entry another process
    wrote is counted once, as a hit: no counter ever goes down."""
    writer = TieredBytecodeCache([FileSystemTier(tmp_path)], secret=SECRET)
    reader = TieredBytecodeCache([MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET)
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=reader, cache_size=0)
    source = TEMPLATES["base.html"]
    key = reader.get_bucket(env, "base.html", None, source).key  # a miss, compiled
    assert reader.stats().misses == 1
    FileSystemTier(tmp_path).delete(key)
    reader.tiers[0].clear()
    # Another compiler holds the lease, writes the entry, and releases the lease while
    # this one waits for it.
    other = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=writer)
    lock = FileSystemTier(tmp_path).lease(key)
    lock.acquire(timeout=5)
    import threading

    during: list[Any] = []

    def write_then_release() -> None:
        writer.put(other, "base.html", None, source)
        during.append(reader.stats())  # what a scrape sees while the reader waits
        lock.release()

    threading.Timer(0.2, write_then_release).start()
    before = reader.stats()
    bucket = reader.get_bucket(env, "base.html", None, source)
    after = reader.stats()
    assert bucket.code is not None
    assert after.lease_waits == before.lease_waits + 1
    assert after.misses == before.misses and after.hits == before.hits + 1
    assert after.compiles == before.compiles
    # Monotonic: nothing a scrape saw during the wait is taken back afterwards.
    assert during[0].misses <= after.misses and during[0].lookups <= after.lookups


def test_stopping_a_trace_while_another_thread_looks_up_is_not_an_error(
    tmp_path: Path,
) -> None:
    """Tracing started and stopped over and over while threads render never makes a
    render fail (a lookup may find the trace closed between its check and its write)."""
    import threading

    cache = TieredBytecodeCache([MemoryTier()])
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    env.get_template("page.html")
    errors: list[BaseException] = []
    stop = threading.Event()

    def renders() -> None:
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                env.get_template("page.html")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=renders) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            cache.start_trace(tmp_path / f"trace-{i % 2}.txt")
            cache.stop_trace()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []


def test_pickle_carries_the_secret_variable_name_not_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache whose key came from an environment variable pickles with the variable's
    name; the copy reads the variable again and verifies the original's entries."""
    key = b"a key from the environment, 32b"
    monkeypatch.setenv("APP_JINJA_KEY", key.decode())
    cache = TieredBytecodeCache([FileSystemTier(tmp_path)], secret_env="APP_JINJA_KEY")
    render(cache)
    data = pickle.dumps(cache)
    assert key not in data and b"APP_JINJA_KEY" in data
    copy = pickle.loads(data)
    assert render(copy) == EXPECTED
    assert copy.stats().hits == 3 and copy.stats().misses == 0


def test_secret_env_must_name_a_variable() -> None:
    """An empty secret_env is refused at construction, naming the argument."""
    with pytest.raises(ConfigurationError, match="secret_env"):
        TieredBytecodeCache([MemoryTier()], secret_env="")


def test_refresh_leaves_nothing_behind_per_call() -> None:
    """Refreshing an environment a thousand times keeps one state and one weak reference
    to it (a finalizer per refresh used to pile up for the environment's lifetime)."""
    import weakref

    cache = TieredBytecodeCache([MemoryTier()])
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    for _ in range(1000):
        env.get_template("base.html")
        cache.refresh(env)
    env.get_template("base.html")
    assert weakref.getweakrefcount(env) <= 2
    assert len(cache._states) == 1
    del env
    import gc

    gc.collect()
    assert cache._states == {}


def test_memory_tier_weighs_a_promoted_compressed_entry_by_its_marshalled_size(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """An entry promoted from a compressing memcached tier weighs what it weighs when
    compiled here (its marshalled code), not its compressed bytes."""
    import marshal

    here = MemoryTier(max_bytes=10**8)
    render(TieredBytecodeCache([here], secret=SECRET))
    compiled_weight = here.currsize
    mc = MemcachedTier(memcached.address, prefix=mc_prefix, compress=True)
    render(TieredBytecodeCache([mc], secret=SECRET))
    memory = MemoryTier(max_bytes=10**8)
    promoted = TieredBytecodeCache([memory, mc], secret=SECRET)
    render(promoted)
    assert promoted.stats().tiers[0].promotions == 3
    assert memory.currsize == compiled_weight
    env = Environment(loader=DictLoader(TEMPLATES))
    expected = sum(
        len(marshal.dumps(compile_isolated(env, Environment, source, name, None, False)))
        for name, source in TEMPLATES.items()
    )
    assert memory.currsize == expected


class PlantedFileTier(DictTier):
    """A tier that finds something under every key that is not an entry (as a symlink
    planted in a directory is), and says so with EntryError."""

    name = "planted"

    def __init__(self) -> None:
        super().__init__()
        self.events = {"planted_seen": 0}

    def get(self, key: str) -> bytes | None:
        from tiered_bccache import EntryError

        self.events["planted_seen"] += 1
        raise EntryError("format", "a FIFO, not an entry file")


def test_entry_error_from_a_tier_is_a_rejected_entry_not_a_tier_error() -> None:
    """A tier's get raising EntryError counts as a rejected entry and a miss, in strict
    mode too, and the tier's own events appear in stats()."""
    tier = PlantedFileTier()
    cache = TieredBytecodeCache([tier], secret=SECRET, strict=True)
    assert render(cache) == EXPECTED
    stats = cache.stats().tiers[0]
    assert stats.rejected_format == 3 and stats.errors == 0 and stats.misses == 3
    assert stats.events == {"planted_seen": 3}


def test_breaker_open_warning_is_rate_limited_like_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A remote tier whose breaker opens, closes and opens again and again logs the
    opening once per interval, as every other tier message."""

    class FlappingRemote(DictTier):
        name = "flapping"
        remote = True

        def __init__(self) -> None:
            super().__init__()
            self.broken = False

        def get(self, key: str) -> bytes | None:
            if self.broken:
                raise TimeoutError("timed out")
            return super().get(key)

    tier = FlappingRemote()
    cache = TieredBytecodeCache([tier], secret=SECRET, breaker_cooldown=0.001)
    for i in range(10):
        tier.broken = i % 2 == 0  # open on a timeout, then close on a probe that works
        time.sleep(0.005)  # past the cool-down
        render(cache)
    assert cache.stats().tiers[0].errors >= 5
    assert caplog.text.count("is failing") == 1


def test_probe_interrupted_by_a_base_exception_is_handed_back() -> None:
    """A BaseException (gevent's Timeout, KeyboardInterrupt) raised inside the single
    probe of a half-open breaker reaches the caller, and the next call probes again
    instead of the tier being skipped for good."""

    class Interrupted(BaseException):
        """Stands for gevent.Timeout, which is a BaseException."""

    class Remote(DictTier):
        name = "remote"
        remote = True

        def __init__(self) -> None:
            super().__init__()
            self.mode = "ok"

        def get(self, key: str) -> bytes | None:
            if self.mode == "fail":
                raise TimeoutError("timed out")
            if self.mode == "interrupt":
                raise Interrupted
            return super().get(key)

    tier = Remote()
    cache = TieredBytecodeCache([tier], secret=SECRET, breaker_cooldown=0.01)
    tier.mode = "fail"
    render(cache)
    assert cache.stats().tiers[0].breaker == "open"
    time.sleep(0.02)
    tier.mode = "interrupt"
    with pytest.raises(Interrupted):
        render(cache)
    tier.mode = "ok"
    assert render(cache) == EXPECTED
    assert cache.stats().tiers[0].breaker == "closed"


def test_from_specs_builds_the_tiers_and_passes_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TieredBytecodeCache.from_specs builds the listed tiers in order with the cache's
    options, and with no list reads $TIERED_BCCACHE_TIERS."""
    cache = TieredBytecodeCache.from_specs(
        ["memory:7", f"fs:{tmp_path / 'a'}"], secret=SECRET, string_admission=1
    )
    assert [type(t).__name__ for t in cache.tiers] == ["MemoryTier", "FileSystemTier"]
    assert render(cache) == EXPECTED
    monkeypatch.setenv("TIERED_BCCACHE_TIERS", f"fs:{tmp_path / 'b'}")
    from_env = TieredBytecodeCache.from_specs(secret=SECRET)
    assert [t.directory for t in from_env.tiers] == [str(tmp_path / "b")]  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="bogus"):
        TieredBytecodeCache.from_specs(["bogus:1"])


def test_an_entry_of_the_previous_format_is_a_stale_miss_and_overwritten(tmp_path: Path) -> None:
    """After an upgrade, what the previous release wrote (format 2) is a miss counted as
    stale, never an error, and the entry is rewritten in the current format."""
    import struct

    from tiered_bccache.entry import FORMAT_VERSION, MAGIC, read_header

    tier = FileSystemTier(tmp_path)
    cache = TieredBytecodeCache([MemoryTier(), tier], secret=SECRET)
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=cache, cache_size=0)
    key = cache.template_key(env, "base.html")
    old = struct.pack(">4sBB4sB", MAGIC, 2, 0, b"abcd", 3) + b"old" + b"0" * 40 + b"x" * 64
    tier.set(key, old)
    env.get_template("base.html")
    stats = cache.stats()
    assert stats.tiers[1].rejected_stale == 1 and stats.tiers[1].errors == 0
    data = tier.get(key)
    assert data is not None and read_header(data).format_version == FORMAT_VERSION
