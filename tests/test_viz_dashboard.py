"""The live seven-panel view, rendered headless: its panels, the numbers it draws, its keys, its blitting."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backend_bases import KeyEvent
from PIL import Image

from digitnet import metrics, nn
from digitnet.data.datasets import Dataset
from digitnet.modelfile import Classifier, architecture_of
from digitnet.presets import preset
from digitnet.training import train
from digitnet.viz.dashboard import Dashboard, layer_activity
from digitnet.viz.live import LiveTraining, Player


@pytest.fixture(scope="module")
def clf(mnist) -> Classifier:
    small = Dataset(
        "mnist",
        mnist.class_names,
        mnist.x_train[:3000],
        mnist.y_train[:3000],
        mnist.x_test[:500],
        mnist.y_test[:500],
        source="slice",
    )
    result = train(preset("adam-128-64", epochs=1, val_fraction=0.0), small)
    return Classifier(result.model, result.normalizer, small.class_names, architecture_of(result.model))


@pytest.fixture
def dash(clf, mnist) -> Dashboard:
    return Dashboard(clf, mnist.x_test[:300], mnist.y_test[:300], title="test")


def test_seven_panels_with_the_numbers_of_the_model(dash, clf, mnist):
    assert len(dash.fig.axes) == 7
    n = 40
    for i in range(n):
        state = dash.show(i)
    x, y = mnist.x_test[:n], mnist.y_test[:n].astype(int)
    proba = clf.predict_proba(x)  # the ordinary batched path
    cm = metrics.confusion_matrix(y, proba.argmax(1), 10)
    assert np.array_equal(state["confusion"], cm) and state["seen"] == n
    assert dash.cm_title.get_text() == f"Seen {n}: running accuracy {100 * np.trace(cm) / n:.1f}%"
    drawn = np.array([[int(t.get_text() or 0) for t in row] for row in dash.cm_text])
    assert np.array_equal(drawn, cm)
    last = n - 1
    assert np.allclose([b.get_height() for b in dash.bars], 100 * proba[last], atol=1e-3)
    pred = int(proba[last].argmax())
    assert (
        dash.digit_title.get_text() == f"true {y[last]} → predicted {pred} ({100 * proba[last, pred]:.1f}%)"
    )
    assert np.array_equal(dash.digit.get_array(), x[last].reshape(28, 28))
    conf = dash.conf_line.get_ydata()
    assert len(conf) == n and np.allclose(conf, 100 * proba.max(1), atol=1e-3)
    w = clf.model.layers[-1].weight.data[:, pred]
    assert sum(b.get_height() for b in dash.hist_bars) == len(w) == 64
    assert dash.hist_title.get_text().startswith(f"64 weights into output {pred}")
    means = [b.get_height() for b in dash.mean_bars]
    assert np.isclose(means[-1], clf.logits(x[last:])[0].mean(), atol=1e-4)


def test_activity_matches_the_forward_pass_and_leaves_training_caches_alone(clf, mnist):
    x = clf.prepare(mnist.x_test[:1])
    relu = clf.model.layers[1]
    relu._out = marker = np.zeros((3, 3))
    acts = layer_activity(clf.model, x)
    assert relu._out is marker  # the training step's cache is untouched
    assert [a.shape for a in acts] == [(784,), (128,), (64,), (10,)]
    assert np.allclose(acts[-1], clf.logits(mnist.x_test[:1])[0], atol=1e-5)
    h1 = np.maximum(x @ clf.model.layers[0].weight.data + clf.model.layers[0].bias.data, 0)[0]
    assert np.allclose(acts[1], h1)


def test_the_network_panel_shows_the_most_active_units(dash, clf, mnist):
    state = dash.show(5)
    hidden1 = state["activity"][1]
    labels = [t.get_text() for t in dash.node_labels[1]]
    assert labels == [f"#{u}" for u in np.argsort(-hidden1, kind="stable")[:12]]
    assert [t.get_text() for t in dash.node_labels[-1]] == list("0123456789")
    assert len(dash.node_labels[0]) == 15
    widths = np.asarray(dash.edges.get_linewidths())
    assert len(widths) == 15 * 12 + 12 * 12 + 12 * 10 and widths.max() == pytest.approx(3.8)


def test_blitted_frames_equal_full_redraws(dash):
    assert dash.blit
    for i in range(12):  # frames past the first: only the changing artists are drawn
        dash.show(i)
        fast = dash.rgba()
    dash.set_blit(False)
    full = dash.rgba()
    differ = np.any(fast != full, axis=2)
    assert differ.sum() == 0, f"{differ.sum()} pixels differ"
    saved = io.BytesIO()  # as the window's save button does
    dash.fig.savefig(saved, format="png", dpi=dash.fig.dpi)
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGBA")), full)
    dash.set_blit(True)
    dash.show(12)
    after_save = dash.rgba()  # a full draw elsewhere: the background is redone
    dash.set_blit(False)
    assert np.array_equal(after_save, dash.rgba())


def test_frames_are_blitted_and_the_activation_bars_stay_on_their_axis(dash):
    full_draws, tallest = [], []
    dash.fig.canvas.mpl_connect("draw_event", full_draws.append)
    for i in range(100):
        dash.show(i)
        dash.render()
        low, top = dash.ax_layers.get_ylim()
        heights = [b.get_height() for b in (*dash.mean_bars, *dash.max_bars)]
        tallest.append(max(heights))
        assert low <= min(heights) and max(heights) <= top
        assert max(tallest[-50:]) > top / 3, "the recent bars are not lost in a needlessly tall axis"
    # the first frame draws the background; the axes rescale now and then, not with every digit
    assert len(full_draws) <= 5, f"{len(full_draws)} full redraws in 100 frames"


def test_keys_pause_step_and_quit(dash):
    player = Player(dash, [3, 4, 5, 6], interval_ms=50)
    canvas = dash.fig.canvas

    def press(key):
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))

    player.tick()
    assert dash.state["index"] == 3 and not player.paused
    press(" ")
    assert player.paused
    player.tick()
    assert dash.state["index"] == 3  # paused: the timer does nothing
    press("right")
    assert dash.state["index"] == 4 and player.paused  # → steps one
    press(" ")
    player.tick()
    assert dash.state["index"] == 5 and not player.paused
    closed = []
    player.close = lambda: closed.append(True)
    press("q")
    assert closed == [True]


def test_any_depth_and_width(mnist):
    for sizes in ([784, 16, 10], [784, 2048, 10], [784, 64, 48, 32, 24, 16, 10]):
        model = nn.mlp(sizes, rng=1)
        from digitnet.data.loader import Normalizer

        c = Classifier(model, Normalizer("scale"), list("0123456789"), architecture_of(model))
        d = Dashboard(c, mnist.x_test[:5], mnist.y_test[:5])
        d.show(0)
        image = d.rgba()
        assert image.shape == (860, 1600, 4) and image[..., :3].std() > 20
        assert len(d.node_labels) == len(sizes)
        assert [len(col) for col in d.node_labels] == [15] + [min(12, s) for s in sizes[1:-1]] + [10]


def test_live_training_records_the_curves_growing(mnist, tmp_path):
    small = Dataset(
        "mnist",
        mnist.class_names,
        mnist.x_train[:2000],
        mnist.y_train[:2000],
        mnist.x_test[:200],
        mnist.y_test[:200],
        source="slice",
    )
    from digitnet.data.loader import Normalizer

    live = LiveTraining(
        small.x_test,
        small.y_test,
        Normalizer("scale"),
        small.class_names,
        save=tmp_path / "live.gif",
        frames=2,
    )
    result = train(preset("adam-128-64", epochs=2), small, callbacks=[live])
    assert len(live.dash.fig.axes) == 8
    loss = live.dash.loss_line.get_ydata()
    assert np.allclose(loss, result.history.loss)  # the last frame has the whole curve
    assert np.allclose(live.dash.val_line.get_ydata(), [e["val_loss"] for e in result.history.epochs])
    gif = Image.open(tmp_path / "live.gif")
    assert gif.n_frames == 3 and gif.size == (1152, 691)  # 2 during training, 1 at the end
    assert [p.name for p in tmp_path.iterdir()] == ["live.gif"]  # no temporary file left behind
