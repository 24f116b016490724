"""What augmentation costs: the time the per-batch transforms add to an epoch of the default architecture.

The work: the `default` preset's network and optimiser (784-512-256-10, dropout 0.1, Adam, one-cycle,
batch 128) trained on the full MNIST training split. Each round trains one epoch per variant (no
augmentation, shift only, affine, elastic, all together) in interleaved order; each transform's calls
are timed where the loader makes them, and the share is its seconds over the epoch without
augmentation of the same round. The figures are medians over the rounds.

Target (the augmentation issue): at most 25% of the default architecture's epoch for every variant.
``--check`` exits 1 when one is above it.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/augment_cost.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from digitnet import training
from digitnet.data.datasets import load_dataset
from digitnet.presets import preset

TARGET = 0.25
VARIANTS = {
    "none": {},
    "shift": dict(augment_shift=1),
    "affine": dict(augment_rotate=10, augment_scale=0.1, augment_shear=10),
    "elastic": dict(augment_elastic_alpha=34, augment_elastic_sigma=4),
    "all": dict(
        augment_shift=1,
        augment_rotate=10,
        augment_scale=0.1,
        augment_shear=10,
        augment_elastic_alpha=34,
        augment_elastic_sigma=4,
    ),
}


class Timed:
    """Wraps a transform and adds up the seconds of its calls."""

    def __init__(self, transform):
        self.transform, self.seconds = transform, 0.0

    def __call__(self, xb, rng):
        started = time.perf_counter()
        out = self.transform(xb, rng)
        self.seconds += time.perf_counter() - started
        return out


def one_epoch(dataset, changes: dict) -> tuple[float, float]:
    """(seconds of the epoch, seconds of its transforms)."""
    base = dict(preset("default").to_dict(), augment_shift=0, epochs=1)
    config = training.TrainConfig.from_dict({**base, **changes})
    made = training._augmentation
    timed = []

    def wrapped(*args):
        t = made(*args)
        if t is None:
            return None
        timed.append(Timed(t))
        return timed[-1]

    training._augmentation = wrapped
    try:
        result = training.train(config, dataset)
    finally:
        training._augmentation = made
    return result.metrics["epoch_seconds"][0], (timed[0].seconds if timed else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a variant costs over {TARGET:.0%}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = load_dataset("mnist")
    epochs = {name: [] for name in VARIANTS}
    cost = {name: [] for name in VARIANTS}
    shares = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS)[r % len(VARIANTS) :] + list(VARIANTS)[: r % len(VARIANTS)]
        seen = {}
        for name in order:
            seen[name] = one_epoch(dataset, VARIANTS[name])
        for name, (epoch, spent) in seen.items():
            epochs[name].append(epoch)
            cost[name].append(spent)
            shares[name].append(spent / seen["none"][0])
    report = {
        name: {
            "epoch_seconds": statistics.median(epochs[name]),
            "transform_seconds": statistics.median(cost[name]),
            "share": statistics.median(shares[name]),
        }
        for name in VARIANTS
    }
    print(
        f"default architecture, one epoch on {len(dataset.x_train) * 9 // 10:,} images, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"  {'variant':<8} {'epoch s':>8} {'transforms s':>13} {'share':>7}")
    for name, row in report.items():
        print(f"  {name:<8} {row['epoch_seconds']:8.3f} {row['transform_seconds']:13.3f} {row['share']:7.1%}")
    worst = max(row["share"] for row in report.values())
    print(f"  worst share {worst:.1%} (target at most {TARGET:.0%})")
    if args.json:
        print(json.dumps({"variants": report, "target": TARGET}))
    return 1 if args.check and worst > TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
