"""Splits, normalisation and the DataLoader."""

import json
import time

import numpy as np
import pytest

from digitnet.data import DataLoader, Normalizer, train_val_split
from digitnet.errors import ConfigError


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize("fraction", [0.1, 1 / 6, 0.25])
def test_split_is_stratified_disjoint_and_complete(mnist, fraction):
    y = mnist.y_train
    ids = np.arange(len(y))
    a_ids, a_y, b_ids, b_y = train_val_split(ids, y, fraction, seed=0)
    assert len(b_ids) == round(fraction * len(y))
    assert np.intersect1d(a_ids, b_ids).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([a_ids, b_ids])), ids)
    np.testing.assert_array_equal(a_y, y[a_ids])
    np.testing.assert_array_equal(b_y, y[b_ids])
    assert np.abs(np.bincount(b_y, minlength=10) - fraction * np.bincount(y, minlength=10)).max() <= 1
    assert np.all(np.diff(a_ids) > 0) and np.all(np.diff(b_ids) > 0)  # original order kept


def test_split_seeds(mnist):
    x, y = mnist.x_train[:5000], mnist.y_train[:5000]
    first = train_val_split(x, y, 0.2, seed=7)
    again = train_val_split(x, y, 0.2, seed=7)
    other = train_val_split(x, y, 0.2, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[2], other[2])
    from_generator = train_val_split(x, y, 0.2, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(from_generator[3], first[3])


def test_split_of_zero_is_empty(mnist):
    x, y, xv, yv = train_val_split(mnist.x_test, mnist.y_test, 0.0, seed=0)
    assert xv.shape == (0, 784) and yv.shape == (0,) and len(x) == 10000


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_split_fraction_out_of_range(mnist, fraction):
    with pytest.raises(ConfigError, match="at least 0 and below 1"):
        train_val_split(mnist.x_test, mnist.y_test, fraction, seed=0)


# --------------------------------------------------------------------------- normalisation
def test_scale_maps_0_255_to_0_1_exactly():
    x = np.array([[0, 1, 128, 255]], np.uint8)
    out = Normalizer().fit(x)(x)
    assert out.dtype == np.float32 and out[0, 0] == 0 and out[0, 3] == 1
    np.testing.assert_allclose(out, x / 255, rtol=1e-7)
    assert Normalizer()(x, dtype=np.float64).dtype == np.float64
    assert x[0, 3] == 255  # the input is untouched


def test_standardize_fits_mnist_statistics(mnist):
    norm = Normalizer("standardize").fit(mnist.x_train)
    assert norm.mean == pytest.approx(0.1307, abs=1e-4)
    assert norm.std == pytest.approx(0.3081, abs=1e-4)
    exact = Normalizer("standardize").fit(mnist.x_test)
    ref = mnist.x_test.astype(np.float64) / 255
    assert exact.mean == pytest.approx(ref.mean(), rel=1e-12) and exact.std == pytest.approx(ref.std(), rel=1e-9)
    out = norm(mnist.x_train[:20000])
    assert out.dtype == np.float32
    assert abs(out.mean()) < 0.01 and abs(out.std() - 1) < 0.01
    np.testing.assert_allclose(out[:5], (mnist.x_train[:5] / 255 - norm.mean) / norm.std, rtol=1e-5, atol=1e-5)


def test_normalizer_serialises_to_a_small_dict(mnist):
    norm = Normalizer("standardize").fit(mnist.x_test)
    d = json.loads(json.dumps(norm.to_dict()))
    assert d == {"kind": "standardize", "mean": norm.mean, "std": norm.std}
    back = Normalizer.from_dict(d)
    np.testing.assert_array_equal(back(mnist.x_test[:10]), norm(mnist.x_test[:10]))
    assert Normalizer.from_dict({"kind": "scale"}).to_dict() == {"kind": "scale"}


def test_normalizer_mistakes():
    with pytest.raises(ConfigError, match="unknown normalisation 'minmax'"):
        Normalizer("minmax")
    with pytest.raises(ConfigError, match="fit on the training images first"):
        Normalizer("standardize")(np.zeros((1, 784), np.uint8))
    with pytest.raises(ConfigError, match="bad normalisation settings"):
        Normalizer.from_dict({"kind": "standardize", "mean": 0.1})


# --------------------------------------------------------------------------- DataLoader
def ids_loader(n=1000, **kw):
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return DataLoader(x, np.arange(n) % 10, **kw)


def test_every_sample_once_per_epoch_reshuffled():
    loader = ids_loader(1000, batch_size=64, rng=0)
    assert len(loader) == 16
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 16 and [len(xb) for xb, _ in batches][-1] == 1000 - 15 * 64
        seen = np.concatenate([xb[:, 0] for xb, _ in batches]).astype(int)
        np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
        np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), seen % 10)
        epochs.append(seen)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(1000))


def test_drop_last():
    loader = ids_loader(1000, batch_size=64, drop_last=True, rng=0)
    assert len(loader) == 15
    batches = list(loader)
    assert len(batches) == 15 and all(len(xb) == 64 for xb, _ in batches)
    assert len(set(np.concatenate([xb[:, 0] for xb, _ in batches]).tolist())) == 960
    assert len(ids_loader(1024, batch_size=64, drop_last=True)) == len(ids_loader(1024, batch_size=64)) == 16


def test_same_seed_same_order_and_generators():
    def order(loader, epochs=3):
        return [np.concatenate([xb[:, 0] for xb, _ in loader]) for _ in range(epochs)]
    a, b = order(ids_loader(rng=5, batch_size=32)), order(ids_loader(rng=5, batch_size=32))
    c = order(ids_loader(rng=np.random.default_rng(5), batch_size=32))
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    d = order(ids_loader(rng=6, batch_size=32))
    assert not np.array_equal(a[0], d[0])


def test_no_shuffle_keeps_order_and_transform_sees_the_rng():
    calls = []

    def flip(xb, rng):
        calls.append(rng)
        xb *= -1
        return xb

    gen = np.random.default_rng(0)
    loader = ids_loader(100, batch_size=30, shuffle=False, rng=gen, transform=flip)
    seen = np.concatenate([xb[:, 0] for xb, _ in loader])
    np.testing.assert_array_equal(seen, -np.arange(100))
    assert len(calls) == 4 and all(r is gen for r in calls)
    assert loader.x[5, 0] == 5  # the transform changed copies, not the data


def test_loader_mistakes():
    with pytest.raises(ConfigError, match="batch size"):
        ids_loader(batch_size=0)
    with pytest.raises(ConfigError, match="batch size"):
        ids_loader(batch_size=2.5)
    with pytest.raises(ConfigError, match="10 inputs but 9 labels"):
        DataLoader(np.zeros((10, 2)), np.zeros(9), batch_size=4)


def test_an_mnist_epoch_runs_at_numpy_speed(mnist):
    x = Normalizer()(mnist.x_train)
    loader = DataLoader(x, mnist.y_train, batch_size=64, rng=0)
    assert len(loader) == 938
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        n = sum(len(yb) for _, yb in loader)
        best = min(best, time.perf_counter() - start)
    assert n == 60000
    assert best < 0.15, f"one epoch of batches took {best:.3f} s"
