"""Cold start: many processes of a host load the same templates at once over an empty
filesystem tier, and the compile lease keeps them from all compiling the same thing."""

from __future__ import annotations

import gc
import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment, FileSystemLoader, TemplateSyntaxError

from tests.conftest import SECRET
from tests.stress.workers import (
    HOLD_LEASE,
    Group,
    Report,
    SharedTiers,
    StampedeJob,
    WaiterJob,
    lease_key,
    stampede_worker,
    waiter_worker,
)
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.benchkit.corpus import generate_corpus, render_context

WORKERS = 8
#: Far beyond any wait the lease should cause, so that a worker that waits it out (a
#: lease never released) stands out, and so that a slow compile on a loaded machine
#: does not time its waiters out into compiling again. It costs nothing when all is well.
LEASE_TIMEOUT = 20.0
#: The bound on a wait the lease does cause: generous for eight interpreters sharing two
#: cores with other test runs, and still well short of a wait that ran into the timeout.
MARGIN = LEASE_TIMEOUT / 2
BROKEN = "broken.html"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stampede:
    names: tuple[str, ...]
    pages: tuple[str, ...]
    reference: dict[str, str]
    reports: list[Report]
    released_at: float


@pytest.fixture(scope="module")
def stampede(tmp_path_factory: pytest.TempPathFactory) -> Stampede:
    """Eight spawned workers, released together by one event, load a corpus of 24
    templates of 2-16 kB (and one with a syntax error, in the middle) in the same order
    over one empty cache directory, then render the pages; run once for the module."""
    root = tmp_path_factory.mktemp("stampede")
    templates = root / "templates"
    names = generate_corpus(templates, count=24, seed=7, min_size=2048, max_size=16 * 1024)
    (templates / BROKEN).write_text("{% for x in %}never closed\n" * 40, encoding="utf-8")
    ordered = (*names[: len(names) // 2], BROKEN, *names[len(names) // 2 :])
    pages = tuple(n for n in names if n.startswith("pages/"))
    reference_env = Environment(loader=FileSystemLoader(templates))
    context = render_context()
    reference = {
        page: hashlib.sha256(reference_env.get_template(page).render(context).encode()).hexdigest()
        for page in pages
    }
    tiers = SharedTiers(str(root / "cache"), SECRET, lease_timeout=LEASE_TIMEOUT)
    job = StampedeJob(tiers, str(templates), ordered, pages)
    with Group(stampede_worker, [job] * WORKERS) as group:
        released = group.go()
        reports = group.results(timeout=60)
    return Stampede(ordered, pages, reference, reports, released)


def test_cold_start_compiles_each_template_at_most_twice_across_eight_processes(
    stampede: Stampede,
) -> None:
    """Eight processes loading the same 24 templates from cold compile each one at
    least once and at most twice in all (the lease makes the others wait for the
    holder's entry), and every process renders every page exactly as Jinja does."""
    per_template = {
        name: sum(r["compiles"][name] for r in stampede.reports)
        for name in stampede.names
        if name != BROKEN
    }
    assert all(1 <= n <= 2 for n in per_template.values()), per_template
    for report in stampede.reports:
        assert report["digests"] == stampede.reference
        for name, counts in report["tiers"].items():
            assert counts == {"rejected_mac": 0, "rejected_format": 0, "errors": 0}, name


def test_template_that_does_not_compile_fails_in_every_process(stampede: Stampede) -> None:
    """A syntax error is Jinja's TemplateSyntaxError in each of the eight processes,
    never a cached result, and the templates after it still load."""
    for report in stampede.reports:
        assert report["failures"] == {BROKEN: "TemplateSyntaxError"}
        assert report["compiles"][BROKEN] == 0
        assert set(report["compiles"]) == set(stampede.names)


def test_template_that_does_not_compile_holds_no_process_beyond_lease_timeout(
    stampede: Stampede,
) -> None:
    """Every process is past the broken template well within lease_timeout of the first
    process that failed on it: a compile that raises releases its lease as the process
    moves on, so nobody waits on it until their lease_timeout runs out."""
    first_failure = min(r["ended"][BROKEN] for r in stampede.reports)
    for report in stampede.reports:
        assert report["ended"][BROKEN] - first_failure < MARGIN
        assert report["seconds"][BROKEN] < MARGIN


def test_compile_error_releases_the_lease_without_waiting_for_the_garbage_collector(
    tmp_path: Path,
) -> None:
    """Loading a template again after its compile raised does not wait on the lease the
    failed compile took (the cyclic garbage collector is off here, so the test does not
    depend on when it happens to run)."""
    cache = TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(tmp_path)], secret=SECRET, lease_timeout=LEASE_TIMEOUT
    )
    env = Environment(loader=DictLoader({BROKEN: "{% for %}"}), bytecode_cache=cache, cache_size=0)
    gc.disable()
    try:
        for _ in range(2):
            with pytest.raises(TemplateSyntaxError):
                env.get_template(BROKEN)
    finally:
        gc.enable()
    assert cache.stats().lease_waits == 0


@pytest.fixture
def lease_holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, str, Path]]:
    """A process that holds the compile lease of one corpus page in a fresh cache
    directory and sleeps; killed after the test whatever happened."""
    templates = tmp_path / "templates"
    names = generate_corpus(templates, count=4, seed=3, min_size=4096, max_size=8192)
    page = names[-1]
    cache_dir = tmp_path / "cache"
    key = lease_key(Environment(loader=FileSystemLoader(templates)), page)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, str(cache_dir), key],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready and holder.stdout.readline().strip() == "held", "the holder never took it"
        yield holder, templates, page, cache_dir
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_lease_holder_killed_while_others_wait_releases_them_at_once(
    lease_holder: tuple[subprocess.Popen[str], Path, str, Path],
) -> None:
    """Four processes waiting on the lease of a holder that is SIGKILLed go on within
    seconds of the kill, long before their lease_timeout (the kernel drops the flock of
    a dead process), and between them compile the template once or twice."""
    holder, templates, page, cache_dir = lease_holder
    lease_timeout = 30.0
    tiers = SharedTiers(str(cache_dir), SECRET, lease_timeout=lease_timeout)
    job = WaiterJob(tiers, str(templates), page)
    with Group(waiter_worker, [job] * 4) as group:
        group.go()
        # Each worker reports when it finds the lease held, just before it waits.
        group.gather("waiting", timeout=30)
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        holder.wait(timeout=10)
        reports = group.results(timeout=lease_timeout / 2)
    assert [r["lease_waits"] for r in reports] == [1] * 4
    for report in reports:
        assert report["ended"] - killed < lease_timeout / 3
    assert 1 <= sum(r["compiles"] for r in reports) <= 2
