"""``digitnet import-torch``: a PyTorch state_dict (.pth) into a digitnet model file, without PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitnet import modelfile
from digitnet.cli.common import finite, path_arg, prepare_output, print_json
from digitnet.data.datasets import DATASETS
from digitnet.data.loader import Normalizer
from digitnet.errors import DigitnetError
from digitnet.interop import import_torch
from digitnet.nn import ACTIVATIONS

DESCRIPTION = """\
Read a file written by torch.save (a state_dict, or a checkpoint holding one) and save the
network as a digitnet model. PyTorch is not needed and no code from the file is run: anything
but tensors and plain containers (a whole pickled model, a crafted file) is refused.

The layers are found from the weights' shapes. The activation between them is code, not data,
so a state_dict cannot say it: --activation does (files digitnet wrote record it)."""


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "import-torch",
        help=help_line,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "file",
        metavar="FILE",
        type=path_arg,
        help="a .pth / .pt file from torch.save (or a .safetensors file)",
    )
    p.add_argument(
        "--out", required=True, metavar="MODEL.npz", type=path_arg, help="the digitnet model file to write"
    )
    p.add_argument(
        "--activation",
        choices=list(ACTIVATIONS),
        help="the activation between the layers (default: what the file records, else relu)",
    )
    p.add_argument(
        "--mean",
        type=finite,
        help="with --std: the network was trained on (x/255 - MEAN) / STD, "
        "as transforms.Normalize((MEAN,), (STD,)) does (default: x/255)",
    )
    p.add_argument("--std", type=finite)
    p.add_argument(
        "--dataset",
        choices=list(DATASETS),
        help="what the network reads (default: mnist): sets the class names and what evaluate tests it on",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise DigitnetError(f"{out} already exists: choose another --out, or add --force to replace it")
    prepare_output(out)
    if (args.mean is None) != (args.std is None):
        raise DigitnetError("--mean and --std go together (as in transforms.Normalize((MEAN,), (STD,)))")
    if args.std is not None and not args.std > 0:
        raise DigitnetError(f"--std must be above 0, got {args.std:g}")
    normalizer = None if args.mean is None else Normalizer("standardize", args.mean, args.std)
    clf = import_torch(args.file, activation=args.activation, normalizer=normalizer, dataset=args.dataset)
    arch, names = clf.architecture, clf.meta["torch_layers"]
    sizes = arch["sizes"]
    print(f"read {args.file}: {len(names)} Linear layers, {clf.dtype}")
    for i, (index, name) in enumerate(names.items()):
        print(f"  {name or '(root)'}: {sizes[i]} -> {sizes[i + 1]}   (digitnet layer {index})")
    told = {
        "argument": "from --activation",
        "file": "recorded in the file",
        "default": "the default: a state_dict cannot record it; give --activation if the network used another",
    }[clf.meta["activation_from"]]
    print(f"network: {'-'.join(map(str, sizes))} {arch['activation']} ({told})")
    print(f"inputs: {_describe(clf.normalizer)}")
    if sizes[0] != 784:
        print(f"note: the network takes {sizes[0]} inputs, not the 784 pixels of a 28x28 image")
    modelfile.save(
        out,
        clf.model,
        clf.normalizer,
        clf.class_names,
        dataset=clf.meta["dataset"],
        config=clf.meta.get("config"),
        metrics=clf.meta.get("metrics"),
        extra={"imported_from": str(args.file), "torch_layers": names},
        test_time_shift=clf.test_time_shift,
    )
    print(f"saved {out}")
    if args.json:
        print_json(
            {
                "model": str(out),
                "sizes": sizes,
                "activation": arch["activation"],
                "dtype": str(clf.dtype),
                "layers": list(names.values()),
                "normalization": clf.normalizer.to_dict(),
                "dataset": clf.meta["dataset"],
            }
        )
    return 0


def _describe(normalizer: Normalizer) -> str:
    if normalizer.kind == "scale":
        return "pixels / 255 (as transforms.ToTensor() gives them)"
    return f"(pixels / 255 - {normalizer.mean:g}) / {normalizer.std:g}"
