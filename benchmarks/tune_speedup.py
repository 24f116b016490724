"""How much faster N local workers finish a grid than one: ``digitnet tune --workers N``.

The work: a hidden size x L2 grid, hidden 64,128,256,512 x L2 0,1 (8 trials),
each trained for 3 epochs on the 60,000 MNIST training images (54,000 train,
6,000 validation), Adam, batch 128. The search runs in three ways, in turn,
``--repeats`` times each, in the same run, so a busy machine slows all alike:

- 1 worker, 1 BLAS thread: one process on one core, the unit that N workers
  on N cores multiply;
- N workers: N processes, each held to cores/N BLAS threads (``--workers N``);
- 1 worker: in this process, with every BLAS thread (``--workers 1``, the
  default), which already spreads its matrix products over all the cores.

The figures that matter are the ratios of the best times. N workers against
one worker on one core is the speed-up per core (ideal: N). Against
``--workers 1`` the ideal is lower: only the part of a trial that one process
cannot spread over the cores (the element-wise work, the optimiser's step, the
Python) gains from more processes. The benchmark prints that ceiling, the time
of one single-core worker divided by N, as a ratio. The refit of the winner is
not timed.

    python benchmarks/tune_speedup.py [--workers 2] [--repeats 2] [--subset N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from threadpoolctl import threadpool_limits

from digitnet.data.datasets import load_dataset
from digitnet.tune import Results, SearchSpec, run_search, search_data

SPACE = {"hidden": "64,128,256,512", "l2": "0,1"}


def time_search(spec: SearchSpec, data, workers: int, blas_threads: int | None) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(blas_threads):
        results = Results.create(os.path.join(tmp, "search"), spec)
        started = time.perf_counter()
        outcome = run_search(results, data, workers=workers)
        seconds = time.perf_counter() - started
    assert outcome.ran == len(spec.trial_params()) and not outcome.interrupted
    return seconds, list(results.records.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subset", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = SearchSpec(space=SPACE, epochs=args.epochs, subset=args.subset).validate()
    data, _ = search_data(load_dataset("mnist"), spec.subset, spec.seed)
    cores = len(os.sched_getaffinity(0))
    print(
        f"{platform.processor() or platform.machine()}, {cores} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {len(spec.trial_params())} trials of {args.epochs} epochs on "
        f"{len(data.x):,} images",
        flush=True,
    )
    many = f"{args.workers} workers"
    modes = {"1 worker, 1 BLAS thread": (1, 1), many: (args.workers, None), "1 worker": (1, None)}
    times = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, (workers, blas) in modes.items():
            seconds, records = time_search(spec, data, workers, blas)
            times[mode].append(seconds)
            trial_seconds = sum(r["seconds"] for r in records)
            print(
                f"  run {repeat + 1}: {mode:<24} {seconds:6.2f} s  (trials add up to {trial_seconds:6.2f} s; "
                f"BLAS threads {records[0]['blas_threads']})",
                flush=True,
            )
    best = {mode: min(t) for mode, t in times.items()}
    ideal = min(args.workers, cores)
    per_core = best["1 worker, 1 BLAS thread"] / best[many]
    over_default = best["1 worker"] / best[many]
    ceiling = best["1 worker"] / (best["1 worker, 1 BLAS thread"] / ideal)
    print(f"best of {args.repeats}: " + ", ".join(f"{mode} {t:.2f} s" for mode, t in best.items()))
    print(
        f"{many} on {cores} cores: {per_core:.2f}x as fast as 1 worker on 1 core (ideal {ideal}x); "
        f"{over_default:.2f}x as fast as --workers 1 (ideal here {ceiling:.2f}x, as one process already "
        f"runs its matrix products on {cores} cores)"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "workers": args.workers,
                    "cores": cores,
                    "seconds": times,
                    "speedup_per_core": per_core,
                    "speedup_over_one_process": over_default,
                    "ideal_over_one_process": ceiling,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
