"""The template-string benchmark: the Ansible / dbt / Salt pattern.

Each iteration builds a new ``SandboxedEnvironment`` and calls ``from_string`` on the same
distinct strings taken from the corpus: short expressions (``{{ order.status|upper }}``),
small message templates, and whole self-contained templates. Plain Jinja compiles every
string every time; with :func:`~tiered_bccache.cache_from_string` over
``[MemoryTier(), FileSystemTier(dir)]`` the code comes from the tiers.

Two measurements, interleaved with plain Jinja in rounds:

- in-process: the whole loop, ours against plain Jinja;
- new processes over a warm filesystem tier: each process runs the loop once. What the
  strings cost is the process's wall time minus that of the same process doing
  everything but templating (Python, imports, the environments, the cache): Python's
  start and Jinja's import are a floor no cache removes, so the whole-process ratio is
  given too.

Every string's output is compared with plain Jinja's before anything is timed. An
admission run then replays a workload where most strings are one-offs (data embedded in
the string, as applications often do) with ``string_admission`` 1, 2 and 3, and reports
what each leaves on disk and in memory.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from jinja2 import FileSystemLoader
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigurationError
from ..humanize import counted
from .timing import RoundRatios, rotated, round_ratios

__all__ = ["StringReport", "corpus_strings", "run_string_bench"]

CHILD = r"""
import sys, time
kind, templates, work, strings_file, iterations = sys.argv[1:6]
from jinja2 import FileSystemLoader
from jinja2.sandbox import SandboxedEnvironment
strings = open(strings_file, encoding="utf-8").read().split("\0")
cache = None
if kind.startswith("ours"):
    from tiered_bccache import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(work + "/strings-fs")])
for _ in range(int(iterations)):
    env = SandboxedEnvironment(loader=FileSystemLoader(templates), bytecode_cache=cache)
    if cache is not None:
        cache_from_string(env)
    if kind.endswith("base"):
        continue
    for source in strings:
        env.from_string(source)
"""


def corpus_strings(templates: str, context: dict[str, Any], count: int = 50) -> list[str]:
    """Up to ``count`` distinct strings from the corpus in ``templates`` that render with
    ``context`` in a sandbox: every self-contained template (no extends, import or
    include), small message templates of ten expressions each (a fifth of the rest),
    and single expressions."""
    env = SandboxedEnvironment(loader=FileSystemLoader(templates))

    def renders(source: str) -> bool:
        try:
            env.from_string(source).render(context)
        except Exception:
            return False
        return True

    whole: list[str] = []
    expressions: set[str] = set()
    for root, _, files in sorted(os.walk(templates)):
        for name in sorted(files):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                source = f.read()
            expressions.update(re.findall(r"\{\{[^{}]*\}\}", source))
            if not re.search(r"\{%-?\s*(extends|import|from|include)\b", source):
                if renders(source):
                    whole.append(source)
    good = sorted(e for e in expressions if renders(e))
    whole = whole[: count // 5]
    messages = []
    for i in range(count // 10):
        parts = good[i * 10 : i * 10 + 10]
        if len(parts) < 10:
            break
        messages.append("\n".join(f"<p>{i}.{n}: {p}</p>" for n, p in enumerate(parts)))
    singles = good[len(messages) * 10 :][: count - len(whole) - len(messages)]
    strings = whole + messages + singles
    if not strings:
        raise ConfigurationError("templates: no string of the corpus renders on its own")
    return strings


class StringReport(NamedTuple):
    """Seconds per round for each contender, and the admission figures."""

    strings: int
    iterations: int
    in_process: dict[str, list[float]]
    processes: dict[str, list[float]]
    admission: list[dict[str, Any]]

    def string_cost_ratio(self) -> RoundRatios:
        """What the strings cost a new process with ours over plain Jinja, per round:
        (ours - ours-base) / (plain - plain-base). A round where plain Jinja's strings
        cost nothing measurable (plain - plain-base <= 0: lost in the start-up noise)
        is not valid; too few valid rounds give no ratio."""
        p = self.processes
        ours = [max(o - b, 0.0) for o, b in zip(p["ours"], p["ours-base"], strict=True)]
        return round_ratios(ours, [a - b for a, b in zip(p["plain"], p["plain-base"], strict=True)])

    def in_process_speedup(self) -> RoundRatios:
        """Plain Jinja's in-process loop over ours, per round."""
        return round_ratios(self.in_process["plain"], self.in_process["ours"])

    def whole_process_ratio(self) -> RoundRatios:
        """A whole new process with ours over one with plain Jinja, per round."""
        return round_ratios(self.processes["ours"], self.processes["plain"])

    def format_table(self) -> str:
        strings = counted(self.strings, "distinct corpus string")
        lines = [
            f"template strings: {counted(self.iterations, 'iteration')}, each a new "
            f"SandboxedEnvironment and from_string on {strings} (outputs checked equal first)",
            "",
        ]
        ip = self.in_process
        speed = self.in_process_speedup()
        if speed.spread is None:
            faster = f"plain / ours: {speed.summary(1)}"
        else:
            met = "met" if speed.spread.median >= 10 else "MISSED"
            faster = (
                f"ours is {speed.cell(1)} faster ({speed.spread.range('.1f')})   "
                f"target >= 10x {met}"
            )
        lines.append(
            f"in-process loop     plain {statistics.median(ip['plain']) * 1000:8.1f} ms   "
            f"ours {statistics.median(ip['ours']) * 1000:8.1f} ms   {faster}"
        )
        if self.processes:
            p = self.processes
            cost = self.string_cost_ratio()
            if cost.spread is None:
                goal = "target <= 0.15x: no verdict"
            else:
                goal = f"target <= 0.15x {'met' if cost.spread.median <= 0.15 else 'MISSED'}"
            lines += [
                "new process, warm filesystem tier (median wall ms): "
                + ", ".join(f"{k} {statistics.median(v) * 1000:.1f}" for k, v in p.items()),
                f"  what the strings cost, ours / plain: {cost.summary(3)}   {goal}",
                f"  whole process, ours / plain:         {self.whole_process_ratio().summary(3)}",
            ]
        if self.admission:
            lines += [
                "",
                "admission of one-off strings (a workload of mostly one-off strings):",
                f"  {'admission':<10} {'compiles':>9} {'hits':>6} {'files':>6} {'on disk':>9} "
                f"{'in memory':>10} {'time':>9}",
            ]
            for a in self.admission:
                lines.append(
                    f"  {a['admission']:<10} {a['compiles']:>9} {a['hits']:>6} {a['files']:>6} "
                    f"{a['disk_bytes'] / 1024:>7.0f}kB {a['memory_bytes'] / 1024:>8.0f}kB "
                    f"{a['seconds'] * 1000:>7.0f}ms"
                )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strings": self.strings,
            "iterations": self.iterations,
            "in_process_s": self.in_process,
            "processes_s": self.processes,
            "ratios": {
                "in_process_plain_over_ours": self.in_process_speedup().as_dict(),
                "string_cost_ours_over_plain": (
                    self.string_cost_ratio().as_dict() if self.processes else None
                ),
                "whole_process_ours_over_plain": (
                    self.whole_process_ratio().as_dict() if self.processes else None
                ),
            },
            "admission": self.admission,
        }


def _loop(env_factory: Callable[[], SandboxedEnvironment], strings: Sequence[str], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        env = env_factory()
        for source in strings:
            env.from_string(source)
    return time.perf_counter() - started


def run_string_bench(
    templates: str,
    work: str,
    *,
    context: dict[str, Any],
    iterations: int = 200,
    rounds: int = 3,
    processes: bool = True,
    admission: bool = True,
    secret: bytes,
) -> StringReport:
    """Run the template-string benchmark over the corpus in ``templates``."""
    from .. import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

    strings = corpus_strings(templates, context)
    os.makedirs(os.path.join(work, "strings-fs"), exist_ok=True)
    os.environ.setdefault("TIERED_BCCACHE_SECRET", secret.hex())
    cache = TieredBytecodeCache([MemoryTier(), FileSystemTier(os.path.join(work, "strings-fs"))])

    def plain() -> SandboxedEnvironment:
        return SandboxedEnvironment(loader=FileSystemLoader(templates))

    def ours() -> SandboxedEnvironment:
        env = SandboxedEnvironment(loader=FileSystemLoader(templates), bytecode_cache=cache)
        cache_from_string(env)
        return env

    # Outputs first: every string renders the same through the cache, twice (a miss,
    # then once stored, a hit), as with plain Jinja.
    for _ in range(2):
        for source in strings:
            if ours().from_string(source).render(context) != plain().from_string(source).render(
                context
            ):
                raise RuntimeError(f"a cached string renders differently: {source[:60]!r}")
    in_process: dict[str, list[float]] = {"plain": [], "ours": []}
    for r in range(rounds):
        order = ["plain", "ours"] if r % 2 == 0 else ["ours", "plain"]
        for kind in order:
            in_process[kind].append(_loop(plain if kind == "plain" else ours, strings, iterations))
    by_process: dict[str, list[float]] = {}
    if processes:
        by_process = _processes(templates, work, strings, iterations, rounds)
    figures = _admission(templates, work, strings) if admission else []
    return StringReport(len(strings), iterations, in_process, by_process, figures)


def _processes(
    templates: str, work: str, strings: Sequence[str], iterations: int, rounds: int
) -> dict[str, list[float]]:
    child = os.path.join(work, "strings_child.py")
    with open(child, "w", encoding="utf-8") as f:
        f.write(CHILD)
    strings_file = os.path.join(work, "strings.txt")
    with open(strings_file, "w", encoding="utf-8") as f:
        f.write("\0".join(strings))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    kinds = ["plain-base", "plain", "ours-base", "ours"]

    def argv(kind: str) -> list[str]:
        return [sys.executable, child, kind, templates, work, strings_file, str(iterations)]

    subprocess.run(argv("ours"), env=env, check=True, timeout=600)  # warm the tier
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in rotated(kinds, r):
            started = time.perf_counter()
            subprocess.run(argv(kind), env=env, check=True, timeout=600)
            times[kind].append(time.perf_counter() - started)
    return times


def _admission(templates: str, work: str, strings: Sequence[str]) -> list[dict[str, Any]]:
    """Replay a workload of 20 iterations where each iteration templates the repeated
    strings and as many one-off strings (a repeated string with data embedded)."""
    from .. import FileSystemTier, MemoryTier, TieredBytecodeCache, cache_from_string

    out = []
    for admission in (1, 2, 3):
        directory = os.path.join(work, f"admission-{admission}")
        memory = MemoryTier(None, max_bytes=1 << 40)  # weighed in bytes, never full
        fs = FileSystemTier(directory)
        cache = TieredBytecodeCache([memory, fs], string_admission=admission)
        started = time.perf_counter()
        for i in range(20):
            env = SandboxedEnvironment(loader=FileSystemLoader(templates), bytecode_cache=cache)
            cache_from_string(env)
            for n, source in enumerate(strings):
                env.from_string(source)
                env.from_string(f"{source}<!-- request {i}.{n} -->")  # seen once
        elapsed = time.perf_counter() - started
        stats = cache.stats()
        files, disk = fs.size()
        out.append(
            {
                "admission": admission,
                "compiles": stats.string_misses,
                "hits": stats.string_hits,
                "files": files,
                "disk_bytes": disk,
                "memory_bytes": memory.currsize,
                "seconds": elapsed,
            }
        )
    return out
