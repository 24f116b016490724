"""``digitnet dashboard``: watch a model read test digits in a live seven-panel window (or record it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitnet import modelfile
from digitnet.cli.common import add_data_args, load_model_data, path_arg, percent, print_json
from digitnet.errors import DigitnetError
from digitnet.viz.catalog import require

MAX_INTERVAL_MS = 60_000  # a minute a digit
MAX_FRAMES = 10_000  # of a recording


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "dashboard",
        help=help_line,
        description="A window that steps through test digits and shows, for each, the "
        "prediction, the probabilities, the network's activity, the running "
        "confusion matrix, layer activations, the weights into the predicted "
        "output and the recent confidence. Keys: space pauses, → steps, q quits. "
        "Without a display, record it with --save.",
    )
    p.add_argument(
        "model", metavar="MODEL", type=path_arg, help="a model file (runs/<run>/model.npz) or its run folder"
    )
    p.add_argument("--interval", type=int, default=100, metavar="MS", help="time per digit (default: 100 ms)")
    p.add_argument("--start", type=int, default=0, metavar="INDEX", help="first test image (default: 0)")
    p.add_argument("--only-mistakes", action="store_true", help="show only the digits the model gets wrong")
    p.add_argument(
        "--save",
        metavar="FILE",
        type=path_arg,
        help="record instead of opening a window: .gif, .mp4 (needs ffmpeg "
        "or digitnet[video]), or .png for one frame",
    )
    p.add_argument(
        "--frames",
        type=int,
        metavar="N",
        help="frames to record (default: 100); with a .png, the view after N digits (default: 1)",
    )
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    require()
    from digitnet.viz.dashboard import Dashboard
    from digitnet.viz.live import check_output, play, record, window_figure
    from digitnet.viz.run import check_dataset

    if not 1 <= args.interval <= MAX_INTERVAL_MS:
        raise DigitnetError(f"--interval must be 1 to {MAX_INTERVAL_MS:,} ms, got {args.interval}")
    if args.frames is None:
        args.frames = 1 if args.save and args.save.lower().endswith(".png") else 100
    if not 1 <= args.frames <= MAX_FRAMES:
        raise DigitnetError(f"--frames must be 1 to {MAX_FRAMES:,}, got {args.frames}")
    if args.save:
        check_output(Path(args.save))
    clf = modelfile.load(args.model)
    ds = check_dataset(load_model_data(args, clf), clf)
    n = len(ds.x_test)
    if not 0 <= args.start < n:
        raise DigitnetError(
            f"--start must be between 0 and {n - 1} (the test set has {n:,} images), got {args.start}"
        )
    indices = np.arange(n)
    if args.only_mistakes:
        wrong = np.flatnonzero(clf.predict(ds.x_test) != ds.y_test)
        if not len(wrong):
            raise DigitnetError(f"the model makes no mistakes on the {n:,} test images: drop --only-mistakes")
        indices = wrong
        print(f"{len(wrong):,} of {n:,} test images are misclassified")
    first = int(np.searchsorted(indices, args.start)) % len(indices)
    indices = np.roll(indices, -first)
    sizes = "-".join(map(str, clf.architecture["sizes"]))
    title = f"digitnet: {sizes} {clf.architecture.get('activation', '')} on {ds.name} test images"

    if not args.save:
        dash = Dashboard(clf, ds.x_test, ds.y_test, fig=window_figure(), title=title)
        play(dash, indices, args.interval)
        return 0
    dash = Dashboard(clf, ds.x_test, ds.y_test, title=title)
    info = record(dash, indices, args.save, frames=args.frames, interval_ms=args.interval)
    state = dash.state
    drawn = (
        f"{info['frames']} frames drawn at {info['fps']:.1f} frames/s" if info["fps"] else "the last frame"
    )
    print(
        f"saved {info['path']}: {drawn}; running accuracy {percent(state['running_accuracy'])} "
        f"on {state['seen']:,} digit{'s' if state['seen'] != 1 else ''}"
    )
    if args.json:
        print_json(
            {
                **info,
                "seen": state["seen"],
                "correct": state["correct"],
                "running_accuracy": state["running_accuracy"],
                "last_index": state["index"],
                "last_prediction": state["pred"],
                "last_confidence": state["confidence"],
            }
        )
    return 0
