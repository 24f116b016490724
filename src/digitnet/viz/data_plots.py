"""A picture of the data itself: examples of every class, how many there are, and the average image."""

from __future__ import annotations

import numpy as np

from digitnet.viz import style
from digitnet.viz.weight_plots import mosaic


@style.styled
def dataset(
    x_train,
    y_train,
    class_names=None,
    x_test=None,
    y_test=None,
    per_class: int = 10,
    seed: int = 0,
    title: str = "The data",
):
    """Examples of each class, the count of images per class, and the average image of each class.

    Parameters
    ----------
    x_train, y_train : uint8 ``(n, 784)`` images (values 0-255) and ``(n,)`` labels
    class_names : list of str, optional
    x_test, y_test : optional; their counts are drawn beside the training counts
    per_class : int, default 10
        Examples shown per class, drawn at random with ``seed``.
    """
    x_train, y_train = np.asarray(x_train), np.asarray(y_train, dtype=np.int64)
    k = len(class_names) if class_names is not None else int(y_train.max()) + 1
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    side = int(round(np.sqrt(x_train.shape[1])))
    rng = np.random.default_rng(seed)

    fig = style.figure(13, 8.2)
    grid = fig.add_gridspec(2, 2, width_ratios=[1.05, 1], height_ratios=[1, 1.05])
    ax_ex = fig.add_subplot(grid[:, 0])
    examples = np.zeros((k * per_class, side, side), dtype=np.float32)
    for c in range(k):
        members = np.flatnonzero(y_train == c)
        pick = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        examples[c * per_class : c * per_class + len(pick)] = x_train[pick].reshape(-1, side, side)
    ax_ex.imshow(mosaic(examples, per_class, gap=2), cmap=style.DIGIT, vmin=0, vmax=255)
    ax_ex.grid(False)
    ax_ex.set_xticks([])
    ax_ex.set_yticks(np.arange(k) * (side + 2) + side / 2, names)
    ax_ex.tick_params(length=0)
    for spine in ax_ex.spines.values():
        spine.set_visible(False)
    ax_ex.set_title(f"{per_class} random examples of each class")

    ax_n = fig.add_subplot(grid[0, 1])
    counts = np.bincount(y_train, minlength=k)
    at = np.arange(k)
    if y_test is not None:
        test_counts = np.bincount(np.asarray(y_test, dtype=np.int64), minlength=k)
        ax_n.bar(at - 0.2, counts, width=0.4, color=style.TRAIN, label=f"training ({counts.sum():,})")
        ax_n.bar(at + 0.2, test_counts, width=0.4, color=style.VAL, label=f"test ({test_counts.sum():,})")
        ax_n.legend(loc="upper center", ncols=2, bbox_to_anchor=(0.5, 1.0))
        ax_n.set_ylim(0, max(counts.max(), test_counts.max()) * 1.22)
    else:
        ax_n.bar(at, counts, color=style.TRAIN)
        ax_n.set_ylim(0, counts.max() * 1.15)
    long = max(len(n) for n in names) > 2
    ax_n.set_xticks(
        at, names, rotation=35 if long else 0, ha="right" if long else "center", fontsize=8.5 if long else 10
    )
    ax_n.grid(axis="x", visible=False)
    ax_n.set(title="Images per class", ylabel="images")

    sub = fig.add_subfigure(grid[1, 1])
    cols = 5
    axes = sub.subplots(-(-k // cols), cols).ravel()
    for c, ax in enumerate(axes[:k]):
        members = y_train == c
        mean = x_train[members].mean(axis=0) if members.any() else np.zeros(side * side)
        style.digit_image(ax, mean, names[c], fontsize=9)
    for ax in axes[k:]:
        ax.axis("off")
    sub.suptitle("The average image of each class", fontsize=11, fontweight="bold")
    fig.suptitle(
        f"{title}: {len(x_train):,} training images in {k} classes"
        + (f", {len(x_test):,} test images" if x_test is not None else "")
    )
    return fig
