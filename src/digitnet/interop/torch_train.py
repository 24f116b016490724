"""Train the same network in PyTorch, through digitnet's own data pipeline (needs PyTorch).

:func:`train_torch` is :func:`digitnet.training.train` with another step, so the two runs differ
only in the arithmetic library: :func:`~digitnet.training.prepare` splits off the same validation
images, normalises them, builds the same :class:`~digitnet.data.loader.DataLoader` (same batches,
same order) and draws the initial weights the PyTorch network starts from; the same
:class:`~digitnet.training.Loop` runs the epochs, validation and early stopping. ``torch.optim``
and ``torch.nn.CrossEntropyLoss`` do the learning (:class:`TorchStep`). L2 (``l2``) is ``torch.optim``'s
``weight_decay`` on the weights' parameter group; decoupled decay (``weight_decay``) is AdamW's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from digitnet.data.datasets import Dataset
from digitnet.data.formats import atomic_path
from digitnet.data.loader import Normalizer
from digitnet.errors import ConfigError
from digitnet.interop.export import require
from digitnet.interop.statedict import METADATA_KEY
from digitnet.interop.torchnet import to_torch_module
from digitnet.modelfile import architecture_of, test_time_logits
from digitnet.training import History, Loop, TrainConfig, prepare


@dataclass
class TorchTrainResult:
    """What :func:`train_torch` returns: the trained ``torch.nn.Sequential`` and what went with it."""

    module: object
    normalizer: Normalizer
    history: History
    config: TrainConfig
    metrics: dict
    dataset: Dataset
    architecture: dict


def build_torch_optimizer(config: TrainConfig, module, n_train: int):
    """``torch.optim``'s counterpart of :func:`digitnet.training.build_optimizer`.

    Weights and biases go in two parameter groups so that L2 / decay reach the weights only.
    """
    torch = require("torch", "torch", "training with PyTorch")
    l2, decay = config.l2 / max(1, n_train), config.weight_decay
    if l2 and decay:
        raise ConfigError("torch.optim has no optimiser with both L2 and decoupled weight decay: choose one")
    if decay and config.optimizer not in ("adam", "adamw"):
        raise ConfigError(
            f"decoupled weight decay with {config.optimizer} has no torch.optim counterpart: "
            "use --optimizer adamw, or --l2"
        )
    weights = [p for name, p in module.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in module.named_parameters() if not name.endswith("weight")]
    groups = [{"params": weights, "weight_decay": l2 or decay}, {"params": biases, "weight_decay": 0.0}]
    if config.optimizer in ("sgd", "gd"):
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum, eps=1e-8)
    if config.optimizer == "adamw" or decay:
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


class TorchStep:
    """:class:`digitnet.training.NumpyStep`'s counterpart: ``torch.nn`` computes, ``torch.optim`` steps."""

    def __init__(self, module, optimizer, loss_fn):
        self.torch = require("torch", "torch", "training with PyTorch")
        self.model, self.optimizer, self.loss_fn = module, optimizer, loss_fn
        self._loss = None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @property
    def decays(self) -> bool:
        """Does the step shrink the weights (an L2 penalty or weight decay)?"""
        return any(group["weight_decay"] for group in self.optimizer.param_groups)

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def forward(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
        yb_t = self.torch.from_numpy(yb)
        logits = self.model(self.torch.from_numpy(xb))
        self._loss = self.loss_fn(logits, yb_t)
        correct = float((logits.detach().argmax(1) == yb_t).double().mean())
        return self._loss.item(), correct

    def update(self) -> None:
        """Backpropagate and step; a step beyond the weights' range raises ``FloatingPointError``."""
        self.optimizer.zero_grad(set_to_none=False)
        self._loss.backward()
        try:
            self.optimizer.step()
        except RuntimeError as exc:  # "value cannot be converted to type float without overflow"
            if "overflow" not in str(exc):
                raise
            raise FloatingPointError(str(exc)) from None

    def evaluate(self, x: np.ndarray, y: np.ndarray, test_time_shift: int = 0, fill: float = 0.0):
        return evaluate_torch(self.model, x, y, test_time_shift=test_time_shift, fill=fill)

    def weights(self) -> dict:
        return copy.deepcopy(self.model.state_dict())

    def load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights)


def train_torch(config: TrainConfig, dataset: Dataset, callbacks=()) -> TorchTrainResult:
    """Train ``config``'s network with PyTorch on ``dataset``, exactly as :func:`digitnet.training.train` feeds it.

    The same :func:`~digitnet.training.prepare` builds the split, the loader and the
    initial weights, and the same :class:`~digitnet.training.Loop` drives a
    :class:`TorchStep`; ``callbacks`` are :class:`~digitnet.training.Callback` objects
    (``state.model`` is the ``torch.nn.Sequential``).
    """
    torch = require("torch", "torch", "training with PyTorch")
    setup = prepare(config, dataset)
    torch.manual_seed(config.seed)  # dropout masks (PyTorch's own generator)
    module = to_torch_module(setup.model)
    step = TorchStep(
        module,
        build_torch_optimizer(config, module, len(setup.x_train)),
        torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
    )
    loop = Loop(
        step,
        setup.loader,
        config.epochs,
        schedule=setup.schedule,
        val=(setup.x_val, setup.y_val),
        early_stopping=config.early_stopping,
        callbacks=callbacks,
    )
    history = loop.run()
    metrics = setup.metrics(history, *setup.test(step))
    return TorchTrainResult(
        module, setup.normalizer, history, config, metrics, dataset, architecture_of(setup.model)
    )


def evaluate_torch(
    module, x: np.ndarray, y: np.ndarray, batch_size: int = 8192, test_time_shift: int = 0, fill: float = 0.0
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a PyTorch module on float inputs ``x`` ``(n, inputs)``.

    With ``test_time_shift``, of the mean over the shifted views, as a digitnet model file answers
    (:func:`digitnet.modelfile.test_time_logits`).
    """
    torch = require("torch", "torch", "evaluating with PyTorch")
    was_training = module.training
    module.eval()
    total = correct = 0.0

    def predict(xb):
        return module(torch.from_numpy(xb)).numpy()

    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = torch.from_numpy(test_time_logits(predict, x[i : i + batch_size], test_time_shift, fill))
            yb = torch.from_numpy(y[i : i + batch_size].astype(np.int64))
            total += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    module.train(was_training)
    n = max(1, len(x))
    return total / n, correct / n


def save_checkpoint(path, result: TorchTrainResult):
    """Write ``{"model_state_dict": ..., "digitnet": {...}}`` with ``torch.save``, atomically.

    ``torch.load(path, weights_only=True)["model_state_dict"]`` loads into the equivalent
    ``nn.Sequential``; ``digitnet import-torch`` and ``digitnet compare`` read the description.
    """
    torch = require("torch", "torch", "saving a PyTorch checkpoint")
    d = result.dataset
    meta = {
        "format": "digitnet-torch-checkpoint",
        "architecture": result.architecture,
        "normalization": result.normalizer.to_dict(),
        "class_names": list(d.class_names),
        "dataset": d.name,
        "config": result.config.to_dict(),
        "metrics": result.metrics,
        "trained_with": f"torch {torch.__version__}",
        **({"test_time_shift": result.config.test_time_shift} if result.config.test_time_shift else {}),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"model_state_dict": result.module.state_dict(), METADATA_KEY: meta}, fh)
    return path
