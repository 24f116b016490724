"""``digitnet train``: train a network from a preset plus flags and save a run folder."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from digitnet import modelfile
from digitnet.cli.common import add_data_args, count, layer_sizes, load_data, percent, print_json
from digitnet.diagnostics import Diagnostics
from digitnet.errors import DigitnetError
from digitnet.nn import ACTIVATIONS, OPTIMIZERS, SCHEDULES
from digitnet.nn.init import INITIALISERS
from digitnet.presets import DESCRIPTIONS, preset
from digitnet.training import Callback, train

EPILOG = "presets:\n" + "\n".join(f"  {name:<12} {text}" for name, text in DESCRIPTIONS.items())


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser("train", help=help_line, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Train a fully connected network. A preset sets every "
                                          "hyperparameter; each flag overrides one.")
    p.add_argument("--preset", default="default", help="named configuration (default: default); see below")
    add_data_args(p)
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=layer_sizes, metavar="N,N,...", help="hidden layer sizes, e.g. 256,128")
    g.add_argument("--activation", choices=list(ACTIVATIONS))
    g.add_argument("--init", metavar="NAME", help=f"initialiser: {', '.join(INITIALISERS)} (normal:STD sets σ)")
    g.add_argument("--dropout", type=float, metavar="P", help="dropout after each hidden layer, 0 <= P < 1")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), help="gd is full-batch gradient descent")
    g.add_argument("--lr", type=float, help="learning rate (the peak rate with onecycle)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--nesterov", action="store_true", default=None)
    g.add_argument("--batch-size", type=int, metavar="N", help="0 means the whole training set")
    g.add_argument("--epochs", type=int)
    g.add_argument("--l2", type=float, metavar="LAMBDA", help="L2 penalty λ/(2m)·ΣW², m = training examples")
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW-style)")
    g.add_argument("--schedule", choices=list(SCHEDULES))
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--val-fraction", type=float, help="share of the training set held out for validation")
    g.add_argument("--normalize", choices=["scale", "standardize"])
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after this many epochs without a better validation loss")
    g.add_argument("--augment-shift", type=int, metavar="PIXELS", help="move each training digit by up to this many pixels (0: off)")
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="run folder (default: runs/<date-time>-<preset>)")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    g.add_argument("--live", action="store_true", help="watch the network learn in the dashboard's window")
    g.add_argument("--save", metavar="FILE", help="with --live: record the view into FILE (.gif, .mp4 or .png) "
                                                  "instead of a window")
    g.add_argument("--frames", type=int, default=100, metavar="N", help="with --live --save: frames to record")
    p.set_defaults(func=run)


OVERRIDES = ["dataset", "hidden", "activation", "init", "dropout", "dtype", "optimizer", "lr", "momentum",
             "nesterov", "batch_size", "epochs", "l2", "weight_decay", "schedule", "warmup_epochs",
             "label_smoothing", "val_fraction", "normalize", "early_stopping", "augment_shift", "seed"]


def run(args) -> int:
    config = preset(args.preset, **{k: getattr(args, k) for k in OVERRIDES}).validate()
    if args.save and not args.live:
        raise DigitnetError("--save records the live view: add --live")
    run_dir = _choose_run_dir(args.out, config.preset)
    dataset = load_data(args, config.dataset, seed=config.seed)
    say = (lambda *a: None) if args.quiet else print
    sizes = "-".join(map(str, [dataset.x_train.shape[1], *config.hidden, len(dataset.class_names)]))
    batch = "full batch" if config.batch_size == 0 else f"batch {config.batch_size}"
    say(f"preset {config.preset}: {sizes} {config.activation}, {config.optimizer} lr {config.lr:g} "
        f"({config.schedule}), {batch}, {count(config.epochs, 'epoch')}")
    say(f"data: {dataset.name} from {dataset.source}")
    for note in dataset.notes:
        say(f"note: {note}")
    if dataset.test_held_out and args.quiet:      # said among the notes above otherwise
        print(f"note: no labelled test set was given, so {len(dataset.x_test):,} training images "
              "were held out as the test set")

    diagnostics = Diagnostics()          # gradient norms, dead units, initial weights: for digitnet plot
    callbacks = [diagnostics] + ([] if args.quiet else [Progress(bar=sys.stdout.isatty())])
    if args.live:
        from digitnet.viz.catalog import require
        require()
        from digitnet.viz.live import live_training
        live = live_training(dataset, config.normalize, save=args.save, frames=args.frames,
                             title=f"digitnet: training {sizes} {config.activation} on {dataset.name}")
        callbacks.append(live)
    result = train(config, dataset, callbacks=callbacks)
    history, metrics = result.history, result.metrics
    if history.interrupted:
        print(f"interrupted in epoch {len(history.epochs)}: saving the model and history as they are")
    if history.stopped_early:
        say(f"stopped early after epoch {len(history.epochs)}; restored the best weights (epoch {history.best_epoch})")

    model_path = _write_run(run_dir, result, diagnostics.initial_weights)
    per_epoch = metrics["train_seconds"] / max(1, metrics["epochs"])
    print(f"test accuracy: {percent(metrics['test_accuracy'])} (validation {percent(metrics['val_accuracy'])}; "
          f"{metrics['train_seconds']:.1f} s of training, {per_epoch:.2f} s an epoch)")
    print(f"saved {model_path}")
    if args.live:
        print(f"saved the live view as {args.save}" if args.save else "close the window to finish")
        live.wait()
    if args.json:
        print_json({
            "test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "train_seconds": metrics["train_seconds"], "epoch_seconds": metrics["epoch_seconds"],
            "epochs": metrics["epochs"], "model": str(model_path), "run_dir": str(run_dir),
            "preset": config.preset, "interrupted": history.interrupted,
            "stopped_early": history.stopped_early, "test_held_out": metrics["test_held_out"],
        })
    return 130 if history.interrupted else 0


def _choose_run_dir(out, preset_name: str) -> Path:
    if out:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DigitnetError(f"{path} already exists and is not empty: choose another --out, or remove it first")
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{stamp}-{preset_name}"
    n = 2
    while path.exists():
        path = Path("runs") / f"{stamp}-{preset_name}-{n}"
        n += 1
    return path


def _write_run(run_dir: Path, result, initial_weights=None) -> Path:
    """Write the run folder under a temporary name, then rename it into place."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.parent / f".{run_dir.name}.{os.getpid()}-{secrets.token_hex(3)}.part"
    try:
        tmp.mkdir()
        d = result.dataset
        modelfile.save(tmp / "model.npz", result.model, result.normalizer, d.class_names, dataset=d.name,
                       config=result.config.to_dict(), metrics=result.metrics,
                       extra={"data_source": d.source, "official_data": d.official})
        (tmp / "history.json").write_text(json.dumps(result.history.to_dict()))
        (tmp / "history.csv").write_text(result.history.epochs_csv())
        (tmp / "config.json").write_text(json.dumps(result.config.to_dict(), indent=2) + "\n")
        (tmp / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        if initial_weights:
            np.savez(tmp / "initial_weights.npz", **initial_weights)
        if run_dir.exists():          # an empty folder the user named with --out
            run_dir.rmdir()
        os.replace(tmp, run_dir)
    except OSError as exc:
        raise DigitnetError(f"cannot write the run folder {run_dir}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / "model.npz"


class Progress(Callback):
    """A progress bar per epoch with live loss and accuracy, and one line per epoch."""

    def __init__(self, bar: bool):
        self.bar_enabled = bar
        self.bar = None

    def on_epoch_begin(self, state):
        if self.bar_enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=state.batches, desc=f"epoch {state.epoch}/{state.epochs}", leave=False,
                            unit="batch", dynamic_ncols=True)

    def on_batch_end(self, state):
        if self.bar is not None:
            self.bar.update(1)
            if state.iteration % 50 == 0:
                self.bar.set_postfix(loss=f"{state.batch_loss:.4f}", acc=f"{state.batch_accuracy:.3f}", refresh=False)

    def on_epoch_end(self, state):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        r = state.history.epochs[-1]
        val = "" if r["val_accuracy"] is None else f"  val loss {r['val_loss']:.4f}  val acc {percent(r['val_accuracy'])}"
        print(f"epoch {r['epoch']:>3}/{state.epochs}  loss {r['train_loss']:.4f}  acc {percent(r['train_accuracy'])}"
              f"{val}  {r['seconds']:.2f}s", flush=True)
