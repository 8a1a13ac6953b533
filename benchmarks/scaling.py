"""Does a hit get slower as the cache fills up? And is pruning the filesystem tier
amortized O(1) per write?

    python -m benchmarks.scaling [--quick] [--json FILE] [--entries 10000] [--sample 100]

Hit cost: the same ``--sample`` template names are loaded (``env.get_template``,
``cache_size=0``) from a cache holding only them and from a cache holding ``--entries``
entries, for the memory tier and for the filesystem tier in a fresh process's state (the
memory tier emptied before each load, so every load reads, verifies and promotes a file).
Compiling ten thousand templates would take minutes, so the caches are filled through
Jinja's interface (``get_bucket``, ``bucket.code = ...``, ``set_bucket``) with the code of
a handful of real corpus templates under many distinct names; a ``FunctionLoader`` maps
each name to a fresh copy of its template's source (as a loader reading files returns).
The bytecode floors of ``tiered-bccache bench`` (a dict of code, a bare marshal file per
template) show what the dictionary and the directory themselves cost at each size.

Each timing is taken warm (the sample loaded once, untimed, just before: its entries are
in the CPU caches) and cold (a full garbage collection just before walks the heap and
evicts them, as a request's work between two loads of a template would): with more
entries, a cold lookup misses the CPU caches in bigger dictionaries. Target (the issue):
10,000 entries within 1.2x of 100, for both tiers.

Pruning: a ``FileSystemTier(max_bytes=...)`` takes N = 1,000 / 5,000 / 20,000 writes of
new keys, starting from a directory at its steady-state size; a prune pass (a scan of the
directory) runs after every tenth of ``max_bytes`` written, so the cost per write should
not depend on N. Reported: mean cost per write,
prune passes, time in them, and the per-write cost at the largest N over the smallest.
"""

from __future__ import annotations

import gc
import itertools
import os
import random
import secrets
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, FunctionLoader
from jinja2.bccache import BytecodeCache

from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.benchkit.contenders import DictFloor, MarshalFileFloor
from tiered_bccache.benchkit.timing import Spread, Target, describe_machine, ratios, verdict
from tiered_bccache.humanize import human_bytes, human_us

from .common import (
    Corpus,
    Deadline,
    compiled_corpus,
    interleave,
    parser,
    table,
    time_calls,
    write_json,
)

SECRET = secrets.token_bytes(32)
_Source = tuple[str, str, Callable[[], bool]]


# -- hit cost against the number of entries -------------------------------------------------


class _Names:
    """``count`` template names, each standing for one of the corpus templates."""

    def __init__(self, corpus: Corpus, count: int) -> None:
        self.corpus = corpus
        self.names = [f"scale/{i:06d}.html" for i in range(count)]
        self._of = {name: corpus.names[i % len(corpus.names)] for i, name in enumerate(self.names)}

    def load(self, name: str) -> _Source | None:
        real = self._of.get(name)
        if real is None:
            return None
        # A fresh string each time, as a loader that reads and decodes a file returns:
        # the memory tier compares it with the source it holds, so the entries must not
        # share one object (an identity check would skip reading the stored source).
        source = self.corpus.sources[real].encode("utf-8").decode("utf-8")
        return source, f"/virtual/{name}", _always

    def code(self, name: str) -> types.CodeType:
        return self.corpus.codes[self._of[name]]


def _always() -> bool:
    return True


@dataclass
class _Setup:
    """One contender at one size: what to time and what to run ahead of each load."""

    env: Environment
    cache: BytecodeCache
    before: Callable[[], None] | None = None


def _fill(setup: _Setup, names: _Names, fill: list[str], deadline: Deadline) -> int:
    """Store ``fill``'s code through Jinja's interface, as a compile would, until the
    deadline; return how many entries were stored."""
    env, cache = setup.env, setup.cache
    for done, name in enumerate(fill):
        if done % 100 == 0 and deadline.expired():
            return done
        loaded = names.load(name)
        assert loaded is not None
        source, filename, _ = loaded
        bucket = cache.get_bucket(env, name, filename, source)
        bucket.code = names.code(name)
        cache.set_bucket(bucket)
    return len(fill)


def _setups(work: str, names: _Names, size: int) -> dict[str, _Setup]:
    def env(cache: BytecodeCache) -> Environment:
        return Environment(
            loader=FunctionLoader(names.load),
            bytecode_cache=cache,
            cache_size=0,
            auto_reload=True,
        )

    def sub(label: str) -> str:
        path = os.path.join(work, f"{label}-{size}")
        os.makedirs(path)
        return path

    memory = TieredBytecodeCache([MemoryTier(max_entries=2 * size + 16)])
    fs_memory = MemoryTier(max_entries=2 * size + 16)
    fs = TieredBytecodeCache([fs_memory, FileSystemTier(sub("fs"))], secret=SECRET)
    floor_dict = DictFloor()
    floor_file = MarshalFileFloor(sub("floor-file"))
    return {
        "memory": _Setup(env(memory), memory),
        "filesystem": _Setup(env(fs), fs, fs_memory.clear),
        "floor-dict": _Setup(env(floor_dict), floor_dict),
        "floor-file": _Setup(env(floor_file), floor_file),
    }


#: (row label, contender, what is timed), in table order.
_ROWS = (
    ("memory tier, get_template", "memory", "template"),
    ("memory tier, get_bucket only", "memory", "bucket"),
    ("filesystem tier, get_template", "filesystem", "template"),
    ("filesystem tier, get_bucket only", "filesystem", "bucket"),
    ("floor-dict, get_template", "floor-dict", "template"),
    ("floor-file, get_template", "floor-file", "template"),
)
_REGIMES = ("warm", "cold")
_TARGETS = {
    ("memory", "template"): 1.2,
    ("filesystem", "template"): 1.2,
}


def _measure(
    setup: _Setup, names: _Names, sample: list[str], what: str, regime: str
) -> Callable[[], float]:
    """Time loading ``sample`` once. Warm: right after loading it once untimed, so its
    entries are in the CPU caches. Cold: right after a full garbage collection, which
    walks the whole heap and leaves none of them there, as a request's work between two
    loads of a template would."""
    if what == "template":
        fn: Callable[[str], object] = setup.env.get_template
    else:
        env, cache = setup.env, setup.cache
        args = {}
        for name in sample:
            loaded = names.load(name)
            assert loaded is not None
            args[name] = loaded[:2]

        def fn(name: str) -> object:
            source, filename = args[name]
            return cache.get_bucket(env, name, filename, source)

    def once() -> float:
        if regime == "cold":
            gc.collect()
        else:
            time_calls(fn, sample, setup.before)
        return time_calls(fn, sample, setup.before)

    return once


def hit_scaling(
    corpus: Corpus,
    work: str,
    *,
    entries: int,
    sample_size: int,
    rounds: int,
    seconds: float,
    fill_budget: float = 120.0,
) -> dict[str, Any]:
    names = _Names(corpus, entries)
    rng = random.Random(1)
    sample = sorted(rng.sample(names.names, sample_size))
    sizes = (sample_size, entries)
    setups = {size: _setups(work, names, size) for size in sizes}
    fill_seconds: dict[str, float] = {}
    filled: dict[str, int] = {}
    # The sample goes in first, so that a fill cut short by its budget still holds it.
    chosen = set(sample)
    order = sample + [name for name in names.names if name not in chosen]
    for size in sizes:
        for label, setup in setups[size].items():
            started = time.perf_counter()
            filled[f"{label}@{size}"] = _fill(setup, names, order[:size], Deadline(fill_budget))
            fill_seconds[f"{label}@{size}"] = time.perf_counter() - started
            # Warm up, and check that every sampled name is a hit.
            for name in sample:
                if setup.before is not None:
                    setup.before()
                setup.env.get_template(name)
    for size in sizes:
        for setup in setups[size].values():
            cache = setup.cache
            if isinstance(cache, TieredBytecodeCache):
                cache.reset_stats()
    measures = {
        f"{contender}/{what}/{regime}@{size}": _measure(
            setups[size][contender], names, sample, what, regime
        )
        for _, contender, what in _ROWS
        for regime in _REGIMES
        for size in sizes
    }
    samples = interleave(
        measures,
        rounds=rounds,
        seconds=seconds,
        min_rounds=min(rounds, 3),
        gc_off=True,
        collect=False,
    )
    for size in sizes:
        for label, setup in setups[size].items():
            cache = setup.cache
            if isinstance(cache, TieredBytecodeCache):
                stats = cache.stats()
                if stats.misses or stats.compiles:
                    raise RuntimeError(f"{label}@{size}: a timed load missed the cache: {stats}")
    small, large = sizes
    rows: dict[str, Any] = {}
    for (label, contender, what), regime in itertools.product(_ROWS, _REGIMES):
        a = f"{contender}/{what}/{regime}@{small}"
        b = f"{contender}/{what}/{regime}@{large}"
        limit = _TARGETS.get((contender, what))
        rows[f"{label}, {regime}"] = {
            "per_load_ns": {
                str(small): Spread.of(t / sample_size for t in samples[a]).as_dict(),
                str(large): Spread.of(t / sample_size for t in samples[b]).as_dict(),
            },
            "ratio": ratios(samples[b], samples[a]).as_dict(),
            "target": limit,
        }
    return {
        "entries": entries,
        "sample": sample_size,
        "rounds": len(next(iter(samples.values()))),
        "corpus_templates": len(corpus.names),
        "fill_seconds": fill_seconds,
        "filled": filled,
        "rows": rows,
    }


def format_hits(result: dict[str, Any]) -> str:
    small, large = result["sample"], result["entries"]
    lines = [
        f"hit cost with {large} vs {small} entries cached: the same {small} names loaded, "
        f"{result['rounds']} interleaved rounds ({result['corpus_templates']} distinct "
        "templates' code under all the names)",
        "",
    ]
    cut = {k: v for k, v in result["filled"].items() if v < int(k.rpartition("@")[2])}
    if cut:
        lines.insert(1, f"note: filling ran out of time: {cut} entries stored")
    body = []
    for label, row in result["rows"].items():
        per = row["per_load_ns"]
        ratio = Spread(row["ratio"]["median"], row["ratio"]["min"], row["ratio"]["max"], 0)
        limit = row["target"]
        body.append(
            [
                label,
                human_us(per[str(small)]["median"]),
                human_us(per[str(large)]["median"]),
                ratio.ratio(),
                ratio.range(),
                "" if limit is None else verdict(Target(label, "", "", limit, True), ratio.median),
            ]
        )
    header = ["per load (median)", f"{small} cached", f"{large} cached", "ratio", "spread"]
    lines.append(table([*header, "target"], body))
    return "\n".join(lines)


# -- pruning --------------------------------------------------------------------------------


class _CountingTier(FileSystemTier):
    """A filesystem tier that counts its prune passes and the time spent in them."""

    def __init__(self, directory: str, *, max_bytes: int) -> None:
        super().__init__(directory, max_bytes=max_bytes)
        self.prunes = 0
        self.prune_ns = 0

    def prune(self) -> None:
        started = time.perf_counter_ns()
        super().prune()
        self.prune_ns += time.perf_counter_ns() - started
        self.prunes += 1


def _prune_run(
    work: str, writes: int, value: bytes, max_bytes: int, seconds: float, info: dict[str, Any]
) -> float:
    """Write ``writes`` new keys into a directory already at its steady-state size (the
    nine tenths of ``max_bytes`` a prune leaves); return the mean nanoseconds per write."""
    directory = tempfile.mkdtemp(dir=work)
    filler = FileSystemTier(directory)
    prefill = Deadline(seconds)
    for i in range(max_bytes * 9 // 10 // len(value)):
        filler.set(f"old{i:07d}", value)
        if prefill.expired():
            break
    tier = _CountingTier(directory, max_bytes=max_bytes)
    deadline = Deadline(seconds)
    perf = time.perf_counter_ns
    done = 0
    started = perf()
    while done < writes:
        for i in range(done, min(done + 100, writes)):
            tier.set(f"k{i:07d}", value)
        done = min(done + 100, writes)
        if deadline.expired():
            break
    elapsed = perf() - started
    count, total = tier.size()
    info.setdefault("prunes", []).append(tier.prunes)
    info.setdefault("prune_share", []).append(tier.prune_ns / elapsed)
    info.setdefault("per_pass_ns", []).append(tier.prune_ns / max(tier.prunes, 1))
    info.setdefault("done", []).append(done)
    info.setdefault("files_at_end", []).append(count)
    info.setdefault("bytes_at_end", []).append(total)
    tier.clear()
    return elapsed / done


def prune_scaling(
    work: str,
    *,
    writes: list[int],
    entry_bytes: int,
    capacity: int,
    rounds: int,
    seconds: float,
) -> dict[str, Any]:
    value = os.urandom(entry_bytes)
    max_bytes = entry_bytes * capacity
    info: dict[int, dict[str, Any]] = {n: {} for n in writes}
    # Each run gets the share of the budget that its number of writes is of a round's.
    per_write = seconds / max(rounds, 1) / sum(writes)

    def measure(n: int) -> Callable[[], float]:
        return lambda: _prune_run(work, n, value, max_bytes, per_write * n, info[n])

    samples = interleave(
        {str(n): measure(n) for n in writes},
        rounds=rounds,
        seconds=seconds,
        min_rounds=min(rounds, 2),
    )
    smallest, largest = str(min(writes)), str(max(writes))
    return {
        "entry_bytes": entry_bytes,
        "max_bytes": max_bytes,
        "prune_every_bytes": max(max_bytes // 10, 1),
        "rounds": len(samples[smallest]),
        "runs": {
            str(n): {
                "per_write_ns": Spread.of(samples[str(n)]).as_dict(),
                "prunes": info[n]["prunes"],
                "prune_share": Spread.of(info[n]["prune_share"]).as_dict(),
                "per_pass_ns": Spread.of(info[n]["per_pass_ns"]).as_dict(),
                "writes_done": info[n]["done"],
                "files_at_end": info[n]["files_at_end"],
                "bytes_at_end": info[n]["bytes_at_end"],
            }
            for n in writes
        },
        "ratio_largest_over_smallest": ratios(samples[largest], samples[smallest]).as_dict(),
    }


def format_prune(result: dict[str, Any]) -> str:
    lines = [
        f"filesystem pruning: max_bytes {human_bytes(result['max_bytes'])} "
        f"({result['max_bytes'] // result['entry_bytes']} entries of "
        f"{human_bytes(result['entry_bytes'])}), a prune pass after every "
        f"{human_bytes(result['prune_every_bytes'])} written; each run starts at the steady-state "
        f"size; {result['rounds']} interleaved rounds",
        "",
    ]
    body = []
    for n, run in result["runs"].items():
        per = run["per_write_ns"]
        done = min(run["writes_done"])
        body.append(
            [
                n if done == int(n) else f"{n} (cut at {done})",
                human_us(per["median"]),
                f"{human_us(per['min'])}..{human_us(per['max'])}",
                str(max(run["prunes"])),
                human_us(run["per_pass_ns"]["median"]),
                f"{run['prune_share']['median'] * 100:.0f}%",
                str(max(run["files_at_end"])),
            ]
        )
    header = ["writes", "per write", "spread", "passes", "per pass", "in prune", "files at end"]
    lines.append(table(header, body))
    r = result["ratio_largest_over_smallest"]
    runs = list(result["runs"])
    lines.append(
        f"per-write cost, {runs[-1]} writes over {runs[0]}: {r['median']:.2f}x "
        f"{r['min']:.2f}..{r['max']:.2f}  (amortized O(1) if ~1)"
    )
    return "\n".join(lines)


# -- the command line -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = parser("scaling", __doc__)
    p.add_argument("--entries", type=int, default=10_000, help="the large cache (10000)")
    p.add_argument("--sample", type=int, default=100, help="names timed, and the small cache")
    p.add_argument("--templates", type=int, default=8, help="distinct corpus templates (8)")
    p.add_argument(
        "--max-size",
        type=int,
        default=16 * 1024,
        help="largest template source in bytes (16384); the fill writes entries x size twice",
    )
    p.add_argument("--writes", default="1000,5000,20000", help="pruning: writes per run")
    p.add_argument("--entry-bytes", type=int, default=8192, help="pruning: bytes per entry")
    p.add_argument("--capacity", type=int, default=500, help="pruning: max_bytes in entries")
    args = p.parse_args(argv)
    if not 0 < args.sample < args.entries:
        p.error("--sample must be at least 1 and less than --entries")
    rounds = args.rounds or (5 if args.quick else 21)
    seconds = args.seconds or (20.0 if args.quick else 120.0)
    prune_rounds = args.rounds or (2 if args.quick else 5)
    prune_seconds = args.seconds or (30.0 if args.quick else 180.0)
    writes = sorted(int(n) for n in args.writes.split(","))
    with tempfile.TemporaryDirectory(prefix="tbc-scaling-") as work:
        corpus = compiled_corpus(
            os.path.join(work, "templates"), count=args.templates, max_size=args.max_size
        )
        hits = hit_scaling(
            corpus,
            work,
            entries=args.entries,
            sample_size=args.sample,
            rounds=rounds,
            seconds=seconds,
        )
        print(format_hits(hits))
        print()
        prune = prune_scaling(
            work,
            writes=writes,
            entry_bytes=args.entry_bytes,
            capacity=args.capacity,
            rounds=prune_rounds,
            seconds=prune_seconds,
        )
        print(format_prune(prune))
    write_json(args.json, {"machine": describe_machine(), "hits": hits, "prune": prune})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
