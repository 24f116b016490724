"""``digitnet evaluate``: test accuracy, per-class scores and the confusion matrix of a saved model."""

from __future__ import annotations

import time

import numpy as np

from digitnet import metrics, modelfile
from digitnet.cli.common import add_data_args, load_model_data, path_arg, percent, print_json


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help=help_line,
        description="Measure a saved model on the test set of its dataset (or another).",
    )
    p.add_argument(
        "model", metavar="MODEL", type=path_arg, help="a model file (runs/<run>/model.npz) or its run folder"
    )
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    clf = modelfile.load(args.model)
    ds = modelfile.check_dataset(load_model_data(args, clf), clf)
    started = time.perf_counter()
    proba = clf.predict_proba(ds.x_test)
    seconds = time.perf_counter() - started
    scores = metrics.scores(ds.y_test, proba, clf.class_names)
    n, acc, top2 = scores["n"], scores["accuracy"], scores["top2_accuracy"]
    cm, per_class = scores["confusion_matrix"], scores["per_class"]

    shift = clf.test_time_shift
    views = f"; each image answered as the mean of {(2 * shift + 1) ** 2} views shifted by up to {shift} px"
    print(
        f"model: {clf.meta.get('path')}  ({'-'.join(map(str, clf.architecture['sizes']))} "
        f"{clf.architecture['activation']}{views if shift else ''})"
    )
    print(
        f"data: {ds.name} test set, {n:,} images, from {ds.source}"
        + (" (held out from the training data)" if ds.test_held_out else "")
    )
    print(
        f"test accuracy: {percent(acc)}   top-2 accuracy: {percent(top2)}   "
        f"inference: {seconds:.3f} s ({n / max(seconds, 1e-9):,.0f} images/s)"
    )
    single = None
    if shift:
        single = float(np.mean(clf.single_logits(ds.x_test).argmax(axis=1) == ds.y_test))
        print(f"the network alone, one view of each image: {percent(single)}")
    print()
    width = max(5, *(len(c["name"]) for c in per_class))
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for c in per_class:
        print(
            f"{c['name']:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  {c['support']:7d}"
        )
    print()
    print("confusion matrix (rows: true class, columns: predicted)")
    cell = max(4, len(str(cm.max())) + 1)
    print(" " * 4 + "".join(f"{i:>{cell}}" for i in range(len(cm))))
    for i, row in enumerate(cm):
        print(f"{i:>3} " + "".join(f"{v:>{cell}}" for v in row))
    if args.json:
        print_json(
            {
                "test_accuracy": acc,
                "test_accuracy_single": acc if single is None else single,
                "test_time_shift": shift,
                "n": n,
                "confusion_matrix": cm.tolist(),
                "per_class": per_class,
                "seconds": seconds,
                "top2_accuracy": top2,
                "dataset": ds.name,
                "model": clf.meta.get("path"),
            }
        )
    return 0
