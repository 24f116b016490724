"""``digitnet tune``: search hyperparameters on a validation split, watch it live, refit the winner."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from digitnet import runs
from digitnet.cli.common import count, finite, load_data, path_arg, percent, prepare_output, print_json
from digitnet.data.datasets import DATASETS
from digitnet.data.sources import remove_litter
from digitnet.errors import ConfigError, DigitnetError
from digitnet.nn import OPTIMIZERS
from digitnet.presets import PRESETS
from digitnet.tune import MAX_GRID, PARAMS, Results, SearchSpec, refit, run_search, save_winner, search_data
from digitnet.tune.space import METHODS, PRUNERS, flag, show, trial_config
from digitnet.tune.study import DEFAULT_NAME, check_storage, hide_password

EPILOG = """examples:
  digitnet tune --hidden 64,110,128 --l2 0,1,5                   the classic hidden size x lambda grid
  digitnet tune --hidden 32:1024 --lr 1e-4:1e-2 --trials 30 --prune hyperband --workers 2    TPE
  digitnet tune --hidden 32:1024 --lr 1e-4:1e-2 --objectives accuracy,seconds    a Pareto front
  digitnet tune --hidden 64,128 --l2 0,1 --scheduler tcp://10.0.0.5:8786    on a Dask cluster
  digitnet tune --hidden 64:512 --trials 40 --storage postgresql://db/tune   one study, many machines
  digitnet tune --resume runs/20250101-120000-tune                 carry on after Ctrl-C
  optuna-dashboard sqlite:///runs/20250101-120000-tune/study.db     the study in a browser

Lists are comma-separated; a hidden entry 256-128 is two layers. Ranges LOW:HIGH
are log-uniform, except dropout's, which is uniform; with a range the search is
TPE unless --search says otherwise. L2's lambda is divided by the number of
training images, as in 'digitnet train'."""

SEARCH_FLAGS = [
    "preset",
    "epochs",
    "val_fraction",
    "seed",
    "dataset",
    "subset",
    "search",
    "trials",
    "prune",
    "objectives",
    "storage",
    "study_name",
    *PARAMS,
]
LIVE_ROWS = 12
MAX_WORKERS = 256  # processes on this machine
MAX_TRIALS = 100_000  # random draws
MAX_CONNECT_SECONDS = 600


def register(subparsers, help_line: str) -> None:
    p = subparsers.add_parser(
        "tune",
        help=help_line,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Try hyperparameters on a validation split (every trial with the same\n"
        "seed and split), show each trial as it finishes, then refit the best\n"
        "on training + validation data and measure it once on the test set.",
    )
    g = p.add_argument_group("what to try (a list a,b,c or a range LOW:HIGH)")
    g.add_argument("--hidden", metavar="LIST", help="hidden layer sizes, e.g. 64,110,128 or 256-128,512")
    g.add_argument("--l2", metavar="LIST", help="L2 penalty lambda, e.g. 0,1,5")
    g.add_argument("--lr", metavar="LIST", help="learning rates, e.g. 1e-3,3e-3 or 1e-4:1e-1")
    g.add_argument("--batch-size", metavar="LIST", help="batch sizes, e.g. 64,128")
    g.add_argument("--optimizer", metavar="LIST", help=f"optimisers among {','.join(OPTIMIZERS)}")
    g.add_argument("--dropout", metavar="LIST", help="dropout rates, e.g. 0,0.2 or 0:0.5")
    g = p.add_argument_group("how")
    g.add_argument(
        "--preset",
        help=f"base configuration for everything not searched (default: wide-512); "
        f"one of {', '.join(PRESETS)}",
    )
    g.add_argument("--epochs", type=int, help="epochs per trial (default: the preset's)")
    g.add_argument(
        "--search",
        choices=list(METHODS),
        help="every combination (the default for lists), random draws, TPE (the default with a range) "
        "or CMA-ES (ranges only)",
    )
    g.add_argument("--trials", type=int, metavar="N", help="trials the sampler draws (default: 20)")
    g.add_argument(
        "--val-fraction", type=finite, metavar="F", help="share held out for validation (default: 0.1)"
    )
    g.add_argument(
        "--subset", type=int, metavar="N", help="search on a stratified sample of N training images"
    )
    g.add_argument("--seed", type=int, help="the seed of every trial and of random draws (default: 0)")
    g.add_argument(
        "--prune",
        choices=list(PRUNERS),
        help="stop hopeless trials between epochs: median (below the median of earlier trials), "
        "halving (asynchronous successive halving) or hyperband (default: none)",
    )
    g.add_argument(
        "--objectives",
        metavar="LIST",
        help="accuracy (default), or accuracy,seconds for a Pareto front of accuracy against training time",
    )
    g.add_argument("--yes", action="store_true", help=f"allow a grid of more than {MAX_GRID:,} trials")
    g.add_argument("--dataset", choices=list(DATASETS), help="which dataset (default: mnist)")
    g.add_argument(
        "--data",
        metavar="PATH",
        type=path_arg,
        help="your own copy: a folder of IDX files, an .npz, or train.csv[,test.csv]",
    )
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=path_arg,
        help="cache folder (default: $DIGITNET_CACHE or ~/.cache/digitnet)",
    )
    g = p.add_argument_group("where the trials run")
    g.add_argument(
        "--workers", type=int, default=1, metavar="N", help="processes on this machine (default: 1)"
    )
    g.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="a Dask distributed scheduler (digitnet[cluster])"
    )
    g.add_argument(
        "--connect-timeout",
        type=finite,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the scheduler to answer (default: 5)",
    )
    g.add_argument(
        "--storage",
        metavar="URL",
        help="the study's database: any SQLAlchemy URL (postgresql://..., sqlite:///FILE) or "
        "journal:FILE; the same search on several machines shares it (default: study.db in --out)",
    )
    g.add_argument(
        "--study-name", metavar="NAME", help=f"the study's name in --storage (default: {DEFAULT_NAME})"
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out", metavar="DIR", type=path_arg, help="output folder (default: runs/<date-time>-tune)"
    )
    g.add_argument(
        "--resume",
        metavar="DIR",
        type=path_arg,
        help="carry on with the search saved in DIR, skipping finished trials",
    )
    g.add_argument(
        "--heatmap",
        metavar="X,Y",
        default="hidden,l2",
        help="the heatmap's two hyperparameters (default: hidden,l2)",
    )
    g.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    g.add_argument("--quiet", action="store_true", help="no live table")
    p.set_defaults(func=run)


def run(args) -> int:
    started = time.perf_counter()
    _rich()
    spec, out, resumed = _check(args)
    _optuna()
    dataset = load_data(args, spec.dataset, seed=spec.seed)
    data, refit_data = search_data(dataset, spec.subset, spec.seed)
    results = (  # only now is anything written
        Results.open(out) if resumed else Results.create(out, spec, args.storage, args.study_name)
    )
    dims = [d for d in PARAMS if d in spec.space]
    done_before = len(results.done())
    total = spec.total()
    base = spec.base_config()
    n_val = round(base.val_fraction * len(data.x))
    say = (lambda *a: None) if args.quiet else print
    say(
        f"{spec.method} search of {total} trials over {' x '.join(dims)} on {dataset.name}: "
        f"{len(data.x) - n_val:,} training and {n_val:,} validation images, base preset {spec.preset} "
        f"({count(base.epochs, 'epoch')}), seed {spec.seed}"
        + ("" if spec.prune == "none" else f", {spec.prune} pruning")
        + ("" if len(spec.objectives) == 1 else f", objectives {' and '.join(spec.objectives)}")
    )
    say(f"the study: {results.study.study_name} in {hide_password(results.url)}")
    if done_before:
        say(f"{'resuming' if resumed else 'joining'} the study: {done_before} of {total} trials already done")

    live = Live(dims, total, done_before, enabled=not args.quiet)
    with live:
        outcome = run_search(
            results,
            data,
            workers=args.workers,
            scheduler=args.scheduler,
            connect_timeout=args.connect_timeout,
            on_submit=live.submitted,
            on_result=live.finished,
        )
    say(f"ran {outcome.ran} trials in {outcome.seconds:.1f} s on {outcome.backend}")
    print_table(results, dims)
    if outcome.interrupted:
        done = len(results.done())
        print(
            f"interrupted: {done} of {total} trials are done and saved; carry on with: "
            f"digitnet tune --resume {results.folder}"
        )
        if args.json:
            print_json({"interrupted": True, "trials": done, "out": str(results.folder)})
        return 130

    best, result = refit(results, refit_data)
    if result.history.interrupted:
        print(
            f"interrupted while refitting the best configuration; carry on with: digitnet tune --resume "
            f"{results.folder}"
        )
        return 130
    final = save_winner(results, best, result)
    plots = _plots(results, args.heatmap)
    print(
        f"best: trial {best['trial']}, {_params(best, dims)}: validation accuracy {percent(best['val_accuracy'])}"
    )
    print(
        f"test accuracy: {percent(final['test_accuracy'])} after refitting on training + validation "
        f"({final['n_train']:,} images, {final['train_seconds']:.1f} s)"
    )
    print(
        f"saved {final['model']}, {runs.RESULTS_CSV}, {runs.RESULTS}"
        + "".join(f", {p.name}" for p in plots.values())
    )
    if args.json:
        counts = results.counts()
        print_json(
            {
                "best": {
                    **trial_config(base, best["params"]).to_dict(),
                    "trial": best["trial"],
                    "val_accuracy": best["val_accuracy"],
                },
                "test_accuracy": final["test_accuracy"],
                "trials": len(results.records),
                "seconds": time.perf_counter() - started,
                "model": final["model"],
                "out": str(results.folder),
                "counts": counts,
                "backend": outcome.backend,
                "study": results.study.study_name,
                "storage": results.url,
                "pareto": results.pareto(),
                "plots": {k: str(v) for k, v in plots.items()},
            }
        )
    return 0


def _check(args) -> tuple[SearchSpec, Path, bool]:
    """Check every flag and the output folder; return the search, its folder, and whether it is resumed."""
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}, got {args.workers}")
    if not 0 < args.connect_timeout <= MAX_CONNECT_SECONDS:
        raise ConfigError(
            f"--connect-timeout must be above 0 and at most {MAX_CONNECT_SECONDS} seconds, got {args.connect_timeout}"
        )
    if args.trials is not None and not 1 <= args.trials <= MAX_TRIALS:
        raise ConfigError(f"--trials must be 1 to {MAX_TRIALS:,}, got {args.trials}")
    if args.scheduler and args.workers > 1:
        raise ConfigError(
            "--workers and --scheduler exclude each other: the cluster's workers run the trials"
        )
    if args.scheduler:  # before any folder is made: a wrong address leaves nothing behind
        _check_scheduler(args.scheduler, args.connect_timeout)
    if args.resume:
        given = [flag(f) for f in SEARCH_FLAGS if getattr(args, f, None) is not None]
        if given:
            raise ConfigError(
                f"--resume carries on the search saved in {args.resume}; leave out {', '.join(given)}"
            )
        if args.out:
            raise ConfigError("--resume writes into the folder it resumes; leave out --out")
        spec = SearchSpec.from_dict(Results.read(args.resume)["search"])
        remove_litter(args.resume)  # a file half-written when the search was killed
        return spec.validate(confirm=True), Path(args.resume), True
    spec = SearchSpec(
        space={d: getattr(args, d) for d in PARAMS if getattr(args, d) is not None},
        method=args.search or "auto",
        trials=20 if args.trials is None else args.trials,
        preset=args.preset or "wide-512",
        epochs=args.epochs,
        val_fraction=args.val_fraction,
        seed=args.seed or 0,
        dataset=args.dataset or "mnist",
        subset=args.subset,
        prune=args.prune or "none",
        objectives=["accuracy"]
        if args.objectives is None
        else [o.strip() for o in args.objectives.split(",")],
    )
    spec.validate(confirm=args.yes)
    if args.trials is not None and spec.method == "grid":
        raise ConfigError("--trials is for --search random or tpe; a grid runs every combination")
    heat = args.heatmap.split(",")
    if len(heat) != 2 or not all(h in PARAMS for h in heat):
        raise ConfigError(f"--heatmap takes two of {', '.join(PARAMS)}, e.g. hidden,l2; got '{args.heatmap}'")
    if args.study_name is not None and not args.study_name.strip():
        raise ConfigError("--study-name must not be empty")
    out = prepare_output(args.out or runs.new_folder("tune"), folder=True)
    out = Results.check_new(out) if args.out else out
    if (
        args.storage is not None
    ):  # before anything is written: a storage that cannot be opened, another search
        args.storage = check_storage(args.storage, args.study_name or DEFAULT_NAME, spec)
    return spec, out, False


def _check_scheduler(address: str, timeout: float) -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError("--scheduler needs Dask: pip install 'digitnet[cluster]'") from None
    from digitnet.tune.search import connect_check

    connect_check(address, timeout)


def _plots(results: Results, heatmap: str) -> dict:
    try:
        from digitnet.tune.plots import save_plots

        return save_plots(results, tuple(heatmap.split(",")))
    except ImportError:
        print("note: no plots without matplotlib: pip install 'digitnet[tune]'")
        return {}
    except OSError as exc:
        raise DigitnetError(f"cannot write the plots in {results.folder}: {exc.strerror or exc}") from None


def _params(record, dims) -> str:
    return ", ".join(f"{d} {show(d, record['params'][d])}" for d in dims)


# --------------------------------------------------------------------------- display
def _optuna():
    """Optuna runs the search; its own log lines would repeat what the table shows."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("digitnet tune searches with Optuna: pip install 'digitnet[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _rich():
    try:
        import rich  # noqa: F401
    except ImportError:
        raise ConfigError("digitnet tune shows its trials with rich: pip install 'digitnet[tune]'") from None
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _row(record, dims, best_trial=None) -> list[str]:
    acc, loss = record.get("val_accuracy"), record.get("val_loss")
    status = (
        record["status"] if record["status"] == "ok" else f"{record['status']}: {record.get('reason') or ''}"
    )
    cells = [
        str(record["trial"]),
        *(show(d, record["params"][d]) for d in dims),
        percent(acc),
        "" if loss is None else f"{loss:.4f}",
        str(record.get("epochs") or 0),
        "" if record.get("seconds") is None else f"{record['seconds']:.1f}s",
        status[:60],
    ]
    if record["trial"] == best_trial:
        cells = [f"[bold green]{c}[/]" for c in cells]
    return cells


def _table(records, dims, title, best_trial=None):
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for name in ["#", *dims, "val acc", "val loss", "epochs", "time", "status"]:
        table.add_column(name, justify="left" if name == "status" else "right", no_wrap=name != "status")
    for r in records:
        table.add_row(*_row(r, dims, best_trial))
    return table


def print_table(results: Results, dims, shown: int = 20) -> None:
    """All trials, best first (the first ``shown``)."""
    ranked = results.ranked()
    if not ranked:
        return
    console = _rich()
    best = results.best()
    more = f" (the best {shown}; all {len(ranked)} in results.csv)" if len(ranked) > shown else ""
    console.print(
        _table(ranked[:shown], dims, f"Trials by validation accuracy{more}", best and best["trial"])
    )


class Live:
    """The trials as they finish: a live table on a terminal, one line per trial elsewhere."""

    def __init__(self, dims, total, done, enabled=True):
        self.dims, self.total, self.done, self.enabled = dims, total, done, enabled
        self.records, self.running, self.started = [], 0, time.perf_counter()
        self.console = _rich()
        self.live = None

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.live import Live as RichLive

            self.live = RichLive(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def submitted(self, number, params):
        self.running += 1
        self._update()

    def finished(self, record):
        self.running -= 1
        self.done += 1
        self.records.append(record)
        if self.live is None and self.enabled:
            cells = _row(record, self.dims)
            print(
                f"[{self.done}/{self.total}] trial {record['trial']}: {_params(record, self.dims)}: val acc "
                f"{cells[-5]} ({count(record.get('epochs') or 0, 'epoch')}, {cells[-2]}) {cells[-1]}",
                flush=True,
            )
        self._update()

    def _update(self):
        if self.live is not None:
            self.live.update(self.render())

    def render(self):
        ok = [r for r in self.records if r["status"] == "ok"]
        best = max(ok, key=lambda r: r["val_accuracy"], default=None)
        elapsed = time.perf_counter() - self.started
        ran = len(self.records)
        left = "" if not ran else f", about {elapsed / ran * (self.total - self.done):.0f} s left"
        title = (
            f"trials {self.done}/{self.total} done, {self.running} running"
            + (f", best {percent(best['val_accuracy'])} (#{best['trial']})" if best else "")
            + f", {elapsed:.0f} s{left}"
        )
        from rich.console import Group
        from rich.text import Text

        return Group(Text(title), _table(self.records[-LIVE_ROWS:], self.dims, None, best and best["trial"]))
