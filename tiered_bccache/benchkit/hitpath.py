"""The benchmark behind ``tiered-bccache bench``: every way of loading a template, in one
interleaved run, on the same templates, reported as ratios.

What is timed is what a user waits for: ``Environment.get_template`` with Jinja's own
template cache off (``cache_size=0``), so every load goes loader -> bytecode cache ->
``Template.from_code``. The contenders:

========== =============================================================================
compile    no bytecode cache: Jinja compiles every time
jinja-fs   Jinja's ``FileSystemBytecodeCache``, warm
jinja-mc   Jinja's ``MemcachedBytecodeCache`` over a pymemcache client with our options
floor-dict the in-process floor: a bytecode cache that is a dict of ready code objects
floor-file the on-disk floor: a bare file of marshalled code, read whole, unmarshalled
floor-sign the authenticated on-disk floor: floor-file plus a keyed BLAKE3 check of the
           bytes and a BLAKE3 digest of the source, the two checks a safe shared cache
           needs, with the entry format's algorithms
memory     ours, memory-tier hit
fs         ours, filesystem-tier hit in a fresh process state (memory emptied before
           each load, so the hit includes the MAC check and the promotion)
memcached  ours, memcached-tier hit, memory emptied likewise
plain-redis the anchor for Redis: a bytecode cache as the existing Redis packages write it,
           get/set of Jinja's own bucket format (``bytecode_to_string`` /
           ``bytecode_from_string``) over a redis-py client with our options
redis      ours, Redis-tier hit, memory emptied likewise
========== =============================================================================

Then, unless ``processes`` is off, the whole-process run of
:mod:`~tiered_bccache.benchkit.process` on the same templates: what a new process pays, where a
bytecode cache matters most; then the template-string loop of
:mod:`~tiered_bccache.benchkit.strings` (a new sandboxed environment per iteration, as Ansible and
dbt do).

Machines are shared and noisy, so absolute times drift; each round loads the whole corpus
once per contender, in a rotating order, and the ratios are computed per round and
reported as median and spread over rounds.
"""

from __future__ import annotations

import functools
import gc
import hmac
import marshal
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from hashlib import sha1, sha256
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, MemcachedBytecodeCache
from jinja2.bccache import BytecodeCache

from ..cache import TieredBytecodeCache
from ..errors import ConfigurationError
from ..humanize import counted
from ..tiers.filesystem import FileSystemTier
from ..tiers.memcached import MemcachedTier
from ..tiers.memory import MemoryTier
from ..tiers.redis import RedisTier
from .contenders import (
    DictFloor,
    MarshalFileFloor,
    PlainRedisBytecodeCache,
    SignedFileFloor,
    jinja_memcached_client,
    redis_available,
    redis_client,
)
from .corpus import corpus_names, generate_corpus, render_context
from .process import ProcessReport, run_process_bench
from .servers import private_memcached, private_redis
from .strings import StringReport, run_string_bench
from .timing import (
    RoundRatios,
    Target,
    describe_machine,
    rotated,
    round_ratios,
    target_table,
)

__all__ = ["TARGETS", "BenchConfig", "BenchReport", "run_bench"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to benchmark. ``templates`` is a user's template directory (default: the
    generated corpus of ``count`` templates); ``memcached`` an address (default: a private
    server started for the run when a ``memcached`` binary is on PATH)."""

    templates: str | None = None
    count: int = 36
    rounds: int = 7
    memcached: str | None = None
    no_memcached: bool = False
    #: A Redis ``host:port`` (default: a private ``redis-server`` when one is on PATH
    #: and redis-py is installed).
    redis: str | None = None
    no_redis: bool = False
    directory: str | None = None
    secret: bytes | None = None
    quick: bool = False
    #: Also run the whole-process benchmark (see :mod:`~tiered_bccache.benchkit.process`).
    processes: bool = True
    #: Iterations of the template-string benchmark (:mod:`~tiered_bccache.benchkit.strings`);
    #: 0 leaves it out. Plain Jinja compiles every string of every iteration.
    string_iterations: int = 10


TARGETS: tuple[Target, ...] = (
    Target("memory hit vs dict-of-code floor", "memory", "floor-dict", 1.3, True),
    Target("Jinja filesystem hit vs our memory hit", "jinja-fs", "memory", 5.0, False),
    Target("filesystem hit vs bare-marshal-file floor", "fs", "floor-file", 1.25, True),
    Target("Jinja filesystem hit vs our filesystem hit", "jinja-fs", "fs", 2.0, False),
    Target("filesystem hit vs the authenticated floor", "fs", "floor-signed", 1.2, True),
    Target("memcached hit vs Jinja memcached hit", "memcached", "jinja-mc", 0.75, True),
    Target("redis hit vs plain Redis bytecode cache hit", "redis", "plain-redis", 0.5, True),
    Target("compile vs cold start from our filesystem tier", "compile", "fs", 15.0, False),
)


@dataclass
class BenchReport:
    """Timings in nanoseconds: ``samples[contender][round][template]``."""

    config: BenchConfig
    templates: list[str]
    samples: dict[str, list[list[int]]]
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    breakdown: dict[str, float] = field(default_factory=dict)
    processes: ProcessReport | None = None
    strings: StringReport | None = None

    def totals(self, contender: str) -> list[int]:
        """Time to load the whole corpus once, per round."""
        return [sum(r) for r in self.samples[contender]]

    def median_total(self, contender: str) -> float:
        return float(statistics.median(self.totals(contender)))

    def per_template_median(self, contender: str) -> list[float]:
        rounds = self.samples[contender]
        return [float(statistics.median(r[i] for r in rounds)) for i in range(len(self.templates))]

    def ratio(self, numerator: str, denominator: str) -> RoundRatios | None:
        """total(numerator) / total(denominator) per round, over rounds (None when either
        contender did not run)."""
        if numerator not in self.samples or denominator not in self.samples:
            return None
        return round_ratios(self.totals(numerator), self.totals(denominator))

    def as_dict(self) -> dict[str, Any]:
        """Everything, as plain data for ``--json``."""
        return {
            "config": {
                k: getattr(self.config, k)
                for k in self.config.__dataclass_fields__
                if k != "secret"
            },
            "environment": self.environment,
            "templates": self.templates,
            "contenders": {
                c: {
                    "median_total_us": self.median_total(c) / 1000,
                    "median_per_template_us": [t / 1000 for t in self.per_template_median(c)],
                    "round_totals_us": [t / 1000 for t in self.totals(c)],
                }
                for c in self.samples
            },
            "ratios": {
                f"{t.numerator}/{t.denominator}": {
                    "label": t.label,
                    **r.as_dict(),
                    "target": t.limit,
                    "at_most": t.at_most,
                    "met": None if r.spread is None else t.met(r.spread.median),
                }
                for t in TARGETS
                if (r := self.ratio(t.numerator, t.denominator)) is not None
            },
            "breakdown_us": self.breakdown,
            "notes": self.notes,
            "processes": None if self.processes is None else self.processes.as_dict(),
            "strings": None if self.strings is None else self.strings.as_dict(),
        }

    def format_table(self) -> str:
        """The human-readable report: the hit-path table, then the whole-process and the
        template-string tables of the runs that were made."""
        tables = [self.hitpath_table()]
        if self.processes is not None:
            tables.append(self.processes.format_table())
        if self.strings is not None:
            tables.append(self.strings.format_table())
        return "\n\n".join(tables)

    def hitpath_table(self) -> str:
        """Per contender times, then the ratios and targets, where a filesystem hit's
        time goes, and the notes."""
        n = len(self.templates)
        rounds = len(next(iter(self.samples.values())))
        totals = {c: self.totals(c) for c in self.samples}
        medians = {c: float(statistics.median(t)) for c, t in totals.items()}
        load = _time_column(list(medians.values()))
        each = _time_column([m / n for m in medians.values()])
        spread = _time_column([x for t in totals.values() for x in (min(t), max(t))])
        lines = [
            f"{counted(n, 'template')}, {counted(rounds, 'round')}; "
            "times are medians over rounds of loading the whole corpus once",
            "",
            f"{'contender':<12} {'corpus load':>12} {'per template':>13} {'spread':>21}",
        ]
        for c, t in totals.items():
            lines.append(
                f"{c:<12} {load(medians[c]):>12} {each(medians[c] / n):>13} "
                f"{spread(min(t)) + '..' + spread(max(t)):>21}"
            )
        lines += ["", *target_table(TARGETS, self.ratio)]
        if self.breakdown:
            lines += ["", "where a filesystem hit's time goes (median per template):"]
            lines += [f"  {k:<44} {v:>8.1f} us" for k, v in self.breakdown.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def plot(self, path: str) -> None:
        """Draw per-template medians per contender (needs the ``plot`` extra)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError(
                "plotting needs matplotlib: pip install 'tiered-bccache[plot]'"
            ) from exc
        fig, ax = plt.subplots(figsize=(9, 5))
        names = [c for c in self.samples if c != "compile"]
        ax.bar(names, [self.median_total(c) / 1000 / len(self.templates) for c in names])
        ax.set_ylabel("median load time per template (us)")
        ax.set_title("tiered_bccache: template load time by bytecode cache")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _time_column(values_ns: Sequence[float]) -> Callable[[float], str]:
    """How to print the times of one column, given in nanoseconds: in one unit for the
    whole column, so that rows compare at a glance (milliseconds when every value of the
    column is at least one, else microseconds)."""
    if values_ns and min(values_ns) >= 1_000_000:
        return lambda ns: f"{ns / 1_000_000:.1f} ms"
    return lambda ns: f"{ns / 1000:.1f} us" if ns < 1_000_000 else f"{ns / 1000:.0f} us"


def _subdirectory(work: str, name: str) -> str:
    """``work/name``, made if missing."""
    path = os.path.join(work, name)
    os.makedirs(path, exist_ok=True)
    return path


@dataclass
class _Contender:
    name: str
    env: Environment
    before_each: Callable[[], None] | None = None


def _contenders(
    stack: ExitStack,
    loader_dir: str,
    work: str,
    secret: bytes,
    mc_address: str | None,
    redis_address: str | None = None,
) -> list[_Contender]:
    def env(cache: BytecodeCache | None) -> Environment:
        return Environment(
            loader=FileSystemLoader(loader_dir),
            bytecode_cache=cache,
            cache_size=0,
            auto_reload=True,
        )

    def sub(name: str) -> str:
        return _subdirectory(work, name)

    out = [
        _Contender("compile", env(None)),
        _Contender("jinja-fs", env(FileSystemBytecodeCache(sub("jinja-fs")))),
        _Contender("floor-dict", env(DictFloor())),
        _Contender("floor-file", env(MarshalFileFloor(sub("floor-file")))),
        _Contender("floor-signed", env(SignedFileFloor(sub("floor-signed"), secret))),
        _Contender("memory", env(TieredBytecodeCache([MemoryTier(max_entries=100_000)]))),
    ]

    def ours_over(name: str, tier: Any) -> _Contender:
        """Ours, hits from ``tier`` in a fresh process state: memory emptied before each
        load, so the hit includes the MAC check and the promotion."""
        memory = MemoryTier(max_entries=100_000)
        cache = TieredBytecodeCache([memory, tier], secret=secret)
        return _Contender(name, env(cache), memory.clear)

    out.append(ours_over("fs", FileSystemTier(sub("ours-fs"))))
    if mc_address is not None:
        client = jinja_memcached_client(mc_address)
        stack.callback(client.close)
        prefix = "bench" + secrets.token_hex(4)
        out.insert(
            2, _Contender("jinja-mc", env(MemcachedBytecodeCache(client, prefix=f"{prefix}j/")))
        )
        tier = MemcachedTier(mc_address, prefix=prefix)
        stack.callback(tier.close)
        out.append(ours_over("memcached", tier))
    if redis_address is not None:
        prefix = "bench" + secrets.token_hex(4)
        client = redis_client(redis_address)
        stack.callback(client.close)
        out.append(_Contender("plain-redis", env(PlainRedisBytecodeCache(client, f"{prefix}p/"))))
        redis_tier = RedisTier(f"redis://{redis_address}/0", prefix=prefix)
        stack.callback(redis_tier.close)
        out.append(ours_over("redis", redis_tier))
    return out


def run_bench(
    config: BenchConfig,
    *,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
    show: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the benchmark described by ``config`` and return its report; ``show`` is
    given each table as soon as it is measured (the hit paths, then the whole processes,
    then the template strings), so that a run interrupted or failing in a later part
    keeps what the earlier parts measured.

    Raises :class:`~tiered_bccache.ConfigurationError` for templates it cannot use."""
    with ExitStack() as stack:
        work = config.directory or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="tbc-bench-")
        )
        if config.templates is not None:
            loader_dir = config.templates
            names = corpus_names(loader_dir)
            if not names:
                raise ConfigurationError(f"templates: no template files found in {loader_dir}")
        else:
            loader_dir = os.path.join(work, "templates")
            names = generate_corpus(loader_dir, count=config.count)
        notes: list[str] = []

        def note(text: str) -> None:
            notes.append(text)
            log("tiered-bccache: " + text)

        mc_address = None
        if not config.no_memcached:
            mc_address = config.memcached or stack.enter_context(private_memcached())
            if mc_address is None:
                note(
                    "no memcached binary on PATH: the memcached rows are missing "
                    "(apt-get install memcached, or pass --memcached HOST:PORT)"
                )
        redis_address = None
        if config.no_redis:
            pass
        elif not redis_available():
            note(
                "redis-py is not installed: the redis rows are missing "
                "(pip install 'tiered-bccache[redis]')"
            )
        else:
            redis_address = config.redis or stack.enter_context(private_redis())
            if redis_address is None:
                note(
                    "no redis-server on PATH: the redis rows are missing "
                    "(apt-get install redis-server, or pass --redis HOST:PORT)"
                )
        secret = config.secret or secrets.token_bytes(32)
        contenders = _contenders(stack, loader_dir, work, secret, mc_address, redis_address)
        names = _loadable(contenders[0].env, names, notes)
        # Warm every cache once (and check that every contender renders the same).
        for i, c in enumerate(contenders):
            for name in names:
                c.env.get_template(name)
            if progress:
                progress("warm", i + 1, len(contenders))
        rounds = 3 if config.quick else config.rounds
        samples: dict[str, list[list[int]]] = {c.name: [] for c in contenders}
        # As timeit does: a collection landing in one contender's batch is noise, not a
        # property of that cache. Collect between batches instead.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            _timed_rounds(contenders, names, rounds, samples, progress)
        finally:
            if gc_was_enabled:
                gc.enable()
        report = BenchReport(config, names, samples, notes=notes)
        report.environment = describe_machine()
        report.breakdown = _breakdown(loader_dir, names, work, secret)
        if show is not None:
            show(report.hitpath_table())
        if config.processes:
            report.processes = run_process_bench(
                loader_dir,
                names,
                _subdirectory(work, "processes"),
                secret=secret,
                memcached=mc_address,
                rounds=rounds,
                progress=progress,
            )
            if show is not None:
                show(report.processes.format_table())
        if config.string_iterations:
            report.strings = run_string_bench(
                loader_dir,
                _subdirectory(work, "strings"),
                context=render_context(),
                iterations=config.string_iterations,
                rounds=min(rounds, 3),
                secret=secret,
                # The admission run replays a fixed workload over the generated corpus.
                admission=config.templates is None,
            )
            if show is not None:
                show(report.strings.format_table())
        return report


def _timed_rounds(
    contenders: list[_Contender],
    names: list[str],
    rounds: int,
    samples: dict[str, list[list[int]]],
    progress: Progress | None,
) -> None:
    perf = time.perf_counter_ns
    for r in range(rounds):
        for c in rotated(contenders, r):
            gc.collect()
            row = []
            before, get = c.before_each, c.env.get_template
            for name in names:
                if before is not None:
                    before()
                started = perf()
                get(name)
                row.append(perf() - started)
            samples[c.name].append(row)
        if progress:
            progress("rounds", r + 1, rounds)


def _loadable(env: Environment, names: list[str], notes: list[str]) -> list[str]:
    """The templates that compile (a user's directory may hold partial or broken ones)."""
    good = []
    for name in names:
        try:
            env.get_template(name)
        except Exception as exc:
            notes.append(f"skipped {name}: {type(exc).__name__}: {exc}")
        else:
            good.append(name)
    if not good:
        raise ConfigurationError("templates: none of the templates compiles")
    return good


def _breakdown(loader_dir: str, names: list[str], work: str, secret: bytes) -> dict[str, float]:
    """Median per-template cost of each step of a filesystem hit, and of the step Jinja
    takes instead (``marshal.load`` on a file object), measured in isolation."""
    env = Environment(loader=FileSystemLoader(loader_dir))
    tier = FileSystemTier(os.path.join(work, "breakdown"))
    cache = TieredBytecodeCache([tier], secret=secret)
    steps: dict[str, list[float]] = {
        "read the entry (open, fstat, read)": [],
        "verify the MAC (keyed BLAKE3)": [],
        "checksum the source (BLAKE3)": [],
        "marshal.loads(bytes)": [],
        "for comparison: HMAC-SHA256 of the entry": [],
        "for comparison: SHA-1 of the source": [],
        "Jinja: marshal.load(file object)": [],
    }
    for name in names:
        source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        code = env.compile(source, name, filename)
        raw = marshal.dumps(code)
        bucket = cache.get_bucket(env, name, filename, source)
        bucket.code = code
        cache.set_bucket(bucket)
        key = bucket.key
        data = tier.get(key)
        assert data is not None
        plain = os.path.join(work, "breakdown", "plain.bin")
        with open(plain, "wb") as f:
            f.write(raw)
        for label, seconds in _time_steps(
            tier, key, data, secret, cache, source, raw, plain
        ).items():
            steps[label].append(seconds)
    return {label: statistics.median(v) for label, v in steps.items()}


def _time_steps(
    tier: FileSystemTier,
    key: str,
    data: bytes,
    secret: bytes,
    cache: TieredBytecodeCache,
    source: str,
    raw: bytes,
    plain: str,
) -> dict[str, float]:
    def jinja_load() -> None:
        with open(plain, "rb") as f:
            marshal.load(f)

    steps: dict[str, Callable[[], object]] = {
        "read the entry (open, fstat, read)": lambda: tier.get(key),
        "verify the MAC (keyed BLAKE3)": functools.partial(_keyed, _mac_base(secret), data),
        "checksum the source (BLAKE3)": lambda: cache.get_source_checksum(source),
        "for comparison: HMAC-SHA256 of the entry": lambda: hmac.digest(secret, data, sha256),
        "for comparison: SHA-1 of the source": lambda: sha1(source.encode()).digest(),
        "marshal.loads(bytes)": lambda: marshal.loads(raw),
        "Jinja: marshal.load(file object)": jinja_load,
    }
    out = {}
    for label, fn in steps.items():
        runs = []
        for _ in range(5):
            started = time.perf_counter_ns()
            fn()
            runs.append(time.perf_counter_ns() - started)
        out[label] = statistics.median(runs) / 1000
    return out


def _mac_base(secret: bytes) -> Any:
    from blake3 import blake3

    return blake3(key=blake3(secret, derive_key_context="bench").digest())


def _keyed(base: Any, data: bytes) -> bytes:
    mac = base.copy()
    mac.update(data)
    digest: bytes = mac.digest()
    return digest
