"""One cache shared by threads, and tiers shared by processes, while templates are edited
and caches cleared: no exception, no torn or foreign entry, no deadlock, and never an
output that is not exactly some version of its template, nor one older than a version
already seen."""

from __future__ import annotations

import random
import threading
import time
import traceback
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from tests.conftest import SECRET, MemcachedServer
from tests.stress.workers import (
    VERSIONED_ITEMS,
    EditJob,
    Expected,
    Group,
    SharedTiers,
    edit_worker,
    output_version,
    versioned_source,
    write_atomically,
)
from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, TieredBytecodeCache

NAMES = tuple(f"page{i}.html" for i in range(6))
THREADS = 8
#: How long the threads and the processes run; every loop is also bounded in count.
DURATION = 3.0
MAX_OPS_PER_THREAD = 5000
JOIN_TIMEOUT = 30.0


def _publish_all(directory: Path, version: int) -> None:
    directory.mkdir()
    for name in NAMES:
        write_atomically(directory / name, versioned_source(name, version))


def test_eight_threads_loading_editing_and_clearing_one_cache(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Eight threads share one cache over memory, a directory and memcached for about
    three seconds, each rendering (~82%), editing a template (~15%, written aside and
    renamed, as a deploy does) or clearing the cache (~3%): no thread raises or hangs,
    no entry is ever rejected as corrupt or foreign (only as stale), and every output
    is exactly the output of a version of its template that was published no earlier
    than the render began and no later than it ended."""
    templates = tmp_path / "templates"
    _publish_all(templates, 1)
    cache = TieredBytecodeCache(
        [
            MemoryTier(max_entries=64),
            FileSystemTier(tmp_path / "cache"),
            MemcachedTier(memcached.address, prefix=mc_prefix, timeout=2.0, connect_timeout=2.0),
        ],
        secret=SECRET,
    )
    env = Environment(loader=FileSystemLoader(templates), bytecode_cache=cache, cache_size=0)
    expected = Expected()
    # pending: the newest version being written; published: the newest one renamed into
    # place. A render reads published before and pending after, and must land between.
    pending = dict.fromkeys(NAMES, 1)
    published = dict.fromkeys(NAMES, 1)
    edit_lock = threading.Lock()
    failures: list[str] = []
    done = {"renders": 0, "edits": 0, "clears": 0}
    start = threading.Barrier(THREADS)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait(timeout=JOIN_TIMEOUT)
            deadline = time.monotonic() + DURATION
            for _ in range(MAX_OPS_PER_THREAD):
                if time.monotonic() > deadline or failures:
                    break
                name = rng.choice(NAMES)
                roll = rng.random()
                if roll < 0.15:
                    with edit_lock:
                        new = pending[name] = pending[name] + 1
                        write_atomically(templates / name, versioned_source(name, new))
                        published[name] = new
                    done["edits"] += 1
                elif roll < 0.18:
                    cache.clear()
                    done["clears"] += 1
                else:
                    floor = published[name]
                    output = env.get_template(name).render(items=VERSIONED_ITEMS)
                    ceiling = pending[name]
                    version = output_version(output)
                    if version is None or output != expected(name, version):
                        failures.append(f"{name}: not any version: {output[:80]!r}")
                    elif not floor <= version <= ceiling:
                        failures.append(f"{name}: v{version} outside v{floor}..v{ceiling}")
                    done["renders"] += 1
        except BaseException:
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(seed,), daemon=True) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not [t for t in threads if t.is_alive()], "a thread is stuck (deadlock?)"
    assert failures == []
    assert done["renders"] > 0 and done["edits"] > 0 and done["clears"] > 0, done
    for tier in cache.stats().tiers:
        assert (tier.rejected_mac, tier.rejected_format, tier.errors) == (0, 0, 0), tier


def test_processes_sharing_tiers_never_render_older_than_the_source_they_read(
    tmp_path: Path, memcached: MemcachedServer, mc_prefix: str
) -> None:
    """Six processes (spawned) share one cache directory and one memcached namespace and
    render while this process publishes a new version of some template every 50 ms for
    about three seconds. Each process reads a template's file before rendering it; no
    render is ever older than a version the process has read, every output is exactly a
    version of its template, and no process rejects an entry as corrupt or foreign."""
    templates = tmp_path / "templates"
    _publish_all(templates, 1)
    tiers = SharedTiers(str(tmp_path / "cache"), SECRET, memcached.address, mc_prefix)
    job = EditJob(tiers, str(templates), NAMES, max_seconds=DURATION + 15)
    versions = dict.fromkeys(NAMES, 1)
    rng = random.Random(5)
    edits = 0
    with Group(edit_worker, [job] * 6) as group:
        group.go()
        deadline = time.monotonic() + DURATION
        while edits < 200 and time.monotonic() < deadline:
            name = rng.choice(NAMES)
            versions[name] += 1
            write_atomically(templates / name, versioned_source(name, versions[name]))
            edits += 1
            time.sleep(0.05)
        group.stop_event.set()
        reports = group.results(timeout=JOIN_TIMEOUT)
    assert edits > 10
    for report in reports:
        assert report["stale_count"] == 0, report["stale"]
        assert report["wrong_count"] == 0, report["wrong"]
        assert report["renders"] > 0
        for name, counts in report["tiers"].items():
            assert counts == {"rejected_mac": 0, "rejected_format": 0, "errors": 0}, name
    # The processes did see the edits: between them, many versions were rendered.
    assert sum(r["versions_rendered"] for r in reports) > len(NAMES) * len(reports)
