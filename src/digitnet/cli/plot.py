"""``digitnet plot``: draw the plots of a run folder (or a model file) as PNG (and SVG) files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from digitnet.cli.common import add_data_args, load_model_data, path_arg, prepare_output, print_json
from digitnet.viz.catalog import NEEDS_DATA, PLOTS, require


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "plot",
        help=help_line,
        description="Draw the plots of a trained model into its run folder (or --out). "
        "A model file without its run folder gets the plots that need no "
        "training history.",
        epilog="plots:\n" + "\n".join(f"  {n:<14} {t}" for n, t in PLOTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run",
        metavar="RUN_DIR_OR_MODEL",
        type=path_arg,
        help="a run folder (runs/<run>) or a model file (model.npz)",
    )
    p.add_argument(
        "--out", metavar="DIR", type=path_arg, help="folder for the images (default: the run folder)"
    )
    p.add_argument(
        "--which",
        nargs="+",
        metavar="NAME",
        choices=list(PLOTS),
        help=f"only these plots: {', '.join(PLOTS)} (default: all the run allows)",
    )
    p.add_argument("--svg", action="store_true", help="write an SVG beside each PNG")
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    require()
    from digitnet.viz.plots import plot_run
    from digitnet.viz.run import check_dataset, load_run

    started = time.perf_counter()
    if args.out:
        prepare_output(args.out, folder=True)
    run_ = load_run(args.run, load_data=False)
    wanted = args.which or list(PLOTS)
    if NEEDS_DATA & set(wanted):
        run_.dataset = check_dataset(load_model_data(args, run_.classifier), run_.classifier)
    for note in run_.notes:
        print(f"note: {note}: skipping the plots that need it")

    def saved(name, paths, seconds):
        print(f"{name:<14} {', '.join(map(str, paths))}  ({seconds:.1f} s)", flush=True)

    formats = ("png", "svg") if args.svg else ("png",)
    written, skipped = plot_run(run_, which=args.which, out=args.out, formats=formats, on_saved=saved)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    seconds = time.perf_counter() - started
    out = Path(args.out) if args.out else run_.folder
    print(f"{len(written)} plots in {out} ({seconds:.1f} s)")
    if args.json:
        print_json(
            {
                "out": str(out),
                "plots": {k: [str(p) for p in v] for k, v in written.items()},
                "skipped": skipped,
                "seconds": seconds,
            }
        )
    return 0
