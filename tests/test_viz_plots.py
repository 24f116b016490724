"""Every plot from the Python API, checked for what it draws: the numbers on it are the model's real ones.

One network is trained once for the module on a real slice of MNIST (5,400
training images, 2 epochs, with diagnostics; 1,000 test images); each test builds a plot and reads
the figure back: its axes, the data of its lines and bars, the text of its titles
and cells, against numbers computed here independently. (test_viz_cli.py checks the saved images.)
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from digitnet import metrics, nn
from digitnet.data.datasets import Dataset
from digitnet.diagnostics import Diagnostics
from digitnet.modelfile import Classifier, architecture_of
from digitnet.presets import preset
from digitnet.training import train
from digitnet.viz import plots, results
from digitnet.viz.robustness_plots import damage, robustness_curves
from digitnet.viz.run import Run


@pytest.fixture(scope="module")
def run(mnist, tmp_path_factory) -> Run:
    small = Dataset(
        "mnist",
        mnist.class_names,
        mnist.x_train[:6000],
        mnist.y_train[:6000],
        mnist.x_test[:1000],
        mnist.y_test[:1000],
        source="first 6,000/1,000 of MNIST",
    )
    diag = Diagnostics()
    result = train(preset("adam-128-64", epochs=2), small, callbacks=[diag])
    clf = Classifier(
        result.model,
        result.normalizer,
        small.class_names,
        architecture_of(result.model),
        {"metrics": result.metrics, "config": result.config.to_dict()},
    )
    return Run(
        clf, tmp_path_factory.mktemp("run"), result.history, diag.initial_weights, small, name="test run"
    )


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_curves_draw_the_history(run, tmp_path):
    fig = plots.make("curves", run)
    main = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in main] == ["Loss (cross-entropy)", "Accuracy", "Learning rate"]
    h = run.history
    per_batch = main[0].lines[0].get_ydata()
    assert len(per_batch) == len(h.loss) == 2 * 85 and np.allclose(per_batch, h.loss)
    assert np.allclose(main[0].lines[2].get_ydata(), [e["val_loss"] for e in h.epochs])
    assert np.allclose(main[1].lines[2].get_ydata(), [100 * e["val_accuracy"] for e in h.epochs])
    assert np.allclose(main[2].lines[0].get_ydata(), h.lr)
    assert (
        f"test accuracy {100 * run.classifier.meta['metrics']['test_accuracy']:.2f}%"
        in fig._suptitle.get_text()
    )
    assert main[0].get_yscale() == "log"


def test_compared_runs_past_the_colours_differ_in_marker_and_line():
    """Runs of one epoch draw a point each: past the seven colours, the marker tells them apart."""
    from digitnet.viz.training_plots import compare_curves

    epoch = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.9}
    names = [f"run {k}" for k in range(9)]
    fig = compare_curves([{"epochs": [epoch]} for _ in names], names)
    lines = fig.axes[1].lines
    assert len(lines) == 9
    styles = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(styles) == 9
    assert lines[0].get_color() == lines[7].get_color() and lines[0].get_marker() != lines[7].get_marker()


def test_confusion_counts_and_accuracy_are_the_models(run, tmp_path):
    pred = run.classifier.predict(run.x_test)  # an independent pass over the test set
    cm = metrics.confusion_matrix(run.y_test, pred, 10)
    fig = plots.make("confusion", run)
    ax, side = fig.axes[0], fig.axes[1]
    acc = np.trace(cm) / cm.sum()
    assert f"accuracy {100 * acc:.2f}% ({np.trace(cm):,} of {cm.sum():,} right)" in ax.get_title()
    drawn = {}
    for t in ax.texts:
        x, y = t.get_position()
        if t.get_fontweight() == "bold" or t.get_text() == "0":
            drawn[(round(y), round(x))] = int(t.get_text().replace(",", ""))
    assert drawn == {(i, j): int(cm[i, j]) for i in range(10) for j in range(10)}
    shares = [t.get_text() for t in ax.texts if t.get_text().endswith("%")]
    assert f"{100 * cm[0, 0] / cm[0].sum():.1f}%" in shares
    recall = [bar.get_width() for bar in side.patches]
    assert np.allclose(recall, 100 * np.diag(cm) / cm.sum(axis=1))


def test_misclassified_are_real_mistakes_most_confident_first(run):
    fig = plots.make("misclassified", run)
    proba = run.classifier.predict_proba(run.x_test)
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert len(shown) == 25 and len(fig.axes) == 25
    confidences = []
    for ax in shown:
        true, predicted, p = re.fullmatch(r"(\d) → (\d) \((\d+)%\)", ax.get_title()).groups()
        i = int(ax.get_xlabel().split("#")[1])
        assert int(true) == run.y_test[i] and int(predicted) == proba[i].argmax() != run.y_test[i]
        assert int(p) == round(100 * proba[i].max())
        assert np.array_equal(ax.images[0].get_array(), run.x_test[i].reshape(28, 28))
        confidences.append(proba[i].max())
    assert confidences == sorted(confidences, reverse=True)
    n_wrong = int(np.sum(proba.argmax(1) != run.y_test))
    assert f"({n_wrong:,} of 1,000 test images are misclassified)" in fig._suptitle.get_text()


@pytest.mark.parametrize("k", [0, 3, 7])
def test_misclassified_shows_as_many_mistakes_as_there_are(run, k):
    """Fewer than 25 mistakes, not a multiple of 5 (an accurate model on a small test set): it was a
    ValueError from zip() in `plot` and `report`."""
    proba = run.classifier.predict_proba(run.x_test)
    wrong = np.flatnonzero(proba.argmax(1) != run.y_test)
    keep = np.sort(np.concatenate([wrong[:k], np.flatnonzero(proba.argmax(1) == run.y_test)[:100]]))
    fig = results.misclassified(run.x_test[keep], run.y_test[keep], proba[keep])
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert len(shown) == k and len(fig.axes) == 5 * max(1, -(-k // 5))
    shown = {0: "No mistakes", 3: "All 3 mistakes", 7: "All 7 mistakes"}[k]
    assert fig._suptitle.get_text() == f"{shown} ({k} of {len(keep)} test images are misclassified)"


def test_predictions_bars_are_the_probabilities(run):
    fig = plots.make("predictions", run)
    bars = [ax for ax in fig.axes if ax.get_title().startswith("predicted")]
    logit_axes = [ax for ax in fig.axes if ax.get_title() == "logits"]
    assert len(bars) == len(logit_axes) == 8
    proba, logits = run.classifier.predict_proba(run.x_test), run.classifier.logits(run.x_test)
    wrong = 0
    for ax, lax in zip(bars, logit_axes, strict=True):
        image_ax = fig.axes[fig.axes.index(ax) - 1]
        i = int(re.match(r"#(\d+)", image_ax.get_title()).group(1))
        heights = [p.get_height() for p in ax.patches]
        assert np.allclose(heights, 100 * proba[i], atol=1e-4)
        assert sum(p.get_height() for p in lax.patches) == 10  # a histogram of the ten logits
        assert np.isclose(lax.lines[0].get_xdata()[0], logits[i].max(), atol=1e-4)
        wrong += proba[i].argmax() != run.y_test[i]
    assert wrong == 2  # a quarter are mistakes


def test_weights_show_every_first_layer_unit_and_every_matrix(run, tmp_path):
    fig = plots.make("weights", run)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 1 + 3  # the mosaic, three matrices
    mosaic = images[0].images[0].get_array()
    w1 = run.classifier.model.layers[0].weight.data
    assert np.allclose(mosaic[:28, :28], w1[:, 0].reshape(28, 28))  # unit 0, top left
    assert np.allclose(mosaic[:28, 29:57], w1[:, 1].reshape(28, 28))  # unit 1 beside it, after a gap
    assert "all 128 units" in images[0].get_title()
    norm = images[0].images[0].norm
    assert norm.vmin == -norm.vmax  # centred on zero
    assert [ax.get_title() for ax in images[1:]] == [
        "layer 1: 784 → 128",
        "layer 2: 128 → 64",
        "layer 3: 64 → 10",
    ]
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 4


def test_distributions_compare_with_the_initial_weights(run):
    fig = plots.make("distributions", run)
    assert len(fig.axes) == 3
    for ax, (name, w0) in zip(fig.axes, run.initial_weights.items(), strict=True):
        now = dict(run.classifier.model.named_parameters())[name].data
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0] == f"initial  μ={round(w0.mean(), 3) + 0:+.3f}  σ={w0.std():.3f}"
        assert labels[1] == f"trained μ={round(now.mean(), 3) + 0:+.3f}  σ={now.std():.3f}"
        assert not np.allclose(w0, now)


def test_gradients_and_dead_units_per_epoch(run, tmp_path):
    fig = plots.make("gradients", run)
    grad_ax, dead_ax = fig.axes
    assert grad_ax.get_yscale() == "log" and len(grad_ax.lines) == 3 and len(dead_ax.lines) == 2
    for k, line in enumerate(grad_ax.lines, start=1):
        assert np.allclose(line.get_ydata(), [e[f"grad_norm_{k}"] for e in run.history.epochs])
    for k, line in enumerate(dead_ax.lines, start=1):
        assert np.allclose(line.get_ydata(), [100 * e[f"inactive_{k}"] for e in run.history.epochs])


def test_damage_does_what_it_says(mnist):
    x = mnist.x_test[:200]
    ink = x.reshape(-1, 28, 28).astype(float)
    cols = np.arange(28)
    centre_x = (ink.sum(1) * cols).sum(1) / ink.sum((1, 2))
    moved = damage(x, "shift", 3, np.random.default_rng(0)).reshape(-1, 28, 28)
    dx = (moved.sum(1) * cols).sum(1) / moved.sum((1, 2)) - centre_x
    dy = (moved.sum(2) * cols).sum(1) / moved.sum((1, 2)) - (ink.sum(2) * cols).sum(1) / ink.sum((1, 2))
    steps = np.round(np.abs(dx) + np.abs(dy))
    assert np.mean(steps == 3) > 0.95  # every digit moved 3 pixels
    turned = damage(x, "rotation", 90).reshape(-1, 28, 28)
    assert np.allclose(turned, np.rot90(ink, 1, axes=(1, 2)), atol=1e-3)  # 90° counter-clockwise
    noisy = damage(x, "noise", 0.3, np.random.default_rng(0))
    middle = (x > 80) & (x < 170)  # pixels the clipping spares
    assert np.std(noisy[middle] - x[middle]) == pytest.approx(0.3 * 255, rel=0.15)
    assert np.array_equal(damage(x, "noise", 0), x) and noisy.min() >= 0 and noisy.max() <= 255


def test_robustness_curves_fall_as_damage_grows(run, tmp_path):
    curves = robustness_curves(run.classifier, run.x_test, run.y_test, n=2000)  # more than there are: all
    clean = float(np.mean(run.classifier.predict(run.x_test) == run.y_test))
    assert curves["noise"]["levels"][0] == 0 and curves["noise"]["levels"][-1] == 0.6
    assert curves["rotation"]["levels"][0] == -45 and curves["rotation"]["levels"][-1] == 45
    assert curves["shift"]["levels"] == list(range(7))
    assert curves["noise"]["accuracy"][0] == pytest.approx(clean)
    assert (
        curves["rotation"]["accuracy"][6] == pytest.approx(clean) and curves["shift"]["accuracy"][0] == clean
    )
    for kind in ("noise", "shift"):
        assert curves[kind]["accuracy"][-1] < clean - 0.3
    assert max(curves["rotation"]["accuracy"][0], curves["rotation"]["accuracy"][-1]) < clean - 0.3
    fig = plots.robustness_plots.robustness(run.classifier, run.x_test, run.y_test, curves=curves)
    assert "on 1,000 test digits" in fig._suptitle.get_text()
    curve_axes = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title() for ax in curve_axes] == ["Gaussian noise", "Rotation", "Shift"]
    for ax, kind in zip(curve_axes, ("noise", "rotation", "shift"), strict=True):
        assert np.allclose(ax.lines[0].get_ydata(), 100 * np.array(curves[kind]["accuracy"]))


def test_dataset_counts_and_average_digits(run):
    fig = plots.make("dataset", run)
    counts_ax = next(ax for ax in fig.axes if ax.get_title() == "Images per class")
    heights = [p.get_height() for p in counts_ax.patches]
    assert heights[:10] == list(np.bincount(run.dataset.y_train, minlength=10))
    assert heights[10:] == list(np.bincount(run.dataset.y_test, minlength=10))
    means = [ax for ax in fig.axes if ax.get_title() in list("0123456789")]
    assert len(means) == 10
    for ax in means:
        c = int(ax.get_title())
        expected = run.dataset.x_train[run.dataset.y_train == c].mean(axis=0).reshape(28, 28)
        assert np.allclose(ax.images[0].get_array(), expected)


# 4, 5 and 7 weight matrices leave empty places in the grid of panels (a ValueError from zip() before)
@pytest.mark.parametrize(
    "hidden", [(16,), (2048,), (32, 16, 8), (32, 16, 8, 8), (64, 48, 32, 24, 16), (16,) * 6]
)
def test_any_depth_and_width_plots(hidden, mnist):
    model = nn.mlp([784, *hidden, 10], rng=0)
    initial = {name: p.data.copy() for name, p in model.named_parameters() if name.endswith("weight")}
    model.layers[0].weight.data += 0.01
    clf = Classifier(model, nn_normalizer(), list("0123456789"), architecture_of(model))
    fig = plots.weight_plots.weights(clf)
    title = next(ax.get_title() for ax in fig.axes if ax.images)
    assert ("the 128 strongest of 2048 units" if hidden == (2048,) else f"all {hidden[0]} units") in title
    assert sum(1 for ax in fig.axes if ax.images) == 1 + len(hidden) + 1
    fig = plots.weight_plots.distributions(clf, initial)
    assert sum(1 for ax in fig.axes if ax.get_title().startswith("layer ")) == len(hidden) + 1
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    fig = plots.results.predictions(x, y, clf.predict_proba(x), clf.logits(x))
    assert len([ax for ax in fig.axes if ax.get_title() == "logits"]) == 8


def nn_normalizer():
    from digitnet.data.loader import Normalizer

    return Normalizer("scale")


def test_plot_run_writes_files_and_refuses_what_it_cannot_draw(run, tmp_path):
    written, skipped = plots.plot_run(
        run, which=["gradients", "weights"], out=tmp_path / "out", formats=("png", "svg")
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gradients.png",
        "gradients.svg",
        "weights.png",
        "weights.svg",
    ]
    assert (tmp_path / "out" / "weights.svg").read_text().lstrip().startswith("<?xml")
    bare = Run(run.classifier, tmp_path, dataset=None)
    with pytest.raises(Exception, match="needs the training history"):
        plots.plot_run(bare, which=["curves"], out=tmp_path)
    _, skipped = plots.plot_run(bare, which=None, out=tmp_path / "bare")
    assert set(skipped) == {
        "curves",
        "gradients",
        "confusion",
        "misclassified",
        "predictions",
        "robustness",
        "dataset",
    }
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["distributions.png", "weights.png"]
