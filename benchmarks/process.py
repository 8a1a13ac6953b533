"""Whole processes: a new process loading every template of a warm cache, at two corpus
sizes, against Jinja's own caches, no cache and the bare-marshal-file floor.

    python -m benchmarks.process [--quick] [--sizes 50 500] [--rounds N] [--json FILE]

At 50 templates the process is mostly Python and Jinja starting; at 500 the per-template
cost shows. The 500-template run leaves out the no-cache contender (it compiles for
minutes per process); its cost is clear from the 50-template run. See
:mod:`tiered_bccache.benchkit.process` for what each contender does.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack
from typing import Any

from tiered_bccache.benchkit.corpus import generate_corpus
from tiered_bccache.benchkit.process import run_process_bench
from tiered_bccache.benchkit.servers import private_memcached
from tiered_bccache.benchkit.timing import describe_machine

from .common import parser, write_json


def main(argv: list[str] | None = None) -> int:
    p = parser("process", __doc__)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None, metavar="N", help="corpus sizes (50 500)"
    )
    args = p.parse_args(argv)
    sizes = args.sizes or ([50] if args.quick else [50, 500])
    rounds = args.rounds or (3 if args.quick else 9)
    results: dict[str, Any] = {"machine": describe_machine()}
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbc-process-"))
        memcached = stack.enter_context(private_memcached())
        for size in sizes:
            here = os.path.join(work, str(size))
            names = generate_corpus(os.path.join(here, "templates"), count=size)
            report = run_process_bench(
                os.path.join(here, "templates"),
                names,
                here,
                secret=os.urandom(32),
                memcached=memcached,
                rounds=rounds,
                compile_rounds=size <= 100,
            )
            print(report.format_table(), end="\n\n", flush=True)
            results[str(size)] = report.as_dict()
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
