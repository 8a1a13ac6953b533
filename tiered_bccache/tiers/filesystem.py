"""The host tier: one file per entry in a directory the processes of a host share."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
import time
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError, EntryError
from ..stats import logger
from ._files import kind_of, make_private_directories, not_a_regular_file, unlink
from ._validate import positive_int_or_none

if TYPE_CHECKING:
    # Only for annotations: filelock is imported when a lock is first made, so that
    # importing the package and a hit never pay for it (8-17 ms).
    from filelock import FileLock

__all__ = ["FileSystemTier", "default_directory", "default_path"]


_SUFFIX = ".tbc"
_TMP_PREFIX = ".tmp-"
_LOCKS = ".locks"
_LOCK_SUFFIX = ".lock"
#: The lock that serializes pruning and clear; the leading dot keeps it apart from
#: every key's lease (a key's file name never starts with one).
_PRUNE_LOCK = ".prune"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS |= getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_WRITE_FLAGS |= getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS |= getattr(os, "O_CLOEXEC", 0)
#: Times the lock directory is looked at again when what is at its path keeps changing
#: (another process repairing it too, or someone planting things faster than we remove
#: them) before a lock is refused.
_LOCKS_ATTEMPTS = 3
#: A temporary file older than this was left by a writer that died; pruning removes it.
STALE_TMP_SECONDS = 600.0


def default_path() -> str:
    """Where :func:`default_directory` is, without creating or checking it (for tools
    that look at a cache and must create nothing)."""
    return os.path.join(tempfile.gettempdir(), f"_tiered_bccache-{os.geteuid()}")


def default_directory() -> str:
    """The per-user private directory used when none is given, created 0700.

    Like Jinja's own default (hardened after CVE-2014-1402), it lives in the shared temp
    directory, so another user could create it first: refuse it unless it is a real
    directory, owned by us, and closed to group and others.

    Raises :class:`~tiered_bccache.ConfigurationError` naming the path when it is not
    such a directory. One of ours that group or others may write to is refused too,
    not tightened: whatever someone planted in it while it was open (a symlink, an
    entry file, a ``.secret``) would stay and be used.
    """
    path = default_path()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the default cache directory {path}: {exc}"
        ) from exc
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigurationError(f"default cache directory {path} is not a directory (a link?)")
    if st.st_uid != os.geteuid():
        raise ConfigurationError(f"default cache directory {path} is owned by uid {st.st_uid}")
    if st.st_mode & 0o077:
        raise ConfigurationError(
            f"default cache directory {path} is open to group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}, not 0700), so anything in it may have been "
            f"planted; remove it (it is only a cache) or give FileSystemTier a directory"
        )
    return path


class FileSystemTier:
    """Entries as files in ``directory`` (default: a private per-user temp directory).

    Writes go to a temporary file that is renamed into place, so a reader never sees a
    partial entry; files are 0600 whatever the umask; a directory the tier creates is
    0700. ``max_bytes`` bounds the directory: least recently used files are pruned, in a
    batch after every tenth of ``max_bytes`` written by this process, under a lock so
    that one process prunes at a time (between prunes the directory may overshoot by
    that tenth per writing process).

    Raises :class:`~tiered_bccache.ConfigurationError` when ``directory`` exists and is
    not a directory, or ``max_bytes`` is not a positive integer.
    """

    remote = False
    compress = False
    max_entry_size: int | None = None
    holds_objects: ClassVar[bool] = False
    #: A hit marks its file as recently used (mtime) at most this often, so that
    #: pruning is LRU without a metadata write on every hit.
    touch_interval = 1.0

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None
    ) -> None:
        self.max_bytes = positive_int_or_none("max_bytes", max_bytes)
        self._given = None if directory is None else os.fspath(directory)
        self.directory = (
            default_directory() if directory is None else os.path.abspath(os.fspath(directory))
        )
        self.name = f"filesystem:{self.directory}"
        self._stem = os.path.join(self.directory, "")  # path() is on every lookup
        self._ensure_directory()
        self._prune_every = None if self.max_bytes is None else max(self.max_bytes // 10, 1)
        self._written = 0
        #: Hits whose file could not be marked as used (a read-only mount, an immutable
        #: file): each was still a hit, but pruning sees the file as older than it is.
        self.touch_failures = 0

    def __repr__(self) -> str:
        return f"FileSystemTier({self.directory!r}, max_bytes={self.max_bytes!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The absolute directory: a copy may be loaded where the working directory
        # differs. None stays None, so that the copy takes its own user's default.
        return (_rebuild, (None if self._given is None else self.directory, self.max_bytes))

    def _ensure_directory(self) -> None:
        """Refuse, in one line naming the path and the reason, a directory the tier
        could never use: one that cannot be created, is not a directory, or cannot be
        written (a tier whose every write fails would only log). A directory that turns
        read-only later is still read (see the fault tests)."""
        try:
            make_private_directories(self.directory)
        except FileExistsError:
            if not os.path.isdir(self.directory):
                raise ConfigurationError(
                    f"directory {self.directory!r} is not a directory"
                ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"directory {self.directory!r} cannot be created: {exc.strerror or exc}"
            ) from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ConfigurationError(
                f"directory {self.directory!r} cannot be written (permissions or a "
                "read-only file system)"
            )

    def path(self, key: str) -> str:
        """The file that holds ``key``: always inside the directory, whatever the key."""
        return self._stem + _file_name(key) + _SUFFIX

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None.

        Raises :class:`~tiered_bccache.EntryError` (``"format"``) when what is at the
        key's path is not a regular file (a planted symlink, FIFO, socket, directory):
        a rejected entry, not a failure of the tier. Other OSErrors (EACCES, EIO) are
        the tier's, and propagate."""
        path = self.path(key)
        # Don't test for existence before opening: the file may vanish in between.
        # O_NOFOLLOW: a planted symlink fails (ELOOP) instead of reading elsewhere;
        # O_NONBLOCK: a planted FIFO cannot stall the read.
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            # ELOOP (a symlink, with O_NOFOLLOW), ENXIO (a socket) and the like say
            # what is at the path; lstat tells a planted file from a failing directory.
            kind = not_a_regular_file(path)
            if kind is None:
                raise
            raise EntryError("format", f"{path} is {kind}, not an entry file") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise EntryError("format", f"{path} is {kind_of(st.st_mode)}, not an entry file")
            data = os.read(fd, st.st_size)
            if self.max_bytes is not None and time.time() - st.st_mtime > self.touch_interval:
                self._touch(fd, path)
            return data
        finally:
            os.close(fd)

    def _touch(self, fd: int, path: str) -> None:
        # The mark only orders pruning; the read already succeeded and is the result. A
        # read-only mount or an immutable file refuses every touch: count it, and log
        # at debug, since a page render cannot do anything about it.
        try:
            os.utime(fd)
        except OSError as exc:
            self.touch_failures += 1
            logger().debug("tiered_bccache: %s could not mark %s as used: %r", self.name, path, exc)

    def set(self, key: str, value: bytes) -> None:
        final = self.path(key)
        try:
            tmp = self._write_temp(value)
        except FileNotFoundError:
            # The directory was removed under us (a cleanup job, a user): recreate it.
            self._ensure_directory()
            tmp = self._write_temp(value)
        try:
            # rename(2) replaces whatever is at ``final``, a planted symlink included,
            # and never writes through it.
            os.replace(tmp, final)
        except BaseException:
            unlink(tmp)
            raise
        if self._prune_every is not None:
            self._written += len(value)
            if self._written >= self._prune_every:
                self._written = 0
                self.prune()

    def _write_temp(self, value: bytes) -> str:
        # Write to a temporary file, then rename it into place: another process never
        # reads a half-written entry.
        tmp = os.path.join(self.directory, f"{_TMP_PREFIX}{os.urandom(8).hex()}")
        fd = os.open(tmp, _WRITE_FLAGS, 0o600)
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask took away
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def delete(self, key: str) -> None:
        unlink(self.path(key))

    def clear(self) -> None:
        """Remove every entry, and every lock file not held (a lease in use stays).

        Raises PermissionError, after removing the entries, when the lock directory is
        refused (see :meth:`lease`)."""
        try:
            lock = self._lock(_PRUNE_LOCK, timeout=10.0)
        except OSError:
            self._remove_entries()
            raise
        with lock:
            self._remove_entries()
            self._prune_locked()

    def _remove_entries(self) -> None:
        for entry in self._scan():
            # Entries only: a fresh temporary file may be another process's write in
            # progress, which removing it would fail. Pruning takes the stale ones.
            if entry.name.endswith(_SUFFIX):
                unlink(entry.path)

    def lease(self, key: str) -> FileLock:
        """A lock file for ``key`` that the cache holds while it compiles the template,
        so that the other processes of the host wait for its entry instead of compiling
        it again. The kernel drops an flock when its holder dies, so a crashed compiler
        never leaves the others waiting. Pruning removes the lock files of keys whose
        entry is gone, never one that is held.

        The lock files live in ``.locks`` in the directory, which must be a directory of
        ours closed to group and others. Whatever else is at that path (a symlink or a
        file planted by someone who can write to the directory) is removed, never
        followed, and a private directory made in its place. A directory that another
        user owns, or that group or others may enter, is refused and left alone (what
        was planted in it while it was open would stay): then this raises
        PermissionError naming it, which the cache counts and logs, and pruning removes
        no lock files until it is removed."""
        return self._lock(_file_name(key), timeout=0)

    def _lock(self, name: str, *, timeout: float) -> FileLock:
        # filelock opens the lock file by path, with O_NOFOLLOW on its last component
        # only: .locks swapped for a symlink between the check and that open would put
        # an empty lock file elsewhere (never write or remove one). What removes lock
        # files, pruning, goes through a descriptor of the directory instead.
        return _file_lock(
            os.path.join(self._lock_directory(), name + _LOCK_SUFFIX), timeout=timeout
        )

    def _lock_directory(self) -> str:
        """The path of ``.locks``, checked to be a private directory of ours (made if
        missing, made again in place of anything else at its path); PermissionError
        when it is a directory we cannot trust."""
        locks = os.path.join(self.directory, _LOCKS)
        for _ in range(_LOCKS_ATTEMPTS):
            try:
                st = os.lstat(locks)
            except FileNotFoundError:
                try:
                    # Creates the directory too when it was removed under us, as set does.
                    make_private_directories(locks)
                except (FileExistsError, FileNotFoundError):
                    continue  # made, or its parent removed, meanwhile: look again
                return locks
            if stat.S_ISDIR(st.st_mode):
                _check_lock_directory(locks, st)
                return locks
            # A symlink here would take lock files, and pruning's unlinks, to wherever it
            # points. unlink(2) removes the link itself, never its target.
            try:
                os.unlink(locks)
            except (FileNotFoundError, IsADirectoryError):
                pass  # removed, or replaced by a directory, by another process
        raise PermissionError(
            f"{locks} kept changing while it was checked; lock files are not made there"
        )

    def _scan(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as it:
            return [e for e in it if e.name.endswith(_SUFFIX) or e.name.startswith(_TMP_PREFIX)]

    def prune(self) -> None:
        """Remove least recently used entries until the directory holds at most nine
        tenths of ``max_bytes``, temporary files left by writers that died, and the lock
        files of keys that have no entry (unless a lease holds them). Skipped when
        another process is pruning."""
        from filelock import Timeout

        try:
            lock = self._lock(_PRUNE_LOCK, timeout=0)
        except OSError:
            # The lock directory is refused: entries are still pruned, unserialized (two
            # processes pruning at once remove at worst a little more than needed), so
            # that the directory stays bounded; the error is raised to be counted.
            self._prune_entries()
            raise
        try:
            with lock:
                self._prune_locked()
        except Timeout:
            return

    def _prune_locked(self) -> None:
        self._prune_lock_files(self._prune_entries())

    def _prune_entries(self) -> frozenset[str]:
        """Prune the entries and stale temporary files; the file names of the entries kept."""
        now = time.time()
        files: list[tuple[float, int, str]] = []
        for entry in self._scan():
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.startswith(_TMP_PREFIX):
                if now - st.st_mtime > STALE_TMP_SECONDS:
                    unlink(entry.path)
                continue
            files.append((st.st_mtime, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        removed = 0
        if self.max_bytes is not None and total > self.max_bytes:
            target = self.max_bytes * 9 // 10
            files.sort()
            for _, size, path in files:
                if total <= target:
                    break
                unlink(path)
                total -= size
                removed += 1
        return frozenset(os.path.basename(p) for _, _, p in files[removed:])

    def _prune_lock_files(self, kept: frozenset[str]) -> None:
        """Remove the lock files of keys whose entry is not in ``kept``, except those held.

        Deleting a lock file is safe only under its own lock: a process may have opened
        the file and be about to flock it. So each one is taken without waiting (a held
        lease is skipped) and unlinked while held; an acquirer that opened the inode
        before the unlink gets its flock only after we release, and filelock then finds
        the inode unlinked (``st_nlink == 0``), drops it and opens the path again."""
        from filelock import Timeout

        locks = os.path.join(self.directory, _LOCKS)
        # .locks was checked when the prune lock was made, but may have been swapped
        # since: scan and unlink through a descriptor of the directory itself, opened
        # without following a symlink, so that no lock file elsewhere is ever removed.
        try:
            fd = os.open(locks, _DIR_FLAGS)
        except FileNotFoundError:
            return
        except OSError as exc:
            # Linux says ENOTDIR for a symlink opened so, the BSDs ELOOP.
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            raise NotADirectoryError(
                f"{locks} was replaced by something that is not a directory (a symlink?) "
                f"while pruning; its lock files were not pruned"
            ) from exc
        try:
            _check_lock_directory(locks, os.fstat(fd))
            with os.scandir(fd) as it:
                # A leading dot marks the tier's own locks (prune): never a key's.
                names = [
                    e.name
                    for e in it
                    if e.name.endswith(_LOCK_SUFFIX) and not e.name.startswith(".")
                ]
            for name in names:
                if name[: -len(_LOCK_SUFFIX)] + _SUFFIX in kept:
                    continue
                lock = _file_lock(os.path.join(locks, name), timeout=0)
                try:
                    lock.acquire()
                except Timeout:
                    continue  # a lease in use: its holder is compiling
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                finally:
                    lock.release()
        finally:
            os.close(fd)

    def size(self) -> tuple[int, int]:
        """(number of entries, total bytes) now on disk."""
        count = total = 0
        for entry in self._scan():
            if entry.name.endswith(_SUFFIX) and entry.is_file(follow_symlinks=False):
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                count += 1
        return count, total

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows: the directory, the entries and bytes on
        disk (:meth:`size`), and ``max_bytes`` (see :meth:`ByteTier.describe
        <tiered_bccache.ByteTier.describe>`)."""
        entries, nbytes = self.size()
        return {
            "name": self.name,
            "kind": "filesystem",
            "directory": self.directory,
            "exists": True,
            "entries": entries,
            "bytes": nbytes,
            "max_bytes": self.max_bytes,
        }

    def probe(self) -> None:
        """Return: the directory is on this host (a failure to read it is the calls' to
        report)."""


def _file_name(key: str) -> str:
    """``key`` itself when it is a safe file name, else ``sha256.`` and its digest. No
    safe name holds a dot, so a key that happens to be another key's digest never
    shares its file."""
    if _SAFE_KEY.fullmatch(key) is not None:
        return key
    return "sha256." + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _file_lock(path: str, *, timeout: float) -> FileLock:
    from filelock import FileLock

    # filelock >= 3.20.3 opens lock files with O_NOFOLLOW (CVE-2025-68146,
    # CVE-2026-22701). Its UnixFileLock, once its flock succeeds, drops an inode that is
    # no longer linked and tries again: that is what lets pruning delete lock files (see
    # _prune_lock_files; tests/stress/test_filesystem_lock_pruning.py pins it).
    return FileLock(path, timeout=timeout, mode=0o600, thread_local=False)


def _check_lock_directory(path: str, st: os.stat_result) -> None:
    """PermissionError unless ``st`` (of the directory ``path``) is ours and closed to
    group and others, as the default directory must be."""
    if st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} is owned by uid {st.st_uid}, so lock files are not made there; leases "
            f"and the pruning of lock files are off until it is removed"
        )
    if st.st_mode & 0o077:
        raise PermissionError(
            f"{path} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}, not "
            f"0700), so anything in it may have been planted; leases and the pruning of "
            f"lock files are off until it is removed (it only holds lock files)"
        )


def _rebuild(directory: str | None, max_bytes: int | None) -> FileSystemTier:
    return FileSystemTier(directory, max_bytes=max_bytes)
