"""``digitnet predict``: the digit a model reads, with its probabilities."""

from __future__ import annotations

import numpy as np

from digitnet import modelfile
from digitnet.cli.common import add_data_args, load_data, print_json
from digitnet.errors import DigitnetError


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser("predict", help=help_line,
                              description="Predict test images by their index in the test set.")
    p.add_argument("model", metavar="MODEL", help="a model file (runs/<run>/model.npz) or its run folder")
    p.add_argument("--index", type=int, nargs="+", metavar="I", required=True,
                   help="indices of test images (0-based)")
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    clf = modelfile.load(args.model)
    name = args.dataset or clf.meta.get("dataset") or "mnist"
    seed = int((clf.meta.get("config") or {}).get("seed", 0))
    ds = load_data(args, name, seed=seed)
    n = len(ds.x_test)
    bad = [i for i in args.index if not 0 <= i < n]
    if bad:
        raise DigitnetError(f"index {bad[0]} is outside the test set (0 to {n - 1})")
    proba = clf.predict_proba(ds.x_test[args.index])
    predictions = []
    for i, p in zip(args.index, proba):
        digit = int(np.argmax(p))
        label = int(ds.y_test[i])
        mark = "" if digit == label else "   (wrong)"
        print(f"test[{i}]: {clf.class_names[digit]} ({100 * p[digit]:.1f}%), true {clf.class_names[label]}{mark}")
        print("  " + "  ".join(f"{k}:{v:.3f}" for k, v in enumerate(p)))
        predictions.append({"input": f"test[{i}]", "index": i, "digit": digit, "label": label,
                            "probabilities": [float(v) for v in p]})
    if args.json:
        print_json({"predictions": predictions})
    return 0
