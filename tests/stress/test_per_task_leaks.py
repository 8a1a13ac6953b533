"""Per-task environments (the Ansible and dbt pattern) through one shared cache: a new
SandboxedEnvironment per task, ``cache_from_string`` on it, and a filter that closes over
what the task holds (an open file, a sqlite3 connection, 50 kB of data) applied to a
variable and to a constant.

The application drops each task when it is done and closes nothing: the file and the
connection are closed when refcounting and the garbage collector free them. A cache
that keeps an environment, a filter or anything a filter reaches alive keeps them
open. Each test runs the same 10,000 tasks twice in one process, first with plain Jinja
(no bytecode cache), then through a cache of a ``MemoryTier`` over a
``FileSystemTier``, and holds the second run to what the first one costs in file
descriptors and resident memory, give or take a small constant. Every render is
checked, so a template compiled for one task and served to another (a constant folded
through the first task's filter) fails too.
"""

from __future__ import annotations

import gc
import os
import resource
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from jinja2.sandbox import SandboxedEnvironment

from tests.conftest import SECRET
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd"),
    # The point is that nobody closes the files and connections: refcounting and the
    # garbage collector do, and Python says so with a ResourceWarning each time.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

TASKS = 10_000
#: For both runs of a test together; pytest's own timeout (pyproject.toml) is 120 s.
DEADLINE = 90.0
#: Every so many tasks, the garbage is collected and the open descriptors counted, so a
#: leak stops the run early instead of running the remaining tasks.
CHECK_EVERY = 1_000
#: What the cached run may hold beyond the plain one once both are collected: a
#: descriptor or two the cache opens for itself (none today), and memory for the cache's
#: own entries and memos (a few hundred kB). A task kept alive costs a descriptor and,
#: with its 50 kB of data, 500 MB over the run.
FD_SLACK = 8
RSS_SLACK = 24 * 1024 * 1024
#: Leaking beyond this many descriptors during a run stops it at the next check.
FD_ABORT = 200

TEMPLATE = "{{ value | task }} {{ 'constant' | task }}"
DATA_SIZE = 50 * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def task_filter(kind: str, task: int, shared: Path) -> Callable[[str], str]:
    """The task's filter: ``value:task:probe``, where the probe reads what the filter
    closes over (the task's own open file, sqlite3 connection or data)."""
    if kind == "file":
        handle = open(shared / "data.bin", "rb")  # never closed: see the module

        def probe() -> str:
            return str(os.fstat(handle.fileno()).st_size)
    elif kind == "sqlite":
        connection = sqlite3.connect(shared / "tasks.db")

        def probe() -> str:
            return str(connection.execute("select ? * 2", (task,)).fetchone()[0])
    else:
        data = (b"%05d" % task) * (DATA_SIZE // 5)

        def probe() -> str:
            return str(len(data) + int(data[:5]))

    def apply(value: str) -> str:
        return f"{value}:{task}:{probe()}"

    return apply


def expected(kind: str, task: int) -> str:
    probe = {"file": "4096", "sqlite": str(task * 2), "data": str(DATA_SIZE + task)}[kind]
    return f"v{task}:{task}:{probe} constant:{task}:{probe}"


def run_task(kind: str, task: int, shared: Path, cache: TieredBytecodeCache | None) -> str:
    """One task, as the tool runs it: a new environment, its filter, one render. Nothing
    of it outlives the call but the text it rendered."""
    env = SandboxedEnvironment() if cache is None else SandboxedEnvironment(bytecode_cache=cache)
    if cache is not None:
        cache_from_string(env)
    env.filters["task"] = task_filter(kind, task, shared)
    return env.from_string(TEMPLATE).render(value=f"v{task}")


@dataclass(frozen=True)
class Growth:
    fds: int
    rss: int


def run_tasks(
    kind: str, shared: Path, cache: TieredBytecodeCache | None, deadline: float
) -> Growth:
    """Run every task; return what is still held once they are all collected."""
    label = "plain Jinja" if cache is None else "the cached run"
    gc.collect()
    fds, memory = open_fds(), rss()
    for task in range(TASKS):
        try:
            output = run_task(kind, task, shared, cache)
        except OSError as exc:  # EMFILE: the descriptors ran out
            pytest.fail(f"{label}, task {task}: {exc} ({open_fds() - fds} descriptors held)")
        if output != expected(kind, task):
            pytest.fail(f"{label}, task {task}: rendered {output!r}, not {expected(kind, task)!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"{label} ran {task + 1} of {TASKS} tasks in the {DEADLINE:.0f} s allowed")
        if (task + 1) % CHECK_EVERY == 0:
            gc.collect()
            held = open_fds() - fds
            if held > FD_ABORT:
                pytest.fail(
                    f"{label} holds {held} more file descriptors after {task + 1} tasks "
                    "and a garbage collection: the tasks' files and connections are kept open"
                )
    gc.collect()
    return Growth(open_fds() - fds, rss() - memory)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "sqlite", "data"])
def test_per_task_environments_are_freed_when_the_application_drops_them(
    kind: str, tmp_path: Path
) -> None:
    """10,000 per-task sandboxes, each with a filter closing over the task's open file,
    sqlite3 connection or 50 kB of data, through one shared cache hold no more file
    descriptors and no more memory after the run than plain Jinja does (within a small
    constant); the tasks share the cached template, and every render is the task's own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data.bin").write_bytes(bytes(4096))
    sqlite3.connect(shared / "tasks.db").close()
    deadline = time.monotonic() + DEADLINE

    plain = run_tasks(kind, shared, None, deadline)
    cache = TieredBytecodeCache(
        [MemoryTier(), FileSystemTier(str(tmp_path / "cache"))], secret=SECRET
    )
    cached = run_tasks(kind, shared, cache, deadline)

    held = f"still held after the cached run: {cached}; after plain Jinja: {plain}"
    assert cached.fds <= plain.fds + FD_SLACK, held
    assert cached.rss <= plain.rss + RSS_SLACK, held
    stats = cache.stats()
    assert stats.string_hits > 0, stats
    # One template string for every task: compiled until admitted, then shared.
    assert stats.string_compiles <= 2, stats
