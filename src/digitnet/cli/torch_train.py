"""``digitnet torch-train``: train the same network in PyTorch, on the same batches, and save a .pth."""

from __future__ import annotations

import argparse
import sys

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

DESCRIPTION = """\
Train a preset's network with PyTorch (torch.nn and torch.optim) instead of digitnet's NumPy code,
through digitnet's data pipeline: the same validation split, normalisation and batch order, and the
same initial weights as 'digitnet train' with the same flags. Compare the two with 'digitnet compare'.
Needs PyTorch: pip install 'digitnet[torch]' (the CPU build is enough)."""


def register(subparsers, help_line: str) -> None:
    epilog = "presets:\n" + "\n".join(f"  {name:<12} {text}" for name, text in DESCRIPTIONS.items())
    p = subparsers.add_parser(
        "torch-train",
        help=help_line,
        description=DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="adam-128-64", help="named configuration (default: adam-128-64)")
    add_data_args(p)
    add_setting_flags(p, title="overrides (as in digitnet train)")
    g = p.add_argument_group("output")
    g.add_argument(
        "--out", metavar="FILE.pth", type=path_arg, help="where to save (default: <dataset>_model.pth)"
    )
    g.add_argument("--force", action="store_true", help="replace --out if it exists")
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    from digitnet.interop.export import require
    from digitnet.interop.torch_train import save_checkpoint, train_torch

    require("torch", "torch", "torch-train")  # before any work: say at once if PyTorch is missing
    overrides = {f.name: getattr(args, f.name) for f in settings()}
    config = preset(args.preset, dataset=args.dataset, **overrides).validate()
    out = prepare_output(args.out or f"{config.dataset}_model.pth")
    if out.exists() and not args.force:
        raise DigitnetError(f"{out} already exists: choose another --out, or add --force to replace it")
    dataset = load_data(args, config.dataset, seed=config.seed)
    sizes = "-".join(map(str, [dataset.x_train.shape[1], *config.hidden, len(dataset.class_names)]))
    say = (lambda *a: None) if args.quiet else print
    say(
        f"PyTorch, preset {config.preset}: {sizes} {config.activation}, {config.optimizer} lr {config.lr:g}, "
        f"batch {config.batch_size or 'full'}, {count(config.epochs, 'epoch')}"
    )
    say(f"data: {dataset.name} from {dataset.source}")

    result = train_torch(config, dataset, callbacks=[] if args.quiet else [Progress(bar=sys.stdout.isatty())])
    save_checkpoint(out, result)
    if result.history.interrupted:
        print(f"interrupted in epoch {len(result.history.epochs)}: saved the network as it is")
    m = result.metrics
    print(
        f"test accuracy: {percent(m['test_accuracy'])} (validation {percent(m['val_accuracy'])}; "
        f"{m['train_seconds']:.1f} s of training)"
    )
    print(f'saved {out}  (in PyTorch: torch.load({str(out)!r}, weights_only=True)["model_state_dict"])')
    if args.json:
        print_json(
            {
                "test_accuracy": m["test_accuracy"],
                "val_accuracy": m["val_accuracy"],
                "train_seconds": m["train_seconds"],
                "epochs": m["epochs"],
                "model": str(out),
                "preset": config.preset,
                "stopped_early": result.history.stopped_early,
                "restored_epoch": result.history.restored_epoch,
                "interrupted": result.history.interrupted,
            }
        )
    return 130 if result.history.interrupted else 0
