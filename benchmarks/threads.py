"""Do threads sharing one cache queue up on the memory tier's lock?

    python -m benchmarks.threads [--quick] [--json FILE] [--threads 4] [--millis 250]

One shared cache with a warm memory tier; each of ``--threads`` threads loads templates
(``env.get_template`` on one shared environment, ``cache_size=0``) for a fixed share of a
count of loads (per cache, what one thread does in about ``--millis`` ms: many GIL switch
intervals); throughput is the loads of all threads over the wall time from the moment
they are released together until the last one finishes. One thread and N threads are
measured side by side in interleaved rounds; the ratio N-thread / 1-thread throughput is
taken per round. Target (the issue): at least 0.9x for 4 threads, i.e. no lock convoy.

Under the GIL pure-Python work does not speed up with threads, so 1.0x is the ceiling for
a cache whose hit never leaves the interpreter; the bytecode floor of
``tiered-bccache bench`` (a dict of code objects, no lock at all) shows where that ceiling
is on this machine. Jinja's ``FileSystemBytecodeCache`` is the reference a user has today:
its hits read files, and the GIL is released during the reads.

The templates come from a ``DictLoader`` so that the loader does no file I/O of its own
(a ``FileSystemLoader`` releases the GIL for its reads, which flatters every ratio);
``--loader fs`` measures with one anyway.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from jinja2 import BaseLoader, DictLoader, Environment, FileSystemBytecodeCache, FileSystemLoader
from jinja2.bccache import BytecodeCache

from tiered_bccache import MemoryTier, TieredBytecodeCache
from tiered_bccache.benchkit.contenders import DictFloor
from tiered_bccache.benchkit.timing import Spread, Target, describe_machine, ratios, verdict

from .common import compiled_corpus, interleave, parser, table, write_json

TARGET = Target("4 threads vs 1, memory-tier hits", "4 threads", "1 thread", 0.9, False)

_CONTENDERS = {
    "memory": "ours, memory tier",
    "floor-dict": "floor-dict (no lock)",
    "jinja-fs": "Jinja FileSystemBytecodeCache",
}


def throughput(
    env: Environment, names: list[str], threads: int, loads: int, seconds: float
) -> tuple[float, int]:
    """Release ``threads`` threads together, each loading its share of ``loads``
    templates (round robin over ``names``, each thread from its own offset); return the
    loads per second of wall time of all of them, from the first thread's start to the
    last one's end, and the loads done (fewer than ``loads`` if the ``seconds`` budget
    ran out first)."""
    share = max(loads // threads, 1)
    start = threading.Barrier(threads)
    done = [0] * threads
    spans = [(0.0, 0.0)] * threads
    errors: list[BaseException] = []
    end = time.monotonic() + seconds

    def work(index: int) -> None:
        get = env.get_template
        n = len(names)
        offset = index * n // threads
        count = 0
        try:
            start.wait()
            began = time.perf_counter()
            while count < share:
                for i in range(count, min(count + 64, share)):
                    get(names[(offset + i) % n])
                count = min(count + 64, share)
                if time.monotonic() > end:
                    break
            # Each thread times itself: the main thread may get the GIL back only after
            # the workers have finished.
            spans[index] = (began, time.perf_counter())
        except BaseException as exc:  # reported by the caller, not lost in the thread
            errors.append(exc)
        done[index] = count

    pool = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(end - time.monotonic(), 0) + 10)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in pool):
        raise RuntimeError("a load thread did not finish in time")
    elapsed = max(e for _, e in spans) - min(b for b, _ in spans)
    return sum(done) / elapsed, sum(done)


def calibrate(env: Environment, names: list[str], threads: int, millis: float) -> int:
    """The number of loads one thread does in about ``millis`` ms (a multiple of
    ``threads``): long enough for many GIL switch intervals, whatever the cache."""
    probe = max(len(names), 50)
    started = time.perf_counter()
    for i in range(probe):
        env.get_template(names[i % len(names)])
    per_load = (time.perf_counter() - started) / probe
    loads = int(millis / 1000 / per_load) // threads * threads
    return min(max(loads, 16 * threads), 1_000_000)


def _environments(loader: BaseLoader, work: str) -> dict[str, tuple[Environment, BytecodeCache]]:
    def env(cache: BytecodeCache) -> tuple[Environment, BytecodeCache]:
        return (
            Environment(loader=loader, bytecode_cache=cache, cache_size=0, auto_reload=True),
            cache,
        )

    jinja_dir = os.path.join(work, "jinja-fs")
    os.makedirs(jinja_dir)
    return {
        "memory": env(TieredBytecodeCache([MemoryTier(max_entries=4096)])),
        "floor-dict": env(DictFloor()),
        "jinja-fs": env(FileSystemBytecodeCache(jinja_dir)),
    }


def run(
    *, count: int, threads: int, millis: float, rounds: int, seconds: float, loader_kind: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tbc-threads-") as work:
        corpus = compiled_corpus(os.path.join(work, "templates"), count=count)
        loader: BaseLoader = (
            FileSystemLoader(corpus.directory)
            if loader_kind == "fs"
            else DictLoader(corpus.sources)
        )
        envs = _environments(loader, work)
        for env, _ in envs.values():  # warm every cache
            for name in corpus.names:
                env.get_template(name)
        ours = envs["memory"][1]
        assert isinstance(ours, TieredBytecodeCache)
        loads = {
            label: calibrate(env, corpus.names, threads, millis) for label, (env, _) in envs.items()
        }
        ours.reset_stats()
        done: dict[str, list[int]] = {}
        # A measurement may take twice its even share of the budget, no more.
        per_measurement = 2 * seconds / max(rounds, 1) / (2 * len(envs))

        def measure(label: str, k: int) -> Callable[[], float]:
            env = envs[label][0]

            def once() -> float:
                rate, n = throughput(env, corpus.names, k, loads[label], per_measurement)
                done.setdefault(f"{label}/{k}", []).append(n)
                return rate

            return once

        measures = {
            f"{label}/{k}": measure(label, k) for label in envs for k in sorted({1, threads})
        }
        samples = interleave(measures, rounds=rounds, seconds=seconds, min_rounds=min(rounds, 3))
        stats = ours.stats()
        if stats.misses or stats.compiles:
            raise RuntimeError(f"a timed load missed the memory tier: {stats}")
    out: dict[str, Any] = {
        "templates": count,
        "threads": threads,
        "millis": millis,
        "loader": loader_kind,
        "rounds": len(samples[f"memory/{threads}"]),
        "contenders": {},
    }
    for label in envs:
        one, many = f"{label}/1", f"{label}/{threads}"
        out["contenders"][label] = {
            "loads_per_s_1": Spread.of(samples[one]).as_dict(),
            f"loads_per_s_{threads}": Spread.of(samples[many]).as_dict(),
            "ratio": ratios(samples[many], samples[one]).as_dict(),
            "loads": loads[label],
            "loads_done_min": min(done[many] + done[one]),
        }
    # How far the lock takes ours below the lock-free ceiling, round by round.
    ours_r = [a / b for a, b in zip(samples[f"memory/{threads}"], samples["memory/1"], strict=True)]
    floor_r = [
        a / b
        for a, b in zip(samples[f"floor-dict/{threads}"], samples["floor-dict/1"], strict=True)
    ]
    out["ours_over_floor"] = Spread.of(
        a / b for a, b in zip(ours_r, floor_r, strict=True)
    ).as_dict()
    return out


def format_result(result: dict[str, Any]) -> str:
    k = result["threads"]
    lines = [
        f"{k} threads vs 1 on one shared cache: {result['templates']} templates, "
        f"about {result['millis']:g} ms of loads per measurement ({result['loader']} loader), "
        f"{result['rounds']} interleaved rounds; throughput = loads of all threads / wall time",
        "",
    ]
    body = []
    for label, row in result["contenders"].items():
        r = Spread(row["ratio"]["median"], row["ratio"]["min"], row["ratio"]["max"], 0)
        body.append(
            [
                _CONTENDERS[label],
                str(row["loads"]),
                _rate(row["loads_per_s_1"]["median"]),
                _rate(row[f"loads_per_s_{k}"]["median"]),
                r.ratio(),
                r.range(),
                verdict(TARGET, r.median) if label == "memory" else "",
            ]
        )
    header = ["cache", "loads", "1 thread", f"{k} threads", "ratio", "spread", "target"]
    lines.append(table(header, body))
    o = result["ours_over_floor"]
    lines.append(
        f"ours' ratio over the lock-free floor's: {o['median']:.2f}x {o['min']:.2f}..{o['max']:.2f}"
        "  (1.00x: the lock costs nothing the GIL does not already)"
    )
    if any(row["loads_done_min"] < row["loads"] for row in result["contenders"].values()):
        lines.append("note: some measurements ran out of time before all their loads")
    return "\n".join(lines)


def _rate(per_second: float) -> str:
    return f"{per_second / 1000:.1f}k/s"


def main(argv: list[str] | None = None) -> int:
    p = parser("threads", __doc__)
    p.add_argument("--threads", type=int, default=4, help="threads of the many-thread case (4)")
    p.add_argument(
        "--millis",
        type=float,
        default=None,
        help="single-thread duration of a measurement, which fixes its load count (250)",
    )
    p.add_argument("--count", type=int, default=36, help="templates in the corpus (36)")
    p.add_argument("--loader", choices=("dict", "fs"), default="dict")
    args = p.parse_args(argv)
    if args.threads < 2:
        p.error("--threads must be at least 2")
    result = run(
        count=args.count,
        threads=args.threads,
        millis=args.millis or (60.0 if args.quick else 250.0),
        rounds=args.rounds or (4 if args.quick else 15),
        seconds=args.seconds or (20.0 if args.quick else 120.0),
        loader_kind=args.loader,
    )
    print(format_result(result))
    write_json(args.json, {"machine": describe_machine(), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
