"""``digitnet train``: train a network from a preset plus flags and save a run folder."""

from __future__ import annotations

import argparse
import sys

from digitnet import runs
from digitnet.cli.common import (
    add_data_args,
    add_setting_flags,
    count,
    load_data,
    path_arg,
    percent,
    prepare_output,
    print_json,
)
from digitnet.cli.progress import Progress
from digitnet.errors import DigitnetError
from digitnet.presets import DESCRIPTIONS, preset
from digitnet.training import settings

MAX_FRAMES = 10_000  # of a recorded live view
EPILOG = "presets:\n" + "\n".join(f"  {name:<12} {text}" for name, text in DESCRIPTIONS.items())


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "train",
        help=help_line,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a fully connected network. A preset sets every "
        "hyperparameter; each flag overrides one.",
    )
    p.add_argument("--preset", help="named configuration (default: default); see below")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=path_arg,
        help="continue a run stopped by Ctrl-C, a kill or a crash, "
        "from its last checkpoint, to the same weights",
    )
    add_data_args(p, dataset_default=None, dataset_help="mnist")
    add_setting_flags(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "--out", metavar="DIR", type=path_arg, help="run folder (default: runs/<date-time>-<preset>)"
    )
    g.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    g.add_argument("--live", action="store_true", help="watch the network learn in the dashboard's window")
    g.add_argument(
        "--save",
        metavar="FILE",
        type=path_arg,
        help="with --live: record the view into FILE (.gif, .mp4 or .png) instead of a window",
    )
    g.add_argument(
        "--frames",
        type=int,
        default=100,
        metavar="N",
        help=f"with --live --save: frames to record, 1 to {MAX_FRAMES:,}",
    )
    p.set_defaults(func=run)


# The settings a flag can override: every TrainConfig setting but the preset (and --dataset, a data flag).
OVERRIDES = ["dataset"] + [f.name for f in settings()]


def run(args) -> int:
    if args.save and not args.live:
        raise DigitnetError("--save records the live view: add --live")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise DigitnetError(f"--frames must be 1 to {MAX_FRAMES:,}, got {args.frames}")
    if args.save:
        prepare_output(args.save, "--save")
    if args.resume:
        run_, config = _resumable(args)
    else:
        config = preset(args.preset or "default", **{k: getattr(args, k) for k in OVERRIDES}).validate()
        out = runs.check_new(prepare_output(args.out or runs.new_folder(config.preset), folder=True))
    dataset = load_data(args, config.dataset, seed=config.seed)
    say = (lambda *a: None) if args.quiet else print
    sizes = "-".join(map(str, [dataset.x_train.shape[1], *config.hidden, len(dataset.class_names)]))
    batch = "full batch" if config.batch_size == 0 else f"batch {config.batch_size}"
    say(
        f"preset {config.preset}: {sizes} {config.activation}, {config.optimizer} lr {config.lr:g} "
        f"({config.schedule}), {batch}, {count(config.epochs, 'epoch')}"
    )
    say(f"data: {dataset.name} from {dataset.source}")
    for note in dataset.notes:
        say(f"note: {note}")
    if dataset.test_held_out and args.quiet:  # said among the notes above otherwise
        print(
            f"note: no labelled test set was given, so {len(dataset.x_test):,} training images "
            "were held out as the test set"
        )

    callbacks = [] if args.quiet else [Progress(bar=sys.stdout.isatty())]
    if args.live:
        from digitnet.viz.catalog import require

        require()
        from digitnet.viz.live import live_training

        live = live_training(
            dataset,
            config.normalize,
            save=args.save,
            frames=args.frames,
            title=f"digitnet: training {sizes} {config.activation} on {dataset.name}",
        )
        callbacks.append(live)
    if args.resume:
        done = run_.info.get("epochs_done") or 0
        say(f"resuming {run_.path} ({run_.state}): {done} of {count(config.epochs, 'epoch')} done")
        result = run_.resume(dataset, callbacks)
    else:
        run_, result = runs.start(
            config, dataset, out=out, callbacks=callbacks, data=args.data, cache_dir=args.cache_dir
        )
    history, metrics = result.history, result.metrics
    if history.interrupted:
        print(
            f"interrupted in epoch {len(history.epochs)}: saved the model and history as they are; "
            f"continue with: digitnet train --resume {run_.path}"
        )
    if history.restored_epoch:
        say(
            ("stopped early after" if history.stopped_early else "trained")
            + f" epoch {len(history.epochs)}; restored the best weights (epoch {history.restored_epoch}, "
            f"validation {percent(metrics['val_accuracy'])})"
        )

    model_path = runs.model_file(run_.path)
    per_epoch = metrics["train_seconds"] / max(1, metrics["epochs"])
    views = single = ""
    if config.test_time_shift:
        views = f" (mean of {(2 * config.test_time_shift + 1) ** 2} shifted views)"
        single = f"; the network alone, one view: {percent(metrics['test_accuracy_single'])}"
    print(
        f"test accuracy: {percent(metrics['test_accuracy'])}{views} "
        f"(validation {percent(metrics['val_accuracy'])}{single}; "
        f"{metrics['train_seconds']:.1f} s of training, {per_epoch:.2f} s an epoch)"
    )
    print(f"saved {model_path}")
    if args.live:
        print(f"saved the live view as {args.save}" if args.save else "close the window to finish")
        live.wait()
    if args.json:
        print_json(
            {
                "test_accuracy": metrics["test_accuracy"],
                "test_accuracy_single": metrics.get("test_accuracy_single", metrics["test_accuracy"]),
                "test_time_shift": config.test_time_shift,
                "val_accuracy": metrics["val_accuracy"],
                "train_seconds": metrics["train_seconds"],
                "epoch_seconds": metrics["epoch_seconds"],
                "epochs": metrics["epochs"],
                "model": str(model_path),
                "run_dir": str(run_.path),
                "preset": config.preset,
                "interrupted": history.interrupted,
                "stopped_early": history.stopped_early,
                "restored_epoch": history.restored_epoch,
                "test_held_out": metrics["test_held_out"],
                "resumed": bool(args.resume),
            }
        )
    return 130 if history.interrupted else 0


def _resumable(args):
    """The run ``--resume`` names and its settings; refuse flags that would change its plan."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ["preset", *OVERRIDES, "out"]
        if getattr(args, name) is not None
    ]
    if given:
        raise DigitnetError(
            f"--resume carries on the run saved in {args.resume} with its own settings; "
            f"leave out {', '.join(given)}"
        )
    run_ = runs.Run.open(args.resume)
    run_.check_resumable()
    recorded = run_.info.get("data") or {}
    args.data = args.data or recorded.get("data")
    args.cache_dir = args.cache_dir or recorded.get("cache_dir")
    return run_, run_.config
