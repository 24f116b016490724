"""What a search tries: hyperparameter values parsed from flags, and the trials they make.

Each searchable hyperparameter is a :class:`Dimension` written as a list
(``"64,110,128"``; a hidden entry ``"256-128"`` is two layers) or, for random
search, a range ``"LOW:HIGH"``: log-uniform for ``lr``, ``l2``, ``hidden`` and
``batch_size``, uniform for ``dropout``. A trial is a plain dict such as
``{"hidden": [128], "l2": 0.1}``, the overrides it applies to the base
configuration. :class:`SearchSpec` holds everything that defines a search, so
that the same spec always gives the same trials (saved in results.json, it is
what ``--resume`` continues).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np

from digitnet.errors import ConfigError
from digitnet.presets import preset
from digitnet.training import TrainConfig

MAX_GRID = 10_000  # a larger grid needs confirm=True (--yes)


@dataclass(frozen=True)
class Param:
    """How one hyperparameter is written: its value type and how a range is sampled."""

    kind: str  # "sizes", "float", "int" or "name"
    range: str | None  # "log", "uniform", or None when only lists are allowed


PARAMS = {
    "hidden": Param("sizes", "log"),
    "l2": Param("float", "log"),
    "lr": Param("float", "log"),
    "batch_size": Param("int", "log"),
    "optimizer": Param("name", None),
    "dropout": Param("float", "uniform"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def show(name: str, value) -> str:
    """A value as tables and plots print it: ``[256, 128]`` -> ``"256-128"``, 0.001234 -> ``"0.00123"``."""
    if name == "hidden":
        return "-".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass
class Dimension:
    """One searched hyperparameter: a list of ``values``, or a range ``low``..``high``."""

    name: str
    values: list | None = None
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.values is None

    def examples(self) -> list:
        """The listed values, or a range's two ends: what validation checks."""
        return self.values if not self.is_range else [self._round(self.low), self._round(self.high)]

    def sample(self, rng: np.random.Generator):
        """One value: uniform over the list, or from the range (rounded to 3 significant digits)."""
        if not self.is_range:
            return self.values[int(rng.integers(len(self.values)))]
        if PARAMS[self.name].range == "log":
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        return self._round(x)

    def _round(self, x: float):
        kind = PARAMS[self.name].kind
        if kind == "sizes":
            return [int(round(x))]
        if kind == "int":
            return int(round(x))
        return float(f"{x:.3g}")


def parse_dimension(name: str, text: str) -> Dimension:
    """Parse a flag's text into a :class:`Dimension`; raise :class:`ConfigError` naming the flag."""
    param = PARAMS[name]
    where = f"{flag(name)} {text!r}"
    text = str(text).strip()
    if ":" in text:
        if param.range is None:
            raise ConfigError(f"{where}: {flag(name)} takes a list of names, not a range")
        parts = text.split(":")
        if len(parts) != 2:
            raise ConfigError(f"{where}: a range is LOW:HIGH, e.g. 1e-4:1e-1")
        low, high = (_number(name, p, where) for p in parts)
        if param.kind == "sizes":
            low, high = low[0], high[0]
        if low > high:
            raise ConfigError(f"{where}: the range's low end {low:g} is above its high end {high:g}")
        if param.range == "log" and low <= 0:
            raise ConfigError(
                f"{where}: a log-uniform range needs a low end above 0 (list 0 separately in a grid instead)"
            )
        return Dimension(name, low=float(low), high=float(high))
    items = [s.strip() for s in text.split(",")]
    if not any(items):
        raise ConfigError(f"{flag(name)}: give at least one value, e.g. {flag(name)} {_EXAMPLES[name]}")
    if not all(items):
        raise ConfigError(f"{where}: an empty value between commas")
    values = [s if param.kind == "name" else _number(name, s, where) for s in items]
    if param.kind == "sizes":
        values = [list(v) for v in values]
    unique = []
    for v in values:
        if v not in unique:
            unique.append(v)
    return Dimension(name, values=unique)


_EXAMPLES = {
    "hidden": "64,128,256-128",
    "l2": "0,0.1,1",
    "lr": "1e-3,3e-3",
    "batch_size": "64,128",
    "optimizer": "adam,sgd",
    "dropout": "0,0.2",
}


def _number(name: str, s: str, where: str):
    kind = PARAMS[name].kind
    try:
        if kind == "sizes":
            sizes = tuple(int(part) for part in s.split("-"))
            if not all(h >= 1 for h in sizes):
                raise ValueError
            return sizes
        if kind == "int":
            return int(s)
        x = float(s)
        if not math.isfinite(x):
            raise ValueError
        return x
    except ValueError:
        what = {
            "sizes": "a whole number of units, or sizes joined by '-' such as 256-128",
            "int": "a whole number",
            "float": "a finite number",
        }[kind]
        raise ConfigError(f"{where}: '{s}' is not {what}") from None


@dataclass
class SearchSpec:
    """Everything that defines a search; the same spec always gives the same trials.

    ``space`` maps hyperparameter names (keys of :data:`PARAMS`) to the text
    given for them, e.g. ``{"hidden": "64,128", "l2": "0,1"}``. ``method`` is
    ``"grid"`` (every combination) or ``"random"`` (``trials`` draws, seeded by
    ``seed``). Every trial trains with ``seed`` on the same training split and
    is scored on the same validation split. ``subset`` keeps that many
    training images (a stratified sample); ``prune="median"`` stops trials
    that fall below the median of earlier ones.
    """

    space: dict = field(default_factory=dict)
    method: str = "grid"
    trials: int = 20
    preset: str = "wide-512"
    epochs: int | None = None
    val_fraction: float | None = None
    seed: int = 0
    dataset: str = "mnist"
    subset: int | None = None
    prune: str = "none"

    def validate(self, confirm: bool = False) -> SearchSpec:
        """Check every value now, before any data is loaded; raise :class:`ConfigError`."""
        if not self.space:
            raise ConfigError("nothing to search: give at least one of " + ", ".join(map(flag, PARAMS)))
        unknown = sorted(set(self.space) - set(PARAMS))
        if unknown:
            raise ConfigError(f"cannot search {', '.join(unknown)}; searchable: {', '.join(PARAMS)}")
        if self.method not in ("grid", "random"):
            raise ConfigError(f"unknown search '{self.method}'; choose grid or random")
        if self.prune not in ("none", "median"):
            raise ConfigError(f"unknown pruning rule '{self.prune}'; choose none or median")
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.subset is not None and self.subset < 20:
            raise ConfigError(f"--subset must be at least 20 images, got {self.subset}")
        base = self.base_config()
        for name, dim in self.dimensions().items():
            if dim.is_range and self.method == "grid":
                raise ConfigError(
                    f"{flag(name)} {self.space[name]} is a range: ranges need --search random "
                    f"(a grid takes lists, e.g. {flag(name)} {_EXAMPLES[name]})"
                )
            for value in dim.examples():
                try:
                    TrainConfig.from_dict({**base.to_dict(), **{name: value}}).validate()
                except ConfigError as exc:
                    raise ConfigError(f"{flag(name)} {show(name, value)}: {exc}") from None
        if self.method == "grid" and self.grid_size() > MAX_GRID and not confirm:
            raise ConfigError(
                f"the grid has {self.grid_size():,} trials, more than {MAX_GRID:,}: pass --yes "
                "to run it anyway, or use --search random --trials N"
            )
        return self

    def base_config(self) -> TrainConfig:
        """The configuration every trial starts from (the preset, then the fixed flags)."""
        config = preset(
            self.preset,
            epochs=self.epochs,
            val_fraction=self.val_fraction,
            seed=self.seed,
            dataset=self.dataset,
        ).validate()
        if config.val_fraction <= 0:
            raise ConfigError("a search scores trials on a validation split: --val-fraction must be above 0")
        return config

    def dimensions(self) -> dict[str, Dimension]:
        return {name: parse_dimension(name, self.space[name]) for name in PARAMS if name in self.space}

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dimensions().values() if not d.is_range)

    def trial_params(self) -> list[dict]:
        """Every trial's overrides, in a fixed order: the grid, or ``trials`` distinct random draws."""
        dims = self.dimensions()
        if self.method == "grid":
            return [
                dict(zip(dims, combo, strict=True))
                for combo in itertools.product(*(d.values for d in dims.values()))
            ]
        rng = np.random.default_rng(self.seed)
        trials, seen = [], set()
        for _ in range(50 * self.trials):
            params = {name: d.sample(rng) for name, d in dims.items()}
            if key(params) not in seen:
                seen.add(key(params))
                trials.append(params)
                if len(trials) == self.trials:
                    break
        return trials

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def key(params: dict) -> str:
    """A trial's identity: its overrides as canonical JSON."""
    return json.dumps(params, sort_keys=True)


def trial_config(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with one trial's overrides applied."""
    return TrainConfig.from_dict({**base.to_dict(), **params})
