"""What augmentation costs: the time the per-batch transforms add to an epoch of the default architecture.

The work: the `default` preset's network and optimiser (784-512-256-10, dropout 0.1, Adam, one-cycle,
batch 256) trained on the full MNIST training split. Each round trains one epoch per variant (no
augmentation, shift only, affine, elastic, all together) in interleaved order; each transform's calls
are timed where the loader makes them, and the share is its seconds over the epoch without
augmentation of the same round. The figures are medians over the rounds.

Target (the augmentation issue): at most 25% of the default architecture's epoch for every variant.
``--check`` exits 1 when one is above it.

On a machine other processes load, wall-clock seconds mostly measure the waiting: ``--clock cpu``
times with the process's CPU time instead (run it with ``OPENBLAS_NUM_THREADS=1``, so BLAS threads
waiting for work do not count), and ``--images N`` trains on the first N images (the share does not
depend on the length of the epoch).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/augment_cost.py``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
    "default's": dict(augment_shift=1, augment_elastic_alpha=30, augment_elastic_sigma=5),  # the preset's own
    "all": dict(
        augment_shift=1,
        augment_rotate=10,
        augment_scale=0.1,
        augment_shear=10,
        augment_elastic_alpha=34,
        augment_elastic_sigma=4,
    ),
}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


class Timed:
    """Wraps a transform and adds up the seconds of its calls."""

    def __init__(self, transform):
        self.transform, self.seconds = transform, 0.0

    def __call__(self, xb, rng):
        started = clock()
        out = self.transform(xb, rng)
        self.seconds += clock() - started
        return out


class EpochClock(training.Callback):
    """The seconds of the epoch's batches (not its validation) on the benchmark's clock."""

    def on_epoch_begin(self, state):
        self.started = clock()

    def on_batch_end(self, state):
        self.seconds = clock() - self.started


def one_epoch(dataset, changes: dict) -> tuple[float, float]:
    """(seconds of the epoch, seconds of its transforms)."""
    plain = dict(augment_shift=0, augment_elastic_alpha=0, test_time_shift=0)  # the preset's own are on
    base = dict(preset("default").to_dict(), **plain, epochs=1)
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
    epoch = EpochClock()
    try:
        training.train(config, dataset, callbacks=[epoch])
    finally:
        training._augmentation = made
    return epoch.seconds, (timed[0].seconds if timed else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a variant costs over {TARGET:.0%}")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="wall-clock or CPU seconds")
    parser.add_argument("--images", type=int, help="train on the first N training images (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]

    dataset = load_dataset("mnist")
    if args.images:
        dataset = dataclasses.replace(
            dataset, x_train=dataset.x_train[: args.images], y_train=dataset.y_train[: args.images]
        )
    default = preset("default")
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
        f"default architecture, one epoch on {round(len(dataset.x_train) * (1 - default.val_fraction)):,} images, "
        f"median of {args.rounds} interleaved rounds, {args.clock} seconds; load average "
        + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    )
    print(f"  {'variant':<8} {'epoch s':>8} {'transforms s':>13} {'share':>7}")
    for name, row in report.items():
        print(f"  {name:<8} {row['epoch_seconds']:8.3f} {row['transform_seconds']:13.3f} {row['share']:7.1%}")
    worst = max(row["share"] for row in report.values())
    print(f"  worst share {worst:.1%} (target at most {TARGET:.0%})")
    if args.json:
        print(json.dumps({"variants": report, "target": TARGET, "clock": args.clock}))
    return 1 if args.check and worst > TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
