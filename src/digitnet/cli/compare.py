"""``digitnet compare``: two models (digitnet or PyTorch) on the same test set, side by side."""

from __future__ import annotations

import numpy as np

from digitnet import metrics
from digitnet.cli.common import add_data_args, load_data, percent, print_json
from digitnet.errors import DataError
from digitnet.interop import load_any
from digitnet.nn import ACTIVATIONS


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser("compare", help=help_line,
                              description="Run two models on the same test images: their accuracies, how often "
                                          "they agree, and the images on which they disagree.")
    p.add_argument("model_a", metavar="MODEL_A", help="a digitnet model (.npz or run folder) or a .pth / .safetensors")
    p.add_argument("model_b", metavar="MODEL_B", help="the other one")
    add_data_args(p, dataset_default=None)
    p.add_argument("--activation", choices=list(ACTIVATIONS),
                   help="for .pth files: the activation between layers (default: what the file records, else relu)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="list the first N disagreements (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    a, b = (load_any(path, activation=args.activation) for path in (args.model_a, args.model_b))
    if a.architecture["sizes"][0] != b.architecture["sizes"][0] or len(a.class_names) != len(b.class_names):
        raise DataError(f"the models do not read the same kind of input: {a.architecture['sizes']} and "
                        f"{b.architecture['sizes']}")
    name = args.dataset or a.meta.get("dataset") or b.meta.get("dataset") or "mnist"
    ds = load_data(args, name)
    if ds.x_test.shape[1] != a.architecture["sizes"][0] or len(ds.class_names) != len(a.class_names):
        raise DataError(f"the models take {a.architecture['sizes'][0]} pixels into {len(a.class_names)} classes; "
                        f"{name} has {ds.x_test.shape[1]} pixels and {len(ds.class_names)} classes")
    y = ds.y_test.astype(np.int64)
    pa, pb = a.predict(ds.x_test), b.predict(ds.x_test)
    acc_a, acc_b = metrics.accuracy(y, pa), metrics.accuracy(y, pb)
    differ = np.flatnonzero(pa != pb)
    only_a = int(np.sum((pa == y) & (pb != y)))
    only_b = int(np.sum((pb == y) & (pa != y)))
    both_wrong = int(np.sum((pa != y) & (pb != y) & (pa != pb)))
    by_class = np.bincount(y[differ], minlength=len(ds.class_names))
    classes = ds.class_names

    width = max(len(str(args.model_a)), len(str(args.model_b)))
    for label, path, clf, acc in (("A", args.model_a, a, acc_a), ("B", args.model_b, b, acc_b)):
        arch = clf.architecture
        print(f"{label}: {str(path):<{width}}  {'-'.join(map(str, arch['sizes']))} {arch['activation']}  "
              f"test accuracy {percent(acc)}")
    print(f"data: {ds.name} test set, {len(y):,} images")
    print(f"agreement: {percent(1 - len(differ) / max(1, len(y)))}  ({len(differ):,} images read differently)")
    print(f"  only A right: {only_a}   only B right: {only_b}   both wrong, differently: {both_wrong}")
    if len(differ):
        print("disagreements by true class: " + "  ".join(f"{classes[c]}: {n}" for c, n in enumerate(by_class) if n))
        shown = differ[:max(0, args.show)]
        if len(shown):
            print(f"first {len(shown)} of them:")
            width = max(5, *(len(c) for c in classes))
            print(f"  {'index':>6}  {'true':<{width}}  {'A':<{width}}  B")
            for i in shown:
                print(f"  {i:>6}  {classes[y[i]]:<{width}}  {classes[pa[i]]:<{width}}  {classes[pb[i]]}")
    if args.json:
        print_json({"dataset": ds.name, "n": int(len(y)), "accuracy_a": acc_a, "accuracy_b": acc_b,
                    "agreement": 1 - len(differ) / max(1, len(y)), "disagreements": differ.tolist(),
                    "only_a_right": only_a, "only_b_right": only_b, "both_wrong_differently": both_wrong,
                    "disagreements_by_class": {classes[c]: int(n) for c, n in enumerate(by_class)}})
    return 0
