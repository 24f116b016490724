"""Plots of the weights: what the first layer looks for, every weight matrix, and how training moved them.

Both take the network (a :class:`~digitnet.nn.Sequential` or a
:class:`~digitnet.modelfile.Classifier`) and return a Figure. Weights are
``(inputs, outputs)``; the first layer's column ``j``, reshaped to 28x28, is
the pattern hidden unit ``j`` responds to.
"""

from __future__ import annotations

import numpy as np

from digitnet import nn
from digitnet.errors import DigitnetError
from digitnet.viz import style


def linear_layers(model) -> list:
    """The :class:`~digitnet.nn.Linear` layers of a network or classifier, input side first."""
    model = getattr(model, "model", model)
    return [layer for layer in model.layers if isinstance(layer, nn.Linear)]


def mosaic(tiles: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """Lay ``(n, h, w)`` tiles out in a grid ``cols`` wide, separated by ``gap`` NaN pixels; returns 2-D."""
    n, h, w = tiles.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[k]
    return out


@style.styled
def weights(model, max_units: int = 128):
    """The first layer's weights as one 28x28 image per hidden unit, and every weight matrix as a heatmap.

    Parameters
    ----------
    model : Sequential or Classifier
    max_units : int, default 128
        With more hidden units than this in the first layer, the ``max_units``
        with the largest weight norm are shown (the title says so).

    Colours: red for positive weights, blue for negative, white for zero, on
    one scale shared by all the images of a panel (its colour bar).
    """
    layers = linear_layers(model)
    w1 = layers[0].weight.data
    side = int(round(np.sqrt(w1.shape[0])))
    if side * side != w1.shape[0]:
        raise DigitnetError(f"the first layer takes {w1.shape[0]} inputs, not a square image")
    units = np.arange(w1.shape[1])
    if len(units) > max_units:
        units = np.sort(np.argsort(-np.linalg.norm(w1, axis=0), kind="stable")[:max_units])
    cols = int(np.ceil(np.sqrt(len(units) * 1.6)))
    tiles = w1[:, units].T.reshape(-1, side, side)
    v = style.symmetric_limit(tiles)

    n = len(layers)
    matrix_cols = min(n, 3)
    matrix_rows = -(-n // matrix_cols)
    fig = style.figure(12, 7.2 + 2.7 * matrix_rows)
    top, bottom = fig.subfigures(2, 1, height_ratios=[7.2, 2.7 * matrix_rows], hspace=0.02)
    ax = top.subplots()
    ax.grid(False)
    cmap = _diverging()
    image = ax.imshow(mosaic(tiles, cols), cmap=cmap, vmin=-v, vmax=v)
    ax.set_axis_off()
    shown = (
        f"all {w1.shape[1]}" if len(units) == w1.shape[1] else f"the {len(units)} strongest of {w1.shape[1]}"
    )
    ax.set_title(
        f"What each first-layer unit looks for: its {w1.shape[0]} input weights as a "
        f"{side}x{side} image ({shown} units)"
    )
    bar = top.colorbar(image, ax=ax, shrink=0.8, pad=0.01)
    bar.set_label("weight (red excites the unit, blue inhibits it)")

    axes = np.atleast_1d(bottom.subplots(matrix_rows, matrix_cols)).ravel()
    for k, (layer, ax) in enumerate(zip(layers, axes[:n], strict=True), start=1):  # the grid may have more
        w = layer.weight.data.T  # (outputs, inputs): one row per unit
        v = style.symmetric_limit(w)
        ax.grid(False)
        im = ax.imshow(w, cmap=cmap, vmin=-v, vmax=v, aspect="auto", interpolation="antialiased")
        ax.set_title(f"layer {k}: {layer.in_features} → {layer.out_features}", fontsize=10)
        ax.set_xlabel("input", fontsize=9)
        ax.set_ylabel("unit", fontsize=9)
        bottom.colorbar(im, ax=ax, pad=0.02, fraction=0.06)
    for ax in axes[n:]:
        ax.axis("off")
    bottom.suptitle(
        "Every weight matrix (rows: units, columns: their inputs)", fontsize=12, fontweight="bold"
    )
    return fig


def _diverging():
    from matplotlib import colormaps

    return colormaps[style.DIVERGING].with_extremes(bad="white")


@style.styled
def distributions(model, initial_weights: dict | None = None):
    """Each layer's weight histogram now, against the one at initialisation.

    Parameters
    ----------
    model : Sequential or Classifier
    initial_weights : dict, optional
        ``{"0.weight": (in, out) array, ...}`` as kept by
        :class:`~digitnet.diagnostics.Diagnostics` (``initial_weights.npz``).
        Without it only the trained weights are drawn.

    The legend gives each histogram's mean (μ) and standard deviation (σ).
    """
    net = getattr(model, "model", model)
    named = [(name, p.data) for name, p in net.named_parameters() if name.endswith("weight")]
    n = len(named)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = style.figure(4.3 * cols, 3.5 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for k, ((name, now), ax) in enumerate(zip(named, axes[:n], strict=True), start=1):  # ditto
        before = None if initial_weights is None else np.asarray(initial_weights.get(name))
        values = now.ravel() if before is None else np.concatenate([now.ravel(), before.ravel()])
        low, high = np.percentile(values, [0.05, 99.95])
        bins = np.linspace(low, high, 80)
        if before is not None:
            ax.hist(
                before.ravel(),
                bins=bins,
                color=style.GREY,
                alpha=0.45,
                label=f"initial  μ={_signed(before.mean())}  σ={before.std():.3f}",
            )
        colour = style.LAYER_COLOURS[(k - 1) % len(style.LAYER_COLOURS)]
        ax.hist(
            now.ravel(),
            bins=bins,
            histtype="step",
            lw=1.8,
            color=colour,
            label=f"trained μ={_signed(now.mean())}  σ={now.std():.3f}",
        )
        ax.axvline(0, color="#1d2024", lw=0.8)
        ax.set_title(f"layer {k}: {now.shape[0]} → {now.shape[1]}  ({now.size:,} weights)", fontsize=10)
        ax.set_xlabel("weight")
        ax.set_ylabel("count")
        ax.legend(loc="upper left", fontsize=8, handlelength=1.2)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    for ax in axes[n:]:
        ax.axis("off")
    fig.suptitle(
        "Weight distributions: trained against initial"
        if initial_weights is not None
        else "Weight distributions (initial weights not recorded for this model)"
    )
    return fig


def _signed(x: float) -> str:
    """``x`` with a sign and three decimals, never "-0.000"."""
    return f"{round(float(x), 3) + 0.0:+.3f}"
