"""The fit loop on real MNIST: it learns, it is reproducible, it stops when it should."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from digitnet import nn
from digitnet.data.datasets import Dataset
from digitnet.data.loader import DataLoader
from digitnet.errors import ConfigError
from digitnet.presets import PRESETS, preset
from digitnet.training import Callback, TrainConfig, TrainingDiverged, fit, train


def subset(ds: Dataset, n_train: int, n_test: int) -> Dataset:
    """The first ``n_train``/``n_test`` real images, keeping everything else."""
    return dataclasses.replace(
        ds,
        x_train=ds.x_train[:n_train],
        y_train=ds.y_train[:n_train],
        x_test=ds.x_test[:n_test],
        y_test=ds.y_test[:n_test],
    )


def test_short_run_learns_real_digits(mnist):
    config = preset("adam-128-64", epochs=3, seed=1)
    result = train(config, subset(mnist, 12000, 2000))
    # A network that learned nothing scores 10%; three epochs on 12k images reach above 90% (92.5% measured).
    assert result.metrics["test_accuracy"] >= 0.90
    h = result.history
    assert len(h.epochs) == 3 and len(h.loss) == 3 * -(-10800 // 64)
    assert h.epochs[-1]["train_loss"] < h.epochs[0]["train_loss"]
    assert h.epochs[-1]["val_accuracy"] > 0.9
    assert all(e["seconds"] > 0 for e in h.epochs)
    assert result.metrics["n_train"] == 10800 and result.metrics["n_val"] == 1200


def test_same_seed_same_weights_and_other_seed_differs(mnist):
    data = subset(mnist, 3000, 500)
    config = dict(epochs=2, dropout=0.2, hidden=(32,))
    a = train(preset("adam-128-64", seed=7, **config), data).model.state_dict()
    b = train(preset("adam-128-64", seed=7, **config), data).model.state_dict()
    c = train(preset("adam-128-64", seed=8, **config), data).model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_valid_config(name):
    config = preset(name).validate()
    assert config.preset == name
    assert preset(name, epochs=1).epochs == 1


def test_full_batch_gradient_descent_takes_one_step_per_epoch(mnist):
    result = train(preset("gd-l2", epochs=5, hidden=(16,)), subset(mnist, 2000, 200))
    assert len(result.history.loss) == 5
    assert result.history.loss[-1] < result.history.loss[0]


def test_l2_shrinks_the_weights(mnist):
    data = subset(mnist, 3000, 200)
    plain = train(preset("sgd-128", epochs=2, hidden=(32,), activation="relu", init="he", lr=0.05), data)
    l2 = train(
        preset("sgd-128", epochs=2, hidden=(32,), activation="relu", init="he", lr=0.05, l2=300.0), data
    )
    assert np.linalg.norm(l2.model.layers[0].weight.data) < 0.9 * np.linalg.norm(
        plain.model.layers[0].weight.data
    )


def test_divergence_stops_with_advice(mnist):
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        train(preset("adam-128-64", optimizer="sgd", epochs=3, lr=1e6), subset(mnist, 2000, 100))


def test_early_stopping_restores_the_best_weights(mnist):
    data = subset(mnist, 2000, 200)
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, state):
            snapshots[state.epoch] = state.model.state_dict()

    # A high constant learning rate on little data makes the validation loss wander.
    config = preset("adam-128-64", epochs=30, lr=0.01, early_stopping=2, seed=3)
    result = train(config, data, callbacks=[Snapshot()])
    h = result.history
    assert h.stopped_early and len(h.epochs) < 30
    val = [e["val_loss"] for e in h.epochs]
    assert h.best_epoch == int(np.argmin(val)) + 1
    assert len(h.epochs) - h.best_epoch == 2
    best = snapshots[h.best_epoch]
    assert all(np.array_equal(best[k], v) for k, v in result.model.state_dict().items())


def test_callback_can_stop_training(mnist):
    data = subset(mnist, 2000, 100)

    class StopAt(Callback):
        def on_batch_end(self, state):
            if state.iteration == 5:
                state.stop = True

    result = train(preset("adam-128-64", epochs=4, hidden=(16,)), data, callbacks=[StopAt()])
    assert len(result.history.loss) == 5 and len(result.history.epochs) == 1


def test_fit_uses_the_schedule_every_iteration(mnist):
    x = mnist.x_train[:640].astype(np.float32) / 255
    y = mnist.y_train[:640].astype(np.intp)
    model = nn.mlp([784, 8, 10], rng=0)
    opt = nn.SGD(model.parameters(), lr=0.1)
    schedule = nn.make_schedule("cosine", 0.1, epochs=2, iters_per_epoch=10)
    h = fit(model, opt, DataLoader(x, y, 64, rng=0), 2, schedule=schedule)
    assert h.lr == [schedule(i) for i in range(20)]
    assert h.lr[0] == pytest.approx(0.1) and h.lr[-1] < 0.001


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(lr=0), "learning rate"),
        (dict(lr=-1), "learning rate"),
        (dict(batch_size=0), "batch size"),
        (dict(hidden=(0,)), "hidden"),
        (dict(dropout=1.0), "dropout"),
        (dict(epochs=0), "epochs"),
        (dict(val_fraction=1.0), "validation"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(momentum=1.0), "momentum"),
        (dict(early_stopping=2, val_fraction=0), "validation split"),
    ],
)
def test_impossible_settings_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        preset("adam-128-64", **change).validate()


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")


def test_config_round_trips_through_a_dict():
    config = preset("default")
    assert TrainConfig.from_dict(config.to_dict()) == config
