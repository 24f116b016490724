"""How fast the pictures are: every plot of a run, the HTML report, and the dashboard's frames per second.

A 784-128-64-10 network is trained for 2 epochs on the whole of MNIST (with
diagnostics), then, on the 10,000 test images:

- all nine plots are drawn and saved as PNGs (``digitnet plot``);
- the dashboard draws 100 frames headless, as its window does (blitting only
  what changes), and again with a full redraw per frame, for comparison.

Targets (issue: plots, a report and the live view): all plots of a run in under
10 s, robustness included; the dashboard at 10 frames per second or better.
``--check`` exits 1 when either is missed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from digitnet.data.datasets import load_dataset
from digitnet.diagnostics import Diagnostics
from digitnet.modelfile import Classifier, architecture_of
from digitnet.presets import preset
from digitnet.training import train
from digitnet.viz.dashboard import Dashboard
from digitnet.viz.plots import plot_run
from digitnet.viz.run import Run

PLOTS_TARGET_S = 10.0
FPS_TARGET = 10.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ds = load_dataset("mnist")
    diag = Diagnostics()
    result = train(preset("adam-128-64", epochs=2), ds, callbacks=[diag])
    clf = Classifier(
        result.model,
        result.normalizer,
        ds.class_names,
        architecture_of(result.model),
        {"metrics": result.metrics},
    )
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(clf, Path(tmp), result.history, diag.initial_weights, ds, name="benchmark")
        started = time.perf_counter()
        plot_run(run, on_saved=lambda name, paths, s: times.__setitem__(name, s))
        total = time.perf_counter() - started
    for name, s in times.items():
        print(f"  {name:14} {s:5.2f} s")
    print(
        f"all plots: {total:.2f} s (target < {PLOTS_TARGET_S:.0f} s; includes classifying the 10,000 test images)"
    )

    fps = {}
    for mode in ("blit", "full redraw"):
        dash = Dashboard(clf, ds.x_test, ds.y_test, title="benchmark")
        dash.set_blit(mode == "blit")
        dash.show(0)
        dash.render()
        started = time.perf_counter()
        for i in range(1, args.frames + 1):
            dash.show(i)
            dash.render()
        fps[mode] = args.frames / (time.perf_counter() - started)
        print(f"dashboard, {mode:11}: {fps[mode]:5.1f} frames/s")
    print(
        f"dashboard target: {FPS_TARGET:.0f} frames/s or better (the window blits); "
        f"blitting is {fps['blit'] / fps['full redraw']:.1f}x a full redraw"
    )
    if args.json:
        print(json.dumps({"plots_s": total, "per_plot_s": times, "dashboard_fps": fps}))
    missed = total >= PLOTS_TARGET_S or fps["blit"] < FPS_TARGET
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
