"""Small pieces the commands share: dataset flags, JSON output, number formatting."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from digitnet.data.datasets import DATASETS, load_dataset
from digitnet.data.sources import remove_litter
from digitnet.errors import DigitnetError


def add_data_args(parser, dataset_default: str | None = "mnist", dataset_help: str | None = None) -> None:
    parser.add_argument(
        "--dataset",
        default=dataset_default,
        choices=list(DATASETS),
        help=f"which dataset (default: {dataset_help or dataset_default or 'the one the model was trained on'})",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        type=path_arg,
        help="your own copy: a folder of IDX files, an .npz, or train.csv[,test.csv]",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=path_arg,
        help="cache folder (default: $DIGITNET_CACHE or ~/.cache/digitnet)",
    )


def add_setting_flags(parser, title: str | None = None) -> list[str]:
    """One flag per :class:`~digitnet.training.TrainConfig` setting, made from the setting itself.

    Help, metavar, choices and the group come from :func:`digitnet.training.setting`;
    the type from the default (a tuple: ``--hidden 256,128``; a float: a finite number;
    a bool: a switch).
    Every flag defaults to None, meaning "the preset's value". Returns the
    settings' names, to pick the given ones from the parsed arguments.
    """
    from digitnet.training import settings

    groups = {}
    for f in settings():
        meta = f.metadata
        group = title or meta["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        kw = {"help": meta["help"], "default": None}
        if isinstance(f.default, bool):
            kw["action"] = "store_true"
        elif meta["choices"] is not None:
            kw["choices"] = list(meta["choices"])
        else:
            kw["type"] = {tuple: layer_sizes, float: finite}.get(type(f.default), type(f.default))
            kw["metavar"] = meta["metavar"]
        groups[group].add_argument("--" + f.name.replace("_", "-"), **kw)
    return [f.name for f in settings()]


def load_data(args, name: str, seed: int = 0):
    return load_dataset(
        name, data=args.data, cache_dir=args.cache_dir, progress=sys.stderr.isatty(), seed=seed
    )


def load_model_data(args, classifier):
    """The dataset a saved model is used on: ``--dataset``, else the one it was trained on.

    The model's training seed is passed on, so a test set held out of CSV data is the
    same one the model was tested on after training.
    """
    name = args.dataset or classifier.meta.get("dataset") or "mnist"
    return load_data(args, name, seed=model_seed(classifier))


def model_seed(classifier) -> int:
    return int((classifier.meta.get("config") or {}).get("seed", 0))


def layer_sizes(text: str) -> tuple:
    """argparse type for ``--hidden 256,128``."""
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be whole numbers separated by commas, got '{text}'"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one hidden size")
    return sizes


def finite(text: str) -> float:
    """argparse type for a real-valued flag: a finite number (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


# What Linux and macOS allow: a name in a folder, and a whole path.
NAME_MAX, PATH_MAX = 255, 4096


def path_arg(text: str) -> str:
    """argparse type for a path: every name in it short enough for the file system."""
    if len(os.fsencode(text)) > PATH_MAX:
        raise argparse.ArgumentTypeError(
            f"the path is {len(os.fsencode(text)):,} bytes long; at most {PATH_MAX:,} are allowed"
        )
    for name in Path(text).parts:
        if len(os.fsencode(name)) > NAME_MAX:
            raise argparse.ArgumentTypeError(
                f"the name '{name[:40]}...' is {len(os.fsencode(name))} bytes long; a file or folder name "
                f"can have at most {NAME_MAX}"
            )
    return text


def prepare_output(path, flag: str = "--out", folder: bool = False) -> Path:
    """Return ``path`` as a Path once it is sure it can be written, before any work starts.

    Its names must fit the file system, the nearest folder that exists on the way
    to it must be a folder we can write in, and it must not be a folder (for a
    file) or a file (for a ``folder``); raises :class:`DigitnetError` saying
    which. What a killed command left half-written beside it is removed
    (:func:`digitnet.data.sources.remove_litter`).
    """
    try:
        path = Path(path_arg(str(path))).expanduser()
    except argparse.ArgumentTypeError as exc:
        raise DigitnetError(f"{flag}: {exc}") from None
    if path.is_dir() and not folder:
        raise DigitnetError(f"{flag} {path} is a folder: give a file name")
    if path.exists() and not path.is_dir() and folder:
        raise DigitnetError(f"{flag} {path} is a file: give an output folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DigitnetError(f"{flag} {path} cannot be made: {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise DigitnetError(
            f"{flag} {path} cannot be written: {parent} is not writable ({exc.strerror or exc})"
        ) from None
    remove_litter(path.parent)
    return path


def print_json(obj) -> None:
    """Print ``obj`` as one line of JSON (the last line of stdout, by the CLI's contract)."""
    print(json.dumps(obj, default=float))


def percent(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def count(n: int, noun: str) -> str:
    """``count(1, "epoch")`` -> "1 epoch", ``count(18, "epoch")`` -> "18 epochs"."""
    return f"{n:,} {noun}{'s' * (n != 1)}"
