"""Benchmarks beyond the main hit-path run of ``tiered-bccache bench``: scaling with the
number of entries, threads, the memory tier's footprint, compression for remote tiers, and
(the lead's) fault costs and the cold-start stampede.

Each module runs on its own (``python -m benchmarks.scaling --quick``) and
``python -m benchmarks`` runs them all; see ``benchmarks/README.md``. They are not tests:
pytest collects ``tests/`` only.
"""
