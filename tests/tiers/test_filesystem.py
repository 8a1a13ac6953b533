"""FileSystemTier: private files, atomic replacement, planted files, LRU pruning, leases."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout
from jinja2 import DictLoader, Environment

from tests.conftest import SECRET
from tiered_bccache import (
    ConfigurationError,
    EntryError,
    FileSystemTier,
    Tier,
    TieredBytecodeCache,
)
from tiered_bccache.tiers.filesystem import STALE_TMP_SECONDS

from .tier_suite import ODD_KEYS, TierContract

#: Two payloads of different lengths and contents: a torn read matches neither.
PAYLOADS = (b"A" * 300_000, b"B" * 200_000 + bytes(range(256)) * 4)


class TestFileSystemTierContract(TierContract):
    """The filesystem tier keeps the byte-tier contract."""

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "cache"

    def make_tier(self) -> Tier:
        return FileSystemTier(self.directory)


class TestBoundedFileSystemTierContract(TestFileSystemTierContract):
    """With max_bytes (pruning after every 100 kB written, touching on hits) the contract
    still holds."""

    def make_tier(self) -> Tier:
        tier = FileSystemTier(self.directory, max_bytes=1_000_000)
        tier.touch_interval = 0
        return tier


@pytest.fixture
def tier(tmp_path: Path) -> FileSystemTier:
    return FileSystemTier(tmp_path / "cache")


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile.gettempdir() points into the test's own directory, so the default
    directory is created there instead of in the real /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def entry_names(tier: FileSystemTier) -> set[str]:
    return {name for name in os.listdir(tier.directory) if name.endswith(".tbc")}


def set_mtime(path: str, when: float) -> None:
    os.utime(path, (when, when))


def lock_names(tier: FileSystemTier) -> set[str]:
    return set(os.listdir(os.path.join(tier.directory, ".locks")))


def take_and_release(tier: FileSystemTier, key: str) -> None:
    lease = tier.lease(key)
    lease.acquire(timeout=5)
    lease.release()


def cannot_here(message: str) -> None:
    """Skip a test whose technique this machine lacks; under CI=true (root on Debian,
    where every technique works) that is a failure instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; under CI=true this is a failure, not a skip")
    pytest.skip(message)


def _run(*args: str) -> bool:
    try:
        done = subprocess.run(args, capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        return False
    return done.returncode == 0


@contextmanager
def untouchable(path: str) -> Iterator[str]:
    """Make the file at ``path`` refuse a change of its times, to root as well, while
    it stays readable: ``chattr +i`` (immutable), else a read-only bind mount of its
    directory. Yields the technique used."""
    if os.geteuid() == 0 and _run("chattr", "+i", path):
        try:
            yield "chattr +i"
        finally:
            _run("chattr", "-i", path)
        return
    directory = os.path.dirname(path)
    if os.geteuid() == 0 and _run("mount", "--bind", directory, directory):
        try:
            if _run("mount", "-o", "remount,ro,bind", directory):
                yield "read-only bind mount"
                return
        finally:
            if not _run("umount", directory):
                _run("umount", "-l", directory)
    cannot_here("cannot make a file immutable here (needs root, and chattr or mount)")


# -- keys and files ----------------------------------------------------------------------


def test_odd_keys_stay_inside_the_directory(tmp_path: Path, tier: FileSystemTier) -> None:
    """Keys such as '../../escape', '/etc/passwd' or 10 kB of text map to one file each,
    directly inside the directory."""
    for key in ODD_KEYS:
        tier.set(key, key.encode("utf-8", "surrogatepass")[:100])
    assert {os.path.dirname(tier.path(key)) for key in ODD_KEYS} == {tier.directory}
    assert len(entry_names(tier)) == len(ODD_KEYS)
    assert os.listdir(tmp_path) == ["cache"]
    assert all(len(name) <= 255 for name in os.listdir(tier.directory))


def test_lone_surrogate_key_works_for_entries_and_leases(tier: FileSystemTier) -> None:
    """A str that is not valid UTF-8 (a lone surrogate) is still a usable key."""
    tier.set("\ud800", b"value")
    assert tier.get("\ud800") == b"value"
    lease = tier.lease("\ud800")
    lease.acquire(timeout=1)
    lease.release()


@pytest.mark.parametrize("umask", [0, 0o022, 0o077])
def test_files_are_0600_and_a_created_directory_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """Entries, the lock directory and lock files are private to the user even under
    umask 0, and are not narrowed into uselessness by a strict umask."""
    old = os.umask(umask)
    try:
        tier = FileSystemTier(tmp_path / "cache")
        tier.set("key", b"value")
        lease = tier.lease("key")
        lease.acquire(timeout=1)
        lease.release()
    finally:
        os.umask(old)
    assert mode(tier.directory) == 0o700
    assert mode(tier.path("key")) == 0o600
    locks = os.path.join(tier.directory, ".locks")
    assert mode(locks) == 0o700
    assert {mode(os.path.join(locks, name)) for name in os.listdir(locks)} == {0o600}


@pytest.mark.parametrize("umask", [0, 0o022, 0o077])
def test_parent_directories_the_tier_creates_are_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """Every missing parent of the directory is created 0700 like the directory itself
    (os.makedirs would make them 0777 less the umask: 0777 under umask 0); a parent that
    already existed keeps its mode."""
    os.chmod(tmp_path, 0o751)
    old = os.umask(umask)
    try:
        tier = FileSystemTier(tmp_path / "a" / "b" / "cache")
        take_and_release(tier, "key")
    finally:
        os.umask(old)
    created = [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "cache"]
    assert [oct(mode(path)) for path in created] == [oct(0o700)] * 3
    assert mode(os.path.join(tier.directory, ".locks")) == 0o700
    assert mode(tmp_path) == 0o751


def test_parent_directories_removed_while_running_are_recreated_0700(tmp_path: Path) -> None:
    """When a cleanup removes the directory and its parents, a write recreates them all,
    0700, even under umask 0."""
    tier = FileSystemTier(tmp_path / "a" / "cache")
    shutil.rmtree(tmp_path / "a")
    old = os.umask(0)
    try:
        tier.set("k", b"v")
    finally:
        os.umask(old)
    assert (mode(tmp_path / "a"), mode(tier.directory)) == (0o700, 0o700)
    assert tier.get("k") == b"v"


def test_existing_directory_is_used_as_it_is(tmp_path: Path) -> None:
    """A directory the user made keeps its mode: the tier only tightens what it creates."""
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o750)
    FileSystemTier(directory).set("k", b"v")
    assert mode(directory) == 0o750


def test_directory_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    """Pointing the tier at a file fails at construction, naming the directory."""
    path = tmp_path / "file"
    path.write_bytes(b"not a directory")
    with pytest.raises(ConfigurationError, match="directory"):
        FileSystemTier(path)
    assert path.read_bytes() == b"not a directory"


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_max_bytes_is_refused_naming_it(tmp_path: Path, value: Any) -> None:
    """max_bytes must be a positive integer or None."""
    with pytest.raises(ConfigurationError, match="max_bytes"):
        FileSystemTier(tmp_path, max_bytes=value)


# -- the default directory -------------------------------------------------------------


def test_default_directory_is_per_user_and_0700(private_tempdir: Path) -> None:
    """With no argument the tier uses a directory named for the user, created 0700."""
    tier = FileSystemTier()
    assert tier.directory == str(private_tempdir / f"_tiered_bccache-{os.geteuid()}")
    st = os.lstat(tier.directory)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    tier.set("k", b"v")
    assert FileSystemTier().get("k") == b"v"


def test_default_directory_that_is_a_symlink_is_refused(private_tempdir: Path) -> None:
    """Another user could plant a link at the predictable path: it is never followed."""
    target = private_tempdir / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, private_tempdir / f"_tiered_bccache-{os.geteuid()}")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileSystemTier()
    assert os.listdir(target) == []


def test_default_path_that_is_a_file_is_refused(private_tempdir: Path) -> None:
    """A regular file at the default path is not taken for the directory."""
    (private_tempdir / f"_tiered_bccache-{os.geteuid()}").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileSystemTier()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory someone else owns needs root")
def test_default_directory_owned_by_someone_else_is_refused(private_tempdir: Path) -> None:
    """A world-writable directory another user made first is refused, and left alone."""
    path = private_tempdir / f"_tiered_bccache-{os.geteuid()}"
    path.mkdir()
    os.chmod(path, 0o777)
    os.chown(path, 54321, 54321)
    with pytest.raises(ConfigurationError, match="owned by uid 54321"):
        FileSystemTier()
    assert mode(path) == 0o777
    assert os.listdir(path) == []


@pytest.mark.parametrize("open_mode", [0o777, 0o755, 0o770, 0o701])
def test_default_directory_of_ours_open_to_others_is_refused_and_left_alone(
    private_tempdir: Path, open_mode: int
) -> None:
    """Our own default directory that group or others could enter or write is refused
    (whatever they planted while it was open would stay), naming the path, its mode and
    the remedy; it is not chmodded and nothing in it is read or removed."""
    path = private_tempdir / f"_tiered_bccache-{os.geteuid()}"
    path.mkdir()
    os.chmod(path, open_mode)
    planted = path / ".secret"
    planted.write_bytes(b"k" * 32)
    with pytest.raises(ConfigurationError) as info:
        FileSystemTier()
    message = str(info.value)
    assert str(path) in message and f"{open_mode:04o}" in message, message
    assert "remove it" in message, message
    assert mode(path) == open_mode
    assert planted.read_bytes() == b"k" * 32
    shutil.rmtree(path)  # what the message tells the user to do
    assert mode(FileSystemTier().directory) == 0o700


# -- atomicity and planted files -------------------------------------------------------


def _read_while_rewritten(directory: str, ready: Any, stop: Any, results: Any) -> None:
    """Child process: read the entry until told to stop; report reads and torn values."""
    tier = FileSystemTier(directory)
    reads = torn = 0
    first_bad = ""
    ready.set()
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        value = tier.get("entry")
        reads += 1
        if value not in PAYLOADS:
            torn += 1
            first_bad = first_bad or repr(value if value is None else (len(value), value[:8]))
    results.put((reads, torn, first_bad))


def test_reader_in_another_process_never_sees_a_partial_entry(tier: FileSystemTier) -> None:
    """While one process rewrites an entry with two alternating payloads for ~1.5 s,
    a reader in another process only ever gets one payload or the other, whole."""
    tier.set("entry", PAYLOADS[0])
    ctx = multiprocessing.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(
        target=_read_while_rewritten, args=(tier.directory, ready, stop, results), daemon=True
    )
    reader.start()
    try:
        assert ready.wait(60), "the reader process did not start"
        writes = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            writes += 1
            tier.set("entry", PAYLOADS[writes % 2])
        stop.set()
        reads, torn, first_bad = results.get(timeout=30)
    finally:
        stop.set()
        reader.join(timeout=30)
        if reader.is_alive():
            reader.kill()
            reader.join(timeout=10)
        results.close()
        results.join_thread()
    assert (torn, first_bad) == (0, "")
    assert writes > 20 and reads > 20, (writes, reads)


def test_set_replaces_a_planted_symlink_without_writing_through_it(
    tmp_path: Path, tier: FileSystemTier
) -> None:
    """A symlink planted at an entry's path is replaced by the entry; its target (a file
    outside the cache) is unchanged."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    os.symlink(outside, tier.path("entry"))
    tier.set("entry", b"cache entry")
    assert outside.read_bytes() == b"precious"
    assert not os.path.islink(tier.path("entry"))
    assert tier.get("entry") == b"cache entry"


@pytest.mark.parametrize("target", ["file", "directory", "dangling", "itself"])
def test_get_of_a_planted_symlink_is_a_rejected_entry(
    tmp_path: Path, tier: FileSystemTier, target: str
) -> None:
    """A symlink planted at an entry's path, whatever it points to, is not followed: get
    raises EntryError("format") (a rejected entry, a miss for the cache), not OSError
    (a failing tier)."""
    outside = tmp_path / "outside"
    if target == "file":
        outside.write_bytes(b"not an entry")
    elif target == "directory":
        outside.mkdir()
    link = tier.path("entry")
    os.symlink(link if target == "itself" else outside, link)
    with pytest.raises(EntryError) as info:
        tier.get("entry")
    assert info.value.reason == "format"
    assert "symbolic link" in str(info.value)


def test_get_of_a_planted_socket_or_directory_is_a_rejected_entry(
    tier: FileSystemTier,
) -> None:
    """A Unix socket (open fails with ENXIO) or a directory at an entry's path is a
    rejected entry too, and set replaces the socket."""
    os.mkdir(tier.path("directory"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(tier.path("socket"))
        for key, kind in (("directory", "a directory"), ("socket", "a socket")):
            with pytest.raises(EntryError, match=kind) as info:
                tier.get(key)
            assert info.value.reason == "format"
    tier.set("socket", b"value")
    assert tier.get("socket") == b"value"


def test_get_failing_for_the_directory_stays_an_os_error(tmp_path: Path) -> None:
    """A failure that says nothing about what is stored under the key (the directory
    replaced by a regular file: ENOTDIR; closed to us: EACCES) is the tier's error,
    raised as OSError, never turned into a rejected entry."""
    tier = FileSystemTier(tmp_path / "cache")
    tier.set("k", b"v")
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o700)
        os.seteuid(65534)  # nobody: the kernel refuses it root's 0700 directory
        try:
            with pytest.raises(PermissionError):
                tier.get("k")
        finally:
            os.seteuid(0)
    else:
        os.chmod(tier.directory, 0o000)
        try:
            with pytest.raises(PermissionError):
                tier.get("k")
        finally:
            os.chmod(tier.directory, 0o700)
    shutil.rmtree(tier.directory)
    Path(tier.directory).write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        tier.get("k")


def test_get_of_a_planted_fifo_is_a_rejected_entry_without_blocking(
    tier: FileSystemTier,
) -> None:
    """A FIFO at an entry's path makes get raise EntryError("format") at once, never
    block on the open or the read (which would wait for a writer forever)."""
    path = tier.path("entry")
    os.mkfifo(path, 0o600)
    outcome: list[BaseException | bytes | None] = []

    def read() -> None:
        try:
            outcome.append(tier.get("entry"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=30)  # a blocked open never returns: any bound tells them apart
    if thread.is_alive():
        # Unblock the stuck open so the thread ends; the test has failed already.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(timeout=2)
        pytest.fail("get blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], EntryError), outcome
    assert outcome[0].reason == "format" and "FIFO" in str(outcome[0])


def test_set_replaces_a_planted_fifo(tier: FileSystemTier) -> None:
    """A FIFO at an entry's path is replaced by the entry, without blocking."""
    os.mkfifo(tier.path("entry"), 0o600)
    tier.set("entry", b"value")
    assert tier.get("entry") == b"value"


# -- a planted lock directory ------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file in ``directory``: its bytes, mode and mtime (ns)."""
    out = {}
    for path in sorted(directory.iterdir()):
        st = os.lstat(path)
        out[path.name] = (path.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory outside the cache holding lock files that are not ours."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "Gemfile.lock").write_bytes(b"GEM\n  remote: https://rubygems.org/\n")
    (path / "poetry.lock").write_bytes(b'[[package]]\nname = "jinja2"\n')
    return path


def use_every_lock(tier: FileSystemTier) -> None:
    """Leases (for keys whose lock files would be named like the project's), writes past
    the bound (pruning), an explicit prune and a clear."""
    for key in ("Gemfile", "poetry", "other"):
        take_and_release(tier, key)
    for i in range(40):
        tier.set(f"e{i}", b"x" * 500)
    tier.set("poetry", b"v")
    tier.prune()
    tier.clear()


def assert_private_lock_directory(tier: FileSystemTier) -> None:
    st = os.lstat(os.path.join(tier.directory, ".locks"))
    assert stat.S_ISDIR(st.st_mode), "not a real directory"
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o700)


@pytest.mark.parametrize("when", ["before the first lock", "in place of the tier's own"])
def test_planted_locks_symlink_is_replaced_and_its_target_never_touched(
    tmp_path: Path, project: Path, when: str
) -> None:
    """A symlink planted as .locks (pointing at a project with Gemfile.lock and
    poetry.lock) is removed, never followed: leases, pruning and clear use a private
    directory made in its place, and the project keeps every file, byte for byte."""
    before = snapshot(project)
    tier = FileSystemTier(tmp_path / "cache", max_bytes=5_000)
    locks = os.path.join(tier.directory, ".locks")
    if when == "in place of the tier's own":
        take_and_release(tier, "e0")
        shutil.rmtree(locks)
    os.symlink(project, locks)
    use_every_lock(tier)
    assert snapshot(project) == before
    assert_private_lock_directory(tier)
    assert lock_names(tier) == {".prune.lock"}


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_planted_locks_file_is_replaced_by_a_private_directory(tmp_path: Path, kind: str) -> None:
    """A regular file or a FIFO planted as .locks is removed and a private directory made
    in its place: leases, pruning on write and clear work instead of failing."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=5_000)
    locks = os.path.join(tier.directory, ".locks")
    if kind == "file":
        Path(locks).write_bytes(b"planted")
    else:
        os.mkfifo(locks, 0o666)
    use_every_lock(tier)
    assert_private_lock_directory(tier)
    take_and_release(tier, "k")
    assert lock_names(tier) == {".prune.lock", "k.lock"}


def test_symlink_swapped_in_during_pruning_is_not_scanned(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When .locks is replaced by a symlink after pruning has taken its lock (between the
    scan of the entries and that of the lock files), the lock files are not scanned
    through it: pruning fails (a counted error), the project is untouched, and the next
    lease puts a private directory back."""
    before = snapshot(project)
    tier = FileSystemTier(tmp_path / "cache")
    take_and_release(tier, "e0")
    locks = os.path.join(tier.directory, ".locks")
    scan = tier._scan

    def scan_then_swap() -> list[os.DirEntry[str]]:
        entries = scan()
        if not os.path.islink(locks):
            os.rename(locks, tmp_path / "aside")
            os.symlink(project, locks)
        return entries

    monkeypatch.setattr(tier, "_scan", scan_then_swap)
    with pytest.raises(OSError):
        tier.prune()
    monkeypatch.undo()
    assert snapshot(project) == before
    take_and_release(tier, "poetry")
    assert snapshot(project) == before
    assert_private_lock_directory(tier)


@pytest.mark.parametrize("owner", ["ours, mode 0777", "another user's"])
def test_untrusted_locks_directory_turns_leases_off_and_is_left_alone(
    tmp_path: Path, project: Path, owner: str
) -> None:
    """A real .locks directory that another user owns, or that group and others may write
    to, is refused, not used or emptied: lease raises PermissionError naming it, pruning
    still bounds the entries and then raises, clear empties the entries and then raises,
    and nothing in it (a planted symlink to the project's poetry.lock) is touched. A
    cache over the tier renders, counting the errors."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=5_000)
    locks = Path(tier.directory, ".locks")
    locks.mkdir()
    os.symlink(project / "poetry.lock", locks / "poetry.lock")
    os.chmod(locks, 0o777)
    if owner == "another user's":
        if os.geteuid() != 0:
            cannot_here("making a directory someone else owns needs root")
        os.chmod(locks, 0o700)
        os.chown(locks, 54321, 54321)
    before, inside = snapshot(project), sorted(os.listdir(locks))
    with pytest.raises(PermissionError, match=str(locks)):
        tier.lease("poetry")
    for i in range(40):
        try:
            tier.set(f"e{i}", b"x" * 500)
        except PermissionError:
            pass
    assert tier.size()[1] <= 5_000
    with pytest.raises(PermissionError):
        tier.prune()
    with pytest.raises(PermissionError):
        tier.clear()
    assert tier.size() == (0, 0)

    cache = TieredBytecodeCache([tier], secret=SECRET)
    env = Environment(loader=DictLoader({"t.html": "{{ 1 + 1 }}"}), bytecode_cache=cache)
    assert env.get_template("t.html").render() == "2"
    assert cache.stats().tiers[0].errors >= 1
    assert snapshot(project) == before
    assert sorted(os.listdir(locks)) == inside
    assert os.path.islink(locks / "poetry.lock")


# -- pruning -----------------------------------------------------------------------------


def write_entries(directory: Path, count: int, size: int) -> FileSystemTier:
    """``count`` entries of ``size`` bytes, written without a bound (so nothing is pruned
    yet), with mtimes one second apart: entry 0 is the least recently used."""
    unbounded = FileSystemTier(directory)
    base = time.time() - 3600
    for i in range(count):
        unbounded.set(f"e{i}", bytes([i]) * size)
        set_mtime(unbounded.path(f"e{i}"), base + i)
    return unbounded


def test_prune_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    """Pruning removes by last use, not by creation: an old entry that was just read
    survives, the next oldest go, and the directory ends within max_bytes."""
    write_entries(tmp_path / "cache", 12, 1000)
    tier = FileSystemTier(tmp_path / "cache", max_bytes=10_000)
    tier.touch_interval = 0
    assert tier.get("e0") == bytes([0]) * 1000  # e0 is now the most recently used
    tier.prune()
    assert entry_names(tier) == {f"e{i}.tbc" for i in [0, *range(4, 12)]}
    assert tier.size() == (9, 9000)


def test_prune_within_max_bytes_removes_nothing(tmp_path: Path) -> None:
    """A directory at or under max_bytes is left as it is."""
    write_entries(tmp_path / "cache", 10, 1000)
    tier = FileSystemTier(tmp_path / "cache", max_bytes=10_000)
    tier.prune()
    assert tier.size() == (10, 10_000)


def test_get_touches_an_entry_at_most_every_touch_interval(tmp_path: Path) -> None:
    """A hit marks its file as used only when the mark is older than touch_interval, so
    hot entries do not cost a metadata write per hit; an unbounded tier never touches."""
    write_entries(tmp_path / "cache", 2, 10)
    tier = FileSystemTier(tmp_path / "cache", max_bytes=10_000)
    tier.touch_interval = 60.0
    now = time.time()
    set_mtime(tier.path("e0"), now - 30)
    set_mtime(tier.path("e1"), now - 120)
    tier.get("e0")
    tier.get("e1")
    assert os.stat(tier.path("e0")).st_mtime == pytest.approx(now - 30)
    assert os.stat(tier.path("e1")).st_mtime >= now - 5

    unbounded = FileSystemTier(tmp_path / "cache")
    set_mtime(tier.path("e1"), now - 120)
    unbounded.get("e1")
    assert os.stat(tier.path("e1")).st_mtime == pytest.approx(now - 120)


def test_hit_whose_file_cannot_be_touched_is_still_a_hit(tier: FileSystemTier) -> None:
    """When marking a hit as used fails (an immutable file, a read-only mount), get still
    returns the bytes it read; the failure is counted in touch_failures."""
    bounded = FileSystemTier(tier.directory, max_bytes=1_000_000)
    bounded.touch_interval = 0
    bounded.set("k", b"value")
    old = time.time() - 3600
    set_mtime(bounded.path("k"), old)
    with untouchable(bounded.path("k")) as technique:
        got = [bounded.get("k") for _ in range(3)]
    assert got == [b"value"] * 3, technique
    assert bounded.touch_failures == 3, technique
    assert os.stat(bounded.path("k")).st_mtime == pytest.approx(old)


def test_directory_stays_near_max_bytes_while_writing(tmp_path: Path) -> None:
    """Writing 1 MB of entries of mixed sizes into a 50 kB tier, the directory never
    exceeds max_bytes by more than the tenth written between prunes, and a final prune
    brings it within max_bytes."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=50_000)
    worst = 0
    for i in range(400):
        tier.set(f"e{i}", b"x" * (500 + (i * 37) % 4000))
        worst = max(worst, tier.size()[1])
    assert worst < 50_000 + 5_000
    tier.prune()
    assert tier.size()[1] <= 50_000


def test_pruning_is_amortized_over_a_tenth_of_max_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N writes of one size run prune about N * size / (max_bytes / 10) times, not N
    times: the directory scan is paid once per tenth of max_bytes written."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=100_000)
    runs = 0
    prune = tier.prune

    def counting_prune() -> None:
        nonlocal runs
        runs += 1
        prune()

    monkeypatch.setattr(tier, "prune", counting_prune)
    for i in range(500):
        tier.set(f"e{i}", b"x" * 1000)
    assert runs == 500 * 1000 // 10_000
    assert tier.size()[1] <= 100_000


@pytest.mark.parametrize("max_bytes", [None, 1_000_000])
def test_prune_removes_stale_temporary_files_only(tmp_path: Path, max_bytes: int | None) -> None:
    """Temporary files left by a writer that died (older than STALE_TMP_SECONDS) are
    removed; a fresh one, maybe being written right now, is kept."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=max_bytes)
    stale = os.path.join(tier.directory, ".tmp-stale")
    fresh = os.path.join(tier.directory, ".tmp-fresh")
    for path in (stale, fresh):
        Path(path).write_bytes(b"partial")
    set_mtime(stale, time.time() - STALE_TMP_SECONDS - 60)
    set_mtime(fresh, time.time() - STALE_TMP_SECONDS + 60)
    tier.prune()
    assert (os.path.exists(stale), os.path.exists(fresh)) == (False, True)


# -- the directory's life ----------------------------------------------------------------


def test_directory_removed_while_running_is_recreated_on_next_set(
    tier: FileSystemTier,
) -> None:
    """After a cleanup job deletes the directory, get misses and set recreates it, 0700."""
    tier.set("a", b"1")
    shutil.rmtree(tier.directory)
    assert tier.get("a") is None
    tier.delete("a")
    tier.set("b", b"2")
    assert tier.get("b") == b"2"
    assert mode(tier.directory) == 0o700


def test_directory_removed_while_running_does_not_break_clear_or_lease(
    tier: FileSystemTier,
) -> None:
    """clear, lease and prune on a deleted directory recreate it instead of failing."""
    tier.set("a", b"1")
    shutil.rmtree(tier.directory)
    tier.clear()
    shutil.rmtree(tier.directory)
    lease = tier.lease("a")
    lease.acquire(timeout=1)
    lease.release()
    shutil.rmtree(tier.directory)
    tier.prune()
    assert mode(tier.directory) == 0o700


def test_clear_removes_entries_and_unheld_locks_but_not_a_held_lease_or_other_files(
    tier: FileSystemTier,
) -> None:
    """clear deletes every entry and every lock file nobody holds, keeps the lock file of
    a lease being held (deleting it would let a second process take the same lease),
    and leaves files that are not entries, such as the host key."""
    for i in range(5):
        tier.set(f"e{i}", b"v")
        take_and_release(tier, f"e{i}")
    lease = tier.lease("e0")
    lease.acquire(timeout=1)
    Path(tier.directory, ".secret").write_bytes(b"k" * 32)
    try:
        tier.clear()
        assert lock_names(tier) == {"e0.lock", ".prune.lock"}
        with pytest.raises(Timeout):
            tier.lease("e0").acquire(timeout=0)
    finally:
        lease.release()
    assert entry_names(tier) == set()
    assert sorted(os.listdir(tier.directory)) == [".locks", ".secret"]
    tier.clear()
    assert lock_names(tier) == {".prune.lock"}


def test_clear_keeps_a_write_in_progress_and_removes_stale_temporary_files(
    tier: FileSystemTier,
) -> None:
    """clear leaves a fresh temporary file (another process may be about to rename it
    into place; removing it would fail that write) and removes stale ones."""
    tier.set("entry", b"v")
    in_progress = Path(tier.directory, ".tmp-in-progress")
    stale = Path(tier.directory, ".tmp-stale")
    for path in (in_progress, stale):
        path.write_bytes(b"partial")
    set_mtime(str(stale), time.time() - STALE_TMP_SECONDS - 60)
    tier.clear()
    assert (in_progress.exists(), stale.exists(), tier.get("entry")) == (True, False, None)
    os.replace(in_progress, tier.path("late"))
    assert tier.get("late") == b"partial"


def test_lease_on_a_key_named_like_an_internal_lock_does_not_block_clear(
    tier: FileSystemTier,
) -> None:
    """Holding the lease of any key, even 'prune', never blocks clear or pruning."""
    tier.set("entry", b"v")
    lease = tier.lease("prune")
    lease.acquire(timeout=1)
    try:
        tier.clear()  # sharing the prune lock, this would raise Timeout after 10 s
        tier.prune()  # and this would skip pruning
    finally:
        lease.release()
    assert tier.get("entry") is None


# -- leases across processes -------------------------------------------------------------


def _hold_lease(directory: str, key: str, ready: Any) -> None:
    """Child process: take the lease, say so, and hold it until killed (at most 60 s)."""
    lease = FileSystemTier(directory).lease(key)
    lease.acquire(timeout=5)
    ready.set()
    time.sleep(60)


def test_lease_excludes_another_process_until_it_is_killed(tier: FileSystemTier) -> None:
    """A lease held by another process cannot be taken; once that process is dead by
    SIGKILL (no cleanup), the kernel has dropped the lock: it is free at the first try."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lease, args=(tier.directory, "k", ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60), "the holder process did not take the lease"
        lease = tier.lease("k")
        assert isinstance(lease, FileLock)
        with pytest.raises(Timeout):
            lease.acquire(timeout=0.3)
        holder.kill()
        holder.join(timeout=30)
        assert holder.exitcode == -9
        lease.acquire(timeout=0)
        assert lease.is_locked
        lease.release()
    finally:
        if holder.is_alive():
            holder.kill()
        holder.join(timeout=10)


def test_leases_of_different_keys_are_independent(tier: FileSystemTier) -> None:
    """Holding one key's lease does not block another key's."""
    first, second = tier.lease("a"), tier.lease("b")
    first.acquire(timeout=1)
    try:
        second.acquire(timeout=0)
        second.release()
    finally:
        first.release()


def _try_lease(directory: str, key: str, results: Any) -> None:
    """Child process: report whether ``key``'s lease can be taken at once."""
    lease = FileSystemTier(directory).lease(key)
    try:
        lease.acquire(timeout=0)
    except Timeout:
        results.put("held elsewhere")
        return
    lease.release()
    results.put("taken")


def lease_from_another_process(ctx: Any, directory: str, key: str) -> str:
    results = ctx.Queue()
    child = ctx.Process(target=_try_lease, args=(directory, key, results), daemon=True)
    child.start()
    try:
        return str(results.get(timeout=60))
    finally:
        child.join(timeout=30)
        results.close()
        results.join_thread()


def test_pruning_removes_unheld_lock_files_and_never_breaks_a_held_lease(
    tmp_path: Path,
) -> None:
    """Pruning removes the lock files of pruned (or never written) entries, keeps those
    of the entries kept, and keeps the lock file of a lease another process holds: a
    third process still cannot take that lease after the prune, nor after clear, until
    the holder dies."""
    write_entries(tmp_path / "cache", 12, 1000)  # e0 oldest ... e11 newest
    tier = FileSystemTier(tmp_path / "cache", max_bytes=10_000)
    for i in range(12):
        take_and_release(tier, f"e{i}")
    take_and_release(tier, "failed-compile")  # a lease whose entry was never written
    ctx = multiprocessing.get_context("spawn")
    holders = []
    try:
        # e0 will be pruned; "compiling" has no entry yet: both leases are held.
        for key in ("e0", "compiling"):
            ready = ctx.Event()
            holder = ctx.Process(target=_hold_lease, args=(tier.directory, key, ready))
            holder.daemon = True
            holder.start()
            holders.append(holder)
            assert ready.wait(60), f"the holder of {key} did not take the lease"
        tier.prune()
        kept = {f"e{i}" for i in range(3, 12)}
        assert entry_names(tier) == {f"{key}.tbc" for key in kept}
        assert lock_names(tier) == {f"{key}.lock" for key in kept | {"e0", "compiling"}} | {
            ".prune.lock"
        }
        for key in ("e0", "compiling"):
            assert lease_from_another_process(ctx, tier.directory, key) == "held elsewhere"
        tier.clear()
        assert lock_names(tier) == {"e0.lock", "compiling.lock", ".prune.lock"}
        assert lease_from_another_process(ctx, tier.directory, "e0") == "held elsewhere"
        holders[0].kill()
        holders[0].join(timeout=30)
        assert lease_from_another_process(ctx, tier.directory, "e0") == "taken"
        tier.prune()
        assert lock_names(tier) == {"compiling.lock", ".prune.lock"}
    finally:
        for holder in holders:
            if holder.is_alive():
                holder.kill()
            holder.join(timeout=30)


def test_lock_files_stay_bounded_by_the_entries_kept(tmp_path: Path) -> None:
    """Taking a lease and writing an entry for 1000 distinct keys (what the cache does on
    each miss) into a tier bounded to about 100 entries leaves a lock file only for the
    entries on disk: .locks/ does not grow with the number of keys ever seen."""
    tier = FileSystemTier(tmp_path / "cache", max_bytes=10_000)
    value = b"x" * 100
    worst = 0
    for i in range(1000):
        key = f"template-{i}"
        lease = tier.lease(key)
        lease.acquire(timeout=5)
        tier.set(key, value)
        lease.release()
        if i % 37 == 0:
            entries, locks = len(entry_names(tier)), len(lock_names(tier))
            assert entries <= 100 + 10  # plus the tenth written between two prunes
            worst = max(worst, locks)
            assert locks <= entries + 1, (i, entries, locks)  # 1: the prune lock
    assert 50 < worst <= 100 + 10 + 1
    tier.prune()
    assert lock_names(tier) == {name[:-4] + ".lock" for name in entry_names(tier)} | {".prune.lock"}


#: Runs in a fresh interpreter: the tier's module is loaded without the package's
#: __init__ (which imports the cache), so that only what the tier imports is counted.
TIER_HIT_IMPORTS = """
import sys, types
package, directory = sys.argv[1], sys.argv[2]
for name, path in (("tiered_bccache", package), ("tiered_bccache.tiers", package + "/tiers")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from tiered_bccache.tiers.filesystem import FileSystemTier
tier = FileSystemTier(directory, max_bytes=1_000_000)
tier.touch_interval = 0
assert tier.get("k") == b"value"
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] == "filelock")))
"""


def test_filesystem_tier_hit_does_not_import_filelock(tier: FileSystemTier) -> None:
    """Importing the filesystem tier, building one and a hit (with its touch) load no
    filelock module (8-17 ms): it is imported when a lock is first needed."""
    tier.set("k", b"value")
    set_mtime(tier.path("k"), time.time() - 3600)
    package = str(Path(__file__).resolve().parents[2] / "tiered_bccache")
    done = subprocess.run(
        [sys.executable, "-c", TIER_HIT_IMPORTS, package, tier.directory],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    assert os.stat(tier.path("k")).st_mtime > time.time() - 60  # the hit touched it


#: Runs in a fresh interpreter: a cache over memory and the filesystem tier loads a
#: template; with "hit", its entry must come from the filesystem tier.
PACKAGE_HIT_IMPORTS = """
import sys
from jinja2 import DictLoader, Environment
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
directory, secret, expect = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(directory)], secret=secret)
env = Environment(loader=DictLoader({"t.html": "{{ 1 + 1 }}"}), bytecode_cache=cache)
assert env.get_template("t.html").render() == "2"
hits = cache.stats().tiers[1].hits
assert hits == (1 if expect == "hit" else 0), cache.stats()
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] == "filelock")))
"""


def test_package_import_and_a_filesystem_hit_do_not_import_filelock(tmp_path: Path) -> None:
    """``import tiered_bccache`` and a template loaded from the filesystem tier load no
    filelock module; a miss (which takes the compile lease) does."""
    outputs = []
    for expect in ("miss", "hit"):
        done = subprocess.run(
            [sys.executable, "-c", PACKAGE_HIT_IMPORTS, str(tmp_path / "cache"), "s" * 32, expect],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    assert "filelock" in outputs[0].split()
    assert outputs[1] == ""


# -- what the command line reports -------------------------------------------------------


def test_describe_reports_the_directory_its_entries_and_bytes_on_disk(tmp_path: Path) -> None:
    """describe() gives what stats shows: the directory, entries and bytes as size() counts
    them, max_bytes; probe() returns, since the directory is on this host."""
    tier = FileSystemTier(tmp_path / "fs", max_bytes=10_000)
    tier.set("a", b"x" * 100)
    tier.set("b", b"y" * 30)
    assert tier.describe() == {
        "name": f"filesystem:{tmp_path / 'fs'}",
        "kind": "filesystem",
        "directory": str(tmp_path / "fs"),
        "exists": True,
        "entries": 2,
        "bytes": 130,
        "max_bytes": 10_000,
    }
    tier.probe()  # returns


# -- pickling ----------------------------------------------------------------------------


def test_pickle_keeps_directory_and_max_bytes(tier: FileSystemTier, tmp_path: Path) -> None:
    """A copy (as a process pool makes) uses the same directory and bound, and sees the
    original's entries."""
    bounded = FileSystemTier(tmp_path / "cache", max_bytes=123_456)
    bounded.set("k", b"v")
    copy = pickle.loads(pickle.dumps(bounded))
    assert (copy.directory, copy.max_bytes) == (bounded.directory, 123_456)
    assert copy.get("k") == b"v"


def test_pickle_of_a_relative_directory_keeps_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tier given a relative path is unpickled onto the same absolute directory, even
    where the working directory differs (as in a spawned worker)."""
    monkeypatch.chdir(tmp_path)
    tier = FileSystemTier("relative-cache")
    tier.set("k", b"v")
    data = pickle.dumps(tier)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    copy = pickle.loads(data)
    assert copy.directory == str(tmp_path / "relative-cache")
    assert copy.get("k") == b"v"


def test_pickle_of_the_default_directory_stays_per_user(private_tempdir: Path) -> None:
    """A tier on the default directory is unpickled onto the default directory."""
    tier = FileSystemTier()
    assert pickle.loads(pickle.dumps(tier)).directory == tier.directory
