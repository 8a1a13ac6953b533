"""``tiered-bccache bench`` ended by SIGTERM (kill, timeout) or SIGHUP (a closed terminal)
cleans up as after Ctrl-C: the private memcached and redis-server it started are stopped,
the benchmark children it spawned are gone, its temporary directories are removed, the
tables already measured are on stdout, and it exits with 128 + the signal's number.

Each run is a real ``python -m tiered_bccache bench`` in a session of its own, so that
every process it starts shares its process group, and with TMPDIR pointed at the test's
own directory, so that the directories looked for are only its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SECRET, missing
from tests.test_cli import REPO
from tiered_bccache.benchkit.contenders import redis_available
from tiered_bccache.benchkit.servers import memcached_binary, redis_binary
from tiered_bccache.cli.bench import Terminated, _ending_signals_raise
from tiered_bccache.secret import ENV_VAR

#: How long any one wait of these tests may take: a hung run fails, it does not stall.
WAIT = 60.0


def group(pgid: int) -> dict[int, str]:
    """The live processes of process group ``pgid``: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        # Fields after the command's name: state, ppid, pgrp. A zombie is dead already.
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(entry)] = cmdline
    return found


def wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Poll ``ready`` until it holds; fail after WAIT seconds or if ``process`` ended."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            pytest.fail(f"bench ended (status {process.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {WAIT:g} s")


def require_servers() -> None:
    if memcached_binary() is None:
        missing("memcached is not installed (apt-get install memcached)")
    if redis_binary() is None:
        missing("redis-server is not installed (apt-get install redis-server)")
    if not redis_available():
        missing("redis-py is not installed (pip install 'tiered-bccache[redis]')")


def _default_signals() -> None:
    """In the child before exec: SIGTERM and SIGHUP at their default action, whatever the
    test run inherited."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("signum", "phase"),
    [(signal.SIGTERM, "servers"), (signal.SIGHUP, "processes")],
    ids=["SIGTERM-once-the-servers-run", "SIGHUP-in-the-whole-process-run"],
)
def test_bench_ended_by_a_signal_leaves_no_process_and_no_directory(
    tmp_path: Path, signum: signal.Signals, phase: str
) -> None:
    """SIGTERM once its servers and directory exist, SIGHUP while a benchmark child runs:
    afterwards no process of its group is alive, no tbc-* directory is left in its TMPDIR,
    it says why it stopped, exits 128 + the signal, and the tables it had measured are
    on stdout."""
    require_servers()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(tmpdir),
        ENV_VAR: SECRET.decode(),
    }
    # Enough rounds that the run is still going when the signal comes; the hit-path
    # table over three templates is measured in about a second.
    argv = [sys.executable, "-m", "tiered_bccache", "bench", "--count", "3", "--rounds", "40"]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environ,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            # As a terminal's session would start it: under nohup (or a CI runner that
            # ignores SIGHUP) bench rightly keeps an ignored SIGHUP ignored.
            preexec_fn=_default_signals,
        )
    pgid = process.pid
    try:

        def servers_and_directory() -> bool:
            commands = " ".join(group(pgid).values())
            return (
                "memcached" in commands
                and "redis-server" in commands
                and any(tmpdir.glob("tbc-bench-*"))
            )

        wait_for(
            "its memcached, redis-server and tbc-bench-* directory", servers_and_directory, process
        )
        if phase == "processes":
            wait_for(
                "a whole-process benchmark child",
                lambda: any("child.py" in c for c in group(pgid).values()),
                process,
            )
        os.kill(process.pid, signum)
        process.wait(timeout=WAIT)

        assert process.returncode == 128 + signum, err.read_text()
        assert f"terminated by {signum.name}" in err.read_text()
        # What the bench's own exit left behind is gone at once; a child killed at the
        # last moment may need its new parent to reap it: a bounded wait.
        deadline = time.monotonic() + 10
        while group(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group(pgid) == {}, f"left running: {group(pgid)}"
        assert sorted(p.name for p in tmpdir.iterdir()) == []
        if phase == "processes":
            # The hit-path table was printed when it was measured, before the signal.
            assert "contender" in out.read_text() and "floor-dict" in out.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
        # Whatever a failing run left (its servers re-parented): not this test's to keep.
        for pid in group(pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_only_the_first_signal_raises_and_the_handlers_come_back() -> None:
    """In this process: the first SIGTERM raises Terminated; a second one during the
    clean-up it started is ignored (it must not cut the clean-up short); the previous
    handlers are back afterwards, and a SIGHUP the caller ignores (nohup) stays ignored."""
    before = signal.getsignal(signal.SIGTERM)
    hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cleaned = False
    try:
        with pytest.raises(Terminated) as info, _ending_signals_raise():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(WAIT)  # the handler raises long before this ends
            finally:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here, and must not raise
                cleaned = True
        assert info.value.signum == signal.SIGTERM and cleaned
        assert signal.getsignal(signal.SIGTERM) is before
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, hup)
