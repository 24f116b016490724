"""How accuracy falls as the test digits are damaged: noise, rotation, shift.

:func:`damage` makes the damaged images, :func:`robustness_curves` measures a
classifier on them and :func:`robustness` plots the three curves with an
example digit at a few levels of each damage.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digitnet.viz import style

LEVELS = {
    "noise": np.round(np.linspace(0.0, 0.6, 13), 3),  # Gaussian noise σ, in units of full brightness
    "rotation": np.linspace(-45.0, 45.0, 13),  # degrees, counter-clockwise
    "shift": np.arange(0, 7),  # pixels, up/down/left/right
}
UNITS = {
    "noise": "noise σ (1 = full brightness)",
    "rotation": "rotation (degrees)",
    "shift": "shift (pixels)",
}
TITLES = {"noise": "Gaussian noise", "rotation": "Rotation", "shift": "Shift"}


def damage(images, kind: str, level: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Damaged copies of ``images`` (pixel values 0-255, ``(n, 784)``), as float32 ``(n, 784)`` in 0-255.

    ``kind`` is ``"noise"`` (add N(0, level²) to pixels scaled to [0, 1], then
    clip), ``"rotation"`` (rotate by ``level`` degrees about the centre,
    bilinear) or ``"shift"`` (move each image ``level`` pixels up, down, left
    or right, the direction drawn per image; uncovered pixels are black).
    """
    x = np.asarray(images, dtype=np.float32)
    n, pixels = x.shape
    side = int(round(np.sqrt(pixels)))
    rng = rng if rng is not None else np.random.default_rng(0)
    if kind == "noise":
        if not level:
            return x.copy()
        noisy = rng.standard_normal(size=x.shape, dtype=np.float32)
        noisy *= level * 255
        noisy += x
        return np.clip(noisy, 0, 255, out=noisy)
    stack = x.reshape(n, side, side)
    if kind == "rotation":
        if not level:
            return x.copy()
        out = ndimage.rotate(
            stack, float(level), axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0
        )
        return np.clip(out, 0, 255).reshape(n, pixels)
    if kind == "shift":
        d = int(level)
        out = np.zeros_like(stack)
        if d == 0:
            return x.copy()
        if d >= side:
            return out.reshape(n, pixels)
        direction = rng.integers(0, 4, size=n)
        for k, (dy, dx) in enumerate([(-d, 0), (d, 0), (0, -d), (0, d)]):
            rows = direction == k
            src = stack[rows][:, max(0, -dy) : side - max(0, dy), max(0, -dx) : side - max(0, dx)]
            out[rows, max(0, dy) : side - max(0, -dy), max(0, dx) : side - max(0, -dx)] = src
        return out.reshape(n, pixels)
    raise ValueError(f"unknown damage {kind!r}; choose one of {', '.join(LEVELS)}")


def robustness_curves(classifier, images, labels, n: int = 2000, seed: int = 0) -> dict:
    """Accuracy of ``classifier`` on damaged test images at every level of :data:`LEVELS`.

    Parameters
    ----------
    classifier : Classifier (anything with ``predict(pixels) -> (n,)``)
    images, labels : ``(N, 784)`` pixel values 0-255 and ``(N,)`` labels
    n : int, default 2000
        Test images used: a random sample of this many (all when fewer).

    Returns
    -------
    dict
        ``{kind: {"levels": [...], "accuracy": [...]}}`` plus ``"n"``.
    """
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    x, y = images[pick], labels[pick]
    result = {"n": int(len(pick))}
    for kind, levels in LEVELS.items():
        accs = []
        for level in levels:
            damaged = damage(x, kind, level, np.random.default_rng([seed, int(1000 * abs(level))]))
            accs.append(float(np.mean(classifier.predict(damaged) == y)))
        result[kind] = {"levels": [float(v) for v in levels], "accuracy": accs}
    return result


@style.styled
def robustness(classifier, images, labels, n: int = 2000, seed: int = 0, curves: dict | None = None):
    """Test accuracy against Gaussian noise, rotation and shift, each a curve, with example damaged digits.

    ``curves`` may pass a precomputed :func:`robustness_curves` result.
    """
    curves = curves or robustness_curves(classifier, images, labels, n=n, seed=seed)
    example = np.asarray(images[:1])
    fig = style.figure(13, 5.6)
    grid = fig.add_gridspec(2, 3, height_ratios=[3.2, 1])
    colours = {"noise": style.TRAIN, "rotation": style.VAL, "shift": style.RIGHT}
    for col, kind in enumerate(LEVELS):
        ax = fig.add_subplot(grid[0, col])
        levels, acc = np.array(curves[kind]["levels"]), 100 * np.array(curves[kind]["accuracy"])
        clean = acc[np.argmin(np.abs(levels))]
        ax.plot(levels, acc, color=colours[kind], lw=2.2, marker="o", markersize=4)
        ax.axhline(clean, color=style.GREY, ls="--", lw=1, label=f"undamaged: {clean:.1f}%")
        ax.axhline(10, color=style.GREY, ls=":", lw=1, label="chance: 10%")
        worst = int(np.argmin(acc))
        edge = "left" if worst == 0 else "right" if worst == len(levels) - 1 else "center"
        ax.annotate(
            f"{acc[worst]:.1f}%",
            (levels[worst], acc[worst]),
            textcoords="offset points",
            xytext=(0, -13),
            ha=edge,
            fontsize=8.5,
            color=colours[kind],
        )
        ax.set(title=TITLES[kind], xlabel=UNITS[kind], ylim=(0, 102))
        if col == 0:
            ax.set_ylabel("test accuracy (%)")
        ax.legend(loc="lower left" if kind != "rotation" else "lower center", fontsize=8)
        strip_ax = fig.add_subplot(grid[1, col])
        shown = np.quantile(levels, [0, 0.25, 0.5, 0.75, 1.0]) if kind != "shift" else levels[::2][:5]
        if kind == "rotation":
            shown = np.array([-45, -22.5, 0, 22.5, 45])
        tiles = [damage(example, kind, v, np.random.default_rng(1)).reshape(28, 28) for v in shown]
        strip = np.concatenate([np.pad(t, ((0, 0), (2, 2)), constant_values=np.nan) for t in tiles], axis=1)
        strip_ax.imshow(strip, cmap=_digits(), vmin=0, vmax=255)
        strip_ax.set_axis_off()
        unit = {"noise": "σ ", "rotation": "", "shift": ""}[kind]
        suffix = {"noise": "", "rotation": "°", "shift": " px"}[kind]
        for i, v in enumerate(shown):
            strip_ax.text(
                32 * i + 15.5,
                29,
                f"{unit}{v:g}{suffix}",
                ha="center",
                va="top",
                fontsize=8,
                color=style.GREY,
                clip_on=False,
            )
    fig.suptitle(f"Robustness: accuracy on {curves['n']:,} test digits as they are damaged")
    return fig


def _digits():
    from matplotlib import colormaps

    return colormaps[style.DIGIT].with_extremes(bad="white")
