"""The live view: seven panels that show the network reading one digit after another.

1. the input digit with its true label and the prediction with its confidence;
2. the output probabilities as bars (the predicted digit coloured);
3. the network's activity: neurons as circles in columns (input: the 15
   strongest pixels; each hidden layer: its most active units; output: all ten),
   shaded by activation, joined by lines as thick as the signal they carry
   (weight x activation; red positive, blue negative);
4. the confusion matrix of everything seen so far, with the running accuracy;
5. each layer's mean and maximum activation;
6. the histogram of the weights feeding the predicted output neuron;
7. the confidence over the last 50 predictions.

A :class:`Dashboard` builds the artists once and :meth:`Dashboard.show` only
changes their data, so a frame costs one forward pass of one image and one
redraw. With ``training=True`` an eighth panel shows the training curves
growing (see :mod:`digitnet.viz.live`). :attr:`Dashboard.state` holds the
numbers the panels show, for callers and tests.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.ticker import MaxNLocator

from digitnet import nn
from digitnet.viz import style

INPUT_NODES = 15
HIDDEN_NODES = 12
HISTORY = 50


def layer_activity(model, x: np.ndarray) -> list[np.ndarray]:
    """Run ``x`` ``(1, inputs)`` through ``model`` by ``predict``: no mode change, no cache touched.

    Returns ``[input, hidden_1, ..., hidden_H, logits]``, each ``(units,)``:
    the input, each hidden activation layer's output and the output logits.
    """
    outputs = model.predict(x, return_all=True)
    hidden = [
        h[0]
        for layer, h in zip(model.layers, outputs, strict=True)
        if not isinstance(layer, (nn.Linear, nn.Dropout))
    ]
    return [x[0], *hidden, outputs[-1][0]]


class Dashboard:
    """The seven-panel view of ``classifier`` on labelled images.

    Parameters
    ----------
    classifier : :class:`~digitnet.modelfile.Classifier`
        Its ``model`` is read afresh every frame, so a network in training can be watched.
    images, labels : ``(n, 784)`` pixel values 0-255 and ``(n,)`` labels
    fig : Figure, optional
        Draw into this figure (e.g. a pyplot window's); default a new headless Figure.
    training : bool, default False
        Add the eighth panel, training curves, filled by :meth:`show_history`.
    title : str
    """

    def __init__(self, classifier, images, labels, fig=None, training: bool = False, title: str = ""):
        self.clf, self.images, self.labels = (
            classifier,
            np.asarray(images),
            np.asarray(labels, dtype=np.int64),
        )
        self.names = list(classifier.class_names)
        self.k = len(self.names)
        self.linears = nn.linear_layers(classifier.model)
        self.title = title
        self.confusion = np.zeros((self.k, self.k), dtype=np.int64)
        self.recent = deque(maxlen=HISTORY)
        self.state: dict = {}
        self._hist_max = 1.0
        self._layer_span = deque(maxlen=HISTORY)  # (lowest, highest) bar of recent frames
        self.training = training
        with style_context():
            self.fig = fig if fig is not None else style.figure(16, 9.6 if training else 8.6, layout=None)
            if fig is None:
                FigureCanvasAgg(self.fig)
            self.fig.set_size_inches(16, 9.6 if training else 8.6)
            self._layout(training)
            self._build()
        # Blitting: the panels' frames, axes and labels are drawn once, with the changing artists hidden,
        # into a background; each frame restores it and draws only the artists that change. Any other
        # full draw (a resized window, the toolbar's save) draws everything and makes the background stale.
        self.blit = bool(getattr(self.fig.canvas, "supports_blit", False))
        self._changing = self._changing_artists()
        self._background = None
        self._stale = True
        self._capturing = False
        self.fig.canvas.mpl_connect("draw_event", self._on_draw)

    # -- building the panels once --------------------------------------------------
    def _layout(self, training: bool):
        fig = self.fig
        rows = 4 if training else 3
        grid = fig.add_gridspec(
            rows,
            3,
            width_ratios=[1, 1.75, 1.25],
            height_ratios=[1, 1, 1, 0.9][:rows],
            left=0.045,
            right=0.975,
            top=0.86,
            bottom=0.06,
            wspace=0.22,
            hspace=0.55,
        )
        self.ax_digit = fig.add_subplot(grid[0, 0])
        self.ax_proba = fig.add_subplot(grid[1, 0])
        self.ax_conf = fig.add_subplot(grid[2, 0])
        self.ax_net = fig.add_subplot(grid[0:2, 1])
        self.ax_layers = fig.add_subplot(grid[2, 1])
        self.ax_cm = fig.add_subplot(grid[0:2, 2])
        self.ax_hist = fig.add_subplot(grid[2, 2])
        self.ax_curves = fig.add_subplot(grid[3, :]) if training else None

    def _build(self):
        k, side = self.k, int(round(np.sqrt(self.images.shape[1])))
        fig = self.fig
        self.suptitle = fig.text(0.012, 0.985, self.title, fontsize=15, fontweight="bold", va="top")
        # 1. the digit
        ax = self.ax_digit
        self.digit = style.digit_image(ax, np.zeros((side, side)))
        self.digit_title = _title(ax, fontsize=12)
        self.digit_label = ax.text(
            0.5, -0.04, "", transform=ax.transAxes, ha="center", va="top", fontsize=9, color=style.GREY
        )
        # 2. probabilities
        ax = self.ax_proba
        self.bars = ax.bar(range(k), np.zeros(k), color="#c5cad3", width=0.75)
        ax.set_ylim(0, 118)
        ax.set_yticks([0, 50, 100])
        ax.set_xticks(
            range(k),
            self._short_names(),
            fontsize=8 if self._long() else 10,
            rotation=90 if self._long() else 0,
        )
        ax.grid(axis="x", visible=False)
        ax.set_title("Output probabilities (%)")
        (self.true_marker,) = ax.plot([0], [0], marker="v", color="#1d2024", markersize=7, ls="none")
        self.bar_text = ax.text(0, 0, "", ha="center", va="bottom", fontsize=9, fontweight="bold")
        # 3. the network
        self._build_network()
        # 4. running confusion matrix
        ax = self.ax_cm
        ax.grid(False)
        self.cm_image = ax.imshow(np.zeros((k, k)), cmap="Blues", vmin=0, vmax=1)
        self.cm_text = [
            [ax.text(j, i, "", ha="center", va="center", fontsize=8) for j in range(k)] for i in range(k)
        ]
        ax.set_xticks(range(k), self._short_names(), fontsize=8, rotation=90 if self._long() else 0)
        ax.set_yticks(range(k), self._short_names(), fontsize=8)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true", fontsize=9)
        self.cm_title = _title(ax)
        # 5. layer activity
        ax = self.ax_layers
        self.layer_names = [f"hidden {i}" for i in range(1, len(self.linears))] + ["output\n(logits)"]
        at = np.arange(len(self.layer_names))
        self.mean_bars = ax.bar(at - 0.2, np.zeros(len(at)), width=0.4, color=style.TRAIN, label="mean")
        self.max_bars = ax.bar(at + 0.2, np.zeros(len(at)), width=0.4, color=style.VAL, label="maximum")
        ax.set_xticks(at, self.layer_names, fontsize=8.5)
        ax.grid(axis="x", visible=False)
        self.layers_zero = ax.axhline(0, color="#1d2024", lw=0.8)
        ax.legend(loc="upper left", ncols=2, fontsize=8)
        ax.set_title("Activation of each layer")
        # 6. weights into the predicted output
        ax = self.ax_hist
        self.hist_bars = ax.bar(
            np.zeros(24), np.zeros(24), width=0.1, color=style.ACCENT, alpha=0.85, align="edge"
        )
        self.hist_zero = ax.axvline(0, color="#1d2024", lw=1.2)
        self.hist_title = _title(ax)
        ax.set_xlabel("weight", fontsize=9)
        ax.set_ylabel("count", fontsize=9)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        # 7. confidence over the last predictions
        ax = self.ax_conf
        (self.conf_line,) = ax.plot([], [], color=style.GREY, lw=1.2)
        self.conf_dots = ax.scatter([], [], s=16, zorder=3)
        ax.axhline(90, color=style.RIGHT, ls="--", lw=1, zorder=1)  # under the data, in any drawing
        ax.axhline(50, color=style.WRONG, ls="--", lw=1, zorder=1)
        ax.text(HISTORY + 0.5, 90, "90%", va="center", fontsize=8, color=style.RIGHT, zorder=1)
        ax.text(HISTORY + 0.5, 50, "50%", va="center", fontsize=8, color=style.WRONG, zorder=1)
        ax.set_xlim(0.5, HISTORY + 0.5)
        ax.set_ylim(0, 104)
        ax.set_xlabel("prediction (latest on the right)", fontsize=9)
        ax.set_ylabel("confidence (%)", fontsize=9)
        self.conf_title = _title(ax)
        if self.ax_curves is not None:
            ax = self.ax_curves
            (self.loss_line,) = ax.plot(
                [], [], color=style.TRAIN, lw=0.8, alpha=0.5, label="training loss, per batch"
            )
            (self.val_line,) = ax.plot(
                [], [], color=style.VAL, lw=2, marker="o", markersize=4, label="validation loss, per epoch"
            )
            ax.set_yscale("log")
            ax.set_xlabel("iteration", fontsize=9)
            ax.set_ylabel("loss", fontsize=9)
            ax.legend(loc="upper right", fontsize=8)
            self.curves_title = _title(ax)

    def _build_network(self):
        ax = self.ax_net
        ax.set_axis_off()
        ax.set_xlim(-0.5, len(self.linears) + 0.75)
        ax.set_ylim(-0.08, 1.08)
        widths = [self.linears[0].in_features] + [layer.out_features for layer in self.linears]
        shown = [min(INPUT_NODES, widths[0])] + [min(HIDDEN_NODES, w) for w in widths[1:-1]] + [widths[-1]]
        self.node_y = [np.linspace(0.95, 0.05, n) if n > 1 else np.array([0.5]) for n in shown]
        self.node_x = list(range(len(shown)))
        segments = []
        self.edge_slices = []
        for c in range(len(shown) - 1):
            start = len(segments)
            for ya in self.node_y[c]:
                for yb in self.node_y[c + 1]:
                    segments.append([(c + 0.06, ya), (c + 1 - 0.06, yb)])
            self.edge_slices.append(slice(start, len(segments)))
        self.edges = LineCollection(segments, linewidths=0.5, colors="#dddddd", zorder=1)
        self.n_edges = len(segments)
        ax.add_collection(self.edges)
        xs = np.concatenate([[x] * len(y) for x, y in zip(self.node_x, self.node_y, strict=True)])
        ys = np.concatenate(self.node_y)
        self.nodes = ax.scatter(
            xs,
            ys,
            s=150,
            c=np.zeros(len(xs)),
            cmap=_node_cmap(),
            vmin=0,
            vmax=1,
            edgecolors="#5a5f66",
            linewidths=0.8,
            zorder=3,
        )
        self.node_labels = []
        for c, (x, y) in enumerate(zip(self.node_x, self.node_y, strict=True)):
            last = c == len(shown) - 1
            labels = [
                ax.text(
                    x + (0.09 if last else -0.09),
                    yy,
                    "",
                    fontsize=7.5 if not last else 9,
                    ha="left" if last else "right",
                    va="center",
                    color="#3c4046",
                    fontweight="bold" if last else "normal",
                    zorder=4,
                    bbox=None,
                )
                for yy in y
            ]
            self.node_labels.append(labels)
            header = ("input" if c == 0 else "output" if last else f"hidden {c}") + f"\n{widths[c]} units"
            ax.text(
                x,
                1.065,
                header if c else f"input\n{widths[0]} pixels",
                ha="center",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )
            if shown[c] < widths[c]:
                ax.text(x, -0.035, "⋮", ha="center", va="center", fontsize=14, color="#3c4046")
        ax.set_title("The network's activity (lines: weight × activation; red +, blue −)", pad=34)
        self.shown = shown

    # -- one frame ----------------------------------------------------------------
    def show(self, index: int) -> dict:
        """Classify image ``index``, update every panel, and return :attr:`state`."""
        pixels, label = self.images[index], int(self.labels[index])
        x = self.clf.prepare(pixels[None, :])
        acts = layer_activity(self.clf.model, x)
        proba = nn.softmax(acts[-1][None, :])[0]
        pred = int(proba.argmax())
        conf = float(proba[pred])
        self.confusion[label, pred] += 1
        self.recent.append((conf, pred == label))
        seen = int(self.confusion.sum())
        correct = int(np.trace(self.confusion))
        self.state = {
            "index": int(index),
            "true": label,
            "pred": pred,
            "confidence": conf,
            "proba": proba,
            "seen": seen,
            "correct": correct,
            "running_accuracy": correct / seen,
            "confusion": self.confusion.copy(),
            "recent": list(self.recent),
            "activity": acts,
        }
        ok = pred == label
        colour = style.RIGHT if ok else style.WRONG
        self.digit.set_data(pixels.reshape(self.digit.get_array().shape))
        self.digit_title.set_text(
            f"true {self.names[label]} → predicted {self.names[pred]} ({100 * conf:.1f}%)"
        )
        self.digit_title.set_color(colour)
        self.digit_label.set_text(f"test image #{index}")
        self._show_proba(proba, pred, label, colour)
        self._show_network(acts, proba, pred)
        self._show_confusion(seen, correct)
        self._show_layers(acts)
        self._show_weights(pred)
        self._show_confidence()
        return self.state

    def _show_proba(self, proba, pred, label, colour):
        for i, bar in enumerate(self.bars):
            bar.set_height(100 * proba[i])
            bar.set_color(colour if i == pred else "#c5cad3")
        self.true_marker.set_data([label], [100 * proba[label] + 8])
        self.bar_text.set_position((pred, 100 * proba[pred] + 1))
        self.bar_text.set_text(f"{100 * proba[pred]:.0f}%" if pred != label else "")
        self.bar_text.set_color(colour)

    def _show_network(self, acts, proba, pred):
        x_in, hidden = acts[0], acts[1:-1]
        w = [layer.weight.data for layer in self.linears]
        picks = [np.argsort(-(x_in * np.linalg.norm(w[0], axis=1)), kind="stable")[: self.shown[0]]]
        for h in hidden:
            picks.append(np.argsort(-h, kind="stable")[:HIDDEN_NODES])
        picks.append(np.arange(len(proba)))
        values = [x_in] + list(hidden) + [proba]
        shade = []
        for c, idx in enumerate(picks):
            v = values[c][idx]
            top = max(float(np.abs(values[c]).max()), 1e-9) if c < len(picks) - 1 else 1.0
            shade.append(np.clip(np.abs(v) / top, 0, 1))
            for t, unit in zip(self.node_labels[c], idx, strict=True):
                if c == 0:
                    side = int(round(np.sqrt(len(x_in))))
                    t.set_text(f"({unit // side},{unit % side})")
                elif c == len(picks) - 1:
                    t.set_text(self._short_names()[unit])
                    t.set_color(style.RIGHT if unit == pred else "#3c4046")
                else:
                    t.set_text(f"#{unit}")
        self.nodes.set_array(np.concatenate(shade))
        n_nodes = np.cumsum([0] + [len(p) for p in picks])
        sizes = np.full(n_nodes[-1], 150.0)
        sizes[n_nodes[-2] + pred] = 260
        self.nodes.set_sizes(sizes)
        widths, colours = np.empty(self.n_edges), np.empty((self.n_edges, 4))
        for c, sl in enumerate(self.edge_slices):
            signal = values[c][picks[c]][:, None] * w[c][np.ix_(picks[c], picks[c + 1])]
            rel = (np.abs(signal) / max(float(np.abs(signal).max()), 1e-12)).ravel()
            widths[sl] = 0.2 + 3.6 * rel
            colours[sl] = np.where((signal.ravel() >= 0)[:, None], _RED, _BLUE)
            colours[sl, 3] = 0.08 + 0.8 * rel
        self.edges.set_linewidths(widths)
        self.edges.set_colors(colours)

    def _show_confusion(self, seen, correct):
        cm = self.confusion
        rows = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        self.cm_image.set_data(share)
        for i in range(self.k):
            for j in range(self.k):
                t = self.cm_text[i][j]
                t.set_text(str(cm[i, j]) if cm[i, j] else "")
                t.set_color("white" if share[i, j] > 0.6 else ("#1d2024" if i == j else style.WRONG))
        self.cm_title.set_text(f"Seen {seen:,}: running accuracy {100 * correct / seen:.1f}%")

    def _show_layers(self, acts):
        layer_values = acts[1:]
        means = [float(a.mean()) for a in layer_values]
        maxes = [float(a.max()) for a in layer_values]
        for bar, v in zip(self.mean_bars, means, strict=True):
            bar.set_height(v)
        for bar, v in zip(self.max_bars, maxes, strict=True):
            bar.set_height(v)
        top = max(*maxes, *np.abs(means), 1e-6) * 1.15
        low = min(0.0, *means, *maxes) * 1.15
        self._layer_span.append((low, top))
        lowest, highest = min(s[0] for s in self._layer_span), max(s[1] for s in self._layer_span)
        cur_low, cur_top = self.ax_layers.get_ylim()
        # Rescale (a full redraw) when this frame's bars leave the axis, or when those of the recent frames
        # all fit in a third of it: a mean that changes sign from digit to digit does not redraw every frame.
        if low < cur_low or top > cur_top or highest < cur_top / 3 or (cur_low < 0 and lowest > cur_low / 3):
            self.ax_layers.set_ylim(lowest * 1.3, highest * 1.3)
            self._stale = True

    def _show_weights(self, pred):
        w = self.linears[-1].weight.data
        col = w[:, pred]
        v = max(float(np.abs(w).max()), 1e-9) * 1.05  # one range for every output: comparable
        counts, edges = np.histogram(col, bins=len(self.hist_bars), range=(-v, v))
        for bar, c, left in zip(self.hist_bars, counts, edges[:-1], strict=True):
            bar.set_x(left)
            bar.set_width(edges[1] - edges[0])
            bar.set_height(c)
        if counts.max() > self._hist_max or abs(self.ax_hist.get_xlim()[1] - v) > 0.1 * v:
            self._hist_max = max(self._hist_max, counts.max() * 1.3)
            self.ax_hist.set_xlim(-v, v)
            self.ax_hist.set_ylim(0, self._hist_max)
            self._stale = True
        self.hist_title.set_text(
            f"{len(col)} weights into output {self.names[pred][:12]} (mean {col.mean():+.3f})"
        )

    def _show_confidence(self):
        conf = np.array([100 * c for c, _ in self.recent])
        ok = np.array([r for _, r in self.recent])
        xs = np.arange(HISTORY - len(conf) + 1, HISTORY + 1)
        self.conf_line.set_data(xs, conf)
        self.conf_dots.set_offsets(np.column_stack([xs, conf]))
        self.conf_dots.set_facecolors(np.where(ok[:, None], _GREEN, _RED_SOLID))
        self.conf_title.set_text(
            f"Confidence, last {len(conf)} (mean {conf.mean():.1f}%, {int((~ok).sum())} wrong)"
        )

    def show_history(self, history, epoch: int, epochs: int, ends=None) -> None:
        """Training panel: draw the per-batch loss so far and the validation loss per epoch.

        ``ends`` gives the iteration at the end of each finished epoch (default: their ``iteration`` keys).
        """
        if self.ax_curves is None or not history.loss:
            return
        it = np.arange(1, len(history.loss) + 1)
        self.loss_line.set_data(it, np.maximum(history.loss, 1e-5))
        ends = ends if ends is not None else [e.get("iteration") for e in history.epochs]
        val = [e.get("val_loss") for e in history.epochs]
        pts = [(x, v) for x, v in zip(ends, val, strict=True) if x is not None and v is not None]
        self.val_line.set_data([p[0] for p in pts], [p[1] for p in pts])
        ax = self.ax_curves
        ax.relim()
        ax.autoscale_view()
        ax.set_xlim(0, max(10, len(it) * 1.02))
        self._stale = True
        self.curves_title.set_text(
            f"Training: epoch {epoch}/{epochs}, iteration {len(it):,}, loss {history.loss[-1]:.4f}"
        )

    # -- drawing --------------------------------------------------------------------
    def _changing_artists(self) -> list:
        artists = [
            self.digit,
            self.digit_title,
            self.digit_label,
            *self.bars,
            self.true_marker,
            self.bar_text,
            self.edges,
            self.nodes,
            *[t for col in self.node_labels for t in col],
            self.cm_image,
            *[t for row in self.cm_text for t in row],
            self.cm_title,
            *self.mean_bars,
            *self.max_bars,
            *self.hist_bars,
            self.hist_title,
            self.conf_line,
            self.conf_dots,
            self.conf_title,
        ]
        if self.ax_curves is not None:
            artists += [self.loss_line, self.val_line, self.curves_title]
        # Drawn over the data in a full draw, so over it here too: frames and zero lines.
        artists += [self.layers_zero, self.hist_zero]
        for ax in self.fig.axes:
            artists += [spine for spine in ax.spines.values() if spine.get_visible() and ax.axison]
        return artists

    def _on_draw(self, event=None):
        if not self._capturing:  # someone else drew the whole figure: the background is stale
            self._stale = True

    def _capture(self):
        """Full draw without the changing artists, kept as the background; then draw them on top."""
        canvas = self.fig.canvas
        self._capturing = True
        try:
            for artist in self._changing:
                artist.set_visible(False)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
        finally:
            for artist in self._changing:
                artist.set_visible(True)
            self._capturing = False
        self._draw_changing()

    def _draw_changing(self):
        for artist in self._changing:
            self.fig.draw_artist(artist)

    def set_dpi(self, dpi: float) -> None:
        """Draw the next frames at ``dpi`` dots per inch (the figure is 16 inches wide)."""
        self.fig.set_dpi(dpi)
        self._stale = True

    def set_blit(self, on: bool) -> None:
        """Turn blitting on or off (off: every frame is a full draw, as a movie writer needs)."""
        self.blit = bool(on) and bool(getattr(self.fig.canvas, "supports_blit", False))
        self._stale = True

    def render(self) -> None:
        """Draw the current frame on the canvas: a full draw when axes changed, else a blit of what changed."""
        canvas = self.fig.canvas
        if not self.blit:
            canvas.draw()
        elif self._background is None or self._stale:
            self._stale = False
            self._capture()
        else:
            canvas.restore_region(self._background)
            self._draw_changing()
        canvas.blit(self.fig.bbox)

    def rgba(self) -> np.ndarray:
        """The current frame as an ``(height, width, 4)`` uint8 array (renders it first)."""
        self.render()
        return np.asarray(self.fig.canvas.buffer_rgba()).copy()

    # -- helpers ------------------------------------------------------------------
    def _long(self) -> bool:
        return max(len(n) for n in self.names) > 2

    def _short_names(self) -> list:
        return [n[:5] for n in self.names]


_RED = np.array([0.78, 0.22, 0.18, 1.0])
_BLUE = np.array([0.21, 0.40, 0.66, 1.0])
_GREEN = np.array([0.18, 0.55, 0.34, 1.0])
_RED_SOLID = np.array([0.78, 0.22, 0.18, 1.0])


def _title(ax, fontsize: float = 11):
    """A title that changes every frame: a plain text above the axes (matplotlib's own title moves
    itself during full draws only, so a blitted one would land elsewhere)."""
    return ax.annotate(
        "",
        (0.5, 1.0),
        xycoords="axes fraction",
        xytext=(0, 8),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=fontsize,
        fontweight="bold",
    )


def _node_cmap():
    return colormaps["YlOrBr"]


def style_context():
    import matplotlib

    return matplotlib.rc_context(style.RC)
