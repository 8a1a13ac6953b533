"""Should a remote tier compress its entries? Bytes saved on the wire against time added
to a hit.

    python -m benchmarks.compression [--quick] [--json FILE] [--count 36]

For the corpus entries:

- bytes on the wire (and in memcached's memory) with ``MemcachedTier(compress=False)``
  and ``compress=True`` (zlib level 1, see ``tiered_bccache/entry.py``), counted by the
  cache's own ``bytes_written`` / ``bytes_read``;
- the cost of a memcached-tier hit (the memory tier emptied before each load, so every
  load fetches, verifies, inflates and promotes) against a private memcached, the two
  settings interleaved, as a ratio and as time added per hit;
- the entry codec's encode and decode in isolation, with and without compression (what
  compression adds to a hit's CPU time, without the network);
- zlib levels 1, 6 and 9 on the marshalled code, for reference.

The last line is a recommendation computed from the numbers: compression pays when the
network moves less than X MB/s, X = bytes saved per hit / decode time added per hit.
"""

from __future__ import annotations

import marshal
import os
import secrets
import statistics
import tempfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from jinja2 import Environment, FileSystemLoader

from tiered_bccache import MemcachedTier, MemoryTier, TieredBytecodeCache
from tiered_bccache.benchkit.servers import private_memcached
from tiered_bccache.benchkit.timing import Spread, describe_machine, ratios
from tiered_bccache.entry import EntryCodec, source_digest
from tiered_bccache.humanize import human_bytes, human_us

from .common import Corpus, compiled_corpus, interleave, parser, table, time_calls, write_json

SECRET = secrets.token_bytes(32)
#: What a 1 Gb/s link moves at best, for the recommendation's comparison.
GIGABIT_MB_S = 1e9 / 8 / 1e6
LEVELS = (1, 6, 9)


# -- on the wire, through the cache ---------------------------------------------------------


def wire(corpus: Corpus, address: str, *, rounds: int, seconds: float) -> dict[str, Any]:
    """Bytes written and read per entry, and the hit cost, for both settings."""
    names = corpus.names
    with ExitStack() as stack:
        setups: dict[str, tuple[Environment, TieredBytecodeCache, MemoryTier]] = {}
        for label, compress in (("plain", False), ("zlib", True)):
            memory = MemoryTier(max_entries=4096)
            tier = MemcachedTier(address, prefix="cmp" + secrets.token_hex(4), compress=compress)
            stack.callback(tier.close)
            cache = TieredBytecodeCache([memory, tier], secret=SECRET)
            env = Environment(
                loader=FileSystemLoader(corpus.directory),
                bytecode_cache=cache,
                cache_size=0,
                auto_reload=True,
            )
            for name in names:  # fill through Jinja's interface with the compiled code
                bucket = cache.get_bucket(env, name, corpus.filenames[name], corpus.sources[name])
                bucket.code = corpus.codes[name]
                cache.set_bucket(bucket)
            setups[label] = (env, cache, memory)
        written = {label: c.stats().tiers[1].bytes_written for label, (_, c, _) in setups.items()}
        for env, cache, memory in setups.values():  # warm up; every load must be a hit
            for name in names:
                memory.clear()
                env.get_template(name)
            cache.reset_stats()

        def measure(label: str) -> Callable[[], float]:
            env, _, memory = setups[label]
            return lambda: time_calls(env.get_template, names, memory.clear)

        samples = interleave(
            {label: measure(label) for label in setups},
            rounds=rounds,
            seconds=seconds,
            min_rounds=min(rounds, 3),
            gc_off=True,
        )
        stats = {label: c.stats() for label, (_, c, _) in setups.items()}
    for label, s in stats.items():
        if s.misses or s.compiles or s.tiers[1].hits != s.lookups:
            raise RuntimeError(f"{label}: a timed load was not a memcached hit: {s}")
    n = len(names)
    added = [(z - p) / n for z, p in zip(samples["zlib"], samples["plain"], strict=True)]
    return {
        "entries": n,
        "rounds": len(samples["plain"]),
        "written_per_entry": {label: w / n for label, w in written.items()},
        "read_per_hit": {
            label: s.tiers[1].bytes_read / s.tiers[1].hits for label, s in stats.items()
        },
        "hit_ns": {label: Spread.of(t / n for t in samples[label]).as_dict() for label in samples},
        "hit_ratio": ratios(samples["zlib"], samples["plain"]).as_dict(),
        "hit_added_ns": Spread.of(added).as_dict(),
    }


# -- the codec in isolation -----------------------------------------------------------------


def codec(corpus: Corpus, *, rounds: int, seconds: float) -> dict[str, Any]:
    """Encode and decode every corpus entry, with and without compression."""
    c = EntryCodec(SECRET)
    items = []
    for i, name in enumerate(corpus.names):
        key = f"k{i:04d}"
        checksum = source_digest(corpus.sources[name])
        raw = marshal.dumps(corpus.codes[name])
        items.append((key, checksum, raw))
    encoded = {z: [c.encode(k, s, raw, compress=z) for k, s, raw in items] for z in (False, True)}
    keys = [k for k, _, _ in items]
    index = {k: i for i, k in enumerate(keys)}

    def encode(z: bool) -> Callable[[], float]:
        def one(key: str) -> object:
            _, checksum, raw = items[index[key]]
            return c.encode(key, checksum, raw, compress=z)

        return lambda: time_calls(one, keys)

    def decode(z: bool) -> Callable[[], float]:
        def one(key: str) -> object:
            i = index[key]
            return c.decode(key, items[i][1], encoded[z][i])

        return lambda: time_calls(one, keys)

    samples = interleave(
        {
            "encode plain": encode(False),
            "encode zlib": encode(True),
            "decode plain": decode(False),
            "decode zlib": decode(True),
        },
        rounds=rounds,
        seconds=seconds,
        min_rounds=min(rounds, 3),
        gc_off=True,
    )
    n = len(items)
    out: dict[str, Any] = {
        "entries": n,
        "rounds": len(samples["encode plain"]),
        "bytes_per_entry": {
            "marshalled": sum(len(raw) for _, _, raw in items) / n,
            "plain": sum(map(len, encoded[False])) / n,
            "zlib": sum(map(len, encoded[True])) / n,
        },
        "per_entry_ns": {k: Spread.of(t / n for t in v).as_dict() for k, v in samples.items()},
    }
    for op in ("encode", "decode"):
        out[f"{op}_ratio"] = ratios(samples[f"{op} zlib"], samples[f"{op} plain"]).as_dict()
        out[f"{op}_added_ns"] = Spread.of(
            (z - p) / n for z, p in zip(samples[f"{op} zlib"], samples[f"{op} plain"], strict=True)
        ).as_dict()
    return out


def levels(corpus: Corpus, *, rounds: int, seconds: float) -> dict[str, Any]:
    """zlib at levels 1, 6 and 9 on the marshalled code: size and speed."""
    raws = [marshal.dumps(corpus.codes[name]) for name in corpus.names]
    total = sum(map(len, raws))
    packed = {level: [zlib.compress(r, level) for r in raws] for level in LEVELS}
    positions = [str(i) for i in range(len(raws))]

    def compress(level: int) -> Callable[[], float]:
        return lambda: time_calls(lambda i: zlib.compress(raws[int(i)], level), positions)

    def decompress(level: int) -> Callable[[], float]:
        return lambda: time_calls(lambda i: zlib.decompress(packed[level][int(i)]), positions)

    measures: dict[str, Callable[[], float]] = {}
    for level in LEVELS:
        measures[f"compress {level}"] = compress(level)
        measures[f"decompress {level}"] = decompress(level)
    samples = interleave(
        measures, rounds=rounds, seconds=seconds, min_rounds=min(rounds, 3), gc_off=True
    )
    mb = total / 1e6
    return {
        "marshalled_bytes": total,
        "levels": {
            str(level): {
                "size_ratio": sum(map(len, packed[level])) / total,
                "compress_mb_s": Spread.of(
                    mb / (t / 1e9) for t in samples[f"compress {level}"]
                ).as_dict(),
                "decompress_mb_s": Spread.of(
                    mb / (t / 1e9) for t in samples[f"decompress {level}"]
                ).as_dict(),
                "compress_per_entry_ns": statistics.median(samples[f"compress {level}"])
                / len(raws),
                "decompress_per_entry_ns": statistics.median(samples[f"decompress {level}"])
                / len(raws),
            }
            for level in LEVELS
        },
    }


# -- the report -----------------------------------------------------------------------------


def recommend(result: dict[str, Any]) -> dict[str, Any]:
    """X = bytes saved per hit / decode time added per hit, in MB/s."""
    sizes = result["codec"]["bytes_per_entry"]
    saved = sizes["plain"] - sizes["zlib"]
    added_ns = result["codec"]["decode_added_ns"]["median"]
    if added_ns <= 0:
        return {
            "saved_bytes_per_hit": saved,
            "added_ns_per_hit": added_ns,
            "break_even_mb_s": None,
            "text": "compress=True: decoding a compressed entry was no slower here; it pays "
            "on any network",
        }
    x = saved / (added_ns / 1e9) / 1e6
    if x >= GIGABIT_MB_S:
        advice = (
            f"compress=True pays on gigabit links and slower (they move at most "
            f"{GIGABIT_MB_S:.0f} MB/s); on faster ones it only saves memcached memory"
        )
    else:
        advice = (
            f"leave compress=False on gigabit links (up to {GIGABIT_MB_S:.0f} MB/s) unless "
            "memcached memory is short; compress=True pays on slower links"
        )
    return {
        "saved_bytes_per_hit": saved,
        "added_ns_per_hit": added_ns,
        "break_even_mb_s": x,
        "text": f"compression pays when the network moves less than {x:.0f} MB/s "
        f"({human_bytes(saved)} saved per hit / {human_us(added_ns)} added to decode): {advice}",
    }


def format_result(result: dict[str, Any]) -> str:
    lines: list[str] = []
    w = result.get("wire")
    if w is not None:
        hit = w["hit_ns"]
        r, a = w["hit_ratio"], w["hit_added_ns"]
        lines += [
            f"memcached tier, {w['entries']} corpus entries, private memcached on loopback, "
            f"{w['rounds']} interleaved rounds (memory tier emptied before each load)",
            "",
            table(
                ["per entry", "compress=False", "compress=True", "zlib / plain"],
                [
                    [
                        "bytes written",
                        human_bytes(w["written_per_entry"]["plain"]),
                        human_bytes(w["written_per_entry"]["zlib"]),
                        f"{w['written_per_entry']['zlib'] / w['written_per_entry']['plain']:.2f}x",
                    ],
                    [
                        "bytes read per hit",
                        human_bytes(w["read_per_hit"]["plain"]),
                        human_bytes(w["read_per_hit"]["zlib"]),
                        f"{w['read_per_hit']['zlib'] / w['read_per_hit']['plain']:.2f}x",
                    ],
                    [
                        "memcached-tier hit (median)",
                        human_us(hit["plain"]["median"]),
                        human_us(hit["zlib"]["median"]),
                        f"{r['median']:.2f}x {r['min']:.2f}..{r['max']:.2f}",
                    ],
                ],
            ),
            f"time added per hit: {human_us(a['median'])} "
            f"({human_us(a['min'])}..{human_us(a['max'])})",
            "",
        ]
    else:
        lines += ["memcached: " + result["note"], ""]
    c = result["codec"]
    per = c["per_entry_ns"]
    lines += [
        f"entry codec in isolation (HMAC-SHA256 + marshal; zlib level 1), {c['rounds']} rounds",
        "",
        table(
            ["per entry", "plain", "zlib", "ratio", "spread", "added"],
            [
                [
                    op,
                    human_us(per[f"{op} plain"]["median"]),
                    human_us(per[f"{op} zlib"]["median"]),
                    f"{c[f'{op}_ratio']['median']:.2f}x",
                    f"{c[f'{op}_ratio']['min']:.2f}..{c[f'{op}_ratio']['max']:.2f}",
                    human_us(c[f"{op}_added_ns"]["median"]),
                ]
                for op in ("encode", "decode")
            ],
        ),
        "",
    ]
    lv = result["levels"]
    lines += [
        f"zlib levels on {human_bytes(lv['marshalled_bytes'])} of marshalled code (reference)",
        "",
        table(
            ["level", "size", "compress", "decompress", "per entry (c / d)"],
            [
                [
                    level,
                    f"{row['size_ratio'] * 100:.0f}%",
                    f"{row['compress_mb_s']['median']:.0f} MB/s",
                    f"{row['decompress_mb_s']['median']:.0f} MB/s",
                    f"{human_us(row['compress_per_entry_ns'])} / "
                    f"{human_us(row['decompress_per_entry_ns'])}",
                ]
                for level, row in lv["levels"].items()
            ],
        ),
        "",
        "recommendation: " + result["recommendation"]["text"],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser("compression", __doc__)
    p.add_argument("--count", type=int, default=36, help="templates in the corpus (36)")
    p.add_argument("--memcached", metavar="HOST:PORT", help="default: a private server")
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 21)
    seconds = args.seconds or (20.0 if args.quick else 90.0)
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="tbc-compression-"))
        corpus = compiled_corpus(os.path.join(work, "templates"), count=args.count)
        address = args.memcached or stack.enter_context(private_memcached())
        if address is None:
            result["note"] = "no memcached binary on PATH (apt-get install memcached)"
        else:
            result["wire"] = wire(corpus, address, rounds=rounds, seconds=seconds)
        result["codec"] = codec(corpus, rounds=rounds, seconds=seconds)
        result["levels"] = levels(corpus, rounds=rounds, seconds=seconds)
    result["recommendation"] = recommend(result)
    print(format_result(result))
    write_json(args.json, {"machine": describe_machine(), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
