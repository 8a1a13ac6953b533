"""A memcached that is refused, hung, slow, restarted, or one node of three dead: pages
keep rendering right, the failures are counted, the breaker keeps a broken server from
costing a timeout per lookup, and the tier is used again soon after the server is back.

Real servers on loopback (``MemcachedServer``); a hang is SIGSTOP (the kernel still
accepts connections, nothing answers), a slow reply is SIGSTOP then SIGCONT from a
thread. Timing is never asserted as speed: counts are, and wall-clock only as generous
upper bounds that prove nothing hangs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment
from pymemcache.client.rendezvous import RendezvousHash

from tests.conftest import SECRET, MemcachedServer, free_port
from tests.stress import rigs
from tests.stress.rigs import Corpus, build_corpus
from tests.tiers.test_memcached import direct
from tests.tiers.test_memcached_generation import FOREIGN_GENERATIONS
from tiered_bccache import MemcachedTier, MemoryTier, TieredBytecodeCache, TierError, TierStats

TIMEOUT = 0.05
#: Long enough that "open" is still "open" when a loaded machine gets round to looking,
#: short enough that recovery is quick.
COOLDOWN = 1.0
THRESHOLD = 2
#: How long the tests wait for a tier to be used again ("within a few seconds").
RECOVERY_LIMIT = 10.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The corpus and what plain Jinja renders each template to."""
    return build_corpus(tmp_path_factory, seed=5)


class Rig(rigs.Rig):
    """A two-tier cache (memory over memcached) and an environment using it."""

    def used_after(self, before: TierStats, after: TierStats) -> bool:
        """Whether the tier answered calls between two snapshots without failing."""
        calls = (after.hits + after.misses + after.writes) - (
            before.hits + before.misses + before.writes
        )
        return calls > 0 and after.errors == before.errors

    def wait_until_used(self) -> float:
        """Render one template cold again and again until the tier answers without an
        error; return the seconds that took (bounded in rounds and time)."""
        started = time.monotonic()
        for _ in range(500):
            before = self.stats()
            self.cold_round(self.corpus.names[:1])
            if self.used_after(before, self.stats()):
                return time.monotonic() - started
            if time.monotonic() - started > RECOVERY_LIMIT:
                break
            time.sleep(0.02)
        raise AssertionError(f"the tier was not used again within {RECOVERY_LIMIT} s")


def make_rig(
    corpus: Corpus,
    servers: str | list[str],
    prefix: str,
    *,
    cooldown: float = COOLDOWN,
    strict: bool = False,
    threshold: int = THRESHOLD,
    dead_timeout: float = 10.0,
    generation_ttl: float = 2.0,
    timeout: float = TIMEOUT,
) -> Rig:
    tier = MemcachedTier(
        servers,
        prefix=prefix,
        timeout=timeout,
        connect_timeout=timeout,
        dead_timeout=dead_timeout,
        generation_ttl=generation_ttl,
    )
    return Rig.over(
        tier,
        corpus,
        secret=SECRET,
        strict=strict,
        breaker_threshold=threshold,
        breaker_cooldown=cooldown,
    )


def probes(elapsed: float, cooldown: float = COOLDOWN) -> int:
    """The most failed calls to a server that stays down for ``elapsed`` seconds, once
    the breaker is open: the one that opened it, then one probe per cool-down."""
    return int(elapsed / cooldown) + 1


def _process_state(server: MemcachedServer) -> str:
    """The kernel's one-letter state of the server process ("T" when stopped)."""
    assert server.process is not None
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _stop(server: MemcachedServer) -> None:
    """SIGSTOP the server and wait until the kernel has stopped it."""
    assert server.process is not None and server.process.poll() is None, "server not running"
    server.pause()
    deadline = time.monotonic() + 5
    for _ in range(5000):
        if _process_state(server) == "T" or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    assert _process_state(server) == "T", "the server did not stop"


@contextmanager
def hung(server: MemcachedServer) -> Iterator[None]:
    """SIGSTOP the server for the block, and make sure it really stayed stopped: a stop
    takes effect asynchronously, and another engineer's benchmark that finds "its"
    memcached by listing every memcached on the host could continue ours."""
    try:
        _stop(server)
        yield
        assert _process_state(server) == "T", "someone else sent the server SIGCONT"
    finally:
        server.resume()


@pytest.fixture
def paused(memcached_private: MemcachedServer) -> Iterator[MemcachedServer]:
    """The private server, which the test may SIGSTOP: resumed afterwards whatever
    happened, so that stopping it at teardown cannot hang."""
    try:
        yield memcached_private
    finally:
        memcached_private.resume()


def test_refused_server_is_skipped_after_the_threshold_and_used_again_when_back(
    memcached_private: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """A killed server (connections refused) costs at most ``breaker_threshold``
    errors before the breaker opens; while open, lookups skip the tier and make no call;
    pages render right throughout; and once the server is back (empty) the same cache
    uses it again within a few seconds and refills it."""
    rig = make_rig(corpus, memcached_private.address, mc_prefix)
    rig.cold_round()
    warm = rig.stats()
    assert warm.errors == 0 and warm.writes == len(corpus.names)

    memcached_private.stop()
    elapsed = rig.cold_round()
    down = rig.stats()
    assert 1 <= down.errors <= THRESHOLD + probes(elapsed) - 1
    assert down.breaker == "open"
    assert down.skipped > 0

    # Later lookups skip the tier: no call is made, so no refusal or timeout is paid,
    # but for one probe per cool-down (every call to a dead server is an error).
    elapsed = rig.cold_round()
    skipping = rig.stats()
    calls = skipping.errors - down.errors
    assert calls <= probes(elapsed)
    assert skipping.skipped - down.skipped >= len(corpus.names) - calls

    memcached_private.start()
    rig.wait_until_used()
    assert rig.stats().breaker == "closed"
    rig.cold_round()  # writes the entries the restarted server lost
    refilled = rig.stats()
    compiles = rig.cache.stats().compiles
    rig.cold_round()
    assert rig.stats().hits - refilled.hits == len(corpus.names)
    assert rig.cache.stats().compiles == compiles


def test_hung_server_costs_one_timeout_then_is_skipped_until_it_answers(
    paused: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """A hung server (SIGSTOP: connections accepted, nothing answers) costs one timeout,
    which opens the breaker at once; further lookups skip it at no timeout cost; pages
    render right; after SIGCONT the same cache is hitting it again within seconds."""
    rig = make_rig(corpus, paused.address, mc_prefix)
    rig.cold_round()
    with hung(paused):
        elapsed = rig.cold_round()
        stopped = rig.stats()
        assert 1 <= stopped.errors <= probes(elapsed)
        assert stopped.breaker == "open"
        assert stopped.skipped > 0
        elapsed = rig.cold_round()
        skipping = rig.stats()
        calls = skipping.errors - stopped.errors  # every call to it times out
        assert calls <= probes(elapsed)
        assert skipping.skipped - stopped.skipped >= len(corpus.names) - calls
        assert skipping.hits + skipping.misses == stopped.hits + stopped.misses
    rig.wait_until_used()
    before = rig.stats()
    compiles = rig.cache.stats().compiles
    rig.cold_round()  # the server kept its entries while stopped
    assert rig.stats().hits - before.hits == len(corpus.names)
    assert rig.cache.stats().compiles == compiles


@pytest.mark.parametrize(("threshold", "cooldown"), [(2, 0.3), (5, 0.3), (5, 30.0)])
def test_cold_loads_with_hung_server_pay_a_bounded_number_of_timeouts(
    paused: MemcachedServer, corpus: Corpus, mc_prefix: str, threshold: int, cooldown: float
) -> None:
    """Loading and rendering the corpus from cold, again and again for about a second,
    with memcached hung from the start, pays one timeout to open the breaker (a timeout
    opens it at once: the bound does not grow with ``breaker_threshold``) and at most one
    probe per cool-down after that, so at most 1 + elapsed / cooldown timeouts in all;
    with a 30 s cool-down, one timeout for everything."""
    rig = make_rig(corpus, paused.address, mc_prefix, cooldown=cooldown, threshold=threshold)
    rounds = 0
    with hung(paused):
        started = time.monotonic()
        while rounds < 20 and (rounds == 0 or time.monotonic() - started < 1.0):
            rig.cold_round()
            rounds += 1
        elapsed = time.monotonic() - started
    stats = rig.stats()
    bound = probes(elapsed, cooldown)
    assert 1 <= stats.errors <= bound, (stats.errors, bound, elapsed)
    assert stats.hits + stats.misses + stats.writes == 0  # every call made timed out
    assert rig.cache.stats().compiles == rounds * len(corpus.names)


def test_server_that_answers_late_costs_one_timeout_and_is_used_again(
    paused: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """A server that stalls just past the client's timeout and then answers (SIGSTOP,
    SIGCONT from a thread once the first call has timed out) is a counted timeout and
    an open breaker, not an exception; its late reply is never taken for the answer to
    a later request; the tier is used again after the cool-down."""
    rig = make_rig(corpus, paused.address, mc_prefix)
    rig.cold_round()
    resumed = threading.Event()

    def resume_after_first_timeout() -> None:
        deadline = time.monotonic() + 10
        for _ in range(2000):
            if rig.stats().errors or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(TIMEOUT)
        paused.resume()
        resumed.set()

    thread = threading.Thread(target=resume_after_first_timeout, daemon=True)
    try:
        _stop(paused)
        thread.start()
        rig.cold_round()
    finally:
        if thread.is_alive():
            thread.join(timeout=15)
        paused.resume()
    assert resumed.is_set()
    stats = rig.stats()
    assert stats.errors >= 1 and stats.skipped > 0
    rig.wait_until_used()
    rig.cold_round()
    stats = rig.stats()
    assert stats.rejected_mac == 0 and stats.rejected_format == 0


def test_late_replies_from_a_stalling_server_never_answer_another_request(
    paused: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """With the server stopped for 30-120 ms at a time, for about two seconds, and a
    breaker probing every 50 ms, replies arrive late, some after the client gave up;
    none is ever read as the reply to a later request (that would show as a MAC
    rejection: an entry is bound to its key), and every page renders right."""
    rig = make_rig(corpus, paused.address, mc_prefix, cooldown=0.05)
    rig.cold_round()
    done = threading.Event()

    def flap() -> None:
        deadline = time.monotonic() + 2.0
        for cycle in range(40):
            if time.monotonic() > deadline:
                break
            paused.pause()
            # Stalls shorter and longer than the client's timeout: replies arrive late
            # but in time, and late after the client gave up.
            time.sleep((0.6, 1.6, 2.4)[cycle % 3] * TIMEOUT)
            paused.resume()
            time.sleep(0.02)
        done.set()

    thread = threading.Thread(target=flap, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if done.is_set():
                break
            rig.cold_round()
    finally:
        thread.join(timeout=15)
        paused.resume()
    assert done.is_set()
    rig.cold_round()
    stats = rig.stats()
    assert stats.errors >= 1
    assert stats.hits > 0
    assert stats.rejected_mac == 0 and stats.rejected_format == 0


def test_restarted_server_is_refilled_by_the_same_cache_and_seen_by_a_new_one(
    memcached_private: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """After a restart (an empty server) the pooled connection that died costs fewer
    errors than open the breaker, the entries are written again and the same cache then
    hits them; its writes put its namespace generation back, so a new cache object
    (another process) finds them too: the generation survived the restart."""
    rig = make_rig(corpus, memcached_private.address, mc_prefix, generation_ttl=0.2)
    rig.cold_round()
    used = rig.tier.generation()
    memcached_private.restart()
    rig.cold_round()
    after = rig.stats()
    assert after.errors < THRESHOLD
    assert after.writes == 2 * len(corpus.names)
    assert rig.tier.generation() == used
    with direct(memcached_private) as raw:
        assert raw.get(f"{mc_prefix}:gen") == used.encode()
    rig.cold_round()
    assert rig.stats().hits - after.hits == len(corpus.names)
    other = make_rig(corpus, memcached_private.address, mc_prefix)
    other.cold_round()
    assert other.stats().hits == len(corpus.names)
    assert other.cache.stats().compiles == 0


def test_dead_node_of_three_is_routed_around_and_rejoins_when_back(
    memcached_private: MemcachedServer, corpus: Corpus, mc_prefix: str
) -> None:
    """Of three nodes, the one the namespace generation key hashes to is killed: pages
    render right; its failures are counted, a bounded few; within seconds every lookup
    hits on the two live nodes, for the running cache and for one started afterwards
    (the same generation); and when the node is back entries are written to it again,
    with no error, within a few seconds (dead_timeout 2 s plus a round)."""
    extra = [MemcachedServer(free_port()), MemcachedServer(free_port())]
    try:
        for server in extra:
            server.start()
        nodes = [memcached_private, *extra]
        dead_timeout = 2.0
        rig = make_rig(
            corpus,
            [n.address for n in nodes],
            mc_prefix,
            dead_timeout=dead_timeout,
            generation_ttl=0.5,
        )
        rig.cold_round()
        addresses = [n.address for n in nodes]
        home = RendezvousHash(nodes=addresses).get_node(f"{mc_prefix}:gen")
        victim = nodes[addresses.index(home)]
        victim.stop()

        # Routed around while the node is still dead: pymemcache drops it after its first
        # failure, and within a few rounds every template is a hit on the live nodes.
        started, all_hits = time.monotonic(), False
        for _ in range(200):
            before = rig.stats()
            rig.cold_round()
            if rig.stats().hits - before.hits == len(corpus.names):
                all_hits = True
                break
            if time.monotonic() - started > RECOVERY_LIMIT:
                break
            time.sleep(0.05)
        assert all_hits
        elapsed = time.monotonic() - started
        # A closed pooled connection, a refusal, then one refusal per dead_timeout when
        # pymemcache tries the node again.
        assert 1 <= rig.stats().errors <= 3 + int(elapsed / dead_timeout)

        # A process started now shares the namespace through the live nodes: it hits
        # everything but what it first sends to the dead node.
        other = make_rig(corpus, addresses, mc_prefix)
        other.cold_round()
        assert other.tier.generation() == rig.tier.generation()
        assert other.stats().hits >= len(corpus.names) - 1

        victim.start()  # same port, empty
        started, rejoined = time.monotonic(), False
        for _ in range(200):
            before = rig.stats()
            rig.cold_round()
            if rig.used_after(before, rig.stats()) and any(
                k.startswith(mc_prefix + ":") and k != f"{mc_prefix}:gen" for k in victim.keys()
            ):
                rejoined = True
                break
            if time.monotonic() - started > RECOVERY_LIMIT + dead_timeout:
                break
            time.sleep(0.05)
        assert rejoined
    finally:
        for server in extra:
            server.stop()


@pytest.mark.parametrize("fault", ["refused", "hung"])
def test_strict_mode_raises_tier_error_for_a_refused_or_hung_server(
    paused: MemcachedServer, corpus: Corpus, mc_prefix: str, fault: str
) -> None:
    """With strict=True the same faults surface as TierError naming the memcached tier,
    caused by the refusal or the timeout."""
    rig = make_rig(corpus, paused.address, mc_prefix, strict=True)
    if fault == "refused":
        paused.stop()
        with pytest.raises(TierError) as info:
            rig.env.get_template(corpus.names[0])
    else:
        with hung(paused), pytest.raises(TierError) as info:
            rig.env.get_template(corpus.names[0])
    assert info.value.tier == rig.tier.name
    cause = (ConnectionRefusedError, ConnectionResetError) if fault == "refused" else TimeoutError
    assert isinstance(info.value.__cause__, cause), repr(info.value.__cause__)


def test_probe_spent_on_an_entry_too_large_for_the_tier_does_not_keep_it_skipped(
    paused: MemcachedServer, mc_prefix: str
) -> None:
    """When the cool-down ends while a template compiles, and the compiled entry is too
    large for memcached, the write is skipped; the breaker still probes the server on a
    later lookup, so the tier is used again (a probe handed out and never answered kept
    the breaker half-open for good before 055c76b).

    The lookup, the compile and the write are Jinja's own bucket calls, with a pause
    before the write standing for a compile slower than the cool-down."""
    big = "".join(f"<p>{{{{ x{i} }}}}</p>\n" for i in range(400))
    memory = MemoryTier()
    tier = MemcachedTier(
        paused.address,
        prefix=mc_prefix,
        timeout=TIMEOUT,
        connect_timeout=TIMEOUT,
        max_item_size=4096,
    )
    cooldown = COOLDOWN
    cache = TieredBytecodeCache([memory, tier], secret=SECRET, breaker_cooldown=cooldown)
    env = Environment(
        loader=DictLoader({"small": "s{{ 1 }}", "big": big}), bytecode_cache=cache, cache_size=0
    )
    with hung(paused):
        env.get_template("small")  # the timeout that opens the breaker
    assert cache.stats().tiers[1].breaker == "open"
    bucket = cache.get_bucket(env, "big", None, big)  # skipped: the breaker is open
    time.sleep(cooldown * 1.5)  # a compile slower than the cool-down
    bucket.code = env.compile(big, "big")
    assert tier.max_entry_size is not None
    cache.set_bucket(bucket)
    assert cache.stats().tiers[1].skipped >= 2  # the lookup and the too-large write

    before = cache.stats().tiers[1]
    deadline = time.monotonic() + 5 * cooldown
    for _ in range(100):
        memory.clear()
        env.get_template("small")
        after = cache.stats().tiers[1]
        if after.hits + after.misses > before.hits + before.misses:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(cooldown / 10)
    assert after.hits + after.misses > before.hits + before.misses, after
    assert after.breaker == "closed"


@pytest.mark.parametrize("value", FOREIGN_GENERATIONS.values(), ids=FOREIGN_GENERATIONS.keys())
def test_foreign_generation_costs_no_error_and_the_cache_keeps_hitting(
    memcached_big: MemcachedServer, corpus: Corpus, mc_prefix: str, value: bytes
) -> None:
    """A foreign value written over the generation key of a warm cache costs no error
    and no breaker trip: pages render right throughout, the tier replaces the value on
    its next read of the key (within ``generation_ttl``) and every lookup after that is
    a hit again, with the namespace it had. (It made every lookup raise, for good.)"""
    # Timeouts no loaded machine trips: this test is about the value, not the network.
    rig = make_rig(corpus, memcached_big.address, mc_prefix, generation_ttl=0.5, timeout=2.0)
    rig.cold_round()
    with direct(memcached_big) as raw:
        assert raw.set(f"{mc_prefix}:gen", value, noreply=False)
    deadline = time.monotonic() + RECOVERY_LIMIT
    for _ in range(1000):
        rig.cold_round(corpus.names[:1])
        if rig.tier.events["generation_replaced"] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert rig.tier.events["generation_replaced"] == 1
    before = rig.stats()
    rig.cold_round()
    after = rig.stats()
    assert after.hits - before.hits == len(corpus.names)
    assert after.errors == 0 and after.breaker == "closed"
