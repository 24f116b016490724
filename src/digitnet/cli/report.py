"""``digitnet report``: one self-contained HTML page with a run's settings, scores and every plot."""

from __future__ import annotations

import time
from pathlib import Path

from digitnet.cli.common import add_data_args, load_model_data, path_arg, prepare_output, print_json
from digitnet.errors import DigitnetError
from digitnet.viz.catalog import require


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "report",
        help=help_line,
        description="Write one HTML page (images embedded, no server needed) with the "
        "run's settings, metrics, per-class scores and every plot.",
    )
    p.add_argument("run", metavar="RUN_DIR", type=path_arg, help="a run folder (runs/<run>), or a model file")
    p.add_argument(
        "--out", metavar="FILE", type=path_arg, help="the HTML file (default: RUN_DIR/report.html)"
    )
    add_data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=run)


def run(args) -> int:
    require()
    from digitnet.viz.report import write_report
    from digitnet.viz.run import check_dataset, load_run

    started = time.perf_counter()
    run_ = load_run(args.run, load_data=False)
    out = Path(args.out) if args.out else run_.folder / "report.html"
    if out.is_dir():
        raise DigitnetError(f"{out} is a folder: give the report a file name, e.g. {out / 'report.html'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise DigitnetError(f"cannot write {out}: {out.parent} is not a folder")
    prepare_output(out)
    run_.dataset = check_dataset(load_model_data(args, run_.classifier), run_.classifier)
    for note in run_.notes:
        print(f"note: {note}: the plots that need it are left out")
    write_report(run_, out, on_plot=lambda plot, seconds: print(f"{plot:<14} ({seconds:.1f} s)", flush=True))
    seconds = time.perf_counter() - started
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s): open it in any browser")
    if args.json:
        print_json(
            {
                "report": str(out),
                "bytes": out.stat().st_size,
                "seconds": seconds,
                "test_accuracy": run_.accuracy,
            }
        )
    return 0
