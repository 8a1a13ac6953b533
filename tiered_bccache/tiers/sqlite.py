"""The host tier in one file: entries as rows of an SQLite database that the processes of
a host share."""

from __future__ import annotations

import functools
import os
import re
import stat
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, EntryError
from ._files import kind_of, make_private_directories
from ._fork import reset_in_forked_children
from ._validate import positive_int_or_none, positive_number, seconds_option
from .base import ByteTier

if TYPE_CHECKING:
    # Only for annotations: sqlite3 is imported when a tier is built, so that a process
    # that configures none never pays for it.
    import sqlite3

__all__ = ["SQLiteTier"]

# Keys are bound as their UTF-8 bytes (lone surrogates passed through) cast to TEXT:
# sqlite3 refuses to bind a str holding a lone surrogate, and the cast keeps every byte,
# NULs included, so no two keys share a row.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tiered_bccache_entries "
    "(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
)
_COLUMNS = "PRAGMA table_info(tiered_bccache_entries)"
_GET = "SELECT value FROM tiered_bccache_entries WHERE key = CAST(? AS TEXT)"
# REPLACE deletes the old row and inserts a new one, which SQLite numbers one past the
# largest rowid: rowid order is the order of the last writes, which pruning follows.
_SET = "INSERT OR REPLACE INTO tiered_bccache_entries (key, value) VALUES (CAST(? AS TEXT), ?)"
_DELETE = "DELETE FROM tiered_bccache_entries WHERE key = CAST(? AS TEXT)"
_CLEAR = "DELETE FROM tiered_bccache_entries"
_COUNT = "SELECT count(*) FROM tiered_bccache_entries"
_SIZE = "SELECT count(*), coalesce(sum(length(value)), 0) FROM tiered_bccache_entries"
_PRUNE = (
    "DELETE FROM tiered_bccache_entries WHERE rowid IN "
    "(SELECT rowid FROM tiered_bccache_entries ORDER BY rowid LIMIT ?)"
)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_CREATE_FLAGS |= getattr(os, "O_CLOEXEC", 0)
_SPEC_FORM = "expected sqlite:PATH[;max_entries=N][;timeout=SECONDS]"


class SQLiteTier(ByteTier):
    """Entries as rows of one SQLite database file at ``path``, shared by the processes
    of a host (stdlib ``sqlite3``, in WAL mode: readers never wait for a writer).

    A file the tier creates is 0600 whatever the umask (SQLite gives its ``-wal`` and
    ``-shm`` files the same mode), and a directory it creates for it 0700; an existing
    file keeps its mode. ``timeout`` is how long a call waits, in seconds, for
    another process's write to finish. ``max_entries`` bounds the table: the oldest
    written rows are pruned, down to nine tenths of it, after every tenth of it written
    by this process (between prunes the table may overshoot by that tenth per writing
    process). A hit does not refresh a row; a write does.

    Each process opens its own connection, used by one thread at a time; a child forked
    from the process never uses its parent's (it closes its copy) and opens its own on
    first use.

    Raises :class:`~tiered_bccache.ConfigurationError` naming the argument when
    ``max_entries`` or ``timeout`` is wrong, and naming the path when ``path`` is not a
    file SQLite can use: not a regular file (a directory, a symlink), not writable,
    not an SQLite database, or corrupt.

    Example::

        from tiered_bccache.tiers.sqlite import SQLiteTier

        cache = TieredBytecodeCache(
            [MemoryTier(), SQLiteTier("/var/cache/app/jinja.db", max_entries=50_000)],
            secret=key,
        )
    """

    remote = False
    compress = False
    max_entry_size: int | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        import sqlite3

        self.max_entries = positive_int_or_none("max_entries", max_entries)
        self.timeout = positive_number("timeout", timeout)
        # Absolute: a copy may be unpickled where the working directory differs.
        self.path = os.path.abspath(_file_path(path))
        self.name = f"sqlite:{self.path}"
        self._prune_every = None if self.max_entries is None else max(self.max_entries // 10, 1)
        self._written = 0
        #: Guards the connection: sqlite3 connections are not for two threads at once.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closer: weakref.finalize[[], SQLiteTier] | None = None
        #: A connection a forked child copied from a parent thread's call in progress:
        #: kept, never used.
        self._inherited: list[sqlite3.Connection] = []
        try:
            self._connection()
        except OSError as exc:
            raise ConfigurationError(
                f"path {self.path!r} cannot be opened: {exc.strerror or exc}"
            ) from None
        except sqlite3.OperationalError as exc:
            raise ConfigurationError(
                f"path {self.path!r} cannot be used as an SQLite database: {exc}"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"path {self.path!r} is not an SQLite database, or is corrupt: {exc}"
            ) from None
        reset_in_forked_children(self)

    @classmethod
    def from_spec(cls, spec: str) -> SQLiteTier:
        """The tier of a spec ``sqlite:PATH[;max_entries=N][;timeout=SECONDS]`` (``~``
        expanded). Options come last; a path may hold ``;`` as long as what follows it is
        not ``NAME=VALUE``.

        Raises :class:`~tiered_bccache.ConfigurationError` saying what is wrong (the
        spec parser quotes the spec)."""
        kind, _, rest = spec.strip().partition(":")
        if kind != "sqlite":
            raise ConfigurationError(_SPEC_FORM)
        parts = rest.split(";")
        options: dict[str, Any] = {}
        while len(parts) > 1:
            option = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*=(.*)", parts[-1])
            if option is None:
                break
            name, value = option[1], option[2].strip()
            if name in options:
                raise ConfigurationError(f"option {name!r} is given twice; {_SPEC_FORM}")
            if name == "max_entries":
                if not value.isdigit() or int(value) < 1:
                    raise ConfigurationError(f"max_entries: {value!r} is not a positive integer")
                options[name] = int(value)
            elif name == "timeout":
                options[name] = seconds_option(name, value)
            else:
                raise ConfigurationError(f"unknown option {name!r}; {_SPEC_FORM}")
            parts.pop()
        path = ";".join(parts).strip()
        if not path:
            raise ConfigurationError(f"no path; {_SPEC_FORM}")
        return cls(os.path.expanduser(path), **options)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, max_entries={self.max_entries!r}, "
            f"timeout={self.timeout!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt by calling the class again: the copy opens its own connection.
        rebuild = functools.partial(type(self), max_entries=self.max_entries, timeout=self.timeout)
        return rebuild, (self.path,)

    # -- the connection -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A new connection, to a file created 0600 if missing, in WAL mode, with the
        table. Raises OSError or sqlite3.Error, or ConfigurationError for a path that is
        not a regular file or a database holding another table of the same name."""
        import sqlite3

        _create_private_file(self.path)
        # isolation_level=None: every statement is its own transaction, so that no read
        # holds a snapshot (and WAL checkpoints back) between calls. The lock makes the
        # connection safe to use from any thread.
        db = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise ConfigurationError(
                    f"path {self.path!r} cannot be put in WAL mode (it stays in {mode!r} "
                    "mode; a network file system?)"
                )
            # In WAL mode, NORMAL never corrupts the file; a power cut may lose the last
            # writes, which for a cache are only misses.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            columns = [row[1] for row in db.execute(_COLUMNS)]
            if columns != ["key", "value"]:
                raise ConfigurationError(
                    f"path {self.path!r} holds a table tiered_bccache_entries with the "
                    f"columns {columns}, not the tier's (key, value)"
                )
        except BaseException:
            db.close()
            raise
        return db

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened again if closed. Call it holding the lock."""
        if self._db is None:
            db = self._connect()
            # Closed when the tier goes away, or at exit (Python 3.13 warns of a
            # connection left to the garbage collector).
            self._closer = weakref.finalize(self, db.close)
            self._db = db
        return self._db

    def _forked(self) -> None:
        """In a child just forked (its only thread): drop the parent's connection and
        lock; the child opens its own connection on first use."""
        # Every call holds the lock: when it was free at the fork, no statement or
        # transaction was open on the connection.
        idle = not self._lock.locked()
        # A thread of the parent may have held the lock at the fork; the child has no
        # thread to release it.
        self._lock = threading.Lock()
        db, self._db = self._db, None
        if self._closer is not None:
            self._closer.detach()
            self._closer = None
        if db is None:
            return
        if idle:
            # SQLite keeps one record per process of the locks its connections hold on
            # a file, which the child copied: its own connection would take the
            # parent's locks as held. Closing the idle copy releases the record (and
            # only the child's locks: POSIX locks are per process).
            db.close()
        else:
            # A call was in progress: closing would roll it back through the WAL index
            # the parent is still writing. The copy is kept, untouched.
            self._inherited.append(db)

    def close(self) -> None:
        """Close this process's connection (another is opened on the next use)."""
        with self._lock:
            self._db = None
            closer, self._closer = self._closer, None
            if closer is not None:
                closer()

    # -- the tier ----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None.

        Raises :class:`~tiered_bccache.EntryError` (``"format"``) when the row holds
        something other than a BLOB (written by another program): a rejected entry,
        not a failure of the tier. sqlite3's errors are the tier's, and propagate."""
        with self._lock:
            # fetchall steps the statement to its end, so it holds no read transaction.
            rows = self._connection().execute(_GET, (_key(key),)).fetchall()
        if not rows:
            return None
        value = rows[0][0]
        if type(value) is not bytes:
            raise EntryError("format", f"{self.name} holds a {type(value).__name__}, not bytes")
        return value

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            db = self._connection()
            db.execute(_SET, (_key(key), value))
            if self._prune_every is not None:
                self._written += 1
                if self._written >= self._prune_every:
                    self._written = 0
                    self._prune(db)

    def delete(self, key: str) -> None:
        with self._lock:
            self._connection().execute(_DELETE, (_key(key),))

    def clear(self) -> None:
        """Remove every entry (the file keeps its size: SQLite reuses the pages)."""
        with self._lock:
            self._connection().execute(_CLEAR)

    def prune(self) -> None:
        """Remove the oldest-written entries, down to nine tenths of ``max_entries``, when
        the table holds more than ``max_entries``; nothing without a bound."""
        if self.max_entries is None:
            return
        with self._lock:
            self._prune(self._connection())

    def _prune(self, db: sqlite3.Connection) -> None:
        assert self.max_entries is not None
        # At least one row is kept: the one just written, which is the newest.
        keep = max(self.max_entries * 9 // 10, 1)
        # Count and delete in one write transaction: two processes pruning at once
        # would otherwise both remove the same excess.
        db.execute("BEGIN IMMEDIATE")
        try:
            (count,) = db.execute(_COUNT).fetchone()
            if count > self.max_entries:
                db.execute(_PRUNE, (count - keep,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def size(self) -> tuple[int, int]:
        """(number of entries, total bytes of their values) now in the table."""
        with self._lock:
            count, total = self._connection().execute(_SIZE).fetchone()
        return int(count), int(total)

    def describe(self) -> dict[str, object]:
        """What ``tiered-bccache stats`` shows: the file, the entries and bytes in it
        (:meth:`size`), and ``max_entries``."""
        entries, nbytes = self.size()
        return {
            "name": self.name,
            "kind": "sqlite",
            "path": self.path,
            "entries": entries,
            "bytes": nbytes,
            "max_entries": self.max_entries,
        }

    def probe(self) -> None:
        """Return: the file is on this host (a failure to read it is the calls' to
        report)."""


def _file_path(path: object) -> str:
    """``path`` as a str, refused unless it can name a database file of the host."""
    try:
        text = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise ConfigurationError(f"path must be a str or os.PathLike[str], got {path!r}")
    if not text or "\x00" in text:
        raise ConfigurationError(f"path must name a file, got {text!r}")
    if text == ":memory:":
        raise ConfigurationError(
            "path ':memory:' is a database private to one connection, which no other "
            "process or thread can share; use MemoryTier for a tier of one process"
        )
    return text


def _create_private_file(path: str) -> None:
    """Create ``path`` empty and exactly 0600 when it is missing (SQLite would create it
    0644 less the umask), with its missing directories 0700; refuse what is there when it
    is not a regular file we may read and write."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            make_private_directories(directory)
        except FileExistsError:
            pass  # made by another process meanwhile; a non-directory fails the open below
    # O_EXCL: of two processes creating the file at once, one creates it and the other
    # finds it. O_NOFOLLOW: a symlink planted at the path is refused below, not followed.
    # (SQLite opens the path again itself and would follow a symlink swapped in between:
    # keep the file in a directory only its user can write to.)
    try:
        fd = os.open(path, _CREATE_FLAGS, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(
                f"path {path!r} is {kind_of(st.st_mode)}, not a database file"
            ) from None
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigurationError(f"path {path!r} cannot be read and written") from None
        return
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask took away
    finally:
        os.close(fd)


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")
