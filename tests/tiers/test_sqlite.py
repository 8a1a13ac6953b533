"""SQLiteTier: one database file shared by the processes and threads of a host, private
modes, pruning of the oldest writes, forks, pickling, its spec."""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import threading
import weakref
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from tests.conftest import SECRET
from tiered_bccache import (
    ConfigurationError,
    EntryError,
    InsecureConfigurationError,
    Tier,
    TieredBytecodeCache,
)
from tiered_bccache.spec import SpecError, parse_tier
from tiered_bccache.tiers.sqlite import SQLiteTier

from .forking import use_across_a_fork, wrong_round_trips, wrong_values
from .tier_suite import TierContract

ROOT = Path(__file__).resolve().parent.parent.parent

#: How long another process or a forked child may run before the test fails.
DEADLINE = 30.0


class TestSQLiteTier(TierContract):
    """The SQLite tier keeps the byte-tier contract."""

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.files = itertools.count()

    def make_tier(self) -> Tier:
        return SQLiteTier(self.directory / f"cache-{next(self.files)}.db")


class TestBoundedSQLiteTier(TestSQLiteTier):
    """With max_entries (the table counted after every fifth write) the contract holds."""

    def make_tier(self) -> Tier:
        return SQLiteTier(self.directory / f"cache-{next(self.files)}.db", max_entries=50)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


@pytest.fixture
def tier(path: Path) -> SQLiteTier:
    return SQLiteTier(path)


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- files and modes -------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0, 0o022, 0o077])
def test_database_files_are_0600_and_created_directories_0700_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """The database, its -wal and -shm files are private to the user even under umask 0,
    and so is every directory the tier creates for it; a parent that existed keeps its
    mode."""
    os.chmod(tmp_path, 0o751)
    old = os.umask(umask)
    try:
        tier = SQLiteTier(tmp_path / "a" / "b" / "cache.db")
        tier.set("key", b"value")
    finally:
        os.umask(old)
    files = [tier.path, tier.path + "-wal", tier.path + "-shm"]
    assert [oct(mode(f)) for f in files] == [oct(0o600)] * 3
    assert [oct(mode(d)) for d in (tmp_path / "a", tmp_path / "a" / "b")] == [oct(0o700)] * 2
    assert mode(tmp_path) == 0o751


def test_existing_database_keeps_its_mode(path: Path) -> None:
    """A database file the user made is used as it is: the tier only tightens what it
    creates."""
    SQLiteTier(path).close()
    os.chmod(path, 0o640)
    SQLiteTier(path).set("k", b"v")
    assert mode(path) == 0o640


def test_the_file_is_in_wal_mode(tier: SQLiteTier) -> None:
    """The database is in WAL mode, so that readers in other processes never wait for a
    writer."""
    db = sqlite3.connect(tier.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


def test_lone_surrogate_and_nul_keys_round_trip_and_stay_distinct(tier: SQLiteTier) -> None:
    """A key holding a lone surrogate (a file name undecodable in UTF-8) works, and keys
    that differ only after a NUL keep their own values."""
    keys = ["\udcff.html", "\udcfe.html", "a\x00b", "a\x00c", "a"]
    for i, key in enumerate(keys):
        tier.set(key, b"value-%d" % i)
    assert [tier.get(key) for key in keys] == [b"value-%d" % i for i in range(len(keys))]
    assert tier.size()[0] == len(keys)


def test_a_value_that_is_not_a_blob_is_a_rejected_entry(tier: SQLiteTier) -> None:
    """A row another program wrote with a TEXT value is a rejected entry (EntryError
    "format"), not a failure of the tier."""
    db = sqlite3.connect(tier.path, isolation_level=None)
    try:
        db.execute("INSERT INTO tiered_bccache_entries (key, value) VALUES ('planted', 'text')")
    finally:
        db.close()
    with pytest.raises(EntryError) as raised:
        tier.get("planted")
    assert raised.value.reason == "format"


def test_close_then_use_opens_a_new_connection(tier: SQLiteTier) -> None:
    """close() closes the connection; the next call opens another and finds the data."""
    tier.set("k", b"v")
    tier.close()
    tier.close()  # a second close is not an error
    assert tier.get("k") == b"v"


def test_a_tier_nobody_uses_is_collected_and_its_connection_closed(path: Path) -> None:
    """Nothing (the fork hook included) keeps a tier alive: once collected, its
    connection is closed, the last one on the file, so SQLite folds the WAL back into
    the database and removes it."""
    tier = SQLiteTier(path)
    tier.set("k", b"v")
    assert os.path.exists(f"{path}-wal")
    ref = weakref.ref(tier)
    del tier
    gc.collect()
    assert ref() is None
    assert not os.path.exists(f"{path}-wal")
    assert SQLiteTier(path).get("k") == b"v"


def test_describe_and_probe(tier: SQLiteTier) -> None:
    """describe() gives the name, kind, file, entries, value bytes and bound; probe()
    returns (the file is local)."""
    tier.set("a", b"12345")
    tier.set("b", b"")
    assert tier.describe() == {
        "name": f"sqlite:{tier.path}",
        "kind": "sqlite",
        "path": tier.path,
        "entries": 2,
        "bytes": 5,
        "max_entries": None,
    }
    tier.probe()


def test_repr_and_name_show_the_absolute_path_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is made absolute once, at construction."""
    monkeypatch.chdir(tmp_path)
    tier = SQLiteTier("cache.db", max_entries=7, timeout=1.5)
    path = str(tmp_path / "cache.db")
    assert tier.name == f"sqlite:{path}"
    assert repr(tier) == f"SQLiteTier({path!r}, max_entries=7, timeout=1.5)"
    assert tier.remote is False


# -- refused at construction -------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"not a database, only text\n" * 200, b"SQLite format 3\x00" + bytes(range(256)) * 32],
    ids=["empty-is-fine", "text", "a-header-then-garbage"],
)
def test_a_file_that_is_not_a_database_is_refused_naming_it_and_left_alone(
    path: Path, content: bytes
) -> None:
    """A non-SQLite or corrupt file at the path fails at construction, with the path in
    the message, and is not changed; an empty file is an empty database."""
    path.write_bytes(content)
    if not content:
        SQLiteTier(path).set("k", b"v")
        return
    with pytest.raises(ConfigurationError, match="not an SQLite database, or is corrupt") as e:
        SQLiteTier(path)
    assert str(path) in str(e.value)
    assert path.read_bytes() == content


def test_a_database_with_another_table_of_the_same_name_is_refused(path: Path) -> None:
    """A database whose tiered_bccache_entries table has other columns is refused, not
    written into."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tiered_bccache_entries (id INTEGER, payload TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ConfigurationError, match="not the tier's") as e:
        SQLiteTier(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A directory, or a symlink (never followed), at the path is refused naming it."""
    path = tmp_path / "cache.db"
    target = tmp_path / "elsewhere.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(target)
    with pytest.raises(ConfigurationError, match=f"{path}' is a") as e:
        SQLiteTier(path)
    assert ("directory" if kind == "directory" else "symbolic link") in str(e.value)
    assert not target.exists()


def test_a_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A path under a regular file cannot be opened: refused, naming the path."""
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="cannot be opened"):
        SQLiteTier(tmp_path / "file" / "cache.db")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_entries": 0}, "max_entries must be a positive integer or None, got 0"),
        ({"max_entries": -5}, "max_entries must be a positive integer or None, got -5"),
        ({"max_entries": 1.5}, "max_entries must be a positive integer or None, got 1.5"),
        ({"max_entries": True}, "max_entries must be a positive integer or None, got True"),
        ({"max_entries": "10"}, "max_entries must be a positive integer or None, got '10'"),
        ({"timeout": 0}, "timeout must be positive, got 0"),
        ({"timeout": -1.0}, "timeout must be positive, got -1.0"),
        ({"timeout": float("nan")}, "timeout must be a finite number, got nan"),
        ({"timeout": float("inf")}, "timeout must be a finite number, got inf"),
        ({"timeout": "5"}, "timeout must be a finite number, got '5'"),
    ],
)
def test_bad_options_are_refused_naming_the_argument(
    path: Path, options: dict[str, Any], message: str
) -> None:
    """max_entries and timeout are checked at construction, before any file is made."""
    with pytest.raises(ConfigurationError) as e:
        SQLiteTier(path, **options)
    assert str(e.value) == message
    assert not path.exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (b"/tmp/cache.db", "path must be a str or os.PathLike[str], got b'/tmp/cache.db'"),
        (42, "path must be a str or os.PathLike[str], got 42"),
        ("", "path must name a file, got ''"),
        ("a\x00b.db", "path must name a file, got 'a\\x00b.db'"),
        (":memory:", "path ':memory:' is a database private to one connection"),
    ],
)
def test_bad_paths_are_refused_naming_the_argument(path: Any, message: str) -> None:
    """The path must be a str or os.PathLike naming a file; SQLite's :memory: is refused,
    since no other process or thread could share it."""
    with pytest.raises(ConfigurationError) as e:
        SQLiteTier(path)
    assert str(e.value).startswith(message)


# -- pruning -----------------------------------------------------------------------------


def test_max_entries_keeps_the_newest_writes(path: Path) -> None:
    """With max_entries=10 (counted after every write), 30 writes leave at most 10
    entries, and the newest are kept."""
    tier = SQLiteTier(path, max_entries=10)
    for i in range(30):
        tier.set(f"e{i}", b"x" * i)
    kept = {i for i in range(30) if tier.get(f"e{i}") is not None}
    assert len(kept) <= 10
    assert set(range(21, 30)) <= kept  # the nine tenths pruning keeps, newest first
    assert not kept & set(range(20))


def test_a_rewrite_makes_an_entry_the_newest(path: Path) -> None:
    """Pruning follows the last write of each key: an old key written again survives
    the next prune, the oldest others go."""
    tier = SQLiteTier(path, max_entries=10)
    for i in range(10):
        tier.set(f"e{i}", b"x")
    tier.set("e0", b"again")
    tier.set("e10", b"x")  # 11 rows: pruned to 9, the two oldest writes go
    assert tier.get("e0") == b"again"
    assert [tier.get(f"e{i}") for i in (1, 2)] == [None, None]
    assert tier.size()[0] == 9


def test_pruning_is_amortised_over_a_tenth_of_max_entries(path: Path) -> None:
    """With max_entries=100 the table is counted after every tenth write: it overshoots
    by less than a tenth, then is pruned to nine tenths."""
    tier = SQLiteTier(path, max_entries=100)
    for i in range(105):
        tier.set(f"e{i}", b"x")
    assert tier.size()[0] == 105
    for i in range(105, 110):
        tier.set(f"e{i}", b"x")
    assert tier.size()[0] == 90
    assert tier.get("e109") == b"x" and tier.get("e19") is None and tier.get("e20") == b"x"


def test_max_entries_of_one_keeps_the_entry_just_written(path: Path) -> None:
    """The smallest bound still keeps the newest entry."""
    tier = SQLiteTier(path, max_entries=1)
    tier.set("a", b"1")
    tier.set("b", b"2")
    assert (tier.get("a"), tier.get("b")) == (None, b"2")


def test_prune_without_a_bound_removes_nothing(tier: SQLiteTier) -> None:
    """prune() of an unbounded tier is a no-op."""
    for i in range(20):
        tier.set(f"e{i}", b"x")
    tier.prune()
    assert tier.size() == (20, 20)


# -- processes, threads, forks -----------------------------------------------------------


def _share_a_file(
    path: str, rounds: int, parent_done: Event, results: Queue[tuple[int, list[str]]]
) -> None:
    """In another process: round trips of its own while the parent writes too, then,
    once the parent is done, a check of everything the parent wrote."""
    tier = SQLiteTier(path, timeout=DEADLINE)
    wrong = wrong_round_trips(tier, "child", rounds)
    if parent_done.wait(DEADLINE):
        wrong += wrong_values(tier, "parent", rounds)
    else:
        wrong.append("the parent did not finish")
    results.put((len(wrong), wrong[:10]))


def test_two_processes_write_and_read_the_same_file(path: Path) -> None:
    """Two processes writing the same file at the same time each read back exactly what
    they wrote, and then exactly what the other wrote."""
    rounds = 200
    tier = SQLiteTier(path, timeout=DEADLINE)
    ctx = multiprocessing.get_context("spawn")
    parent_done, results = ctx.Event(), ctx.Queue()
    child = ctx.Process(
        target=_share_a_file, args=(str(path), rounds, parent_done, results), daemon=True
    )
    child.start()
    try:
        wrong = wrong_round_trips(tier, "parent", rounds)
        parent_done.set()
        count, first = results.get(timeout=DEADLINE * 2)
        child.join(timeout=DEADLINE)
        wrong += wrong_values(tier, "child", rounds)
    finally:
        parent_done.set()
        if child.is_alive():
            child.kill()
            child.join(timeout=10)
        results.close()
        results.join_thread()
    assert (count, first, wrong) == (0, [], [])
    assert child.exitcode == 0
    assert tier.size()[0] == 2 * rounds


def test_threads_share_one_tier(tier: SQLiteTier) -> None:
    """Eight threads each doing 100 round trips on one tier all read back exactly what
    they wrote, and every thread's entries are there at the end."""
    threads, rounds = 8, 100
    wrong: list[str] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait(timeout=DEADLINE)
        wrong.extend(wrong_round_trips(tier, f"thread{n}", rounds))

    workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=DEADLINE)
    assert not any(worker.is_alive() for worker in workers), "a thread did not finish"
    assert wrong == []
    for n in range(threads):
        assert wrong_values(tier, f"thread{n}", rounds) == []


def test_forked_child_opens_its_own_connection(tier: SQLiteTier) -> None:
    """A child forked from a process whose tier is connected (gunicorn --preload,
    multiprocessing) never uses the parent's connection: it opens its own, reads what
    the parent wrote, and parent and child both read back exactly what they write, and
    then what the other wrote."""
    tier.set("before-the-fork", b"parent")
    inherited = tier._db
    assert inherited is not None

    def opens_its_own(tier: SQLiteTier) -> list[str]:
        wrong = [] if tier._db is None else ["the child still holds the parent's connection"]
        got = tier.get("before-the-fork")
        wrong += [] if got == b"parent" else [f"the parent's entry read back as {got!r}"]
        if tier._db is None or tier._db is inherited:
            wrong.append("the child did not open a connection of its own")
        if tier._inherited:
            wrong.append("the child kept its idle copy of the parent's connection open")
        return wrong

    child, parent = use_across_a_fork(tier, first=opens_its_own, rounds=100)
    assert (child, parent) == ([], [])
    assert tier._db is inherited
    assert wrong_values(tier, "child", 100) == []


def test_forked_child_is_not_stuck_on_the_lock_a_parent_thread_held(tier: SQLiteTier) -> None:
    """A child forked while another thread of the parent held the tier's lock (no thread
    in the child will ever release it) sets the connection that thread may have been
    using aside, then clears and round-trips normally."""
    tier.set("before-the-fork", b"parent")
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with tier._lock:
            held.set()
            done.wait(DEADLINE + 10)

    def clear_then_read(tier: SQLiteTier) -> list[str]:
        # The copy of a connection a call was using is kept aside, never used.
        wrong = [] if len(tier._inherited) == 1 else [f"kept {tier._inherited}"]
        tier.clear()
        got = tier.get("before-the-fork")
        return wrong + ([] if got is None else [f"the clear did not clear: {got!r}"])

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    try:
        # The parent waits without using the tier: its own calls would wait for the lock.
        result = use_across_a_fork(tier, first=clear_then_read, rounds=100, parent_writes=False)
    finally:
        done.set()
        thread.join(10)
    assert result == ([], [])
    assert tier.get("before-the-fork") is None  # the child's clear reached the file
    assert wrong_values(tier, "child", 100) == []


# -- pickling ----------------------------------------------------------------------------


def test_pickle_keeps_path_and_options_and_opens_the_same_file(tmp_path: Path) -> None:
    """A pickled tier is rebuilt on the same absolute file with the same options, and
    reads what the original wrote."""
    tier = SQLiteTier(tmp_path / "cache.db", max_entries=123, timeout=2.5)
    tier.set("k", b"v")
    copy = pickle.loads(pickle.dumps(tier))
    assert isinstance(copy, SQLiteTier) and copy is not tier
    assert (copy.path, copy.max_entries, copy.timeout) == (tier.path, 123, 2.5)
    assert copy.get("k") == b"v"


def test_pickle_of_a_relative_path_keeps_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tier given a relative path is unpickled onto the same file, even where the
    working directory differs."""
    monkeypatch.chdir(tmp_path)
    tier = SQLiteTier("cache.db")
    data = pickle.dumps(tier)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert pickle.loads(data).path == str(tmp_path / "cache.db")


# -- the spec --------------------------------------------------------------------------


TEMPLATES = {"page.html": "{% for n in names %}{{ n|upper }} {% endfor %}"}


def test_a_sqlite_spec_shares_compiled_templates_between_caches(path: Path) -> None:
    """A cache built from ["memory", "sqlite:PATH"] compiles a template into the file; a
    fresh cache over the same file finds it there (a hit in the sqlite tier, no
    compile)."""
    specs = ["memory", f"sqlite:{path}"]
    first = TieredBytecodeCache.from_specs(specs, secret=SECRET)
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=first)
    assert env.get_template("page.html").render(names=["a", "b"]) == "A B "
    assert (first.stats().misses, first.stats().compiles) == (1, 1)

    second = TieredBytecodeCache.from_specs(specs, secret=SECRET)
    env = Environment(loader=DictLoader(TEMPLATES), bytecode_cache=second)
    assert env.get_template("page.html").render(names=["c"]) == "C "
    stats = second.stats()
    assert (stats.hits, stats.misses, stats.compiles) == (1, 0, 0)
    sqlite_tier = stats.tiers[1]
    assert (sqlite_tier.name, sqlite_tier.hits, sqlite_tier.errors) == (f"sqlite:{path}", 1, 0)


def test_a_sqlite_tier_needs_a_secret(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like every byte tier but the filesystem's, the cache treats it as shared: without
    a secret (argument or variable) it refuses to sign nothing."""
    monkeypatch.delenv("TIERED_BCCACHE_SECRET", raising=False)
    with pytest.raises(InsecureConfigurationError, match="sqlite:"):
        TieredBytecodeCache.from_specs(["memory", f"sqlite:{path}"])


def test_sqlite_specs_set_the_path_and_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:PATH takes ;max_entries=N and ;timeout=SECONDS, in any order; ~ is
    expanded; a ; followed by no NAME=VALUE stays in the path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    plain = parse_tier(f"sqlite:{tmp_path}/a.db")
    assert isinstance(plain, SQLiteTier)
    assert (plain.path, plain.max_entries, plain.timeout) == (str(tmp_path / "a.db"), None, 5.0)
    tier = parse_tier("sqlite:~/b.db;timeout=0.5;max_entries=1000")
    assert isinstance(tier, SQLiteTier)
    assert (tier.path, tier.max_entries, tier.timeout) == (str(tmp_path / "b.db"), 1000, 0.5)
    odd = parse_tier(f" sqlite:{tmp_path}/c;d.db;max_entries=5 ")
    assert isinstance(odd, SQLiteTier)
    assert (odd.path, odd.max_entries) == (str(tmp_path / "c;d.db"), 5)


@pytest.mark.parametrize(
    ("rest", "fragment"),
    [
        ("", "no path; expected sqlite:PATH[;max_entries=N][;timeout=SECONDS]"),
        ("{dir}/x.db;max_entries=0", "max_entries: '0' is not a positive integer"),
        ("{dir}/x.db;max_entries=ten", "max_entries: 'ten' is not a positive integer"),
        ("{dir}/x.db;timeout=0", "timeout: '0' is not a positive number of seconds"),
        ("{dir}/x.db;timeout=soon", "timeout: 'soon' is not a positive number of seconds"),
        ("{dir}/x.db;prefix=app", "unknown option 'prefix'; expected sqlite:PATH"),
        ("{dir}/x.db;timeout=1;timeout=2", "option 'timeout' is given twice"),
        ("{dir}", "is a directory, not a database file"),
        (":memory:", "path ':memory:' is a database private to one connection"),
    ],
)
def test_bad_sqlite_specs_raise_spec_error_quoting_the_spec(
    tmp_path: Path, rest: str, fragment: str
) -> None:
    """A wrong sqlite spec is a SpecError that quotes it and says what is wrong, and
    creates no file."""
    spec = "sqlite:" + rest.format(dir=tmp_path)
    with pytest.raises(SpecError) as e:
        parse_tier(spec)
    assert str(e.value).startswith(f"tier {spec!r}: ")
    assert fragment in str(e.value)
    assert not (tmp_path / "x.db").exists()


def test_sqlite3_is_imported_only_when_a_tier_is_built(tmp_path: Path) -> None:
    """Importing the tier's module or the spec parser does not import sqlite3; building
    a tier from its spec does."""
    script = (
        "import sys, tiered_bccache.spec, tiered_bccache.tiers.sqlite\n"
        "before = 'sqlite3' in sys.modules\n"
        "tiered_bccache.spec.parse_tier('sqlite:' + sys.argv[1])\n"
        "print(before, 'sqlite3' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cache.db")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["False", "True"]
