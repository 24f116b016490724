"""``digitnet predict``: the digit a model reads in image files, test-set images or a Kaggle CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from digitnet import modelfile, preprocess
from digitnet.cli.common import add_data_args, load_model_data, path_arg, prepare_output, print_json
from digitnet.data.formats import write_submission
from digitnet.errors import DigitnetError

SHADES = " .:-=+*#%@"  # darkest to lightest, two characters a pixel in --show


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "predict",
        help=help_line,
        description="Read digits in image files (PNG, JPEG, BMP, GIF, ...: any size, dark on light\n"
        "or light on dark), in the test set by index, or in a Kaggle test.csv. Images\n"
        "are first brought to MNIST's form (see digitnet.preprocess); --show prints\n"
        "what the network then sees.",
        epilog="examples:  digitnet predict runs/latest photo.jpg --show\n"
        "           digitnet predict runs/latest --index 0 1 2\n"
        "           digitnet predict runs/latest --csv test.csv --submission submission.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", metavar="MODEL", type=path_arg, help="a model file (runs/<run>/model.npz) or its run folder"
    )
    p.add_argument(
        "images", metavar="IMAGE", type=path_arg, nargs="*", help="image files, each holding one digit"
    )
    p.add_argument("--index", type=int, nargs="+", metavar="I", help="indices of test-set images (0-based)")
    p.add_argument(
        "--csv",
        metavar="FILE",
        type=path_arg,
        help="a CSV of images, one a row (Kaggle's test.csv: 784 pixel columns)",
    )
    p.add_argument(
        "--submission",
        metavar="FILE",
        type=path_arg,
        help="with --csv: write Kaggle's submission file (ImageId,Label; ids from 1)",
    )
    p.add_argument("--show", action="store_true", help="print each image beside the 28x28 the network saw")
    p.add_argument(
        "--save-preview",
        metavar="DIR",
        type=path_arg,
        help="save each image beside the 28x28 the network saw as DIR/<name>.preview.png",
    )
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.csv and not args.submission:
        raise DigitnetError("--csv needs --submission FILE: where to write the ImageId,Label rows")
    if args.submission and not args.csv:
        raise DigitnetError("--submission needs --csv FILE: the images to predict")
    if not (args.images or args.index or args.csv):
        raise DigitnetError("nothing to predict: give image files, --index I..., or --csv test.csv")
    if args.submission:
        prepare_output(args.submission, "--submission")
    if args.save_preview:
        prepare_output(args.save_preview, "--save-preview", folder=True)
    clf = modelfile.load(args.model)
    preview_dir = preprocess.preview_folder(args.save_preview) if args.save_preview else None
    output: dict = {"predictions": []}
    failed = []
    if args.index:
        output["predictions"] += _predict_indices(clf, args, preview_dir)
    for path in args.images:
        try:
            prepared = preprocess.prepare(path, name=path)
        except DigitnetError as exc:
            sys.stderr.write(f"error: {exc}\n")
            failed.append({"input": path, "error": str(exc)})
            continue
        output["predictions"].append(_report(clf, path, prepared, args, preview_dir))
    if args.csv:
        output["submission"] = _submission(clf, Path(args.csv), Path(args.submission))
    if failed:
        output["errors"] = failed
    if args.json:
        print_json(output)
    return 2 if failed else 0


def _predict_indices(clf, args, preview_dir) -> list[dict]:
    ds = load_model_data(args, clf)
    n = len(ds.x_test)
    bad = [i for i in args.index if not 0 <= i < n]
    if bad:
        raise DigitnetError(f"index {bad[0]} is outside the test set (0 to {n - 1})")
    out = []
    for i in args.index:
        prepared = preprocess.from_mnist(ds.x_test[i])
        entry = _report(clf, f"test[{i}]", prepared, args, preview_dir, label=int(ds.y_test[i]))
        out.append({**entry, "index": i, "label": int(ds.y_test[i])})
    return out


def _report(clf, name: str, prepared, args, preview_dir, label: int | None = None) -> dict:
    """Predict one prepared image, print the answer (and --show), save the preview; return its JSON entry."""
    p = clf.predict_proba(prepared.pixels.reshape(1, -1))[0]
    digit = int(np.argmax(p))
    if args.show:
        print("\n".join(_text_art(prepared)))
    truth = (
        "" if label is None else f", true {clf.class_names[label]}" + ("" if label == digit else "   (wrong)")
    )
    print(f"{name}: {clf.class_names[digit]} ({100 * p[digit]:.1f}%){truth}")
    print("  " + "  ".join(f"{k}:{v:.3f}" for k, v in enumerate(p)))
    entry = {"input": name, "digit": digit, "probabilities": [float(v) for v in p]}
    if preview_dir is not None:
        entry["preview"] = str(preprocess.save_preview(prepared, preview_dir, name))
    return entry


def _text_art(prepared) -> list[str]:
    """The input (left, as it looked) beside the 28 x 28 the network saw (right), as text lines."""
    left = preprocess.thumbnail(prepared)  # -1: outside the input

    def row(values):
        return "".join(
            "  " if v < 0 else SHADES[min(len(SHADES) - 1, v * len(SHADES) // 256)] * 2 for v in values
        )

    header = f"{'input':<56}   {'what the network sees (28x28)':<56}"
    return [header] + [
        row(a) + " | " + row(b) for a, b in zip(left, prepared.pixels.astype(int), strict=True)
    ]


def _submission(clf, csv_path: Path, out: Path) -> dict:
    """Predict every row of a digit CSV, write Kaggle's ImageId,Label file, print what it holds."""
    found = clf.predict_csv(csv_path)
    digits, counts = found["digits"], found["counts"]
    write_submission(out, digits)
    print(f"{csv_path}: {len(digits)} images -> {out} (ImageId,Label; ids 1 to {len(digits)})")
    print("  digits found: " + "  ".join(f"{clf.class_names[k]}:{c}" for k, c in enumerate(counts)))
    info = {"path": str(out), "rows": int(len(digits)), "counts": counts.tolist()}
    if found["accuracy"] is not None:  # a labelled CSV (train.csv): say how well it did
        info["accuracy"] = found["accuracy"]
        print(f"  the CSV has labels: accuracy {100 * info['accuracy']:.2f}%")
    return info
