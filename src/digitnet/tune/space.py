"""What a search tries: hyperparameter values parsed from flags, and the trials they make.

Each searchable hyperparameter is a :class:`Dimension` written as a list
(``"64,110,128"``; a hidden entry ``"256-128"`` is two layers) or, for the
samplers, a range ``"LOW:HIGH"``: log-uniform for ``lr``, ``l2``, ``hidden``
and ``batch_size``, uniform for ``dropout``. Each becomes an Optuna
distribution (:meth:`Dimension.distribution`); Optuna's samplers draw from
them. A trial is a plain dict such as ``{"hidden": [128], "l2": 0.1}``, the
overrides it applies to the base configuration (:func:`decode` turns Optuna's
parameters into one). :class:`SearchSpec` holds everything that defines a
search; it is saved with the study, and a study of another spec is refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field

from digitnet.data.formats import shown
from digitnet.errors import ConfigError
from digitnet.nn import rules
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
        if not self.is_range:
            return self.values
        return [decode(self.name, v) for v in (self.low, self.high)]

    def distribution(self):
        """The Optuna distribution to draw from: categorical over the list, or the range.

        A list's values are encoded for Optuna (:func:`encode`); a range is
        log-scaled for ``hidden``, ``l2``, ``lr`` and ``batch_size``, linear for
        ``dropout``, whole numbers for ``hidden`` and ``batch_size``.
        """
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if not self.is_range:
            return CategoricalDistribution([encode(self.name, v) for v in self.values])
        param = PARAMS[self.name]
        log = param.range == "log"
        if param.kind in ("sizes", "int"):
            return IntDistribution(math.ceil(self.low), math.floor(self.high), log=log)
        return FloatDistribution(self.low, self.high, log=log)


def encode(name: str, value):
    """A trial's value as Optuna stores it: a layer list ``[256, 128]`` -> ``"256-128"``, others as they are."""
    return "-".join(map(str, value)) if name == "hidden" else value


def decode(name: str, value):
    """The inverse of :func:`encode`, and a range's number as a trial uses it (``hidden`` 300.0 -> ``[300]``)."""
    kind = PARAMS[name].kind
    if kind == "sizes":
        return [int(h) for h in value.split("-")] if isinstance(value, str) else [int(round(value))]
    if kind == "int":
        return int(round(value))
    if kind == "float":
        return float(value)
    return value


def decode_params(params: dict) -> dict:
    """Optuna's ``trial.params`` as a trial's overrides, in :data:`PARAMS` order."""
    return {name: decode(name, params[name]) for name in PARAMS if name in params}


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


METHODS = ("grid", "random", "tpe", "cmaes")
PRUNERS = ("none", "median", "halving", "hyperband")
OBJECTIVES = {"accuracy": "maximize", "seconds": "minimize"}  # validation accuracy, training time


@dataclass
class SearchSpec:
    """Everything that defines a search; saved with its study, which refuses a different one.

    ``space`` maps hyperparameter names (keys of :data:`PARAMS`) to the text
    given for them, e.g. ``{"hidden": "64,128", "l2": "0,1"}``. ``method`` is
    ``"grid"`` (every combination), ``"random"``, ``"tpe"`` or ``"cmaes"``
    (``trials`` draws by Optuna's sampler of that name, seeded by ``seed``);
    ``"auto"`` becomes grid for lists and TPE when any value is a range. Every
    trial trains with ``seed`` on the same training split and is scored on the
    same validation split. ``subset`` keeps that many training images (a
    stratified sample). ``prune`` names Optuna's pruner that stops hopeless
    trials between epochs: ``median``, ``halving`` (asynchronous successive
    halving) or ``hyperband``. ``objectives`` are what the study optimises:
    ``["accuracy"]``, or ``["accuracy", "seconds"]`` for a Pareto front.
    """

    space: dict = field(default_factory=dict)
    method: str = "auto"
    trials: int = 20
    preset: str = "wide-512"
    epochs: int | None = None
    val_fraction: float | None = None
    seed: int = 0
    dataset: str = "mnist"
    subset: int | None = None
    prune: str = "none"
    objectives: list = field(default_factory=lambda: ["accuracy"])

    def validate(self, confirm: bool = False) -> SearchSpec:
        """Check every value now, before any data is loaded; raise :class:`ConfigError`.

        Resolves ``method="auto"``.
        """
        self._check_types()
        if not self.space:
            raise ConfigError("nothing to search: give at least one of " + ", ".join(map(flag, PARAMS)))
        unknown = sorted(set(self.space) - set(PARAMS))
        if unknown:
            raise ConfigError(f"cannot search {', '.join(unknown)}; searchable: {', '.join(PARAMS)}")
        dimensions = self.dimensions()
        if self.method == "auto":
            self.method = "tpe" if any(d.is_range for d in dimensions.values()) else "grid"
        if self.method not in METHODS:
            raise ConfigError(f"unknown search '{self.method}'; choose {', '.join(METHODS)}")
        if self.prune not in PRUNERS:
            raise ConfigError(f"unknown pruning rule '{self.prune}'; choose {', '.join(PRUNERS)}")
        self._check_objectives()
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.subset is not None and self.subset < 20:
            raise ConfigError(f"--subset must be at least 20 images, got {self.subset}")
        base = self.base_config()
        for name, dim in dimensions.items():
            if dim.is_range and self.method == "grid":
                raise ConfigError(
                    f"{flag(name)} {self.space[name]} is a range: ranges need --search random or tpe "
                    f"(a grid takes lists, e.g. {flag(name)} {_EXAMPLES[name]})"
                )
            for value in dim.examples():
                try:
                    TrainConfig.from_dict({**base.to_dict(), **{name: value}}).validate()
                except ConfigError as exc:
                    raise ConfigError(f"{flag(name)} {show(name, value)}: {exc}") from None
        if self.method == "cmaes":
            lists = [flag(n) for n, d in dimensions.items() if not d.is_range]
            if lists or len(self.objectives) > 1:
                raise ConfigError(
                    "--search cmaes samples ranges for one objective: "
                    + (
                        f"{', '.join(lists)} {'is a list' if len(lists) == 1 else 'are lists'}"
                        if lists
                        else ""
                    )
                    + ("; " if lists and len(self.objectives) > 1 else "")
                    + ("--objectives has two" if len(self.objectives) > 1 else "")
                    + "; use --search tpe"
                )
        if self.method == "grid" and self.grid_size() > MAX_GRID and not confirm:
            raise ConfigError(
                f"the grid has {self.grid_size():,} trials, more than {MAX_GRID:,}: pass --yes "
                "to run it anyway, or use --search tpe --trials N"
            )
        return self

    def _check_types(self) -> None:
        """Each field holds the kind of value the command line gives it (a spec read back from a search's
        results.json may hold anything JSON can)."""
        number = rules.is_finite  # of each kind; the ranges are checked after

        def whole(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        kinds = {
            "space": (
                isinstance(self.space, dict) and all(isinstance(v, str) for v in self.space.values()),
                "hyperparameter names and the text given for each",
            ),
            **{
                name: (isinstance(getattr(self, name), str), "text")
                for name in ("method", "preset", "dataset", "prune")
            },
            "trials": (whole(self.trials), "a whole number"),
            "seed": (whole(self.seed), "a whole number"),
            "epochs": (self.epochs is None or whole(self.epochs), "a whole number"),
            "subset": (self.subset is None or whole(self.subset), "a whole number"),
            "val_fraction": (self.val_fraction is None or number(self.val_fraction), "a number"),
            "objectives": (
                isinstance(self.objectives, list) and all(isinstance(o, str) for o in self.objectives),
                "a list of names",
            ),
        }
        for name, (ok, what) in kinds.items():
            if not ok:
                raise ConfigError(f"the search's {name} must be {what}, not {shown(getattr(self, name))}")

    def _check_objectives(self) -> None:
        objectives = list(self.objectives)
        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown or not objectives:
            raise ConfigError(
                f"unknown objective '{(unknown or [''])[0]}': --objectives takes accuracy, or accuracy,seconds"
            )
        if "accuracy" not in objectives or len(set(objectives)) != len(objectives):
            raise ConfigError(
                f"--objectives {','.join(objectives)}: give accuracy once, and seconds beside it for a "
                "Pareto front (accuracy,seconds)"
            )
        if len(objectives) > 1 and self.prune != "none":
            raise ConfigError(
                f"--prune {self.prune} needs one objective: Optuna prunes only single-objective studies; "
                "leave out --prune or seconds"
            )

    def directions(self) -> list[str]:
        """Optuna's direction of each objective, in order."""
        return [OBJECTIVES[o] for o in self.objectives]

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

    def distributions(self) -> dict:
        """``{name: optuna distribution}`` of every searched hyperparameter."""
        return {name: d.distribution() for name, d in self.dimensions().items()}

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dimensions().values() if not d.is_range)

    def grid(self) -> list[dict]:
        """Every combination of a grid's lists, as trial overrides, in the order of the flags' values."""
        dims = self.dimensions()
        return [
            dict(zip(dims, combo, strict=True))
            for combo in itertools.product(*(d.values for d in dims.values()))
        ]

    def total(self) -> int:
        """How many trials the search runs: the grid's size, or ``trials`` (no more than the
        combinations when every hyperparameter is a list)."""
        if self.method == "grid":
            return self.grid_size()
        if any(d.is_range for d in self.dimensions().values()):
            return self.trials
        return min(self.trials, self.grid_size())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"a search is described by a dict of its settings, not {shown(d)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def key(params: dict) -> str:
    """A trial's identity: its overrides as canonical JSON."""
    return json.dumps(params, sort_keys=True)


def trial_config(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with one trial's overrides applied."""
    return TrainConfig.from_dict({**base.to_dict(), **params})
