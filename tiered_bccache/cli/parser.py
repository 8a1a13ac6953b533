"""The ``tiered-bccache`` argument parser and its help texts.

Each command is registered with the name of the function that carries it out, in a module
of its own (``bench``, ``run``, ``tune``, ``warm``, ``inspect``): building the parser
imports none of them, and :func:`~tiered_bccache.cli.main` imports the one the parsed
arguments name. So ``tiered-bccache run`` starts its command without importing Jinja or
the cache, and ``--help`` answers at once."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from .. import __version__
from ..secret import ENV_VAR, MIN_SECRET_BYTES
from .defaults import MEMCACHED_TIMEOUT, PLOT_HINT, SPEC_HELP
from .errors import PROG

# Not typing.TYPE_CHECKING: ``tiered-bccache run`` does not import typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["build_parser"]


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
    """argparse, with its errors as one ``tiered-bccache: error: ...`` line that points to
    the help of the parser that knows the arguments: a command's own."""

    #: A command's parser (set by :func:`_command`): it refuses the arguments it does not
    #: know itself. argparse leaves them to the top-level parser, whose message would
    #: point to the top-level help, which does not list the command's options.
    command = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.command:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {message}{hint}\n")


if TYPE_CHECKING:
    _Commands = argparse._SubParsersAction[_Parser]


# The help texts are written as printed, wrapped at 88 columns.

_DESCRIPTION = """\
A tiered, authenticated bytecode cache for Jinja2: run a tool with it (dbt, Ansible,
Sphinx, MkDocs: no code change), benchmark it, size it from a trace, warm it, inspect
and clear it. 'tiered-bccache COMMAND --help' says more; 'python -m tiered_bccache' is
the same program."""

_EXIT_STATUS = """\
exit status: 0 success, 1 failure at run time (a server unreachable, a template that
does not compile), 2 usage or configuration error."""

_ERRORS = """\
errors: one line on stderr, never a traceback (--debug shows it). What the library logs
while a command runs (a tier failing, an entry rejected) is printed after the command
succeeds and dropped when it fails, whose one line says what went wrong; --debug shows
it as it happens."""

_SECRET_HELP = f"""\
secret: entries in files, memcached and Redis are signed with a key of at least
{MIN_SECRET_BYTES} bytes, the same on every host: ${ENV_VAR} by default (the library reads
it by itself), --secret-env VAR or --secret-file PATH; with no key a filesystem-only
cache uses a random per-host key kept in its directory, and a memcached or redis tier is
refused unless --allow-unsigned (unsafe: whoever can write to the server runs code)."""


_CACHE_EPILOG = (
    f"{SPEC_HELP}\n\nmemcached and redis timeouts: {MEMCACHED_TIMEOUT:g} s here unless ;timeout= "
    "says otherwise\n(the library's default is tens of milliseconds, for page renders)."
    f"\n\n{_SECRET_HELP}\n\n{_EXIT_STATUS}"
)


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


class _OneCache(argparse.Action):
    """Stores the cache given as CACHE or as --cache into ``cache``; the second of the
    two is a usage error. argparse calls the positional's action with its default (None)
    when CACHE is absent, so None never overwrites a --cache already seen."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        if values is None:
            return
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(
                self, "give the cache once, as CACHE or as --cache CACHE, not both"
            )
        setattr(namespace, self.dest, values)


def _add_cache_options(parser: argparse.ArgumentParser, *, what: str = _TARGET_HELP) -> None:
    """The ways to say which cache: CACHE or --cache CACHE (the same, one of them), or
    --tier specs, and the key options; ``what`` is the help of CACHE."""
    group = parser.add_argument_group(
        "the cache: CACHE or --cache CACHE (module:attribute), or --tier specs"
    )
    group.add_argument("cache", nargs="?", metavar="CACHE", action=_OneCache, help=what)
    group.add_argument(
        "--cache", dest="cache", metavar="CACHE", action=_OneCache, help="the same as CACHE"
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
        help="accept a memcached or redis tier without a key (unsafe)",
    )


def _command(
    commands: _Commands,
    common: _Parser,
    name: str,
    run: str,
    text: str,
    epilog: str = _EXIT_STATUS,
) -> _Parser:
    """Register the command ``name``, carried out by ``run`` (``module:function`` in
    this package, imported when the command runs). ``text`` is its line in the
    top-level help, a blank line, and its description as ``COMMAND --help`` prints it;
    every command takes ``common``'s options."""
    summary, _, description = text.partition("\n\n")
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.set_defaults(run=run)
    parser.command = True
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``tiered-bccache`` argument parser."""
    common = _common(debug=False)
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=f"{_ERRORS}\n\n{_EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(debug=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for add in (_add_bench, _add_run, _add_tune, _add_warm, _add_stats, _add_clear):
        add(commands, common)
    return parser


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    parse: Callable[[str], object],
    default: object,
    metavar: str,
    what: str,
) -> None:
    """An option taking a number, its default said at the end of its help."""
    text = f"{what} (default {default})"
    parser.add_argument(flag, type=parse, default=default, metavar=metavar, help=text)


# -- the commands: their help texts and options ---------------------------------------------
# Each text is the command's line in the top-level help, a blank line, its description.

_BENCH = """\
time every way of loading a template (ours, Jinja's, the floors)

Three parts, each table printed as soon as it is measured. The hit paths: template
loads through every contender in one interleaved run (no cache; Jinja's filesystem and
memcached caches; a plain Redis bytecode cache; the dict, marshal-file and signed-file
floors; our memory, filesystem, memcached and redis tiers). Whole new processes loading
every template (ours, Jinja's caches, no cache, the bare-file floors), the import cost
and a new Environment's first template (--no-processes leaves them out). The
template-string loop: a new sandboxed Environment and from_string per iteration, as
Ansible and dbt do (--string-iterations 0 leaves it out). Ratios are taken per round
and summarised over rounds; one with too few valid rounds says "not enough signal".
Without --memcached or --redis a private server is started for the run if it is
installed; it is stopped, and the temporary directory removed, at the end and after
Ctrl-C, SIGTERM or SIGHUP alike. Tables go to stdout, the progress bar to stderr."""

_BENCH_EPILOG = """\
exit status: 0 success, 1 failure at run time (a server unreachable, a template that
does not compile), 2 usage or configuration error; 130 after Ctrl-C, 128 + N after
signal N (SIGTERM 143, SIGHUP 129)."""


def _add_bench(commands: _Commands, common: _Parser) -> None:
    parser = _command(commands, common, "bench", "bench:run", _BENCH, _BENCH_EPILOG)
    parser.add_argument(
        "--templates", metavar="DIR", help="a template directory (default: a generated corpus)"
    )
    _number(parser, "--count", _positive_int, 36, "N", "templates in the generated corpus")
    _number(
        parser,
        "--rounds",
        _positive_int,
        7,
        "N",
        "rounds of the hit paths and of the whole processes; the string loop takes 3 at most",
    )
    _server_options(parser, "memcached", "a memcached", "memcached")
    _server_options(parser, "redis", "a Redis", "redis-server")
    parser.add_argument(
        "--dir", metavar="DIR", help="where the filesystem caches live (default: a temp dir)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 3 rounds, 2 string iterations"
    )
    parser.add_argument(
        "--no-processes",
        action="store_true",
        help="leave out the whole-process run (new processes loading every template)",
    )
    parser.add_argument(
        "--string-iterations",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="iterations of the template-string loop (default 10; 0 leaves it out)",
    )
    parser.add_argument(
        "--tools",
        action="store_true",
        help="then the tools benchmark, quick: dbt, ansible-playbook, sphinx-build and mkdocs "
        "on generated projects, as they are and under 'tiered-bccache run' (those installed "
        "next to this interpreter: pip install 'tiered-bccache[bench-tools]', not editable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help=f"also draw a chart ({PLOT_HINT})")
    _add_progress_option(parser)
    # The key only signs the run's own entries: a random one unless one is named.
    parser.add_argument(
        "--secret-env",
        metavar="VAR",
        default=ENV_VAR,
        help="sign with the key in this environment variable (default: a random key)",
    )
    parser.add_argument("--secret-file", metavar="PATH", help="sign with the key in a file")
    parser.set_defaults(allow_unsigned=False)


def _server_options(parser: argparse.ArgumentParser, kind: str, what: str, binary: str) -> None:
    """``--KIND HOST:PORT`` or ``--no-KIND``, not both."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        f"--{kind}",
        metavar="HOST:PORT",
        help=f"{what} to use (default: start a private one if {binary} is on PATH)",
    )
    group.add_argument(f"--no-{kind}", action="store_true", help=f"leave the {kind} rows out")


_TUNE = """\
size the tiers from an access trace, or from a simulated Zipf workload

Compute the LRU hit-ratio curves of an access trace (written by TieredBytecodeCache(...,
trace=PATH) or cache.start_trace(PATH)) and recommend the smallest MemoryTier and
FileSystemTier bounds that reach --target of the best possible hit ratio. With
--simulate DIR instead of a trace, the workload is a Zipf draw over the templates of
DIR, each weighing its marshalled compiled code."""

_TUNE_EPILOG = f"""\
The FileSystemTier size is the byte recommendation plus each entry's header and MAC,
over the nine tenths of max_bytes that a prune leaves.

{_EXIT_STATUS}"""


_RUN = """\
run a command with every Jinja Environment it builds given the cache

Runs CMD with every Jinja Environment that it, and every Python process it starts
(subprocesses, multiprocessing and forked workers), builds without a bytecode cache
given one shared cache, and its from_string and compile_expression cached: dbt,
ansible-playbook, sphinx-build, mkdocs as they are. The tiers: --tiers, else
$TIERED_BCCACHE_TIERS, else memory over a private directory in your user cache
directory, so the second run is warm with no option. Strings are stored at first
sight. At the end, one line on stderr: templates and strings served from the cache,
compiled, and the time the compiles took (children included). The exit status is the
command's.

Without the wrapper: TIERED_BCCACHE_AUTO=1 CMD does the same (through the start-up hook
tiered_bccache.pth installed with the package), with no summary."""


# SPEC_HELP's lines of specs, without what run does not take: --tier, module:attribute.
_RUN_EPILOG = (
    "tier specs (in --tiers or $TIERED_BCCACHE_TIERS, whitespace-separated, fastest first):\n"
    + SPEC_HELP.partition("\n")[2].partition("\nor name")[0]
    + "\n\nexit status: the command's; 2 for a usage error."
)


def _add_run(commands: _Commands, common: _Parser) -> None:
    parser = _command(
        commands,
        common,
        "run",
        "run:run",
        _RUN,
        _RUN_EPILOG,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--tiers",
        metavar="SPECS",
        help="tier specs, whitespace-separated (default: memory and fs in the user cache dir)",
    )
    where.add_argument("--dir", metavar="DIR", help="memory and a filesystem tier in DIR")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no summary line at the end: the command replaces this process",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")


def _add_tune(commands: _Commands, common: _Parser) -> None:
    parser = _command(commands, common, "tune", "tune:run", _TUNE, _TUNE_EPILOG)
    parser.add_argument("trace", nargs="?", metavar="TRACE", help="a trace file")
    _number(
        parser, "--target", _share, 0.95, "SHARE", "share of the best possible hit ratio to reach"
    )
    parser.add_argument(
        "--simulate", metavar="DIR", help="simulate a Zipf workload over DIR's templates"
    )
    _number(parser, "--accesses", _positive_int, 100_000, "N", "lookups to simulate")
    _number(parser, "--zipf", _positive_float, 1.1, "S", "the Zipf exponent")
    _number(parser, "--seed", _non_negative_int, 0, "K", "random seed")
    parser.add_argument("--plot", metavar="FILE.png", help=f"draw the curves ({PLOT_HINT})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


_WARM = """\
compile every template of a source into every tier of a cache

Compile every template of SOURCE and write it through to every tier of the cache, in
parallel processes. SOURCE is a template directory, compiled with a default
jinja2.Environment and keyed with the path as given (its entries are hits for an
application whose environment is configured alike and whose loader reports the same
filenames), or module:attribute naming the application's jinja2.Environment (its
loader lists the templates, its settings go into the keys). The cache is CACHE or
--cache CACHE (module:attribute), or --tier specs; for a SOURCE module:attribute it
defaults to the cache that environment uses: 'tiered-bccache warm myapp.templating:env'
warms the application's own cache for its own settings. Templates that fail to compile
are listed at the end and do not stop the others. A memory tier lives in one process:
warming it has no lasting effect."""


def _add_warm(commands: _Commands, common: _Parser) -> None:
    parser = _command(commands, common, "warm", "warm:run", _WARM, _CACHE_EPILOG)
    parser.add_argument("source", metavar="SOURCE", help="a template directory or module:attribute")
    _add_cache_options(
        parser,
        what=f"{_TARGET_HELP} (default for a SOURCE module:attribute: its environment's cache)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=_cpu_count(),
        metavar="N",
        help=f"parallel processes (default: the CPU count, {_cpu_count()})",
    )
    parser.add_argument(
        "--extensions",
        metavar="EXT,...",
        help="only templates with these extensions (e.g. html,j2; default: every file)",
    )
    _add_progress_option(parser)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action="store_true", help="draw the progress bar even if stderr is no TTY"
    )


_STATS = """\
what each tier holds now, and the cache's counters

Show, per tier, what is stored now (a memory tier only for a cache named
module:attribute, as this process sees it; a filesystem tier's entries and bytes; a
memcached or redis tier's reachability, server statistics and namespace generation),
then the counters of cache.stats() in this process. A filesystem tier's directory that
does not exist is reported so, not created."""


def _add_stats(commands: _Commands, common: _Parser) -> None:
    parser = _command(commands, common, "stats", "inspect:run_stats", _STATS, _CACHE_EPILOG)
    _add_cache_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


_CLEAR = """\
empty every tier (memcached and redis by bumping their namespace generation)

Empty every tier of the cache: delete a filesystem tier's entries (a directory that does
not exist is left so), bump a memcached or redis tier's namespace generation (never
flush_all, FLUSHDB or KEYS: other applications may share the server; the old entries age
out). A memory tier lives in one process: clearing it here has no lasting effect."""


def _add_clear(commands: _Commands, common: _Parser) -> None:
    parser = _command(commands, common, "clear", "inspect:run_clear", _CLEAR, _CACHE_EPILOG)
    _add_cache_options(parser)
