"""Argument and field checks, written once, with one message style: "NAME is VALUE, expected ...".

Every constructor, loader and command validates through these, so a bad value fails before any
work starts and the message reads the same wherever it comes from. `name` is free text: an
argument ("episode_length"), an option ("--epochs") or a file field ("plan.json: field 'ratios'").
Loaders pass ``error=PolicyFormatError``; everything else raises ConfigError.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from policysearch.errors import ConfigError, UnknownNameError

__all__ = ["check_choice", "check_int", "check_number", "check_probability", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), but not a bool (``True`` is an int to Python, never to a user)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              error: type[Exception] = ConfigError) -> int:
    """`value` as an int, if it is one (not a bool) within ``[low, high]``; else raise `error`."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = _bounds(low, high, False, False)
        raise error(f"{name} is {value!r}, expected an int{' ' + bounds if bounds else ''}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, error: type[Exception] = ConfigError) -> float:
    """`value` as a float, if it is a finite number (not a bool) within the bounds; else raise `error`.

    ``low_open`` / ``high_open`` exclude the bound itself (``low=0, low_open=True``: positive).
    """
    ok = is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = _bounds(low, high, low_open, high_open)
        raise error(f"{name} is {value!r}, expected a finite number{' ' + bounds if bounds else ''}")
    return float(value)


def check_probability(name: str, value: Any, error: type[Exception] = ConfigError) -> float:
    """A probability in [0, 1]."""
    return check_number(name, value, 0.0, 1.0, error=error)


def check_choice(kind: str, value: Any, known: Iterable[str]) -> str:
    """`value` if it is one of `known`; else UnknownNameError with "Did you mean ..."."""
    known = tuple(known)
    if not isinstance(value, str) or value not in known:
        raise UnknownNameError(kind, str(value), known)
    return value
