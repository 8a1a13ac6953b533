"""What automatic activation reads, importing nothing: the environment variables and the
default tiers.

Shared by :mod:`tiered_bccache.auto` (in the tool's processes, once Jinja is imported)
and ``tiered-bccache run`` (:mod:`tiered_bccache.cli.run`), which must start the command
without importing Jinja or the cache itself.
"""

from __future__ import annotations

import os

__all__ = ["AUTO_VAR", "MEMORY_SPEC", "STATS_VAR", "TIERS_ENV_VAR", "default_specs"]

#: Set (to anything but ``0``), the start-up hook gives every Environment the cache.
AUTO_VAR = "TIERED_BCCACHE_AUTO"
#: A directory where every process of a run writes its counters as it ends.
STATS_VAR = "TIERED_BCCACHE_RUN_STATS"
#: The environment variable :func:`~tiered_bccache.spec.parse_specs` reads the specs from.
TIERS_ENV_VAR = "TIERED_BCCACHE_TIERS"
#: Enough for a dbt project's models, tests and macros, bounded in bytes all the same.
MEMORY_SPEC = "memory:8192,bytes=256MB"


def default_specs(directory: str | None = None) -> list[str]:
    """The tiers of an automatic cache: memory over a filesystem tier in ``directory``
    (default: the per-user cache directory, ``~/.cache/tiered-bccache`` on Linux)."""
    if directory is None:
        import platformdirs

        directory = platformdirs.user_cache_dir("tiered-bccache")
    return [MEMORY_SPEC, f"fs:{os.fspath(directory)}"]
