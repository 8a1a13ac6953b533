"""The whole-process benchmark: what a new process pays to load templates.

A bytecode cache earns its place when a process starts (worker recycling, CLI tools,
serverless, build tools) and when applications build Environments often; a benchmark
that keeps one Environment warm hides that cost. Here every sample is a new Python
process that imports what it needs, builds its cache and an Environment, and loads every
template of the corpus once (``get_template``), timed whole from spawn to exit by the
parent, in interleaved rounds with a rotating order. Contenders:

=========== ============================================================================
python      the process with Jinja imported and nothing loaded (Python's floor)
floor       bare files of marshalled code, read whole and unmarshalled, no checks: the
            physical limit of a cache on disk (its code imports nothing but Jinja)
floor-signed the floor plus the two checks a shared cache cannot skip, with the entry
            format's algorithms: a keyed BLAKE3 MAC of the bytes read and a BLAKE3
            digest of the source (to notice an edit)
none        no bytecode cache: every template compiled
jinja-fs    Jinja's ``FileSystemBytecodeCache``, warm
jinja-mc    Jinja's ``MemcachedBytecodeCache`` over pymemcache, warm
ours-fs     ``[MemoryTier(), FileSystemTier(dir)]``, warm on disk
ours-mc     ``[MemoryTier(), MemcachedTier(addr)]``, warm in memcached
=========== ============================================================================

Also measured: the import cost (``import tiered_bccache`` against ``import jinja2``,
processes doing nothing else) and, inside one process, what the first template of a new
Environment costs (the fingerprint, then a memory-tier hit) against a dict of ready code.

Python files are compiled to ``__pycache__`` first, as ``pip install`` does, so that no
contender pays for compiling its own modules.
"""

from __future__ import annotations

import compileall
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..humanize import counted
from .timing import RoundRatios, Target, ratios, rotated, round_ratios, target_table

__all__ = ["ProcessReport", "run_process_bench"]

#: The child: one process of one contender. Kept free of this package's imports for the
#: contenders that do not use it, so that they pay only for what they use (the signed
#: floor gets the entry format's source_bytes as text, below).
CHILD = r"""
import sys
SOURCE_BYTES
kind, templates, work, names_file = sys.argv[1:5]
import jinja2
from jinja2 import Environment, FileSystemLoader
names = open(names_file, encoding="utf-8").read().split("\n")
cache = None
if kind == "python":
    raise SystemExit(0)
if kind == "import-ours":
    import tiered_bccache
    raise SystemExit(0)
if kind == "floor":
    import marshal, os
    from jinja2.bccache import Bucket, BytecodeCache

    class Floor(BytecodeCache):
        def get_bucket(self, environment, name, filename, source):
            bucket = Bucket(environment, name, "")
            path = os.path.join(work, "floor", name.replace("/", "__"))
            try:
                with open(path, "rb") as f:
                    bucket.code = marshal.loads(f.read())
            except FileNotFoundError:
                pass
            return bucket

        def set_bucket(self, bucket):
            path = os.path.join(work, "floor", bucket.key.replace("/", "__"))
            with open(path, "wb") as f:
                f.write(marshal.dumps(bucket.code))

    cache = Floor()
elif kind == "floor-signed":
    import hmac, marshal, os
    from blake3 import blake3
    from jinja2.bccache import Bucket, BytecodeCache
    mac_base = blake3(key=blake3(bytes.fromhex(os.environ["TIERED_BCCACHE_SECRET"]),
                                 derive_key_context="floor").digest())

    def mac(data):
        h = mac_base.copy()
        h.update(data)
        return h.digest()

    class SignedFloor(BytecodeCache):
        def get_bucket(self, environment, name, filename, source):
            bucket = Bucket(environment, name, "")
            path = os.path.join(work, "floor-signed", name.replace("/", "__"))
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return bucket
            view = memoryview(data)
            if hmac.compare_digest(mac(view[:-32]), view[-32:]) and (
                blake3(source_bytes(source)).digest() == view[-64:-32]
            ):
                bucket.code = marshal.loads(view[:-64])
            return bucket

        def set_bucket(self, bucket):
            source = bucket.environment.loader.get_source(bucket.environment, bucket.key)[0]
            body = marshal.dumps(bucket.code) + blake3(source_bytes(source)).digest()
            path = os.path.join(work, "floor-signed", bucket.key.replace("/", "__"))
            with open(path, "wb") as f:
                f.write(body + mac(body))

    cache = SignedFloor()
elif kind == "jinja-fs":
    cache = jinja2.FileSystemBytecodeCache(work + "/jinja-fs")
elif kind == "jinja-mc":
    from pymemcache.client.base import PooledClient
    host, port = sys.argv[5].rsplit(":", 1)
    client = PooledClient((host, int(port)), connect_timeout=0.05, timeout=0.05,
                          no_delay=True, default_noreply=False)
    cache = jinja2.MemcachedBytecodeCache(client, prefix=sys.argv[6] + "j/")
elif kind == "ours-fs":
    from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(work + "/ours-fs")])
elif kind == "ours-mc":
    from tiered_bccache import MemcachedTier, MemoryTier, TieredBytecodeCache
    cache = TieredBytecodeCache([MemoryTier(), MemcachedTier(sys.argv[5], prefix=sys.argv[6])])
env = Environment(loader=FileSystemLoader(templates), bytecode_cache=cache)
for name in names:
    env.get_template(name)
if len(sys.argv) > 7 and sys.argv[7] == "check":
    import hashlib, marshal
    digest = hashlib.sha256()
    for name in names:
        template = env.get_template(name)
        funcs = [template.root_render_func, *template.blocks.values()]
        for func in funcs:
            digest.update(marshal.dumps(func.__code__, 2))
    print(digest.hexdigest())
"""

#: Inside one process: the first template of a new Environment.
NEW_ENV = r"""
import json, sys, time
templates, work, names_file = sys.argv[1:4]
import jinja2, jinja2.ext
from jinja2 import Environment, FileSystemLoader
from jinja2.bccache import Bucket, BytecodeCache
from tiered_bccache import MemoryTier, TieredBytecodeCache
name = open(names_file, encoding="utf-8").read().split("\n")[0]
perf = time.perf_counter_ns

class DictFloor(BytecodeCache):
    def __init__(self):
        self.code = {}
    def get_bucket(self, environment, name, filename, source):
        bucket = Bucket(environment, name, "")
        bucket.code = self.code.get(name)
        return bucket
    def set_bucket(self, bucket):
        self.code[bucket.key] = bucket.code

def make(cache):
    return Environment(loader=FileSystemLoader(templates), bytecode_cache=cache,
                       extensions=["jinja2.ext.i18n"])

ours = TieredBytecodeCache([MemoryTier()])
floor = DictFloor()
# The first Environment of the process: its fingerprint costs the most.
env = make(ours)
started = perf()
ours.fingerprint(env)
first = perf() - started
env.get_template(name)
make(floor).get_template(name)
fingerprint, ours_ns, floor_ns = [], [], []
for i in range(int(sys.argv[4])):
    env = make(ours)
    started = perf()
    ours.fingerprint(env)
    fingerprint.append(perf() - started)
    env = make(ours)
    started = perf()
    env.get_template(name)
    ours_ns.append(perf() - started)
    env = make(floor)
    started = perf()
    env.get_template(name)
    floor_ns.append(perf() - started)
print(json.dumps({"first_fingerprint_ns": first, "fingerprint_ns": fingerprint,
                  "ours_ns": ours_ns, "floor_ns": floor_ns}))
"""


def process_targets(templates: int) -> tuple[Target, ...]:
    """The goals for a corpus of ``templates`` (the issue's, for the filesystem tier: at
    50 templates the process is mostly Python and Jinja starting, at 500 the
    per-template cost shows)."""
    many = templates >= 500
    return (
        Target(
            "new process, warm [memory, fs] vs Jinja's FileSystemBytecodeCache",
            "ours-fs",
            "jinja-fs",
            0.75 if many else 0.97,
        ),
        Target(
            "new process, warm [memory, fs] vs bare marshal files (floor)",
            "ours-fs",
            "floor",
            1.10,
        ),
        Target(
            "new process, warm [memory, fs] vs the authenticated floor",
            "ours-fs",
            "floor-signed",
            1.07,
        ),
        Target(
            "new process, warm [memory, memcached] vs Jinja's MemcachedBytecodeCache",
            "ours-mc",
            "jinja-mc",
            1.0,
        ),
        Target(
            "import tiered_bccache vs import jinja2 (whole processes)",
            "import-ours",
            "python",
            1.1,
        ),
    )


class ProcessReport(NamedTuple):
    """Wall and CPU seconds per contender and round, plus the new-Environment figures."""

    templates: int
    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    new_env: dict[str, Any]
    notes: list[str]

    def ratio(self, a: str, b: str, cpu: bool = False) -> RoundRatios | None:
        """The time of ``a`` over that of ``b`` per round, over rounds (None when either
        contender did not run)."""
        times = self.cpu if cpu else self.wall
        if a not in times or b not in times:
            return None
        return round_ratios(times[a], times[b])

    def format_table(self) -> str:
        """The human-readable report."""
        rounds = len(next(iter(self.wall.values())))
        lines = [
            f"whole processes: {counted(self.templates, 'template')} loaded by a new process, "
            f"{counted(rounds, 'round')} (median wall time; python = Jinja imported, nothing "
            "loaded)",
            "",
            f"{'contender':<13} {'wall':>9} {'cpu':>9} {'vs jinja-fs':>12} {'vs floor':>9}",
        ]
        for c in self.wall:
            vs = [self.ratio(c, "jinja-fs"), self.ratio(c, "floor")]
            cells = [r.cell() if r else "" for r in vs]
            lines.append(
                f"{c:<13} {statistics.median(self.wall[c]) * 1000:>7.1f}ms "
                f"{statistics.median(self.cpu[c]) * 1000:>7.1f}ms {cells[0]:>12} {cells[1]:>9}"
            )
        lines += ["", *target_table(process_targets(self.templates), self.ratio, digits=3)]
        r = self.ratio("import-ours", "python", cpu=True)
        if r is not None:
            lines.append(f"  (in CPU time: {r.summary(3)})")
        loads = [
            c for c in ("ours-fs", "jinja-fs", "floor-signed", "floor", "none") if c in self.wall
        ]
        if "python" in self.wall and len(loads) > 1:
            lines += ["", "what loading the templates adds to the process (minus python):"]
            base = self.wall["python"]
            for c in loads:
                added = [max(w - b, 0.0) for w, b in zip(self.wall[c], base, strict=True)]
                lines.append(f"  {c:<10} {statistics.median(added) * 1000:>8.1f} ms")
        if self.new_env:
            ne = self.new_env
            lines += [
                "",
                "a new Environment (default filters and tests + jinja2.ext.i18n), in-process:",
                f"  fingerprint of the first Environment of the process  "
                f"{ne['first_fingerprint_us']:>7.0f} us   (target <= 300 us)",
                f"  fingerprint of a new Environment configured alike    "
                f"{ne['fingerprint_us']:>7.1f} us   (target <= 10 us)",
                f"  its first template, memory-tier hit vs dict floor    "
                f"{ne['first_hit_ratio']:>7.2f}x    (target <= 1.5x)",
            ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "templates": self.templates,
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "ratios": {
                f"{t.numerator}/{t.denominator}": None if r is None else r.as_dict()
                for t in process_targets(self.templates)
                for r in [self.ratio(t.numerator, t.denominator)]
            },
            "new_environment": self.new_env,
            "notes": self.notes,
        }


def _spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` to completion; (wall seconds, CPU seconds of the child)."""
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env)
    try:
        _, status, usage = os.wait4(pid, 0)
    except BaseException:
        # Interrupted (Ctrl-C, or SIGTERM turned into an exception by the command line):
        # the child must not outlive the run that started it.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    wall = time.perf_counter() - started
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(argv[:3])} (status {status})")
    return wall, usage.ru_utime + usage.ru_stime


def run_process_bench(
    templates: str,
    names: Sequence[str],
    work: str,
    *,
    secret: bytes,
    memcached: str | None,
    rounds: int = 7,
    compile_rounds: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> ProcessReport:
    """Run the whole-process benchmark over the templates ``names`` of directory
    ``templates`` (every one must compile), using ``work`` for the caches."""
    import tiered_bccache

    notes: list[str] = []
    package = os.path.dirname(tiered_bccache.__file__)
    # As pip install does: no child compiles this package's modules on import.
    compileall.compile_dir(package, quiet=1)
    for sub in ("floor", "floor-signed", "jinja-fs", "ours-fs"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    child = os.path.join(work, "child.py")
    with open(child, "w", encoding="utf-8") as f:
        f.write(_child_script())
    names_file = os.path.join(work, "names.txt")
    with open(names_file, "w", encoding="utf-8") as f:
        f.write("\n".join(names))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["TIERED_BCCACHE_SECRET"] = secret.hex()
    prefix = "pb" + os.urandom(4).hex()
    contenders = ["python", "import-ours", "floor", "floor-signed", "jinja-fs", "ours-fs"]
    if compile_rounds:
        contenders.insert(2, "none")
    if memcached is not None:
        contenders += ["jinja-mc", "ours-mc"]
    else:
        notes.append("no memcached: the memcached contenders are missing")

    def argv(kind: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            child,
            kind,
            templates,
            work,
            names_file,
            memcached or "-",
            prefix,
            *extra,
        ]

    # Warm every cache, and check that every contender loads the same code.
    digests = {}
    for i, kind in enumerate(c for c in contenders if c not in ("python", "import-ours")):
        out = subprocess.run(
            argv(kind, "check"), env=env, capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            raise RuntimeError(f"benchmark child {kind} failed: {out.stderr.strip()[-500:]}")
        digests[kind] = out.stdout.strip()
        if progress:
            progress("warm", i + 1, len(contenders))
    if len(set(digests.values())) != 1:
        raise RuntimeError(f"contenders loaded different code: {digests}")
    wall: dict[str, list[float]] = {c: [] for c in contenders}
    cpu: dict[str, list[float]] = {c: [] for c in contenders}
    for r in range(rounds):
        for kind in rotated(contenders, r):
            w, c = _spawn(argv(kind), env)
            wall[kind].append(w)
            cpu[kind].append(c)
        if progress:
            progress("processes", r + 1, rounds)
    new_env = _new_environment(templates, work, names_file, env)
    return ProcessReport(len(names), wall, cpu, new_env, notes)


def _child_script() -> str:
    """:data:`CHILD`, with the entry format's own ``source_bytes`` written in: the signed
    floor digests sources as the cache does, and the floor moves with the format."""
    import inspect

    from ..entry import source_bytes

    return CHILD.replace("SOURCE_BYTES", inspect.getsource(source_bytes), 1)


def _new_environment(
    templates: str, work: str, names_file: str, env: dict[str, str]
) -> dict[str, Any]:
    script = os.path.join(work, "new_env.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(NEW_ENV)
    out = subprocess.run(
        [sys.executable, script, templates, work, names_file, "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    data = json.loads(out.stdout)
    return {
        "first_fingerprint_us": data["first_fingerprint_ns"] / 1000,
        "fingerprint_us": statistics.median(data["fingerprint_ns"]) / 1000,
        "first_hit_ratio": ratios(data["ours_ns"], data["floor_ns"]).median,
        "ours_us": statistics.median(data["ours_ns"]) / 1000,
        "floor_us": statistics.median(data["floor_ns"]) / 1000,
    }
