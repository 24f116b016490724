"""The allowed values of the network library's hyperparameters, each rule written once.

A layer, a loss or an optimiser checks its arguments with these when it is
built, and :class:`digitnet.training.TrainConfig` checks a run's settings with
the same functions, so a rule and its message live in one place. Each raises
:class:`~digitnet.errors.ConfigError` with a message that names the setting,
the allowed range and the value given.
"""

from __future__ import annotations

import math
import numbers

from digitnet.errors import ConfigError


def number(value, what: str) -> None:
    """A real number (an int or a float; not a bool, a string or None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number, got {value!r}")


def fraction(value, what: str) -> None:
    """``0 <= value < 1`` (dropout, momentum, label smoothing, ...)."""
    number(value, what)
    if not 0 <= value < 1:
        raise ConfigError(f"{what} must be in [0, 1), got {value}")


def positive(value, what: str) -> None:
    """A finite number above 0 (the learning rate, eps)."""
    number(value, what)
    if not (value > 0 and _finite(value)):
        raise ConfigError(f"{what} must be > 0 and finite, got {value}")


def non_negative(value, what: str) -> None:
    """A finite number at or above 0 (L2, weight decay, warm-up)."""
    number(value, what)
    if not (value >= 0 and _finite(value)):
        raise ConfigError(f"{what} must be >= 0 and finite, got {value}")


def whole(value, what: str, low: int, high: int) -> None:
    """A whole number from ``low`` to ``high`` (epochs, a seed, a layer's size, a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ConfigError(f"{what} must be a whole number from {low:,} to {high:,}, got {value!r}")


def one_of(value, names, what: str) -> None:
    """One of the names a table knows (an activation, an optimiser, a schedule)."""
    if value not in names:
        raise ConfigError(f"unknown {what} '{value}'; choose one of {', '.join(names)}")


def is_whole(value, low: int = 0) -> bool:
    """Is ``value`` a whole number (not a bool) at or above ``low``? For values read from files."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def is_finite(value) -> bool:
    """Is ``value`` a finite real number (an int or a float; not a bool)? For values read from files."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and _finite(value)


def _finite(value) -> bool:
    """``math.isfinite``, and False for a whole number too large for a float (which it raises on)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
