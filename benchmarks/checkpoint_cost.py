"""What a checkpoint costs: the time of writing one against the epoch it follows, and its size.

The work: the `default` preset (784-512-256-10, dropout, shifts, one-cycle Adam, batch 256) trained
on the full MNIST training split in a real run folder, as `digitnet train` does, for a few epochs.
Each checkpoint's time is measured where the loop takes it (`Loop.save_checkpoint`: gathering the
state, weights, Adam's moments, the generators, the loader's order, the history, and writing
`checkpoint.npz` to a temporary name, fsync, rename, and `run.json`), and so is each epoch's.

Target (the engine issue): a checkpoint costs at most 2% of an epoch of the default preset, and
weighs a few MB. ``--check`` exits 1 when the median checkpoint is above 2% of the median epoch.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/checkpoint_cost.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from digitnet import runs, training
from digitnet.data.datasets import load_dataset
from digitnet.presets import preset

TARGET = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs to train (default 4)")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if a checkpoint costs over {TARGET:.0%}"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    seconds, sizes = [], []
    save = training.Loop.save_checkpoint

    def timed(loop):
        started = time.perf_counter()
        save(loop)
        seconds.append(time.perf_counter() - started)
        sizes.append((run.path / runs.CHECKPOINT).stat().st_size)

    training.Loop.save_checkpoint = timed
    dataset = load_dataset("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        run = runs.Run.create(Path(tmp) / "run", preset("default", epochs=args.epochs), dataset)
        result = run.train(dataset)
    epochs = result.metrics["epoch_seconds"]
    share = statistics.median(seconds) / statistics.median(epochs)
    report = {
        "epoch_seconds": epochs,
        "checkpoint_seconds": seconds,
        "checkpoint_bytes": sizes[-1],
        "share": share,
        "target": TARGET,
    }
    print(f"default preset, {len(epochs)} epochs on {result.metrics['n_train']:,} images")
    print(
        f"  an epoch:      median {statistics.median(epochs):.3f} s  ({', '.join(f'{s:.3f}' for s in epochs)})"
    )
    print(
        f"  a checkpoint:  median {statistics.median(seconds) * 1000:.1f} ms  "
        f"({', '.join(f'{s * 1000:.1f}' for s in seconds)}), {sizes[-1] / 2**20:.1f} MB"
    )
    print(f"  share of an epoch: {share:.2%} (target at most {TARGET:.0%})")
    if args.json:
        print(json.dumps(report))
    return 1 if args.check and share > TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
