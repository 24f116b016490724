"""Running the dashboard: in a window with keys, into a file, and during training.

- :func:`play` steps a :class:`~digitnet.viz.dashboard.Dashboard` through
  test images in a window: space pauses, → steps, q quits.
- :func:`record` renders frames headless into ``.png`` (one frame), ``.gif``
  (Pillow) or ``.mp4`` (matplotlib's FFMpegWriter, with the system's ffmpeg or
  imageio-ffmpeg's).
- :class:`LiveTraining` is a training callback that shows (or records) the
  same view of the network while it learns, with the loss curve growing.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.training import Callback
from digitnet.viz import style
from digitnet.viz.dashboard import Dashboard

FORMATS = (".png", ".gif", ".mp4")
GIF_DPI = 72


class Player:
    """Advance a dashboard through ``indices`` on a timer, under the keys space (pause), → (step) and q (quit)."""

    def __init__(self, dash: Dashboard, indices, interval_ms: int = 100):
        self.dash, self.indices, self.position = dash, list(indices), 0
        self.paused = False
        canvas = dash.fig.canvas
        canvas.mpl_connect("key_press_event", self.on_key)
        self.timer = canvas.new_timer(interval=max(1, int(interval_ms)))
        self.timer.add_callback(self.tick)

    def step(self) -> dict:
        """Show the next image (wrapping around at the end) and draw it."""
        state = self.dash.show(self.indices[self.position % len(self.indices)])
        self.position += 1
        self.dash.render()
        return state

    def tick(self):
        if not self.paused:
            self.step()

    def on_key(self, event):
        if event.key == " ":
            self.paused = not self.paused
        elif event.key == "right":
            self.paused = True
            self.step()
        elif event.key == "q":
            self.timer.stop()
            self.close()

    def close(self):
        import matplotlib.pyplot as plt

        plt.close(self.dash.fig)


def window_figure(training: bool = False):
    """A pyplot figure in a window (raises :class:`DigitnetError` when there is no display)."""
    style.use_backend(window=True)
    style.free_keys()
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 9.6 if training else 8.6))
    fig.canvas.manager.set_window_title("digitnet dashboard")
    return fig


def play(dash: Dashboard, indices, interval_ms: int = 100) -> Player:
    """Show ``dash`` in its window, stepping through ``indices`` until the window is closed."""
    import matplotlib.pyplot as plt

    player = Player(dash, indices, interval_ms)
    player.step()
    player.timer.start()
    dash.fig.text(
        0.99, 0.005, "space: pause   →: step   q: quit", ha="right", va="bottom", fontsize=9, color=style.GREY
    )
    plt.show()
    return player


def record(dash: Dashboard, indices, path, frames: int = 100, interval_ms: int = 100) -> dict:
    """Render ``frames`` frames of ``dash`` into ``path``, atomically.

    A ``.gif`` or ``.mp4`` holds every frame; a ``.png`` holds the last, the
    view after ``frames`` digits. Returns ``{"path", "frames", "fps"}`` where
    ``fps`` is the rendering speed of a movie (frames drawn per second of work;
    None for a ``.png``), not the file's playback rate, ``1000 / interval_ms``.
    """
    path = Path(path)
    check_output(path)
    indices = list(indices)
    n = max(1, int(frames))
    one = path.suffix.lower() == ".png"
    sink = _sink(path, dash, interval_ms)
    started = time.perf_counter()
    try:
        for k in range(n):
            dash.show(indices[k % len(indices)])
            if not one or k == n - 1:
                sink.add()
        seconds = time.perf_counter() - started
        sink.close()
    finally:
        sink.discard()
    return {"path": str(path), "frames": 1 if one else n, "fps": None if one else n / max(seconds, 1e-9)}


def check_output(path: Path) -> None:
    """Raise :class:`DigitnetError` unless ``path`` names a file of a known format in a usable folder."""
    if path.suffix.lower() not in FORMATS:
        raise DigitnetError(f"--save takes a .png (one frame), .gif or .mp4 file, not '{path.name}'")
    if path.suffix.lower() == ".mp4":
        find_ffmpeg()
    if path.is_dir():
        raise DigitnetError(f"{path} is a folder: give a file name such as {path / 'dashboard.gif'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitnetError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not path.parent.is_dir():
        raise DigitnetError(f"cannot write {path}: {path.parent} is not a folder")


def find_ffmpeg() -> None:
    """Make sure matplotlib's movie writer has an ffmpeg: the system's, or the one of imageio-ffmpeg.

    Raises :class:`DigitnetError` when there is neither.
    """
    import matplotlib
    from matplotlib.animation import FFMpegWriter

    if FFMpegWriter.isAvailable():
        return
    try:
        import imageio_ffmpeg

        matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        pass
    if not FFMpegWriter.isAvailable():
        raise DigitnetError(
            "saving .mp4 needs ffmpeg: pip install 'digitnet[video]' (or install ffmpeg), "
            "or save a .gif instead"
        )


class _Sink:
    """Collects frames into a temporary file beside ``path``; :meth:`close` renames it into place."""

    def __init__(self, path: Path, dash: Dashboard, interval_ms: int):
        self.path, self.dash, self.interval_ms = path, dash, int(interval_ms)
        self.tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(3)}.part{path.suffix}")
        self.frames, self.writer, self.image = [], None, None

    def close(self):
        try:
            self.finish()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise DigitnetError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def discard(self):
        if self.tmp.exists():
            self.tmp.unlink()


class _Png(_Sink):
    def add(self):
        self.image = self.dash.rgba()

    def finish(self):
        from PIL import Image

        Image.fromarray(self.image).save(self.tmp, format="PNG")


class _Gif(_Sink):
    """Frames are drawn at :data:`GIF_DPI` and reduced to 256 colours as they come, so that a long
    recording stays small in memory and on disk."""

    def add(self):
        if not self.frames:
            self.dash.set_dpi(GIF_DPI)
        from PIL import Image

        frame = Image.fromarray(self.dash.rgba()).convert("RGB")
        self.frames.append(
            frame.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        )

    def finish(self):
        first, *rest = self.frames
        first.save(
            self.tmp, format="GIF", save_all=True, append_images=rest, duration=self.interval_ms, loop=0
        )


class _Mp4(_Sink):
    def add(self):
        from matplotlib.animation import FFMpegWriter

        if self.writer is None:
            find_ffmpeg()
            self.dash.set_blit(False)  # the writer grabs frames with a full draw
            self.writer = FFMpegWriter(fps=1000 / max(1, self.interval_ms))
            self.writer.setup(self.dash.fig, str(self.tmp), dpi=style.DPI)
        self.writer.grab_frame()

    def finish(self):
        self.writer.finish()


def _sink(path: Path, dash: Dashboard, interval_ms: int) -> _Sink:
    return {".png": _Png, ".gif": _Gif, ".mp4": _Mp4}[path.suffix.lower()](path, dash, interval_ms)


class LiveTraining(Callback):
    """Show the dashboard while a network trains, or record it into ``save``.

    Parameters
    ----------
    images, labels : test images ``(n, 784)`` (pixel values 0-255) and labels, shown one per frame
    normalizer : the :class:`~digitnet.data.Normalizer` the network's inputs go through
    class_names : list of str
    save : path, optional
        Record into this ``.gif``/``.mp4``/``.png`` instead of opening a window.
    frames : int, default 100
        Frames of a recording, spread evenly over the training.
    interval_ms : int, default 200
        Shortest time between two window updates (training goes on between them).
    """

    def __init__(
        self,
        images,
        labels,
        normalizer,
        class_names,
        save=None,
        frames: int = 100,
        interval_ms: int = 200,
        title: str = "digitnet: training",
    ):
        self.images, self.labels = np.asarray(images), np.asarray(labels)
        self.normalizer, self.class_names = normalizer, list(class_names)
        self.save = Path(save) if save else None
        self.frames, self.interval = max(1, int(frames)), interval_ms / 1000
        self.title = title
        self.dash = self.sink = None
        self.shown = 0
        self.closed = False
        if self.save:
            check_output(self.save)
        else:
            style.use_backend(window=True)  # fail now, before training, when there is no display

    def on_train_begin(self, state):
        from digitnet.modelfile import Classifier, architecture_of

        clf = Classifier(state.model, self.normalizer, self.class_names, architecture_of(state.model))
        fig = None if self.save else window_figure(training=True)
        self.dash = Dashboard(clf, self.images, self.labels, fig=fig, training=True, title=self.title)
        self.every = max(1, (state.epochs * state.batches) // self.frames)
        self.ends = []
        self.last = 0.0
        if self.save:
            self.sink = _sink(self.save, self.dash, 100)
            self.recorded = 0
        else:
            import matplotlib.pyplot as plt

            fig.canvas.mpl_connect("key_press_event", self._on_key)
            fig.canvas.mpl_connect("close_event", lambda event: setattr(self, "closed", True))
            plt.show(block=False)

    def _on_key(self, event):
        if event.key == "q":
            import matplotlib.pyplot as plt

            plt.close(self.dash.fig)

    def _frame(self, state):
        self.dash.show(self.shown % len(self.images))
        self.shown += 1
        self.dash.show_history(state.history, state.epoch, state.epochs, self.ends)
        if self.sink is not None:
            if self.save.suffix.lower() != ".png" or self.recorded == 0:
                self.sink.add()
                self.recorded += 1
        elif not self.closed:
            self.dash.render()
            self.dash.fig.canvas.flush_events()

    def on_batch_end(self, state):
        if self.sink is not None:
            if state.iteration % self.every == 0 and self.recorded < self.frames:
                self._frame(state)
        elif not self.closed and time.perf_counter() - self.last >= self.interval:
            self._frame(state)
            self.last = time.perf_counter()

    def on_epoch_end(self, state):
        self.ends.append(state.iteration)

    def on_train_end(self, state):
        if self.sink is not None:
            try:
                if self.save.suffix.lower() == ".png":
                    self.recorded = 0  # the one frame of a .png is the trained network's
                self._frame(state)
                self.sink.close()
            finally:
                self.sink.discard()
        elif not self.closed:
            self._frame(state)

    def wait(self) -> None:
        """Keep the window open (when there is one) until the user closes it."""
        if self.sink is None and not self.closed:
            import matplotlib.pyplot as plt

            plt.show()


def live_training(
    dataset, normalize: str = "scale", save=None, frames: int = 100, title: str = ""
) -> LiveTraining:
    """The :class:`LiveTraining` view of a run on ``dataset``: its test digits, normalised like the training data."""
    from digitnet.data.loader import Normalizer

    return LiveTraining(
        dataset.x_test,
        dataset.y_test,
        Normalizer(normalize).fit(dataset.x_train),
        dataset.class_names,
        save=save,
        frames=frames,
        title=title or f"digitnet: training on {dataset.name}",
    )
