"""Timing and reporting shared by every benchmark: ratios taken per round and summarised
over rounds, the targets they are held to, the rotating order of a round, and what the
numbers were measured on.

The machines these run on are shared and noisy, so an absolute time means little; a ratio
against a baseline measured in the same round, in a rotating order, means a lot more.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..humanize import counted

__all__ = [
    "NOT_ENOUGH_SIGNAL",
    "RoundRatios",
    "Spread",
    "Target",
    "describe_machine",
    "enough_rounds",
    "ratios",
    "round_ratios",
    "rotated",
    "target_table",
    "verdict",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Spread:
    """The median and the range of repeated measurements of one quantity."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """Summarise ``values``; raises ValueError when there are none."""
        v = list(values)
        if not v:
            raise ValueError("no measurements to summarise")
        return cls(float(statistics.median(v)), float(min(v)), float(max(v)), len(v))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.count}

    def ratio(self) -> str:
        """``1.03x``: the median as a ratio."""
        return f"{self.median:.2f}x"

    def range(self, fmt: str = ".2f") -> str:
        """``0.98..1.07``: the spread, in the given format."""
        return f"{self.low:{fmt}}..{self.high:{fmt}}"


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> Spread:
    """``numerator[i] / denominator[i]`` for every round ``i``, summarised over rounds.
    A round whose denominator is not positive (nothing measured) is left out; raises
    ValueError when no round is left, or when the two do not have as many rounds."""
    return Spread.of(a / b for a, b in zip(numerator, denominator, strict=True) if b > 0)


#: What a report prints instead of a ratio measured in too few rounds.
NOT_ENOUGH_SIGNAL = "not enough signal"


def enough_rounds(valid: int, rounds: int) -> bool:
    """Whether ``valid`` of ``rounds`` rounds are enough to report a ratio: at least two
    (one round has no spread; a run of one round asked for no more), and more than half.
    The rounds left out are those where the difference a ratio divides by was lost in
    the noise; when most are, the few left are the ones the noise happened to favour."""
    return valid >= min(2, rounds) and 2 * valid > rounds


@dataclass(frozen=True, slots=True)
class RoundRatios:
    """A ratio taken per round and summarised, or no summary when too few rounds were
    valid (see :func:`enough_rounds`): ``spread`` is None then, and ``valid`` says how
    many of the ``rounds`` were."""

    spread: Spread | None
    valid: int
    rounds: int

    def cell(self, digits: int = 2) -> str:
        """``1.03x``, or :data:`NOT_ENOUGH_SIGNAL`."""
        if self.spread is None:
            return NOT_ENOUGH_SIGNAL
        return f"{self.spread.median:.{digits}f}x"

    def summary(self, digits: int = 2) -> str:
        """``1.03x (0.98..1.07)``, or ``not enough signal (1 of 3 rounds valid)``."""
        if self.spread is None:
            return f"{NOT_ENOUGH_SIGNAL} ({self.valid} of {counted(self.rounds, 'round')} valid)"
        return f"{self.cell(digits)} ({self.spread.range(f'.{digits}f')})"

    def as_dict(self) -> dict[str, float | int | None]:
        """The median, min and max (None without enough signal), the valid rounds ``n``
        and all ``rounds``."""
        s = self.spread
        return {
            "median": None if s is None else s.median,
            "min": None if s is None else s.low,
            "max": None if s is None else s.high,
            "n": self.valid,
            "rounds": self.rounds,
        }


def round_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> RoundRatios:
    """Like :func:`ratios`, never raising for want of rounds: a round whose denominator
    is not positive is not valid, and too few valid rounds give no spread."""
    pairs = list(zip(numerator, denominator, strict=True))
    valid = [a / b for a, b in pairs if b > 0]
    spread = Spread.of(valid) if enough_rounds(len(valid), len(pairs)) else None
    return RoundRatios(spread, len(valid), len(pairs))


def rotated(items: Sequence[T], round_number: int) -> list[T]:
    """``items`` rotated by ``round_number``: no contender always runs first, or always
    right after the one that flushes the CPU caches."""
    shift = round_number % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal of the form ``numerator / denominator <= limit`` (or ``>=``)."""

    label: str
    numerator: str
    denominator: str
    limit: float
    at_most: bool = True

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


def verdict(target: Target, value: float) -> str:
    """``<= 1.2x met`` or ``>= 0.9x MISSED``."""
    op = "<=" if target.at_most else ">="
    return f"{op} {target.limit:g}x {'met' if target.met(value) else 'MISSED'}"


def target_table(
    targets: Iterable[Target],
    ratio: Callable[[str, str], RoundRatios | None],
    *,
    digits: int = 2,
) -> list[str]:
    """The lines of a report that hold its ratios to ``targets``: the median over rounds
    (``digits`` decimals), the spread and the verdict; :data:`NOT_ENOUGH_SIGNAL` and no
    verdict for a ratio of too few valid rounds. ``ratio(numerator, denominator)``
    returns None for a pair that was not measured; its target is left out."""
    lines = [f"{'ratio':<24} {'median':>7} {'spread':>12}  {'target':<14} what"]
    for t in targets:
        r = ratio(t.numerator, t.denominator)
        if r is None:
            continue
        name = f"{t.numerator}/{t.denominator}"
        s = r.spread
        if s is None:
            lines.append(
                f"{name:<24} {NOT_ENOUGH_SIGNAL:>20}  {'no verdict':<14} {t.label} "
                f"({r.valid} of {counted(r.rounds, 'round')} valid)"
            )
            continue
        goal = verdict(t, s.median)
        lines.append(f"{name:<24} {s.median:>6.{digits}f}x {s.range():>12}  {goal:<14} {t.label}")
    return lines


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on, load average included (the machine is shared)."""
    import jinja2

    return {
        "python": platform.python_version(),
        "jinja2": jinja2.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
