"""The search's pictures: a heatmap over two hyperparameters, one panel per hyperparameter, the best curves.

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
    each searched hyperparameter) and ``curves.png`` (the ``top`` best trials'
    validation accuracy and training loss per epoch).
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
    return paths


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
    for ax, d in zip(axes, dims, strict=True):
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
