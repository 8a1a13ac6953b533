"""What the stress tests run in other processes, and how they start them together.

Workers run in processes of the ``spawn`` start method: a fresh interpreter each, as a
web server's workers are, with nothing inherited but the arguments. A worker gets ready
(imports, builds its cache), reports ``ready``, waits for the start event that the parent
sets once every worker is ready, does its work and reports the result; an exception is
reported as its traceback, so a worker's failure fails the test with the worker's story.
A worker may report more on the way (``waiting``: it found a compile lease held and is
about to wait for it), for the parent to synchronise on instead of sleeping.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MPQueue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

from filelock import FileLock, Timeout
from jinja2 import Environment, FileSystemLoader, TemplateSyntaxError

from tiered_bccache import FileSystemTier, MemcachedTier, MemoryTier, Tier, TieredBytecodeCache
from tiered_bccache.benchkit.corpus import render_context

Report = dict[str, Any]
Worker = Callable[[int, Event, Event, "MPQueue[Any]", Any], None]

#: How long a worker waits for the start signal before giving up on the parent.
START_TIMEOUT = 60.0


# -- versioned templates: every output says which source it came from ------------------


def versioned_source(name: str, version: int) -> str:
    """The source of version ``version`` of template ``name``: self-contained (no
    inheritance, so an output depends on this one file), a few kB of literal text and
    code, with the version number in the first line and in several places of the
    output, so that output from the code of one version and the text of another, or a
    torn source, cannot pass for a real version."""
    filler = f"<p>{name} revision {version}: " + "lorem ipsum dolor sit amet " * 12 + "</p>\n"
    body = "".join(
        f"{{% if items|length > {i} %}}<li class=v{version}>{{{{ items[{i}] * {version} }}}}"
        f"-{{{{ '{name}'|upper }}}}</li>{{% endif %}}\n{filler}"
        for i in range(4 + version % 5)
    )
    return (
        f"{{# version={version} #}}\n"
        f"<t name={name} v={version}>\n"
        "{% macro cell(x) %}[{{ x }}]{% endmacro %}\n"
        f"{{% for i in range({3 + version % 4}) %}}{{{{ cell(i + {version}) }}}}{{% endfor %}}\n"
        f"{body}"
        f"</t v={version}>\n"
    )


VERSIONED_ITEMS = [3, 5, 7, 11, 13, 17]
_SOURCE_VERSION = re.compile(r"\{# version=(\d+) #\}")
_OUTPUT_VERSION = re.compile(r"<t name=[^ ]+ v=(\d+)>")


def source_version(source: str) -> int:
    """The version a source declares in its first line."""
    match = _SOURCE_VERSION.match(source)
    assert match is not None, f"not a versioned source: {source[:60]!r}"
    return int(match.group(1))


def output_version(output: str) -> int | None:
    """The version an output claims to come from, or None if it claims none."""
    match = _OUTPUT_VERSION.search(output)
    return None if match is None else int(match.group(1))


class Expected:
    """What each version of each versioned template renders to, computed once by a
    plain Jinja environment with no bytecode cache (the reference)."""

    def __init__(self) -> None:
        self._env = Environment()
        self._outputs: dict[tuple[str, int], str] = {}

    def __call__(self, name: str, version: int) -> str:
        key = (name, version)
        out = self._outputs.get(key)
        if out is None:
            template = self._env.from_string(versioned_source(name, version))
            out = self._outputs[key] = template.render(items=VERSIONED_ITEMS)
        return out


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` the way a deploy does (write aside, rename), so a
    reader sees the old file or the new one, never half of one: the tests are about
    torn cache entries, not torn templates."""
    tmp = path.with_name(
        f".{path.name}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
    )
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- shared tiers ------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedTiers:
    """The tiers a group of processes shares: one directory and, optionally, one
    memcached namespace."""

    cache_dir: str
    secret: bytes
    memcached: str | None = None
    prefix: str = "tbc"
    lease_timeout: float = 2.0

    def cache(self, *, on_lease_wait: Callable[[], None] | None = None) -> TieredBytecodeCache:
        """A cache over the shared tiers; ``on_lease_wait`` is called when a compile
        lease is found held by another process, before the cache waits for it."""
        fs: FileSystemTier = (
            FileSystemTier(self.cache_dir)
            if on_lease_wait is None
            else ReportingFileSystemTier(self.cache_dir, on_lease_wait)
        )
        tiers: list[Tier] = [MemoryTier(max_entries=4096), fs]
        if self.memcached is not None:
            # Generous timeouts: these tests are about concurrency on a loaded machine,
            # not about a slow server (that is test_memcached_faults).
            tiers.append(
                MemcachedTier(self.memcached, prefix=self.prefix, timeout=2.0, connect_timeout=2.0)
            )
        return TieredBytecodeCache(tiers, secret=self.secret, lease_timeout=self.lease_timeout)


class ReportingFileSystemTier(FileSystemTier):
    """A filesystem tier whose compile leases report, through ``on_wait``, that another
    process holds them, just before the cache waits: a test releases the holder once
    every worker is known to wait, instead of sleeping and hoping they all are."""

    def __init__(self, directory: str, on_wait: Callable[[], None]) -> None:
        super().__init__(directory)
        self._on_wait = on_wait

    def lease(self, key: str) -> FileLock:
        # Not a FileLock, but all of one the cache uses: acquire and release.
        return cast(FileLock, _ReportingLease(super().lease(key), self._on_wait))


class _ReportingLease:
    """A lease that tries once without waiting and, when another process holds it,
    calls ``on_wait`` (once) before waiting as asked."""

    def __init__(self, lock: FileLock, on_wait: Callable[[], None]) -> None:
        self._lock = lock
        self._on_wait: Callable[[], None] | None = on_wait

    def acquire(self, timeout: float | None = None, poll_interval: float = 0.05) -> object:
        try:
            return self._lock.acquire(timeout=0)
        except Timeout:
            if self._on_wait is not None:
                on_wait, self._on_wait = self._on_wait, None
                on_wait()
            if timeout == 0:
                raise
        return self._lock.acquire(timeout=timeout, poll_interval=poll_interval)

    def release(self, force: bool = False) -> None:
        self._lock.release(force=force)


def rejected_counts(cache: TieredBytecodeCache) -> Report:
    """The counters that must stay zero under concurrency, per tier."""
    return {
        t.name: {
            "rejected_mac": t.rejected_mac,
            "rejected_format": t.rejected_format,
            "errors": t.errors,
        }
        for t in cache.stats().tiers
    }


# -- workers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EditJob:
    """Render versioned templates over and over while the parent edits them."""

    tiers: SharedTiers
    template_dir: str
    names: tuple[str, ...]
    max_renders: int = 20000
    max_seconds: float = 15.0


def edit_worker(wid: int, start: Event, stop: Event, out: MPQueue[Any], job: EditJob) -> None:
    """Per render: read the template file itself (what this process has now seen of
    it), then render it through the cache; the output must be exactly some version of
    the template, and never older than a version this process had already seen."""
    cache = job.tiers.cache()
    env = Environment(loader=FileSystemLoader(job.template_dir), bytecode_cache=cache, cache_size=0)
    expected = Expected()
    seen = dict.fromkeys(job.names, 0)
    stale: list[str] = []
    wrong: list[str] = []
    renders = 0
    versions_rendered: set[tuple[str, int]] = set()
    _ready(wid, start, out)
    deadline = time.monotonic() + job.max_seconds
    while not stop.is_set() and renders < job.max_renders and time.monotonic() < deadline:
        name = job.names[renders % len(job.names)]
        text = (Path(job.template_dir) / name).read_text(encoding="utf-8")
        seen[name] = max(seen[name], source_version(text))
        output = env.get_template(name).render(items=VERSIONED_ITEMS)
        renders += 1
        version = output_version(output)
        if version is None or output != expected(name, version):
            wrong.append(f"{name}: {output[:80]!r}")
            continue
        versions_rendered.add((name, version))
        if version < seen[name]:
            stale.append(f"{name}: rendered v{version} after reading v{seen[name]}")
    stats = cache.stats()
    out.put(
        (
            "done",
            wid,
            {
                "renders": renders,
                "stale": stale[:10],
                "stale_count": len(stale),
                "wrong": wrong[:10],
                "wrong_count": len(wrong),
                "versions_rendered": len(versions_rendered),
                "compiles": stats.compiles,
                "hits": [t.hits for t in stats.tiers],
                "rejected_stale": [t.rejected_stale for t in stats.tiers],
                "tiers": rejected_counts(cache),
            },
        )
    )


@dataclass(frozen=True)
class StampedeJob:
    """Load every template of a corpus, in the same order as every other worker, then
    render the pages."""

    tiers: SharedTiers
    template_dir: str
    names: tuple[str, ...]
    pages: tuple[str, ...] = ()


def stampede_worker(
    wid: int, start: Event, stop: Event, out: MPQueue[Any], job: StampedeJob
) -> None:
    """Count the compiles this process does per template (``stats().compiles`` around
    each load: loading a template compiles that template only), the time each load
    took and when it ended (``time.monotonic`` is system-wide on Linux, so the parent
    can compare ends across processes), and digest the rendered pages; then wait for
    the parent's stop."""
    cache = job.tiers.cache()
    env = Environment(loader=FileSystemLoader(job.template_dir), bytecode_cache=cache, cache_size=0)
    compiles: dict[str, int] = {}
    seconds: dict[str, float] = {}
    ended: dict[str, float] = {}
    failures: dict[str, str] = {}
    _ready(wid, start, out)
    began = time.monotonic()
    for name in job.names:
        before = cache.stats().compiles
        started = time.monotonic()
        try:
            env.get_template(name)
        except TemplateSyntaxError as exc:
            failures[name] = type(exc).__name__
        ended[name] = time.monotonic()
        seconds[name] = ended[name] - started
        compiles[name] = cache.stats().compiles - before
    loaded = time.monotonic()
    context = render_context()
    digests = {
        page: hashlib.sha256(env.get_template(page).render(context).encode()).hexdigest()
        for page in job.pages
    }
    stats = cache.stats()
    out.put(
        (
            "done",
            wid,
            {
                "compiles": compiles,
                "seconds": seconds,
                "ended": ended,
                "failures": failures,
                "load_seconds": loaded - began,
                "digests": digests,
                "total_compiles": stats.compiles,
                "lease_waits": stats.lease_waits,
                "tiers": rejected_counts(cache),
            },
        )
    )
    # Stay up until the parent stops the group, as a server's worker does: the kernel
    # drops a process's flocks when it exits, which would hide a lease it never released.
    stop.wait(START_TIMEOUT)


@dataclass(frozen=True)
class WaiterJob:
    """Load one template whose lease another process holds."""

    tiers: SharedTiers
    template_dir: str
    name: str


def waiter_worker(wid: int, start: Event, stop: Event, out: MPQueue[Any], job: WaiterJob) -> None:
    """Report ``waiting`` when the lease is found held, then when the load began and
    ended, whether it compiled, and the lease waits."""
    cache = job.tiers.cache(on_lease_wait=lambda: out.put(("waiting", wid, None)))
    env = Environment(loader=FileSystemLoader(job.template_dir), bytecode_cache=cache, cache_size=0)
    _ready(wid, start, out)
    began = time.monotonic()
    env.get_template(job.name)
    ended = time.monotonic()
    stats = cache.stats()
    out.put(
        (
            "done",
            wid,
            {
                "began": began,
                "ended": ended,
                "compiles": stats.compiles,
                "lease_waits": stats.lease_waits,
                "tiers": rejected_counts(cache),
            },
        )
    )


def _ready(wid: int, start: Event, out: MPQueue[Any]) -> None:
    out.put(("ready", wid, None))
    if not start.wait(START_TIMEOUT):
        raise TimeoutError("the parent never gave the start signal")


def _run(
    target: Worker,
    wid: int,
    start: Event,
    stop: Event,
    out: MPQueue[Any],
    job: Any,
) -> None:
    try:
        target(wid, start, stop, out, job)
    except BaseException:
        out.put(("error", wid, traceback.format_exc()))


# -- the parent's side -------------------------------------------------------------------


@dataclass
class Group:
    """Worker processes started together; use as a context manager so that none
    outlives the test."""

    target: Worker
    jobs: Sequence[Any]
    ready_timeout: float = 60.0
    ctx: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))

    def __post_init__(self) -> None:
        self.start_event: Event = self.ctx.Event()
        self.stop_event: Event = self.ctx.Event()
        self.queue: MPQueue[Any] = self.ctx.Queue()
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.started_at = 0.0

    def __enter__(self) -> Group:
        for wid, job in enumerate(self.jobs):
            process = self.ctx.Process(
                target=_run,
                args=(self.target, wid, self.start_event, self.stop_event, self.queue, job),
                daemon=True,
            )
            process.start()
            self.processes.append(process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.start_event.set()
        for process in self.processes:
            process.join(timeout=5)
        for process in self.processes:
            if process.is_alive():  # only our own children, by their handle
                process.kill()
                process.join(timeout=5)
        self.queue.close()
        self.queue.join_thread()

    def go(self) -> float:
        """Wait until every worker is ready, then release them all at once; return the
        (system-wide monotonic) time of the release."""
        self.gather("ready", self.ready_timeout)
        self.started_at = time.monotonic()
        self.start_event.set()
        return self.started_at

    def gather(self, kind: str, timeout: float) -> list[Any]:
        """Every worker's ``kind`` report, in worker order; fails on a worker's
        exception, on a report of another kind, or when they do not all arrive within
        ``timeout`` seconds."""
        payloads: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(payloads) < len(self.jobs):
            got, wid, payload = self._next(deadline, kind)
            if got == "error":
                raise AssertionError(f"worker {wid} failed before {kind!r}:\n{payload}")
            assert got == kind and wid not in payloads, (got, wid, kind)
            payloads[wid] = payload
        return [payloads[i] for i in range(len(self.jobs))]

    def results(self, timeout: float) -> list[Report]:
        """Every worker's report, in worker order; fails on a worker's exception or
        when the reports do not all arrive within ``timeout`` seconds."""
        return self.gather("done", timeout)

    def _next(self, deadline: float, waiting_for: str) -> tuple[str, int, Any]:
        for _ in range(100_000):  # bounded by the deadline long before this count
            remaining = deadline - time.monotonic()
            try:
                item: tuple[str, int, Any] = self.queue.get(timeout=min(max(remaining, 0.01), 0.5))
                return item
            except queue.Empty:
                pass
            codes = [p.exitcode for p in self.processes]
            if remaining <= 0 or all(code is not None for code in codes):
                try:  # a report still in the pipe of a worker that just exited
                    late: tuple[str, int, Any] = self.queue.get(timeout=0.5)
                    return late
                except queue.Empty:
                    pass
                raise AssertionError(
                    f"workers did not report {waiting_for!r} in time (exit codes {codes}, "
                    "None for still running): a worker hangs or died"
                )
        raise AssertionError(f"workers did not report {waiting_for!r}")


def lease_key(env: Environment, name: str) -> str:
    """The key under which ``env``'s cache takes the compile lease for ``name`` (the key
    depends on the environment and the template, not on the tiers)."""
    assert env.loader is not None
    _, filename, _ = env.loader.get_source(env, name)
    return TieredBytecodeCache([MemoryTier()]).template_key(env, name, filename)


#: Run by ``python -c`` in a process that takes a lease and keeps it until killed.
HOLD_LEASE = """
import sys, time
from tiered_bccache import FileSystemTier
lock = FileSystemTier(sys.argv[1]).lease(sys.argv[2])
lock.acquire(timeout=5)
print("held", flush=True)
time.sleep(120)
"""
