"""The command line, run as a user runs it: ``python -m tiered_bccache`` in a subprocess,
with real directories, a real memcached, and real templates."""

from __future__ import annotations

import json
import os
import pty
import select
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from tests.conftest import SECRET, MemcachedServer, RedisServer, free_port, require_extra
from tests.test_procbench import ALL_CONTENDERS
from tiered_bccache import (
    FileSystemTier,
    MemcachedTier,
    MemoryTier,
    RedisTier,
    TieredBytecodeCache,
)
from tiered_bccache.benchkit.corpus import generate_corpus
from tiered_bccache.cli import main
from tiered_bccache.humanize import human_bytes
from tiered_bccache.secret import ENV_VAR

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("bench", "tune", "warm", "stats", "clear")


def run_cli(
    *args: str,
    cwd: Path | None = None,
    secret: bool = True,
    env: dict[str, str] | None = None,
    pythonpath: Sequence[Path] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tiered_bccache ARGS`` with the secret in its environment."""
    environ = dict(os.environ)
    inherited = [environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else []
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(REPO), *inherited])
    environ.pop(ENV_VAR, None)
    if secret:
        environ[ENV_VAR] = SECRET.decode()
    environ.update(env or {})
    # Bytes, decoded here: text mode would turn the progress bar's \r into \n.
    raw = subprocess.run(
        [sys.executable, "-m", "tiered_bccache", *args],
        cwd=cwd or REPO,
        env=environ,
        capture_output=True,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode()
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed run, checking that it is the only line and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tiered-bccache: error: "), result.stderr
    return lines[0]


@pytest.fixture
def templates(tmp_path: Path) -> tuple[Path, list[str]]:
    """A small generated corpus (layouts, macros, pages) in a directory of its own."""
    directory = tmp_path / "templates"
    names = generate_corpus(directory, count=8, seed=1, max_size=6 * 1024)
    return directory, names


def tier_args(fs: Path, memcached: MemcachedServer, prefix: str) -> list[str]:
    return [
        "--tier",
        "memory",
        "--tier",
        f"fs:{fs}",
        "--tier",
        f"memcached:{memcached.address};prefix={prefix}",
    ]


def load_all(cache: TieredBytecodeCache, directory: Path, names: list[str]) -> None:
    env = Environment(loader=FileSystemLoader(directory), bytecode_cache=cache, cache_size=0)
    for name in names:
        env.get_template(name)


# -- help ------------------------------------------------------------------------------------


def test_help_lists_every_command_and_each_has_its_own_help() -> None:
    """--help names the five commands; each command's --help exits 0 and shows its options."""
    top = run_cli("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
    options = ("--quick", "--simulate", "--jobs", "--json", "--tier")
    for command, option in zip(COMMANDS, options, strict=True):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert option in sub.stdout
    assert "memcached:host1:port,host2:port" in run_cli("stats", "--help").stdout


def test_main_returns_the_exit_status_instead_of_exiting(tmp_path: Path) -> None:
    """cli.main() returns an int (what python -m and the entry point exit with)."""
    assert main(["tune", str(tmp_path / "missing.trace")]) == 2


# -- warm, stats, clear ----------------------------------------------------------------------


def test_warm_then_stats_shows_the_entries_in_every_shared_tier(
    tmp_path: Path, templates: tuple[Path, list[str]], memcached: MemcachedServer, mc_prefix: str
) -> None:
    """warm in 2 processes fills fs and memcached; stats shows it; an app then compiles nothing."""
    directory, names = templates
    fs = tmp_path / "fs"
    warm = run_cli("warm", str(directory), *tier_args(fs, memcached, mc_prefix), "--jobs", "2")
    assert warm.returncode == 0, warm.stderr
    assert f"compiled {len(names)} of {len(names)} templates" in warm.stdout
    assert "2 processes" in warm.stdout
    assert "\r" not in warm.stderr  # no TTY, no --progress: no bar

    stats = run_cli("stats", *tier_args(fs, memcached, mc_prefix), "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    memory, filesystem, remote = report["tiers"]
    assert (memory["kind"], memory["entries"]) == ("memory", 0)
    assert (filesystem["entries"], filesystem["directory"]) == (len(names), str(fs))
    assert filesystem["bytes"] > 0
    assert remote["reachable"] is True and remote["generation"]
    assert remote["servers"][0]["curr_items"] >= len(names)
    assert set(report["counters"]) >= {"lookups", "hits", "misses", "tiers"}
    text = run_cli("stats", *tier_args(fs, memcached, mc_prefix))
    assert f"entries {len(names)}, " in text.stdout
    assert "namespace generation" in text.stdout

    app = TieredBytecodeCache([MemcachedTier(memcached.address, prefix=mc_prefix)], secret=SECRET)
    load_all(app, directory, names)
    assert app.stats().compiles == 0
    assert app.stats().tiers[0].hits == len(names)
    app.close()


def test_clear_then_stats_shows_no_entries(
    tmp_path: Path, templates: tuple[Path, list[str]], memcached: MemcachedServer, mc_prefix: str
) -> None:
    """clear empties fs and bumps memcached's generation: stats shows none, an app misses."""
    directory, names = templates
    fs = tmp_path / "fs"
    tiers = tier_args(fs, memcached, mc_prefix)
    assert run_cli("warm", str(directory), *tiers, "--jobs", "1").returncode == 0
    before = json.loads(run_cli("stats", *tiers, "--json").stdout)["tiers"][2]["generation"]

    clear = run_cli("clear", *tiers)
    assert clear.returncode == 0, clear.stderr
    assert f"cleared filesystem:{fs}: {len(names)} entries" in clear.stdout
    assert f"namespace generation {before} -> " in clear.stdout

    report = json.loads(run_cli("stats", *tiers, "--json").stdout)
    assert report["tiers"][1]["entries"] == 0
    assert report["tiers"][2]["generation"] != before
    app = TieredBytecodeCache([MemcachedTier(memcached.address, prefix=mc_prefix)], secret=SECRET)
    load_all(app, directory, names)
    assert app.stats().tiers[0].hits == 0
    app.close()


def test_warm_lists_templates_that_fail_and_compiles_the_others(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """Broken templates are listed one line each; the others are still stored; exit 1."""
    directory, names = templates
    (directory / "broken.html").write_text("<p>\n{% if %}oops{% endif %}\n")
    (directory / "unclosed.html").write_text("{% for x in y %}")
    fs = tmp_path / "fs"
    result = run_cli("warm", str(directory), "--tier", f"fs:{fs}", "--jobs", "2")
    assert result.returncode == 1
    assert f"compiled {len(names)} of {len(names) + 2} templates" in result.stdout
    assert "failed to compile (2):" in result.stdout
    assert "  broken.html: TemplateSyntaxError: " in result.stdout
    assert "(line 2)" in result.stdout
    assert "  unclosed.html: TemplateSyntaxError: " in result.stdout
    assert "Traceback" not in result.stderr
    assert FileSystemTier(fs).size()[0] == len(names)


def test_warm_exits_1_when_a_tier_fails_to_store_an_entry(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """An entry a tier cannot store (a directory squats its file) is reported, exit 1."""
    directory, names = templates
    fs = FileSystemTier(tmp_path / "fs")
    env = Environment(loader=FileSystemLoader(directory))
    _, filename, _ = env.loader.get_source(env, names[0])  # type: ignore[union-attr]
    key = TieredBytecodeCache([MemoryTier()]).template_key(env, names[0], filename)
    os.makedirs(os.path.join(fs.path(key), "squatter"))
    result = run_cli("warm", str(directory), "--tier", f"fs:{fs.directory}", "--jobs", "1")
    assert result.returncode == 1
    assert f"compiled {len(names)} of {len(names)} templates" in result.stdout
    assert f"error: {fs.name} failed to store 1 template\n" in result.stderr
    stored = [p for p in Path(fs.directory).glob("*.tbc") if p.is_file()]
    assert len(stored) == len(names) - 1


def test_warm_with_the_applications_environment_serves_the_applications_keys(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """Warming the app's own Environment (module:attribute) gives keys its first loads hit."""
    directory, names = templates
    fs = tmp_path / "appfs"
    (tmp_path / "myapp.py").write_text(
        "from jinja2 import Environment, FileSystemLoader\n"
        "from tiered_bccache import TieredBytecodeCache, MemoryTier, FileSystemTier\n"
        f"cache = TieredBytecodeCache([MemoryTier(64), FileSystemTier({str(fs)!r})])\n"
        f"env = Environment(loader=FileSystemLoader({str(directory)!r}), bytecode_cache=cache,"
        " autoescape=True, cache_size=0)\n"
    )
    warm = run_cli("warm", "myapp:env", "--cache", "myapp:env", "--jobs", "2", cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert f"compiled {len(names)} of {len(names)}" in warm.stdout
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import myapp\n"
            "for n in myapp.env.list_templates(): myapp.env.get_template(n)\n"
            "s = myapp.cache.stats(); print(s.compiles, s.tiers[1].hits)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), ENV_VAR: SECRET.decode()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.split() == ["0", str(len(names))], check.stderr


def test_warm_signs_with_the_key_of_secret_file(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """--secret-file's key signs the entries: a cache with that key hits, another rejects."""
    directory, names = templates
    key = b"a-key-from-a-file-0123456789"
    (tmp_path / "key").write_bytes(key + b"\n")
    fs = tmp_path / "fs"
    result = run_cli(
        "warm",
        str(directory),
        "--tier",
        f"fs:{fs}",
        "--secret-file",
        str(tmp_path / "key"),
        secret=False,
    )
    assert result.returncode == 0, result.stderr
    right = TieredBytecodeCache([FileSystemTier(fs)], secret=key)
    load_all(right, directory, names)
    assert right.stats().tiers[0].hits == len(names)
    wrong = TieredBytecodeCache([FileSystemTier(fs)], secret=SECRET)
    load_all(wrong, directory, names)
    assert wrong.stats().tiers[0].rejected_mac == len(names)


def test_progress_bar_is_drawn_on_stderr_with_progress(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """--progress draws a \\r-updated bar on stderr, leaving stdout to the result."""
    directory, names = templates
    result = run_cli(
        "warm", str(directory), "--tier", f"fs:{tmp_path / 'fs'}", "--jobs", "1", "--progress"
    )
    assert result.returncode == 0, result.stderr
    assert "\rwarm" in result.stderr
    assert f"{len(names)}/{len(names)}" in result.stderr
    assert "\r" not in result.stdout


def test_progress_bar_is_drawn_when_stderr_is_a_terminal(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """With stderr on a terminal (a pty here) the bar is drawn without --progress."""
    directory, names = templates
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "tiered_bccache",
                "warm",
                str(directory),
                "--jobs",
                "1",
                "--tier",
                f"fs:{tmp_path / 'fs'}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        drawn = b""
        # Bounded: a stray process still holding the terminal must not hang the test.
        for _ in range(10_000):
            ready, _, _ = select.select([leader], [], [], 10)
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal has no writer left and nothing buffered
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert process.returncode == 0
    assert b"\rwarm" in drawn
    assert f"{len(names)}/{len(names)}".encode() in drawn
    assert b"\r" not in process.stdout


def test_stats_of_an_application_cache_shows_its_memory_tier(tmp_path: Path) -> None:
    """stats of module:attribute shows the memory tier and counters as this process has them."""
    (tmp_path / "webapp.py").write_text(
        "from jinja2 import DictLoader, Environment\n"
        "from tiered_bccache import TieredBytecodeCache, MemoryTier, FileSystemTier\n"
        f"cache = TieredBytecodeCache([MemoryTier(7), FileSystemTier({str(tmp_path / 'fs')!r})])\n"
        "env = Environment(loader=DictLoader({'a.html': '{{ 1 }}'}), bytecode_cache=cache)\n"
        "env.get_template('a.html')\n"
    )
    result = run_cli("stats", "webapp:env", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    memory = report["tiers"][0]
    assert (memory["entries"], memory["max_entries"], memory["from_application"]) == (1, 7, True)
    assert report["tiers"][1]["entries"] == 1
    assert (report["counters"]["lookups"], report["counters"]["compiles"]) == (1, 1)


def test_a_user_tier_that_describes_itself_shows_in_stats_and_clear(tmp_path: Path) -> None:
    """A ByteTier subclass of the application's, with its own describe(): stats prints its
    report (all of it in --json, the keys after name and kind in the text), and clear
    says what it held from the entries and bytes it reports."""
    (tmp_path / "webapp.py").write_text(
        "from jinja2 import DictLoader, Environment\n"
        "from tiered_bccache import ByteTier, TieredBytecodeCache\n"
        "class DictTier(ByteTier):\n"
        "    name = 'dict'\n"
        "    def __init__(self): self.data = {}\n"
        "    def get(self, key): return self.data.get(key)\n"
        "    def set(self, key, value): self.data[key] = value\n"
        "    def delete(self, key): self.data.pop(key, None)\n"
        "    def clear(self): self.data.clear()\n"
        "    def describe(self):\n"
        "        size = sum(map(len, self.data.values()))\n"
        "        return {'name': self.name, 'kind': 'dict', 'entries': len(self.data), "
        "'bytes': size}\n"
        f"cache = TieredBytecodeCache([DictTier()], secret={SECRET!r})\n"
        "env = Environment(loader=DictLoader({'a.html': '{{ 1 }}'}), bytecode_cache=cache)\n"
        "env.get_template('a.html')\n"
    )
    result = run_cli("stats", "webapp:env", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (tier,) = json.loads(result.stdout)["tiers"]
    assert (tier["name"], tier["kind"], tier["entries"]) == ("dict", "dict", 1)
    size = tier["bytes"]
    assert size > 0
    text = run_cli("stats", "webapp:env", cwd=tmp_path).stdout
    assert f"1. dict\n   entries 1, bytes {size}\n" in text
    clear = run_cli("clear", "webapp:env", cwd=tmp_path)
    assert clear.returncode == 0, clear.stderr
    assert clear.stdout == f"cleared dict: 1 entry, {human_bytes(size)}\n"


# -- tune ------------------------------------------------------------------------------------


def test_tune_recommends_sizes_from_a_trace_of_a_real_cache(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """A real cache's trace gives MemoryTier/FileSystemTier sizes reaching the target share."""
    directory, names = templates
    trace = tmp_path / "trace.txt"
    cache = TieredBytecodeCache([MemoryTier(3), FileSystemTier(tmp_path / "fs")], trace=trace)
    env = Environment(loader=FileSystemLoader(directory), bytecode_cache=cache, cache_size=0)
    for i in range(300):
        env.get_template(names[(i * i) % len(names)] if i % 3 else names[-1])
    cache.close()

    text = run_cli("tune", str(trace))
    assert text.returncode == 0, text.stderr
    for call in ("MemoryTier(max_entries=", "MemoryTier(max_bytes=", "FileSystemTier(max_bytes="):
        assert call in text.stdout
    assert "--tier memory:" in text.stdout

    result = run_cli("tune", str(trace), "--json", "--target", "0.9")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rec = report["recommendation"]
    assert report["accesses"] >= 300
    assert 1 <= rec["memory_max_entries"] <= report["distinct_keys"]
    assert rec["memory_max_entries_hit_ratio"] >= 0.9 * rec["best_hit_ratio"]
    assert rec["filesystem_max_bytes"] > rec["memory_max_bytes"] >= report["largest_entry"]


def test_tune_simulates_a_zipf_workload_over_a_directory(
    templates: tuple[Path, list[str]],
) -> None:
    """--simulate draws --accesses Zipf lookups over DIR's templates; a seed repeats exactly."""
    directory, names = templates
    args = ("tune", "--simulate", str(directory), "--accesses", "3000", "--zipf", "1.2")
    first = run_cli(*args, "--seed", "4", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["accesses"] == 3000
    assert 1 < report["distinct_keys"] <= len(names)
    assert report["largest_entry"] > 0
    assert run_cli(*args, "--seed", "4", "--json").stdout == first.stdout
    text = run_cli(*args)
    assert text.returncode == 0
    assert "recommended for 95% of the best" in text.stdout


# -- bench -----------------------------------------------------------------------------------


def test_bench_prints_the_table_and_writes_json(
    tmp_path: Path, memcached: MemcachedServer, redis_server: RedisServer
) -> None:
    """bench --quick prints the table on stdout, the bar on stderr, and writes --json."""
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        "--quick",
        "--count",
        "3",
        "--memcached",
        memcached.address,
        "--redis",
        redis_server.address,
        "--dir",
        str(tmp_path / "work"),
        "--json",
        str(out),
        "--progress",
    )
    assert result.returncode == 0, result.stderr
    for contender in ("compile", "jinja-fs", "memory", "fs", "memcached", "plain-redis", "redis"):
        assert f"\n{contender} " in result.stdout
    assert "\rrounds" in result.stderr
    report = json.loads(out.read_text())
    assert set(report["contenders"]) >= {"memory", "fs", "memcached", "plain-redis", "redis"}
    assert "redis/plain-redis" in result.stdout
    # The whole-process table, with every contender timed in every round.
    assert "whole processes: 3 templates loaded by a new process" in result.stdout
    wall = report["processes"]["wall_s"]
    assert set(wall) == ALL_CONTENDERS
    assert all(len(times) == 3 and min(times) > 0 for times in wall.values())
    # The template-string loop, its outputs checked equal to plain Jinja's first.
    assert "template strings: 2 iterations" in result.stdout
    assert report["strings"]["in_process_s"]["ours"]


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "--quick", "--no-memcached"),
        ("tune", "--simulate", "."),
    ],
    ids=["bench", "tune"],
)
def test_plot_without_matplotlib_names_the_extra(tmp_path: Path, args: tuple[str, ...]) -> None:
    """--plot without matplotlib fails at once with exit 2 and the pip command to run."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_cli(*args, "--plot", str(tmp_path / "x.png"), pythonpath=[shadow.parent])
    assert result.returncode == 2
    assert "pip install 'tiered-bccache[plot]'" in one_line_error(result)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_draws_a_png_when_matplotlib_is_installed(
    tmp_path: Path, templates: tuple[Path, list[str]]
) -> None:
    """With matplotlib, tune --plot writes a whole PNG image of a readable size."""
    require_extra("matplotlib", "plot")
    directory, _ = templates
    png = tmp_path / "curves.png"
    result = run_cli("tune", "--simulate", str(directory), "--accesses", "500", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE), data[:16]
    # The first chunk is IHDR (width and height, big-endian); the last is IEND.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300, (width, height)
    assert data.endswith(b"IEND\xaeB`\x82")
    # Two panels of curves and labels weigh about 45 kB; the same two panels empty, 10 kB.
    assert len(data) > 20_000, len(data)


# -- errors ----------------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding an application module with objects of every wrong kind."""
    (tmp_path / "badapp.py").write_text(
        "from jinja2 import Environment\nplain = Environment()\nnumber = 3\n"
    )
    (tmp_path / "crashing.py").write_text("raise RuntimeError('database is down')\n")
    (tmp_path / "bad.trace").write_text("not a trace\n")
    return tmp_path


USAGE_ERRORS = [
    (["bench", "--count", "0"], "argument --count: '0' must be at least 1"),
    (["bench", "--rounds", "many"], "argument --rounds: 'many' is not an integer"),
    (["bench", "--memcached", "nohost"], "'nohost' is not 'host:port'"),
    (["bench", "--templates", "/nonexistent/dir"], "--templates /nonexistent/dir: not a directory"),
    (["tune", "--target", "2"], "argument --target: '2' must be in (0, 1]"),
    (["tune"], "give a TRACE file or --simulate DIR"),
    (["tune", "missing.trace"], "trace file missing.trace does not exist"),
    (["tune", "--simulate", "/nonexistent/dir"], "--simulate /nonexistent/dir: not a directory"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["stats"], "no cache given"),
    (["stats", "--tier", "nosuch:x"], "unknown kind 'nosuch'"),
    (["stats", "--tier", "redis:x"], "expected redis://HOST:PORT/DB"),
    (["stats", "--tier", "memory:bytes=12XB"], "'12XB' is not a size"),
    (["stats", "--tier", "memcached:localhost"], "'localhost' is not 'host:port'"),
    (["stats", "memory:512"], "looks like a tier spec: pass it as --tier memory:512"),
    (["stats", "surely_not_a_module:cache"], "cannot import 'surely_not_a_module'"),
    (["stats", "crashing:cache"], "RuntimeError: database is down"),
    (["stats", "badapp:number"], "'badapp:number' is a int, not a TieredBytecodeCache"),
    (["stats", "badapp:plain"], "bytecode_cache is None, not a TieredBytecodeCache"),
    (["stats", "badapp:nothing"], "has no attribute 'nothing'"),
    (["clear", "badapp:plain", "--tier", "memory"], "not both"),
    (["stats", "badapp:plain", "--allow-unsigned"], "--allow-unsigned cannot apply to"),
    (["stats", "--tier", "memory", "--secret-env", "NO_SUCH_VAR"], "NO_SUCH_VAR: the variable"),
    (["stats", "--tier", "memory", "--secret-file", "/nonexistent/key"], "cannot read"),
    (["warm", "nowhere", "--tier", "memory"], "neither a directory nor module:attribute"),
    (["warm", "badapp:number", "--tier", "memory"], "is a int, not a jinja2.Environment"),
]


@pytest.mark.parametrize(
    ("args", "fragment"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_usage_and_configuration_errors_exit_2_with_one_line(
    app_dir: Path, args: list[str], fragment: str
) -> None:
    """A bad argument, spec, target or input file: one error line naming it, exit 2."""
    result = run_cli(*args, cwd=app_dir)
    assert result.returncode == 2, result.stderr
    assert fragment in one_line_error(result)


def test_memcached_without_a_secret_exits_2_and_says_how_to_give_one() -> None:
    """A memcached tier with no key is refused, and the message names every way out."""
    result = run_cli("stats", "--tier", f"memcached:127.0.0.1:{free_port()}", secret=False)
    assert result.returncode == 2
    line = one_line_error(result)
    assert f"${ENV_VAR}" in line and "--secret-file" in line and "--allow-unsigned" in line


@pytest.mark.parametrize("command", ["stats", "clear", "warm"])
def test_an_unreachable_memcached_exits_1_with_one_line(
    command: str, templates: tuple[Path, list[str]]
) -> None:
    """stats, clear and warm against a server nobody listens on: one line, exit 1."""
    address = f"127.0.0.1:{free_port()}"
    source = [str(templates[0])] if command == "warm" else []
    result = run_cli(command, *source, "--tier", f"memcached:{address}")
    assert result.returncode == 1
    assert f"memcached:{address} is unreachable: ConnectionRefusedError" in one_line_error(result)


def test_stats_of_a_cluster_with_a_dead_server_shows_each_server(
    memcached: MemcachedServer, mc_prefix: str
) -> None:
    """stats of a two-server tier with one dead shows the live one's stats, names the dead one."""
    dead = f"127.0.0.1:{free_port()}"
    spec = f"memcached:{memcached.address},{dead};prefix={mc_prefix}"
    result = run_cli("stats", "--tier", spec)
    assert result.returncode == 1
    assert f"server {memcached.address} (the whole server, every prefix): curr_items" in (
        result.stdout
    )
    assert f"server {dead}: unreachable: ConnectionRefusedError" in result.stdout
    assert f"is unreachable: {dead}: ConnectionRefusedError" in one_line_error(result)


def test_bench_against_an_unreachable_memcached_exits_1() -> None:
    """bench --memcached checks the server before the run."""
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("bench", "--quick", "--memcached", address)
    assert result.returncode == 1
    assert f"memcached at {address} is unreachable" in one_line_error(result)


def test_a_malformed_trace_exits_1_naming_the_line(app_dir: Path) -> None:
    """A file that is not a trace: one line with path:line and what is wrong, exit 1."""
    result = run_cli("tune", "bad.trace", cwd=app_dir)
    assert result.returncode == 1
    assert "malformed trace: bad.trace:1: expected the header" in one_line_error(result)


def test_an_empty_trace_exits_1(tmp_path: Path) -> None:
    """A trace with its header and no lookup has nothing to size from: one line, exit 1."""
    (tmp_path / "empty.trace").write_text("# tiered_bccache trace v1\n")
    result = run_cli("tune", "empty.trace", cwd=tmp_path)
    assert result.returncode == 1
    assert "holds no lookups" in one_line_error(result)


def test_debug_shows_the_traceback(app_dir: Path) -> None:
    """--debug re-raises, before or after the command name."""
    for args in (["--debug", "stats", "badapp:number"], ["stats", "badapp:number", "--debug"]):
        result = run_cli(*args, cwd=app_dir)
        assert result.returncode != 0
        assert "Traceback" in result.stderr
        assert "SpecError" in result.stderr


# -- redis -----------------------------------------------------------------------------------


def test_warm_stats_clear_with_a_redis_tier(
    tmp_path: Path, templates: tuple[Path, list[str]], redis_server: RedisServer
) -> None:
    """warm fills a redis:// tier; stats shows the server's figures and the namespace
    generation; clear bumps it, and an application then misses."""
    directory, names = templates
    prefix = "cli" + os.urandom(6).hex()
    tiers = ["--tier", "memory", "--tier", f"{redis_server.url};prefix={prefix}"]
    warm = run_cli("warm", str(directory), *tiers, "--jobs", "1")
    assert warm.returncode == 0, warm.stderr
    report = json.loads(run_cli("stats", *tiers, "--json").stdout)
    remote = report["tiers"][1]
    assert (remote["kind"], remote["reachable"], remote["prefix"]) == ("redis", True, prefix)
    before = remote["generation"]
    (server,) = remote["servers"]
    assert server["keys"] >= len(names) and server["used_memory"] > 0
    assert {"maxmemory", "evicted_keys", "keyspace_hits", "keyspace_misses"} <= set(server)
    text = run_cli("stats", *tiers)
    assert f"namespace generation {before}" in text.stdout and "used_memory" in text.stdout

    clear = run_cli("clear", *tiers)
    assert clear.returncode == 0, clear.stderr
    assert f"namespace generation {before} -> {int(before) + 1}" in clear.stdout
    app = TieredBytecodeCache([RedisTier(redis_server.url, prefix=prefix)], secret=SECRET)
    load_all(app, directory, names)
    assert app.stats().tiers[0].hits == 0


def test_stats_and_clear_of_an_unreachable_redis_fail_in_one_line() -> None:
    """A redis tier nobody answers: stats and clear exit 1 with one line naming it."""
    tiers = ["--tier", f"redis://127.0.0.1:{free_port()}/0"]
    for command in ("stats", "clear"):
        result = run_cli(command, *tiers)
        assert result.returncode == 1
        assert "is unreachable" in one_line_error(result)


def test_a_redis_url_given_as_the_cache_is_pointed_to_tier() -> None:
    """A redis URL in the cache's place is a spec given without --tier: say so."""
    result = run_cli("stats", "redis://127.0.0.1:6379/0")
    assert result.returncode == 2
    assert "pass it as --tier redis://127.0.0.1:6379/0" in one_line_error(result)


def test_stats_and_clear_of_a_sqlite_tier_need_no_key(tmp_path: Path) -> None:
    """An SQLite tier lives on this host: stats and clear, which read no entry, need no
    MAC key for it (as for memory and fs), and show what its describe() reports."""
    from tiered_bccache.tiers.sqlite import SQLiteTier

    path = tmp_path / "cache.db"
    tier = SQLiteTier(path)
    tier.set("a", b"x" * 100)
    tier.close()
    stats = run_cli("stats", "--tier", f"sqlite:{path}", "--json", secret=False)
    assert stats.returncode == 0, stats.stderr
    (report,) = json.loads(stats.stdout)["tiers"]
    assert (report["kind"], report["entries"], report["bytes"]) == ("sqlite", 1, 100)
    cleared = run_cli("clear", "--tier", f"sqlite:{path}", secret=False)
    assert cleared.returncode == 0, cleared.stderr
    assert "1 entry" in cleared.stdout
    assert SQLiteTier(path).size() == (0, 0)


def test_a_shared_tier_without_a_key_is_refused_naming_the_kinds() -> None:
    result = run_cli("stats", "--tier", "memcached:127.0.0.1:1", secret=False)
    assert result.returncode == 2
    assert "memcached, redis or sqlite tier is shared and needs a MAC key" in one_line_error(result)
