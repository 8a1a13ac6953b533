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
