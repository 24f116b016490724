"""The allowed values of the network library's hyperparameters, each rule written once.

A layer, a loss or an optimiser checks its arguments with these when it is
built, and :class:`digitnet.training.TrainConfig` checks a run's settings with
the same functions, so a rule and its message live in one place. Each raises
:class:`~digitnet.errors.ConfigError` with a message that names the setting,
the allowed range and the value given.
"""

from __future__ import annotations

import math

from digitnet.errors import ConfigError


def fraction(value, what: str) -> None:
    """``0 <= value < 1`` (dropout, momentum, label smoothing, ...)."""
    if not 0 <= value < 1:
        raise ConfigError(f"{what} must be in [0, 1), got {value}")


def positive(value, what: str) -> None:
    """A finite number above 0 (the learning rate, eps)."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{what} must be > 0, got {value}")


def non_negative(value, what: str) -> None:
    """A number at or above 0 (L2, weight decay, warm-up)."""
    if not value >= 0:
        raise ConfigError(f"{what} must be >= 0, got {value}")


def one_of(value, names, what: str) -> None:
    """One of the names a table knows (an activation, an optimiser, a schedule)."""
    if value not in names:
        raise ConfigError(f"unknown {what} '{value}'; choose one of {', '.join(names)}")
