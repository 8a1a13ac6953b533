"""What the benchmarks share: repeated, interleaved measurements, every loop bounded in
count and in time, their options, tables and JSON. Ratios with their median and spread
(min..max), targets and the machine description are in :mod:`tiered_bccache.benchkit.timing`,
shared with ``tiered-bccache bench``.

The machines these run on are shared and noisy, so an absolute time means little; a ratio
against a baseline measured in the same round, in a rotating order, means a lot more. A
round measures every contender once; the ratio is taken per round and summarised over
rounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, FileSystemLoader

from tiered_bccache.benchkit.corpus import generate_corpus

__all__ = [
    "Corpus",
    "Deadline",
    "compiled_corpus",
    "interleave",
    "parser",
    "table",
    "time_calls",
    "write_json",
]


class Deadline:
    """A time budget: every loop that could run long checks one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def interleave(
    measures: Mapping[str, Callable[[], float]],
    *,
    rounds: int,
    seconds: float,
    min_rounds: int = 3,
    gc_off: bool = False,
    collect: bool = True,
) -> dict[str, list[float]]:
    """Call every measurement once per round, the order rotated by one each round, for
    ``rounds`` rounds or until ``seconds`` have passed (but at least ``min_rounds``).
    Returns each measurement's values, one per round, in round order, so that
    ``values[a][i] / values[b][i]`` compares two contenders measured side by side.

    The garbage collector runs before every measurement, outside it (unless ``collect``
    is false: a measurement may want to decide that itself). A collection pays for the
    garbage of every contender and lands in whichever one happens to be running, so with
    ``gc_off`` it is also kept off during short measurements, as ``timeit`` does.
    """
    names = list(measures)
    out: dict[str, list[float]] = {name: [] for name in names}
    deadline = Deadline(seconds)
    was_enabled = gc.isenabled()
    try:
        for r in range(max(rounds, 1)):
            if r >= min_rounds and deadline.expired():
                break
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if collect:
                    gc.collect()
                if gc_off:
                    gc.disable()
                try:
                    out[name].append(measures[name]())
                finally:
                    if was_enabled:
                        gc.enable()
    finally:
        if was_enabled:
            gc.enable()
    return out


def time_calls(
    fn: Callable[[str], object],
    args: Sequence[str],
    before: Callable[[], object] | None = None,
) -> float:
    """Nanoseconds spent in ``fn(a)`` for every ``a`` in ``args``, summed; ``before()`` runs
    ahead of each call, outside the timed part (to empty a memory tier, say)."""
    perf = time.perf_counter_ns
    total = 0
    for a in args:
        if before is not None:
            before()
        started = perf()
        fn(a)
        total += perf() - started
    return float(total)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows of cells as aligned text: the first column to the left, the others right."""
    grid = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in grid) for i in range(len(header))]
    lines = []
    for row in grid:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--json FILE``, ``--rounds``,
    ``--seconds``."""
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{module}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds and sizes: a fast look")
    p.add_argument("--json", metavar="FILE", help="write the results to FILE as JSON")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (repeats)")
    p.add_argument("--seconds", type=float, default=None, help="time budget of the measuring loop")
    return p


def write_json(path: str | None, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


@dataclass(frozen=True, slots=True)
class Corpus:
    """Generated templates on disk with their sources and code, compiled once by a
    default ``Environment`` (code is only valid for environments with default settings)."""

    directory: str
    names: list[str]
    sources: dict[str, str]
    filenames: dict[str, str]
    codes: dict[str, types.CodeType]


def compiled_corpus(
    directory: str, *, count: int, seed: int = 0, max_size: int = 50 * 1024
) -> Corpus:
    """Generate ``count`` templates under ``directory`` (sources up to ``max_size`` bytes)
    and compile each once."""
    names = generate_corpus(directory, count=count, seed=seed, max_size=max_size)
    env = Environment(loader=FileSystemLoader(directory))
    loader = env.loader
    assert loader is not None
    sources, filenames, codes = {}, {}, {}
    for name in names:
        source, filename, _ = loader.get_source(env, name)
        assert filename is not None
        sources[name] = source
        filenames[name] = filename
        codes[name] = env.compile(source, name, filename)
    return Corpus(directory, names, sources, filenames, codes)
