"""Do real tools get faster under ``tiered-bccache run``, with outputs unchanged?

    python -m benchmarks.tools [--quick] [--rounds N] [--json FILE]
                               [--only dbt ansible sphinx mkdocs startup] [--work DIR]

Run from the virtualenv holding the tools and the package installed with its start-up
hook (``.venv-tools``: ``pip install '.[bench-tools]'``, not editable). Generated
projects (dbt-duckdb: 300 models and 775 tests; ansible-core: a 371-task local playbook;
Sphinx and MkDocs: 50 pages; ``--quick``: 100 models, 120 tasks, 20 pages) are built by
each tool as it is, under ``tiered-bccache run`` cold and warm, and with the variables
alone, warm, in interleaved rounds; every run's outputs are compared byte for byte with
the baseline's. Then ``python -c pass`` with and without the start-up hook. Targets
(the issue): dbt compile warm <= 0.90x, dbt parse warm <= 0.93x, ansible-playbook warm
<= 0.85x, cold <= 1.03x; Sphinx and MkDocs <= 1.01x warm or cold; the hook <= 1.01x.
See :mod:`tiered_bccache.benchkit.tools` for how each number is measured.

A tool that is not installed is left out with a note. The exit status is 1 when a tool
failed or an output differed from the baseline's, not when a target was missed.
"""

from __future__ import annotations

import argparse
import sys

from tiered_bccache.benchkit.tools import FULL, QUICK, TOOLS, ToolsConfig, run_tools_bench

from .common import write_json

_CHOICES = (*TOOLS, "startup")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller projects, 3 rounds")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5; quick 3)")
    p.add_argument("--json", metavar="FILE", help="write the results to FILE as JSON")
    p.add_argument(
        "--only", nargs="+", choices=_CHOICES, metavar="TOOL", help=f"among {', '.join(_CHOICES)}"
    )
    p.add_argument("--work", metavar="DIR", help="generate the projects here and keep them")
    args = p.parse_args(argv)
    only = args.only or list(_CHOICES)
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 1:
        p.error("--rounds must be at least 1")
    config = ToolsConfig(
        only=tuple(t for t in only if t in TOOLS),
        startup="startup" in only,
        sizes=QUICK if args.quick else FULL,
        rounds=rounds,
        startup_rounds=7 if args.quick else 15,
        work=args.work,
    )
    report = run_tools_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.format_table())
    write_json(args.json, report.as_dict())
    return 1 if report.failed() else 0


if __name__ == "__main__":
    raise SystemExit(main())
