"""The search's pictures: a heatmap over two hyperparameters, one panel per hyperparameter, the best curves,
the optimisation history, each hyperparameter's importance (Optuna's PED-ANOVA) and, with two
objectives, the Pareto front of accuracy against training time.

matplotlib is imported only here, and only when a plot is drawn, so the rest of
``digitnet.tune`` works without it. Figures are drawn on matplotlib's
object-oriented API (no pyplot, no global state) and saved atomically as PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from digitnet.data.formats import atomic_path
from digitnet.tune.results import Results
from digitnet.tune.space import PARAMS, show
from digitnet.tune.trial import OK, PRUNED


def save_plots(
    results: Results, heatmap: tuple[str, str] = ("hidden", "l2"), top: int = 5
) -> dict[str, Path]:
    """Draw every plot the search's records allow into its folder; return ``{name: path}``.

    ``heatmap.png`` (validation accuracy over two hyperparameters, ``heatmap``
    when both were searched), ``hyperparams.png`` (validation accuracy against
    each searched hyperparameter), ``curves.png`` (the ``top`` best trials'
    validation accuracy and training loss per epoch), ``history.png`` (each
    trial's accuracy in the order they finished, and the best so far),
    ``importance.png`` (how much each hyperparameter's value explains the
    accuracy, from 3 finished trials) and, with the objectives accuracy and
    seconds, ``pareto.png``.
    """
    scored = [
        r for r in results.records.values() if r["status"] in (OK, PRUNED) and r["val_accuracy"] is not None
    ]
    if not scored:
        return {}
    dimensions = results.spec.dimensions()
    dims, ranges = list(dimensions), {d for d, dim in dimensions.items() if dim.is_range}
    folder, paths = results.folder, {}
    pair = heatmap_axes(dims, scored, heatmap)
    if pair:
        paths["heatmap"] = _save(plot_heatmap(scored, *pair, ranges), folder / "heatmap.png")
    paths["hyperparams"] = _save(plot_hyperparams(scored, dims, ranges), folder / "hyperparams.png")
    best = [r for r in results.ranked() if r["status"] == OK][:top]
    if best:
        paths["curves"] = _save(plot_curves(best, dims), folder / "curves.png")
    paths["history"] = _save(plot_history(scored), folder / "history.png")
    importances = param_importances(results.study)
    if importances:
        paths["importance"] = _save(plot_importance(importances), folder / "importance.png")
    if "seconds" in results.spec.objectives:
        ok = [r for r in scored if r["status"] == OK]
        front = set(results.pareto())
        paths["pareto"] = _save(plot_pareto(ok, front, dims), folder / "pareto.png")
    return paths


def param_importances(study) -> dict[str, float]:
    """``{hyperparameter: importance}`` for the validation accuracy, summing to 1 (Optuna's PED-ANOVA).

    Empty with fewer than 3 finished trials, or when no value changed the
    accuracy enough to tell.
    """
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
        except (RuntimeError, ValueError, ZeroDivisionError):
            return {}
    return found if found and math.isfinite(sum(found.values())) and sum(found.values()) > 0 else {}


def plot_history(records: list[dict]):
    """Each trial's validation accuracy by trial number (pruned ones hollow), and the best so far."""
    fig, ax = _figure(1, 1, width=7, height=4.5)
    records = sorted(records, key=lambda r: r["trial"])
    for status, style in ((OK, dict(color="C0")), (PRUNED, dict(facecolors="none", edgecolors="0.5"))):
        chosen = [r for r in records if r["status"] == status]
        if chosen:
            ax.scatter(
                [r["trial"] for r in chosen],
                [100 * r["val_accuracy"] for r in chosen],
                s=22,
                label=status,
                **style,
            )
    done = [r for r in records if r["status"] == OK]
    if done:
        best = np.maximum.accumulate([100 * r["val_accuracy"] for r in done])
        ax.step([r["trial"] for r in done], best, where="post", color="C1", lw=1.5, label="best so far")
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title="Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_importance(importances: dict[str, float]):
    """A bar per hyperparameter: its share of the validation accuracy's variation, largest on top."""
    names = sorted(importances, key=importances.get)
    fig, ax = _figure(1, 1, width=6, height=max(3.2, 1.2 + 0.5 * len(names)))
    ax.barh([_label(n) for n in names], [importances[n] for n in names], color="C0")
    for i, n in enumerate(names):
        ax.text(importances[n], i, f" {importances[n]:.2f}", va="center", fontsize=9)
    ax.set(xlabel="importance (PED-ANOVA, sums to 1)", xlim=(0, 1.1), title="Hyperparameter importance")
    return fig


def plot_pareto(records: list[dict], front: set[int], dims: list[str]):
    """Validation accuracy against training seconds; the Pareto-optimal trials joined and labelled."""
    fig, ax = _figure(1, 1, width=7, height=5)
    inner = [r for r in records if r["trial"] not in front]
    if inner:
        ax.scatter(
            [r["seconds"] for r in inner],
            [100 * r["val_accuracy"] for r in inner],
            s=22,
            color="0.6",
            label="dominated",
        )
    best = sorted((r for r in records if r["trial"] in front), key=lambda r: r["seconds"])
    if best:
        ax.plot(
            [r["seconds"] for r in best],
            [100 * r["val_accuracy"] for r in best],
            "o-",
            color="C3",
            ms=6,
            label="Pareto front",
        )
        for r in best:
            ax.annotate(
                ", ".join(show(d, r["params"][d]) for d in dims),
                (r["seconds"], 100 * r["val_accuracy"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    ax.set(
        xlabel="training time (s)",
        ylabel="validation accuracy (%)",
        title="Accuracy against training time: the Pareto front",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def heatmap_axes(dims: list[str], records: list[dict], wanted: tuple[str, str]) -> tuple[str, str] | None:
    """``wanted`` if both were searched, else the first two searched hyperparameters that vary."""
    if all(w in dims for w in wanted) and wanted[0] != wanted[1]:
        return wanted
    varying = [d for d in dims if len({show(d, r["params"][d]) for r in records}) > 1]
    return tuple(varying[:2]) if len(varying) >= 2 else None


def heatmap_table(records: list[dict], x: str, y: str):
    """The best validation accuracy in each (x, y) cell.

    Returns ``(x_values, y_values, table)`` with the values sorted and
    ``table[i, j]`` the best accuracy at ``y_values[i]``, ``x_values[j]``
    (NaN where no trial ran), shape ``(len(y_values), len(x_values))``.
    """
    xs, ys = _sorted_values(records, x), _sorted_values(records, y)
    table = np.full((len(ys), len(xs)), np.nan)
    for r in records:
        i, j = ys.index(r["params"][y]), xs.index(r["params"][x])
        table[i, j] = np.fmax(table[i, j], r["val_accuracy"])
    return xs, ys, table


def plot_heatmap(records: list[dict], x: str, y: str, ranges=frozenset()):
    """A table of cells over two listed hyperparameters; one dot per trial when either was a range."""
    fig, ax = _figure(1, 1, width=7, height=5.5)
    xs, ys = _sorted_values(records, x), _sorted_values(records, y)
    if x in ranges or y in ranges:
        at_x, at_y = _axis(ax, "x", x, records, ranges), _axis(ax, "y", y, records, ranges)
        points = ax.scatter(
            [at_x(r["params"][x]) for r in records],
            [at_y(r["params"][y]) for r in records],
            c=[100 * r["val_accuracy"] for r in records],
            cmap="viridis",
            s=60,
            edgecolors="k",
        )
        fig.colorbar(points, ax=ax, label="validation accuracy (%)")
    else:
        _, _, table = heatmap_table(records, x, y)
        image = ax.imshow(100 * table, cmap="viridis", origin="lower", aspect="auto")
        fig.colorbar(image, ax=ax, label="validation accuracy (%)")
        ax.set_xticks(range(len(xs)), [show(x, v) for v in xs])
        ax.set_yticks(range(len(ys)), [show(y, v) for v in ys])
        finite = table[np.isfinite(table)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0
        i, j = np.unravel_index(np.nanargmax(table), table.shape)
        ax.add_patch(_rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.5))
        for (i, j), acc in np.ndenumerate(table):
            if np.isfinite(acc):
                ax.text(
                    j,
                    i,
                    f"{100 * acc:.2f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black" if acc > middle else "white",
                )
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_title(
        f"Validation accuracy over {_label(x)} × {_label(y)}"
        + ("" if x in ranges or y in ranges else " (best per cell; red: the best)")
    )
    return fig


def plot_hyperparams(records: list[dict], dims: list[str], ranges=frozenset()):
    """One panel per hyperparameter: listed values side by side with the best joined up; ranges on an axis."""
    cols = min(3, len(dims))
    rows = math.ceil(len(dims) / cols)
    fig, axes = _figure(rows, cols, width=4.2 * cols, height=3.4 * rows)
    axes = np.atleast_1d(axes).ravel()
    for ax, d in zip(axes[: len(dims)], dims, strict=True):  # the last row may have fewer
        at = _axis(ax, "x", d, records, ranges)
        for status, style in ((OK, dict(color="C0")), (PRUNED, dict(facecolors="none", edgecolors="0.5"))):
            chosen = [r for r in records if r["status"] == status]
            if chosen:
                ax.scatter(
                    [at(r["params"][d]) for r in chosen],
                    [100 * r["val_accuracy"] for r in chosen],
                    s=22,
                    label=status,
                    **style,
                )
        if d not in ranges:
            values = _sorted_values(records, d)
            best = [max(100 * r["val_accuracy"] for r in records if r["params"][d] == v) for v in values]
            ax.plot(range(len(values)), best, color="C1", lw=1.2, label="best")
        ax.set_xlabel(_label(d))
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(dims) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle("Validation accuracy against each hyperparameter")
    return fig


def plot_curves(best: list[dict], dims: list[str]):
    fig, (acc_ax, loss_ax) = _figure(1, 2, width=12, height=4.5)
    for rank, r in enumerate(best, 1):
        name = f"#{r['trial']} " + ", ".join(f"{d} {show(d, r['params'][d])}" for d in dims)
        epochs = range(1, len(r["curve"]["val_accuracy"]) + 1)
        acc_ax.plot(
            epochs,
            [100 * a for a in r["curve"]["val_accuracy"]],
            marker="o",
            ms=3,
            label=f"{name} ({100 * r['val_accuracy']:.2f}%)",
            lw=2.2 if rank == 1 else 1.2,
        )
        loss_ax.plot(epochs, r["curve"]["train_loss"], marker="o", ms=3, lw=2.2 if rank == 1 else 1.2)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"The best {len(best)} trials")
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Training loss")
    acc_ax.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# --------------------------------------------------------------------------- helpers
def _figure(rows, cols, width, height):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(rows, cols)


def _rectangle(*args, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle(*args, **kwargs)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _sorted_values(records, d):
    values = []
    for r in records:
        if r["params"][d] not in values:
            values.append(r["params"][d])
    return sorted(values, key=lambda v: (len(v), v) if d == "hidden" else v)


def _number(d, v) -> float:
    return float(sum(v)) if d == "hidden" else float(v)


def _axis(ax, which: str, d: str, records, ranges):
    """Lay out axis ``which`` ("x" or "y") for hyperparameter ``d``; return ``value -> coordinate``.

    Listed values sit side by side, labelled; a range is a numeric axis, logarithmic when it was sampled so.
    """
    if d not in ranges:
        values = _sorted_values(records, d)
        where = {show(d, v): i for i, v in enumerate(values)}
        turn = {"rotation": 45} if which == "x" and len(values) > 6 else {}
        (ax.set_xticks if which == "x" else ax.set_yticks)(
            range(len(values)), [show(d, v) for v in values], **turn
        )
        return lambda v: where[show(d, v)]
    if PARAMS[d].range == "log":
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        if PARAMS[d].kind in ("sizes", "int"):  # 16, 32, 64 ... rather than 2x10^1
            axis = ax.xaxis if which == "x" else ax.yaxis
            axis.set_major_locator(LogLocator(base=2))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
    return lambda v: _number(d, v)


def _label(d) -> str:
    return {
        "hidden": "hidden units",
        "l2": "L2 λ",
        "lr": "learning rate",
        "batch_size": "batch size",
        "optimizer": "optimizer",
        "dropout": "dropout",
    }[d]
