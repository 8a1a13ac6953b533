"""What several commands share: the MAC key from the options, the cache from
module:attribute or tier specs, the reachability check, JSON output, the plot extra,
counts with their nouns."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from ..cache import TieredBytecodeCache
from ..errors import InsecureConfigurationError
from ..secret import ENV_VAR, MIN_SECRET_BYTES
from ..spec import SpecError, filesystem_options
from ..tiers.filesystem import default_path
from .defaults import MEMCACHED_TIMEOUT, PLOT_HINT, REDIS_TIMEOUT
from .errors import CommandError, describe_error, usage_error
from .loading import load_cache

__all__ = [
    "CACHE_WAYS",
    "FileSystemSpec",
    "check_plot",
    "filesystem_spec",
    "load_cache_from_args",
    "plot_needs_matplotlib",
    "read_secret",
    "require_reachable",
    "write_json",
]


def read_secret(args: argparse.Namespace) -> bytes | None:
    """The key named by --secret-file / --secret-env, or None to let the library read
    its default variable by itself."""
    if args.secret_file is not None:
        if args.secret_env != ENV_VAR:
            raise usage_error("give --secret-env or --secret-file, not both")
        try:
            with open(args.secret_file, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise usage_error(
                f"cannot read --secret-file {args.secret_file}: {exc.strerror}"
            ) from exc
        # A key file written with echo ends with a newline that is not part of the key.
        return data.rstrip(b"\r\n")
    if args.secret_env != ENV_VAR:
        value = os.environ.get(args.secret_env)
        if not value:
            state = "is not set" if value is None else "is set but empty"
            raise usage_error(f"--secret-env {args.secret_env}: the variable {state}")
        return value.encode("utf-8")
    return None


#: How a command is told its cache, for the messages that say it was not.
CACHE_WAYS = "CACHE or --cache CACHE (module:attribute), or its tiers as --tier SPEC (repeat)"


def load_cache_from_args(
    args: argparse.Namespace,
    target: str | None,
    *,
    tier_specs: Sequence[str] | None = None,
    reads_entries: bool = True,
) -> TieredBytecodeCache:
    """The cache named by ``target`` (module:attribute) or built from ``--tier`` specs
    (``tier_specs`` instead, when given: those of them to build), with the key options
    applied; a usage error for what cannot work, naming the arguments: no cache, or a
    cache given both as ``target`` and as ``--tier``.

    ``reads_entries=False`` (stats, clear) means the key is never used: with none given,
    a cache of local tiers gets a throwaway one, since the library would otherwise
    create the host's key file in the first filesystem tier's directory."""
    if target is None and not args.tier:
        raise usage_error(f"no cache given: name it as {CACHE_WAYS}")
    if target is not None and args.tier:
        raise usage_error(
            f"the cache is given as {target!r} and as --tier specs: give one of them, not both"
        )
    specs = list(args.tier if tier_specs is None else tier_specs)
    if target is not None:
        if re.match(r"(memory|fs|filesystem|memcached|redis|rediss|redis\+\w+)(:|$)", target):
            raise usage_error(f"{target!r} looks like a tier spec: pass it as --tier {target}")
        given = [
            flag
            for flag, value in (
                ("--secret-env", args.secret_env != ENV_VAR),
                ("--secret-file", args.secret_file is not None),
                ("--allow-unsigned", args.allow_unsigned),
            )
            if value
        ]
        if given:
            raise usage_error(
                f"{', '.join(given)} cannot apply to {target!r}: the application configures "
                "its own cache"
            )
    secret = read_secret(args)
    from_env = args.secret_env != ENV_VAR and args.secret_file is None
    if (
        not reads_entries
        and target is None
        and secret is None
        and not os.environ.get(ENV_VAR)
        and all(_local(spec) for spec in specs)
    ):
        secret, from_env = os.urandom(32), False
    try:
        return load_cache(
            target,
            specs,
            memcached_timeout=MEMCACHED_TIMEOUT,
            redis_timeout=REDIS_TIMEOUT,
            # A key from a variable is passed by the variable's name, so that a copy of
            # the cache (pickled to a worker) carries the name, not the key.
            secret=None if from_env else secret,
            secret_env=args.secret_env if from_env else None,
            allow_unsigned=args.allow_unsigned,
        )
    except InsecureConfigurationError as exc:
        # An empty variable is a deployment's typo (VAR=$UNDEFINED): "set it" would
        # send the reader to look for a variable that is there.
        how = (
            f"${ENV_VAR} is set but empty: give it a key"
            if os.environ.get(ENV_VAR) == ""
            else f"set ${ENV_VAR}"
        )
        raise usage_error(
            f"a memcached, redis or sqlite tier is shared and needs a MAC key: {how} (at least "
            f"{MIN_SECRET_BYTES} bytes, the same on every host), or use --secret-env VAR / "
            "--secret-file PATH; --allow-unsigned turns the check off (unsafe)"
        ) from exc
    except SpecError as exc:
        raise usage_error(str(exc)) from exc


def _local(spec: str) -> bool:
    """Whether the tier of ``spec`` lives on this host (memory, filesystem, SQLite): a
    command that reads no entry needs no key for it."""
    return spec.strip().partition(":")[0] in ("memory", "fs", "filesystem", "sqlite")


@dataclass(frozen=True, slots=True)
class FileSystemSpec:
    """What an ``fs`` tier spec names, read without building the tier."""

    directory: str
    max_bytes: int | None

    @property
    def name(self) -> str:
        """The tier's name, as :class:`~tiered_bccache.FileSystemTier` gives it."""
        return f"filesystem:{self.directory}"


def filesystem_spec(spec: str) -> FileSystemSpec | None:
    """The directory and ``max_bytes`` of an ``fs`` spec, read as the library reads
    them but without building the tier: a FileSystemTier creates its directory, and
    stats and clear must not create what they look at. None for another kind, and for
    an fs spec the library refuses (building it says why)."""
    kind, _, rest = spec.strip().partition(":")
    if kind not in ("fs", "filesystem"):
        return None
    try:
        directory, max_bytes = filesystem_options(rest)
    except SpecError:
        return None
    return FileSystemSpec(os.path.abspath(directory or default_path()), max_bytes)


def require_reachable(cache: TieredBytecodeCache) -> None:
    """Fail fast, before any work, when a tier cannot be reached (its ``probe()`` raises:
    a memcached or redis tier reads its namespace generation): the cache would otherwise
    only count the failures and go on."""
    for tier in cache.tiers:
        probe = getattr(tier, "probe", None)
        if not callable(probe):
            continue
        try:
            probe()
        except Exception as exc:
            name = getattr(tier, "name", type(tier).__name__)
            raise CommandError(f"{name} is unreachable: {describe_error(exc)}") from exc


def plot_needs_matplotlib() -> CommandError:
    """The usage error for a --plot that matplotlib is missing for."""
    return usage_error(f"--plot needs matplotlib: {PLOT_HINT}")


def check_plot(path: str | None) -> None:
    """Fail before the work when --plot cannot be honoured."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise plot_needs_matplotlib() from None


def write_json(data: object, stream: IO[str]) -> None:
    """``data`` as indented JSON and a newline; what JSON cannot hold goes as ``str``."""
    json.dump(data, stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")
