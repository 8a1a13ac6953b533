"""Real memcached and redis-server processes on free loopback ports: the one way the
benchmarks, ``tiered-bccache bench`` and the test fixtures run a server.

A server object starts, stops, pauses (SIGSTOP: the kernel accepts connections, nothing
answers), resumes and restarts its process; the context managers start one for the
duration of a ``with`` block, or yield None when the binary is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import unquote

__all__ = [
    "CLUSTER_NODE_TIMEOUT_MS",
    "MemcachedServer",
    "RedisServer",
    "create_redis_cluster",
    "free_cluster_port",
    "free_port",
    "memcached_binary",
    "private_memcached",
    "private_memcached_process",
    "private_redis",
    "private_redis_process",
    "redis_binary",
    "redis_cluster_args",
    "running",
]

#: How long a cluster node may be unreachable before its replica takes over: short, so a
#: failover takes seconds, long enough that a loaded CI machine does not flap.
CLUSTER_NODE_TIMEOUT_MS = 1000


def free_port() -> int:
    """A TCP port nobody listens on right now, on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _binary(name: str) -> str | None:
    # Debian installs the servers in /usr/bin, which a minimal PATH may leave out.
    path = f"/usr/bin/{name}"
    return shutil.which(name) or (path if os.path.exists(path) else None)


def memcached_binary() -> str | None:
    """The ``memcached`` executable, or None when it is not installed."""
    return _binary("memcached")


def redis_binary() -> str | None:
    """The ``redis-server`` executable, or None when it is not installed."""
    return _binary("redis-server")


def _ask(port: int, command: bytes, timeout: float = 0.2) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command)
        return s.recv(64)


@dataclass
class _Server:
    """A server process on a loopback port; subclasses say how to run and ask it."""

    port: int
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    #: The executable (default: the one on PATH, or in /usr/bin).
    binary: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start the process; returns once it answers (RuntimeError after 10 s)."""
        self.process = subprocess.Popen(
            self._argv() + self.extra_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._answers():
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self._argv()[0]} did not start on port {self.port}")

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
        """SIGSTOP: connections are accepted by the kernel, nothing answers. Returns once
        the kernel has stopped the process (a signal takes effect asynchronously)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        stat = f"/proc/{self.process.pid}/stat"
        deadline = time.monotonic() + 5
        while os.path.exists(stat) and time.monotonic() < deadline:
            with open(stat) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT: a paused server answers again."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


@dataclass
class MemcachedServer(_Server):
    """A real memcached on a loopback port (64 MB unless ``extra_args`` say otherwise)."""

    def _argv(self) -> list[str]:
        binary = self.binary or memcached_binary()
        if binary is None:
            raise RuntimeError("memcached is not installed (apt-get install memcached)")
        args = [binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        # memcached refuses to run as root without being told which user to be.
        return args + ["-u", "root"] if os.geteuid() == 0 else args

    def _answers(self) -> bool:
        return _ask(self.port, b"version\r\n").startswith(b"VERSION")

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
        return [
            unquote(line.split()[0][4:])
            for line in data.decode().splitlines()
            if line.startswith("key=")
        ]


@dataclass
class RedisServer(_Server):
    """A real redis-server on a loopback port, no persistence. ``directory`` holds what a
    cluster node writes (its nodes.conf)."""

    directory: str = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        binary = self.binary or redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--protected-mode", "no"]
        return args + ["--dir", self.directory] if self.directory else args

    def _answers(self) -> bool:
        return _ask(self.port, b"PING\r\n").startswith(b"+PONG")

    def cli(self, *args: str, timeout: float = 10) -> str:
        """Run ``redis-cli -p PORT ARGS...`` and return its output."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout.decode("utf-8", "replace")


S = TypeVar("S", bound=_Server)


@contextmanager
def running(servers: Sequence[S]) -> Iterator[list[S]]:
    """Start ``servers`` one after another; stop every one started when the block ends
    (or when a later one fails to start)."""
    started: list[S] = []
    try:
        for server in servers:
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.stop()


@contextmanager
def private_memcached_process(
    binary: str | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]] | None]:
    """Like :func:`private_memcached`, yielding the address and the process (for fault
    benchmarks that stop and continue it). ``binary`` defaults to the one on PATH."""
    if (binary or memcached_binary()) is None:
        yield None
        return
    server = MemcachedServer(free_port(), ["-m", "256"], binary=binary)
    with running([server]):
        assert server.process is not None
        yield server.address, server.process


@contextmanager
def private_memcached(binary: str | None = None) -> Iterator[str | None]:
    """Start a memcached of our own on a free loopback port for the duration; yields its
    address, or None when no ``memcached`` binary is installed."""
    with private_memcached_process(binary) as started:
        yield None if started is None else started[0]


@contextmanager
def private_redis_process(
    binary: str | None = None, *, extra_args: Sequence[str] = (), port: int | None = None
) -> Iterator[RedisServer | None]:
    """Like :func:`private_redis`, yielding the server (for the fault figures, which stop
    and kill it), with its files in a temporary directory removed afterwards."""
    if (binary or redis_binary()) is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="tbc-redis-") as work:
        server = RedisServer(port or free_port(), list(extra_args), binary=binary, directory=work)
        with running([server]):
            yield server


@contextmanager
def private_redis(binary: str | None = None) -> Iterator[str | None]:
    """Start a redis-server of our own on a free loopback port (no persistence) for the
    duration; yields its ``host:port``, or None when no ``redis-server`` is installed."""
    with private_redis_process(binary) as server:
        yield None if server is None else server.address


def redis_cluster_args() -> list[str]:
    """The options of a cluster node: fast failover, and writes to the slots still
    served while one master is down."""
    return [
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


def create_redis_cluster(servers: Sequence[RedisServer], *, timeout: float = 30) -> None:
    """Make a Redis Cluster of six started nodes (``redis_cluster_args()``): the first
    three are the masters, one replica each; returns once the cluster is ok and every
    replica is in sync (RuntimeError after ``timeout`` seconds)."""
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(s.address for s in servers)]
        + ["--cluster-replicas", "1", "--cluster-yes"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [s.cli("cluster", "info") for s in servers]
        links = [s.cli("info", "replication") for s in servers]
        replicas = [r for r in links if "role:slave" in r]
        if (
            all("cluster_state:ok" in state for state in states)
            and len(replicas) == len(servers) // 2
            and all("master_link_status:up" in r for r in replicas)
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the Redis Cluster was not ok and replicated within {timeout:g} s")
