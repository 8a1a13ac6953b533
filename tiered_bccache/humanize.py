"""Numbers as people read them, for the command line, the sizing report and the
benchmarks (tooling only: nothing on the lookup path imports this)."""

from __future__ import annotations

__all__ = ["counted", "human_bytes", "human_us"]


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in B, KiB, MiB, GiB or TiB, with one decimal above bytes:
    ``human_bytes(1536) == "1.5 KiB"``."""
    value, unit = float(nbytes), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def human_us(ns: float) -> str:
    """A time given in nanoseconds, in microseconds (milliseconds from 10 ms up)."""
    us = ns / 1000
    return f"{us / 1000:.1f} ms" if us >= 10000 else f"{us:.1f} us"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 tier``, ``2 tiers``: ``count`` and its noun, agreeing."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
