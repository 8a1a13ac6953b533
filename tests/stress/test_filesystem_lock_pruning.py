"""Lock files pruned while other processes take and release the same leases: mutual
exclusion holds throughout.

Deleting a lock file is the classic way to break flock-based exclusion: a process opens
the file, another deletes it, a third creates a new file at the path and locks it, and
the first then locks the deleted inode: two holders. The filesystem tier deletes a lock
file only while holding it, and filelock, after its flock succeeds, drops an inode that
is no longer linked and opens the path again. These tests pin that with real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from tiered_bccache import FileSystemTier

KEYS = ("k0", "k1", "k2")
WORKERS = 3
SECONDS = 2.0


def _take_leases(directory: str, markers: str, start: Any, results: Any) -> None:
    """Child process: for SECONDS, take each key's lease in turn and, while holding it,
    claim the key's marker directory (mkdir fails if another holder has it); report
    (leases taken, overlaps seen)."""
    tier = FileSystemTier(directory)
    taken = overlaps = 0
    start.wait(60)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and taken < 200_000:
        key = KEYS[taken % len(KEYS)]
        lease = tier.lease(key)
        lease.acquire(timeout=30, poll_interval=0.0005)
        marker = os.path.join(markers, key)
        try:
            os.mkdir(marker)
        except FileExistsError:
            overlaps += 1  # another process holds the same lease right now
        else:
            os.rmdir(marker)
        lease.release()
        taken += 1
    results.put((taken, overlaps))


def test_leases_stay_exclusive_while_their_lock_files_are_pruned(tmp_path: Path) -> None:
    """Three processes take and release the leases of three keys as fast as they can for
    2 s while this process prunes in a loop, deleting every lock file it finds unheld
    (the keys have no entries): no two processes ever hold one key's lease at once, and
    the lock files were in fact deleted and recreated many times meanwhile."""
    tier = FileSystemTier(tmp_path / "cache")
    markers = tmp_path / "markers"
    markers.mkdir()
    locks = Path(tier.directory, ".locks")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(
            target=_take_leases,
            args=(tier.directory, str(markers), start, results),
            daemon=True,
        )
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    inodes: set[int] = set()
    prunes = 0
    try:
        start.set()
        deadline = time.monotonic() + 60
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            tier.prune()
            prunes += 1
            for key in KEYS:
                try:
                    inodes.add(os.stat(locks / f"{key}.lock").st_ino)
                except FileNotFoundError:
                    pass
            if prunes >= 100_000:
                break
        outcomes = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=10)
        results.close()
        results.join_thread()
    taken = sum(t for t, _ in outcomes)
    overlaps = sum(o for _, o in outcomes)
    print(f"leases taken {taken}, prunes {prunes}, lock-file inodes seen {len(inodes)}")
    assert overlaps == 0, f"{overlaps} overlapping holds in {taken} leases"
    assert all(t > 10 for t, _ in outcomes), outcomes
    # Inode numbers may be reused after a delete: distinct ones are a lower bound.
    assert len(inodes) > len(KEYS), "the lock files were never deleted under contention"
