"""``digitnet predict``: the digit (or, with ``--number``, the number) a model reads in image files,
test-set images or a Kaggle CSV."""

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
        "           digitnet predict runs/latest meter.jpg --number --save-preview previews/\n"
        "           digitnet predict runs/latest --index 0 1 2\n"
        "           digitnet predict runs/latest --csv test.csv --submission submission.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", metavar="MODEL", type=path_arg, help="a model file (runs/<run>/model.npz) or its run folder"
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        type=path_arg,
        nargs="*",
        help="image files, each holding one digit (or, with --number, a number)",
    )
    p.add_argument(
        "--number",
        action="store_true",
        help="read every digit in each image, left to right (a house number, a year, a meter): "
        "the JSON gives the number and each digit's box, reading, probabilities and 28x28",
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
    p.add_argument(
        "--show",
        action="store_true",
        help="print each image beside the 28x28 the network saw (with --number: the digits' boxes and readings)",
    )
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
    if args.submission and Path(args.submission).resolve() == Path(args.csv).resolve():
        raise DigitnetError(
            f"--submission {args.submission} is the --csv file itself: write it somewhere else"
        )
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
            if args.number:
                prepared = preprocess.prepare_number(path, name=path, reader=_reader(clf))
            else:
                prepared = preprocess.prepare(path, name=path)
        except DigitnetError as exc:
            sys.stderr.write(f"error: {exc}\n")
            failed.append({"input": path, "error": str(exc)})
            continue
        for note in prepared.notes:
            sys.stderr.write(f"note: {note}\n")
        report = _report_number if args.number else _report
        entry = report(clf, path, prepared, args, preview_dir)
        if prepared.notes:
            entry["notes"] = prepared.notes
        output["predictions"].append(entry)
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


def _reader(clf):
    """The model's probabilities for ``(n, 28, 28)`` digits, for deciding how touching digits split."""
    return lambda x: clf.predict_proba(x.reshape(len(x), -1))


def _report_number(clf, name: str, number, args, preview_dir) -> dict:
    """Read every digit of a prepared number, print it (and --show), save the preview; return its entry."""
    p = clf.predict_proba(np.stack([d.pixels.reshape(-1) for d in number.digits]))
    entry = {"input": name, **preprocess.read_number(number, p, clf.class_names)}
    if args.show:
        print("\n".join(_number_art(number, entry["digits"])))
    sure = min(float(d["probabilities"][d["digit"]]) for d in entry["digits"])
    print(f"{name}: {entry['number']} ({len(entry['digits'])} digits; the least sure {100 * sure:.1f}%)")
    for d in entry["digits"]:
        box = d["box"]
        print(
            f"  {d['label']} ({100 * d['probabilities'][d['digit']]:.1f}%) at x={box['x']} y={box['y']} "
            f"{box['width']}x{box['height']}"
        )
    if preview_dir is not None:
        readings = [d["label"] for d in entry["digits"]]
        entry["preview"] = str(preprocess.save_preview(number, preview_dir, name, readings))
    return entry


def _number_art(number, digits: list[dict], columns: int = 96) -> list[str]:
    """The input as text with each digit's box drawn and its reading at the box's corner, then the
    28 x 28 images the network saw (at half size), four to a row, each under its reading."""
    grey = np.clip(number.grey, 0, 255)
    h, w = grey.shape
    cols = min(columns, w)
    rows = max(1, round(h / w * cols / 2))  # characters are about twice as tall as wide
    # Each character shows the mean of the pixels it covers.
    ys, xs = np.linspace(0, h, rows + 1).astype(int), np.linspace(0, w, cols + 1).astype(int)
    small = np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1)
    small = (small / np.outer(np.diff(ys), np.diff(xs))).astype(int)
    ink = 255 - small if number.inverted else small
    art = [[SHADES[min(len(SHADES) - 1, v * len(SHADES) // 256)] for v in row] for row in ink]
    for digit, d in zip(number.digits, digits, strict=True):
        top, left, bottom, right = digit.box
        y0, y1 = int(top * rows / h), min(rows - 1, int((bottom - 1) * rows / h))
        x0, x1 = int(left * cols / w), min(cols - 1, int((right - 1) * cols / w))
        for x in range(x0, x1 + 1):
            art[y0][x] = art[y1][x] = "-"
        for y in range(y0, y1 + 1):
            art[y][x0] = art[y][x1] = "|"
        for y, x in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
            art[y][x] = "+"
        for i, ch in enumerate(str(d["label"])[: max(1, x1 - x0 - 1)]):
            if x0 + 1 + i < cols:  # a box one character wide at the right edge has no room after it
                art[y0][x0 + 1 + i] = ch
    lines = ["".join(row) for row in art]
    for start in range(0, len(number.digits), 4):
        group = number.digits[start : start + 4]
        halves = [
            np.asarray(dig.pixels, float).reshape(14, 2, 14, 2).mean(axis=(1, 3)).astype(int) for dig in group
        ]
        lines.append("   ".join(f"{digits[start + i]['label']:<28}" for i in range(len(group))))
        for r in range(14):
            lines.append(
                "   ".join(
                    "".join(SHADES[min(len(SHADES) - 1, v * len(SHADES) // 256)] * 2 for v in half[r])
                    for half in halves
                )
            )
    return lines


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
