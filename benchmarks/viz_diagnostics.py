"""What recording diagnostics costs: epoch time with and without the Diagnostics callback.

The work: one MNIST epoch (60,000 images, float32) of a network trained with
Adam, once with no callback and once with :class:`digitnet.diagnostics.Diagnostics`
(gradient norms and dead units on 32 sampled batches an epoch, the initial
weights kept), on identical copies of the network. Epochs are interleaved
(plain, diagnostics, plain, ...) so a noisy machine slows both alike, and the
time spent inside the callback's hooks is also measured directly (the added
work itself, which a busy machine blurs less than the difference of two epochs).

Target (issue: plots, a report and the live view): training slows by less than
5 %. ``--check`` exits 1 when it does not. The small 784-128-64-10 network with
batch 64 is the hardest case: its steps are the cheapest, so a fixed cost per
sampled batch weighs most there.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/viz_diagnostics.py``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from digitnet import nn
from digitnet.data.datasets import load_dataset
from digitnet.data.loader import DataLoader
from digitnet.diagnostics import Diagnostics
from digitnet.training import fit

CASES = {
    "784-128-64-10, batch 64": ([784, 128, 64, 10], 64),
    "784-512-256-10, batch 128": ([784, 512, 256, 10], 128),
}
TARGET = 0.05


class TimedDiagnostics(Diagnostics):
    """Diagnostics that also adds up the seconds spent in its own hooks."""

    spent = 0.0

    def _timed(name):
        def hook(self, state):
            started = time.perf_counter()
            getattr(Diagnostics, name)(self, state)
            TimedDiagnostics.spent += time.perf_counter() - started

        return hook

    on_train_begin, on_epoch_begin = _timed("on_train_begin"), _timed("on_epoch_begin")
    on_batch_end, on_epoch_end = _timed("on_batch_end"), _timed("on_epoch_end")


def runner(x, y, sizes, batch, callbacks):
    model = nn.mlp(sizes, rng=0)
    opt = nn.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(x, y, batch, rng=0)

    def epoch():
        started = time.perf_counter()
        fit(model, opt, loader, 1, callbacks=[cb() for cb in callbacks])
        return time.perf_counter() - started

    return epoch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs per variant (default 5)")
    ap.add_argument("--check", action="store_true", help=f"exit 1 if the overhead exceeds {TARGET:.0%}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ds = load_dataset("mnist")
    x, y = ds.x_train.astype(np.float32) / 255, ds.y_train.astype(np.intp)
    result = {}
    for case, (sizes, batch) in CASES.items():
        plain, diag = runner(x, y, sizes, batch, []), runner(x, y, sizes, batch, [TimedDiagnostics])
        plain(), diag()  # warm-up
        times = {"plain": [], "diagnostics": []}
        TimedDiagnostics.spent = 0.0
        for _ in range(args.epochs):
            times["plain"].append(plain())
            times["diagnostics"].append(diag())
        med = {k: statistics.median(v) for k, v in times.items()}
        in_hooks = TimedDiagnostics.spent / args.epochs
        result[case] = {
            "plain_s": med["plain"],
            "diagnostics_s": med["diagnostics"],
            "overhead_epochs": med["diagnostics"] / med["plain"] - 1,
            "hooks_s": in_hooks,
            "overhead": in_hooks / med["plain"],
        }
        print(
            f"{case:26} plain {med['plain']:.3f} s/epoch, with diagnostics {med['diagnostics']:.3f} "
            f"({100 * result[case]['overhead_epochs']:+.1f}%); inside the hooks {1000 * in_hooks:.1f} ms/epoch "
            f"= {100 * result[case]['overhead']:.2f}% of an epoch (target < {TARGET:.0%})"
        )
    if args.json:
        print(json.dumps(result))
    worst = max(r["overhead"] for r in result.values())
    return 1 if args.check and worst >= TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
