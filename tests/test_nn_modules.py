"""Module structure, state, modes, inference without side effects, initialisers, ``mlp`` validation,
and one small learning run."""

import copy
import math

import numpy as np
import pytest

from digitnet.data import Normalizer
from digitnet.errors import ConfigError, ModelFileError
from digitnet.nn import (
    ACTIVATIONS,
    Adam,
    Dropout,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    linear_layers,
    mlp,
)
from digitnet.nn.init import initial_weights

# -- structure and display -----------------------------------------------------------------------------


def test_repr_shows_every_layer():
    text = repr(mlp([784, 128, 64, 10], dropout=0.2, rng=0))
    assert text.splitlines() == [
        "Sequential(",
        "  (0): Linear(in_features=784, out_features=128, init=he)",
        "  (1): ReLU()",
        "  (2): Dropout(p=0.2)",
        "  (3): Linear(in_features=128, out_features=64, init=he)",
        "  (4): ReLU()",
        "  (5): Dropout(p=0.2)",
        "  (6): Linear(in_features=64, out_features=10, init=he)",
        ")",
    ]
    assert "LeakyReLU(slope=0.01)" in repr(mlp([3, 4, 2], activation="leaky_relu"))
    nested = repr(Sequential(Sequential(ReLU()), Tanh()))
    assert nested.splitlines()[1:3] == ["  (0): Sequential(", "    (0): ReLU()"]


def test_mlp_layer_types():
    net = mlp([5, 4, 3, 2], activation="sigmoid")
    assert [type(layer) for layer in net.layers] == [Linear, Sigmoid, Linear, Sigmoid, Linear]
    assert len(net) == 5 and net[2] is net.layers[2]
    assert type(mlp([5, 4, 2], activation="tanh")[1]) is Tanh
    assert type(mlp([5, 4, 2], activation="leaky_relu")[1]) is LeakyReLU
    assert [type(layer) for layer in mlp([5, 2]).layers] == [Linear]  # no hidden layer


def test_parameter_order_and_names():
    net = mlp([784, 128, 64, 10], rng=0)
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    shapes = [p.shape for p in net.parameters()]
    assert shapes == [(784, 128), (128,), (128, 64), (64,), (64, 10), (10,)]
    assert [p.decay for p in net.parameters()] == [True, False] * 3
    assert net.parameters()[0] is net[0].weight
    with_dropout = mlp([784, 128, 64, 10], dropout=0.2, rng=0)
    assert [name for name, _ in with_dropout.named_parameters()] == [
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "6.weight",
        "6.bias",
    ]
    assert all(p.data.dtype == np.float32 for p in net.parameters())
    assert all(p.data.dtype == np.float64 for p in mlp([3, 2], dtype=np.float64).parameters())


def test_forward_shapes():
    net = mlp([6, 5, 3], rng=0)
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    out = net(x)
    assert out.shape == (7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(
        out,
        np.maximum(x @ net[0].weight.data + net[0].bias.data, 0) @ net[2].weight.data + net[2].bias.data,
        rtol=1e-5,
    )


# -- state --------------------------------------------------------------------------------------------


def test_state_dict_returns_copies():
    net = mlp([4, 3, 2], rng=0)
    state = net.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    original = net[0].weight.data.copy()
    state["0.weight"][...] = 99.0  # editing the copy leaves the network alone
    np.testing.assert_array_equal(net[0].weight.data, original)
    net[0].weight.data[...] = -1.0  # and the other way round
    assert np.all(state["0.weight"] == 99.0)
    assert not np.shares_memory(state["0.weight"], net[0].weight.data)


def test_load_state_dict_roundtrip_in_place():
    a, b = mlp([4, 3, 2], rng=0), mlp([4, 3, 2], rng=1)
    weight_array = b[0].weight.data
    b.load_state_dict(a.state_dict())
    assert b[0].weight.data is weight_array  # copied into, not rebound
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    # Values of another dtype are cast to the parameter's.
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    assert b[0].weight.data.dtype == np.float32


def test_load_state_dict_missing_key_names_it():
    net = mlp([4, 3, 2], rng=0)
    state = net.state_dict()
    del state["2.bias"]
    with pytest.raises(ModelFileError, match=r"2\.bias"):
        net.load_state_dict(state)


def test_load_state_dict_unexpected_key_names_it():
    net = mlp([4, 3, 2], rng=0)
    state = net.state_dict()
    state["4.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ModelFileError, match=r"4\.weight"):
        net.load_state_dict(state)


def test_load_state_dict_wrong_shape_names_it_and_changes_nothing():
    net = mlp([4, 3, 2], rng=0)
    before = net.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    state["2.weight"] = np.zeros((2, 3), np.float32)  # transposed
    with pytest.raises(ModelFileError, match=r"2\.weight.*\(2, 3\).*\(3, 2\)"):
        net.load_state_dict(state)
    for key, value in net.state_dict().items():  # all or nothing: no half-loaded network
        np.testing.assert_array_equal(value, before[key], err_msg=key)


# -- modes ---------------------------------------------------------------------------------------------


def test_train_eval_propagate_to_every_layer():
    net = mlp([5, 8, 8, 3], dropout=0.5, rng=0)
    assert all(layer.training for layer in net.layers)
    assert net.eval() is net
    assert not net.training and not any(layer.training for layer in net.layers)
    nested = Sequential(net, ReLU())
    nested.train()
    assert all(layer.training for layer in net.layers)
    nested.train(False)
    assert not any(layer.training for layer in net.layers)


def test_dropout_off_in_eval_makes_output_deterministic():
    net = mlp([5, 16, 16, 3], dropout=0.5, rng=0)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    net.train()
    assert not np.array_equal(net(x), net(x))  # fresh masks each call
    net.eval()
    first = net(x)
    np.testing.assert_array_equal(first, net(x))
    no_dropout = mlp([5, 16, 16, 3], rng=0)  # same weights (dropout draws no weights)
    np.testing.assert_array_equal(first, no_dropout(x))


# -- inference: predict ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(mnist):
    """Two real MNIST batches: one to train on, one to look at."""
    x = Normalizer()(mnist.x_train[:256])
    return (x[:128], mnist.y_train[:128]), x[128:]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_predict_between_forward_and_backward_leaves_the_gradients_exact(activation, dropout, digits):
    (xb, yb), other = digits
    looked_at, untouched = (
        mlp([784, 64, 32, 10], activation=activation, dropout=dropout, rng=0) for _ in "ab"
    )
    loss_a, loss_b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    loss_a.forward(looked_at.forward(xb), yb)
    loss_b.forward(untouched.forward(xb), yb)
    looked_at.predict(other)  # other data, between the training forward and backward
    looked_at.predict(other, return_all=True)
    grad_a = looked_at.backward(loss_a.backward())
    grad_b = untouched.backward(loss_b.backward())
    np.testing.assert_array_equal(grad_a, grad_b)
    for (name, p), q in zip(looked_at.named_parameters(), untouched.parameters(), strict=True):
        assert p.grad.any(), name
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    # predict drew no dropout mask: the next training batch gets the same masks in both.
    np.testing.assert_array_equal(looked_at.forward(other), untouched.forward(other))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_is_the_eval_forward_bit_for_bit_and_keeps_the_mode(activation, dropout, dtype, digits):
    x = digits[1].astype(dtype)
    net = mlp([784, 48, 24, 10], activation=activation, dropout=dropout, rng=0, dtype=dtype)
    evaluated = copy.deepcopy(net).eval()
    out = net.predict(x)
    assert out.dtype == dtype and out.shape == (128, 10)
    np.testing.assert_array_equal(out, evaluated.forward(x))
    assert net.training and all(layer.training for layer in net.layers)
    net.eval()
    np.testing.assert_array_equal(net.predict(x), out)
    assert not net.training and not any(layer.training for layer in net.layers)
    h = x
    for layer, twin in zip(net.layers, evaluated.layers, strict=True):  # each layer on its own, too
        out = layer.predict(h)
        h = twin.forward(h)
        np.testing.assert_array_equal(out, h, err_msg=repr(layer))


@pytest.mark.parametrize("n", [2047, 2048, 3071, 10_000])
@pytest.mark.parametrize("sizes", [[784, 128, 64, 10], [784, 1024, 1024, 10]])
def test_predict_in_blocks_is_one_product_bit_for_bit(mnist, sizes, n):
    """Many rows go through in blocks of PREDICT_ROWS (the last up to twice as long): every row holds the
    numbers the eval forward gives over all of them at once (2047 rows are one block, 2048 two)."""
    x = Normalizer("standardize").fit(mnist.x_train)(mnist.x_test[:n])
    net = mlp(sizes, dropout=0.1, rng=0)
    assert Sequential.PREDICT_ROWS == 1024 and n >= 2 * Sequential.PREDICT_ROWS - 1
    out = net.predict(x)
    assert out.shape == (n, 10) and net.training
    np.testing.assert_array_equal(out, copy.deepcopy(net).eval().forward(x))


def test_predict_return_all_gives_every_layer_output(digits):
    x = digits[1]
    net = mlp([784, 48, 24, 10], activation="tanh", dropout=0.2, rng=0)
    outputs = net.predict(x, return_all=True)
    assert len(outputs) == len(net.layers) == 7
    h = x
    for layer, out in zip(copy.deepcopy(net).eval().layers, outputs, strict=True):
        h = layer.forward(h)
        np.testing.assert_array_equal(out, h)
    assert [o.shape for o in outputs] == [(128, 48)] * 3 + [(128, 24)] * 3 + [(128, 10)]
    np.testing.assert_array_equal(outputs[-1], net.predict(x))
    np.testing.assert_array_equal(outputs[2], outputs[1])  # dropout is the identity at inference
    assert not np.array_equal(outputs[1], outputs[0])  # tanh changed its input
    nested = Sequential(net, Sequential(ReLU()))
    inner = nested.predict(x, return_all=True)
    assert len(inner) == 2
    np.testing.assert_array_equal(inner[1], np.maximum(outputs[-1], 0))


def test_linear_layers_lists_them_input_side_first():
    net = mlp([784, 48, 24, 10], dropout=0.2, rng=0)
    assert linear_layers(net) == [net[0], net[3], net[6]]
    assert [(lin.in_features, lin.out_features) for lin in linear_layers(net)] == [
        (784, 48),
        (48, 24),
        (24, 10),
    ]
    extra = Linear(10, 3, rng=np.random.default_rng(0))
    assert linear_layers(Sequential(net, ReLU(), Sequential(extra))) == [net[0], net[3], net[6], extra]
    assert linear_layers(extra) == [extra] and linear_layers(Sequential(ReLU(), Tanh())) == []


# -- initialisers --------------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300

INIT_STD = {
    "he": math.sqrt(2 / FAN_IN),
    "he_uniform": math.sqrt(2 / FAN_IN),  # U(-a, a) has std a / sqrt(3)
    "xavier": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "xavier_uniform": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "lecun": math.sqrt(1 / FAN_IN),
    "normal": 0.01,
    "normal:0.05": 0.05,
    "torch_default": 1 / math.sqrt(FAN_IN) / math.sqrt(3),
}


@pytest.mark.parametrize("name", sorted(INIT_STD))
def test_initialiser_std(name):
    layer = Linear(FAN_IN, FAN_OUT, init=name, rng=np.random.default_rng(0), dtype=np.float64)
    w, b = layer.weight.data, layer.bias.data
    assert w.shape == (FAN_IN, FAN_OUT) and b.shape == (FAN_OUT,)
    expected = INIT_STD[name]
    assert abs(w.std() / expected - 1) < 0.02  # 120,000 draws: the estimate is good to ~0.2%
    assert abs(w.mean()) < 0.02 * expected
    if "uniform" in name or name == "torch_default":
        bound = expected * math.sqrt(3)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    if name == "torch_default":
        bound = 1 / math.sqrt(FAN_IN)
        assert np.all(np.abs(b) <= bound) and b.std() == pytest.approx(bound / math.sqrt(3), rel=0.2)
    else:
        assert not b.any()


def test_initialiser_dtype_and_errors():
    w, b = initial_weights("he", 3, 2, np.random.default_rng(0), np.float32)
    assert w.dtype == b.dtype == np.float32
    for bad in ("bogus", "normal:abc", "normal:-0.1", "normal:0"):
        with pytest.raises(ConfigError):
            Linear(3, 2, init=bad)


def test_same_seed_same_weights_different_seed_different_weights():
    sizes = [20, 10, 5]
    a, b, c = mlp(sizes, rng=42), mlp(sizes, rng=42), mlp(sizes, rng=43)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])
    # A Generator works as well as an int.
    g1, g2 = mlp(sizes, rng=np.random.default_rng(7)), mlp(sizes, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(g1[0].weight.data, g2[0].weight.data)
    # Same seed also means the same dropout masks.
    x = np.ones((3, 20), np.float32)
    d1, d2 = mlp(sizes, dropout=0.5, rng=5), mlp(sizes, dropout=0.5, rng=5)
    np.testing.assert_array_equal(d1(x), d2(x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sizes": [784, 0, 10]},
        {"sizes": [0, 10]},
        {"sizes": [10]},
        {"sizes": []},
        {"sizes": [784, -5, 10]},
        {"sizes": [4, 3, 2], "dropout": 1.0},
        {"sizes": [4, 3, 2], "dropout": 1.5},
        {"sizes": [4, 3, 2], "dropout": -0.1},
        {"sizes": [4, 3, 2], "activation": "gelu"},
        {"sizes": [4, 3, 2], "init": "bogus"},
    ],
)
def test_mlp_rejects_bad_configurations(kwargs):
    sizes = kwargs.pop("sizes")
    with pytest.raises(ConfigError):
        mlp(sizes, **kwargs)


def test_layers_reject_bad_arguments():
    with pytest.raises(ConfigError):
        Linear(0, 3)
    with pytest.raises(ConfigError):
        Dropout(1.0)
    with pytest.raises(ConfigError):
        Dropout(-0.2)


# -- end to end -----------------------------------------------------------------------------------------


def xor_blobs(n_per_blob=50, seed=0):
    """Four Gaussian blobs at (+-1, +-1); the label is 1 where the signs differ. Not linearly separable."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    x = np.concatenate([c + 0.2 * rng.standard_normal((n_per_blob, 2)) for c in centres]).astype(np.float32)
    y = np.repeat(labels, n_per_blob)
    return x, y


def test_two_layer_mlp_learns_xor_blobs():
    x, y = xor_blobs()
    net = mlp([2, 16, 2], rng=0)
    loss_fn = SoftmaxCrossEntropy()
    opt = Adam(net.parameters(), lr=0.02)
    losses = []
    for _ in range(300):
        losses.append(loss_fn.forward(net(x), y))
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    accuracy = np.mean(net.eval()(x).argmax(axis=1) == y)
    assert accuracy == 1.0
    assert losses[-1] < 0.1 * losses[0]
    # A linear model cannot do this, which is what makes the check meaningful.
    linear = mlp([2, 2], rng=0)
    opt = Adam(linear.parameters(), lr=0.02)
    for _ in range(300):
        loss_fn.forward(linear(x), y)
        linear.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    assert np.mean(linear(x).argmax(axis=1) == y) < 0.9


def test_only_normal_takes_a_value():
    with pytest.raises(ConfigError, match="only 'normal' takes a value"):
        initial_weights("he:3", 4, 3, np.random.default_rng(0))
