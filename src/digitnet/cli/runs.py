"""``digitnet runs``: the runs in a folder as a table, or a few of them compared side by side."""

from __future__ import annotations

import json
from pathlib import Path

from digitnet import runs
from digitnet.cli.common import path_arg, percent, prepare_output, print_json
from digitnet.errors import DigitnetError

PLOT_DEFAULT = "runs-compare.png"
PLOT_FORMATS = ("png", "svg", "pdf")
REASON_WIDTH = 60


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "runs",
        help=help_line,
        description="List the runs under a folder, oldest first: their settings, scores "
        "and state (finished, interrupted, killed, failed or running; the "
        "stopped ones can be continued with 'digitnet train --resume'). "
        "With --compare, show some runs side by side and overlay their curves.",
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        type=path_arg,
        nargs="?",
        default=str(runs.ROOT),
        help=f"the folder holding the runs (default: {runs.ROOT})",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        type=path_arg,
        help="two or more run folders (paths, or names of runs under DIR) to compare",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        type=path_arg,
        help=f"with --compare: where to draw their curves (default: {PLOT_DEFAULT}; .svg or .pdf also work)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.plot and not args.compare:
        raise DigitnetError("--plot draws the curves of --compare: add --compare RUN RUN ...")
    return _compare(args) if args.compare else _list(args)


# --------------------------------------------------------------------------- the table
def _list(args) -> int:
    root = Path(args.dir)
    rows, skipped = runs.list_runs(root)
    if rows:
        print(
            _table(
                [
                    "created",
                    "name",
                    "preset",
                    "architecture",
                    "epochs",
                    "val acc",
                    "test acc",
                    "seconds",
                    "state",
                ],
                [
                    [
                        _when(r["created"]),
                        r["name"],
                        r["preset"] or "-",
                        r["architecture"] or "-",
                        _epochs(r),
                        _percent(r["val_accuracy"]),
                        _percent(r["test_accuracy"]),
                        _seconds(r["seconds"]),
                        _state(r),
                    ]
                    for r in rows
                ],
                right={4, 5, 6, 7},
            )
        )
    elif (root / runs.RUN).exists():
        print(
            f"no runs in {root}: it is a run folder itself; list its parent with: digitnet runs {root.parent}"
        )
    else:
        print(f"no runs in {root}" + (" yet: 'digitnet train' puts them there" if root == runs.ROOT else ""))
    resumable = [r for r in rows if r["resumable"]]
    if resumable:
        print()
        print("resumable: each carries on from its last checkpoint with")
        for r in resumable:
            print(f"  {_resume_command(r)}")
    if skipped:
        print()
        for note in skipped:
            print(f"skipped: {note}")
    if args.json:
        print_json({"root": str(root), "runs": rows, "skipped": skipped})
    return 0


def _state(row: dict) -> str:
    state = row["state"] or "unknown"
    text = state + (", resumable" if row["resumable"] else "")
    if row["reason"]:
        text += f": {_shorten(row['reason'], REASON_WIDTH)}"
    return text


def _resume_command(row: dict) -> str:
    command = "tune" if row["kind"] == "tune" else "train"
    return f"digitnet {command} --resume {row['path']}"


def _epochs(row: dict) -> str:
    if row["kind"] == "tune":
        return "-" if row["epochs_done"] is None else f"{row['epochs_done']} trials"
    done = "?" if row["epochs_done"] is None else row["epochs_done"]
    return f"{done}/{row['epochs_planned'] if row['epochs_planned'] is not None else '?'}"


# --------------------------------------------------------------------------- --compare
def _compare(args) -> int:
    folders = [_resolve(name, Path(args.dir)) for name in args.compare]
    if len(folders) < 2:
        raise DigitnetError("--compare needs at least two runs: digitnet runs --compare RUN RUN ...")
    plot_path = _plot_path(args.plot or PLOT_DEFAULT)
    result = runs.compare(folders)
    rows, settings, histories = result["runs"], result["settings"], result["histories"]
    for row, history in zip(rows, histories, strict=True):
        row["best_epoch"] = history.best_epoch if history else None
        row["restored_epoch"] = history.restored_epoch if history else None
    names = _labels(rows)

    if settings:
        print("settings that differ:")
        print(
            _table(["setting", *names], [[key, *map(_setting, values)] for key, values in settings.items()])
        )
    else:
        print("the runs have the same settings")
    print()
    figures = [
        ["validation accuracy", *(_percent(r["val_accuracy"]) for r in rows)],
        ["test accuracy", *(_percent(r["test_accuracy"]) for r in rows)],
        ["epochs", *(_epochs(r) for r in rows)],
    ]
    if any(r["best_epoch"] for r in rows):
        figures.append(["best epoch (val loss)", *(_dash(r["best_epoch"]) for r in rows)])
    if any(r["restored_epoch"] for r in rows):
        figures.append(["restored epoch", *(_dash(r["restored_epoch"]) for r in rows)])
    figures += [["seconds", *(_seconds(r["seconds"]) for r in rows)], ["state", *(_state(r) for r in rows)]]
    print(_table(["", *names], figures, right=set(range(1, len(names) + 1))))

    written = None
    if not any(h is not None and h.epochs for h in histories):
        print(
            "note: no plot: none of these runs has a history yet (a killed run keeps its epochs in its checkpoint)"
        )
    else:
        from digitnet.viz.catalog import require

        try:
            require()
        except DigitnetError as exc:
            print(f"note: no plot: {exc}")
        else:
            from digitnet.viz import style
            from digitnet.viz.training_plots import compare_curves

            fig = compare_curves(histories, names)
            written = str(style.save(fig, plot_path, formats=(plot_path.suffix[1:],))[0])
            missing = [n for n, h in zip(names, histories, strict=True) if h is None or not h.epochs]
            print(f"saved {written}" + (f" (no curves yet for {', '.join(missing)})" if missing else ""))
    if args.json:
        print_json({"runs": rows, "settings": settings, "plot": written})
    return 0


def _resolve(name: str, root: Path) -> Path:
    """A run named on the command line: the path as given, else the run of that name under DIR."""
    path = Path(name)
    if path.exists():
        return path
    if (root / name).exists():
        return root / name
    raise DigitnetError(
        f"{name} does not exist"
        + ("" if path.is_absolute() else f" (nor {root / name})")
        + ": name a run folder, as 'digitnet runs' lists them"
    )


def _plot_path(text: str) -> Path:
    path = Path(text)
    if path.suffix[1:].lower() not in PLOT_FORMATS:
        raise DigitnetError(
            f"--plot {text}: the picture's name must end in " + ", ".join(f".{f}" for f in PLOT_FORMATS)
        )
    if not path.parent.is_dir():
        raise DigitnetError(f"--plot {text}: the folder {path.parent} does not exist")
    prepare_output(path, "--plot")
    return path.with_suffix(path.suffix.lower())


def _labels(rows: list[dict]) -> list[str]:
    """Column names: the runs' folder names, or their paths when two share a name."""
    names = [r["name"] for r in rows]
    return names if len(set(names)) == len(names) else [r["path"] for r in rows]


def _setting(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (str, bool, int)):
        return str(value)
    return json.dumps(value)


# --------------------------------------------------------------------------- text
def _table(headers: list[str], rows: list[list[str]], right=frozenset()) -> str:
    """Columns padded to their widest cell, two spaces apart; the columns in ``right`` right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for cells in [headers, *rows]:
        text = [
            f"{cell:>{w}}" if i in right else f"{cell:<{w}}"
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(text).rstrip())
    return "\n".join(lines)


def _percent(x) -> str:
    return "-" if x is None else percent(x)


def _dash(x) -> str:
    return "-" if x is None else str(x)


def _seconds(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _when(created) -> str:
    return "-" if not created else str(created).replace("T", " ")


def _shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
