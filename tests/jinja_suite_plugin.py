"""A pytest plugin for running Jinja's own test suite with one shared cache in every
Environment: ``python -m pytest <jinja>/tests -p tests.jinja_suite_plugin``.

Every ``jinja2.Environment`` built without a ``bytecode_cache`` (Jinja's fixtures,
``Template(source)``'s spontaneous environments, sandboxes, subclasses) gets the one
:class:`~tiered_bccache.TieredBytecodeCache` of the process, a ``MemoryTier`` over a
``FileSystemTier`` in ``$TIERED_BCCACHE_SUITE_DIR``, and ``from_string`` through it.
Several processes given the same directory share its entries. When
``$TIERED_BCCACHE_SUITE_STATS`` names a file, the cache's counters are written there as
JSON at the end of the session. Without ``$TIERED_BCCACHE_SUITE_DIR`` the plugin does
nothing.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jinja2

from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

#: The directory of the shared filesystem tier, and the file the counters go to.
DIR_VAR = "TIERED_BCCACHE_SUITE_DIR"
STATS_VAR = "TIERED_BCCACHE_SUITE_STATS"
SECRET = b"jinja-suite-0123456789abcdef"

_cache: TieredBytecodeCache | None = None


def pytest_configure(config: Any) -> None:
    """Build the cache and wrap ``Environment.__init__`` before any test is collected."""
    global _cache
    directory = os.environ.get(DIR_VAR)
    if not directory or _cache is not None:
        return
    cache = _cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(directory)], secret=SECRET)
    original = jinja2.Environment.__init__

    @functools.wraps(original)
    def __init__(self: jinja2.Environment, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # Subclasses (the sandbox) finish their own __init__ after this returns; the
        # cache fingerprints an environment at its first lookup, not here.
        if self.bytecode_cache is None:
            self.bytecode_cache = cache
            cache_from_string(self)

    jinja2.Environment.__init__ = __init__  # type: ignore[method-assign]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """Write the cache's counters where ``$TIERED_BCCACHE_SUITE_STATS`` says."""
    path = os.environ.get(STATS_VAR)
    if _cache is None or not path:
        return
    stats = _cache.stats()
    with open(path, "w") as out:
        json.dump(
            {
                "lookups": stats.lookups,
                "hits": stats.hits,
                "compiles": stats.compiles,
                "string_lookups": stats.string_lookups,
                "string_hits": stats.string_hits,
                "string_compiles": stats.string_compiles,
                "tier_hits": [t.hits for t in stats.tiers],
                "tier_writes": [t.writes for t in stats.tiers],
            },
            out,
        )
