"""Argument checks shared by the tiers and the cache: fail at construction, name the
argument."""

from __future__ import annotations

import math

from ..errors import ConfigurationError


def positive_int_or_none(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigurationError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def seconds_option(name: str, text: str) -> float:
    """A spec option's text as a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigurationError(f"{name}: {text!r} is not a positive number of seconds")
    return value
