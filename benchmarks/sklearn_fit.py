"""Fitting MNIST through DigitnetClassifier against digitnet.training.train, with the same settings.

Both train the adam-128-64 network (784-128-64-10, Adam lr 1e-3 with cosine
decay, batch 64) on the 60,000 training images scaled to [0, 1] for a few
epochs, with no validation split, in interleaved rounds. Each time is the
whole call: the estimator's ``fit`` (checking and converting the array
included) and ``train`` (its setup, normalisation and test-set evaluation
included). The target is the estimator taking at most 1.2x train's time
(median of the rounds); ``--check`` exits 1 when it is missed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/sklearn_fit.py [--epochs 3] [--rounds 3] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from digitnet.data import load_dataset
from digitnet.presets import preset
from digitnet.sklearn import DigitnetClassifier
from digitnet.training import train

TARGET = 1.2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless the ratio is at most {TARGET}")
    args = parser.parse_args(argv)

    ds = load_dataset("mnist")
    config = preset("adam-128-64", epochs=args.epochs, val_fraction=0.0, seed=0)
    X = ds.x_train.astype(np.float32) / 255
    y = ds.y_train

    def estimator() -> float:
        clf = DigitnetClassifier(
            hidden_layer_sizes=(128, 64),
            solver="adam",
            learning_rate_init=1e-3,
            batch_size=64,
            max_iter=args.epochs,
            schedule="cosine",
            random_state=0,
        )
        started = time.perf_counter()
        clf.fit(X, y)
        return time.perf_counter() - started

    def trainer() -> float:
        started = time.perf_counter()
        train(config, ds)
        return time.perf_counter() - started

    times = {"DigitnetClassifier.fit": [], "training.train": []}
    for r in range(args.rounds):
        order = [("DigitnetClassifier.fit", estimator), ("training.train", trainer)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            times[name].append(run())
    median = {name: statistics.median(t) for name, t in times.items()}
    ratio = median["DigitnetClassifier.fit"] / median["training.train"]
    for name, t in times.items():
        print(f"{name:24s} median {median[name]:7.2f} s   rounds: {', '.join(f'{s:.2f}' for s in t)}")
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"ratio {ratio:.3f}x ({args.epochs} epochs of 60,000 images; target <= {TARGET}x: {verdict})")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
