"""Every preset trained on one dataset, seed 0: the README's table of test accuracy and training seconds.

Each row is a whole `digitnet train --preset NAME` run, in this process, on MNIST or Fashion-MNIST
(``--dataset``): a preset made for the other dataset is trained on this one all the same (its own
``dataset`` setting is overridden), with flips left out on MNIST, where a mirrored digit is no digit.
The accuracy is the saved model's (with a preset's test-time shifts, the mean over its views; the
network alone is given beside it). `best` takes 14 to 22 minutes on 2 cores; ``--skip best`` leaves it
out. A long run of its own, never part of the tests.

Run: ``python benchmarks/presets_table.py --dataset fashion-mnist [--only NAME ...] [--skip NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import os

from digitnet import training
from digitnet.data.datasets import load_dataset
from digitnet.presets import PRESETS, preset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--only", nargs="*", choices=list(PRESETS), help="these presets alone")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(PRESETS), help="presets to leave out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    names = [n for n in (args.only or PRESETS) if n not in args.skip]
    print(f"| preset | {args.dataset} test accuracy | the network alone | training seconds | load |")
    print("|---|---|---|---|---|")
    rows = []
    for name in names:
        overrides = {"dataset": args.dataset}
        if args.dataset == "mnist" and PRESETS[name].get("augment_flip"):
            overrides["augment_flip"] = False
        config = preset(name, **overrides)
        metrics = training.train(config, dataset).metrics
        accuracy, seconds = metrics["test_accuracy"], metrics["train_seconds"]
        single = metrics.get("test_accuracy_single", accuracy)
        load = os.getloadavg()[0]
        rows.append(
            {
                "preset": name,
                "test_accuracy": accuracy,
                "single": single,
                "train_seconds": seconds,
                "load": load,
            }
        )
        print(f"| `{name}` | {accuracy:.2%} | {single:.2%} | {seconds:.1f} | {load:.1f} |", flush=True)
    if args.json:
        print(json.dumps({"dataset": args.dataset, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
