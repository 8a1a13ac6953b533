"""Every Jinja Environment of a process given the cache, with no code change.

Tools such as dbt, Ansible, Sphinx and MkDocs build their Environments themselves and
offer no bytecode-cache setting. With ``$TIERED_BCCACHE_AUTO`` set (``tiered-bccache run
-- CMD`` sets it for the command and every Python process it starts), the start-up hook
``tiered_bccache.pth`` waits for ``jinja2`` to be imported and calls :func:`activate`:
from then on every ``Environment`` built without a bytecode cache gets one shared
:class:`~tiered_bccache.TieredBytecodeCache`, and its ``from_string`` goes through it
(:func:`~tiered_bccache.cache_from_string`). An Environment the tool gave a cache of its
own keeps it.

The shared cache is built at the first Environment, from ``$TIERED_BCCACHE_TIERS`` when
set, else ``memory:8192,bytes=256MB`` over ``fs`` in the per-user cache directory
(``platformdirs``), with defaults that fit a short process: strings are stored at their
first sighting (a process that ends never sees the second one), the tool-specific key
context of :mod:`tiered_bccache.tools`, and nothing written to stderr (warnings go to
the ``tiered_bccache`` logger, which gets a ``NullHandler``: Ansible reports workers that
write to stderr). A configuration that fails leaves the Environments as they are, with
one warning through that logger.

With ``$TIERED_BCCACHE_RUN_STATS`` naming a directory, every process writes its counters
there as it ends (forked workers included) for ``tiered-bccache run`` to add up.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

from jinja2 import Environment

from .autoconfig import AUTO_VAR, STATS_VAR, TIERS_ENV_VAR, default_specs

if TYPE_CHECKING:
    from .cache import TieredBytecodeCache

__all__ = ["AUTO_VAR", "STATS_VAR", "activate", "default_specs", "shared_cache"]


_lock = threading.Lock()
_cache: TieredBytecodeCache | None = None
_failed = False
_dumped_pid = 0


def activate() -> None:
    """Give every Environment built from now on without a bytecode cache the shared
    cache, and cache its ``from_string``. Idempotent."""
    original = Environment.__init__
    if getattr(original, "_tiered_bccache_auto", False):
        return
    logging.getLogger("tiered_bccache").addHandler(logging.NullHandler())

    @functools.wraps(original)
    def __init__(self: Environment, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.bytecode_cache is None:
            cache = shared_cache()
            if cache is not None:
                from .strings import cache_from_string

                self.bytecode_cache = cache
                cache_from_string(self)

    __init__._tiered_bccache_auto = True  # type: ignore[attr-defined]
    Environment.__init__ = __init__  # type: ignore[method-assign]


def shared_cache() -> TieredBytecodeCache | None:
    """The process's automatic cache, built on first use; None when its configuration
    failed (said once, through the logger)."""
    global _cache, _failed
    if _cache is not None or _failed:
        return _cache
    with _lock:
        if _cache is None and not _failed:
            try:
                _cache = _build()
            except Exception as exc:
                _failed = True
                logging.getLogger("tiered_bccache").warning(
                    "tiered_bccache: automatic cache not used: %s", exc
                )
    return _cache


def _build() -> TieredBytecodeCache:
    from .cache import TieredBytecodeCache
    from .tools import key_context

    specs: list[str] | None = None if os.environ.get(TIERS_ENV_VAR) else default_specs()
    cache = TieredBytecodeCache.from_specs(specs, string_admission=1, key_context=key_context)
    if os.environ.get(STATS_VAR):
        atexit.register(_dump, cache)
        # A multiprocessing worker ends with os._exit after its finalizers, never
        # through atexit.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            _finalize_at_exit(cache)
        os.register_at_fork(after_in_child=functools.partial(_forked, cache))
    return cache


def _forked(cache: TieredBytecodeCache) -> None:
    """In a forked child: count its own work only, and write it when it ends, also when
    it ends as multiprocessing's workers do (``os._exit`` after its finalizers)."""
    cache.reset_stats()
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        # Registered after the fork: a multiprocessing child clears the finalizers it
        # inherited, then runs these hooks.
        mp_util.register_after_fork(cache, _finalize_at_exit)


def _finalize_at_exit(cache: TieredBytecodeCache) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(cache, _dump, args=(cache,), exitpriority=0)


def _dump(cache: TieredBytecodeCache) -> None:
    """Write this process's counters to ``$TIERED_BCCACHE_RUN_STATS`` (once a process)."""
    global _dumped_pid
    directory = os.environ.get(STATS_VAR)
    if not directory or _dumped_pid == os.getpid():
        return
    _dumped_pid = os.getpid()
    stats = cache.stats()
    record = {
        "pid": os.getpid(),
        "lookups": stats.lookups,
        "hits": stats.hits,
        "compiles": stats.compiles,
        "string_lookups": stats.string_lookups,
        "string_hits": stats.string_hits,
        "string_compiles": stats.string_compiles + stats.strings_not_admitted,
        "uncached": stats.uncached,
        "compile_seconds": stats.compile_seconds,
    }
    path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
    except OSError:  # the run is over, or its directory gone: nothing to report to
        pass
