"""Fixtures for real parts: memcached servers on loopback, private directories."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SECRET = b"0123456789abcdef-test-secret-key"


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memcached_binary() -> str | None:
    return shutil.which("memcached") or (
        "/usr/bin/memcached" if os.path.exists("/usr/bin/memcached") else None
    )


@dataclass
class MemcachedServer:
    """A real memcached process on a loopback port, which tests may stop, pause, restart."""

    port: int
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = memcached_binary()
        assert binary is not None
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.process = subprocess.Popen(args + self.extra_args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"version\r\n")
                    if s.recv(64).startswith(b"VERSION"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"memcached did not start on port {self.port}")

    def stop(self) -> None:
        """Kill the server (connections are refused until it restarts)."""
        if self.process is not None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        """Kill and start again on the same port: an empty cache."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers. Returns once
        the kernel has stopped the process (a signal takes effect asynchronously)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = f"/proc/{self.process.pid}/stat"
        if not os.path.exists(stat):
            return
        deadline = time.monotonic() + 5
        for _ in range(5000):
            with open(stat) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T" or time.monotonic() > deadline:
                    return
            time.sleep(0.001)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def keys(self) -> list[str]:
        """Every key the server holds (memcached 1.6 ``lru_crawler metadump all``)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"lru_crawler metadump all\r\n")
            data = b""
            deadline = time.monotonic() + 5
            while not data.endswith(b"END\r\n") and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        out = []
        for line in data.decode().splitlines():
            if line.startswith("key="):
                from urllib.parse import unquote

                out.append(unquote(line.split()[0][4:]))
        return out


def _require_binary() -> None:
    if memcached_binary() is None:
        message = "memcached is not installed (apt-get install memcached)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + "; under CI=true this is a failure, not a skip")
        pytest.skip(message)


def _running_servers(count: int, extra_args: list[str]) -> Iterator[list[MemcachedServer]]:
    _require_binary()
    servers: list[MemcachedServer] = []
    try:
        for _ in range(count):
            server = MemcachedServer(free_port(), list(extra_args))
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


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


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def _require_redis() -> None:
    if redis_binary() is None or shutil.which("redis-cli") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + "; under CI=true this is a failure, not a skip")
        pytest.skip(message)


def _ping(port: int, timeout: float = 0.2) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


@dataclass
class RedisServer:
    """A real redis-server on a loopback port, no persistence, which tests may stop,
    pause, restart. ``directory`` holds what a cluster node writes (its nodes.conf)."""

    port: int
    directory: str
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_binary()
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self.directory, "--protected-mode", "no"]
        self.process = subprocess.Popen(args + self.extra_args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if _ping(self.port).startswith(b"+PONG"):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill the server (connections are refused until it restarts)."""
        if self.process is not None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        """Kill and start again on the same port: an empty server (nothing is saved)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = f"/proc/{self.process.pid}/stat"
        deadline = time.monotonic() + 5
        for _ in range(5000):
            if not os.path.exists(stat) or time.monotonic() > deadline:
                return
            with open(stat) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def cli(self, *args: str, timeout: float = 10) -> str:
        """Run ``redis-cli -p PORT ARGS...`` and return its output."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout.decode("utf-8", "replace")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    for _ in range(1000):
        port = free_port()
        if port + 10000 < 65536 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _running_redis(
    tmp_path_factory: pytest.TempPathFactory, count: int, extra_args: list[str]
) -> Iterator[list[RedisServer]]:
    _require_redis()
    servers: list[RedisServer] = []
    cluster = "--cluster-enabled" in extra_args
    try:
        for _ in range(count):
            port = free_cluster_port() if cluster else free_port()
            directory = str(tmp_path_factory.mktemp(f"redis-{port}"))
            server = RedisServer(port, directory, list(extra_args))
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


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


#: How long a cluster node may be unreachable before its replica takes over: short, so a
#: failover test takes seconds, long enough that a loaded CI machine does not flap.
CLUSTER_NODE_TIMEOUT_MS = 1000


@pytest.fixture
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A real Redis Cluster of the test's own: 3 masters and 3 replicas (the first three
    servers are the masters), created with ``redis-cli --cluster create``."""
    args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(CLUSTER_NODE_TIMEOUT_MS),
        "--cluster-require-full-coverage",
        "no",
        # A replica that never finished its first sync cannot take over: start the sync
        # at once instead of after diskless sync's default 5 s delay.
        "--repl-diskless-sync-delay",
        "0",
    ]
    for servers in _running_redis(tmp_path_factory, 6, args):
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(s.address for s in servers)]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [s.cli("cluster", "info") for s in servers]
            links = [s.cli("info", "replication") for s in servers]
            replicas = [r for r in links if "role:slave" in r]
            if (
                all("cluster_state:ok" in state for state in states)
                and len(replicas) == 3
                and all("master_link_status:up" in r for r in replicas)
            ):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the Redis Cluster was not ok and replicated within 30 s")
        yield servers
