"""Train the same network in PyTorch, through digitnet's own data pipeline (needs PyTorch).

:func:`train_torch` follows :func:`digitnet.training.train` step for step, so the two runs differ
only in the arithmetic library: the same seeds split off the same validation images, the same
:class:`~digitnet.data.loader.Normalizer` converts them, the same
:class:`~digitnet.data.loader.DataLoader` hands out the same batches in the same order, and the
PyTorch network starts from the very weights digitnet would draw. ``torch.optim`` and
``torch.nn.CrossEntropyLoss`` then do the learning. L2 (``l2``) is ``torch.optim``'s
``weight_decay`` on the weights' parameter group; decoupled decay (``weight_decay``) is AdamW's.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np

from digitnet import nn
from digitnet.data.augment import RandomShift
from digitnet.data.datasets import Dataset, train_val_split
from digitnet.data.formats import atomic_path
from digitnet.data.loader import DataLoader, Normalizer
from digitnet.errors import ConfigError
from digitnet.interop.export import require
from digitnet.interop.statedict import METADATA_KEY
from digitnet.interop.torchnet import to_torch_module
from digitnet.modelfile import architecture_of
from digitnet.training import DTYPES, History, TrainConfig, TrainingDiverged, build_model


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
        raise ConfigError(f"decoupled weight decay with {config.optimizer} has no torch.optim counterpart: "
                          "use --optimizer adamw, or --l2")
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


def train_torch(config: TrainConfig, dataset: Dataset, on_epoch=None) -> TorchTrainResult:
    """Train ``config``'s network with PyTorch on ``dataset``, exactly as :func:`digitnet.training.train` feeds it.

    ``on_epoch(record)`` is called after each epoch with the epoch's dict (as in ``History.epochs``).
    """
    torch = require("torch", "torch", "training with PyTorch")
    config.validate()
    seeds = np.random.SeedSequence(config.seed).spawn(3)      # weights, split, shuffles: as train() does
    dtype = DTYPES[config.dtype]
    x_tr, y_tr, x_val, y_val = train_val_split(dataset.x_train, dataset.y_train, config.val_fraction,
                                               seed=int(seeds[1].generate_state(1)[0]))
    normalizer = Normalizer(config.normalize).fit(x_tr)
    x_tr_f, x_val_f = normalizer(x_tr, dtype), normalizer(x_val, dtype)
    batch_size = config.batch_size or len(x_tr_f)
    full_batch = batch_size >= len(x_tr_f)
    transform = None
    if config.augment_shift:
        side = int(round(math.sqrt(x_tr_f.shape[1])))
        transform = RandomShift(config.augment_shift, side, fill=float(normalizer(np.zeros(1))[0]))
    loader = DataLoader(x_tr_f, y_tr.astype(np.int64), batch_size=min(batch_size, len(x_tr_f)),
                        shuffle=not full_batch, rng=np.random.default_rng(seeds[2]), transform=transform)
    start_model = build_model(config, x_tr_f.shape[1], len(dataset.class_names), np.random.default_rng(seeds[0]))
    torch.manual_seed(config.seed)                            # dropout masks (PyTorch's own generator)
    module = to_torch_module(start_model)
    optimizer = build_torch_optimizer(config, module, len(x_tr_f))
    schedule = nn.make_schedule(config.schedule, config.lr, config.epochs, len(loader),
                                warmup_epochs=config.warmup_epochs)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history, iteration = History(), 0
    best_loss, best_state, waited = math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        module.train()
        started, loss_sum, acc_sum = time.perf_counter(), 0.0, 0.0
        for xb, yb in loader:
            lr = schedule(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            xb_t, yb_t = torch.from_numpy(xb), torch.from_numpy(yb)
            logits = module(xb_t)
            loss = loss_fn(logits, yb_t)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"the loss became {value} at epoch {epoch}, iteration {iteration + 1}: "
                                       f"training diverged; try a lower learning rate (it was {lr:g})")
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            iteration += 1
            correct = float((logits.detach().argmax(1) == yb_t).double().mean())
            history.loss.append(value)
            history.accuracy.append(correct)
            history.lr.append(lr)
            loss_sum, acc_sum = loss_sum + value, acc_sum + correct
        record = {"epoch": epoch, "train_loss": loss_sum / len(loader), "train_accuracy": acc_sum / len(loader),
                  "val_loss": None, "val_accuracy": None, "lr": lr, "seconds": time.perf_counter() - started}
        if len(x_val_f):
            record["val_loss"], record["val_accuracy"] = evaluate_torch(module, x_val_f, y_val)
            if record["val_loss"] < best_loss:
                best_loss, waited, history.best_epoch = record["val_loss"], 0, epoch
                if config.early_stopping:
                    best_state = copy.deepcopy(module.state_dict())
            else:
                waited += 1
        history.epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if config.early_stopping and waited >= config.early_stopping:
            history.stopped_early = True
            break
    if best_state is not None and history.best_epoch != len(history.epochs):
        module.load_state_dict(best_state)
    module.eval()
    test_loss, test_acc = evaluate_torch(module, normalizer(dataset.x_test, dtype), dataset.y_test)
    seconds = [e["seconds"] for e in history.epochs]
    last = history.epochs[-1]
    metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "val_accuracy": last["val_accuracy"],
               "train_accuracy": last["train_accuracy"], "train_seconds": float(sum(seconds)),
               "epoch_seconds": seconds, "epochs": len(history.epochs), "n_train": int(len(x_tr)),
               "n_val": int(len(x_val)), "n_test": int(len(dataset.x_test)),
               "test_held_out": bool(dataset.test_held_out)}
    arch = architecture_of(start_model)
    return TorchTrainResult(module, normalizer, history, config, metrics, dataset, arch)


def evaluate_torch(module, x: np.ndarray, y: np.ndarray, batch_size: int = 8192) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a PyTorch module on float inputs ``x`` ``(n, inputs)``."""
    torch = require("torch", "torch", "evaluating with PyTorch")
    was_training = module.training
    module.eval()
    total = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = module(torch.from_numpy(x[i:i + batch_size]))
            yb = torch.from_numpy(y[i:i + batch_size].astype(np.int64))
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
    meta = {"format": "digitnet-torch-checkpoint", "architecture": result.architecture,
            "normalization": result.normalizer.to_dict(), "class_names": list(d.class_names), "dataset": d.name,
            "config": result.config.to_dict(), "metrics": result.metrics, "trained_with": f"torch {torch.__version__}"}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"model_state_dict": result.module.state_dict(), METADATA_KEY: meta}, fh)
    return path
