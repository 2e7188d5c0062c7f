"""One set of argument validators, used by every room (layers, streaming, export, federated, data, apps).

Each returns the value normalised (a Python `int` or `float`) so callers check once and store the result. Messages
follow Keras's layout: which argument, what is allowed, `Received: name=value`. `error` picks the exception class
(a `tfx_ext.errors` class where the caller's family matters, e.g. `DataError`); it defaults to `ValueError`.
Booleans are refused where numbers are asked for (`True` is an `int` in Python, never a meaningful count).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

__all__ = ["check_int", "check_number", "check_choice", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for booleans and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, _np_bool()))


def is_number(value: Any) -> bool:
    """True for real numbers (ints, floats, numpy scalars), False for booleans and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, _np_bool()))


def _np_bool():
    import numpy as np

    return np.bool_


def _is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite as a float (an int too large for a float is refused with the
    named error, not an `OverflowError`)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def _out_of_range(value, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return True
    return high is not None and (value >= high if high_open else value > high)


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False, error: type[Exception] = ValueError) -> int | None:
    """Checks that `value` is an integer in [minimum, maximum] (either bound optional); returns it as `int`."""
    if value is None and allow_none:
        return None
    if not is_int(value) or _out_of_range(value, minimum, maximum, False, False):
        what = "an integer" + (f" {_bounds(minimum, maximum, False, False)}" if (minimum, maximum) != (None, None)
                               else "")
        none = " or None" if allow_none else ""
        raise error(f"`{name}` must be {what}{none}. Received: {name}={value!r}")
    return int(value)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 error: type[Exception] = ValueError) -> float | None:
    """Checks that `value` is a finite real number within the bounds; returns it as `float`.

    `low_open` / `high_open` exclude the bound itself (e.g. a learning rate is > 0, a fraction is in [0, 1)).
    """
    if value is None and allow_none:
        return None
    if not _is_finite(value) or _out_of_range(value, low, high, low_open, high_open):
        bounds = _bounds(low, high, low_open, high_open)
        none = " or None" if allow_none else ""
        raise error(f"`{name}` must be a finite number{' ' + bounds if bounds else ''}{none}. "
                    f"Received: {name}={value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any], *, error: type[Exception] = ValueError) -> Any:
    """Checks that `value` is one of `choices` (compared with `==`); returns it.

    A boolean matches only a boolean choice: `True == 1`, but `verbose=True` is not `verbose=1`.
    """
    choices = tuple(choices)
    if not any(_same_kind(value, c) and _equal(value, c) for c in choices):
        allowed = ", ".join(repr(c) for c in choices)
        raise error(f"`{name}` must be one of {allowed}. Received: {name}={value!r}")
    return value


def _same_kind(a: Any, b: Any) -> bool:
    booleans = (bool, _np_bool())
    return isinstance(a, booleans) == isinstance(b, booleans)


def _equal(a: Any, b: Any) -> bool:
    """`a == b` as a plain bool (an array compared with a choice is not one of the choices)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
