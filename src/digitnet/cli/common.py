"""Small pieces the commands share: dataset flags, JSON output, number formatting."""

from __future__ import annotations

import json
import sys

from digitnet.data.datasets import DATASETS, load_dataset


def add_data_args(parser, dataset_default: str | None = "mnist") -> None:
    parser.add_argument("--dataset", default=dataset_default, choices=list(DATASETS),
                        help=f"which dataset (default: {dataset_default or 'the one the model was trained on'})")
    parser.add_argument("--data", metavar="PATH",
                        help="your own copy: a folder of IDX files, an .npz, or train.csv[,test.csv]")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="cache folder (default: $DIGITNET_CACHE or ~/.cache/digitnet)")


def load_data(args, name: str, seed: int = 0):
    return load_dataset(name, data=args.data, cache_dir=args.cache_dir, progress=sys.stderr.isatty(), seed=seed)


def print_json(obj) -> None:
    """Print ``obj`` as one line of JSON (the last line of stdout, by the CLI's contract)."""
    print(json.dumps(obj, default=float))


def percent(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
