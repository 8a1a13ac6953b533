"""The benchmark engine and the corpus generator, shared by ``tiered-bccache bench`` and
the suite in ``benchmarks/``. Tooling: ``import tiered_bccache`` never imports it.

============ ===========================================================================
corpus       the generated template corpus (layouts, macros, includes, pages) and a
             context that renders it
timing       ratios per round with their spread, targets, the rotating order of a round,
             the machine description
contenders   what our tiers are measured against: the floors and Jinja's own caches
servers      real memcached and redis-server processes on free loopback ports (the test
             fixtures start theirs here too)
hitpath      the hit-path run of ``tiered-bccache bench``: ``BenchConfig``, ``run_bench``
process      whole processes: what a new process pays to load the templates
strings      template strings: a new sandboxed environment and ``from_string`` per
             iteration, as Ansible and dbt do
============ ===========================================================================
"""
