"""The diagnostics callback: gradient norms, dead units and initial weights, recorded while training on MNIST."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import nn
from digitnet.data.loader import DataLoader
from digitnet.diagnostics import Diagnostics
from digitnet.training import Callback, fit


class EveryNorm(Callback):
    """Independent record: the norm of each weight gradient after every batch, by numpy.linalg."""

    def __init__(self):
        self.norms = []

    def on_batch_end(self, state):
        self.norms.append(
            [
                np.linalg.norm(layer.weight.grad)
                for layer in state.model.layers
                if isinstance(layer, nn.Linear)
            ]
        )


@pytest.fixture(scope="module")
def data(mnist):
    x = mnist.x_train[:2560].astype(np.float32) / 255
    return x, mnist.y_train[:2560].astype(np.intp)


def fit_with(data, model, diag, epochs=2, lr=1e-3):
    x, y = data
    every = EveryNorm()
    history = fit(
        model,
        nn.Adam(model.parameters(), lr=lr),
        DataLoader(x, y, 64, rng=0),
        epochs,
        callbacks=[diag, every],
    )
    return history, np.array(every.norms)


def test_norms_are_the_mean_over_the_sampled_batches(data):
    model = nn.mlp([784, 64, 32, 10], rng=0)
    diag = Diagnostics(samples=8)  # 40 batches an epoch: every 5th
    history, norms = fit_with(data, model, diag)
    assert diag.stride == 5
    for e, record in enumerate(history.epochs):
        sampled = norms[e * 40 : (e + 1) * 40][::5]  # iterations 1, 6, 11, ... of the run
        for k in range(3):
            assert record[f"grad_norm_{k + 1}"] == pytest.approx(sampled[:, k].mean(), rel=1e-5)
        assert record["iteration"] == 40 * (e + 1)
    info = history.extra["diagnostics"]
    assert info["layers"] == ["784→64", "64→32", "32→10"] and info["sampled_batches_per_epoch"] == 8
    assert "grad_norm_3" in history.epochs_csv().splitlines()[0]


def test_dead_units_are_counted(data):
    model = nn.mlp([784, 64, 32, 10], rng=0)
    model.layers[0].bias.data[:16] = -1e4  # 16 units that can never fire
    diag = Diagnostics()
    history, _ = fit_with(data, model, diag, epochs=1, lr=1e-4)
    first = history.epochs[0]["inactive_1"]
    assert 16 / 64 <= first < 20 / 64  # those, and hardly any other
    assert history.epochs[0]["inactive_2"] < 0.1
    healthy = Diagnostics()
    history, _ = fit_with(data, nn.mlp([784, 64, 32, 10], rng=0), healthy, epochs=1)
    assert history.epochs[0]["inactive_1"] < 0.1


def test_saturated_sigmoid_units_count_as_inactive(data):
    model = nn.mlp([784, 32, 10], activation="sigmoid", rng=0)
    model.layers[0].bias.data[:8] = 50.0  # stuck at 1
    history, _ = fit_with(data, model, Diagnostics(), epochs=1, lr=1e-4)
    assert history.epochs[0]["inactive_1"] == pytest.approx(8 / 32)
    assert "saturated" in history.extra["diagnostics"]["inactive"]


def test_initial_weights_are_kept_before_the_first_step(data):
    model = nn.mlp([784, 32, 10], rng=3)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    diag = Diagnostics()
    fit_with(data, model, diag, epochs=1)
    assert sorted(diag.initial_weights) == ["0.weight", "2.weight"]
    for name, w in diag.initial_weights.items():
        assert np.array_equal(w, before[name])
        assert not np.array_equal(w, dict(model.named_parameters())[name].data)  # training moved them
