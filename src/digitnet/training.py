"""Training: the run's setup, built once, and one loop of small named steps.

Read it top to bottom:

- :class:`TrainConfig` is every setting of a run, with each setting's rule.
- :func:`prepare` builds a run's :class:`Setup` from a config and a dataset:
  the validation split, the normaliser, the loader with its augmentation, the
  initial network, the learning-rate schedule. ``train`` here and
  :func:`digitnet.interop.torch_train.train_torch` both start from it.
- :class:`NumpyStep` is one training step in NumPy (forward, loss, backward,
  optimiser step); PyTorch's counterpart has the same five methods.
- :class:`Loop` drives a step through the epochs: a batch, an epoch, a
  validation, early stopping, callbacks and Ctrl-C, each a method of a few
  lines. Its :meth:`Loop.state_dict` is everything needed to continue exactly
  where it stopped, which is what a run folder's checkpoint holds
  (:mod:`digitnet.runs`).
- :func:`train` puts them together and measures the result on the test set.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import numbers
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from digitnet import nn
from digitnet.data.augment import (
    MAX_TEST_TIME_SHIFT,
    MIN_ELASTIC_SIGMA,
    Compose,
    ElasticDistortion,
    RandomAffine,
    RandomFlip,
    RandomShift,
)
from digitnet.data.datasets import DATASETS, Dataset, train_val_split
from digitnet.data.formats import first_line, shown
from digitnet.data.loader import DataLoader, Normalizer
from digitnet.errors import ConfigError, DigitnetError
from digitnet.nn import rules
from digitnet.nn.init import INITIALISERS, parse_initialiser

DTYPES = {"float32": np.float32, "float64": np.float64}


class TrainingDiverged(DigitnetError):
    """The loss, or another number of an epoch's record (a gradient's norm), became NaN or infinite."""


def setting(
    default,
    help: str,
    rule=None,
    *,
    group: str = "optimisation",
    metavar: str | None = None,
    choices=None,
    flag: bool = True,
):
    """A :class:`TrainConfig` field: its default, what it means, and the one rule its value follows.

    ``rule(value)`` raises :class:`ConfigError` (most rules are
    :mod:`digitnet.nn.rules`'s, which the network's constructors use too);
    ``choices`` is the table of names the value must be one of. ``help``,
    ``metavar`` and ``group`` become the command-line flag
    (:func:`digitnet.cli.common.add_setting_flags`) unless ``flag`` is False.
    """
    return field(
        default=default,
        metadata={
            "help": help,
            "rule": rule,
            "group": group,
            "metavar": metavar,
            "choices": choices,
            "flag": flag,
        },
    )


# The largest networks and runs a setting allows: far beyond what MNIST needs, and small enough that
# the network, its gradients and the optimiser's averages fit in memory (20 M weights: 80 MB each in
# float32), and that a run ends within days rather than never.
MAX_LAYERS = 63  # hidden layers: with the output layer, the 64 a model file holds (modelfile.MAX_LAYERS)
MAX_UNITS = 16_384
MAX_WEIGHTS = 20_000_000
MAX_EPOCHS = 100_000
MAX_BATCH = 1_000_000
MAX_SEED = 2**32 - 1
INPUTS, CLASSES = 784, 10  # every dataset digitnet reads: 28 x 28 pixels, ten classes


def _hidden(sizes) -> None:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or not sizes:
        raise ConfigError(f"hidden sizes must be a list of at least one whole number, got {sizes!r}")
    if len(sizes) > MAX_LAYERS:
        raise ConfigError(f"at most {MAX_LAYERS} hidden layers are allowed, got {len(sizes)}")
    if not all(
        isinstance(h, numbers.Integral) and not isinstance(h, bool) and 1 <= h <= MAX_UNITS for h in sizes
    ):
        raise ConfigError(
            f"hidden sizes must be at least 1 and at most {MAX_UNITS:,} units, got {','.join(map(str, sizes))}"
        )
    widths = [INPUTS, *map(int, sizes), CLASSES]
    weights = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    if weights > MAX_WEIGHTS:
        raise ConfigError(
            f"hidden sizes {','.join(map(str, sizes))} make {weights:,} weights and biases; "
            f"at most {MAX_WEIGHTS:,} are allowed: use fewer or narrower layers"
        )


def _whole(what: str, low: int, high: int):
    return partial(rules.whole, what=what, low=low, high=high)


def _between(what: str, low: float, high: float, unit: str = "", *, open_high: bool = False):
    def rule(value):
        rules.number(value, what)
        if not (low <= value < high if open_high else low <= value <= high):
            top = f"below {high:g}" if open_high else f"{high:g}"
            raise ConfigError(f"{what} must be {low:g} to {top}{unit}, got {value}")

    return rule


def _elastic_sigma(value) -> None:
    rules.number(value, "the elastic sigma")
    if not MIN_ELASTIC_SIGMA <= value <= 28:
        raise ConfigError(f"the elastic sigma must be from {MIN_ELASTIC_SIGMA} to 28 pixels, got {value}")


@dataclass
class TrainConfig:
    """Everything that defines a training run; presets fill it, flags override it.

    Each field is a :func:`setting`: its default, its meaning and its rule in
    one place, from which ``validate``, the flags of ``digitnet train`` and
    ``torch-train`` and the search's checks all follow. ``batch_size=0`` means
    one batch holding the whole training set (full-batch gradient descent).
    ``l2`` is lambda in the penalty ``lambda / (2 m) sum ||W||^2`` with ``m`` the
    number of training examples.
    """

    preset: str = setting("custom", "the preset the settings started from", flag=False)
    # --dataset comes with --data, so it is no flag of its own here
    dataset: str = setting("mnist", "the dataset", flag=False, choices=DATASETS)
    hidden: tuple = setting(
        (128, 64), "hidden layer sizes, e.g. 256,128", _hidden, group="network", metavar="N,N,..."
    )
    activation: str = setting(
        "relu", "the activation after each hidden layer", group="network", choices=nn.ACTIVATIONS
    )
    init: str = setting(
        "he",
        f"initialiser: {', '.join(INITIALISERS)} (normal:STD sets σ)",
        parse_initialiser,
        group="network",
        metavar="NAME",
    )
    dropout: float = setting(
        0.0,
        "dropout after each hidden layer, 0 <= P < 1",
        partial(rules.fraction, what="dropout"),
        group="network",
        metavar="P",
    )
    optimizer: str = setting("adam", "gd is full-batch gradient descent", choices=nn.OPTIMIZERS)
    lr: float = setting(
        1e-3, "learning rate (the peak rate with onecycle)", partial(rules.positive, what="the learning rate")
    )
    momentum: float = setting(
        0.0, "momentum of sgd and rmsprop, 0 <= M < 1", partial(rules.fraction, what="momentum"), metavar="M"
    )
    nesterov: bool = setting(False, "Nesterov momentum (sgd)")
    batch_size: int = setting(
        64,
        "0 means the whole training set (with --optimizer gd)",
        _whole("the batch size", 0, MAX_BATCH),
        metavar="N",
    )
    epochs: int = setting(25, "passes over the training set", _whole("epochs", 1, MAX_EPOCHS), metavar="N")
    l2: float = setting(
        0.0,
        "L2 penalty λ/(2m)·ΣW², m = training examples",
        partial(rules.non_negative, what="L2"),
        metavar="LAMBDA",
    )
    weight_decay: float = setting(
        0.0,
        "decoupled weight decay (AdamW-style)",
        partial(rules.non_negative, what="weight decay"),
        metavar="RATE",
    )
    schedule: str = setting("constant", "how the learning rate changes over the run", choices=nn.SCHEDULES)
    warmup_epochs: float = setting(
        0.0,
        "epochs of warm-up (cosine) or to the peak (onecycle)",
        partial(rules.non_negative, what="warm-up epochs"),
        metavar="EPOCHS",
    )
    label_smoothing: float = setting(
        0.0, "label smoothing, 0 <= E < 1", partial(rules.fraction, what="label smoothing"), metavar="E"
    )
    val_fraction: float = setting(
        0.1,
        "share of the training set held out for validation",
        partial(rules.fraction, what="the validation fraction"),
        metavar="F",
    )
    normalize: str = setting(
        "scale",
        "pixels to [0, 1], or standardised by the training set's mean and deviation",
        choices=Normalizer.KINDS,
    )
    early_stopping: int = setting(
        0,
        "stop after this many epochs without a better validation loss (0: off)",
        _whole("early-stopping patience", 0, MAX_EPOCHS),
        metavar="PATIENCE",
    )
    augment_shift: int = setting(
        0,
        "move each training digit by up to this many pixels (0: off)",
        _whole("the augmentation shift (pixels)", 0, 8),
        metavar="PIXELS",
    )
    augment_rotate: float = setting(
        0.0,
        "turn each training digit by up to this many degrees either way (0: off)",
        _between("the augmentation rotation", 0, 180, " degrees"),
        metavar="DEGREES",
    )
    augment_scale: float = setting(
        0.0,
        "zoom each training digit by a factor in 1 ± S, e.g. 0.1 (0: off)",
        _between("the augmentation scale", 0, 1, open_high=True),
        metavar="S",
    )
    augment_shear: float = setting(
        0.0,
        "shear each training digit by up to this many degrees either way (0: off)",
        _between("the augmentation shear", 0, 60, " degrees"),
        metavar="DEGREES",
    )
    augment_elastic_alpha: float = setting(
        0.0,
        "strength α of the elastic distortion in pixels, e.g. 34 (0: off)",
        _between("the elastic alpha", 0, 1000, " pixels"),
        metavar="ALPHA",
    )
    augment_elastic_sigma: float = setting(
        4.0, "smoothness σ of the elastic distortion in pixels", _elastic_sigma, metavar="SIGMA"
    )
    augment_flip: bool = setting(False, "mirror each training image left to right half the time (clothes)")
    test_time_shift: int = setting(
        0,
        "the saved model answers with its mean over each image and the image moved by up to this many "
        "pixels each way, (2N+1)^2 views (0: the image alone)",
        _whole("the test-time shift (pixels)", 0, MAX_TEST_TIME_SHIFT),
        metavar="PIXELS",
    )
    seed: int = setting(
        0,
        "one seed for the weights, the split, the shuffles and the dropout masks",
        _whole("the seed", 0, MAX_SEED),
        metavar="N",
    )
    dtype: str = setting("float32", "the network's floating-point type", group="network", choices=DTYPES)

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` naming the first impossible value."""
        _hidden(self.hidden)
        self.hidden = tuple(int(h) for h in self.hidden)
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta.get("choices") is not None:
                rules.one_of(value, list(meta["choices"]), f.name.replace("_", " "))
            if meta.get("rule") is not None:
                meta["rule"](value)
        relations = [
            (not self.nesterov or self.momentum > 0, "--nesterov needs --momentum > 0"),
            (
                self.batch_size >= 1 or (self.batch_size == 0 and self.optimizer == "gd"),
                f"the batch size must be at least 1, got {self.batch_size}",
            ),
            (
                self.early_stopping == 0 or self.val_fraction > 0,
                "early stopping needs a validation split (--val-fraction > 0)",
            ),
            (
                self.warmup_epochs <= self.epochs,
                f"the warm-up ({self.warmup_epochs:g}) cannot be longer than the run: at most "
                f"--epochs ({self.epochs})",
            ),
            (
                not (self.augment_flip and self.dataset == "mnist"),
                "a mirrored digit is not the digit it was (a mirrored 2 is no 2): --augment-flip is for "
                "pictures that mean the same either way round, such as --dataset fashion-mnist",
            ),
        ]
        for ok, message in relations:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def settings(flags_only: bool = True) -> list[dataclasses.Field]:
    """:class:`TrainConfig`'s fields in order (by default those the command line sets)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True) or not flags_only]


@dataclass
class History:
    """What happened during training.

    ``loss`` and ``accuracy`` hold one value per iteration (mini-batch);
    ``epochs`` one dict per epoch with ``epoch, train_loss, train_accuracy,
    val_loss, val_accuracy, lr, seconds``. Callbacks may add keys to
    ``extra`` (a dict of lists) and to each epoch's dict. ``best_epoch`` is
    the epoch with the lowest validation loss; ``restored_epoch`` is the epoch
    whose weights the network holds at the end when early stopping restored
    them (None: the last epoch's).
    """

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    best_epoch: int | None = None
    restored_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_checkpoint(cls, h: dict) -> History:
        """A checkpoint's history (:meth:`Loop.state_dict`'s, its per-iteration rows as arrays), checked
        with :func:`check_history` beforehand."""
        return cls.from_dict(
            {**h, **{key: np.asarray(h[key]).tolist() for key in ("loss", "accuracy", "lr")}}
        )

    def final_epoch(self) -> dict:
        """The record of the epoch whose weights the network ends with: the restored one, else the last."""
        if self.restored_epoch:
            return self.epochs[self.restored_epoch - 1]
        return self.epochs[-1] if self.epochs else {}

    def epochs_csv(self) -> str:
        """The per-epoch records as CSV text (one row per epoch)."""
        if not self.epochs:
            return ""
        columns = list(self.epochs[0])
        for record in self.epochs[1:]:
            columns += [c for c in record if c not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.epochs)
        return out.getvalue()


class Callback:
    """Hooks into the training :class:`Loop`; override the ones you need.

    Each receives the :class:`FitState`; set ``state.stop = True`` to end
    training after the current batch. A callback that keeps state of its own
    across batches (sums over an epoch, say) defines ``state_dict()`` and
    ``load_state_dict(d)`` so that a resumed run carries on with it; the loop
    calls ``load_state_dict`` after the first ``on_epoch_begin`` of a resumed run.
    It may also define ``check_state(d, state)``, which the loop calls when the
    saved state is loaded, before training starts, to refuse one that does not fit
    (raising :class:`~digitnet.errors.ConfigError`).
    """

    def on_train_begin(self, state):
        pass

    def on_epoch_begin(self, state):
        pass

    def on_batch_end(self, state):
        pass

    def on_epoch_end(self, state):
        pass

    def on_train_end(self, state):
        pass


@dataclass
class FitState:
    """The loop's state as callbacks see it."""

    model: object  # the network being trained (an nn.Module, or a torch module)
    optimizer: object
    history: History
    epochs: int
    batches: int  # batches per epoch
    epoch: int = 0  # 1-based once training starts
    iteration: int = 0  # iterations done so far
    batch_loss: float = math.nan
    batch_accuracy: float = math.nan
    stop: bool = False
    interrupted: bool = False  # set by Ctrl-C


# --------------------------------------------------------------------------- the setup
@dataclass
class Setup:
    """A run's pieces, built once from its config and dataset by :func:`prepare`.

    ``x_train``/``x_val`` are normalised float rows ``(n, inputs)``, ``y_train``/``y_val``
    int64 labels ``(n,)``; ``model`` is the NumPy network with its initial weights.
    """

    config: TrainConfig
    dataset: Dataset
    normalizer: Normalizer
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    loader: DataLoader
    model: nn.Sequential
    schedule: object

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The test images normalised as the training images were, and their int64 labels."""
        d = self.dataset
        return self.normalizer(d.x_test, DTYPES[self.config.dtype]), d.y_test.astype(np.int64)

    def test(self, step) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """The test set's (loss, accuracy) as the saved model answers, and the network's alone when that differs.

        With ``test_time_shift`` the model answers with its mean over the shifted views, so the first
        pair is that and the second the single network's; without, the second is None.
        """
        x, y = self.test_set()
        shift = self.config.test_time_shift
        if not shift:
            return step.evaluate(x, y), None
        fill = self.normalizer.black(DTYPES[self.config.dtype])
        return step.evaluate(x, y, test_time_shift=shift, fill=fill), step.evaluate(x, y)

    def metrics(self, history: History, test: tuple, single: tuple | None = None) -> dict:
        """The run's figures; validation and training scores are those of the epoch the network ends with.

        ``test`` is the saved model's (loss, accuracy) on the test set; ``single``, with test-time
        shifts, the network's alone (``test_accuracy_single``).
        """
        final = history.final_epoch()
        seconds = [e["seconds"] for e in history.epochs]
        return {
            "test_accuracy": test[1],
            "test_loss": test[0],
            **({"test_accuracy_single": single[1], "test_loss_single": single[0]} if single else {}),
            "val_accuracy": final.get("val_accuracy"),
            "val_loss": final.get("val_loss"),
            "train_accuracy": final.get("train_accuracy"),
            "final_epoch": final.get("epoch"),
            "best_epoch": history.best_epoch,
            "train_seconds": float(sum(seconds)),
            "epoch_seconds": seconds,
            "epochs": len(history.epochs),
            "n_train": int(len(self.x_train)),
            "n_val": int(len(self.x_val)),
            "n_test": int(len(self.dataset.x_test)),
            "test_held_out": bool(self.dataset.test_held_out),
        }


def prepare(config: TrainConfig, dataset: Dataset) -> Setup:
    """Split off validation, normalise, build the loader, the initial network and the schedule.

    Seeds: one :class:`numpy.random.SeedSequence` from ``config.seed`` spawns
    three, for the weights (and dropout masks), the split and the shuffles.
    Same config, same dataset, same machine: the same setup.
    """
    config.validate()
    n_pixels = dataset.x_train.reshape(len(dataset.x_train), -1).shape[1]
    if config.test_time_shift and math.isqrt(n_pixels) ** 2 != n_pixels:
        raise ConfigError(
            f"test-time shifts need square images; these have {n_pixels} pixels: leave --test-time-shift "
            "at 0 (a preset's too) for this data"
        )
    seeds = np.random.SeedSequence(config.seed).spawn(3)  # weights, split, shuffles
    dtype = DTYPES[config.dtype]
    x_tr, y_tr, x_val, y_val = train_val_split(
        dataset.x_train, dataset.y_train, config.val_fraction, seed=int(seeds[1].generate_state(1)[0])
    )
    normalizer = Normalizer(config.normalize).fit(x_tr)
    x_tr_f, x_val_f = normalizer(x_tr, dtype), normalizer(x_val, dtype)
    batch_size = min(config.batch_size or len(x_tr_f), len(x_tr_f))
    loader = DataLoader(
        x_tr_f,
        y_tr.astype(np.int64),
        batch_size=batch_size,
        shuffle=batch_size < len(x_tr_f),
        rng=np.random.default_rng(seeds[2]),
        transform=_augmentation(config, normalizer, x_tr_f.shape[1]),
    )
    model = build_model(config, x_tr_f.shape[1], len(dataset.class_names), np.random.default_rng(seeds[0]))
    schedule = nn.make_schedule(
        config.schedule, config.lr, config.epochs, len(loader), warmup_epochs=config.warmup_epochs
    )
    return Setup(
        config,
        dataset,
        normalizer,
        x_tr_f,
        y_tr.astype(np.int64),
        x_val_f,
        y_val.astype(np.int64),
        loader,
        model,
        schedule,
    )


def _augmentation(config: TrainConfig, normalizer: Normalizer, n_pixels: int):
    """The loader's per-batch transform: shift, flip, affine, elastic, whichever are on (or None).

    Raises :class:`ConfigError` when one is on and the images are not square.
    """
    c = config
    fill = normalizer.black()
    wanted = [
        (c.augment_shift, lambda side: RandomShift(c.augment_shift, side, fill=fill)),
        (c.augment_flip, lambda side: RandomFlip(side, fill=fill)),
        (
            c.augment_rotate or c.augment_scale or c.augment_shear,
            lambda side: RandomAffine(
                c.augment_rotate, c.augment_scale, c.augment_shear, side=side, fill=fill
            ),
        ),
        (
            c.augment_elastic_alpha,
            lambda side: ElasticDistortion(c.augment_elastic_alpha, c.augment_elastic_sigma, side, fill=fill),
        ),
    ]
    if not any(on for on, _ in wanted):
        return None
    side = int(round(math.sqrt(n_pixels)))
    if side * side != n_pixels:
        raise ConfigError(
            f"shifts, flips, affine maps and elastic distortion need square images; these have {n_pixels} "
            "pixels: leave the --augment-* settings at 0 (a preset's too) for this data"
        )
    transforms = [make(side) for on, make in wanted if on]
    return transforms[0] if len(transforms) == 1 else Compose(*transforms)


def build_model(config: TrainConfig, n_inputs: int, n_classes: int, rng) -> nn.Sequential:
    return nn.mlp(
        [n_inputs, *config.hidden, n_classes],
        activation=config.activation,
        dropout=config.dropout,
        init=config.init,
        rng=rng,
        dtype=DTYPES[config.dtype],
    )


def build_optimizer(config: TrainConfig, params, n_train: int) -> nn.Optimizer:
    """The optimiser named in ``config``; L2's lambda is divided by the training-set size here."""
    kw = dict(lr=config.lr, l2=config.l2 / max(1, n_train), weight_decay=config.weight_decay)
    if config.optimizer in ("sgd", "gd"):
        return nn.SGD(params, momentum=config.momentum, nesterov=config.nesterov, **kw)
    if config.optimizer == "rmsprop":
        return nn.RMSProp(params, momentum=config.momentum, **kw)
    return nn.OPTIMIZERS[config.optimizer](params, **kw)


# --------------------------------------------------------------------------- one step
def evaluate_arrays(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 8192,
    loss_fn=None,
    test_time_shift: int = 0,
    fill: float = 0.0,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on float inputs ``x`` ``(n, inputs)``, labels ``y`` ``(n,)``.

    Uses :meth:`~digitnet.nn.Module.predict`, so the network's training caches and mode are untouched.
    With ``test_time_shift`` the outputs are the mean over the shifted views
    (:func:`digitnet.modelfile.test_time_logits`; ``fill`` is a black pixel's normalised value).
    """
    from digitnet.modelfile import test_time_logits

    loss_fn = loss_fn or nn.SoftmaxCrossEntropy()
    total_loss = correct = 0.0
    for i in range(0, len(x), batch_size):
        logits = test_time_logits(model.predict, x[i : i + batch_size], test_time_shift, fill)
        yb = y[i : i + batch_size]
        total_loss += loss_fn.forward(logits, yb) * len(yb)
        correct += np.count_nonzero(logits.argmax(axis=1) == yb)
    n = max(1, len(x))
    return total_loss / n, correct / n


class NumpyStep:
    """One training step in NumPy: ``forward`` (logits and loss), then ``update`` (backward, optimiser step).

    The loop also asks a step to ``evaluate`` the network, to copy and restore its
    weights (early stopping), and for its ``state_dict`` (checkpoints): the
    weights, the optimiser's state and the dropout layers' random generators.
    """

    def __init__(self, model: nn.Sequential, optimizer: nn.Optimizer, loss_fn=None):
        self.model, self.optimizer = model, optimizer
        self.loss_fn = loss_fn or nn.SoftmaxCrossEntropy()

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    @property
    def decays(self) -> bool:
        """Does the step shrink the weights (an L2 penalty or weight decay)?"""
        return bool(self.optimizer.l2 or self.optimizer.weight_decay)

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def forward(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
        """The batch's mean loss and the share it classifies right; keeps what ``update`` needs."""
        logits = self.model.forward(xb)
        correct = np.count_nonzero(logits.argmax(axis=1) == yb) / len(yb)
        return self.loss_fn.forward(logits, yb), correct

    def update(self) -> None:
        """Backpropagate the last ``forward``'s loss and take an optimiser step."""
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.optimizer.step()

    def evaluate(self, x: np.ndarray, y: np.ndarray, test_time_shift: int = 0, fill: float = 0.0):
        """(loss, accuracy) on ``x``, ``y``; with ``test_time_shift``, of the mean over the shifted views."""
        return evaluate_arrays(self.model, x, y, test_time_shift=test_time_shift, fill=fill)

    def weights(self) -> dict:
        return self.model.state_dict()

    def load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {str(i): layer.rng.bit_generator.state for i, layer in self._dropouts()},
        }

    def check_state(self, state) -> None:
        """Raise :class:`~digitnet.errors.ConfigError` when ``state`` is not a :meth:`state_dict` of this
        network: its weights (names, shapes, finite values) and its generators (the optimiser checks its own
        part when it loads it)."""
        _need(
            isinstance(state, dict) and {"model", "optimizer", "rng"} <= set(state),
            "step",
            "a dict with model, optimizer and rng",
            state,
        )
        _check_arrays(state["model"], self.weights(), "step/model")
        rng, dropouts = state["rng"], self._dropouts()
        names = sorted(str(i) for i, _ in dropouts)
        _need(
            isinstance(rng, dict) and sorted(rng) == names,
            "step/rng",
            f"the generators of the dropout layers {names}",
            rng,
        )
        for i, layer in dropouts:
            try:
                type(layer.rng.bit_generator)().state = rng[str(i)]
            except (TypeError, ValueError, KeyError, OverflowError) as exc:
                raise ConfigError(
                    f"the generator of dropout layer {i} does not fit a "
                    f"{type(layer.rng.bit_generator).__name__} ({first_line(exc)})"
                ) from None

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        rng = state["rng"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for i, layer in self._dropouts():
            layer.rng.bit_generator.state = rng[str(i)]

    def _dropouts(self):
        return [(i, layer) for i, layer in enumerate(self.model.layers) if isinstance(layer, nn.Dropout)]


# --------------------------------------------------------------------------- the loop
class Loop:
    """Train with ``step`` over ``loader`` for ``epochs`` epochs.

    Parameters
    ----------
    step : :class:`NumpyStep` or PyTorch's ``TorchStep``
    loader : :class:`~digitnet.data.loader.DataLoader` of ``(xb, yb)`` float batches and integer labels
    epochs : int
    schedule : callable ``it -> lr``, optional (default: keep the optimiser's rate)
    val : ``(x_val, y_val)``, optional, evaluated after every epoch
    early_stopping : int
        Patience in epochs without a lower validation loss; the best weights are restored.
    callbacks : iterable of :class:`Callback`
    checkpoint : callable, optional
        ``checkpoint(state_dict)``, called after every epoch and when training is
        stopped part-way through one, with :meth:`state_dict`.

    Ctrl-C (SIGINT) ends training after the current batch; the history says so.
    """

    def __init__(
        self,
        step,
        loader,
        epochs: int,
        schedule=None,
        val: tuple | None = None,
        early_stopping: int = 0,
        callbacks=(),
        checkpoint=None,
    ):
        self.step, self.loader, self.epochs, self.schedule = step, loader, epochs, schedule
        self.val = val if val is not None and len(val[0]) else None
        self.patience, self.callbacks, self.checkpoint = early_stopping, list(callbacks), checkpoint
        self.history = History()
        self.state = FitState(step.model, step.optimizer, self.history, epochs, len(loader))
        self.best_loss, self.best_weights, self.waited = math.inf, None, 0
        self.partial = None  # an epoch stopped part-way: its sums so far
        self._callback_states = None  # loaded from a checkpoint, handed over once the callbacks have begun

    @np.errstate(
        over="ignore", invalid="ignore"
    )  # a diverging loss is caught once, in batch(), not warned about
    def run(self) -> History:
        """Train in place and return the :class:`History`. Raises :class:`TrainingDiverged`."""
        restore_sigint = _catch_sigint(self.state)
        self.step.train()
        try:
            self._call("on_train_begin")
            if not self.out_of_patience():  # a resumed run may have stopped early already
                for epoch in range(len(self.history.epochs) + 1, self.epochs + 1):
                    if not self.epoch(epoch) or self.out_of_patience() or self.state.stop:
                        break
            self.finish()
        finally:
            restore_sigint()
            self.step.train(False)
        return self.history

    def epoch(self, epoch: int) -> bool:
        """Run one epoch (or the rest of one); return whether it ran to its end."""
        self.state.epoch = epoch
        self._call("on_epoch_begin")
        self._restore_callbacks()
        sums = self.partial or {"loss": 0.0, "accuracy": 0.0, "batches": 0, "seconds": 0.0}
        self.partial = None
        started = time.perf_counter()
        for xb, yb in self.loader:
            loss, correct = self.batch(xb, yb)
            sums["loss"] += loss
            sums["accuracy"] += correct
            sums["batches"] += 1
            self._call("on_batch_end")
            if self.state.stop:
                break
        sums["seconds"] += time.perf_counter() - started
        record = self.record(epoch, sums)
        if sums["batches"] < len(
            self.loader
        ):  # stopped part-way: the checkpoint keeps the sums, not a record
            self.check_finite(record)
            self.partial = sums
            self.save_checkpoint()
            self.history.epochs.append(record)
            self._call("on_epoch_end")
            return False
        self.history.epochs.append(record)
        self.keep_best(record)
        self._call("on_epoch_end")  # the diagnostics add their gradient norms here
        self.check_finite(record)
        self.save_checkpoint()
        return True

    def batch(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
        """One step on one batch at the schedule's learning rate; returns its loss and accuracy."""
        state, step = self.state, self.step
        if self.schedule is not None:
            step.lr = self.schedule(state.iteration)
        loss, correct = step.forward(xb, yb)
        if not math.isfinite(loss):
            raise self.diverged(f"the loss became {loss}")
        try:
            step.update()
        except FloatingPointError as exc:  # a step whose size is beyond the weights' range (PyTorch's)
            raise self.diverged(f"the optimiser's step overflowed ({exc})") from None
        state.iteration += 1
        state.batch_loss, state.batch_accuracy = loss, correct
        self.history.loss.append(loss)
        self.history.accuracy.append(correct)
        self.history.lr.append(step.lr)
        return loss, correct

    def diverged(self, what: str, batch: bool = True) -> TrainingDiverged:
        """The error for a number that left the floating-point range (in this batch, or else in this
        epoch's record), with where and what to change."""
        where = f"at epoch {self.state.epoch}" + (f", iteration {self.state.iteration + 1}" if batch else "")
        advice = f"try a lower learning rate (it was {self.step.lr:g})"
        if self.step.decays:
            advice += " or a smaller L2 penalty or weight decay"
        return TrainingDiverged(f"{what} {where}: training diverged; {advice}")

    def check_finite(self, record: dict) -> None:
        """Raise :class:`TrainingDiverged` when a number of the epoch's record is not finite: every loss
        was, but their sum can overflow, and so can a gradient's norm (the diagnostics') while the loss
        does not. Called before a checkpoint, which holds only finite numbers."""
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise self.diverged(f"the epoch's {key} became {value}", batch=False)

    def record(self, epoch: int, sums: dict) -> dict:
        """The epoch's line of the history: mean training loss and accuracy, then validation."""
        done = max(sums["batches"], 1)
        record = {
            "epoch": epoch,
            "train_loss": sums["loss"] / done,
            "train_accuracy": sums["accuracy"] / done,
            "val_loss": None,
            "val_accuracy": None,
            "lr": self.step.lr,
            "seconds": sums["seconds"],
        }
        if self.val is not None:
            record["val_loss"], record["val_accuracy"] = self.step.evaluate(*self.val)
        return record

    def keep_best(self, record: dict) -> None:
        """Early stopping's bookkeeping: the lowest validation loss so far, its epoch and its weights."""
        if record["val_loss"] is None:
            return
        if record["val_loss"] < self.best_loss:
            self.best_loss, self.waited, self.history.best_epoch = record["val_loss"], 0, record["epoch"]
            if self.patience:
                self.best_weights = self.step.weights()
        else:
            self.waited += 1

    def out_of_patience(self) -> bool:
        """Has the validation loss not improved for ``early_stopping`` epochs? Then the history says so."""
        if self.patience and self.waited >= self.patience:
            self.history.stopped_early = True
        return self.history.stopped_early

    def finish(self) -> None:
        """Restore the best weights when early stopping kept them, and tell the callbacks."""
        h = self.history
        h.interrupted = self.state.interrupted
        if self.best_weights is not None and h.best_epoch != len(h.epochs):
            self.step.load_weights(self.best_weights)
            h.restored_epoch = h.best_epoch
        self._call("on_train_end")

    # -- checkpoints ----------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self.state_dict())

    def state_dict(self) -> dict:
        """Everything needed to go on exactly from here: arrays and plain JSON-ready values.

        Holds the history so far (per-iteration lists as float64 arrays), the
        iteration count, the sums of an epoch stopped part-way, early stopping's
        best loss, patience and weights, the step's state (weights, optimiser,
        random generators), the loader's (its generator, the epoch's order, the
        position in it) and that of each callback that has one.
        """
        h = self.history.to_dict()
        for key in ("loss", "accuracy", "lr"):
            h[key] = np.asarray(h[key], dtype=np.float64)
        return {
            "iteration": self.state.iteration,
            "history": h,
            "partial": self.partial,
            "early_stopping": {
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "waited": self.waited,
                "best_weights": self.best_weights,
            },
            "step": self.step.state_dict(),
            "loader": self.loader.state_dict(),
            "callbacks": {
                type(cb).__name__: cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output (of a loop with the same settings).

        Every part of ``state`` is checked first (:meth:`check_state`), so a
        damaged or crafted one raises :class:`~digitnet.errors.ConfigError`
        before training starts, not part-way through it.
        """
        try:
            self.check_state(state)
        except ConfigError as exc:
            raise ConfigError(f"the saved training state does not fit this run: {exc}") from None
        history = History.from_checkpoint(state["history"])
        iteration = int(state["iteration"])
        self.step.load_state_dict(state["step"])
        self.loader.load_state_dict(state["loader"])
        self.history = self.state.history = history
        self.state.iteration = iteration
        self.partial = state.get("partial")
        early = state["early_stopping"]
        self.best_loss = math.inf if early["best_loss"] is None else float(early["best_loss"])
        self.waited, self.best_weights = int(early["waited"]), early.get("best_weights")
        self._callback_states = state.get("callbacks") or {}

    def check_state(self, state) -> None:
        """Raise :class:`~digitnet.errors.ConfigError` naming the first part of ``state`` this loop cannot
        continue from: a missing key, a value of the wrong type, out of range or not finite, an array of
        another shape. What the step, the loader and the callbacks hold is checked by each of them.
        """
        _need(isinstance(state, dict), "state", "a dict", state)
        for key in ("iteration", "history", "partial", "early_stopping", "step", "loader"):
            _need(key in state, key, "present", "nothing")
        iteration = state["iteration"]
        _need(rules.is_whole(iteration), "iteration", "a whole number >= 0", iteration)
        check_history(
            state["history"], finite=True, iteration=iteration, epochs=self.epochs, where="history/"
        )
        partial = state["partial"]
        if partial is not None:
            _need(
                isinstance(partial, dict) and set(partial) == {"loss", "accuracy", "batches", "seconds"},
                "partial",
                "None or the sums loss, accuracy, batches and seconds",
                partial,
            )
            for key in ("loss", "accuracy", "seconds"):
                _need(rules.is_finite(partial[key]), f"partial/{key}", "a finite number", partial[key])
            batches = partial["batches"]
            _need(
                rules.is_whole(batches) and batches < len(self.loader),
                "partial/batches",
                f"a whole number of batches below {len(self.loader)}",
                batches,
            )
        early = state["early_stopping"]
        _need(
            isinstance(early, dict) and {"best_loss", "waited"} <= set(early),
            "early_stopping",
            "a dict with best_loss and waited",
            early,
        )
        best = early["best_loss"]
        _need(
            best is None or rules.is_finite(best), "early_stopping/best_loss", "None or a finite number", best
        )
        _need(
            rules.is_whole(early["waited"]), "early_stopping/waited", "a whole number >= 0", early["waited"]
        )
        weights = early.get("best_weights")
        if weights is not None:
            _check_arrays(weights, self.step.weights(), "early_stopping/best_weights")
        self.step.check_state(state["step"])
        self.loader.check_state(state["loader"])
        saved = state.get("callbacks") or {}
        _need(isinstance(saved, dict), "callbacks", "a dict", saved)
        for cb in self.callbacks:
            name = type(cb).__name__
            if name in saved and hasattr(cb, "check_state"):
                cb.check_state(saved[name], self.state)

    def _restore_callbacks(self) -> None:
        if self._callback_states is None:
            return
        for cb in self.callbacks:
            saved = self._callback_states.get(type(cb).__name__)
            if saved is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved)
        self._callback_states = None

    def _call(self, hook: str) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.state)


# An epoch's record: the numbers it always holds, those it holds or None (no validation split, no
# batch sampled), and the keys that, when there, hold a number or None. Callbacks may add keys holding
# numbers or text.
EPOCH_NUMBERS = ("epoch", "train_loss", "train_accuracy", "seconds")
EPOCH_NUMBERS_OR_NONE = ("val_loss", "val_accuracy")
EPOCH_OPTIONAL = ("lr", "iteration", "grad_norm_", "inactive_")


def check_history(h, finite: bool = False, iteration=None, epochs=None, where: str = "") -> None:
    """Raise :class:`~digitnet.errors.ConfigError` naming the first value of ``h`` (a
    :meth:`History.to_dict`, as read from a file) that no run writes.

    The per-iteration rows are numbers; each epoch's record is numbered from 1 and holds numbers under
    :data:`EPOCH_NUMBERS` (and, or None, under the other keys this module and the diagnostics write),
    numbers or text under others; ``best_epoch`` and
    ``restored_epoch`` are among the epochs. With ``finite``, no number is NaN or infinite; with
    ``iteration``, every row has that length (else they have one length); with ``epochs``, there are at
    most that many.
    ``where`` starts each name in the message (``history/`` in a checkpoint's state).
    """
    number = rules.is_finite if finite else (lambda v: rules.is_finite(v) or isinstance(v, float))
    _need(isinstance(h, dict), where or "history", "a dict", h)
    for key in ("loss", "accuracy", "lr"):
        values = h.get(key)
        if isinstance(values, np.ndarray):
            values = values.tolist() if values.ndim == 1 else None
        _need(
            isinstance(values, list) and all(number(v) for v in values),
            f"{where}{key}",
            "a row of numbers",
            h.get(key),
        )
        _need(
            iteration is None or len(values) == iteration,
            f"{where}{key}",
            f"{iteration} values (one a batch)",
            len(values),
        )
        iteration = len(values)  # the other rows have as many
    records = h.get("epochs")
    limit = "" if epochs is None else f" of at most {epochs}"
    _need(
        isinstance(records, list) and len(records) <= (epochs or len(records)),
        f"{where}epochs",
        f"a list{limit}",
        records,
    )
    for i, record in enumerate(records, 1):
        at = f"{where}epochs/{i}"
        _need(isinstance(record, dict), at, "a dict", record)
        for key in EPOCH_NUMBERS:
            _need(number(record.get(key)), f"{at}/{key}", "a number", record.get(key))
        for key in EPOCH_NUMBERS_OR_NONE:
            _need(key in record, f"{at}/{key}", "a number or None", "nothing")
        for key, value in record.items():
            numeric = key in EPOCH_NUMBERS_OR_NONE or key.startswith(EPOCH_OPTIONAL)
            ok = value is None or number(value) or (isinstance(value, str) and not numeric)
            _need(ok, f"{at}/{key}", "a number or None" if numeric else "a number, text or None", value)
        _need(record.get("epoch") == i, f"{at}/epoch", str(i), record.get("epoch"))
        seconds = record.get("seconds")
        _need(rules.is_finite(seconds) and seconds >= 0, f"{at}/seconds", "a number >= 0", seconds)
    extra = h.get("extra", {})
    _need(isinstance(extra, dict), f"{where}extra", "a dict", extra)
    if "diagnostics" in extra:
        info = extra["diagnostics"]
        layers = info.get("layers") if isinstance(info, dict) else None
        ok = isinstance(layers, list) and all(
            isinstance(n, str) and re.fullmatch(r"\d+→\d+", n) for n in layers
        )
        ok = ok and isinstance(info.get("activation", ""), str)
        _need(
            ok,
            f"{where}extra/diagnostics",
            "a dict naming the layers (such as 784→128) and the activation",
            info,
        )
    for key in ("best_epoch", "restored_epoch"):
        value = h.get(key)
        _need(
            value is None or rules.is_whole(value, 1) and value <= len(records),
            f"{where}{key}",
            f"None or an epoch from 1 to {len(records)}",
            value,
        )
    for key in ("stopped_early", "interrupted"):
        _need(isinstance(h.get(key, False), bool), f"{where}{key}", "true or false", h.get(key))


def _need(ok: bool, where: str, what: str, value) -> None:
    """Refuse a value read from a file: its place ``where`` should hold ``what``."""
    if not ok:
        text = f"an array of shape {value.shape}" if isinstance(value, np.ndarray) else shown(value)
        raise ConfigError(f"'{where}' must be {what}, not {text[:80]}")


def _check_arrays(saved, own: dict, where: str) -> None:
    """``saved`` must hold float arrays of finite values, named and shaped as ``own``'s."""
    _need(isinstance(saved, dict) and set(saved) == set(own), where, f"arrays named {sorted(own)}", saved)
    for name, mine in own.items():
        value = saved[name]
        ok = isinstance(value, np.ndarray) and value.shape == mine.shape and value.dtype.kind == "f"
        _need(ok, f"{where}/{name}", f"a float array of shape {mine.shape}", value)
        _need(bool(np.isfinite(value).all()), f"{where}/{name}", "finite", value)


def _catch_sigint(state: FitState):
    """Make Ctrl-C set ``state.stop`` instead of raising; return a function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if state.stop:  # a second Ctrl-C: stop at once
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        state.stop = True
        state.interrupted = True

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def fit(
    model: nn.Module,
    optimizer: nn.Optimizer,
    loader: DataLoader,
    epochs: int,
    loss_fn=None,
    schedule=None,
    val: tuple | None = None,
    early_stopping: int = 0,
    callbacks=(),
) -> History:
    """Train ``model`` in place with ``optimizer`` and return its :class:`History` (see :class:`Loop`).

    Raises
    ------
    TrainingDiverged
        When the loss becomes NaN or infinite.
    """
    loop = Loop(
        NumpyStep(model, optimizer, loss_fn),
        loader,
        epochs,
        schedule=schedule,
        val=val,
        early_stopping=early_stopping,
        callbacks=callbacks,
    )
    return loop.run()


# --------------------------------------------------------------------------- a whole run
@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    normalizer: Normalizer
    history: History
    config: TrainConfig
    metrics: dict
    dataset: Dataset


def train(
    config: TrainConfig, dataset: Dataset, callbacks=(), checkpoint=None, resume: dict | None = None
) -> TrainResult:
    """Run a whole training: :func:`prepare`, the :class:`Loop` with a :class:`NumpyStep`, the test set.

    The test set is touched once, at the end. Same config and seed on the same
    machine give identical weights. ``checkpoint`` is passed to the loop;
    ``resume`` is a :meth:`Loop.state_dict` to continue from.
    """
    setup = prepare(config, dataset)
    step = NumpyStep(
        setup.model,
        build_optimizer(config, setup.model.parameters(), len(setup.x_train)),
        nn.SoftmaxCrossEntropy(config.label_smoothing),
    )
    loop = Loop(
        step,
        setup.loader,
        config.epochs,
        schedule=setup.schedule,
        val=(setup.x_val, setup.y_val),
        early_stopping=config.early_stopping,
        callbacks=callbacks,
        checkpoint=checkpoint,
    )
    if resume is not None:
        loop.load_state_dict(resume)
    history = loop.run()
    metrics = setup.metrics(history, *setup.test(step))
    return TrainResult(setup.model, setup.normalizer, history, config, metrics, dataset)
