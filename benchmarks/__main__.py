"""Run every benchmark, one section after another: the main hit-path run of
``tiered-bccache bench`` (without its process part), then whole processes at 50 and 500
templates, template strings, scaling, threads, footprint, compression, faults and
stampede.

    python -m benchmarks [--full] [--json DIR] [--only SECTION ...] [--skip SECTION ...]

Every section runs with ``--quick`` unless ``--full`` is given. With ``--json DIR`` each
section writes ``DIR/<section>.json``. The exit status is 1 when a section failed (an
exception, or a non-zero status of its ``main``), not when a target was missed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import traceback

from .common import write_json

SECTIONS = (
    "bench",
    "process",
    "strings",
    "scaling",
    "threads",
    "footprint",
    "compression",
    "faults",
    "stampede",
    "environments",
    "tools",
)


def _bench(full: bool, json_path: str | None) -> int:
    from tiered_bccache.benchkit.hitpath import BenchConfig, run_bench

    # The sections below run the whole-process and string benchmarks at full size.
    report = run_bench(BenchConfig(quick=not full, processes=False, string_iterations=0))
    print(report.format_table())
    write_json(json_path, report.as_dict())
    return 0


def _module(section: str, full: bool, json_path: str | None) -> int:
    name = f"{__package__ or 'benchmarks'}.{section}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the module is there but one of its imports is not
        print(f"note: {name} is not there yet; skipped")
        return 0
    argv = [] if full else ["--quick"]
    if json_path is not None:
        argv += ["--json", json_path]
    return int(module.main(argv))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--full", action="store_true", help="full runs (default: quick ones)")
    p.add_argument("--json", metavar="DIR", help="write DIR/<section>.json for each section")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help="run these")
    p.add_argument(
        "--skip", nargs="+", choices=SECTIONS, default=[], metavar="SECTION", help="skip these"
    )
    args = p.parse_args(argv)
    if args.json:
        os.makedirs(args.json, exist_ok=True)
    chosen = [s for s in (args.only or SECTIONS) if s not in args.skip]
    outcome: dict[str, str] = {}
    for section in chosen:
        print(f"\n=== {section} {'=' * (72 - len(section))}\n", flush=True)
        json_path = os.path.join(args.json, f"{section}.json") if args.json else None
        started = time.monotonic()
        try:
            if section == "bench":
                status = _bench(args.full, json_path)
            else:
                status = _module(section, args.full, json_path)
        except Exception:
            traceback.print_exc()
            status = 1
        except SystemExit as exc:  # an argparse error or a deliberate exit inside a section
            status = exc.code if isinstance(exc.code, int) else 1
        elapsed = time.monotonic() - started
        outcome[section] = f"{'ok' if status == 0 else 'FAILED'} in {elapsed:.0f} s"
        print(flush=True)
    print("=== summary " + "=" * 66)
    for section, text in outcome.items():
        print(f"{section:<12} {text}")
    return 1 if any(t.startswith("FAILED") for t in outcome.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
