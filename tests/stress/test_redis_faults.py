"""A Redis that is killed, SIGSTOPped or restarted, and a Redis Cluster that loses a
master: pages keep rendering right, failures are counted, the breaker keeps a hung
server from costing a timeout per lookup, and the tier is used again once it is back.

Real servers on loopback. Timing is asserted only as generous upper bounds that prove
nothing hangs; every loop is bounded in count and in time."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.conftest import SECRET, RedisServer
from tests.stress import rigs
from tests.stress.rigs import Corpus, build_corpus
from tiered_bccache import RedisTier

COOLDOWN = 1.0
#: How long the tests wait for a tier to be used again ("within a few seconds").
RECOVERY_LIMIT = 15.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The corpus and what plain Jinja renders each template to."""
    return build_corpus(tmp_path_factory, seed=7)


class Rig(rigs.Rig):
    """Memory over Redis, and an environment with no template cache of its own."""

    def wait_until_hits(self) -> float:
        """Render cold again and again until the tier serves a hit without an error;
        return the seconds that took (bounded in rounds and time)."""
        started = time.monotonic()
        for _ in range(2000):
            before = self.stats()
            self.cold_round(self.corpus.names[:4])
            after = self.stats()
            if after.hits > before.hits and after.errors == before.errors:
                return time.monotonic() - started
            if time.monotonic() - started > RECOVERY_LIMIT:
                break
            time.sleep(0.02)
        raise AssertionError(f"no Redis hit within {RECOVERY_LIMIT} s")


def make_rig(
    corpus: Corpus, target: str | list[str], prefix: str | None = None, **options: float
) -> Rig:
    """A rig on ``target`` under ``prefix`` (default: a new one)."""
    prefix = prefix or "f" + uuid.uuid4().hex[:10]
    tier = RedisTier(target, prefix=prefix, **options)  # type: ignore[arg-type]
    return Rig.over(tier, corpus, secret=SECRET, breaker_cooldown=COOLDOWN)


def test_killed_redis_is_skipped_and_used_again_after_a_restart(
    corpus: Corpus, redis_private: RedisServer
) -> None:
    """A killed server: renders stay right, errors are counted and the breaker opens;
    after a restart (empty) the tier is refilled and serves hits again."""
    rig = make_rig(corpus, redis_private.url)
    rig.cold_round()
    rig.cold_round()
    assert rig.stats().hits >= len(corpus.names)
    redis_private.stop()
    started = time.monotonic()
    for _ in range(3):
        rig.cold_round()
    assert time.monotonic() - started < 10
    assert rig.stats().errors >= 1
    assert rig.stats().breaker in ("open", "half-open")
    redis_private.start()
    assert rig.wait_until_hits() < RECOVERY_LIMIT


def test_sigstopped_redis_costs_bounded_time_then_is_skipped(
    corpus: Corpus, redis_private: RedisServer
) -> None:
    """A hung server (SIGSTOP): the first lookup pays one timeout, the breaker opens,
    the rest of a cold load compiles without waiting; after SIGCONT hits resume."""
    rig = make_rig(corpus, redis_private.url)
    rig.cold_round()
    redis_private.pause()
    try:
        seconds = rig.cold_round()
        # 16 templates; one 50 ms timeout per cool-down, the rest compiles. A wait per
        # lookup would be 16 x 50 ms at least, and redis-py's defaults would never end.
        assert seconds < 5
        # The first timeout opens the breaker at once: one timeout, not one per call.
        errors = rig.stats().errors
        assert errors == 1
        rig.cold_round()
        assert rig.stats().errors - errors <= 1
    finally:
        redis_private.resume()
    assert rig.wait_until_hits() < RECOVERY_LIMIT


def test_restarted_redis_gets_the_processes_generation_back(
    corpus: Corpus, redis_private: RedisServer
) -> None:
    """A restart loses the generation key; the running process's next write puts it
    back, so a process starting afterwards shares its namespace and hits."""
    rig = make_rig(corpus, redis_private.url, generation_ttl=0)
    rig.cold_round()
    generation = rig.tier.generation()
    redis_private.restart()
    raw = redis.Redis(port=redis_private.port, socket_timeout=2)
    started = time.monotonic()
    for _ in range(500):  # bounded: the breaker may be open for a cool-down
        rig.cold_round(corpus.names[:2])
        if raw.get(f"{rig.tier.prefix}:gen") == generation.encode():
            break
        assert time.monotonic() - started < RECOVERY_LIMIT, "the generation never came back"
        time.sleep(0.02)
    raw.close()
    assert rig.tier.generation() == generation
    newcomer = make_rig(corpus, redis_private.url, rig.tier.prefix)
    assert newcomer.tier.generation() == generation
    newcomer.cold_round(corpus.names[:2])
    assert newcomer.cache.stats().compiles == 0


# -- Redis Cluster ---------------------------------------------------------------------


def masters(servers: list[RedisServer]) -> list[RedisServer]:
    """The servers that are masters now, by CLUSTER NODES of a live one."""
    live = next(s for s in servers if s.process is not None)
    ports = {
        int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
        for line in live.cli("cluster", "nodes").splitlines()
        if "master" in line.split()[2] and "fail" not in line.split()[2]
    }
    return [s for s in servers if s.port in ports]


@pytest.mark.slow
def test_cluster_master_killed_mid_run_no_error_reaches_a_render_and_hits_resume(
    corpus: Corpus, redis_cluster: list[RedisServer]
) -> None:
    """Three masters with a replica each: a tier over the cluster serves hits; a master
    killed mid-run costs no exception in any render, and hits resume after its replica
    takes over (the generation key survives whichever master held it)."""
    rig = make_rig(corpus, [redis_cluster[0].address, redis_cluster[1].address])
    rig.cold_round()
    rig.cold_round()
    assert rig.stats().hits >= len(corpus.names) and rig.stats().errors == 0
    generation = rig.tier.generation()
    node = rig.tier.client.get_node_from_key(rig.tier._gen_key)
    owner = next(s for s in masters(redis_cluster) if s.port == int(node.port))
    owner.stop()  # the master holding the generation key
    started = time.monotonic()
    renders = 0
    for _ in range(3000):
        rig.cold_round(corpus.names[:4])  # an exception here fails the test
        renders += 4
        stats = rig.stats()
        if (
            time.monotonic() - started > 1
            and stats.breaker == "closed"
            and rig.cache.stats().tiers[1].hits > 0
        ):
            before = rig.stats()
            rig.cold_round(corpus.names[:4])
            after = rig.stats()
            if after.hits - before.hits == 4 and after.errors == before.errors:
                break
        if time.monotonic() - started > 30:
            raise AssertionError(f"hits did not resume within 30 s ({stats})")
        time.sleep(0.02)
    assert rig.tier.generation() == generation
    assert renders > 0
