"""Plots of a model's answers on test images: the confusion matrix, its worst mistakes, its probabilities.

Each takes plain arrays (images as pixel values 0-255, ``(n, 784)``; labels
``(n,)``; probabilities ``(n, K)``) and returns a Figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap, Normalize

from digitnet import metrics
from digitnet.viz import style


def _names(class_names, k: int) -> list:
    return list(class_names) if class_names is not None else [str(i) for i in range(k)]


@style.styled
def confusion(y_true, y_pred, class_names=None):
    """The confusion matrix as an annotated heatmap, with per-class accuracy on the side.

    Each cell shows its count and its share of the row (the true class).
    Right answers (the diagonal) are shaded blue, mistakes red on their own
    scale so that even rare ones show. The title gives the overall accuracy.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    names = _names(class_names, int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1)
    k = len(names)
    cm = metrics.confusion_matrix(y_true, y_pred, k)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) * 100
    eye = np.eye(k, dtype=bool)
    correct = int(np.trace(cm))
    acc = correct / max(1, cm.sum())

    fig = style.figure(10.5, 8.4)
    ax, side = fig.subplots(1, 2, width_ratios=[k, 2.2])
    ax.grid(False)
    off_max = max(share[~eye].max(initial=0), 1.0)
    mistakes = ax.imshow(np.ma.masked_where(eye, share), cmap="Reds", vmin=0, vmax=off_max * 1.15)
    ax.imshow(np.ma.masked_where(~eye, share), cmap=ListedColormap(_blues()), norm=Normalize(0, 100))
    long = max(len(n) for n in names) > 3
    for i in range(k):
        for j in range(k):
            count = cm[i, j]
            if count == 0:
                ax.text(j, i, "0", ha="center", va="center", fontsize=8, color="#b9bdc4")
                continue
            dark = share[i, j] > (55 if i == j else off_max * 0.6)
            colour = "white" if dark else "#1d2024"
            ax.text(
                j,
                i - 0.12,
                f"{count:,}",
                ha="center",
                va="center",
                fontsize=9.5 if k <= 10 else 7,
                fontweight="bold",
                color=colour,
            )
            ax.text(j, i + 0.24, f"{share[i, j]:.1f}%", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k), names, rotation=40 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"Confusion matrix: accuracy {100 * acc:.2f}% ({correct:,} of {cm.sum():,} right)")
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(mistakes, ax=ax, shrink=0.55, pad=0.01, location="bottom", aspect=40)
    bar.set_label("mistakes: % of the true class's images")

    per_class = np.divide(np.diag(cm), rows[:, 0], out=np.zeros(k), where=rows[:, 0] > 0) * 100
    y = np.arange(k)
    colours = [style.WRONG if p == per_class.min() and p < 100 else style.TRAIN for p in per_class]
    side.barh(y, per_class, color=colours, height=0.62)
    side.set_ylim(k - 0.5, -0.5)
    side.set_yticks(y, [""] * k)
    low = max(0.0, per_class.min() - max(2.0, (100 - per_class.min()) * 0.5))
    side.set_xlim(low, 100)
    for i, p in enumerate(per_class):
        side.text(
            low + (100 - low) * 0.03,
            i,
            f"{p:.1f}%",
            va="center",
            ha="left",
            fontsize=8.5,
            color="white",
            fontweight="bold",
        )
    side.set_title("Per-class accuracy", fontsize=10)
    side.set_xlabel("recall (%)")
    side.grid(axis="y", visible=False)
    return fig


def _blues():
    from matplotlib import colormaps

    return colormaps["Blues"](np.linspace(0.15, 0.9, 256))


@style.styled
def misclassified(images, y_true, proba, class_names=None, n: int = 25):
    """A 5x5 grid of wrongly classified images, the most confident mistakes first.

    Each is titled "true → predicted (p%)" with p the probability given to the
    wrong answer.
    """
    images, y_true, proba = np.asarray(images), np.asarray(y_true, dtype=np.int64), np.asarray(proba)
    names = _names(class_names, proba.shape[1])
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:n]
    cols = 5
    rows = max(1, -(-min(n, max(len(order), 1)) // cols))
    fig = style.figure(10, 2.15 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    small = max(len(nm) for nm in names) > 6
    for ax, i in zip(axes[: len(order)], order, strict=True):  # the last row may have fewer
        style.digit_image(
            ax,
            images[i],
            f"{names[y_true[i]]} → {names[pred[i]]} ({100 * proba[i, pred[i]]:.0f}%)",
            fontsize=8 if small else 10,
            color=style.WRONG,
        )
        ax.set_xlabel(f"test #{i}", fontsize=7.5, color=style.GREY, labelpad=2)
    for ax in axes[len(order) :]:
        ax.axis("off")
    if not len(order):
        axes[0].text(0.5, 0.5, "no mistakes", transform=axes[0].transAxes, ha="center")
    if len(order) < len(wrong):
        shown = f"The {len(order)} most confident mistakes"
    else:
        shown = {0: "No mistakes", 1: "The only mistake"}.get(len(order), f"All {len(order)} mistakes")
    fig.suptitle(f"{shown} ({len(wrong):,} of {len(y_true):,} test images are misclassified)")
    fig.supxlabel(
        "true class → predicted class (probability the network gave its wrong answer)",
        fontsize=9,
        color=style.GREY,
    )
    return fig


@style.styled
def predictions(images, y_true, proba, logits, class_names=None, indices=None, n: int = 8):
    """Test images, each beside a bar chart of its probabilities and a histogram of its logits.

    The predicted class's bar is coloured (green when right, red when wrong)
    and the true class is marked with a triangle. By default the first ``n``
    test images are shown, a quarter of them swapped for the first mistakes
    so that both kinds appear.
    """
    images, proba, logits = np.asarray(images), np.asarray(proba), np.asarray(logits)
    y_true = np.asarray(y_true, dtype=np.int64)
    names = _names(class_names, proba.shape[1])
    k = len(names)
    pred = proba.argmax(axis=1)
    if indices is None:
        wrong = list(np.flatnonzero(pred != y_true)[: n // 4])
        right = [i for i in range(len(y_true)) if i not in wrong][: n - len(wrong)]
        indices = sorted(right + wrong)
    indices = list(indices)[:n]
    pairs = 2
    rows = -(-len(indices) // pairs)
    fig = style.figure(14, 2.25 * rows + 0.7)
    grid = fig.add_gridspec(rows, 3 * pairs, width_ratios=[1, 2.3, 1.5] * pairs)
    long = max(len(nm) for nm in names) > 2
    for slot, i in enumerate(indices):
        r, c = divmod(slot, pairs)
        ax_img, ax_p, ax_l = (fig.add_subplot(grid[r, 3 * c + j]) for j in range(3))
        ok = pred[i] == y_true[i]
        colour = style.RIGHT if ok else style.WRONG
        style.digit_image(ax_img, images[i], f"#{i}: true {names[y_true[i]]}", fontsize=9)
        colours = ["#c5cad3"] * k
        colours[pred[i]] = colour
        ax_p.bar(range(k), 100 * proba[i], color=colours, width=0.75)
        ax_p.plot([y_true[i]], [100 * proba[i, y_true[i]] + 7], marker="v", color="#1d2024", markersize=6)
        ax_p.set_ylim(0, 113)
        ax_p.set_yticks([0, 50, 100])
        ax_p.set_ylabel("%", fontsize=8, labelpad=1)
        ax_p.set_xticks(
            range(k), [nm[:5] for nm in names], fontsize=7 if long else 8.5, rotation=90 if long else 0
        )
        ax_p.grid(axis="x", visible=False)
        ax_p.get_xticklabels()[y_true[i]].set_fontweight("bold")
        ax_p.set_title(
            f"predicted {names[pred[i]]} ({100 * proba[i, pred[i]]:.1f}%)",
            fontsize=9,
            color=colour,
            fontweight="bold",
        )
        ax_l.hist(logits[i], bins=10, color=style.ACCENT, alpha=0.8)
        ax_l.axvline(logits[i, pred[i]], color=colour, lw=1.5)
        ax_l.set_title("logits", fontsize=8.5, fontweight="normal")
        ax_l.tick_params(labelsize=7.5)
        ax_l.set_yticks([])
        if c == 0 and r == rows - 1:
            ax_p.set_xlabel("class  (▼ true class)", fontsize=8)
    fig.suptitle("What the network says about each digit: probabilities and logits")
    return fig
