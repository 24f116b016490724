"""``digitnet export``: a model as safetensors, a PyTorch .pth, or ONNX."""

from __future__ import annotations

from pathlib import Path

from digitnet.cli.common import path_arg, prepare_output, print_json
from digitnet.errors import DigitnetError
from digitnet.interop import FORMATS, export, load_any, torch_sequential_code
from digitnet.interop.export import SUFFIXES


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "export",
        help=help_line,
        description="Write a model with PyTorch's layer names and (out, in) weight layout: "
        "safetensors, a .pth for torch.load(weights_only=True), or ONNX.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        type=path_arg,
        help="a model file (runs/<run>/model.npz), its run folder, or a .pth",
    )
    p.add_argument("--format", choices=FORMATS, help="default: from the suffix of --out")
    p.add_argument("--out", required=True, metavar="FILE", type=path_arg, help="the file to write")
    p.add_argument(
        "--state-dict-only",
        action="store_true",
        help="pth: save the bare state_dict, for net.load_state_dict(torch.load(FILE))",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    fmt = args.format or SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise DigitnetError(f"cannot tell the format from '{out.name}': give --format {'|'.join(FORMATS)}")
    if out.exists() and not args.force:
        raise DigitnetError(f"{out} already exists: choose another --out, or add --force to replace it")
    prepare_output(out)
    if args.state_dict_only and fmt != "pth":
        raise DigitnetError("--state-dict-only is for --format pth")
    clf = load_any(args.model)
    export(clf, out, fmt, state_dict_only=args.state_dict_only)
    sizes = clf.architecture["sizes"]
    print(f"wrote {out} ({fmt}, {'-'.join(map(str, sizes))} {clf.architecture['activation']}, {clf.dtype})")
    if fmt == "pth":
        print("load it in PyTorch:")
        print("  import torch")
        print(f"  net = {torch_sequential_code(clf)}")
        key = "" if args.state_dict_only else '["model_state_dict"]'
        print(f"  net.load_state_dict(torch.load({str(out)!r}, weights_only=True){key})")
    elif fmt == "onnx":
        print(
            f"its input 'input' is the normalised pixels (batch, {sizes[0]}); outputs: 'logits', 'probabilities'"
        )
    if args.json:
        print_json(
            {
                "out": str(out),
                "format": fmt,
                "sizes": sizes,
                "activation": clf.architecture["activation"],
                "dtype": str(clf.dtype),
            }
        )
    return 0
