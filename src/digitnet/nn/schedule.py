"""Learning-rate schedules: the learning rate as a function of the iteration.

Each schedule is a callable ``schedule(it) -> lr`` for iterations
``it = 0, 1, ..., total - 1``; the training loop sets ``optimizer.lr`` from it
before every step.
"""

from __future__ import annotations

import math

from digitnet.errors import ConfigError


class Constant:
    """The same rate throughout."""

    def __init__(self, lr: float):
        self.lr = lr

    def __call__(self, it: int) -> float:
        return self.lr

    def __repr__(self):
        return f"Constant(lr={self.lr})"


class Step:
    """Multiply the rate by ``gamma`` every ``step_size`` iterations."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        if step_size < 1 or not 0 < gamma <= 1:
            raise ConfigError(
                f"step schedule needs step_size >= 1 and 0 < gamma <= 1, got {step_size}, {gamma}"
            )
        self.lr, self.step_size, self.gamma = lr, step_size, gamma

    def __call__(self, it: int) -> float:
        return self.lr * self.gamma ** (it // self.step_size)

    def __repr__(self):
        return f"Step(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class Cosine:
    """Linear warm-up over ``warmup`` iterations, then half a cosine from ``lr`` down to ``min_lr``."""

    def __init__(self, lr: float, total: int, min_lr: float = 0.0, warmup: int = 0):
        self.lr, self.total, self.min_lr, self.warmup = lr, max(1, total), min_lr, max(0, warmup)

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return self.lr * (it + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (it - self.warmup) / span)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    def __repr__(self):
        return f"Cosine(lr={self.lr}, total={self.total}, min_lr={self.min_lr}, warmup={self.warmup})"


class OneCycle:
    """One cycle (Smith): warm up from ``max_lr / div`` to ``max_lr`` over the first
    ``pct_start`` of training, then anneal to ``max_lr / (div * final_div)``; both
    halves follow a cosine, as PyTorch's ``OneCycleLR`` does."""

    def __init__(
        self, max_lr: float, total: int, pct_start: float = 0.3, div: float = 25.0, final_div: float = 1e4
    ):
        if not 0 < pct_start < 1:
            raise ConfigError(f"one-cycle warm-up fraction must be in (0, 1), got {pct_start}")
        self.max_lr, self.total, self.pct_start = max_lr, max(2, total), pct_start
        self.initial = max_lr / div
        self.final = self.initial / final_div
        self.peak = max(1, int(round(pct_start * self.total)) - 1)

    @staticmethod
    def _anneal(start, end, fraction):
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))

    def __call__(self, it: int) -> float:
        if it <= self.peak:
            return self._anneal(self.initial, self.max_lr, it / self.peak)
        fraction = min(1.0, (it - self.peak) / max(1, self.total - 1 - self.peak))
        return self._anneal(self.max_lr, self.final, fraction)

    def __repr__(self):
        return f"OneCycle(max_lr={self.max_lr}, total={self.total}, pct_start={self.pct_start})"


SCHEDULES = ("constant", "step", "cosine", "onecycle")


def make_schedule(
    name: str,
    lr: float,
    epochs: int,
    iters_per_epoch: int,
    warmup_epochs: float = 0.0,
    step_epochs: int = 0,
    gamma: float = 0.1,
    min_lr: float = 0.0,
):
    """Build a schedule by name for a run of ``epochs * iters_per_epoch`` iterations.

    ``step`` decays by ``gamma`` every ``step_epochs`` epochs (default: a third of the run);
    ``cosine`` warms up for ``warmup_epochs``; ``onecycle`` peaks at ``lr`` after
    ``warmup_epochs`` (default 30% of the run).
    """
    total = max(1, epochs * iters_per_epoch)
    warmup = int(round(warmup_epochs * iters_per_epoch))
    if name == "constant":
        return Constant(lr)
    if name == "step":
        step = max(1, step_epochs or max(1, epochs // 3)) * iters_per_epoch
        return Step(lr, step, gamma)
    if name == "cosine":
        return Cosine(lr, total, min_lr=min_lr, warmup=warmup)
    if name == "onecycle":
        pct = warmup / total if warmup else 0.3
        return OneCycle(lr, total, pct_start=min(max(pct, 1e-3), 0.999))
    raise ConfigError(f"unknown schedule '{name}'; choose one of {', '.join(SCHEDULES)}")
