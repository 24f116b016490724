"""How much faster N local workers finish a grid than one process: ``digitnet tune --workers N``.

The work: the classic grid, hidden 64,128,256,512 x L2 0,1 (8 trials), each
trained for 3 epochs on a stratified 20,000-image MNIST subset (18,000 train,
2,000 validation), Adam, batch 128. The search runs in three ways, in turn,
``--repeats`` times each, in the same run, so a busy machine slows all alike:

- 1 worker: in this process, with every BLAS thread (``--workers 1``);
- 1 worker, 1 BLAS thread: the same, held to one core's worth of BLAS;
- N workers: N processes, each held to cores/N BLAS threads (``--workers N``).

The figures that matter are the ratios of the best times: the speed-up of N
workers over each single-worker baseline. The refit of the winner is not timed.

    python benchmarks/tune_speedup.py [--workers 2] [--repeats 2] [--json]
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
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = SearchSpec(space=SPACE, epochs=args.epochs, subset=args.subset).validate()
    data, _ = search_data(load_dataset("mnist"), spec.subset, spec.seed)
    cores = len(os.sched_getaffinity(0))
    print(f"{platform.processor() or platform.machine()}, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {len(spec.trial_params())} trials of {args.epochs} epochs on "
          f"{len(data.x):,} images", flush=True)
    modes = {"1 worker": (1, None), "1 worker, 1 BLAS thread": (1, 1), f"{args.workers} workers": (args.workers, None)}
    times = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, (workers, blas) in modes.items():
            seconds, records = time_search(spec, data, workers, blas)
            times[mode].append(seconds)
            trial_seconds = sum(r["seconds"] for r in records)
            print(f"  run {repeat + 1}: {mode:<24} {seconds:6.2f} s  (trials add up to {trial_seconds:6.2f} s; "
                  f"BLAS threads {records[0]['blas_threads']})", flush=True)
    best = {mode: min(t) for mode, t in times.items()}
    many = best[f"{args.workers} workers"]
    print(f"best of {args.repeats}: " + ", ".join(f"{mode} {t:.2f} s" for mode, t in best.items()))
    print(f"speed-up of {args.workers} workers: {best['1 worker'] / many:.2f}x over 1 worker, "
          f"{best['1 worker, 1 BLAS thread'] / many:.2f}x over 1 worker with 1 BLAS thread "
          f"(ideal {min(args.workers, cores)}x on {cores} cores)")
    if args.json:
        print(json.dumps({"workers": args.workers, "cores": cores, "seconds": times,
                          "speedup": best["1 worker"] / many,
                          "speedup_one_thread": best["1 worker, 1 BLAS thread"] / many}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
