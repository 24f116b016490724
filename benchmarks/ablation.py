"""What each ingredient of a preset adds: train the preset, then the preset with each ingredient taken out.

For every row the preset is trained with seed 0 and the ingredient set back to the plain value
(no shift, no affine map, no elastic distortion, no dropout, no label smoothing, a constant rate;
with test-time shifts, the same network answering from one view, which needs no run of its own),
and the test accuracy and the training seconds are printed as a Markdown table, the one
docs/accuracy.md shows. A row is a whole training run: on 2 cores the `default` preset's rows take
about a minute each, `best`'s half an hour, so this is a long run of its own,
never part of the tests.

Run: ``python benchmarks/ablation.py --preset default [--only NAME ...] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os

from digitnet import training
from digitnet.data.datasets import load_dataset
from digitnet.presets import preset

# name: what taking the ingredient out sets
INGREDIENTS = {
    "shift": dict(augment_shift=0),
    "affine": dict(augment_rotate=0, augment_scale=0, augment_shear=0),
    "elastic": dict(augment_elastic_alpha=0),
    "flip": dict(augment_flip=False),
    "dropout": dict(dropout=0.0),
    "label smoothing": dict(label_smoothing=0.0),
    "one-cycle": dict(schedule="constant", lr=1e-3),
}


def present(config: training.TrainConfig, changes: dict) -> bool:
    """Does the preset use the ingredient that ``changes`` takes out?"""
    return any(getattr(config, key) != value for key, value in changes.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--only", nargs="*", choices=list(INGREDIENTS), help="the ingredients to take out")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = preset(args.preset)
    dataset = load_dataset(base.dataset)
    rows = [("the preset", {})] + [
        (f"without {name}", changes)
        for name, changes in INGREDIENTS.items()
        if present(base, changes) and (not args.only or name in args.only)
    ]
    results = []
    print(f"| {args.preset} | test accuracy | change | training seconds |")
    print("|---|---|---|---|")
    for label, changes in rows:
        config = preset(args.preset, **changes)
        metrics = training.train(config, dataset).metrics
        accuracy, seconds = metrics["test_accuracy"], metrics["train_seconds"]
        change = "" if not results else f"{(accuracy - results[0]['test_accuracy']) * 100:+.2f}"
        results.append(
            {"row": label, "changes": changes, "test_accuracy": accuracy, "train_seconds": seconds}
        )
        print(f"| {label} | {accuracy:.2%} | {change} | {seconds:.1f} |", flush=True)
        if not changes and base.test_time_shift:  # the same network answering from one view: no new run
            single = metrics["test_accuracy_single"]
            row = "without test-time shifts (the same network, one view)"
            results.append(
                {
                    "row": row,
                    "changes": {"test_time_shift": 0},
                    "test_accuracy": single,
                    "train_seconds": seconds,
                }
            )
            print(f"| {row} | {single:.2%} | {(single - accuracy) * 100:+.2f} | {seconds:.1f} |", flush=True)
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.json:
        print(json.dumps({"preset": args.preset, "rows": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
