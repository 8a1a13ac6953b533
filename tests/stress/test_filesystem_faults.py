"""The filesystem tier's directory deleted, read-only, full, closed to us, or holding
truncated, garbage or planted files, stale temporary files and stale locks: reads never
raise into a render, failed writes still reach the other tiers, and ``strict=True``
turns the same faults into :class:`TierError`.

The tests run as root on the CI machines, where permission bits do not apply; each fault
uses a real technique that works for the current user and says which one ran:

- read-only: ``chmod 0500`` for a normal user; as root a read-only bind mount (EROFS),
  or, where mounting is not permitted, a regular file put in the directory's place, so
  that every path under it fails with ENOTDIR.
- full: a small real filesystem mounted on the directory and filled (ENOSPC): a 256 kB
  tmpfs, or a 1 MiB ext4 image on a loop device. Skipped where neither can be mounted,
  and a failure instead under ``CI=true`` (root on Debian, where both work).
- permission denied: ``chmod 0000`` for a normal user; as root, the effective uid is
  switched to ``nobody`` around the renders (``seteuid``; the saved uid stays 0, so it
  is switched back), and the kernel refuses a 0700 root-owned directory (EACCES).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment

from tests.conftest import SECRET
from tests.stress.workers import HOLD_LEASE, lease_key
from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, TierError, TierStats
from tiered_bccache.benchkit.corpus import generate_corpus, render_context
from tiered_bccache.tiers.filesystem import STALE_TMP_SECONDS

NOBODY = 65534
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Corpus:
    templates: dict[str, str]
    names: tuple[str, ...]
    expected: dict[str, str]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Ten corpus templates of 1-4 kB, served from memory (a DictLoader, so that only
    the cache touches the filesystem), and what plain Jinja renders each to."""
    directory = tmp_path_factory.mktemp("corpus")
    names = generate_corpus(directory, count=10, seed=11, min_size=1024, max_size=4096)
    templates = {n: (directory / n).read_text(encoding="utf-8") for n in names}
    env = Environment(loader=DictLoader(templates))
    context = render_context()
    return Corpus(templates, tuple(names), {n: env.get_template(n).render(context) for n in names})


@dataclass
class Rig:
    """Memory over the filesystem tier under test over a second, healthy byte tier."""

    memory: MemoryTier
    faulty: FileSystemTier
    backup: FileSystemTier | None
    cache: TieredBytecodeCache
    env: Environment
    corpus: Corpus

    def tier(self, index: int) -> TierStats:
        return self.cache.stats().tiers[index]

    def cold_round(self, names: tuple[str, ...] | None = None) -> list[str]:
        """Empty the memory tier and render ``names`` (default: all); return the outputs
        (compared by the caller, so that this may run while the process is not root)."""
        self.memory.clear()
        context = render_context()
        return [self.env.get_template(n).render(context) for n in names or self.corpus.names]

    def check(self, outputs: list[str], names: tuple[str, ...] | None = None) -> None:
        assert outputs == [self.corpus.expected[n] for n in names or self.corpus.names]


def make_rig(
    corpus: Corpus,
    directory: Path,
    backup: Path | None = None,
    *,
    strict: bool = False,
    lease_timeout: float = 2.0,
    max_bytes: int | None = None,
) -> Rig:
    memory = MemoryTier()
    faulty = FileSystemTier(directory, max_bytes=max_bytes)
    tiers: list[MemoryTier | FileSystemTier] = [memory, faulty]
    second = None if backup is None else FileSystemTier(backup)
    if second is not None:
        tiers.append(second)
    cache = TieredBytecodeCache(tiers, secret=SECRET, strict=strict, lease_timeout=lease_timeout)
    env = Environment(loader=DictLoader(corpus.templates), bytecode_cache=cache, cache_size=0)
    return Rig(memory, faulty, second, cache, env, corpus)


def entry_files(directory: Path) -> list[Path]:
    """The entry files in a cache directory (``*.tbc``: the tier's naming, looked at
    from outside because these tests plant files beside them)."""
    return sorted(directory.glob("*.tbc"))


# -- the techniques ----------------------------------------------------------------------


def _mount(*args: str) -> bool:
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", *args], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def _umount(directory: Path) -> None:
    done = subprocess.run(["umount", str(directory)], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:  # something still has it open: detach it anyway
        subprocess.run(
            ["umount", "-l", str(directory)], capture_output=True, timeout=30, check=False
        )


@contextmanager
def read_only(directory: Path) -> Iterator[str]:
    """Make ``directory`` read-only for this process; yield the technique used."""
    if not IS_ROOT:
        os.chmod(directory, 0o500)
        try:
            yield "chmod 0500"
        finally:
            os.chmod(directory, 0o700)
        return
    if _mount("--bind", str(directory), str(directory)):
        try:
            if _mount("-o", "remount,ro,bind", str(directory)):
                yield "read-only bind mount"
                return
        finally:
            _umount(directory)
    # Root without mount(2): no permission bit stops root, but a path through a regular
    # file fails for everyone (ENOTDIR), reads and writes alike.
    aside = directory.with_name(directory.name + ".aside")
    os.rename(directory, aside)
    directory.write_bytes(b"")
    try:
        yield "regular file in place of the directory"
    finally:
        directory.unlink()
        os.rename(aside, directory)


@contextmanager
def denied(directory: Path) -> Iterator[str]:
    """Make ``directory`` refuse this process (EACCES); yield the technique used.

    As root, the effective uid is ``nobody`` inside the block: keep assertions, and
    anything that could import a module from root's 0700 home, outside it."""
    if not IS_ROOT:
        os.chmod(directory, 0o000)
        try:
            yield "chmod 0000"
        finally:
            os.chmod(directory, 0o700)
        return
    os.chmod(directory, 0o700)
    os.seteuid(NOBODY)
    try:
        yield "seteuid(nobody) on a 0700 root-owned directory"
    finally:
        os.seteuid(0)


SMALL_FILESYSTEMS = ("tmpfs", "ext4 on a loop device")


def cannot_here(message: str) -> None:
    """Skip a test whose technique this machine lacks; under CI=true that is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; under CI=true this is a failure, not a skip")
    pytest.skip(message)


def _mount_small(kind: str, directory: Path) -> bool:
    """Mount a small filesystem of ``kind`` on ``directory``, 0700; False if we cannot."""
    if not IS_ROOT:
        return False
    if kind == "tmpfs":
        return _mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(directory))
    image = directory.with_name(directory.name + ".ext4")
    with open(image, "wb") as f:
        f.truncate(1024 * 1024)
    try:
        made = subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        return False
    if made.returncode != 0 or not _mount("-o", "loop", str(image), str(directory)):
        return False
    os.chmod(directory, 0o700)
    return True


def _any_small_filesystem(tmp: Path) -> str | None:
    """The first kind of small filesystem that can be mounted here, tried on a scratch
    directory, or None."""
    for kind in SMALL_FILESYSTEMS:
        scratch = tmp / f"probe-{SMALL_FILESYSTEMS.index(kind)}"
        scratch.mkdir()
        if _mount_small(kind, scratch):
            _umount(scratch)
            return kind
    return None


@contextmanager
def full(
    directory: Path,
    populate: Callable[[], object] = lambda: None,
    *,
    kind: str = SMALL_FILESYSTEMS[0],
) -> Iterator[str]:
    """Mount a small filesystem of ``kind`` on ``directory``, call ``populate`` while it
    has room, then fill it (ENOSPC); yield the technique used. Unmounted afterwards.
    Where ``kind`` cannot be mounted the test is skipped if another kind can (its own
    run covers it), and skipped or, under CI=true, failed if none can."""
    if not _mount_small(kind, directory):
        other = _any_small_filesystem(directory.parent)
        if other is not None:
            pytest.skip(f"cannot mount {kind} here; {other} is tested instead")
        cannot_here("cannot mount a small filesystem here (tmpfs or a loop device: root and mount)")
    try:
        populate()
        fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            chunk = b"\0" * 4096
            for _ in range(1024):  # 4 MB at most: the filesystem holds at most 1 MiB
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
            else:
                raise AssertionError(f"the {kind} never filled up")
        finally:
            os.close(fd)
        yield f"{kind}, filled"
    finally:
        _umount(directory)


def free_space(directory: Path) -> None:
    (directory / "filler").unlink()


# -- deleted -----------------------------------------------------------------------------


def test_cache_directory_deleted_while_running_is_recreated(tmp_path: Path, corpus: Corpus) -> None:
    """Removing the whole cache directory under a running cache (a cleanup job) costs
    only misses: pages render right, and the entries are written again into a
    re-created directory that a new cache then hits."""
    directory = tmp_path / "cache"
    rig = make_rig(corpus, directory)
    rig.check(rig.cold_round())
    shutil.rmtree(directory)
    rig.check(rig.cold_round())
    assert len(entry_files(directory)) == len(corpus.names)
    again = make_rig(corpus, directory)
    again.check(again.cold_round())
    assert again.cache.stats().compiles == 0


def test_cache_directory_deleted_while_running_costs_no_error_even_in_strict_mode(
    tmp_path: Path, corpus: Corpus
) -> None:
    """A deleted cache directory is routine for the tier: the compile lease re-creates
    it as a write does, so nothing is counted as an error and strict mode does not
    raise."""
    directory = tmp_path / "cache"
    rig = make_rig(corpus, directory, strict=True)
    rig.check(rig.cold_round())
    shutil.rmtree(directory)
    rig.check(rig.cold_round())
    assert rig.tier(1).errors == 0


# -- read-only, full, permission denied ----------------------------------------------------


def test_read_only_directory_is_read_and_writes_fail_over(tmp_path: Path, corpus: Corpus) -> None:
    """With the cache directory read-only, pages render right; entries already there are
    still read where the technique allows reading (all but the file-in-place one); every
    write that fails is counted as an error and the entry still reaches the memory tier
    above and the healthy byte tier below."""
    directory, backup = tmp_path / "cache", tmp_path / "backup"
    rig = make_rig(corpus, directory, backup)
    half = corpus.names[: len(corpus.names) // 2]
    rig.check(rig.cold_round(half), half)
    shutil.rmtree(backup)  # only the faulty tier holds the first half now
    rig = make_rig(corpus, directory, backup)
    with read_only(directory) as technique:
        outputs = rig.cold_round()
        stats = rig.cache.stats()
    print(f"technique: {technique}")  # shown by pytest -rP
    rig.check(outputs)
    memory, faulty, healthy = stats.tiers
    readable = 0 if technique == "regular file in place of the directory" else len(half)
    compiled = len(corpus.names) - readable
    assert faulty.hits == readable, technique
    assert faulty.writes == 0
    assert faulty.errors >= compiled  # one failed write per compile, plus failed leases
    assert stats.compiles == compiled
    assert memory.writes == len(corpus.names)
    assert healthy.writes == compiled
    # Writable again: the same cache writes there again (promoting from the healthy
    # tier what the faulty one lacks), and counts no new error.
    before = rig.tier(1)
    rig.check(rig.cold_round())
    after = rig.tier(1)
    assert after.writes - before.writes == len(corpus.names) - len(half)
    assert after.errors == before.errors


def test_read_only_mount_with_max_bytes_still_hits(tmp_path: Path, corpus: Corpus) -> None:
    """On a read-only mount a bounded tier (max_bytes: a hit marks its file as used)
    still serves its entries: a hit whose mark fails (EROFS) is a hit, not an error,
    nothing is compiled again, and each failed mark is counted in touch_failures."""
    directory = tmp_path / "cache"
    make_rig(corpus, directory).cold_round()
    old = time.time() - 3600  # older than touch_interval: every hit tries to mark
    for path in entry_files(directory):
        os.utime(path, (old, old))
    rig = make_rig(corpus, directory, max_bytes=10_000_000)
    with read_only(directory) as technique:
        if technique != "read-only bind mount":
            cannot_here(f"needs a read-only bind mount (root, mount); here: {technique}")
        outputs = rig.cold_round()
        stats = rig.cache.stats()
    rig.check(outputs)
    faulty = stats.tiers[1]
    assert (faulty.hits, faulty.errors, stats.compiles) == (len(corpus.names), 0, 0)
    assert rig.faulty.touch_failures == len(corpus.names)
    assert all(path.stat().st_mtime == pytest.approx(old) for path in entry_files(directory))


@pytest.mark.parametrize("kind", SMALL_FILESYSTEMS)
def test_full_filesystem_is_read_and_writes_fail_over(
    tmp_path: Path, corpus: Corpus, kind: str
) -> None:
    """With the cache directory's filesystem full (ENOSPC), entries already there are
    still hits, every write that fails is counted and leaves no temporary file behind,
    the memory tier and the healthy byte tier still get each entry, and once space is
    freed the same cache writes there again."""
    directory, backup = tmp_path / "cache", tmp_path / "backup"
    directory.mkdir()
    few = corpus.names[:3]

    def populate() -> None:
        make_rig(corpus, directory).cold_round(few)

    with full(directory, populate=populate, kind=kind) as how:
        print(f"technique: {how}")  # shown by pytest -rP
        rig = make_rig(corpus, directory, backup)
        rig.check(rig.cold_round())
        memory, faulty, healthy = rig.cache.stats().tiers
        rest = len(corpus.names) - len(few)
        assert faulty.hits == len(few)
        assert faulty.writes == 0 and faulty.errors >= rest
        assert rig.cache.stats().compiles == rest
        assert memory.writes == len(corpus.names) and healthy.writes == rest
        assert not list(directory.glob(".tmp-*"))
        assert len(entry_files(directory)) == len(few)

        free_space(directory)
        before = rig.tier(1)
        rig.check(rig.cold_round())  # misses below are promoted from the healthy tier
        after = rig.tier(1)
        assert after.writes - before.writes == rest and after.errors == before.errors
        assert len(entry_files(directory)) == len(corpus.names)


def test_permission_denied_directory_is_an_error_never_an_exception(corpus: Corpus) -> None:
    """A cache directory this process may not enter (EACCES) makes every read and write
    of the tier a counted error, never an exception in the render; the memory tier and
    a healthy byte tier still get every entry."""
    root = Path(tempfile.mkdtemp(prefix="tbc-denied-"))
    try:
        os.chmod(root, 0o755)  # nobody may traverse it to reach its own directory
        directory, backup = root / "cache", root / "backup"
        backup.mkdir()
        if IS_ROOT:
            os.chown(backup, NOBODY, NOBODY)
        rig = make_rig(corpus, directory, backup)
        rig.check(rig.cold_round())  # as ourselves: fills everything, imports everything
        for tier in rig.cache.tiers[1:]:
            tier.clear()
        rig.cache.reset_stats()
        with denied(directory) as technique:
            outputs = rig.cold_round()
            stats = rig.cache.stats()
        print(f"technique: {technique}")  # shown by pytest -rP
        rig.check(outputs)
        memory, faulty, healthy = stats.tiers
        assert faulty.hits == faulty.writes == 0, technique
        assert faulty.errors >= 2 * len(corpus.names)  # each read and each write
        assert stats.compiles == len(corpus.names)
        assert memory.writes == healthy.writes == len(corpus.names)
    finally:
        shutil.rmtree(root)


# -- planted files -------------------------------------------------------------------------


def _truncate_half(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncate_to_header(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def _empty(path: Path, other: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path, other: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _flip_a_payload_byte(path: Path, other: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _other_templates_entry(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())


def _other_python(path: Path, other: Path) -> None:
    data = bytearray(path.read_bytes())
    data[6:10] = b"\x00\x00\r\n"  # the writer's importlib MAGIC_NUMBER field
    path.write_bytes(bytes(data))


def _symlink_elsewhere(path: Path, other: Path) -> None:
    path.unlink()
    path.symlink_to(other)


def _fifo(path: Path, other: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


@pytest.mark.parametrize(
    ("plant", "counter"),
    [
        (_truncate_half, "rejected_mac"),
        (_truncate_to_header, "rejected_format"),
        (_empty, "rejected_format"),
        (_garbage, "rejected_format"),
        (_flip_a_payload_byte, "rejected_mac"),
        (_other_templates_entry, "rejected_mac"),
        (_other_python, "rejected_format"),
        (_symlink_elsewhere, "rejected_format"),
        (_fifo, "rejected_format"),
    ],
    ids=lambda p: p.__name__.strip("_") if callable(p) else p,
)
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_planted_entry_files_are_misses_and_get_rewritten(
    tmp_path: Path,
    corpus: Corpus,
    plant: Callable[[Path, Path], None],
    counter: str,
    strict: bool,
) -> None:
    """Every entry file truncated, emptied, overwritten with garbage, bit-flipped,
    swapped for another template's entry or another Python's, or replaced by a symlink
    or a FIFO (which the tier reports as EntryError) is a miss: counted as rejected, the
    template compiles and renders right, and the entry is rewritten so that a new cache
    hits it. A rejected entry is a miss in strict mode too, never a TierError."""
    directory = tmp_path / "cache"
    make_rig(corpus, directory).cold_round()
    files = entry_files(directory)
    assert len(files) == len(corpus.names)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not an entry")
    for path, other in zip(files, files[1:] + files[:1], strict=True):
        plant(path, elsewhere if plant is _symlink_elsewhere else other)
    rig = make_rig(corpus, directory, strict=strict)
    rig.check(rig.cold_round())
    faulty = rig.tier(1)
    assert getattr(faulty, counter) == len(corpus.names)
    assert faulty.errors == 0
    assert faulty.hits == 0 and faulty.writes == len(corpus.names)
    assert rig.cache.stats().compiles == len(corpus.names)
    again = make_rig(corpus, directory)
    again.check(again.cold_round())
    assert again.cache.stats().compiles == 0 and again.tier(1).rejected == 0


def test_stale_temporary_file_of_a_dead_writer_is_ignored_and_pruned(
    tmp_path: Path, corpus: Corpus
) -> None:
    """A ``.tmp-*`` file left by a writer that died mid-write (planted, with an mtime
    older than STALE_TMP_SECONDS) is never read as an entry and is not counted as one;
    the pruning that writes trigger removes it, and leaves alone a fresh one that may
    belong to a writer still at work."""
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    stale, fresh = directory / ".tmp-0123456789abcdef", directory / ".tmp-fedcba9876543210"
    stale.write_bytes(os.urandom(5000))
    fresh.write_bytes(os.urandom(5000))
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    # A bound that nothing reaches, whose tenth is reached by writing the corpus: the
    # tier prunes after a tenth of max_bytes written, and evicts nothing here.
    probe = make_rig(corpus, tmp_path / "probe")
    probe.cold_round()
    total = probe.faulty.size()[1]
    rig = make_rig(corpus, directory, max_bytes=total * 5)
    rig.check(rig.cold_round())
    faulty = rig.tier(1)
    assert faulty.rejected == 0 and faulty.errors == 0
    assert rig.faulty.size()[0] == len(corpus.names)
    assert not stale.exists()
    assert fresh.exists()


# -- stale locks ---------------------------------------------------------------------------


def _hold_lease(directory: Path, key: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEASE, str(directory), key],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()  # HOLD_LEASE gives up on the lock within 5 s
    assert line.strip() == "held", "the holder never took the lease"
    return holder


def _end(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
    holder.wait(timeout=10)
    if holder.stdout is not None:
        holder.stdout.close()


def test_lock_left_by_a_killed_lease_holder_makes_nobody_wait(
    tmp_path: Path, corpus: Corpus
) -> None:
    """A lock file left on disk by a process SIGKILLed while it held a compile lease is
    no lock at all (the kernel dropped the flock with the process): the next load takes
    the lease at once, without a wait, and compiles once."""
    directory = tmp_path / "cache"
    rig = make_rig(corpus, directory, lease_timeout=30.0)
    name = corpus.names[-1]
    holder = _hold_lease(directory, lease_key(rig.env, name))
    try:
        holder.kill()
        holder.wait(timeout=10)
    finally:
        _end(holder)
    assert list((directory / ".locks").iterdir())  # the lock file stays on disk
    started = time.monotonic()
    template = rig.env.get_template(name)  # loads this template only: one compile
    assert time.monotonic() - started < 10  # does not hang (the lease timeout is 30 s)
    stats = rig.cache.stats()
    assert stats.lease_waits == 0 and stats.compiles == 1
    assert template.render(render_context()) == corpus.expected[name]


def test_lease_held_by_a_stuck_process_delays_a_load_by_at_most_lease_timeout(
    tmp_path: Path, corpus: Corpus
) -> None:
    """A live holder that never finishes (SIGSTOPped while it holds the lease) delays a
    load by at most lease_timeout: the loader waits, then compiles without the lease."""
    directory = tmp_path / "cache"
    lease_timeout = 1.0
    rig = make_rig(corpus, directory, lease_timeout=lease_timeout)
    name = corpus.names[-1]
    holder = _hold_lease(directory, lease_key(rig.env, name))
    try:
        holder.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        template = rig.env.get_template(name)  # loads this template only: one compile
        elapsed = time.monotonic() - started
    finally:
        _end(holder)
    stats = rig.cache.stats()
    assert stats.lease_waits == 1 and stats.compiles == 1
    assert lease_timeout <= elapsed < lease_timeout + 5
    assert template.render(render_context()) == corpus.expected[name]


# -- strict mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["read-only", "full", "permission denied"])
def test_strict_mode_raises_tier_error_for_the_same_faults(
    tmp_path: Path, corpus: Corpus, fault: str
) -> None:
    """With strict=True a read-only, full or forbidden cache directory raises TierError
    naming the filesystem tier, caused by the OSError the kernel gave."""
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    rig = make_rig(corpus, directory, strict=True)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            rig.cold_round()
        except TierError as exc:
            outcome.append(exc)

    if fault == "read-only":
        with read_only(directory) as technique:
            attempt()
        codes = {
            "chmod 0500": {errno.EACCES},
            "read-only bind mount": {errno.EROFS},
            "regular file in place of the directory": {errno.ENOTDIR},
        }[technique]
    elif fault == "full":
        with full(directory):
            attempt()
        codes = {errno.ENOSPC}
    else:
        rig.check(rig.cold_round())  # imports everything while we still can
        rig.faulty.clear()
        with denied(directory):
            attempt()
        codes = {errno.EACCES}
    assert len(outcome) == 1, f"no TierError for {fault}"
    error = outcome[0]
    assert isinstance(error, TierError) and error.tier == rig.faulty.name
    cause = error.__cause__
    assert isinstance(cause, OSError) and cause.errno in codes, repr(cause)


def test_unusable_directories_are_refused_at_construction_in_one_line(tmp_path: Path) -> None:
    """A directory the tier could never use is a ConfigurationError naming the path and
    the reason, never a raw OSError at construction nor a tier whose every write only
    logs: a regular file in its place, a parent that is a file, a read-only mount."""
    from tiered_bccache import ConfigurationError

    (tmp_path / "file").write_text("")
    cases = {
        "is not a directory": tmp_path / "file",
        "cannot be created": tmp_path / "file" / "below",
    }
    for reason, path in cases.items():
        with pytest.raises(ConfigurationError) as info:
            FileSystemTier(path)
        assert str(path) in str(info.value) and reason in str(info.value)
        assert "\n" not in str(info.value)
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o700)
    with read_only(directory) as technique:
        if technique == "regular file in place of the directory":
            cannot_here("needs a read-only mount or permission bits that bind")
        with pytest.raises(ConfigurationError, match="cannot be written"):
            FileSystemTier(directory)
