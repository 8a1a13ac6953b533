"""Fixtures for real parts: memcached and redis-server processes on loopback (started
through :mod:`tiered_bccache.benchkit.servers`, as the benchmarks start theirs), private
key prefixes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tiered_bccache.benchkit.servers import (
    MemcachedServer,
    RedisServer,
    create_redis_cluster,
    free_cluster_port,
    free_port,
    memcached_binary,
    redis_binary,
    redis_cluster_args,
    running,
)

__all__ = ["SECRET", "MemcachedServer", "RedisServer", "free_port"]

#: tests/tools needs the real tools, which live in .venv-tools (scripts/test.sh runs it
#: there, with this variable set).
collect_ignore = [] if os.environ.get("TIERED_BCCACHE_TOOL_TESTS") else ["tools"]

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SECRET = b"0123456789abcdef-test-secret-key"


def missing(message: str) -> None:
    """Skip a test whose server or extra is not installed; under CI=true, where
    scripts/setup.sh installs every one, fail it instead: a test that skips in CI does
    not exist."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message + "; under CI=true this is a failure, not a skip")
    pytest.skip(message)


def require_extra(module: str, extra: str) -> None:
    """Go on only when ``module`` (from the ``extra`` extra) is installed."""
    if importlib.util.find_spec(module) is None:
        missing(f"{module} is not installed (pip install 'tiered-bccache[{extra}]')")


def _require(binary: str | None, what: str) -> None:
    """Go on only when the server ``what`` is installed."""
    if binary is None:
        missing(f"{what} is not installed (apt-get install {what})")


def _running_servers(count: int, extra_args: list[str]) -> Iterator[list[MemcachedServer]]:
    _require(memcached_binary(), "memcached")
    with running([MemcachedServer(free_port(), list(extra_args)) for _ in range(count)]) as s:
        yield s


def _running_server(extra_args: list[str] | None = None) -> Iterator[MemcachedServer]:
    for servers in _running_servers(1, extra_args or []):
        yield servers[0]


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    """One memcached for the session; tests isolate themselves with ``mc_prefix``."""
    yield from _running_server()


@pytest.fixture
def memcached_private() -> Iterator[MemcachedServer]:
    """A memcached of the test's own, for tests that kill, pause or restart it."""
    yield from _running_server()


@pytest.fixture(scope="session")
def memcached_big() -> Iterator[MemcachedServer]:
    """A memcached with a 2 MB item size (``-I 2m``), for values over the default 1 MB."""
    yield from _running_server(["-I", "2m"])


@pytest.fixture
def memcached_cluster() -> Iterator[list[MemcachedServer]]:
    """Three memcached processes of the test's own, which it may kill, pause or restart."""
    yield from _running_servers(3, [])


@pytest.fixture
def mc_prefix() -> str:
    """A key prefix no other test uses, so tests can share the session's memcached."""
    return "t" + uuid.uuid4().hex[:12]


# -- redis ------------------------------------------------------------------------------


def _running_redis(
    tmp_path_factory: pytest.TempPathFactory, count: int, extra_args: list[str]
) -> Iterator[list[RedisServer]]:
    _require(redis_binary() and shutil.which("redis-cli"), "redis-server")
    cluster = "--cluster-enabled" in extra_args
    servers = []
    for _ in range(count):
        port = free_cluster_port() if cluster else free_port()
        directory = str(tmp_path_factory.mktemp(f"redis-{port}"))
        servers.append(RedisServer(port, list(extra_args), directory=directory))
    with running(servers) as started:
        yield started


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves with ``mc_prefix``."""
    for servers in _running_redis(tmp_path_factory, 1, []):
        yield servers[0]


@pytest.fixture
def redis_private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill, pause or restart it."""
    for servers in _running_redis(tmp_path_factory, 1, []):
        yield servers[0]


@pytest.fixture
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A real Redis Cluster of the test's own: 3 masters and 3 replicas (the first three
    servers are the masters), created with ``redis-cli --cluster create``."""
    for servers in _running_redis(tmp_path_factory, 6, redis_cluster_args()):
        create_redis_cluster(servers)
        yield servers
