"""Template strings, the Ansible / dbt / Salt pattern: 200 iterations, each building a
new SandboxedEnvironment and calling from_string on 50 distinct strings of the corpus,
in-process and in new processes over a warm filesystem tier, against plain Jinja; then
what string admission leaves on disk and in memory for a mostly one-off workload.

    python -m benchmarks.strings [--quick] [--iterations N] [--rounds N] [--json FILE]

See :mod:`tiered_bccache.benchkit.strings`.
"""

from __future__ import annotations

import os
import tempfile

from tiered_bccache.benchkit.corpus import generate_corpus, render_context
from tiered_bccache.benchkit.strings import run_string_bench
from tiered_bccache.benchkit.timing import describe_machine

from .common import parser, write_json


def main(argv: list[str] | None = None) -> int:
    p = parser("strings", __doc__)
    p.add_argument("--iterations", type=int, default=None, help="iterations (200; quick: 20)")
    args = p.parse_args(argv)
    iterations = args.iterations or (20 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="tbc-strings-") as work:
        generate_corpus(os.path.join(work, "templates"), count=36)
        report = run_string_bench(
            os.path.join(work, "templates"),
            work,
            context=render_context(),
            iterations=iterations,
            rounds=rounds,
            secret=os.urandom(32),
        )
    print(report.format_table())
    write_json(args.json, {"machine": describe_machine(), **report.as_dict()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
