"""What the tier tests share to check a tier across ``os.fork``: a child forked while
the tier has a connection open (gunicorn ``--preload``, ``multiprocessing``) must open
its own, and parent and child must each read back exactly what they write."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import pytest

from tiered_bccache import Tier

__all__ = [
    "FORK_DEADLINE",
    "read_the_parents_entry",
    "use_across_a_fork",
    "value_of",
    "wrong_round_trips",
    "wrong_values",
]

#: How long a forked child may run before the test kills it and fails.
FORK_DEADLINE = 30.0

T = TypeVar("T", bound=Tier)


def value_of(who: str, i: int) -> bytes:
    """A value of ``who``'s own for its ``i``-th key, of a length of its own."""
    return f"{who}/{i}/".encode() * (1 + i % 50)


def wrong_round_trips(tier: Tier, who: str, rounds: int) -> list[str]:
    """Set and get ``rounds`` keys of ``who``'s own (:func:`value_of`); every one that
    came back other than exactly what was set, or raised, described."""
    wrong = []
    for i in range(rounds):
        key, value = f"{who}-{i}", value_of(who, i)
        try:
            tier.set(key, value)
            got = tier.get(key)
        except Exception as exc:
            wrong.append(f"{key}: {exc!r}"[:200])
            continue
        if got != value:
            wrong.append(f"{key}: got {got!r}"[:200])
    return wrong


def wrong_values(tier: Tier, who: str, rounds: int) -> list[str]:
    """The keys of ``who`` (see :func:`wrong_round_trips`) that do not read back exactly."""
    return [
        f"{who}-{i}: got {got!r}"[:200]
        for i in range(rounds)
        if (got := tier.get(f"{who}-{i}")) != value_of(who, i)
    ]


def read_the_parents_entry(tier: Tier) -> list[str]:
    """What a forked child does first by default: read what the parent wrote before."""
    got = tier.get("before-the-fork")
    return [] if got == b"parent" else [f"the parent's entry read back as {got!r}"]


def use_across_a_fork(
    tier: T,
    *,
    first: Callable[[T], list[str]] | None = None,
    rounds: int = 300,
    parent_writes: bool = True,
) -> tuple[list[str], list[str]]:
    """Fork while ``tier`` has a connection open. The child runs ``first`` (default
    :func:`read_the_parents_entry`; it returns what it found wrong), checks ``rounds``
    round trips of its own, reports through a pipe and leaves with ``os._exit``.

    With ``parent_writes`` the parent writes ``before-the-fork`` first, checks round
    trips of its own until the child has exited, then ``rounds`` more; without it the
    parent does not touch the tier (a test whose parent thread holds the tier's lock).
    Returns what went wrong in the child and in the parent; fails when the child runs
    past :data:`FORK_DEADLINE`."""
    check: Callable[[T], list[str]] = first or read_the_parents_entry
    if parent_writes:
        tier.set("before-the-fork", b"parent")
        assert tier.get("before-the-fork") == b"parent"
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process running threads forks: such forks happen
        # (a threaded server, multiprocessing) and are what the tier must survive.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        status = 70
        try:
            os.close(read_fd)
            try:
                wrong = check(tier)
            except Exception as exc:
                wrong = [f"{getattr(check, '__name__', 'first')}: {exc!r}"[:200]]
            wrong += wrong_round_trips(tier, "child", rounds)
            os.write(write_fd, json.dumps([len(wrong), wrong[:10]]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    parent: list[str] = []
    deadline = time.monotonic() + FORK_DEADLINE
    reaped, status, round_ = 0, 0, 0
    try:
        while not reaped:
            round_ += 1
            if parent_writes:
                parent += wrong_round_trips(tier, f"parent{round_}", 5)
            else:
                time.sleep(0.01)
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if not reaped and time.monotonic() > deadline:
                pytest.fail(f"the forked child did not finish within {FORK_DEADLINE} s")
        if parent_writes:
            parent += wrong_round_trips(tier, "parent-after", rounds)
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as report:
            data = report.read()
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    count, shown = json.loads(data)
    return [f"{count} wrong, first: {shown}"] if count else [], parent
