"""One trial: train a configuration on the training split, score it on the validation split.

:func:`run_trial` is what every worker runs, in this process, in a local
worker process or on a Dask worker. It never sees the test set: its
:class:`TrialData` holds only the search's training images, and
:func:`~digitnet.training.train` splits the validation set off them with the
trial's seed, the same for every trial. After each epoch it reports the
validation accuracy to its Optuna trial in the study's storage, which the
worker opens itself, and stops when the study's pruner says so. Whatever
happens (divergence, a bad combination, running out of memory) comes back as
a record, never as an exception, so one trial cannot stop the search.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from digitnet.data.datasets import Dataset
from digitnet.errors import DigitnetError
from digitnet.training import Callback, TrainConfig, TrainingDiverged, train
from digitnet.tune.space import trial_config

# Statuses a finished trial can have. "interrupted" trials are not recorded: --resume runs them again.
OK, PRUNED, DIVERGED, FAILED, INTERRUPTED = "ok", "pruned", "diverged", "failed", "interrupted"


@dataclass
class TrialData:
    """The images a search trains and validates on: ``x`` uint8 ``(n, 784)``, ``y`` uint8 ``(n,)``."""

    name: str
    class_names: list
    x: np.ndarray
    y: np.ndarray

    def dataset(self) -> Dataset:
        """A :class:`Dataset` with these images for training and an empty test set."""
        return Dataset(
            self.name, list(self.class_names), self.x, self.y, self.x[:0], self.y[:0], source="search data"
        )


@dataclass
class StudyTrial:
    """Where a trial reports: its ``trial_id`` in the study ``study_name`` at ``url``, made for ``spec``."""

    url: str
    study_name: str
    spec: dict
    trial_id: int


class Report(Callback):
    """Report each epoch's validation accuracy to the Optuna trial; stop the trial when the pruner says so.

    The pruner is asked after every epoch but the last (a finished trial has
    nothing left to save); a single-objective study only, as Optuna prunes no other.
    """

    def __init__(self, where: StudyTrial):
        import optuna

        from digitnet.tune.space import SearchSpec
        from digitnet.tune.study import load_study

        spec = SearchSpec.from_dict(where.spec)
        study = load_study(where.url, where.study_name, spec, sampler=optuna.samplers.RandomSampler())
        self.trial = optuna.Trial(study, where.trial_id)
        self.rule, self.pruned_at = spec.prune, None

    def on_epoch_end(self, state):
        record = state.history.epochs[-1]
        if state.interrupted or record.get("val_accuracy") is None:
            return
        import warnings

        with warnings.catch_warnings():  # a trial run again after its worker died reports its epochs again
            warnings.simplefilter("ignore")
            self.trial.report(record["val_accuracy"], state.epoch)
        if self.rule != "none" and state.epoch < state.epochs and self.trial.should_prune():
            self.pruned_at = state.epoch
            state.stop = True


class StopIfNoted(Callback):
    """Stop a trial at its first batch when a Ctrl-C came before training took over Ctrl-C itself.

    A trial run in the search's own process starts under the search's handler, which only notes a
    Ctrl-C (:class:`~digitnet.tune.results.CtrlC`); training puts in its own as it begins. A Ctrl-C
    that lands in between, while the trial sets up its data and network, would otherwise be seen by
    the search only once the whole trial had run. ``noted`` is that handler.
    """

    def __init__(self, noted):
        self.noted = noted

    def on_train_begin(self, state):
        if self.noted.pressed:
            state.stop = state.interrupted = True


# What a batch costs beyond its multiply-adds (the Python, gathering the batch, the small arrays), in
# weights' worth of multiply-adds per image, measured on a 2-core Xeon: with batch 128, 784-64-10
# spends a third of its time there, 784-512-10 a tenth.
BATCH_OVERHEAD = 4_000_000


def trial_cost(config: TrainConfig, n_inputs: int, n_classes: int, n_images: int) -> float:
    """A trial's expected running time, in arbitrary units, to hand out the longest trials first.

    An epoch of a network with ``W`` weights on ``n`` images costs about
    ``n * W`` multiply-adds forward and twice that backward, plus a fixed cost
    for each of its ``n / batch_size`` batches.
    """
    sizes = [n_inputs, *config.hidden, n_classes]
    weights = sum(a * b for a, b in pairwise(sizes))
    batch = config.batch_size or n_images
    return config.epochs * n_images * (weights + BATCH_OVERHEAD / batch)


def run_trial(
    number: int, params: dict, base: dict, data: TrialData, study: StudyTrial | None = None, noted=None
) -> dict:
    """Train ``base`` with ``params`` applied; return the trial's record (a JSON-ready dict).

    Parameters
    ----------
    number : the trial's position in the search
    params : the trial's overrides, e.g. ``{"hidden": [128], "l2": 0.1}``
    base : the base :class:`~digitnet.training.TrainConfig` as a dict
    data : the search's :class:`TrialData`
    study : the Optuna trial to report each epoch to (:class:`Report`), and be
        pruned by; None for neither.
    noted : the search's Ctrl-C handler when the trial runs in the search's own
        process: a Ctrl-C it noted stops the trial as it starts (:class:`StopIfNoted`).

    The record holds ``trial, params, status, reason, val_accuracy, val_loss,
    train_accuracy, train_loss, epochs, best_epoch, seconds, started, curve``
    (per-epoch ``val_accuracy, val_loss, train_loss``), the worker's ``host``
    and ``pid``, and ``blas_threads``, the BLAS threads it was allowed.
    """
    started = time.time()
    record = {
        "trial": number,
        "params": params,
        "status": FAILED,
        "reason": None,
        "val_accuracy": None,
        "val_loss": None,
        "train_accuracy": None,
        "train_loss": None,
        "epochs": 0,
        "best_epoch": None,
        "seconds": None,
        "started": started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "curve": {"val_accuracy": [], "val_loss": [], "train_loss": []},
    }
    try:
        config = trial_config(TrainConfig.from_dict(base), params)
        stopper = Report(study) if study is not None else None
        callbacks = [stopper] if stopper else []
        if noted is not None:
            callbacks.append(StopIfNoted(noted))
        result = train(config, data.dataset(), callbacks=callbacks)
    except TrainingDiverged as exc:
        record.update(status=DIVERGED, reason=str(exc))
    except DigitnetError as exc:
        record.update(reason=str(exc))
    except MemoryError:
        record.update(reason="out of memory")
    except Exception as exc:  # noqa: BLE001 - any failure is this trial's, not the search's
        record.update(reason=f"{type(exc).__name__}: {exc}")
    else:
        history = result.history
        epochs = history.epochs
        final = history.final_epoch()  # the epoch whose weights the trial ends with
        record.update(
            status=INTERRUPTED if history.interrupted else PRUNED if stopper and stopper.pruned_at else OK,
            reason=f"pruned after epoch {stopper.pruned_at} by the {stopper.rule} rule"
            if stopper and stopper.pruned_at
            else None,
            val_accuracy=final["val_accuracy"],
            val_loss=final["val_loss"],
            train_accuracy=final["train_accuracy"],
            train_loss=final["train_loss"],
            epochs=len(epochs),
            best_epoch=history.best_epoch,
            curve={k: [e[k] for e in epochs] for k in ("val_accuracy", "val_loss", "train_loss")},
        )
        if record["val_loss"] is not None and not math.isfinite(record["val_loss"]):
            record.update(status=DIVERGED, reason="the validation loss is not finite", val_loss=None)
    record["seconds"] = time.time() - started
    record["blas_threads"] = _blas_threads()
    return record


def _blas_threads() -> int | None:
    """How many threads this process's BLAS may use (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=None)
