"""``tiered-bccache tune``: the hit-ratio curves of a trace (or of a simulated Zipf
workload), the tier sizes they recommend, as text, JSON or a chart.

The curves and the recommendation are :mod:`tiered_bccache.tune`'s; this module reads the
input, turns a byte recommendation into a FileSystemTier bound and prints the report."""

from __future__ import annotations

import argparse
import marshal
import math
import os
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader

from ..entry import CHECKSUM_SIZE, EntryCodec
from ..humanize import human_bytes
from ..secret import MIN_SECRET_BYTES
from .common import check_plot, plot_needs_matplotlib, write_json
from .errors import PROG, CommandError, describe_error, usage_error

if TYPE_CHECKING:
    from ..tune import HitCurves

__all__ = ["TierSizes", "run"]


@dataclass(frozen=True, slots=True)
class TierSizes:
    """The sizes ``tune`` recommends, as the tiers' constructors take them."""

    target: float
    best_hit_ratio: float
    memory_max_entries: int
    memory_max_entries_hit_ratio: float
    memory_max_bytes: int
    memory_max_bytes_hit_ratio: float
    filesystem_max_bytes: int


def run(args: argparse.Namespace) -> int:
    """``tiered-bccache tune``."""
    from ..trace import TraceFormatError
    from ..tune import hit_curves

    if (args.trace is None) == (args.simulate is None):
        raise usage_error("give a TRACE file or --simulate DIR (one of them)")
    check_plot(args.plot)
    records = _trace_records(args.trace) if args.trace else _simulated_records(args)
    try:
        curves = hit_curves(records)
    except TraceFormatError as exc:
        raise CommandError(f"malformed trace: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot read trace {args.trace}: {exc.strerror}") from exc
    if curves.accesses == 0:
        raise CommandError(f"trace {args.trace} holds no lookups: nothing to size from")
    sizes = _tier_sizes(curves, args.target)
    source = args.trace or (
        f"zipf s={args.zipf} over {args.simulate}, {args.accesses} accesses, seed {args.seed}"
    )
    if args.json:
        write_json(_tune_json(curves, sizes, source), sys.stdout)
    else:
        _print_report(curves, sizes, source)
    if args.plot is not None:
        _plot_curves(curves, sizes, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _tier_sizes(curves: HitCurves, target: float) -> TierSizes:
    """The bounds that reach ``target`` of the best hit ratio. The FileSystemTier bound is
    the byte recommendation plus each entry's header and MAC, over the nine tenths of
    max_bytes that a prune leaves."""
    from ..tune import recommend

    rec = recommend(curves, share=target)
    average = curves.byte_curve.total_size / max(curves.distinct_keys, 1)
    with_headers = rec.max_bytes * (1 + _entry_overhead() / max(average, 1))
    return TierSizes(
        target=target,
        filesystem_max_bytes=math.ceil(with_headers / 0.9),
        # The memory tier's bounds are the recommendation's own.
        best_hit_ratio=rec.best_hit_ratio,
        memory_max_entries=rec.max_entries,
        memory_max_entries_hit_ratio=rec.entries_hit_ratio,
        memory_max_bytes=rec.max_bytes,
        memory_max_bytes_hit_ratio=rec.bytes_hit_ratio,
    )


def _print_report(curves: HitCurves, sizes: TierSizes, source: str) -> None:
    from ..tune import format_report

    print(f"source: {source}")
    print(format_report(curves, share=sizes.target), end="")
    print()
    print(f"recommended for {100 * sizes.target:g}% of the best hit ratio:")
    rows = [
        (
            f"MemoryTier(max_entries={sizes.memory_max_entries})",
            "",
            sizes.memory_max_entries_hit_ratio,
        ),
        (
            f"MemoryTier(max_bytes={sizes.memory_max_bytes})",
            human_bytes(sizes.memory_max_bytes),
            sizes.memory_max_bytes_hit_ratio,
        ),
        (
            f"FileSystemTier(max_bytes={sizes.filesystem_max_bytes})",
            human_bytes(sizes.filesystem_max_bytes),
            sizes.memory_max_bytes_hit_ratio,
        ),
    ]
    for call, human, ratio in rows:
        print(f"  {call:<40} {human:>10}  hit ratio {100 * ratio:5.1f}%")
    print(
        f"  as specs: --tier memory:{sizes.memory_max_entries} "
        f"(or memory:bytes={_size_suffix(sizes.memory_max_bytes)}) "
        f"--tier fs:PATH,max_bytes={_size_suffix(sizes.filesystem_max_bytes)}"
    )


# -- the input: a trace file, or a Zipf draw over a template directory ---------------------


def _trace_records(path: str) -> Iterator[tuple[str, int]]:
    from ..trace import read_trace

    if not os.path.exists(path):
        raise usage_error(f"trace file {path} does not exist")
    if os.path.isdir(path):
        raise usage_error(f"trace file {path} is a directory")
    return read_trace(path)


def _simulated_records(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    from ..tune import zipf_trace

    directory = args.simulate
    if not os.path.isdir(directory):
        raise usage_error(f"--simulate {directory}: not a directory")
    env = Environment(loader=FileSystemLoader(directory))
    sized: list[tuple[str, int]] = []
    for name in env.list_templates():
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            code = env.compile(source, name, filename)
        except Exception as exc:
            print(f"{PROG}: skipped {name}: {describe_error(exc)}", file=sys.stderr)
            continue
        sized.append((name, len(marshal.dumps(code))))
    if not sized:
        raise usage_error(f"--simulate {directory}: no template there compiles")
    # Popularity follows a shuffled listing: alphabetical order means nothing.
    random.Random(args.seed).shuffle(sized)
    return iter(zipf_trace(sized, args.accesses, s=args.zipf, seed=args.seed))


# -- sizes as the tiers take them -----------------------------------------------------------


def _entry_overhead() -> int:
    """Bytes a byte tier's entry adds to the marshalled code: header, checksum, MAC."""
    raw = marshal.dumps(compile("", "<empty>", "exec"))
    return len(EntryCodec(b"\0" * MIN_SECRET_BYTES).encode("k", "0" * CHECKSUM_SIZE, raw)) - len(
        raw
    )


def _size_suffix(nbytes: int) -> str:
    """``nbytes`` as the shortest exact spec size (``64M``, ``1536k``, ``1000``), rounding
    up to a whole kilobyte above 64 kB so a spec reads well."""
    if nbytes >= 64 * 1024:
        nbytes = -(-nbytes // 1024) * 1024
    for suffix, unit in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


# -- JSON and the chart ---------------------------------------------------------------------


def _curve_points(n: int, value: Callable[[int], float], low: int = 1) -> list[list[float]]:
    """At most ~100 (x, value) points spread log-uniformly over [low, n], ends included."""
    if n < low:
        return []
    xs = {low, n}
    steps = 100
    for i in range(steps + 1):
        xs.add(round(low * (n / low) ** (i / steps)))
    return [[x, value(x)] for x in sorted(xs)]


def _tune_json(curves: HitCurves, sizes: TierSizes, source: str) -> dict[str, object]:
    byte_curve = curves.byte_curve
    accesses = curves.accesses
    return {
        "source": source,
        "accesses": accesses,
        "distinct_keys": curves.distinct_keys,
        "total_bytes": byte_curve.total_size,
        "largest_entry": byte_curve.max_size,
        "recommendation": asdict(sizes),
        "entries_curve": _curve_points(
            curves.distinct_keys, lambda c: curves.entry_hits[c - 1] / accesses
        ),
        "bytes_curve": _curve_points(
            byte_curve.total_size,
            lambda b: byte_curve.hits_at(b) / accesses,
            low=max(byte_curve.max_size, 1),
        ),
    }


def _plot_curves(curves: HitCurves, sizes: TierSizes, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise plot_needs_matplotlib() from exc
    data = _tune_json(curves, sizes, "")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, chosen, shown, xlabel in (
        (
            left,
            "entries_curve",
            sizes.memory_max_entries,
            str(sizes.memory_max_entries),
            "MemoryTier max_entries",
        ),
        (
            right,
            "bytes_curve",
            sizes.memory_max_bytes,
            human_bytes(sizes.memory_max_bytes),
            "MemoryTier max_bytes (bytes of marshalled code)",
        ),
    ):
        points = data[key]
        assert isinstance(points, list)
        ax.step([p[0] for p in points], [p[1] for p in points], where="post")
        ax.axhline(sizes.best_hit_ratio, linestyle=":", color="grey", label="best possible")
        ax.axhline(
            sizes.target * sizes.best_hit_ratio,
            linestyle="--",
            color="grey",
            label=f"{100 * sizes.target:g}% of the best",
        )
        ax.axvline(chosen, color="red", label=f"recommended: {shown}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("LRU hit ratio")
        ax.legend(loc="lower right")
    fig.suptitle("tiered_bccache: hit ratio by memory-tier size")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
