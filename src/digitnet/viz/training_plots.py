"""Plots of a training history: the learning curves and what happened inside the layers.

Both take a :class:`~digitnet.training.History` (or its ``to_dict()`` form,
as in ``history.json``) and return a :class:`~matplotlib.figure.Figure`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from digitnet.errors import DigitnetError
from digitnet.training import History
from digitnet.viz import style


def as_history(history) -> History:
    return history if isinstance(history, History) else History.from_dict(dict(history))


def numbers(values) -> np.ndarray:
    """Values of a history as floats, NaN (not drawn) for a missing or non-finite one: a damaged
    history.json may hold null, NaN or 1e308 where a number was, which an axis cannot be scaled to."""
    out = np.array(
        [v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values], float
    )
    out[~np.isfinite(out) | (np.abs(out) > 1e300)] = np.nan
    return out


def epoch_ends(history: History) -> np.ndarray:
    """The iteration count at the end of each epoch, ``(epochs,)``.

    Recorded by :class:`~digitnet.diagnostics.Diagnostics`; for older
    histories, the iterations are shared out evenly.
    """
    n = len(history.epochs)
    if n and all("iteration" in e for e in history.epochs):
        ends = numbers([e["iteration"] for e in history.epochs])
        if np.isfinite(ends).all() and ends.max() <= max(len(history.loss), 1) * 4:  # else: damaged
            return ends
    return np.linspace(len(history.loss) / max(n, 1), len(history.loss), n)


@style.styled
def curves(history, test_accuracy: float | None = None):
    """Loss and accuracy against iterations (faint, per batch) and epochs (bold), the learning rate below.

    Parameters
    ----------
    history : History or dict
    test_accuracy : float, optional
        Shown in the title when given.
    """
    h = as_history(history)
    if not h.loss or not h.epochs:
        raise DigitnetError("the history is empty: there is nothing to plot")
    it = np.arange(1, len(h.loss) + 1)
    ends = epoch_ends(h)
    starts = np.concatenate([[0], ends[:-1]])
    mids = (starts + ends) / 2
    epochs = np.array([e["epoch"] for e in h.epochs])
    val_loss = np.array([np.nan if e["val_loss"] is None else e["val_loss"] for e in h.epochs], dtype=float)
    val_acc = np.array(
        [np.nan if e["val_accuracy"] is None else e["val_accuracy"] for e in h.epochs], dtype=float
    )

    fig = style.figure(12, 7.4)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1.15])
    ax_loss, ax_acc = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_lr = fig.add_subplot(grid[1, :])
    marker = dict(marker="o", markersize=4 if len(epochs) <= 40 else 0)

    ax_loss.plot(
        it, np.maximum(h.loss, 1e-5), color=style.TRAIN, alpha=0.22, lw=0.7, label="training, per batch"
    )
    ax_loss.plot(
        mids,
        [e["train_loss"] for e in h.epochs],
        color=style.TRAIN,
        lw=2.2,
        label="training, epoch mean",
        **marker,
    )
    if np.isfinite(val_loss).any():
        ax_loss.plot(ends, val_loss, color=style.VAL, lw=2.2, label="validation", **marker)
    ax_loss.set(title="Loss (cross-entropy)", ylabel="loss (log scale)", xlabel="iteration")
    style.log_y(ax_loss)

    ax_acc.plot(
        it, 100 * np.asarray(h.accuracy), color=style.TRAIN, alpha=0.22, lw=0.7, label="training, per batch"
    )
    train_acc = 100 * np.array([e["train_accuracy"] for e in h.epochs])
    ax_acc.plot(mids, train_acc, color=style.TRAIN, lw=2.2, label="training, epoch mean", **marker)
    if np.isfinite(val_acc).any():
        ax_acc.plot(ends, 100 * val_acc, color=style.VAL, lw=2.2, label="validation", **marker)
    low = np.nanmin(np.concatenate([train_acc, 100 * val_acc]))
    ax_acc.set_ylim(max(0.0, low - max(3.0, (100 - low) * 0.6)), 100.5)
    ax_acc.set(title="Accuracy", ylabel="accuracy (%)", xlabel="iteration")

    if h.best_epoch is not None and len(epochs) > 1:
        x = ends[h.best_epoch - 1]
        for ax in (ax_loss, ax_acc):
            ax.axvline(
                x, color=style.GREY, ls=":", lw=1.2, label=f"best validation loss (epoch {h.best_epoch})"
            )
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0, it[-1] * 1.01)
        _epoch_axis(ax, ends)
    ax_loss.legend(loc="upper right")
    ax_acc.legend(loc="lower right")

    ax_lr.plot(it, h.lr, color=style.ACCENT, lw=1.8)
    lr = np.asarray(h.lr, dtype=float)
    ax_lr.set(title="Learning rate", xlabel="iteration", ylabel="learning rate", xlim=(0, it[-1] * 1.01))
    if lr.min() > 0 and lr.max() / lr.min() > 20:
        style.log_y(ax_lr)
    else:
        ax_lr.set_ylim(0, lr.max() * 1.25)
        style.plain_y(ax_lr)
    if lr.min() == lr.max():
        ax_lr.text(
            0.99,
            0.9,
            f"constant {lr[0]:g}",
            transform=ax_lr.transAxes,
            ha="right",
            va="top",
            color=style.ACCENT,
        )

    last = h.epochs[-1]
    parts = [f"{len(h.epochs)} epochs, {len(h.loss):,} iterations"]
    if last.get("val_accuracy") is not None:
        parts.append(f"validation accuracy {100 * last['val_accuracy']:.2f}%")
    if test_accuracy is not None:
        parts.append(f"test accuracy {100 * test_accuracy:.2f}%")
    if h.stopped_early:
        parts.append("stopped early")
    if h.interrupted:
        parts.append("interrupted")
    fig.suptitle("Training curves: " + ", ".join(parts))
    return fig


def _epoch_axis(ax, ends: np.ndarray) -> None:
    """A second x axis on top counting epochs, mapped piecewise-linearly onto iterations."""
    xs = np.concatenate([[0.0], ends])
    es = np.arange(len(xs), dtype=float)
    top = ax.secondary_xaxis(
        "top", functions=(lambda x: np.interp(x, xs, es), lambda e: np.interp(e, es, xs))
    )
    top.set_xlabel("epoch", fontsize=9)
    top.tick_params(labelsize=8)
    if len(ends) <= 12:
        top.set_xticks(es)


@style.styled
def gradients(history):
    """Each layer's gradient norm per epoch (log scale) and each hidden layer's share of inactive units.

    Needs the history of a run trained with :class:`~digitnet.diagnostics.Diagnostics`
    (every ``digitnet train`` run); raises :class:`DigitnetError` otherwise.
    """
    h = as_history(history)
    info = h.extra.get("diagnostics")
    if not info or not h.epochs or "grad_norm_1" not in h.epochs[0]:
        raise DigitnetError(
            "this history has no gradient norms: it was trained without diagnostics "
            "(train it again with this version of digitnet train)"
        )
    epochs = [e["epoch"] for e in h.epochs]
    layers = info["layers"]
    fig = style.figure(12, 4.6)
    ax_g, ax_d = fig.subplots(1, 2)
    marker = dict(marker="o", markersize=4 if len(epochs) <= 40 else 0)
    for k, name in enumerate(layers, start=1):
        values = numbers([e.get(f"grad_norm_{k}") for e in h.epochs])
        colour = style.LAYER_COLOURS[(k - 1) % len(style.LAYER_COLOURS)]
        ax_g.plot(epochs, values, color=colour, lw=2, label=f"layer {k}  ({name})", **marker)
    ax_g.set(
        title="How strongly each layer is corrected", xlabel="epoch", ylabel="‖∂L/∂W‖ per batch (log scale)"
    )
    style.log_y(ax_g)
    ax_g.legend(loc="best")

    n_hidden = len(layers) - 1
    activation = info.get("activation", "ReLU")
    dead = "dead" if activation in ("ReLU", "LeakyReLU") else "saturated"
    for k in range(1, n_hidden + 1):
        values = numbers([e.get(f"inactive_{k}") for e in h.epochs])
        colour = style.LAYER_COLOURS[(k - 1) % len(style.LAYER_COLOURS)]
        units = layers[k - 1].split("→")[1]
        ax_d.plot(
            epochs, 100 * values, color=colour, lw=2, label=f"hidden layer {k}  ({units} units)", **marker
        )
    ax_d.set(
        title=f"{dead.capitalize()} {activation} units per hidden layer",
        xlabel="epoch",
        ylabel=f"{dead} units (%)",
    )
    top = max(
        5.0,
        100
        * np.nanmax(
            numbers([e.get(f"inactive_{k}") for e in h.epochs for k in range(1, n_hidden + 1)] or [0]),
            initial=0,
        )
        * 1.25,
    )
    ax_d.set_ylim(-0.02 * top, min(100.0, top))
    if n_hidden:
        ax_d.legend(loc="upper left")
    else:
        ax_d.text(0.5, 0.5, "no hidden layer", transform=ax_d.transAxes, ha="center", color=style.GREY)
    for ax in (ax_g, ax_d):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    fig.suptitle(f"Inside the layers: gradients and {dead} units, epoch by epoch")
    fig.supxlabel(
        f"{dead.capitalize()}: {info.get('inactive', '')}; norms averaged over "
        f"{info.get('sampled_batches_per_epoch', '?')} sampled batches an epoch.",
        fontsize=8.5,
        color=style.GREY,
    )
    return fig


@style.styled
def compare_curves(histories, names):
    """Several runs' epoch curves overlaid: validation accuracy and training loss, one colour per run.

    Parameters
    ----------
    histories : list of History or dict (or None for a run with no history yet)
        One per run, in the order of ``names``; a None or empty one is left out of the axes.
    names : list of str
        The runs' names, shown in the legend (with "interrupted" or "stopped early" when so).
    """
    if len(histories) != len(names):
        raise DigitnetError(f"compare_curves got {len(histories)} histories for {len(names)} names")
    runs = [(name, as_history(h)) for name, h in zip(names, histories, strict=True) if h is not None]
    runs = [(name, h) for name, h in runs if h.epochs]
    drawn = {name for name, _ in runs}
    left_out = [name for name in names if name not in drawn]
    if not runs:
        raise DigitnetError("none of these runs has finished an epoch: there are no curves to compare")

    fig = style.figure(12, 4.9)
    ax_acc, ax_loss = fig.subplots(1, 2)
    many = max(len(h.epochs) for _, h in runs) > 40
    any_val, losses = False, []
    for k, (name, h) in enumerate(runs):
        colour = style.LAYER_COLOURS[k % len(style.LAYER_COLOURS)]
        again = k // len(style.LAYER_COLOURS) % 3  # past the colours: another line and marker tell runs apart
        line = dict(
            color=colour,
            lw=2,
            ls=["-", "--", ":"][again],
            marker="os^"[again],
            markersize=0 if many else 4,
        )
        notes = [
            note
            for note, on in (("interrupted", h.interrupted), ("stopped early", h.stopped_early))
            if on and note not in name
        ]
        label = name + (f" ({', '.join(notes)})" if notes else "")
        epochs = np.array([e["epoch"] for e in h.epochs])
        val = np.array(
            [np.nan if e.get("val_accuracy") is None else e["val_accuracy"] for e in h.epochs], dtype=float
        )
        loss = np.array([e["train_loss"] for e in h.epochs], dtype=float)
        losses.append(loss)
        ax_loss.plot(epochs, np.maximum(loss, 1e-5), label=label, **line)
        if np.isfinite(val).any():
            any_val = True
            ax_acc.plot(epochs, 100 * val, label=label, **line)
            if h.restored_epoch:
                ax_acc.plot(
                    [h.restored_epoch],
                    [100 * val[h.restored_epoch - 1]],
                    ls="none",
                    marker="o",
                    markersize=11,
                    markerfacecolor="none",
                    markeredgecolor=colour,
                    markeredgewidth=1.6,
                )
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="validation accuracy (%)")
    if any_val:
        low, high = ax_acc.get_ylim()
        ax_acc.set_ylim(low, min(high, 100.5))
        ax_acc.legend(loc="best")
    else:
        ax_acc.text(
            0.5,
            0.5,
            "no validation split in these runs",
            transform=ax_acc.transAxes,
            ha="center",
            color=style.GREY,
        )
    every = np.concatenate(losses)
    if every.min() > 0 and every.max() / every.min() > 4:
        ax_loss.set(title="Training loss (epoch mean)", xlabel="epoch", ylabel="cross-entropy (log scale)")
        style.log_y(ax_loss)
    else:
        ax_loss.set(title="Training loss (epoch mean)", xlabel="epoch", ylabel="cross-entropy")
        style.plain_y(ax_loss)
    ax_loss.legend(loc="best")
    most = max(len(h.epochs) for _, h in runs)
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if most <= 12:
            ax.set_xticks(np.arange(1, most + 1))
    captions = []
    if any(h.restored_epoch for _, h in runs):
        captions.append("A circle marks the epoch whose weights a run kept (early stopping restored them).")
    if left_out:
        captions.append(f"Not drawn, no epoch recorded yet: {', '.join(left_out)}.")
    if captions:
        fig.supxlabel("  ".join(captions), fontsize=8.5, color=style.GREY)
    fig.suptitle(f"{len(runs)} runs compared, epoch by epoch")
    return fig
