"""What Optuna's TPE sampler and Hyperband pruner buy ``digitnet tune``, on the same budget of trials.

Two comparisons over ``--hidden 32:1024 --lr 1e-4:1e-2 --l2 1e-4:1e-2`` (the
L2 range starts above 0: a log-uniform range cannot start at 0), each search
on a stratified subset of 10,000 MNIST training images (9,000 train, 1,000
validation) so the whole benchmark fits a shared 2-core machine:

1. TPE against random search: ``--trials`` trials of ``--epochs-a`` epochs
   each, for each of ``--seeds-a`` seeds; the best validation accuracy each
   reached. TPE draws a third of the trials at random, then models the rest.
2. Hyperband against no pruning: TPE with ``--trials`` trials of up to
   ``--epochs-b`` epochs, for each of ``--seeds-b`` seeds; the epochs trained
   in all (the compute), the best validation accuracy, and how many epochs the
   unpruned search had trained when it first matched Hyperband's best score.

Every trial runs in this process, one after another, so the seconds are
comparable within a run; the figures that matter are accuracies and epochs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/tune_samplers.py [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

from digitnet.data.datasets import load_dataset
from digitnet.tune import Results, SearchSpec, run_search, search_data

SPACE = {"hidden": "32:1024", "lr": "1e-4:1e-2", "l2": "1e-4:1e-2"}
SUBSET = 10_000


def search(dataset, folder: Path, method: str, prune: str, seed: int, trials: int, epochs: int) -> dict:
    """One search in this process; its best validation accuracy, epochs trained, seconds and trials in order."""
    spec = SearchSpec(
        space=SPACE, method=method, trials=trials, epochs=epochs, subset=SUBSET, seed=seed, prune=prune
    ).validate()
    results = Results.create(folder / f"{method}-{prune}-{seed}-{epochs}-{time.monotonic_ns()}", spec)
    data, _ = search_data(dataset, spec.subset, spec.seed)
    started = time.perf_counter()
    outcome = run_search(results, data)
    seconds = time.perf_counter() - started
    assert outcome.ran == trials and not outcome.interrupted, outcome
    records = [results.records[n] for n in sorted(results.records)]
    scored = [r["val_accuracy"] for r in records if r["val_accuracy"] is not None]
    return {
        "method": method,
        "prune": prune,
        "seed": seed,
        "best": max(scored),
        "epochs": sum(r["epochs"] for r in records),
        "pruned": sum(r["status"] == "pruned" for r in records),
        "seconds": seconds,
        "trials": [(r["val_accuracy"], r["epochs"]) for r in records],
    }


def epochs_to_reach(run: dict, target: float) -> int | None:
    """Epochs ``run`` had trained, in trial order, when a trial first scored ``target`` or better."""
    spent = 0
    for accuracy, epochs in run["trials"]:
        spent += epochs
        if accuracy is not None and accuracy >= target:
            return spent
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--seeds-a", type=int, default=3, help="seeds of TPE against random")
    parser.add_argument("--epochs-a", type=int, default=2)
    parser.add_argument("--seeds-b", type=int, default=2, help="seeds of Hyperband against no pruning")
    parser.add_argument("--epochs-b", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dataset = load_dataset("mnist")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samplers = [
            search(dataset, folder, method, "none", seed, args.trials, args.epochs_a)
            for seed in range(args.seeds_a)
            for method in ("random", "tpe")
        ]
        pruning = [
            search(dataset, folder, "tpe", prune, seed, args.trials, args.epochs_b)
            for seed in range(args.seeds_b)
            for prune in ("none", "hyperband")
        ]
    total = time.perf_counter() - started

    print(
        f"MNIST subset of {SUBSET:,} training images, {args.trials} trials a search, "
        f"{platform.processor() or platform.machine()}, {total:.0f} s in all"
    )
    print(f"\n1. best validation accuracy after {args.trials} trials of {args.epochs_a} epochs")
    print("seed   random     tpe")
    by = {(r["method"], r["seed"]): r for r in samplers}
    for seed in range(args.seeds_a):
        print(f"{seed:>4}  {100 * by['random', seed]['best']:6.2f}%  {100 * by['tpe', seed]['best']:6.2f}%")
    means = {m: statistics.mean(by[m, s]["best"] for s in range(args.seeds_a)) for m in ("random", "tpe")}
    wins = sum(by["tpe", s]["best"] > by["random", s]["best"] for s in range(args.seeds_a))
    print(
        f"mean  {100 * means['random']:6.2f}%  {100 * means['tpe']:6.2f}%   (TPE ahead on {wins} of {args.seeds_a})"
    )

    print(f"\n2. TPE, {args.trials} trials of up to {args.epochs_b} epochs: no pruning against Hyperband")
    print("seed  epochs none/hyperband  best none/hyperband  none's epochs to hyperband's best")
    by = {(r["prune"], r["seed"]): r for r in pruning}
    for seed in range(args.seeds_b):
        none, hb = by["none", seed], by["hyperband", seed]
        reach = epochs_to_reach(none, hb["best"])
        print(
            f"{seed:>4}  {none['epochs']:>6} / {hb['epochs']:<6}  {100 * none['best']:6.2f}% / "
            f"{100 * hb['best']:6.2f}%   {reach if reach is not None else 'never'} "
            f"({hb['pruned']} pruned; {none['seconds']:.0f} s / {hb['seconds']:.0f} s)"
        )
    ratio = sum(by["hyperband", s]["epochs"] for s in range(args.seeds_b)) / sum(
        by["none", s]["epochs"] for s in range(args.seeds_b)
    )
    print(f"Hyperband trained {ratio:.2f}x the epochs of no pruning")
    if args.json:
        print(json.dumps({"samplers": samplers, "pruning": pruning, "seconds": total, "epoch_ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
