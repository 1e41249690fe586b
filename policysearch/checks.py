"""Argument and field checks, written once, with one message style: "NAME is VALUE, expected ...".

Every constructor, loader and command validates through these, so a bad value fails before any
work starts and the message reads the same wherever it comes from. `name` is free text: an
argument ("episode_length"), an option ("--epochs") or a file field ("plan.json: field 'ratios'").
Loaders pass ``error=PolicyFormatError``; everything else raises ConfigError. Imports stay light
(the errors module, no torch), so any module can check its arguments here before heavy work.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError, did_you_mean

__all__ = [
    "MAX_LR",
    "check_choice",
    "check_int",
    "check_lr",
    "check_number",
    "check_probability",
    "check_shape",
    "check_tensors",
    "is_int",
    "is_number",
]

#: The largest learning rate anything accepts: it catches an LR given where its log10 or a step
#: count was meant. LR schedule files hold log10 LRs up to log10(MAX_LR) (`policies.schedule`).
MAX_LR = 1e3


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), but not a bool (``True`` is an int to Python, never to a user)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (int or float, Python or numpy), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range (JSON allows any number of digits)
        return False


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
    ok = is_number(value) and _finite(value)
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


def check_lr(name: str, value: Any, error: type[Exception] = ConfigError) -> float:
    """A learning rate: positive, finite and at most `MAX_LR`."""
    return check_number(name, value, 0.0, MAX_LR, low_open=True, error=error)


def check_shape(name: str, value: Any, ndim: int | None = 3, error: type[Exception] = ConfigError) -> tuple[int, ...]:
    """`value` as a tuple of positive ints, `ndim` of them (3: one image, (C, H, W); None: any number but 0)."""
    shape = tuple(value) if isinstance(value, (list, tuple)) else ()
    if not shape or (ndim is not None and len(shape) != ndim) or not all(is_int(d) and d >= 1 for d in shape):
        if ndim is None:
            expected = "positive ints, e.g. (3, 32, 32)"
        else:
            expected = "three positive ints (C, H, W)" if ndim == 3 else f"{ndim} positive ints"
        raise error(f"{name} is {value!r}, expected {expected}")
    return tuple(int(d) for d in shape)


def check_choice(kind: str, value: Any, known: Iterable[str], error: type[Exception] = UnknownNameError) -> str:
    """`value` if it is one of `known`; else raise, suggesting the close names ("Did you mean ...").

    Args:
        kind: What the name is ("reward metric"), for UnknownNameError's "unknown KIND 'x'"; with any
            other `error` (a loader's PolicyFormatError) the field's name, as for the other checks
            ("plan.json: field 'criterion'").
        value: The name given.
        known: The names accepted.
        error: UnknownNameError (a ConfigError), or the class to raise with "KIND is VALUE, expected one of ...".
    """
    known = tuple(known)
    if isinstance(value, str) and value in known:
        return value
    if issubclass(error, UnknownNameError):
        raise error(kind, str(value), known)
    raise error(f"{kind} is {value!r}, expected one of {', '.join(known)}.{did_you_mean(str(value), known)}")


def check_tensors(name: str, tensors: Any, expected: Mapping[str, Any] | None = None,
                  error: type[Exception] = PolicyFormatError) -> None:
    """Weights fit to compute with: a mapping of names to tensors, every floating one finite; with
    `expected` (a model's ``state_dict()``, on the ``meta`` device too, so nothing is allocated to
    check), exactly its names, each with its shape and dtype (``load_state_dict`` would cast an
    int64 tensor silently, or allocate a model a file only claims).

    Raises:
        `error` naming `name` (the file) and the first tensor at fault.
    """
    import torch  # here, not at the top: this module is imported before torch is needed

    if not isinstance(tensors, Mapping) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise error(f"{name}: its weights are not a mapping of names to tensors")
    if expected is not None:
        missing = [k for k in expected if k not in tensors]
        extra = [k for k in tensors if k not in expected]
        if missing or extra:
            listed = "; ".join(f"{label} {', '.join(repr(k) for k in keys[:3])}{', ...' if len(keys) > 3 else ''}"
                               for label, keys in (("missing", missing), ("unexpected", extra)) if keys)
            raise error(f"{name}: {listed}")
        for key, want in expected.items():
            got = tensors[key]
            if tuple(got.shape) != tuple(want.shape):
                raise error(f"{name}: weight {key!r} has shape {tuple(got.shape)}, the model expects "
                            f"{tuple(want.shape)}")
            if got.dtype != want.dtype:
                raise error(f"{name}: weight {key!r} is {str(got.dtype).replace('torch.', '')}, the model expects "
                            f"{str(want.dtype).replace('torch.', '')}")
    for key, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.device.type != "meta" \
                and not bool(torch.isfinite(tensor).all()):
            raise error(f"{name}: weight {key!r} holds NaN or infinite values (the training that wrote it "
                        "diverged); use weights saved before it diverged, or train again")
