"""A fleet of real processes sharing memcached's namespace generation: four processes
recovering from a foreign value at once converge on one generation; on a cluster of
three, the death of the node the generation key hashes to splits nobody, and a process
started afterwards hits every entry the surviving nodes hold.

Real memcached processes and real Python subprocesses; no mocks. Each subprocess builds
its tier on request and answers on stdout, so the test can line them up on one command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.rendezvous import RendezvousHash

from tests.conftest import MemcachedServer
from tests.tiers.test_memcached import direct
from tests.tiers.test_memcached_generation import FOREIGN_GENERATIONS, is_our_shape
from tiered_bccache import MemcachedTier

ROOT = Path(__file__).resolve().parents[2]

#: A process of the fleet: reads one JSON command a line, answers one JSON line. ``new``
#: builds a fresh tier (a process that has just started), ``generation`` returns the
#: namespace generation (re-read from the servers every ``generation_ttl``), ``get``
#: looks keys up and reports hits, misses and errors.
WORKER = r"""
import json, sys
from tiered_bccache import MemcachedTier

servers, prefix = json.loads(sys.argv[1]), sys.argv[2]
tier = None
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    try:
        if command["op"] == "new":
            tier = MemcachedTier(
                servers,
                prefix=prefix,
                timeout=1.0,
                connect_timeout=1.0,
                generation_ttl=command.get("generation_ttl", 2.0),
            )
            answer = {}
        elif command["op"] == "generation":
            answer = {"generation": tier.generation()}
        else:
            hits, misses, errors = [], [], []
            for key in command["keys"]:
                try:
                    (misses if tier.get(key) is None else hits).append(key)
                except Exception:
                    errors.append(key)
            answer = {"hits": hits, "misses": misses, "errors": errors}
        answer["events"] = dict(getattr(tier, "events", {}))
    except Exception as exc:
        answer = {"error": repr(exc)}
    print(json.dumps(answer), flush=True)
"""


class Fleet:
    """Worker processes, each talking to the same servers under the same prefix."""

    def __init__(self, servers: str | list[str], prefix: str, count: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(servers), prefix],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for _ in range(count)
        ]
        for answer in self._read_all():
            assert answer == {"ready": True}, answer

    def _read_all(self) -> list[dict[str, Any]]:
        answers = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, f"worker {process.pid} exited with {process.wait(timeout=10)}"
            answers.append(json.loads(line))
        return answers

    def all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        """Send ``command`` to every worker before reading any answer, so that they run
        it at the same moment, and return the answers."""
        line = json.dumps(command) + "\n"
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line)
            process.stdin.flush()
        answers = self._read_all()
        for answer in answers:
            assert "error" not in answer, answer
        return answers

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=30)
            assert process.stdout is not None
            process.stdout.close()


@contextmanager
def fleet(servers: str | list[str], prefix: str, count: int) -> Iterator[Fleet]:
    workers = Fleet(servers, prefix, count)
    try:
        yield workers
    finally:
        workers.close()


def stored_generations(servers: Sequence[MemcachedServer], prefix: str) -> list[bytes | None]:
    out: list[bytes | None] = []
    for server in servers:
        with direct(server) as raw:
            out.append(raw.get(f"{prefix}:gen"))
    return out


@pytest.mark.parametrize("nodes", [1, 3])
def test_four_processes_recovering_at_once_converge_on_one_generation(
    memcached_cluster: list[MemcachedServer], mc_prefix: str, nodes: int
) -> None:
    """Four freshly started processes that find a foreign value at the generation key
    at the same moment (one server, or every node of three) all end up using one
    generation, the one every node then holds; for every kind of foreign value."""
    servers = memcached_cluster[:nodes]
    addresses = [s.address for s in servers]
    with fleet(addresses, mc_prefix, 4) as workers:
        for value in FOREIGN_GENERATIONS.values():
            if len(value) > 1000:
                continue  # over the default item size; covered on one server elsewhere
            for server in servers:
                with direct(server) as raw:
                    assert raw.set(f"{mc_prefix}:gen", value, noreply=False)
            workers.all({"op": "new"})
            answers = workers.all({"op": "generation"})
            generations = {a["generation"] for a in answers}
            assert len(generations) == 1, (value, answers)
            (agreed,) = generations
            assert stored_generations(servers, mc_prefix) == [agreed.encode()] * nodes
            assert is_our_shape(agreed.encode())
            assert sum(a["events"]["generation_replaced"] for a in answers) >= nodes


def _homes(servers: list[MemcachedServer], tier: MemcachedTier, keys: list[str]) -> list[int]:
    """The index of the node holding each key."""
    homes = []
    for key in keys:
        where = []
        for n, server in enumerate(servers):
            with direct(server) as raw:
                if raw.get(tier.key(key)) is not None:
                    where.append(n)
        assert len(where) == 1, (key, where)
        homes.append(where[0])
    return homes


@pytest.mark.parametrize("victim", ["generation_node", "other_node"])
def test_processes_before_and_after_a_node_death_share_the_generation_and_its_entries(
    memcached_cluster: list[MemcachedServer], mc_prefix: str, victim: str
) -> None:
    """On three nodes with 200 entries, the node the generation key hashes to (or
    another) is killed: a process that was running and one started afterwards read the
    same generation, and the new process hits every entry held by the two survivors
    (at most one error: the first call to the dead node, after which it is dropped)."""
    addresses = [s.address for s in memcached_cluster]
    keys = [f"template-{i}" for i in range(200)]
    with fleet(addresses, mc_prefix, 1) as running:
        running.all({"op": "new", "generation_ttl": 0})
        writer = MemcachedTier(addresses, prefix=mc_prefix, timeout=1.0, connect_timeout=1.0)
        for key in keys:
            writer.set(key, key.encode())
        homes = _homes(memcached_cluster, writer, keys)
        home = addresses.index(RendezvousHash(nodes=addresses).get_node(f"{mc_prefix}:gen"))
        dead = home if victim == "generation_node" else (home + 1) % 3
        (before,) = running.all({"op": "generation"})
        memcached_cluster[dead].stop()

        with fleet(addresses, mc_prefix, 1) as started_after:
            started_after.all({"op": "new"})
            (after,) = started_after.all({"op": "generation"})
            (looked,) = started_after.all({"op": "get", "keys": keys})
        (again,) = running.all({"op": "generation"})  # re-read: its generation_ttl is 0

    assert after["generation"] == before["generation"] == again["generation"]
    survivors = {key for key, node in zip(keys, homes, strict=True) if node != dead}
    assert set(looked["hits"]) == survivors
    assert len(looked["errors"]) <= 1
