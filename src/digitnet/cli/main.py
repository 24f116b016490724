"""The ``digitnet`` command: parse, dispatch, and turn user errors into ``error:`` lines.

Each command lives in its own small module under ``digitnet.cli`` with two
functions: ``register(subparsers, help_line)`` adds its parser, and
``run(args) -> int`` does the work by calling the library. This module only
wires them together: a module named in ``COMMANDS`` is listed in that order.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from digitnet import __version__
from digitnet.errors import DigitnetError

# Commands in the order `digitnet --help` lists them: (command, help line).
# The module is digitnet.cli.<command with - as _>.
COMMANDS = [
    ("train", "train a network and save it in a run folder"),
    ("runs", "list the runs in a folder, or compare some side by side"),
    ("evaluate", "measure a saved model on a test set"),
    ("predict", "read the digit in image files, test images or a Kaggle test.csv"),
    ("serve", "serve a draw-a-digit web page that shows how the network decides"),
    ("data", "fetch a dataset or describe one"),
    ("plot", "draw a run's plots: curves, confusion matrix, mistakes, weights, robustness ..."),
    ("report", "write one HTML page with a run's settings, scores and every plot"),
    ("dashboard", "watch a model read test digits in a live seven-panel window (or record it)"),
    ("import-torch", "turn a PyTorch state_dict (.pth) into a model, without PyTorch"),
    ("export", "write a model as safetensors, a PyTorch .pth, or ONNX"),
    ("torch-train", "train the same network in PyTorch on the same batches (needs PyTorch)"),
    ("compare", "compare two models (digitnet or PyTorch) on the test set"),
    ("tune", "search hyperparameters (grid or random, in parallel or on a Dask cluster) and refit the best"),
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one ``error:`` line and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> Parser:
    parser = Parser(
        prog="digitnet", description="A neural network from scratch in NumPy that reads handwritten digits."
    )
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, help_line in COMMANDS:
        module = importlib.import_module(f"digitnet.cli.{name.replace('-', '_')}")
        module.register(sub, help_line)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DigitnetError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")  # one line, whatever the message holds
        return 2
    except PermissionError as exc:  # a folder or file the system keeps from this user, wherever met
        sys.stderr.write(f"error: {exc.filename or 'a file'}: {exc.strerror or 'permission denied'}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
