"""Tier specs: what the command line and $TIERED_BCCACHE_TIERS turn into tiers, and the
cache from_specs builds over them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tiered_bccache import (
    ConfigurationError,
    FileSystemTier,
    MemcachedTier,
    MemoryTier,
    RedisTier,
)
from tiered_bccache.factory import from_specs
from tiered_bccache.secret import ENV_VAR
from tiered_bccache.spec import TIERS_ENV_VAR, SpecError, parse_size, parse_tier


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000", 1000),
        ("1000B", 1000),
        ("1k", 1024),
        ("64MB", 64 * 1024**2),
        ("64M", 64 * 1024**2),
        ("64mib", 64 * 1024**2),
        ("1GB", 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        (" 2 KiB ", 2048),
    ],
)
def test_sizes_accept_k_m_g_suffixes_as_powers_of_1024(text: str, expected: int) -> None:
    """Sizes are bytes with an optional k/M/G (KB/MB/GB, KiB...) suffix, powers of 1024."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "MB", "12XB", "-1k", "1.5", "64ib", "1e6"])
def test_malformed_sizes_are_refused_with_the_text_quoted(text: str) -> None:
    """Anything but a positive whole number of bytes is a SpecError quoting the text."""
    with pytest.raises(SpecError, match=repr(text).replace("\\", "\\\\").replace(".", r"\.")):
        parse_size(text)


def test_spec_error_is_a_configuration_error() -> None:
    """SpecError subclasses ConfigurationError, so callers catching that catch it too."""
    assert issubclass(SpecError, ConfigurationError)


def test_memory_specs_set_entries_bytes_or_both() -> None:
    """memory, memory:N, memory:bytes=SIZE and memory:N,bytes=SIZE build those bounds."""
    default = parse_tier("memory")
    assert isinstance(default, MemoryTier) and default.max_entries == MemoryTier().max_entries
    counted = parse_tier("memory:512")
    assert isinstance(counted, MemoryTier)
    assert (counted.max_entries, counted.max_bytes) == (512, None)
    weighed = parse_tier("memory:bytes=64MB")
    assert isinstance(weighed, MemoryTier)
    assert (weighed.max_entries, weighed.max_bytes) == (None, 64 * 1024**2)
    both = parse_tier("memory:entries=10,bytes=1k")
    assert isinstance(both, MemoryTier)
    assert (both.max_entries, both.max_bytes) == (10, 1024)


def test_filesystem_specs_set_the_directory_and_max_bytes(tmp_path: Path) -> None:
    """fs:/path gives that directory; ,max_bytes=SIZE at the end bounds it."""
    plain = parse_tier(f"fs:{tmp_path / 'a'}")
    assert isinstance(plain, FileSystemTier)
    assert (plain.directory, plain.max_bytes) == (str(tmp_path / "a"), None)
    bounded = parse_tier(f"fs:{tmp_path / 'b'},max_bytes=1GB")
    assert isinstance(bounded, FileSystemTier)
    assert (bounded.directory, bounded.max_bytes) == (str(tmp_path / "b"), 1024**3)


def test_a_comma_in_a_filesystem_path_stays_in_the_path(tmp_path: Path) -> None:
    """Only a trailing max_bytes= is an option: other commas belong to the directory name."""
    tier = parse_tier(f"fs:{tmp_path / 'x,y'},max_bytes=2k")
    assert isinstance(tier, FileSystemTier)
    assert (tier.directory, tier.max_bytes) == (str(tmp_path / "x,y"), 2048)


def test_memcached_specs_name_one_server_a_cluster_and_a_prefix() -> None:
    """memcached:host:port, a comma-separated cluster, and ;prefix=NAME."""
    one = parse_tier("memcached:127.0.0.1:11211")
    assert isinstance(one, MemcachedTier)
    assert (one.name, one.prefix) == ("memcached:127.0.0.1:11211", "tbc")
    cluster = parse_tier("memcached:10.0.0.1:11211,10.0.0.2:11211;prefix=app")
    assert isinstance(cluster, MemcachedTier)
    assert cluster.name == "memcached:10.0.0.1:11211,10.0.0.2:11211"
    assert cluster.prefix == "app"
    for tier in (one, cluster):
        tier.close()


def test_redis_specs_name_a_server_tls_a_socket_a_cluster_and_options() -> None:
    """redis://, rediss://, redis+unix:// and redis+cluster:// build RedisTiers, with the
    memcached spec's ;prefix= and ;timeout= options."""
    one = parse_tier("redis://127.0.0.1:6379/2;prefix=app;timeout=0.5")
    assert isinstance(one, RedisTier)
    assert (one.name, one.prefix, one.timeout, one.connect_timeout) == (
        "redis://127.0.0.1:6379/2",
        "app",
        0.5,
        0.5,
    )
    assert one.client.connection_pool.connection_kwargs["db"] == 2
    tls = parse_tier("rediss://:pw@cache.example:6380/0")
    assert isinstance(tls, RedisTier) and tls.name == "rediss://cache.example:6380/0"
    sock = parse_tier("redis+unix:///run/redis.sock?db=3")
    assert isinstance(sock, RedisTier)
    assert sock.client.connection_pool.connection_kwargs["path"] == "/run/redis.sock"
    cluster = parse_tier("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    assert isinstance(cluster, RedisTier)
    assert cluster.name == "redis-cluster:10.0.0.1:7000,10.0.0.2:7001"
    waits = parse_tier("redis://127.0.0.1:6379/0", redis_timeout=1.0)
    assert isinstance(waits, RedisTier) and waits.timeout == 1.0


def test_from_specs_builds_the_cache_from_a_list_a_string_or_the_environment(
    tmp_path: Path,
) -> None:
    """from_specs takes a list, one whitespace-separated string, or reads that string
    from $TIERED_BCCACHE_TIERS; cache options pass through."""
    specs = ["memory:64", f"fs:{tmp_path}"]
    for given in (specs, " ".join(specs), "\n  ".join(specs)):
        cache = from_specs(given, secret=SECRET, strict=True)
        assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]
        assert cache.strict
    cache = from_specs(environ={TIERS_ENV_VAR: " ".join(specs)}, secret=SECRET)
    assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]


def test_from_specs_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no list, the specs and (through the cache) the secret come from the process's
    environment."""
    monkeypatch.setenv(TIERS_ENV_VAR, f"memory fs:{tmp_path}")
    monkeypatch.setenv(ENV_VAR, SECRET.decode())
    cache = from_specs()
    assert [type(t) for t in cache.tiers] == [MemoryTier, FileSystemTier]


@pytest.mark.parametrize(
    ("specs", "environ", "fragment"),
    [
        (None, {}, "$TIERED_BCCACHE_TIERS: no tier spec given"),
        (None, {TIERS_ENV_VAR: "   "}, "$TIERED_BCCACHE_TIERS: no tier spec given"),
        ([], {}, "specs: no tier spec given"),
        (["memory", "redis:oops"], {}, "tier 'redis:oops'"),
        (None, {TIERS_ENV_VAR: "memory bogus:1"}, "tier 'bogus:1'"),
    ],
)
def test_from_specs_names_what_is_wrong(
    specs: list[str] | None, environ: dict[str, str], fragment: str
) -> None:
    """A missing list or a wrong spec is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        from_specs(specs, environ=environ, secret=SECRET)
    assert fragment in str(info.value)


def test_from_specs_is_exported_by_the_package() -> None:
    """tiered_bccache.from_specs is the factory module's function."""
    import tiered_bccache

    assert tiered_bccache.from_specs is from_specs


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("redis:localhost:6379", "expected redis://HOST:PORT/DB"),
        ("redis+cluster://", "expected redis+cluster://HOST:PORT"),
        ("redis+cluster://localhost", "servers"),
        ("redis://localhost;pool=3", "unknown option"),
        ("rediss://h:1/0;timeout=-1", "timeout"),
        ("nosuch:thing", "unknown kind 'nosuch'"),
        ("memory:0", "max_entries: '0' is not a positive integer"),
        ("memory:size=3", "unknown option 'size'"),
        ("memory:bytes=lots", "'lots' is not a size"),
        ("fs:/tmp/x,max_bytes=0", "must be a whole, positive number"),
        ("memcached:", "expected memcached:HOST:PORT"),
        ("memcached:localhost", "'localhost' is not 'host:port'"),
        ("memcached:127.0.0.1:99999", "out of range"),
        ("memcached:127.0.0.1:11211;prefix=has space", "prefix must be"),
        ("memcached:127.0.0.1:11211;ttl=3", "expected ;prefix=NAME"),
    ],
)
def test_bad_specs_raise_spec_error_quoting_the_spec(spec: str, fragment: str) -> None:
    """Every malformed spec is a SpecError that quotes the whole spec and says what is wrong."""
    with pytest.raises(SpecError) as info:
        parse_tier(spec)
    assert repr(spec) in str(info.value)
    assert fragment in str(info.value)


TYPOS = {
    "fs option misspelt": ("fs:{tmp}/app,maxbytes=1G", "unknown option 'maxbytes'"),
    "fs option unknown": ("fs:{tmp}/app,max_bytes=1G,mode=0700", "unknown option 'mode'"),
    "fs size malformed": ("fs:{tmp}/app,max_bytes=lots", "is not a size"),
    "memory option unknown": ("memory:512,foo=1", "unknown option 'foo'"),
    "memcached URL without host": ("memcached://", "memcached://HOST:PORT"),
    "memcached bad port": ("memcached:127.0.0.1:99999", "out of range"),
    "memcached option unknown": ("memcached:127.0.0.1:11211;prefx=a", "unknown option"),
    "redis db not a number": ("redis://localhost:6379/abc", "database 'abc' is not a number"),
    "redis port out of range": ("redis://localhost:70000/0", "out of range"),
    "redis port not a number": ("redis://localhost:http/0", "redis://HOST:PORT/DB"),
    "redis no host": ("redis:///0", "no host"),
    "redis unix db not a number": ("redis+unix:///tmp/r.sock?db=z", "database 'z'"),
    "redis timeout not a number": ("redis://localhost:6379/0;timeout=soon", "seconds"),
    "unknown kind lists every form": ("mongo://x", "rediss://HOST:PORT/DB"),
}


@pytest.mark.parametrize(("spec", "message"), TYPOS.values(), ids=TYPOS)
def test_spec_typos_are_configuration_errors_that_quote_the_spec(
    spec: str, message: str, tmp_path: Path
) -> None:
    """A typo never gives a working but wrong configuration, nor a bare ValueError: a
    SpecError (a ConfigurationError, exit status 2 in the command line) quoting the spec
    and saying what was expected."""
    spec = spec.format(tmp=tmp_path)
    with pytest.raises(SpecError) as info:
        parse_tier(spec)
    assert repr(spec) in str(info.value) and message in str(info.value)
    assert not (tmp_path / "app,maxbytes=1G").exists()


def test_memcached_url_form_names_the_server(tmp_path: Path) -> None:
    """memcached://HOST:PORT, as URLs are written, means memcached:HOST:PORT (not a unix
    socket named //HOST:PORT)."""
    tier, plain = (
        parse_tier("memcached://127.0.0.1:11211;prefix=u"),
        parse_tier("memcached:127.0.0.1:11211;prefix=u"),
    )
    assert isinstance(tier, MemcachedTier) and isinstance(plain, MemcachedTier)
    assert tier.name == plain.name == "memcached:127.0.0.1:11211"


def test_a_spec_typo_exits_2_in_the_command_line(tmp_path: Path) -> None:
    """The command line reports a configuration error as one line, with status 2."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "tiered_bccache", "stats", "--tier", "redis://localhost:6379/abc"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "database 'abc' is not a number" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
