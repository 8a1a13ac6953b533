"""What the commands and their help texts share, importing nothing: the parser reads it
without importing a command (``tiered-bccache run`` starts a tool without Jinja)."""

from __future__ import annotations

__all__ = ["MEMCACHED_TIMEOUT", "PLOT_HINT", "REDIS_TIMEOUT", "SPEC_HELP"]

PLOT_HINT = "pip install 'tiered-bccache[plot]'"
#: The library's memcached timeouts are tens of milliseconds, sized for a page render
#: that must not wait; a batch command on a busy machine would rather wait a second than
#: count a server as down and skip it.
MEMCACHED_TIMEOUT = 1.0
#: The same for Redis tiers.
REDIS_TIMEOUT = 1.0

#: The spec syntax in a few lines, for ``--help``.
SPEC_HELP = """\
tier specs (repeat --tier, fastest first):
  memory | memory:512 | memory:bytes=64MB | memory:512,bytes=64MB
  fs | fs:/path | fs:/path,max_bytes=1GB
  memcached:host:port | memcached:host1:port,host2:port | ...;prefix=NAME;timeout=SECONDS
  redis://host:port/db | rediss://host:port/db | redis+unix:///path.sock?db=N |
  redis+cluster://host1:port,host2:port | ...;prefix=NAME;timeout=SECONDS
  sizes: bytes, or k/M/G (KB/MB/GB, KiB/MiB/GiB), powers of 1024
or name an application's object as module:attribute: a TieredBytecodeCache, or a
jinja2.Environment whose bytecode_cache is one (the current directory is importable)."""
