"""The real tools' environments: dbt's ``MacroFuzzEnvironment`` (plain, capturing macros,
and its native sandbox), ``ansible.template.Templar``'s ``AnsibleEnvironment``, MkDocs'
and Sphinx's theme environments and django-jinja's backend, each built as the tool
builds it, in new processes: the first fingerprint of a process, that of a new
environment of a configuration already seen, renders equal to the tool's without the
cache, and entries shared by a second process that then compiles nothing.

    python -m benchmarks.environments [--quick] [--tools dbt ansible ...] [--count N]
                                      [--rounds N] [--seconds S] [--json FILE]

Needs the tools (the ``bench-tools`` extra; ``.venv-tools``): a tool that is not
installed is reported as not run. See :mod:`tiered_bccache.benchkit.toolenvs`.
"""

from __future__ import annotations

import sys
import tempfile

from tiered_bccache.benchkit.timing import describe_machine
from tiered_bccache.benchkit.toolenvs import TOOLS, run_environment_bench

from .common import parser, table, write_json


def main(argv: list[str] | None = None) -> int:
    p = parser("environments", __doc__)
    p.add_argument(
        "--tools", nargs="+", choices=list(TOOLS), default=None, metavar="TOOL", help="these"
    )
    p.add_argument(
        "--count", type=int, default=None, help="new environments per process (200; quick: 50)"
    )
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    count = args.count or (50 if args.quick else 200)
    seconds = args.seconds or 10.0

    def progress(stage: str, done: int, total: int) -> None:
        print(f"  {stage} {done}/{total}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tbc-environments-") as work:
        report = run_environment_bench(
            args.tools or list(TOOLS),
            work,
            rounds=rounds,
            count=count,
            seconds=seconds,
            progress=progress,
        )
    print("\n".join(report.title()))
    print()
    print(table(report.HEADER, report.rows()))
    notes = report.notes()
    if notes:
        print()
        print("\n".join(notes))
    write_json(args.json, {"machine": describe_machine(), **report.as_dict()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
