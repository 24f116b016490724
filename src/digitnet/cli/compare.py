"""``digitnet compare``: two models (digitnet or PyTorch) on the same test set, side by side."""

from __future__ import annotations

from digitnet import metrics, modelfile
from digitnet.cli.common import add_data_args, load_data, path_arg, percent, print_json
from digitnet.interop import load_any
from digitnet.nn import ACTIVATIONS


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "compare",
        help=help_line,
        description="Run two models on the same test images: their accuracies, how often "
        "they agree, and the images on which they disagree.",
    )
    p.add_argument(
        "model_a",
        metavar="MODEL_A",
        type=path_arg,
        help="a digitnet model (.npz or run folder) or a .pth / .safetensors",
    )
    p.add_argument("model_b", metavar="MODEL_B", type=path_arg, help="the other one")
    add_data_args(p, dataset_default=None)
    p.add_argument(
        "--activation",
        choices=list(ACTIVATIONS),
        help="for .pth files: the activation between layers (default: what the file records, else relu)",
    )
    p.add_argument(
        "--show", type=int, default=20, metavar="N", help="list the first N disagreements (default 20)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    a, b = (load_any(path, activation=args.activation) for path in (args.model_a, args.model_b))
    modelfile.check_same_input(a, b)
    name = args.dataset or a.meta.get("dataset") or b.meta.get("dataset") or "mnist"
    ds = modelfile.check_dataset(load_data(args, name), a, b)
    y = ds.y_test
    pa, pb = a.predict(ds.x_test), b.predict(ds.x_test)
    stats = metrics.agreement(y, pa, pb, len(ds.class_names))
    acc_a, acc_b, differ = stats["accuracy_a"], stats["accuracy_b"], stats["disagreements"]
    by_class = stats["disagreements_by_class"]
    classes = ds.class_names

    width = max(len(str(args.model_a)), len(str(args.model_b)))
    for label, path, clf, acc in (("A", args.model_a, a, acc_a), ("B", args.model_b, b, acc_b)):
        arch = clf.architecture
        print(
            f"{label}: {str(path):<{width}}  {'-'.join(map(str, arch['sizes']))} {arch['activation']}  "
            f"test accuracy {percent(acc)}"
        )
    print(f"data: {ds.name} test set, {len(y):,} images")
    print(f"agreement: {percent(stats['agreement'])}  ({len(differ):,} images read differently)")
    print(
        f"  only A right: {stats['only_a_right']}   only B right: {stats['only_b_right']}   "
        f"both wrong, differently: {stats['both_wrong_differently']}"
    )
    if len(differ):
        print(
            "disagreements by true class: "
            + "  ".join(f"{classes[c]}: {n}" for c, n in enumerate(by_class) if n)
        )
        shown = differ[: max(0, args.show)]
        if len(shown):
            print(f"first {len(shown)} of them:")
            width = max(5, *(len(c) for c in classes))
            print(f"  {'index':>6}  {'true':<{width}}  {'A':<{width}}  B")
            for i in shown:
                print(f"  {i:>6}  {classes[y[i]]:<{width}}  {classes[pa[i]]:<{width}}  {classes[pb[i]]}")
    if args.json:
        print_json(
            {
                "dataset": ds.name,
                "n": stats["n"],
                "accuracy_a": acc_a,
                "accuracy_b": acc_b,
                "agreement": stats["agreement"],
                "disagreements": differ.tolist(),
                "only_a_right": stats["only_a_right"],
                "only_b_right": stats["only_b_right"],
                "both_wrong_differently": stats["both_wrong_differently"],
                "disagreements_by_class": {classes[c]: int(n) for c, n in enumerate(by_class)},
            }
        )
    return 0
