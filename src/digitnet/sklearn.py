"""A scikit-learn classifier over digitnet's network and training loop.

:class:`DigitnetClassifier` builds the network with
:func:`digitnet.training.build_model`, the optimiser with
:func:`digitnet.training.build_optimizer`, and trains it with the same
:class:`~digitnet.training.Loop` and :class:`~digitnet.training.NumpyStep`
as ``digitnet train``. It follows scikit-learn's conventions: the
constructor stores its arguments as given, ``fit`` checks them and the data,
learned attributes end in ``_``. Like ``MLPClassifier`` it does not
normalise its input: put a scaler before it in a ``Pipeline`` (or divide
pixels by 255).

Needs scikit-learn (``pip install 'digitnet[sklearn]'``).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from digitnet import nn
from digitnet.data.datasets import train_val_split
from digitnet.data.loader import DataLoader
from digitnet.errors import ConfigError
from digitnet.training import DTYPES, Callback, Loop, NumpyStep, TrainConfig, build_model, build_optimizer

__all__ = ["DigitnetClassifier"]


class DigitnetClassifier(ClassifierMixin, BaseEstimator):
    """A fully connected network trained by digitnet, as a scikit-learn classifier.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(128, 64)
        Widths of the hidden layers, input side first.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}, default="relu"
        The activation after each hidden layer.
    solver : {"adam", "adamw", "sgd", "gd", "rmsprop"}, default="adam"
        digitnet's optimiser names; ``"gd"`` is full-batch gradient descent
        (one batch holding all the training samples, whatever ``batch_size`` says).
    alpha : float >= 0, default=0.0
        L2 penalty with ``MLPClassifier``'s meaning: each batch of ``B`` samples
        adds ``alpha / (2 B) * sum W^2`` over the weight matrices (not the
        biases), so each weight's gradient gains ``(alpha / B) W``. digitnet's
        optimisers take that coefficient directly: ``l2 = alpha / B`` with
        ``B`` the batch size. (``digitnet train --l2 LAMBDA`` divides by the
        training-set size ``m`` instead; ``alpha = LAMBDA * B / m`` is the same
        penalty. The last, smaller batch of an epoch gets ``alpha / B`` too.)
    batch_size : int >= 1 or "auto", default=64
        ``"auto"`` is ``min(200, n_samples)``, as in ``MLPClassifier``; a
        size larger than the training set is clipped to it.
    learning_rate_init : float > 0, default=1e-3
        The learning rate (the peak rate with ``schedule="onecycle"``).
    max_iter : int >= 1, default=25
        Epochs (passes over the training set) of ``fit``.
    random_state : int, RandomState instance or None, default=None
        One seed for the weights, the validation split, the shuffles and the
        dropout masks, spawned as in :func:`digitnet.training.prepare`: an int
        ``s`` gives the same network as ``digitnet train --seed s``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training set (stratified) and stop
        when its loss has not improved for ``n_iter_no_change`` epochs; the
        weights of the epoch with the lowest validation loss are restored.
    validation_fraction : float in (0, 1), default=0.1
        Used only with ``early_stopping``.
    n_iter_no_change : int >= 1, default=10
        Patience of early stopping, in epochs (used only with ``early_stopping``).
    dropout : float in [0, 1), default=0.0
        Dropout after each hidden activation during training.
    schedule : {"constant", "step", "cosine", "onecycle"}, default="constant"
        How the learning rate changes over the ``max_iter`` epochs.
    momentum : float in [0, 1), default=0.0
        Momentum of ``"sgd"`` and ``"rmsprop"``.
    label_smoothing : float in [0, 1), default=0.0
    dtype : {"float32", "float64"}, default="float32"
        The network's floating-point type; inputs are converted to it.
    verbose : bool, default=False
        Print each epoch's training loss (and validation score).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Only when ``X`` had feature names (a pandas DataFrame).
    model_ : digitnet.nn.Sequential
        The trained network; ``model_.predict(X)`` gives the logits.
    loss_curve_ : list of float
        Each epoch's mean training cross-entropy over its batches (the L2 term
        is not included).
    n_iter_ : int
        Epochs run.
    validation_scores_ : list of float or None
        Each epoch's validation accuracy (with ``early_stopping``).
    best_validation_score_ : float or None
        The validation accuracy of the epoch whose weights the network holds
        (the one with the lowest validation loss).
    history_ : digitnet.training.History of the last ``fit`` or ``partial_fit``.
    """

    def __init__(
        self,
        hidden_layer_sizes=(128, 64),
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=64,
        learning_rate_init=1e-3,
        max_iter=25,
        random_state=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dropout=0.0,
        schedule="constant",
        momentum=0.0,
        label_smoothing=0.0,
        dtype="float32",
        verbose=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.schedule = schedule
        self.momentum = momentum
        self.label_smoothing = label_smoothing
        self.dtype = dtype
        self.verbose = verbose

    # -- scikit-learn's API ---------------------------------------------------
    def fit(self, X, y):
        """Train a new network for ``max_iter`` epochs on ``X`` ``(n, features)``, labels ``y`` ``(n,)``."""
        X, y = self._check_data(X, y, reset=True)
        self.classes_, codes = np.unique(y, return_inverse=True)
        return self._train(X, codes.astype(np.int64), self.max_iter, reset=True)

    def partial_fit(self, X, y, classes=None):
        """One epoch more on ``X``, ``y``, keeping the weights, the optimiser's state and the shuffles' generator.

        ``classes`` (every label there will be) is required on the first call,
        as in scikit-learn's other incremental classifiers. The learning-rate
        schedule is the one of a ``max_iter``-epoch run, continued.
        """
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        X, y = self._check_data(X, y, reset=first)
        if first:
            self.classes_ = np.unique(np.asarray(classes))
        elif classes is not None and not np.array_equal(self.classes_, np.unique(np.asarray(classes))):
            raise ValueError(
                f"`classes={np.unique(np.asarray(classes))!r}` is not the same as on the first "
                f"call to partial_fit, which was {self.classes_!r}"
            )
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if len(unseen):
            raise ValueError(f"y has labels {unseen!r} that are not in classes {self.classes_!r}")
        codes = np.searchsorted(self.classes_, y).astype(np.int64)
        return self._train(X, codes, 1, reset=first)

    def predict_proba(self, X):
        """Class probabilities, ``(n, n_classes)``, columns in the order of ``classes_``."""
        return nn.softmax(self._logits(X))

    def predict_log_proba(self, X):
        """Log-probabilities, ``(n, n_classes)``, computed stably from the logits."""
        return nn.log_softmax(self._logits(X))

    def predict(self, X):
        """The most probable class of each row, ``(n,)``, as labels from ``classes_``."""
        logits = self._logits(X)
        return self.classes_[logits.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        tags.classifier_tags.poor_score = False
        tags.non_deterministic = False
        return tags

    # -- the pieces -----------------------------------------------------------
    def _check_data(self, X, y, reset: bool):
        dtype = DTYPES.get(self.dtype, np.float32)
        X, y = validate_data(self, X, y, reset=reset, dtype=dtype, ensure_min_samples=1)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return X, y

    def _config(self, n_train: int) -> TrainConfig:
        """The equivalent :class:`TrainConfig`, checked; scikit-learn's exceptions for bad values."""
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else sizes
        for name, value in (("max_iter", self.max_iter), ("n_iter_no_change", self.n_iter_no_change)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        bs = self.batch_size
        if bs == "auto":
            bs = min(200, n_train)
        elif isinstance(bs, bool) or not isinstance(bs, numbers.Integral) or bs < 1:
            raise ValueError(f"batch_size must be 'auto' or an integer of at least 1, got {bs!r}")
        bs = n_train if self.solver == "gd" else min(int(bs), n_train)
        if not isinstance(self.alpha, numbers.Real) or not 0 <= self.alpha < math.inf:
            raise ValueError(f"alpha must be a finite number of at least 0, got {self.alpha!r}")
        self._check_validation_fraction()
        try:
            config = TrainConfig(
                hidden=tuple(sizes),
                activation=self.activation,
                dropout=self.dropout,
                optimizer=self.solver,
                lr=self.learning_rate_init,
                momentum=self.momentum,
                batch_size=bs,
                epochs=int(self.max_iter),
                schedule=self.schedule,
                label_smoothing=self.label_smoothing,
                val_fraction=self.validation_fraction if self.early_stopping else 0.0,
                early_stopping=int(self.n_iter_no_change) if self.early_stopping else 0,
                dtype=self.dtype,
                seed=0,
            )
            return config.validate()
        except (ConfigError, TypeError) as e:
            raise ValueError(f"invalid parameter of {type(self).__name__}: {e}") from e

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _train(self, X, y, epochs: int, reset: bool):
        if reset:
            self._start(X, y)
        config = self._config_
        x_tr, y_tr, val = X, y, None
        if config.early_stopping:
            x_tr, y_tr, x_val, y_val = train_val_split(X, y, config.val_fraction, seed=self._split_seed_)
            val = (x_val, y_val)
        loader = DataLoader(
            x_tr,
            y_tr,
            batch_size=min(self._batch_, len(x_tr)),
            shuffle=self._batch_ < len(x_tr),
            rng=self._shuffle_rng_,
        )
        if self._schedule_ is None:
            self._schedule_ = nn.make_schedule(
                config.schedule, config.lr, config.epochs, len(loader), warmup_epochs=config.warmup_epochs
            )
        done, schedule = self._iterations_, self._schedule_
        loop = Loop(
            self._step_,
            loader,
            epochs,
            schedule=lambda it: schedule(done + it),
            val=val,
            early_stopping=config.early_stopping,
            callbacks=[_Report()] if self.verbose else [],
        )
        history = loop.run()
        if history.interrupted:
            warnings.warn(
                "Training interrupted by the user (Ctrl-C): the network keeps the weights it has.",
                UserWarning,
                stacklevel=3,
            )
        self._iterations_ += loop.state.iteration
        self.history_ = history
        self.loss_curve_ += [e["train_loss"] for e in history.epochs]
        self.n_iter_ += len(history.epochs)
        if config.early_stopping:
            self.validation_scores_ += [e["val_accuracy"] for e in history.epochs]
            self.best_validation_score_ = history.final_epoch().get("val_accuracy")
        return self

    def _check_validation_fraction(self) -> None:
        f = self.validation_fraction
        real = isinstance(f, numbers.Real) and not isinstance(f, bool)
        if self.early_stopping and not (real and 0 < f < 1):  # NaN fails too
            raise ValueError(f"validation_fraction must be above 0 and below 1, got {f!r}")

    def _start(self, X, y) -> None:
        """A new network, optimiser and generators, seeded as :func:`digitnet.training.prepare` seeds a run."""
        self._check_validation_fraction()
        n_val = int(round(self.validation_fraction * len(X))) if self.early_stopping else 0
        config = self._config(len(X) - n_val if self.early_stopping else len(X))
        seeds = np.random.SeedSequence(self._seed()).spawn(3)  # weights, split, shuffles
        self._config_, self._batch_ = config, config.batch_size
        self._split_seed_ = int(seeds[1].generate_state(1)[0])
        self._shuffle_rng_ = np.random.default_rng(seeds[2])
        self.model_ = build_model(config, X.shape[1], len(self.classes_), np.random.default_rng(seeds[0]))
        optimizer = build_optimizer(config, self.model_.parameters(), 1)
        optimizer.l2 = float(self.alpha) / config.batch_size  # MLPClassifier's alpha, per batch
        self._step_ = NumpyStep(self.model_, optimizer, nn.SoftmaxCrossEntropy(config.label_smoothing))
        self._schedule_, self._iterations_ = None, 0
        self.loss_curve_, self.n_iter_ = [], 0
        self.validation_scores_ = [] if config.early_stopping else None
        self.best_validation_score_ = None

    def _logits(self, X) -> np.ndarray:
        """The network's logits for ``X``, ``(n, n_classes)``, in float64.

        Float64 arithmetic makes a row's answer independent of the rows it is
        predicted with (BLAS sums float32 products in an order that depends on
        the batch); the weights stay in the network's dtype.
        """
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.model_.predict(X)


class _Report(Callback):
    """Prints each epoch's line when ``verbose`` is on."""

    def on_epoch_end(self, state):
        e = state.history.epochs[-1]
        val = "" if e["val_accuracy"] is None else f", validation score = {e['val_accuracy']:.6f}"
        print(f"Iteration {e['epoch']}, loss = {e['train_loss']:.8f}{val}")
