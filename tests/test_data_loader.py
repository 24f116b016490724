"""Splits, normalisation, the DataLoader and its state for resuming."""

import io
import json
import time

import numpy as np
import pytest

from digitnet.data import DataLoader, Normalizer, train_val_split
from digitnet.data.augment import RandomShift
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
    for a, b in zip(first, again, strict=True):
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
    assert exact.mean == pytest.approx(ref.mean(), rel=1e-12) and exact.std == pytest.approx(
        ref.std(), rel=1e-9
    )
    out = norm(mnist.x_train[:20000])
    assert out.dtype == np.float32
    assert abs(out.mean()) < 0.01 and abs(out.std() - 1) < 0.01
    np.testing.assert_allclose(
        out[:5], (mnist.x_train[:5] / 255 - norm.mean) / norm.std, rtol=1e-5, atol=1e-5
    )


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
    for x, y, z in zip(a, b, c, strict=True):
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


# --------------------------------------------------------------------------- DataLoader state
N_STATE, BS_STATE = 10000, 96  # 105 batches an epoch, the last one of 16


@pytest.fixture(scope="module")
def digits(mnist):
    return Normalizer()(mnist.x_train[:N_STATE]), mnist.y_train[:N_STATE]


def shifting_loader(digits, seed, shuffle=True, **kw):
    x, y = digits
    return DataLoader(x, y, batch_size=BS_STATE, shuffle=shuffle, rng=seed, transform=RandomShift(2), **kw)


def through_a_checkpoint(state):
    """Store a loader state as a checkpoint does (the order in an .npz without pickle, the rest as JSON)."""
    buffer = io.BytesIO()
    np.savez(buffer, **({} if state["order"] is None else {"order": state["order"]}))
    text = json.dumps({key: value for key, value in state.items() if key != "order"})
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as z:
        order = z["order"] if "order" in z.files else None
    return {**json.loads(text), "order": order}


def assert_same_batches(got, want):
    assert len(got) == len(want)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(xa, xb, err_msg=f"batch {i}")
        np.testing.assert_array_equal(ya, yb, err_msg=f"batch {i}")


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_loaded_state_resumes_the_epoch_and_the_ones_after_bit_for_bit(digits, shuffle):
    loader = shifting_loader(digits, seed=0, shuffle=shuffle)
    batches = len(loader)
    k = int(0.4 * batches)  # 2.4 epochs in: batch k of the third epoch
    epochs, state = [], None
    for epoch in range(4):
        seen = []
        for i, batch in enumerate(loader):
            seen.append(batch)
            if epoch == 2 and i == k:
                state = loader.state_dict()  # taken while batch k is being used
        epochs.append(seen)
    assert state["position"] == k + 1 and state["n"] == N_STATE and state["batch_size"] == BS_STATE
    if shuffle:
        assert state["order"].dtype == np.int64 and state["order"].shape == (N_STATE,)
        np.testing.assert_array_equal(epochs[2][0][1], digits[1][state["order"][:BS_STATE]])
    else:
        assert state["order"] is None

    resumed = shifting_loader(digits, seed=123, shuffle=shuffle)
    resumed.load_state_dict(through_a_checkpoint(state))
    assert_same_batches(list(resumed), epochs[2][k + 1 :])
    assert_same_batches(list(resumed), epochs[3])
    # Without the state, the same loader would have given other batches.
    other = list(shifting_loader(digits, seed=123, shuffle=shuffle))
    assert not np.array_equal(other[k + 1][0], epochs[2][k + 1][0])


def test_batches_are_those_of_one_permutation_per_epoch_then_the_transform(digits):
    """The order of draws from the generator is fixed: each epoch's permutation, then each batch's transform."""
    x, y = digits
    shift = RandomShift(2)
    rng = np.random.default_rng(7)
    expected = []
    for _ in range(2):
        order = rng.permutation(N_STATE)
        for start in range(0, N_STATE, BS_STATE):
            idx = order[start : start + BS_STATE]
            expected.append((shift(np.take(x, idx, axis=0), rng), np.take(y, idx, axis=0)))
    loader = shifting_loader(digits, seed=7)
    assert_same_batches(list(loader) + list(loader), expected)


def test_state_between_epochs_and_after_an_abandoned_epoch(digits):
    loader = shifting_loader(digits, seed=0)
    state = loader.state_dict()
    assert state["order"] is None and state["position"] == 0
    assert json.loads(json.dumps(state)) == state  # the generator state is plain JSON
    first = list(loader)
    state = loader.state_dict()
    assert state["order"] is None and state["position"] == 0  # a finished epoch leaves nothing pending
    for i, _ in enumerate(loader):  # a consumer that stops after 3 batches
        if i == 2:
            break
    assert loader.state_dict()["position"] == 3
    second = list(loader)  # without a loaded state: a whole new epoch
    assert len(second) == len(loader) == len(first)
    assert not np.array_equal(second[0][1], first[0][1])


def test_a_state_taken_at_the_last_batch_continues_with_the_next_epoch(digits):
    loader = shifting_loader(digits, seed=0, drop_last=True)
    batches = len(loader)
    for i, _ in enumerate(loader):
        if i == batches - 1:
            state = loader.state_dict()
    assert state["position"] == batches
    following = list(loader)
    resumed = shifting_loader(digits, seed=5, drop_last=True)
    resumed.load_state_dict(state)
    assert_same_batches(list(resumed), following)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: {**s, "n": 9999}, r"of 9999 examples, this loader has 10000"),
        (lambda s: {**s, "batch_size": 64}, r"batches of 64, this loader's are 96"),
        (lambda s: {**s, "position": 106}, r"from 0 to 105"),
        (lambda s: {**s, "order": s["order"][:-1]}, r"not a permutation"),
        (lambda s: {**s, "order": np.zeros(N_STATE, np.int64)}, r"not a permutation"),
        (lambda s: {**s, "order": None}, r"without shuffling, this one shuffles"),
        (lambda s: {**s, "rng": {"bit_generator": "MT19937"}}, r"generator state does not fit"),
        (lambda s: {"position": 3}, r"a loader state is a dict"),
    ],
)
def test_load_state_dict_refuses_a_state_that_does_not_fit_and_changes_nothing(digits, change, match):
    source = shifting_loader(digits, seed=0)
    for i, _ in enumerate(source):
        if i == 10:
            state = source.state_dict()
            break
    loader = shifting_loader(digits, seed=1)
    before = loader.rng.bit_generator.state
    with pytest.raises(ConfigError, match=match):
        loader.load_state_dict(change(state))
    assert loader.rng.bit_generator.state == before
    assert loader.state_dict()["position"] == 0
    unshuffled = shifting_loader(digits, seed=1, shuffle=False)
    with pytest.raises(ConfigError, match="shuffling loader, this one has shuffle=False"):
        unshuffled.load_state_dict(state)
