"""The host tier: one file per entry in a directory the processes of a host share."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
import time
from typing import Any, ClassVar

from filelock import FileLock, Timeout

from ..errors import ConfigurationError
from ._validate import positive_int_or_none

__all__ = ["FileSystemTier", "default_directory"]

_SUFFIX = ".tbc"
_TMP_PREFIX = ".tmp-"
_LOCKS = ".locks"
#: The lock that serializes pruning and clear; the leading dot keeps it apart from
#: every key's lease (a key's file name never starts with one).
_PRUNE_LOCK = ".prune"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_READ_FLAGS |= getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_WRITE_FLAGS |= getattr(os, "O_CLOEXEC", 0)
#: A temporary file older than this was left by a writer that died; pruning removes it.
STALE_TMP_SECONDS = 600.0


def default_directory() -> str:
    """The per-user private directory used when none is given, created 0700.

    Like Jinja's own default (hardened after CVE-2014-1402), it lives in the shared temp
    directory, so another user could create it first: refuse it unless it is a real
    directory, owned by us, and closed to group and others.
    """
    path = os.path.join(tempfile.gettempdir(), f"_tiered_bccache-{os.geteuid()}")
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
        os.chmod(path, 0o700)
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
        self._ensure_directory()
        self._prune_every = None if self.max_bytes is None else max(self.max_bytes // 10, 1)
        self._written = 0

    def __repr__(self) -> str:
        return f"FileSystemTier({self.directory!r}, max_bytes={self.max_bytes!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The absolute directory: a copy may be loaded where the working directory
        # differs. None stays None, so that the copy takes its own user's default.
        return (_rebuild, (None if self._given is None else self.directory, self.max_bytes))

    def _ensure_directory(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700)
        except FileExistsError:
            if not os.path.isdir(self.directory):
                raise ConfigurationError(
                    f"directory {self.directory!r} is not a directory"
                ) from None
            return
        # makedirs applies the mode through the umask; make it exactly private.
        os.chmod(self.directory, 0o700)

    def path(self, key: str) -> str:
        """The file that holds ``key``: always inside the directory, whatever the key."""
        return os.path.join(self.directory, _file_name(key) + _SUFFIX)

    def get(self, key: str) -> bytes | None:
        # Don't test for existence before opening: the file may vanish in between.
        # O_NOFOLLOW: a planted symlink fails (ELOOP) instead of reading elsewhere;
        # O_NONBLOCK: a planted FIFO cannot stall the read.
        try:
            fd = os.open(self.path(key), _READ_FLAGS)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "cache entry is not a regular file", self.path(key))
            data = os.read(fd, st.st_size)
            if self.max_bytes is not None and time.time() - st.st_mtime > self.touch_interval:
                os.utime(fd)
            return data
        finally:
            os.close(fd)

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
            _unlink(tmp)
            raise
        if self._prune_every is not None:
            self._written += len(value)
            if self._written >= self._prune_every:
                self._written = 0
                self.prune()

    def _write_temp(self, value: bytes) -> str:
        # Write to a temporary file, then rename it into place: another process never
        # reads a half-written entry.
        tmp = os.path.join(self.directory, f"{_TMP_PREFIX}{secrets.token_hex(8)}")
        fd = os.open(tmp, _WRITE_FLAGS, 0o600)
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask took away
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def delete(self, key: str) -> None:
        _unlink(self.path(key))

    def clear(self) -> None:
        with self._lock(_PRUNE_LOCK, timeout=10.0):
            for entry in self._scan():
                # Entries only: a fresh temporary file may be another process's write in
                # progress, which removing it would fail. Pruning takes the stale ones.
                if entry.name.endswith(_SUFFIX):
                    _unlink(entry.path)
            self._prune_locked()

    def lease(self, key: str) -> FileLock:
        """A lock file for ``key`` that the cache holds while it compiles the template,
        so that the other processes of the host wait for its entry instead of compiling
        it again. The kernel drops an flock when its holder dies, so a crashed compiler
        never leaves the others waiting."""
        return self._lock(_file_name(key), timeout=0)

    def _lock(self, name: str, *, timeout: float) -> FileLock:
        locks = os.path.join(self.directory, _LOCKS)
        try:
            os.mkdir(locks, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            # The directory was removed under us: recreate it, as set does.
            self._ensure_directory()
            os.makedirs(locks, 0o700, exist_ok=True)
        # filelock >= 3.20.3 opens lock files with O_NOFOLLOW (CVE-2025-68146,
        # CVE-2026-22701); lock files stay on disk on purpose, deleting them would
        # break mutual exclusion.
        return FileLock(
            os.path.join(locks, name + ".lock"), timeout=timeout, mode=0o600, thread_local=False
        )

    def _scan(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.directory) as it:
            return [e for e in it if e.name.endswith(_SUFFIX) or e.name.startswith(_TMP_PREFIX)]

    def prune(self) -> None:
        """Remove least recently used entries until the directory holds at most nine
        tenths of ``max_bytes``, and temporary files left by writers that died. Skipped
        when another process is pruning."""
        try:
            with self._lock(_PRUNE_LOCK, timeout=0):
                self._prune_locked()
        except Timeout:
            return

    def _prune_locked(self) -> None:
        now = time.time()
        files: list[tuple[float, int, str]] = []
        for entry in self._scan():
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.startswith(_TMP_PREFIX):
                if now - st.st_mtime > STALE_TMP_SECONDS:
                    _unlink(entry.path)
                continue
            files.append((st.st_mtime, st.st_size, entry.path))
        if self.max_bytes is None:
            return
        total = sum(size for _, size, _ in files)
        target = self.max_bytes * 9 // 10
        if total <= self.max_bytes:
            return
        files.sort()
        for _, size, path in files:
            if total <= target:
                break
            _unlink(path)
            total -= size

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


def _file_name(key: str) -> str:
    """``key`` itself when it is a safe file name, else ``sha256.`` and its digest. No
    safe name holds a dot, so a key that happens to be another key's digest never
    shares its file."""
    if _SAFE_KEY.fullmatch(key) is not None:
        return key
    return "sha256." + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rebuild(directory: str | None, max_bytes: int | None) -> FileSystemTier:
    return FileSystemTier(directory, max_bytes=max_bytes)
