"""The command line, ``tiered-bccache``: thin over the library.

Every command builds what it needs with the library's public API and prints the result;
the sizing, benchmarking and spec parsing live in :mod:`~tiered_bccache.tune`,
:mod:`~tiered_bccache.bench` and :mod:`~tiered_bccache.spec`. Errors reach the user as one
``tiered-bccache: error: ...`` line on stderr: exit status 2 for a usage or configuration
error, 1 for a failure at run time; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import marshal
import math
import multiprocessing
import os
import random
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn, TextIO

from jinja2 import Environment, FileSystemLoader

from .cache import TieredBytecodeCache
from .entry import EntryCodec
from .errors import ConfigurationError, InsecureConfigurationError
from .secret import ENV_VAR, MIN_SECRET_BYTES
from .spec import SPEC_HELP, SpecError, load_cache, load_object
from .tiers.filesystem import FileSystemTier
from .tiers.memcached import MemcachedTier
from .tiers.memory import MemoryTier
from .tiers.redis import RedisTier

if TYPE_CHECKING:
    from .tune import HitCurves

__all__ = ["ProgressBar", "build_parser", "main"]

PROG = "tiered-bccache"
PLOT_HINT = "pip install 'tiered-bccache[plot]'"
#: The library's memcached timeouts are tens of milliseconds, sized for a page render
#: that must not wait; a batch command on a busy machine would rather wait a second than
#: count a server as down and skip it.
MEMCACHED_TIMEOUT = 1.0
#: The same for Redis tiers.
REDIS_TIMEOUT = 1.0

logger = logging.getLogger("tiered_bccache")


class CommandError(Exception):
    """A failure to report as one line, with the exit status to return."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CommandError:
    return CommandError(message, 2)


# -- the progress bar ---------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar, redrawn in place with ``\\r``; a ``progress(stage, done,
    total)`` callback. Disabled, it draws nothing; :meth:`log` still prints."""

    def __init__(self, stream: IO[str], *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self._open = False
        self._drawn = 0.0
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage != self._stage:
            self.done()  # a new stage gets a line of its own
            self._stage = stage
        # Redrawing on every step of a long run would cost more than the run's own work.
        elif done < total and now - self._drawn < 0.05:
            return
        self._drawn = now
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{stage:<10} [{bar}] {done}/{total}")
        self._open = True
        if done >= total:
            self.done()
        else:
            self.stream.flush()

    def done(self) -> None:
        """End the bar's line, if one is drawn."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def log(self, message: str) -> None:
        """Print ``message`` on its own line, below the bar."""
        self.done()
        print(message, file=self.stream, flush=True)


def _progress(args: argparse.Namespace) -> ProgressBar:
    return ProgressBar(sys.stderr, enabled=bool(args.progress) or sys.stderr.isatty())


# -- argument types -----------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1], e.g. 0.95")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


# -- the parser -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``tiered-bccache: error: ...`` line."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


_EXIT_STATUS = """\
exit status: 0 success, 1 failure at run time (a server unreachable, a template that
does not compile), 2 usage or configuration error."""

_SECRET_HELP = f"""\
secret: entries in files and memcached are signed with a key of at least
{MIN_SECRET_BYTES} bytes, the same on every host: ${ENV_VAR} by default (the library reads
it by itself), --secret-env VAR or --secret-file PATH; with no key a filesystem-only
cache uses a random per-host key kept in its directory, and a memcached tier is refused
unless --allow-unsigned (unsafe: whoever can write to memcached runs code)."""


_CACHE_EPILOG = (
    f"{SPEC_HELP}\n\nmemcached timeouts: {MEMCACHED_TIMEOUT:g} s here unless ;timeout= says "
    "otherwise (the library's\ndefault is tens of milliseconds, for page renders)."
    f"\n\n{_SECRET_HELP}\n\n{_EXIT_STATUS}"
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


def _common(debug: bool) -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        # The subcommands' copy must not reset a --debug given before the subcommand.
        default=False if debug else argparse.SUPPRESS,
        help="show tracebacks instead of one-line errors, and debug logging",
    )
    return parent


_TARGET_HELP = "module:attribute naming a TieredBytecodeCache or a jinja2.Environment using it"


def _add_cache_options(parser: argparse.ArgumentParser, *, positional: bool) -> None:
    group = parser.add_argument_group("the cache (module:attribute, or --tier specs)")
    if positional:
        group.add_argument(
            "cache",
            nargs="?",
            metavar="CACHE",
            help=_TARGET_HELP,
        )
    else:
        group.add_argument(
            "--cache",
            metavar="CACHE",
            help=_TARGET_HELP,
        )
    group.add_argument(
        "--tier",
        action="append",
        default=[],
        metavar="SPEC",
        help="a tier, fastest first (repeat); see the syntax below",
    )
    group.add_argument(
        "--secret-env",
        metavar="VAR",
        default=ENV_VAR,
        help=f"read the MAC key from this environment variable (default {ENV_VAR})",
    )
    group.add_argument("--secret-file", metavar="PATH", help="read the MAC key from a file")
    group.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept a memcached tier without a key (unsafe)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``tiered-bccache`` argument parser."""
    common = _common(debug=False)
    parser = _Parser(
        prog=PROG,
        description=_wrap(
            "A tiered, authenticated bytecode cache for Jinja2: benchmark it, size it from a "
            "trace, warm it, inspect and clear it. 'tiered-bccache COMMAND --help' says more."
        ),
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(debug=True)],
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    raw = argparse.RawDescriptionHelpFormatter

    bench = commands.add_parser(
        "bench",
        help="time every way of loading a template (ours, Jinja's, the floors)",
        description=_wrap(
            "Time template loads through every contender (no cache, Jinja's filesystem and "
            "memcached caches, the dict and marshal-file floors, our memory, filesystem and "
            "memcached tiers) in one interleaved run; then time whole new processes loading "
            "every template (ours, Jinja's caches, no cache, the bare-file floor), the import "
            "cost and a new Environment's first template. Tables go to stdout, the progress "
            "bar to stderr."
        ),
        epilog=_EXIT_STATUS,
        formatter_class=raw,
        parents=[common],
    )
    bench.add_argument(
        "--templates", metavar="DIR", help="a template directory (default: a generated corpus)"
    )
    bench.add_argument(
        "--count",
        type=_positive_int,
        default=36,
        metavar="N",
        help="templates in the generated corpus (default 36)",
    )
    bench.add_argument(
        "--rounds", type=_positive_int, default=7, metavar="N", help="rounds (default 7)"
    )
    bench.add_argument(
        "--threads", type=_positive_int, default=4, metavar="N", help="threads (default 4)"
    )
    mc = bench.add_mutually_exclusive_group()
    mc.add_argument(
        "--memcached",
        metavar="HOST:PORT",
        help="a memcached to use (default: start a private one if memcached is on PATH)",
    )
    mc.add_argument("--no-memcached", action="store_true", help="leave the memcached rows out")
    rd = bench.add_mutually_exclusive_group()
    rd.add_argument(
        "--redis",
        metavar="HOST:PORT",
        help="a Redis to use (default: start a private one if redis-server is on PATH)",
    )
    rd.add_argument("--no-redis", action="store_true", help="leave the redis rows out")
    bench.add_argument(
        "--dir", metavar="DIR", help="where the filesystem caches live (default: a temp dir)"
    )
    bench.add_argument("--quick", action="store_true", help="a short run (3 rounds)")
    bench.add_argument(
        "--no-processes",
        action="store_true",
        help="leave out the whole-process run (new processes loading every template)",
    )
    bench.add_argument(
        "--string-iterations",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="iterations of the template-string loop (default 10; 0 leaves it out)",
    )
    bench.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help=f"also draw a chart ({PLOT_HINT})")
    bench.add_argument(
        "--progress", action="store_true", help="draw the progress bar even if stderr is no TTY"
    )
    bench.add_argument(
        "--secret-env", metavar="VAR", default=ENV_VAR, help=f"MAC key variable ({ENV_VAR})"
    )
    bench.add_argument("--secret-file", metavar="PATH", help="read the MAC key from a file")
    bench.set_defaults(run=cmd_bench, allow_unsigned=False)

    tune = commands.add_parser(
        "tune",
        help="size the tiers from an access trace, or from a simulated Zipf workload",
        description=_wrap(
            "Compute the LRU hit-ratio curves of an access trace (written by "
            "TieredBytecodeCache(..., trace=PATH) or cache.start_trace(PATH)) and recommend "
            "the smallest MemoryTier and FileSystemTier bounds that reach --target of the "
            "best possible hit ratio. With --simulate DIR instead of a trace, the workload "
            "is a Zipf draw over the templates of DIR, each weighing its marshalled "
            "compiled code."
        ),
        epilog=_wrap(
            "The FileSystemTier size is the byte recommendation plus each entry's header "
            "and MAC, over the nine tenths of max_bytes that a prune leaves."
        )
        + "\n\n"
        + _EXIT_STATUS,
        formatter_class=raw,
        parents=[common],
    )
    tune.add_argument("trace", nargs="?", metavar="TRACE", help="a trace file")
    tune.add_argument(
        "--target",
        type=_share,
        default=0.95,
        metavar="SHARE",
        help="share of the best possible hit ratio to reach (default 0.95)",
    )
    tune.add_argument(
        "--simulate", metavar="DIR", help="simulate a Zipf workload over DIR's templates"
    )
    tune.add_argument(
        "--accesses",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="lookups to simulate (default 100000)",
    )
    tune.add_argument(
        "--zipf",
        type=_positive_float,
        default=1.1,
        metavar="S",
        help="the Zipf exponent (default 1.1)",
    )
    tune.add_argument(
        "--seed", type=_non_negative_int, default=0, metavar="K", help="random seed (default 0)"
    )
    tune.add_argument("--plot", metavar="FILE.png", help=f"draw the curves ({PLOT_HINT})")
    tune.add_argument("--json", action="store_true", help="print JSON instead of text")
    tune.set_defaults(run=cmd_tune)

    warm = commands.add_parser(
        "warm",
        help="compile every template of a source into every tier of a cache",
        description=_wrap(
            "Compile every template of SOURCE and write it through to every tier of the "
            "cache, in parallel processes. SOURCE is a template directory (compiled with a "
            "default jinja2.Environment: its entries serve applications whose environment "
            "has the default settings) or module:attribute naming the application's "
            "jinja2.Environment (its loader lists the templates, its settings go into the "
            "keys). Templates that fail to compile are listed at the end and do not stop "
            "the others. A memory tier lives in one process: warming it has no lasting "
            "effect."
        ),
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
        parents=[common],
    )
    warm.add_argument("source", metavar="SOURCE", help="a template directory or module:attribute")
    _add_cache_options(warm, positional=False)
    warm.add_argument(
        "--jobs",
        type=_positive_int,
        default=_cpu_count(),
        metavar="N",
        help=f"parallel processes (default: the CPU count, {_cpu_count()})",
    )
    warm.add_argument(
        "--extensions",
        metavar="EXT,...",
        help="only templates with these extensions (e.g. html,j2; default: every file)",
    )
    warm.add_argument(
        "--progress", action="store_true", help="draw the progress bar even if stderr is no TTY"
    )
    warm.set_defaults(run=cmd_warm)

    stats = commands.add_parser(
        "stats",
        help="what each tier holds now, and the cache's counters",
        description=_wrap(
            "Show, per tier, what is stored now (a memory tier only for a cache named "
            "module:attribute, as this process sees it; a filesystem tier's entries and "
            "bytes; a memcached or redis tier's reachability, server statistics and "
            "namespace generation), then the counters of cache.stats() in this process."
        ),
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
        parents=[common],
    )
    _add_cache_options(stats, positional=True)
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(run=cmd_stats)

    clear = commands.add_parser(
        "clear",
        help="empty every tier (memcached and redis by bumping their namespace generation)",
        description=_wrap(
            "Empty every tier of the cache: delete a filesystem tier's entries, bump a "
            "memcached or redis tier's namespace generation (never flush_all, FLUSHDB or "
            "KEYS: other applications may share the server; the old entries age out)."
        ),
        epilog=_CACHE_EPILOG,
        formatter_class=raw,
        parents=[common],
    )
    _add_cache_options(clear, positional=True)
    clear.set_defaults(run=cmd_clear)
    return parser


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# -- shared helpers -------------------------------------------------------------------------


def _read_secret(args: argparse.Namespace) -> bytes | None:
    """The key named by --secret-file / --secret-env, or None to let the library read
    its default variable by itself."""
    if args.secret_file is not None:
        if args.secret_env != ENV_VAR:
            raise usage_error("give --secret-env or --secret-file, not both")
        try:
            with open(args.secret_file, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise usage_error(
                f"cannot read --secret-file {args.secret_file}: {exc.strerror}"
            ) from exc
        # A key file written with echo ends with a newline that is not part of the key.
        return data.rstrip(b"\r\n")
    if args.secret_env != ENV_VAR:
        value = os.environ.get(args.secret_env)
        if not value:
            raise usage_error(f"--secret-env {args.secret_env}: the variable is not set")
        return value.encode("utf-8")
    return None


def _load_cache(args: argparse.Namespace, target: str | None) -> TieredBytecodeCache:
    if target is not None:
        if re.match(r"(memory|fs|filesystem|memcached|redis|rediss|redis\+\w+)(:|$)", target):
            raise usage_error(f"{target!r} looks like a tier spec: pass it as --tier {target}")
        given = [
            flag
            for flag, value in (
                ("--secret-env", args.secret_env != ENV_VAR),
                ("--secret-file", args.secret_file is not None),
                ("--allow-unsigned", args.allow_unsigned),
            )
            if value
        ]
        if given and not args.tier:
            raise usage_error(
                f"{', '.join(given)} cannot apply to {target!r}: the application configures "
                "its own cache"
            )
    secret = _read_secret(args)
    from_env = args.secret_env != ENV_VAR and args.secret_file is None
    try:
        return load_cache(
            target,
            list(args.tier),
            memcached_timeout=MEMCACHED_TIMEOUT,
            redis_timeout=REDIS_TIMEOUT,
            # A key from a variable is passed by the variable's name, so that a copy of
            # the cache (pickled to a worker) carries the name, not the key.
            secret=None if from_env else secret,
            secret_env=args.secret_env if from_env else None,
            allow_unsigned=args.allow_unsigned,
        )
    except InsecureConfigurationError as exc:
        raise usage_error(
            f"a memcached or redis tier is shared and needs a MAC key: set ${ENV_VAR} (at least "
            f"{MIN_SECRET_BYTES} bytes, the same on every host), or use --secret-env VAR / "
            "--secret-file PATH; --allow-unsigned turns the check off (unsafe)"
        ) from exc
    except SpecError as exc:
        raise usage_error(str(exc)) from exc


def _check_plot(path: str | None) -> None:
    """Fail before the work when --plot cannot be honoured."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise usage_error(f"--plot needs matplotlib: {PLOT_HINT}") from None


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _human(nbytes: float) -> str:
    """``nbytes`` in B, KiB, MiB, GiB or TiB."""
    value, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def _size_suffix(nbytes: int) -> str:
    """``nbytes`` as the shortest exact spec size (``64M``, ``1536k``, ``1000``), rounding
    up to a whole kilobyte above 64 kB so a spec reads well."""
    if nbytes >= 64 * 1024:
        nbytes = -(-nbytes // 1024) * 1024
    for suffix, unit in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def _write_json(data: object, stream: IO[str]) -> None:
    json.dump(data, stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")


def _remote_tiers(cache: TieredBytecodeCache) -> list[MemcachedTier | RedisTier]:
    return [t for t in cache.tiers if isinstance(t, (MemcachedTier, RedisTier))]


def _generation(tier: MemcachedTier | RedisTier) -> str:
    """The tier's current namespace generation (this reads it from the server)."""
    return tier.generation()


def _require_reachable(cache: TieredBytecodeCache) -> None:
    """Fail fast, before any work, when a memcached or redis tier cannot be reached: the
    cache would otherwise only count the failures and go on."""
    for tier in _remote_tiers(cache):
        try:
            _generation(tier)
        except Exception as exc:
            raise CommandError(f"{tier.name} is unreachable: {_describe_error(exc)}") from exc


# -- bench ----------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """``tiered-bccache bench``."""
    from .bench import BenchConfig, run_bench
    from .tiers.memcached import parse_server

    _check_plot(args.plot)
    if args.templates is not None and not os.path.isdir(args.templates):
        raise usage_error(f"--templates {args.templates}: not a directory")
    if args.memcached is not None:
        try:
            parse_server(args.memcached)
        except ConfigurationError as exc:
            raise usage_error(f"--memcached: {exc}") from exc
        probe = MemcachedTier(
            args.memcached,
            prefix="tiered-bccache-probe",
            timeout=MEMCACHED_TIMEOUT,
            connect_timeout=MEMCACHED_TIMEOUT,
        )
        try:
            probe.client.version()
        except Exception as exc:
            raise CommandError(
                f"memcached at {args.memcached} is unreachable: {_describe_error(exc)}"
            ) from exc
        finally:
            probe.close()
    if args.redis is not None:
        try:
            parse_server(args.redis)
            redis_probe = RedisTier(
                f"redis://{args.redis}/0", timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT
            )
        except ConfigurationError as exc:
            raise usage_error(f"--redis: {exc}") from exc
        try:
            redis_probe.client.ping()
        except Exception as exc:
            raise CommandError(
                f"redis at {args.redis} is unreachable: {_describe_error(exc)}"
            ) from exc
        finally:
            redis_probe.close()
    config = BenchConfig(
        templates=args.templates,
        count=args.count,
        rounds=args.rounds,
        memcached=args.memcached,
        no_memcached=args.no_memcached,
        redis=args.redis,
        no_redis=args.no_redis,
        directory=args.dir,
        secret=_read_secret(args),
        threads=args.threads,
        quick=args.quick,
        processes=not args.no_processes,
        string_iterations=2 if args.quick and args.string_iterations else args.string_iterations,
    )
    bar = _progress(args)
    try:
        report = run_bench(config, progress=bar, log=bar.log)
    except ValueError as exc:  # ConfigurationError included: what we were given is wrong
        raise usage_error(str(exc)) from exc
    finally:
        bar.done()
    print(report.format_table())
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as file:
            _write_json(report.as_dict(), file)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot is not None:
        try:
            report.plot(args.plot)
        except ImportError as exc:
            raise usage_error(f"--plot needs matplotlib: {PLOT_HINT}") from exc
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# -- tune -----------------------------------------------------------------------------------


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


def _entry_overhead() -> int:
    """Bytes a byte tier's entry adds to the marshalled code: header, checksum, MAC."""
    raw = marshal.dumps(compile("", "<empty>", "exec"))
    return len(EntryCodec(b"\0" * MIN_SECRET_BYTES).encode("k", "0" * 40, raw)) - len(raw)


def _simulated_records(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    from .tune import zipf_trace

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
            print(f"{PROG}: skipped {name}: {_describe_error(exc)}", file=sys.stderr)
            continue
        sized.append((name, len(marshal.dumps(code))))
    if not sized:
        raise usage_error(f"--simulate {directory}: no template there compiles")
    # Popularity follows a shuffled listing: alphabetical order means nothing.
    random.Random(args.seed).shuffle(sized)
    return iter(zipf_trace(sized, args.accesses, s=args.zipf, seed=args.seed))


def _trace_records(path: str) -> Iterator[tuple[str, int]]:
    from .trace import read_trace

    if not os.path.exists(path):
        raise usage_error(f"trace file {path} does not exist")
    if os.path.isdir(path):
        raise usage_error(f"trace file {path} is a directory")
    return read_trace(path)


def cmd_tune(args: argparse.Namespace) -> int:
    """``tiered-bccache tune``."""
    from .trace import TraceFormatError
    from .tune import format_report, hit_curves, recommend

    if (args.trace is None) == (args.simulate is None):
        raise usage_error("give a TRACE file or --simulate DIR (one of them)")
    _check_plot(args.plot)
    records = _trace_records(args.trace) if args.trace else _simulated_records(args)
    try:
        curves = hit_curves(records)
    except TraceFormatError as exc:
        raise CommandError(f"malformed trace: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot read trace {args.trace}: {exc.strerror}") from exc
    if curves.accesses == 0:
        raise CommandError(f"trace {args.trace} holds no lookups: nothing to size from")
    rec = recommend(curves, share=args.target)
    per_entry = _entry_overhead()
    average = curves.byte_curve.total_size / max(curves.distinct_keys, 1)
    fs_bytes = math.ceil(rec.max_bytes * (1 + per_entry / max(average, 1)) / 0.9)
    sizes = TierSizes(
        target=args.target,
        best_hit_ratio=rec.best_hit_ratio,
        memory_max_entries=rec.max_entries,
        memory_max_entries_hit_ratio=rec.entries_hit_ratio,
        memory_max_bytes=rec.max_bytes,
        memory_max_bytes_hit_ratio=rec.bytes_hit_ratio,
        filesystem_max_bytes=fs_bytes,
    )
    source = args.trace or (
        f"zipf s={args.zipf} over {args.simulate}, {args.accesses} accesses, seed {args.seed}"
    )
    if args.json:
        _write_json(_tune_json(curves, sizes, source), sys.stdout)
    else:
        print(f"source: {source}")
        print(format_report(curves, share=args.target), end="")
        print()
        print(f"recommended for {100 * args.target:g}% of the best hit ratio:")
        rows = [
            (f"MemoryTier(max_entries={sizes.memory_max_entries})", "", rec.entries_hit_ratio),
            (
                f"MemoryTier(max_bytes={sizes.memory_max_bytes})",
                _human(sizes.memory_max_bytes),
                rec.bytes_hit_ratio,
            ),
            (
                f"FileSystemTier(max_bytes={sizes.filesystem_max_bytes})",
                _human(sizes.filesystem_max_bytes),
                rec.bytes_hit_ratio,
            ),
        ]
        for call, human, ratio in rows:
            print(f"  {call:<40} {human:>10}  hit ratio {100 * ratio:5.1f}%")
        print(
            f"  as specs: --tier memory:{sizes.memory_max_entries} "
            f"(or memory:bytes={_size_suffix(sizes.memory_max_bytes)}) "
            f"--tier fs:PATH,max_bytes={_size_suffix(sizes.filesystem_max_bytes)}"
        )
    if args.plot is not None:
        _plot_curves(curves, sizes, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


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
        raise usage_error(f"--plot needs matplotlib: {PLOT_HINT}") from exc
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
            _human(sizes.memory_max_bytes),
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


# -- warm -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarmPlan:
    """What each warming process needs to build its own environment and cache."""

    source: str
    cache_target: str | None
    tier_specs: tuple[str, ...]
    secret: bytes | None
    allow_unsigned: bool


@dataclass(frozen=True, slots=True)
class WarmResult:
    """One template: its error line (None if it compiled), and the tiers that failed to
    store it or skipped it."""

    name: str
    error: str | None
    failed_tiers: tuple[str, ...] = ()
    skipped_tiers: tuple[str, ...] = ()


def _source_environment(source: str) -> Environment:
    if os.path.isdir(source):
        return Environment(loader=FileSystemLoader(source))
    if ":" not in source or os.sep in source:
        raise usage_error(f"SOURCE {source!r} is neither a directory nor module:attribute")
    env = load_object(source)
    if not isinstance(env, Environment):
        raise usage_error(f"SOURCE {source!r} is a {type(env).__name__}, not a jinja2.Environment")
    if env.loader is None:
        raise usage_error(f"SOURCE {source!r}: the environment has no loader")
    return env


_TRIPPED = ("open", "half-open")


class _Warmer:
    """Compiles templates of one environment into one cache, one at a time."""

    def __init__(self, env: Environment, cache: TieredBytecodeCache) -> None:
        self.env = env
        self.cache = cache

    def warm(self, name: str) -> WarmResult:
        env, cache = self.env, self.cache
        try:
            source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            code = env.compile(source, name, filename)
        except Exception as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if isinstance(line, int) else ""
            return WarmResult(name, " ".join(_describe_error(exc).split()) + where)
        before = cache.stats().tiers
        # Keyed as a lookup through Jinja's loader keys it, written to every tier.
        cache.put(env, name, filename, source, code)
        after = zip(cache.stats().tiers, before, strict=True)
        failed, skipped = [], []
        for a, b in after:
            # A skip behind an open breaker is a failure too: the entry is not there.
            if a.errors > b.errors or (a.skipped > b.skipped and a.breaker in _TRIPPED):
                failed.append(a.name)
            elif a.skipped > b.skipped:
                skipped.append(a.name)
        return WarmResult(name, None, tuple(failed), tuple(skipped))


# Each warming process builds its environment and cache once, in the pool's initializer;
# the tasks then find them here. Only worker processes ever set it.
_worker: _Warmer | None = None


def _worker_init(plan: WarmPlan) -> None:
    global _worker
    env = _source_environment(plan.source)
    cache = load_cache(
        plan.cache_target,
        list(plan.tier_specs),
        memcached_timeout=MEMCACHED_TIMEOUT,
        secret=plan.secret,
        allow_unsigned=plan.allow_unsigned,
    )
    _worker = _Warmer(env, cache)


def _worker_warm(name: str) -> WarmResult:
    assert _worker is not None
    return _worker.warm(name)


def _template_names(env: Environment, extensions: str | None, source: str) -> list[str]:
    exts = [e.strip().lstrip(".") for e in extensions.split(",")] if extensions else None
    try:
        return sorted(env.list_templates(extensions=exts))
    except TypeError as exc:  # FunctionLoader and friends cannot list
        raise usage_error(f"SOURCE {source!r}: its loader cannot list templates ({exc})") from exc


def cmd_warm(args: argparse.Namespace) -> int:
    """``tiered-bccache warm``."""
    started = time.monotonic()
    env = _source_environment(args.source)
    cache = _load_cache(args, args.cache)
    names = _template_names(env, args.extensions, args.source)
    if not names:
        raise usage_error(f"SOURCE {args.source!r} holds no templates")
    _require_reachable(cache)
    bar = _progress(args)
    jobs = min(args.jobs, len(names))
    results: list[WarmResult] = []
    if jobs == 1:
        warmer = _Warmer(env, cache)
        for name in names:
            results.append(warmer.warm(name))
            bar("warm", len(results), len(names))
        cache.close()
    else:
        cache.close()
        plan = WarmPlan(
            args.source,
            args.cache,
            tuple(args.tier),
            _read_secret(args),
            args.allow_unsigned,
        )
        results = _warm_in_pool(plan, names, jobs, bar)
    bar.done()
    return _report_warm(cache, names, results, jobs, time.monotonic() - started)


def _warm_in_pool(
    plan: WarmPlan, names: list[str], jobs: int, bar: ProgressBar
) -> list[WarmResult]:
    # spawn, not fork: a fresh interpreter per worker imports the application's module
    # as the user would, and inherits no threads or sockets of ours.
    context = multiprocessing.get_context("spawn")
    results: list[WarmResult] = []
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(plan,)
    ) as pool:
        try:
            # A chunk per task keeps the inter-process chatter well below the compile
            # time, while the bar still moves often.
            chunksize = max(1, len(names) // (jobs * 8))
            for result in pool.map(_worker_warm, names, chunksize=chunksize):
                results.append(result)
                bar("warm", len(results), len(names))
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise CommandError(
                f"a warming process died ({exc}); run with --jobs 1 to see why"
            ) from exc
    return results


def _report_warm(
    cache: TieredBytecodeCache,
    names: list[str],
    results: list[WarmResult],
    jobs: int,
    seconds: float,
) -> int:
    failed = [r for r in results if r.error is not None]
    tiers = ", ".join(getattr(t, "name", type(t).__name__) for t in cache.tiers)
    processes = "1 process" if jobs == 1 else f"{jobs} processes"
    print(
        f"compiled {len(results) - len(failed)} of {len(names)} templates into {tiers} "
        f"({processes}, {seconds:.1f} s)"
    )
    tier_failures: dict[str, int] = {}
    skips: dict[str, int] = {}
    for r in results:
        for name in r.failed_tiers:
            tier_failures[name] = tier_failures.get(name, 0) + 1
        for name in r.skipped_tiers:
            skips[name] = skips.get(name, 0) + 1
    for name, n in skips.items():
        print(f"note: {name} skipped {n} templates, too large for it")
    if any(isinstance(t, MemoryTier) for t in cache.tiers):
        print("note: a memory tier lives in one process: warming it has no lasting effect")
    if failed:
        print(f"failed to compile ({len(failed)}):")
        for r in failed:
            print(f"  {r.name}: {r.error}")
    for name, n in tier_failures.items():
        print(f"{PROG}: error: {name} failed to store {n} templates", file=sys.stderr)
    return 1 if failed or tier_failures else 0


# -- stats ----------------------------------------------------------------------------------


def _server_stats(tier: MemcachedTier) -> list[dict[str, object]]:
    """The ``stats`` of every server of the tier, or the error that stopped it."""
    wanted = (
        "curr_items",
        "bytes",
        "limit_maxbytes",
        "evictions",
        "get_hits",
        "get_misses",
    )
    clients = getattr(tier.client, "clients", None)  # a HashClient holds one per server
    pairs = list(clients.items()) if isinstance(clients, dict) else [(tier.name, tier.client)]
    out: list[dict[str, object]] = []
    for server, client in pairs:
        name = str(server).removeprefix("memcached:")
        try:
            raw = client.stats()
        except Exception as exc:
            out.append({"server": name, "reachable": False, "error": _describe_error(exc)})
            continue
        values = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
        row: dict[str, object] = {"server": name, "reachable": True}
        row.update({k: values.get(k) for k in wanted})
        out.append(row)
    return out


def _tier_report(tier: Any, named: bool) -> dict[str, object]:
    name = str(getattr(tier, "name", type(tier).__name__))
    if isinstance(tier, MemoryTier):
        return {
            "name": name,
            "kind": "memory",
            "entries": len(tier),
            "currsize": tier.currsize,
            "max_entries": tier.max_entries,
            "max_bytes": tier.max_bytes,
            "this_process_only": True,
            "from_application": named,
        }
    if isinstance(tier, FileSystemTier):
        entries, nbytes = tier.size()
        return {
            "name": name,
            "kind": "filesystem",
            "directory": tier.directory,
            "entries": entries,
            "bytes": nbytes,
            "max_bytes": tier.max_bytes,
        }
    if isinstance(tier, MemcachedTier):
        report: dict[str, object] = {"name": name, "kind": "memcached", "prefix": tier.prefix}
        servers = _server_stats(tier)
        down = [
            f"{s['server']}: {s['error']}" if len(servers) > 1 else str(s["error"])
            for s in servers
            if not s["reachable"]
        ]
        try:
            report["generation"] = _generation(tier)
        except Exception as exc:
            report["generation"] = None
            down = down or [_describe_error(exc)]
        report["reachable"] = not down
        if down:
            report["error"] = "; ".join(down)
        report["servers"] = servers
        return report
    if isinstance(tier, RedisTier):
        report = {"name": name, "kind": "redis", "prefix": tier.prefix}
        try:
            report["generation"] = _generation(tier)
            report["servers"] = tier.server_stats()
            report["reachable"] = True
        except Exception as exc:
            report.setdefault("generation", None)
            report["servers"] = []
            report["reachable"] = False
            report["error"] = _describe_error(exc)
        return report
    return {"name": name, "kind": type(tier).__name__}


def cmd_stats(args: argparse.Namespace) -> int:
    """``tiered-bccache stats``."""
    cache = _load_cache(args, args.cache)
    named = args.cache is not None
    tiers = [_tier_report(t, named) for t in cache.tiers]
    counters = cache.stats()
    if args.json:
        _write_json({"tiers": tiers, "counters": counters.as_dict()}, sys.stdout)
    else:
        _print_stats(tiers, counters)
    unreachable = [t for t in tiers if t.get("reachable") is False]
    for t in unreachable:
        print(f"{PROG}: error: {t['name']} is unreachable: {t['error']}", file=sys.stderr)
    return 1 if unreachable else 0


def _print_stats(tiers: list[dict[str, Any]], counters: Any) -> None:
    print(f"{len(tiers)} tiers, in lookup order:")
    for i, t in enumerate(tiers, 1):
        print(f"{i}. {t['name']}")
        if t["kind"] == "memory":
            bounds = ", ".join(
                f"{k} {t[k]}" for k in ("max_entries", "max_bytes") if t[k] is not None
            )
            where = (
                "this process's copy of the application's cache"
                if t["from_application"]
                else "new in this process: the application's memory tiers live in its processes"
            )
            print(f"   entries {t['entries']}, currsize {t['currsize']} ({bounds}); {where}")
        elif t["kind"] == "filesystem":
            limit = "no max_bytes" if t["max_bytes"] is None else f"max_bytes {t['max_bytes']}"
            print(f"   directory {t['directory']}")
            print(f"   entries {t['entries']}, {t['bytes']} bytes ({_human(t['bytes'])}); {limit}")
        elif t["kind"] == "memcached":
            generation = t["generation"] or "unknown (unreachable)"
            print(f"   prefix {t['prefix']}, namespace generation {generation}")
            for s in t["servers"]:
                if not s["reachable"]:
                    print(f"   server {s['server']}: unreachable: {s['error']}")
                    continue
                print(
                    f"   server {s['server']} (the whole server, every prefix): curr_items "
                    f"{s['curr_items']}, bytes {s['bytes']} ({_human(s['bytes'] or 0)}), "
                    f"limit_maxbytes {s['limit_maxbytes']} ({_human(s['limit_maxbytes'] or 0)}),"
                    f" evictions {s['evictions']}, get_hits {s['get_hits']}, "
                    f"get_misses {s['get_misses']}"
                )
        elif t["kind"] == "redis":
            generation = t["generation"] or "unknown (unreachable)"
            print(f"   prefix {t['prefix']}, namespace generation {generation}")
            if not t["reachable"]:
                print(f"   unreachable: {t['error']}")
            for s in t["servers"]:
                maxmemory = s["maxmemory"] or 0
                limit = f"{maxmemory} ({_human(maxmemory)})" if maxmemory else "0 (no limit)"
                print(
                    f"   server {s['server']} (the whole server, every prefix): keys "
                    f"{s['keys']}, used_memory {s['used_memory']} "
                    f"({_human(s['used_memory'] or 0)}), maxmemory {limit}, policy "
                    f"{s['maxmemory_policy']}, evicted_keys {s['evicted_keys']}, "
                    f"keyspace_hits {s['keyspace_hits']}, keyspace_misses {s['keyspace_misses']}"
                )
    print()
    print(
        f"counters (this process): lookups {counters.lookups}, hits {counters.hits}, "
        f"misses {counters.misses}, compiles {counters.compiles}, "
        f"lease_waits {counters.lease_waits}"
    )
    columns = ("hits", "misses", "promotions", "writes", "rejected", "skipped", "errors")
    width = max(len(t.name) for t in counters.tiers)
    print(f"  {'tier':<{width}} " + " ".join(f"{c:>10}" for c in columns) + "    breaker")
    for t in counters.tiers:
        cells = " ".join(f"{getattr(t, c):>10}" for c in columns)
        print(f"  {t.name:<{width}} {cells}    {t.breaker}")


# -- clear ----------------------------------------------------------------------------------


def cmd_clear(args: argparse.Namespace) -> int:
    """``tiered-bccache clear``."""
    cache = _load_cache(args, args.cache)
    _require_reachable(cache)
    before: dict[int, str] = {}
    for tier in cache.tiers:
        if isinstance(tier, MemoryTier):
            before[id(tier)] = f"{len(tier)} entries (this process's memory)"
        elif isinstance(tier, FileSystemTier):
            entries, nbytes = tier.size()
            before[id(tier)] = f"{entries} entries, {_human(nbytes)}"
        elif isinstance(tier, (MemcachedTier, RedisTier)):
            before[id(tier)] = f"namespace generation {_generation(tier)}"
    cache.clear()
    failed = []
    for tier, counters in zip(cache.tiers, cache.stats().tiers, strict=True):
        name = str(getattr(tier, "name", type(tier).__name__))
        if counters.errors:
            failed.append(name)
            continue
        what = before.get(id(tier), "cleared")
        if isinstance(tier, (MemcachedTier, RedisTier)):
            what += f" -> {_generation(tier)} (the old entries age out)"
        print(f"cleared {name}: {what}")
    for name in failed:
        print(f"{PROG}: error: could not clear {name} (see the warning above)", file=sys.stderr)
    return 1 if failed else 0


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit
    status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug)
    # The library's warnings (a tier failing, an entry rejected) go to stderr through a
    # handler of our own that main removes again, so a caller's logging stays as it was.
    # Without --debug they are held until the command ends: printed after a success,
    # dropped after a failure, whose one line says what went wrong.
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if debug else _HeldWarnings()
    handler.setFormatter(
        logging.Formatter("%(name)s: %(levelname)s: %(message)s" if debug else "%(message)s")
    )
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        status = run(args)
        if isinstance(handler, _HeldWarnings) and status == 0:
            handler.flush_to(sys.stderr)
        return status
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, and keep the interpreter from
        # complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if debug:
            raise
        status, message = _classify(exc)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if not logger.handlers:
            # What the library logs after the command ended (a connection closed at
            # exit) is not news; without a handler Python would print it on stderr.
            logger.addHandler(logging.NullHandler())


class _HeldWarnings(logging.Handler):
    """Keeps the library's messages until the command has ended."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def flush_to(self, stream: TextIO) -> None:
        for line in self.lines:
            print(line, file=stream)
        self.lines.clear()


def _classify(exc: Exception) -> tuple[int, str]:
    """The exit status and the one line to print for an exception that reached main."""
    if isinstance(exc, CommandError):
        return exc.status, str(exc)
    if isinstance(exc, ConfigurationError):
        return 2, str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return 1, f"{exc.strerror or exc}{where}"
    return 1, f"{_describe_error(exc)} (run with --debug for the traceback)"
