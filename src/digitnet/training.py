"""The fit loop: batches in, a trained network and its history out.

:func:`fit` runs epochs of forward, loss, backward and optimiser step over a
:class:`~digitnet.data.loader.DataLoader`, records every iteration and every
epoch in a :class:`History`, evaluates on a validation set, stops early when
asked, and calls :class:`Callback` hooks (progress bars and live views hang
there). :func:`train` does a whole run from a :class:`TrainConfig`: split,
normalise, build, fit, test.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from digitnet import nn
from digitnet.data.augment import RandomShift
from digitnet.data.datasets import Dataset, train_val_split
from digitnet.data.loader import DataLoader, Normalizer
from digitnet.errors import ConfigError, DigitnetError

DTYPES = {"float32": np.float32, "float64": np.float64}


class TrainingDiverged(DigitnetError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; presets fill it, flags override it.

    ``batch_size=0`` means one batch holding the whole training set (full-batch
    gradient descent). ``l2`` is lambda in the penalty ``lambda / (2 m) sum ||W||^2``
    with ``m`` the number of training examples. ``early_stopping`` is the
    patience in epochs (0: off). ``augment_shift`` moves each training digit
    by up to that many pixels (0: off).
    """

    preset: str = "custom"
    dataset: str = "mnist"
    hidden: tuple = (128, 64)
    activation: str = "relu"
    init: str = "he"
    dropout: float = 0.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    batch_size: int = 64
    epochs: int = 25
    l2: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    val_fraction: float = 0.1
    normalize: str = "scale"
    early_stopping: int = 0
    augment_shift: int = 0
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first impossible value."""
        self.hidden = tuple(int(h) for h in self.hidden)
        checks = [
            (all(h >= 1 for h in self.hidden), f"hidden sizes must be at least 1, got {list(self.hidden)}"),
            (self.activation in nn.ACTIVATIONS, f"unknown activation '{self.activation}'; choose one of {', '.join(nn.ACTIVATIONS)}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.optimizer in nn.OPTIMIZERS, f"unknown optimizer '{self.optimizer}'; choose one of {', '.join(nn.OPTIMIZERS)}"),
            (self.lr > 0 and math.isfinite(self.lr), f"the learning rate must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (not self.nesterov or self.momentum > 0, "--nesterov needs --momentum > 0"),
            (self.batch_size >= 1 or (self.batch_size == 0 and self.optimizer == "gd"),
             f"the batch size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.l2 >= 0, f"L2 must be >= 0, got {self.l2}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.schedule in nn.SCHEDULES, f"unknown schedule '{self.schedule}'; choose one of {', '.join(nn.SCHEDULES)}"),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.val_fraction < 1, f"the validation fraction must be in [0, 1), got {self.val_fraction}"),
            (self.normalize in Normalizer.KINDS, f"unknown normalisation '{self.normalize}'; choose one of {', '.join(Normalizer.KINDS)}"),
            (self.early_stopping >= 0, f"early-stopping patience must be >= 0, got {self.early_stopping}"),
            (self.early_stopping == 0 or self.val_fraction > 0, "early stopping needs a validation split (--val-fraction > 0)"),
            (0 <= self.augment_shift <= 8, f"the augmentation shift must be 0 to 8 pixels, got {self.augment_shift}"),
            (self.dtype in DTYPES, f"unknown dtype '{self.dtype}'; choose float32 or float64"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


@dataclass
class History:
    """What happened during training.

    ``loss`` and ``accuracy`` hold one value per iteration (mini-batch);
    ``epochs`` one dict per epoch with ``epoch, train_loss, train_accuracy,
    val_loss, val_accuracy, lr, seconds``. Callbacks may add keys to
    ``extra`` (a dict of lists) and to each epoch's dict.
    """

    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    best_epoch: int | None = None
    stopped_early: bool = False
    interrupted: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

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
    """Hooks into :func:`fit`; override the ones you need.

    Each receives the :class:`FitState`; set ``state.stop = True`` to end
    training after the current batch.
    """

    def on_train_begin(self, state): pass
    def on_epoch_begin(self, state): pass
    def on_batch_end(self, state): pass
    def on_epoch_end(self, state): pass
    def on_train_end(self, state): pass


@dataclass
class FitState:
    """The loop's state as callbacks see it."""

    model: nn.Module
    optimizer: nn.Optimizer
    history: History
    epochs: int
    batches: int                  # batches per epoch
    epoch: int = 0                # 1-based once training starts
    iteration: int = 0            # iterations done so far
    batch_loss: float = math.nan
    batch_accuracy: float = math.nan
    stop: bool = False
    interrupted: bool = False     # set by Ctrl-C


def evaluate_arrays(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 8192,
                    loss_fn=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) on float inputs ``x`` ``(n, 784)``."""
    loss_fn = loss_fn or nn.SoftmaxCrossEntropy()
    was_training = model.training
    model.eval()
    total_loss = correct = 0.0
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size])
        yb = y[i:i + batch_size]
        total_loss += loss_fn.forward(logits, yb) * len(yb)
        correct += np.count_nonzero(logits.argmax(axis=1) == yb)
    model.train(was_training)
    n = max(1, len(x))
    return total_loss / n, correct / n


@np.errstate(over="ignore", invalid="ignore")     # a diverging loss is caught once, below, not warned about
def fit(model: nn.Module, optimizer: nn.Optimizer, loader: DataLoader, epochs: int,
        loss_fn=None, schedule=None, val: tuple | None = None, early_stopping: int = 0,
        callbacks=()) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Parameters
    ----------
    model, optimizer : the network and an optimiser built on its parameters
    loader : DataLoader of ``(xb, yb)`` float batches and integer labels
    epochs : int
    loss_fn : default :class:`~digitnet.nn.SoftmaxCrossEntropy`
    schedule : callable ``it -> lr``, optional (default: keep ``optimizer.lr``)
    val : ``(x_val, y_val)``, optional, evaluated after every epoch
    early_stopping : int
        Patience in epochs without a lower validation loss; the best weights are restored.
    callbacks : iterable of :class:`Callback`

    Raises
    ------
    TrainingDiverged
        When the loss becomes NaN or infinite.

    Ctrl-C (SIGINT) ends training after the current batch; the history says so.
    """
    loss_fn = loss_fn or nn.SoftmaxCrossEntropy()
    history = History()
    state = FitState(model, optimizer, history, epochs, len(loader))
    best_loss, best_weights, waited = math.inf, None, 0
    restore_sigint = _catch_sigint(state)
    model.train()
    try:
        for cb in callbacks:
            cb.on_train_begin(state)
        for epoch in range(1, epochs + 1):
            state.epoch = epoch
            for cb in callbacks:
                cb.on_epoch_begin(state)
            started = time.perf_counter()
            loss_sum = acc_sum = 0.0
            done = 0
            for xb, yb in loader:
                if schedule is not None:
                    optimizer.lr = schedule(state.iteration)
                logits = model.forward(xb)
                correct = np.count_nonzero(logits.argmax(axis=1) == yb) / len(yb)
                loss = loss_fn.forward(logits, yb)
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"the loss became {loss} at epoch {epoch}, iteration {state.iteration + 1}: "
                        f"training diverged; try a lower learning rate (it was {optimizer.lr:g})")
                model.backward(loss_fn.backward(), input_grad=False)
                optimizer.step()
                state.iteration += 1
                state.batch_loss, state.batch_accuracy = loss, correct
                history.loss.append(loss)
                history.accuracy.append(correct)
                history.lr.append(optimizer.lr)
                loss_sum += loss
                acc_sum += correct
                done += 1
                for cb in callbacks:
                    cb.on_batch_end(state)
                if state.stop:
                    break
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(done, 1),
                "train_accuracy": acc_sum / max(done, 1),
                "val_loss": None,
                "val_accuracy": None,
                "lr": optimizer.lr,
                "seconds": time.perf_counter() - started,
            }
            if val is not None and len(val[0]):
                record["val_loss"], record["val_accuracy"] = evaluate_arrays(model, val[0], val[1])
                if record["val_loss"] < best_loss:
                    best_loss, waited, history.best_epoch = record["val_loss"], 0, epoch
                    if early_stopping:
                        best_weights = model.state_dict()
                else:
                    waited += 1
            history.epochs.append(record)
            for cb in callbacks:
                cb.on_epoch_end(state)
            if early_stopping and waited >= early_stopping:
                history.stopped_early = True
                break
            if state.stop:
                break
        history.interrupted = state.interrupted
        if best_weights is not None and history.best_epoch != len(history.epochs):
            model.load_state_dict(best_weights)
        for cb in callbacks:
            cb.on_train_end(state)
    finally:
        restore_sigint()
        model.eval()
    return history


def _catch_sigint(state: FitState):
    """Make Ctrl-C set ``state.stop`` instead of raising; return a function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if state.stop:            # a second Ctrl-C: stop at once
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        state.stop = True
        state.interrupted = True

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    normalizer: Normalizer
    history: History
    config: TrainConfig
    metrics: dict
    dataset: Dataset


def build_model(config: TrainConfig, n_inputs: int, n_classes: int, rng) -> nn.Sequential:
    return nn.mlp([n_inputs, *config.hidden, n_classes], activation=config.activation,
                  dropout=config.dropout, init=config.init, rng=rng, dtype=DTYPES[config.dtype])


def build_optimizer(config: TrainConfig, params, n_train: int) -> nn.Optimizer:
    """The optimiser named in ``config``; L2's lambda is divided by the training-set size here."""
    kw = dict(lr=config.lr, l2=config.l2 / max(1, n_train), weight_decay=config.weight_decay)
    if config.optimizer in ("sgd", "gd"):
        return nn.SGD(params, momentum=config.momentum, nesterov=config.nesterov, **kw)
    if config.optimizer == "rmsprop":
        return nn.RMSProp(params, momentum=config.momentum, **kw)
    return nn.OPTIMIZERS[config.optimizer](params, **kw)


def train(config: TrainConfig, dataset: Dataset, callbacks=()) -> TrainResult:
    """Run a whole training: split off validation, normalise, build, fit, measure on test.

    The test set is touched once, at the end. Same config and seed on the same
    machine give identical weights.
    """
    config.validate()
    seeds = np.random.SeedSequence(config.seed).spawn(3)      # weights, split, shuffles
    dtype = DTYPES[config.dtype]
    x_tr, y_tr, x_val, y_val = train_val_split(dataset.x_train, dataset.y_train, config.val_fraction,
                                               seed=int(seeds[1].generate_state(1)[0]))
    normalizer = Normalizer(config.normalize).fit(x_tr)
    x_tr_f, x_val_f = normalizer(x_tr, dtype), normalizer(x_val, dtype)
    y_tr, y_val = y_tr.astype(np.intp), y_val.astype(np.intp)
    batch_size = config.batch_size if config.batch_size else len(x_tr_f)
    full_batch = batch_size >= len(x_tr_f)
    transform = None
    if config.augment_shift:
        side = int(round(math.sqrt(x_tr_f.shape[1])))
        if side * side != x_tr_f.shape[1]:
            raise ConfigError(f"shifting needs square images; these have {x_tr_f.shape[1]} pixels")
        transform = RandomShift(config.augment_shift, side, fill=float(normalizer(np.zeros(1))[0]))
    loader = DataLoader(x_tr_f, y_tr, batch_size=min(batch_size, len(x_tr_f)), shuffle=not full_batch,
                        rng=np.random.default_rng(seeds[2]), transform=transform)
    model = build_model(config, x_tr_f.shape[1], len(dataset.class_names), np.random.default_rng(seeds[0]))
    optimizer = build_optimizer(config, model.parameters(), len(x_tr_f))
    schedule = nn.make_schedule(config.schedule, config.lr, config.epochs, len(loader),
                                warmup_epochs=config.warmup_epochs)
    loss_fn = nn.SoftmaxCrossEntropy(config.label_smoothing)
    history = fit(model, optimizer, loader, config.epochs, loss_fn=loss_fn, schedule=schedule,
                  val=(x_val_f, y_val), early_stopping=config.early_stopping, callbacks=callbacks)
    test_loss, test_acc = evaluate_arrays(model, normalizer(dataset.x_test, dtype), dataset.y_test.astype(np.intp))
    seconds = [e["seconds"] for e in history.epochs]
    last = history.epochs[-1] if history.epochs else {}
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "val_accuracy": last.get("val_accuracy"),
        "train_accuracy": last.get("train_accuracy"),
        "train_seconds": float(sum(seconds)),
        "epoch_seconds": seconds,
        "epochs": len(history.epochs),
        "n_train": int(len(x_tr)),
        "n_val": int(len(x_val)),
        "n_test": int(len(dataset.x_test)),
        "test_held_out": bool(dataset.test_held_out),
    }
    return TrainResult(model, normalizer, history, config, metrics, dataset)
