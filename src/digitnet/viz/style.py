"""One look for every picture: colours, fonts, figure creation, saving, and the backend.

Plots are built on :class:`matplotlib.figure.Figure` objects, not through
``pyplot``, so making one needs no display and leaves no global state behind;
a notebook shows a returned Figure inline. Only the live dashboard opens a
window; :func:`use_backend` refuses to try when there is no display.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from digitnet.data.formats import atomic_path
from digitnet.errors import DigitnetError

# Colours: training blue, validation orange, right green, wrong red, neutral grey.
TRAIN = "#3566a8"
VAL = "#e07b28"
RIGHT = "#2e8b57"
WRONG = "#c8372d"
ACCENT = "#7b3fa0"
GREY = "#8a8f98"
LAYER_COLOURS = ["#3566a8", "#e07b28", "#2e8b57", "#c8372d", "#7b3fa0", "#8c564b", "#d4a017"]
DIVERGING = "RdBu_r"  # weights: blue negative, red positive, white zero
DIGIT = "gray_r"  # digits: black ink on white paper

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e5e8",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "axes.edgecolor": "#5a5f66",
    "axes.titlepad": 8,
    "xtick.color": "#3c4046",
    "ytick.color": "#3c4046",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "figure.titlesize": 14,
    "figure.titleweight": "bold",
    "savefig.facecolor": "white",
    "image.interpolation": "nearest",
}
DPI = 100


def figure(width: float, height: float, **kwargs) -> Figure:
    """A new Figure of ``width`` x ``height`` inches in the house style, laid out automatically."""
    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), dpi=DPI, layout=kwargs.pop("layout", "constrained"), **kwargs)


def styled(function):
    """Decorator: run a plotting function with the house style in force."""

    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return function(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = function.__name__, function.__doc__, function
    wrapper.__module__, wrapper.__qualname__ = function.__module__, function.__qualname__
    return wrapper


def digit_image(ax, pixels, title: str | None = None, **title_kw):
    """Show one ``(784,)`` or ``(28, 28)`` image of pixel values 0-255 in ``ax`` without ticks, in a
    light frame; return the AxesImage (its ``set_data`` redraws the digit)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    side = int(round(np.sqrt(pixels.size)))
    image = ax.imshow(pixels.reshape(side, side), cmap=DIGIT, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#c9ccd1")
    if title:
        ax.set_title(title, **{"fontsize": 9, "fontweight": "normal", "pad": 3, **title_kw})
    return image


def symmetric_limit(values, percentile: float = 99.5) -> float:
    """A colour-scale bound ``v`` so that ``[-v, v]`` holds ``percentile`` % of ``|values|`` (never 0)."""
    values = np.abs(np.asarray(values, dtype=np.float64).ravel())
    if not values.size:
        return 1.0
    v = float(np.percentile(values, percentile))
    return v if v > 0 else float(values.max()) or 1.0


def log_y(ax) -> None:
    """Put ``ax``'s y axis on a log scale labelled with plain numbers (0.1, 0.2, 0.5 ... not 10^-1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    if high / max(low, 1e-300) < 30:  # under ~1.5 decades: label 2, 3, 5 between the powers of ten
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def plain_y(ax) -> None:
    """Label ``ax``'s y ticks with plain short numbers (0.001, not 1e-3 as an offset)."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


# A history or weights may hold numbers near the largest float; the axes' margins around them (a log
# axis takes exp of its limits) then overflow to inf, which matplotlib draws past, but NumPy warns on
# stderr. Building a figure (plots.make), where the axes are laid out, runs under this instead.
far_numbers = np.errstate(over="ignore")


def save(fig: Figure, path, formats=("png",)) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats``, each atomically; return the paths.

    Raises :class:`DigitnetError` naming the file when it cannot be written.
    """
    written = []
    for fmt in formats:
        target = Path(path).with_suffix("." + fmt)
        try:
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI)
        except OSError as exc:
            raise DigitnetError(f"cannot write {target}: {exc.strerror or exc}") from None
        written.append(target)
    return written


def has_display() -> bool:
    """Whether a window can be opened: always on macOS and Windows, with $DISPLAY or $WAYLAND_DISPLAY on Linux."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def use_backend(window: bool) -> str:
    """Choose matplotlib's backend before pyplot is used: an interactive one for a window, else Agg.

    Returns the backend's name. With ``window=True`` and no display, raises
    :class:`DigitnetError` (the caller should offer saving to a file instead),
    so nothing ever crashes headless.
    """
    if not window or not has_display():
        if window:
            raise DigitnetError(
                "there is no display to open a window on: save the view to a file instead "
                "(--save view.gif --frames 100, or --save frame.png)"
            )
        matplotlib.use("Agg", force=True)
        return "Agg"
    import matplotlib.pyplot as plt  # resolves the best interactive backend available

    backend = plt.get_backend()
    if backend.lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        raise DigitnetError(
            f"matplotlib has no interactive backend here (it uses {backend}): install a GUI "
            "toolkit for Python (e.g. the python3-tk package), or save the view with --save"
        )
    return backend


def free_keys() -> None:
    """Take the keys the dashboard uses (space, the arrows) away from matplotlib's own window shortcuts."""
    for key in ("keymap.forward", "keymap.back", "keymap.pan"):
        matplotlib.rcParams[key] = [k for k in matplotlib.rcParams[key] if k not in ("right", " ", "left")]
