"""Where the MAC key comes from: an argument, the environment, or a host-local key file."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from .errors import ConfigurationError, InsecureConfigurationError

__all__ = ["ENV_VAR", "MIN_SECRET_BYTES", "resolve_secret"]

ENV_VAR = "TIERED_BCCACHE_SECRET"
MIN_SECRET_BYTES = 16
KEY_FILE = ".secret"
_KEY_BYTES = 32


def _as_key(value: object, source: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise ConfigurationError(f"{source} must be bytes or str, got {type(value).__name__}")
    if len(value) < MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{source} is {len(value)} bytes; a MAC key needs at least {MIN_SECRET_BYTES} "
            f"(try secrets.token_hex(32))"
        )
    return value


def resolve_secret(
    secret: bytes | str | None,
    *,
    key_file_dirs: Sequence[str],
    unsigned_tiers: Sequence[str],
    allow_unsigned: bool,
    env_var: str = ENV_VAR,
) -> bytes | None:
    """The MAC key: ``secret``, else the variable ``env_var`` (``$TIERED_BCCACHE_SECRET``),
    else, when every shared tier is host-local (``unsigned_tiers`` empty), a random key
    kept in a 0600 file in the first of ``key_file_dirs``. None means unsigned, allowed
    only when nothing is shared or ``allow_unsigned`` is true.

    Raises :class:`InsecureConfigurationError` for a remote tier with no secret and no
    opt-out, :class:`ConfigurationError` for a short secret or an unsafe key file.
    """
    if secret is not None:
        return _as_key(secret, "secret")
    env = os.environ.get(env_var)
    if env:
        return _as_key(env, f"${env_var}")
    if unsigned_tiers:
        if allow_unsigned:
            return None
        # An empty variable is a deployment's typo (VAR=$UNDEFINED): "set it" would send
        # the reader to look for a variable that is there.
        how = f"give ${env_var} a value (it is set but empty)" if env == "" else f"set ${env_var}"
        raise InsecureConfigurationError(
            f"{', '.join(unsigned_tiers)} would hold code that every process executes, and "
            f"anyone who can write to it could run code in this application. Pass "
            f"secret=... (at least {MIN_SECRET_BYTES} bytes, the same on every host) or "
            f"{how}; allow_unsigned=True turns the check off (unsafe)."
        )
    if key_file_dirs:
        return load_or_create_key(os.path.join(key_file_dirs[0], KEY_FILE))
    return None


def load_or_create_key(path: str) -> bytes:
    """Read the host's key from ``path``, creating it (random, 0600) if it is missing.

    The key is written to a temporary file and linked into place, so that a process
    racing us either finds no file or the whole key, never a partial one.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.urandom(8).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, os.urandom(_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race; use its key
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigurationError(f"cannot open the key file {path}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigurationError(
                f"refusing the key file {path}: it must be a regular file owned by uid "
                f"{os.geteuid()} with mode 0600"
            )
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise ConfigurationError(f"key file {path} holds {len(key)} bytes, expected {_KEY_BYTES}")
    return key
