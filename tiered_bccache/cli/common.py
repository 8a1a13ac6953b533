"""What several commands share: the MAC key from the options, the cache from
module:attribute or tier specs, the reachability check, JSON output, the plot extra."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import IO

from ..cache import TieredBytecodeCache
from ..errors import InsecureConfigurationError
from ..secret import ENV_VAR, MIN_SECRET_BYTES
from ..spec import SpecError, load_cache
from ..tiers.memcached import MemcachedTier
from ..tiers.redis import RedisTier
from .defaults import MEMCACHED_TIMEOUT, PLOT_HINT, REDIS_TIMEOUT
from .errors import CommandError, describe_error, usage_error

__all__ = [
    "check_plot",
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
            raise usage_error(f"--secret-env {args.secret_env}: the variable is not set")
        return value.encode("utf-8")
    return None


def load_cache_from_args(args: argparse.Namespace, target: str | None) -> TieredBytecodeCache:
    """The cache named by ``target`` (module:attribute) or built from ``--tier`` specs,
    with the key options applied; a usage error for what cannot work."""
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
        if given and not args.tier:
            raise usage_error(
                f"{', '.join(given)} cannot apply to {target!r}: the application configures "
                "its own cache"
            )
    secret = read_secret(args)
    from_env = args.secret_env != ENV_VAR and args.secret_file is None
    try:
        return load_cache(
            target,
            list(args.tier),
            memcached_timeout=MEMCACHED_TIMEOUT,
            redis_timeout=REDIS_TIMEOUT,
            # A key from a variable is passed by the variable's name, so that a copy of
            # the cache (pickled to a worker) carries the name, not the key.
            secret=None if from_env else secret,
            secret_env=args.secret_env if from_env else None,
            allow_unsigned=args.allow_unsigned,
        )
    except InsecureConfigurationError as exc:
        raise usage_error(
            f"a memcached or redis tier is shared and needs a MAC key: set ${ENV_VAR} (at least "
            f"{MIN_SECRET_BYTES} bytes, the same on every host), or use --secret-env VAR / "
            "--secret-file PATH; --allow-unsigned turns the check off (unsafe)"
        ) from exc
    except SpecError as exc:
        raise usage_error(str(exc)) from exc


def require_reachable(cache: TieredBytecodeCache) -> None:
    """Fail fast, before any work, when a memcached or redis tier cannot be reached: the
    cache would otherwise only count the failures and go on."""
    for tier in cache.tiers:
        if not isinstance(tier, (MemcachedTier, RedisTier)):
            continue
        try:
            tier.generation()  # reads it from the server
        except Exception as exc:
            raise CommandError(f"{tier.name} is unreachable: {describe_error(exc)}") from exc


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
