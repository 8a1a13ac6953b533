"""Where the MAC key comes from: an argument, the environment, or a host-local key file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MemcachedServer
from tiered_bccache import (
    ConfigurationError,
    FileSystemTier,
    InsecureConfigurationError,
    MemcachedTier,
    TieredBytecodeCache,
)
from tiered_bccache.secret import (
    ENV_VAR,
    KEY_FILE,
    MIN_SECRET_BYTES,
    load_or_create_key,
    resolve_secret,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"0123456789abcdef-test-secret-key"


@pytest.fixture(autouse=True)
def no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without $TIERED_BCCACHE_SECRET, whatever the shell has."""
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask, under which a careless open() makes a world-readable file."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def resolve(
    secret: bytes | str | None = None,
    *,
    key_file_dirs: tuple[str, ...] = (),
    unsigned_tiers: tuple[str, ...] = (),
    allow_unsigned: bool = False,
) -> bytes | None:
    return resolve_secret(
        secret,
        key_file_dirs=key_file_dirs,
        unsigned_tiers=unsigned_tiers,
        allow_unsigned=allow_unsigned,
    )


def test_explicit_bytes_secret_is_used_as_given() -> None:
    """A bytes secret of at least 16 bytes is the key, unchanged."""
    assert resolve(SECRET, unsigned_tiers=("memcached",)) == SECRET


def test_explicit_str_secret_is_encoded_as_utf8() -> None:
    """A str secret is accepted and used as its UTF-8 bytes."""
    assert resolve("ключ-достаточной-длины") == "ключ-достаточной-длины".encode()


def test_explicit_secret_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument takes precedence over $TIERED_BCCACHE_SECRET."""
    monkeypatch.setenv(ENV_VAR, "x" * 32)
    assert resolve(SECRET) == SECRET


@pytest.mark.parametrize(
    "secret", [b"", b"short", "fifteen-chars!!", b"x" * (MIN_SECRET_BYTES - 1)]
)
def test_short_secret_is_refused_naming_the_argument(secret: bytes | str) -> None:
    """A secret under 16 bytes is a ConfigurationError whose message names ``secret``."""
    with pytest.raises(ConfigurationError, match="^secret is"):
        resolve(secret)


def test_secret_of_the_wrong_type_is_refused() -> None:
    """A secret that is neither bytes nor str is a ConfigurationError naming ``secret``."""
    with pytest.raises(ConfigurationError, match="secret must be bytes or str"):
        resolve(12345678901234567890)  # type: ignore[arg-type]


def test_environment_variable_is_used_without_an_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no argument, $TIERED_BCCACHE_SECRET is the key, even for a remote tier."""
    monkeypatch.setenv(ENV_VAR, "from-the-environment-0123456789")
    assert resolve(unsigned_tiers=("memcached",)) == b"from-the-environment-0123456789"


def test_short_environment_variable_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A too short $TIERED_BCCACHE_SECRET is a ConfigurationError naming the variable."""
    monkeypatch.setenv(ENV_VAR, "short")
    with pytest.raises(ConfigurationError, match=r"\$TIERED_BCCACHE_SECRET is 5 bytes"):
        resolve(unsigned_tiers=("memcached",))


def test_remote_tier_without_a_secret_is_insecure_and_says_how_to_fix_it() -> None:
    """A remote tier and no secret raise InsecureConfigurationError explaining the options."""
    with pytest.raises(InsecureConfigurationError) as info:
        resolve(unsigned_tiers=("memcached:127.0.0.1:11211",))
    message = str(info.value)
    assert "memcached:127.0.0.1:11211" in message
    assert "secret=" in message and ENV_VAR in message and "allow_unsigned=True" in message


def test_an_empty_variable_is_called_empty_not_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """$TIERED_BCCACHE_SECRET set to nothing (VAR=$UNDEFINED in a deployment): the message
    says it is set but empty instead of telling the reader to set it."""
    monkeypatch.setenv(ENV_VAR, "")
    with pytest.raises(InsecureConfigurationError) as info:
        resolve(unsigned_tiers=("memcached:127.0.0.1:11211",))
    message = str(info.value)
    assert f"${ENV_VAR} a value (it is set but empty)" in message
    assert f"or set ${ENV_VAR}" not in message


def test_remote_tier_may_be_unsigned_when_explicitly_allowed() -> None:
    """allow_unsigned=True accepts a remote tier without a secret: no key at all."""
    assert resolve(unsigned_tiers=("memcached",), allow_unsigned=True) is None


def test_nothing_shared_means_no_key() -> None:
    """With neither a remote tier nor a directory there is nothing to sign: no key."""
    assert resolve() is None


def test_filesystem_only_creates_a_private_key_file(tmp_path: Path, umask_zero: None) -> None:
    """Filesystem-only caches get a random 32-byte key in a 0600 file, even under umask 0."""
    key = resolve(key_file_dirs=(str(tmp_path),))
    path = tmp_path / KEY_FILE
    assert key is not None and len(key) == 32
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == [KEY_FILE]  # no temporary file left behind


def test_key_file_is_reused_on_the_next_call(tmp_path: Path) -> None:
    """The second call reads the key the first one created."""
    first = resolve(key_file_dirs=(str(tmp_path),))
    assert resolve(key_file_dirs=(str(tmp_path),)) == first


def test_key_file_uses_the_first_directory(tmp_path: Path) -> None:
    """With several filesystem tiers the key lives in the first one's directory."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    resolve(key_file_dirs=(str(first), str(second)))
    assert (first / KEY_FILE).exists() and not (second / KEY_FILE).exists()


LOAD_KEY_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from tiered_bccache.secret import load_or_create_key
    path, start = sys.argv[1], sys.argv[2]
    if start != "-":
        open(os.path.join(start, f"ready-{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(start, "go")) and time.monotonic() < deadline:
            time.sleep(0.0005)
    sys.stdout.write(load_or_create_key(path).hex())
    """
)


def load_key_in_subprocess(path: Path, start: Path | None = None) -> subprocess.Popen[str]:
    """A process that prints the key it loads from ``path``; with ``start``, it first
    reports ready there and waits for a ``go`` file, so that several start together."""
    return subprocess.Popen(
        [sys.executable, "-c", LOAD_KEY_SCRIPT, str(path), str(start) if start else "-"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_another_process_reads_the_same_key(tmp_path: Path) -> None:
    """A key created here is the key another process on the host finds."""
    path = tmp_path / KEY_FILE
    key = load_or_create_key(str(path))
    out, err = load_key_in_subprocess(path).communicate(timeout=60)
    assert err == ""
    assert bytes.fromhex(out) == key


def test_concurrent_creation_gives_every_process_the_same_key(tmp_path: Path) -> None:
    """Eight processes racing to create the key file all end up with one and the same key,
    and no temporary file is left behind."""
    keys_dir, start = tmp_path / "keys", tmp_path / "start"
    keys_dir.mkdir()
    start.mkdir()
    path = keys_dir / KEY_FILE
    processes = [load_key_in_subprocess(path, start) for _ in range(8)]
    deadline = time.monotonic() + 30
    while len(os.listdir(start)) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    (start / "go").touch()
    results = [p.communicate(timeout=60) for p in processes]
    assert [err for _, err in results] == [""] * 8
    assert {out for out, _ in results} == {path.read_bytes().hex()}
    assert os.listdir(keys_dir) == [KEY_FILE]


def write_key(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def test_key_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    """A key file planted as a symlink (to a valid key elsewhere) is refused."""
    elsewhere = tmp_path / "elsewhere"
    write_key(elsewhere, os.urandom(32))
    (tmp_path / KEY_FILE).symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="key file"):
        load_or_create_key(str(tmp_path / KEY_FILE))


def test_dangling_symlink_is_refused_and_never_written_through(tmp_path: Path) -> None:
    """A symlink planted where the key file will be created is refused, and its target is
    never created (the key would leak where the attacker points)."""
    target = tmp_path / "attacker-reads-this"
    (tmp_path / KEY_FILE).symlink_to(target)
    with pytest.raises(ConfigurationError):
        load_or_create_key(str(tmp_path / KEY_FILE))
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A key file that the group or others may read or write is refused."""
    write_key(tmp_path / KEY_FILE, os.urandom(32), mode)
    with pytest.raises(ConfigurationError, match="mode 0600"):
        load_or_create_key(str(tmp_path / KEY_FILE))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_key_file_of_the_wrong_length_is_refused(tmp_path: Path, length: int) -> None:
    """A key file that does not hold exactly 32 bytes is refused, not truncated or padded."""
    write_key(tmp_path / KEY_FILE, os.urandom(length))
    with pytest.raises(ConfigurationError, match=f"holds {min(length, 33)} bytes"):
        load_or_create_key(str(tmp_path / KEY_FILE))


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory where the key file should be is refused."""
    (tmp_path / KEY_FILE).mkdir(mode=0o700)
    with pytest.raises(ConfigurationError):
        load_or_create_key(str(tmp_path / KEY_FILE))


def test_cache_with_memcached_and_no_secret_is_refused(memcached: MemcachedServer) -> None:
    """TieredBytecodeCache over a memcached tier without a secret raises at construction."""
    with pytest.raises(InsecureConfigurationError, match="secret="):
        TieredBytecodeCache([MemcachedTier(memcached.address)])


def test_cache_over_the_filesystem_only_needs_no_secret(tmp_path: Path) -> None:
    """A filesystem-only cache signs with a host key it creates in the tier's directory."""
    TieredBytecodeCache([FileSystemTier(tmp_path)])
    path = tmp_path / KEY_FILE
    assert len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
