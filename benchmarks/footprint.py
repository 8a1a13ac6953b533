"""How much memory does the memory tier really take per entry, against the marshalled bytes
it counts? The answer sizes ``MemoryTier(max_bytes=...)``.

    python -m benchmarks.footprint [--quick] [--json FILE] [--entries 2000] [--rounds 5]

A ``MemoryTier(max_bytes=...)`` weighs an entry by the length of its marshalled code (its
``currsize``), but what it holds is the code object, which is larger, and the template
source, which the hit path compares instead of hashing. Each round starts a fresh Python
process (earlier allocations of this one would hide the growth), fills a
``TieredBytecodeCache([MemoryTier(max_bytes=...)])`` through Jinja's interface with
``--entries`` entries, and reads its resident set size (``/proc/self/statm``) and the
tier's ``currsize`` at ten checkpoints. The slope of RSS over ``currsize`` (least squares,
so fixed costs drop out) is the RSS per marshalled byte; over the entry count, the RSS per
entry. One more process, traced with ``tracemalloc``, splits the Python heap per entry into
code, source and the cache's own bookkeeping.

The entries are the code of the ``--templates`` corpus templates, unmarshalled afresh for
each entry under a distinct name (every constant is a new object, as for distinct
templates; interned identifiers are shared, as they are between real templates), with the
source read from disk for each entry, as a loader does.
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import marshal
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader

from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.benchkit.timing import Spread, describe_machine
from tiered_bccache.humanize import human_bytes

from .common import Deadline, compiled_corpus, parser, table, write_json

_ROOT = Path(__file__).resolve().parent.parent


def rss_bytes() -> int:
    """This process's resident set size now (its peak where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


# -- the child: one fresh process filling one tier --------------------------------------------


def _environment(directory: str) -> Environment:
    return Environment(loader=FileSystemLoader(directory))


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0]


def prepare(spec: dict[str, Any]) -> None:
    """Write the entries the promotion path reads into ``spec["fs"]`` (in its own process,
    so that none of it is in the measuring process)."""
    directory, names = spec["directory"], spec["names"]
    env = _environment(directory)
    cache = TieredBytecodeCache([FileSystemTier(spec["fs"])], secret=bytes.fromhex(spec["secret"]))
    blobs = [Path(p).read_bytes() for p in spec["code_files"]]
    for i in range(spec["entries"] + 1):
        j = i % len(names)
        path = os.path.join(directory, *names[j].split("/"))
        bucket = cache.get_bucket(env, _name(i, names[j]), path, Path(path).read_text("utf-8"))
        bucket.code = marshal.loads(blobs[j])
        cache.set_bucket(bucket)


def _name(i: int, name: str) -> str:
    return f"fp/{i:06d}/{name}"


def fill(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill a memory tier as ``spec`` says and return the checkpoints (in the child).

    ``spec["path"]`` is ``compile`` (entries arrive as freshly compiled code, through
    ``set_bucket``) or ``promote`` (the tier starts empty and every lookup is a hit in a
    filesystem tier prepared by :func:`prepare`, promoted into memory)."""
    directory: str = spec["directory"]
    names: list[str] = spec["names"]
    entries: int = spec["entries"]
    traced: bool = spec["traced"]
    promote = spec["path"] == "promote"
    blobs = [Path(p).read_bytes() for p in spec["code_files"]]
    env = _environment(directory)
    tier = MemoryTier(None, max_bytes=1 << 40)
    tiers: list[Any] = [tier]
    if promote:
        tiers.append(FileSystemTier(spec["fs"]))
    cache = TieredBytecodeCache(tiers, secret=bytes.fromhex(spec["secret"]))
    paths = [os.path.join(directory, *n.split("/")) for n in names]
    deadline = Deadline(spec["seconds"])

    def add(i: int) -> None:
        j = i % len(names)
        with open(paths[j], encoding="utf-8") as f:
            source = f.read()  # a fresh string, as a loader returns
        bucket = cache.get_bucket(env, _name(i, names[j]), paths[j], source)
        if promote:
            if bucket.code is None:
                raise RuntimeError(f"entry {i} was not in the filesystem tier")
        else:
            bucket.code = marshal.loads(blobs[j])
            cache.set_bucket(bucket)

    # One entry first, then gone again: what the first lookup of an environment builds
    # (its fingerprint, the tier's internals) is not per entry.
    add(entries)
    tier.clear()
    if traced:
        tracemalloc.start(32)
    gc.collect()
    before = tracemalloc.take_snapshot() if traced else None
    step = max(entries // 10, 1)
    points = [(0, rss_bytes(), tier.currsize)]
    done = 0
    for i in range(entries):
        add(i)
        done = i + 1
        if done % step == 0 or done == entries:
            gc.collect()
            points.append((done, rss_bytes(), tier.currsize))
            if deadline.expired():
                break
    if len(tier) != done:
        raise RuntimeError(f"the tier holds {len(tier)} entries, not {done}: it evicted")
    parts = _attribute(before, tracemalloc.take_snapshot()) if before is not None else {}
    return {"points": points, "entries": done, "traced_parts": parts}


def _attribute(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, int]:
    """Split the memory held since ``before`` by where it was allocated. Differences of
    ``get_traced_memory`` around each step would not do: freed objects wait in CPython's
    free lists, still traced, and the next step reuses them without a new allocation."""
    parts = {"code": 0, "dump caches": 0, "source": 0, "bookkeeping": 0}
    for stat in after.compare_to(before, "traceback"):
        lines = [linecache.getline(f.filename, f.lineno) for f in stat.traceback]
        if any("marshal.dumps" in line for line in lines):
            parts["dump caches"] += stat.size_diff
        elif any("marshal.loads" in line for line in lines):
            parts["code"] += stat.size_diff
        elif any("f.read()" in line for line in lines):
            parts["source"] += stat.size_diff
        else:
            parts["bookkeeping"] += stat.size_diff
    return parts


def _child(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text("utf-8"))
    if spec["path"] == "prepare":
        prepare(spec)
        json.dump({}, sys.stdout)
    else:
        json.dump(fill(spec), sys.stdout)
    return 0


# -- the parent ---------------------------------------------------------------------------------


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0


def _spawn(spec: dict[str, Any], work: str, timeout: float) -> dict[str, Any]:
    spec_path = os.path.join(work, "spec.json")
    Path(spec_path).write_text(json.dumps(spec), "utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.footprint", "--child", spec_path],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"the footprint child failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run(*, templates: int, entries: int, rounds: int, seconds: float) -> dict[str, Any]:
    paths = ("compile", "promote")
    with tempfile.TemporaryDirectory(prefix="tbc-footprint-") as work:
        corpus = compiled_corpus(os.path.join(work, "templates"), count=templates)
        code_files = []
        for i, name in enumerate(corpus.names):
            path = os.path.join(work, f"code-{i}.bin")
            Path(path).write_bytes(marshal.dumps(corpus.codes[name]))
            code_files.append(path)
        per_child = seconds / (2 * rounds + 3)
        spec: dict[str, Any] = {
            "directory": corpus.directory,
            "names": corpus.names,
            "code_files": code_files,
            "entries": entries,
            "seconds": per_child,
            "traced": False,
            "fs": os.path.join(work, "fs"),
            "secret": secrets.token_bytes(32).hex(),
            "path": "prepare",
        }
        _spawn(spec, work, seconds)
        children: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
        for r in range(rounds):
            for path in paths[r % 2 :] + paths[: r % 2]:
                children[path].append(_spawn({**spec, "path": path}, work, per_child + 60))
        # Tracing is slow and heavy; a few hundred entries give the split well enough.
        traced_spec = {**spec, "traced": True, "entries": min(entries, 500)}
        traced = {p: _spawn({**traced_spec, "path": p}, work, per_child + 60) for p in paths}
    out: dict[str, Any] = {"templates": templates, "entries": entries, "rounds": rounds}
    for path in paths:
        per_byte, per_entry, counted = [], [], []
        for c in children[path]:
            n, rss, size = (list(col) for col in zip(*c["points"], strict=True))
            per_byte.append(_slope(size, rss))
            per_entry.append(_slope(n, rss))
            counted.append(size[-1] / n[-1])
        done = traced[path]["entries"]
        out[path] = {
            "entries_done": [c["entries"] for c in children[path]],
            "rss_per_counted_byte": Spread.of(per_byte).as_dict(),
            "rss_per_entry": Spread.of(per_entry).as_dict(),
            "counted_per_entry": Spread.of(counted).as_dict(),
            "traced_per_entry": {k: v / done for k, v in traced[path]["traced_parts"].items()},
            "checkpoints": [c["points"] for c in children[path]],
        }
    return out


def format_result(result: dict[str, Any]) -> str:
    compiled, promoted = result["compile"], result["promote"]
    lines = [
        f"memory tier footprint: {result['entries']} entries (the code of "
        f"{result['templates']} corpus templates under distinct names), "
        f"{result['rounds']} fresh processes per path; slopes over 10 checkpoints",
        "compile: entries written through after a compile; promote: entries promoted from a "
        "filesystem-tier hit",
        "",
    ]

    def both(fn: Callable[[dict[str, Any]], str]) -> list[str]:
        return [fn(compiled), fn(promoted)]

    def ratio(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: f"{r[key]['median']:.2f}x {r[key]['min']:.2f}..{r[key]['max']:.2f}"

    def per_byte(r: dict[str, Any]) -> str:
        return ratio("rss_per_counted_byte")(r)

    def heap(r: dict[str, Any]) -> float:
        return float(sum(r["traced_per_entry"].values()))

    def part(name: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: human_bytes(r["traced_per_entry"][name])

    rows = [
        [
            "bytes the tier counts (currsize)",
            *both(lambda r: human_bytes(r["counted_per_entry"]["median"])),
        ],
        ["RSS growth", *both(lambda r: human_bytes(r["rss_per_entry"]["median"]))],
        ["  spread", *both(lambda r: _range_bytes(r["rss_per_entry"]))],
        ["RSS per counted byte", *both(per_byte)],
        ["python heap (tracemalloc)", *both(lambda r: human_bytes(heap(r)))],
        ["  code objects", *both(part("code"))],
        ["  what marshal.dumps leaves on the code", *both(part("dump caches"))],
        ["  template source (kept for the hit check)", *both(part("source"))],
        ["  cache bookkeeping (keys, LRU, checksum)", *both(part("bookkeeping"))],
    ]
    lines.append(table(["per entry", "compile", "promote"], rows))
    short = min(compiled["entries_done"] + promoted["entries_done"])
    if short < result["entries"]:
        lines.append(f"note: some processes ran out of time at {short} entries")
    worst = max(
        compiled["rss_per_counted_byte"]["median"], promoted["rss_per_counted_byte"]["median"]
    )
    entry = max(compiled["rss_per_entry"]["median"], promoted["rss_per_entry"]["median"])
    budget = 256 * 1024 * 1024
    lines.append(
        f"sizing: max_bytes = RSS budget / {worst:.2f} (the larger of the two); a 256 MB "
        f"budget is max_bytes={int(budget / worst)}, ~{int(budget / entry)} entries like these"
    )
    return "\n".join(lines)


def _range_bytes(s: dict[str, float]) -> str:
    return f"{human_bytes(s['min'])}..{human_bytes(s['max'])}"


def main(argv: list[str] | None = None) -> int:
    p = parser("footprint", __doc__)
    p.add_argument("--entries", type=int, default=None, help="entries per process (2000)")
    p.add_argument("--templates", type=int, default=36, help="distinct corpus templates (36)")
    p.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child)
    result = run(
        templates=args.templates,
        entries=args.entries or (400 if args.quick else 2000),
        rounds=args.rounds or (3 if args.quick else 5),
        seconds=args.seconds or (60.0 if args.quick else 300.0),
    )
    print(format_result(result))
    write_json(args.json, {"machine": describe_machine(), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
