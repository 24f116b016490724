"""Every backward pass against central finite differences, in float64.

For a scalar function f of an array a, the numerical gradient is

    (f(a + eps e_i) - f(a - eps e_i)) / (2 eps)      for each element i,

with an error of order eps^2 (truncation) plus machine-eps / eps (rounding);
with eps = 1e-6 in float64 both are around 1e-10, so a correct backward agrees
to about 1e-8 in relative terms and a wrong one (a missing factor, a transposed
matrix, a mask from the wrong draw) misses by order 1. Layers are tested on the
scalar loss ``sum(out * R)`` for a fixed random ``R``, whose gradient with
respect to ``out`` is exactly ``R``. The loss tests check the fused softmax
cross-entropy against a naive float64 computation.
"""

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import (
    SGD,
    Dropout,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    l2_penalty,
    log_softmax,
    mlp,
    softmax,
)
from digitnet.nn.init import INITIALISERS

EPS = 1e-6
TOL = 1e-7  # norm-wise relative error allowed between analytic and numerical gradients
F64 = np.float64


def numerical_gradient(f, a):
    """Central differences of the scalar ``f()`` with respect to array ``a`` (perturbed in place)."""
    grad = np.zeros_like(a, dtype=F64)
    flat, gflat = a.reshape(-1), grad.reshape(-1)  # views: a must be contiguous
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + EPS
        plus = f()
        flat[i] = saved - EPS
        minus = f()
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * EPS)
    return grad


def rel_error(analytic, numeric):
    analytic, numeric = np.asarray(analytic, F64), np.asarray(numeric, F64)
    assert analytic.shape == numeric.shape
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    assert scale > 0, "a gradient check on an all-zero gradient proves nothing"
    return np.linalg.norm(analytic - numeric) / scale


def away_from_zero(rng, shape, margin=0.1):
    """Values with |x| >= margin, so a finite difference never straddles a kink at 0."""
    x = rng.uniform(margin, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(F64)


# -- layers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", sorted(INITIALISERS) + ["normal:0.05"])
def test_linear_gradients(init):
    rng = np.random.default_rng(0)
    layer = Linear(5, 4, init=init, rng=rng, dtype=F64)
    layer.bias.data[...] = rng.normal(size=4)  # non-zero bias, so it matters in the check
    x = rng.normal(size=(3, 5))
    R = rng.normal(size=(3, 4))

    def f():
        return float(np.sum(layer.forward(x) * R))

    f()
    dx = layer.backward(R)
    assert dx.shape == x.shape
    assert layer.weight.grad.shape == (5, 4) and layer.bias.grad.shape == (4,)
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    assert rel_error(layer.weight.grad.copy(), numerical_gradient(f, layer.weight.data)) < TOL
    assert rel_error(layer.bias.grad.copy(), numerical_gradient(f, layer.bias.data)) < TOL


def test_linear_backward_overwrites_and_can_skip_input_grad():
    # Gradients are written (not accumulated), and input_grad=False returns None but fills W, b.
    rng = np.random.default_rng(1)
    layer = Linear(3, 2, rng=rng, dtype=F64)
    x, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.forward(x)
    layer.backward(R)
    first = layer.weight.grad.copy(), layer.bias.grad.copy()
    assert layer.backward(R, input_grad=False) is None
    np.testing.assert_array_equal(layer.weight.grad, first[0])
    np.testing.assert_array_equal(layer.bias.grad, first[1])
    np.testing.assert_allclose(first[0], x.T @ R)
    np.testing.assert_allclose(first[1], R.sum(axis=0))


@pytest.mark.parametrize(
    "make",
    [ReLU, LeakyReLU, lambda: LeakyReLU(0.2), Sigmoid, Tanh],
    ids=["relu", "leaky_relu", "leaky_relu_0.2", "sigmoid", "tanh"],
)
def test_activation_gradients(make):
    rng = np.random.default_rng(2)
    layer = make()
    x = away_from_zero(rng, (4, 6))
    R = rng.normal(size=(4, 6))

    def f():
        return float(np.sum(layer.forward(x) * R))

    f()
    dx = layer.backward(R)
    assert rel_error(dx, numerical_gradient(f, x)) < TOL


def test_activation_values():
    x = np.array([[-3.0, -0.5, 0.5, 3.0]])
    np.testing.assert_allclose(ReLU().forward(x), [[0, 0, 0.5, 3.0]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.3, -0.05, 0.5, 3.0]])
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x), rtol=1e-12)
    with np.errstate(all="raise"):  # the tanh form never overflows
        s = Sigmoid().forward(np.array([[-1e4, 1e4]]))
    np.testing.assert_array_equal(s, [[0.0, 1.0]])


def test_dropout_training_gradient_uses_the_forward_mask():
    rng = np.random.default_rng(3)
    layer = Dropout(0.4, rng=np.random.default_rng(33))
    x = away_from_zero(rng, (6, 7))
    R = rng.normal(size=(6, 7))
    state = layer.rng.bit_generator.state

    def f():
        layer.rng.bit_generator.state = state  # same draw, same mask, every time
        return float(np.sum(layer.forward(x) * R))

    f()
    dx = layer.backward(R)
    assert rel_error(dx, numerical_gradient(f, x)) < TOL

    # One forward, then backward: the gradient is zero exactly where the output was dropped,
    # and scaled by 1/(1-p) where it survived. A backward that drew a fresh mask would fail here.
    out = layer.forward(x)
    g = layer.backward(np.ones_like(x))
    kept = out != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(out[kept], x[kept] / 0.6)
    np.testing.assert_allclose(g[kept], 1 / 0.6)
    np.testing.assert_array_equal(g[~kept], 0)


def test_dropout_keeps_the_expected_fraction_and_is_unbiased():
    layer = Dropout(0.25, rng=np.random.default_rng(4))
    x = np.ones((200, 500))
    out = layer.forward(x)
    assert abs((out != 0).mean() - 0.75) < 0.01
    assert abs(out.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_eval_is_identity():
    layer = Dropout(0.5, rng=np.random.default_rng(5)).eval()
    x = np.random.default_rng(6).normal(size=(4, 5))
    np.testing.assert_array_equal(layer.forward(x), x)
    R = np.random.default_rng(7).normal(size=(4, 5))
    np.testing.assert_array_equal(layer.backward(R), R)
    zero = Dropout(0.0, rng=np.random.default_rng(5))  # p = 0 in training is the identity too
    np.testing.assert_array_equal(zero.forward(x), x)


# -- the whole network with the fused loss ---------------------------------------------------------


@pytest.mark.parametrize(
    "activation,dropout,smoothing",
    [
        ("tanh", 0.0, 0.0),
        ("sigmoid", 0.0, 0.1),
        ("relu", 0.0, 0.0),
        ("leaky_relu", 0.0, 0.2),
        ("relu", 0.3, 0.1),
    ],
)
def test_mlp_with_softmax_cross_entropy(activation, dropout, smoothing):
    net = mlp([6, 8, 7, 4], activation=activation, dropout=dropout, rng=10, dtype=F64)
    bias_rng = np.random.default_rng(11)
    for p in net.parameters():  # non-zero biases reach more code paths
        if p.data.ndim == 1:
            p.data[...] = bias_rng.normal(0, 0.1, p.data.shape)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(5, 6))
    y = np.array([0, 3, 1, 3, 2])
    drop_rngs = [layer.rng for layer in net.layers if isinstance(layer, Dropout)]
    states = [r.bit_generator.state for r in drop_rngs]

    def f():
        for r, s in zip(drop_rngs, states, strict=True):
            r.bit_generator.state = s
        return loss.forward(net.forward(x), y)

    f()
    dx = net.backward(loss.backward())
    analytic = [p.grad.copy() for p in net.parameters()]
    assert rel_error(dx, numerical_gradient(f, x)) < TOL
    for (name, p), g in zip(net.named_parameters(), analytic, strict=True):
        assert rel_error(g, numerical_gradient(f, p.data)) < TOL, name


def test_mlp_backward_without_input_gradient():
    net = mlp([3, 4, 2], rng=0, dtype=F64)
    x = np.random.default_rng(0).normal(size=(2, 3))
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x), np.array([0, 1]))
    g = loss.backward()
    assert net.backward(g, input_grad=False) is None
    assert np.any(net[0].weight.grad != 0)


# -- the loss ---------------------------------------------------------------------------------------


def naive_cross_entropy(z, y, eps=0.0):
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n, k = z.shape
    q = (1 - eps) * np.eye(k)[y] + eps / k
    return -np.mean(np.sum(q * np.log(p), axis=1)), p, q


def test_loss_equals_naive_mean_negative_log_softmax():
    rng = np.random.default_rng(20)
    z = rng.normal(0, 3, size=(8, 10))
    y = rng.integers(0, 10, size=8)
    expected, p, _ = naive_cross_entropy(z, y)
    assert expected == pytest.approx(-np.mean(np.log(p[np.arange(8), y])), rel=1e-12)
    loss = SoftmaxCrossEntropy()
    assert isinstance(loss.forward(z, y), float)
    assert loss.forward(z, y) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(loss.probabilities, p, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(z), np.log(p), rtol=1e-12, atol=1e-14)


def test_loss_gradient_is_p_minus_onehot_over_n():
    rng = np.random.default_rng(21)
    z = rng.normal(0, 2, size=(6, 5))
    y = rng.integers(0, 5, size=6)
    _, p, onehot = naive_cross_entropy(z, y)
    loss = SoftmaxCrossEntropy()
    loss.forward(z, y)
    np.testing.assert_allclose(loss.backward(), (p - onehot) / 6, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_label_smoothing_matches_formula(eps):
    rng = np.random.default_rng(22)
    z = rng.normal(0, 2, size=(7, 4))
    y = rng.integers(0, 4, size=7)
    expected, p, q = naive_cross_entropy(z, y, eps)
    np.testing.assert_allclose(q.sum(axis=1), 1)
    assert np.allclose(q[np.arange(7), y], 1 - eps + eps / 4)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    assert loss.forward(z, y) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (p - q) / 7, rtol=1e-12, atol=1e-15)
    # Smoothing raises the loss of a confident, correct prediction above zero.
    confident = np.array([[50.0, 0.0, 0.0, 0.0]])
    assert SoftmaxCrossEntropy(eps).forward(confident, np.array([0])) > 0.5 * eps


def test_loss_gradient_by_finite_differences():
    rng = np.random.default_rng(23)
    z = rng.normal(0, 2, size=(4, 6))
    y = np.array([5, 0, 2, 2])
    for eps in (0.0, 0.15):
        loss = SoftmaxCrossEntropy(eps)
        loss.forward(z, y)
        g = loss.backward()
        assert rel_error(g, numerical_gradient(lambda loss=loss: loss.forward(z, y), z)) < TOL


def test_loss_stable_on_huge_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [3e4, 3e4, -3e4]])
    y = np.array([0, 0, 1])
    loss = SoftmaxCrossEntropy()
    # Underflow of exp(-huge) to 0 is the correctly rounded answer and harmless;
    # overflow, 0/0, inf-inf or log(0) would not be.
    with np.errstate(all="raise", under="ignore"):
        value = loss.forward(z, y)
        g = loss.backward()
        p = softmax(z)
        lp = log_softmax(z)
        smooth = SoftmaxCrossEntropy(0.1).forward(z, y)
    assert np.isfinite(value) and np.isfinite(smooth)
    assert value == pytest.approx((0.0 + 2e4 + np.log(2)) / 3, rel=1e-12)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(g, np.array([[0, 0, 0], [-1, 1, 0], [0.5, -0.5, 0]]) / 3, atol=1e-15)
    np.testing.assert_allclose(lp[1], [-2e4, 0.0, 5.0 - 1e4])


def test_softmax_rows_sum_to_one():
    z = np.random.default_rng(24).normal(0, 10, size=(9, 10))
    p = softmax(z)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-12)
    assert np.all(p >= 0)
    np.testing.assert_allclose(softmax(z + 1000), p, rtol=1e-12)  # shift invariance
    p32 = softmax(z.astype(np.float32))
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32.sum(axis=1), 1, rtol=1e-6)


def test_label_smoothing_out_of_range_is_rejected():
    for eps in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="label smoothing"):
            SoftmaxCrossEntropy(eps)


# -- L2 -----------------------------------------------------------------------------------------------


def test_l2_penalty_value_and_gradient():
    rng = np.random.default_rng(30)
    weights = [rng.normal(size=(4, 3)), rng.normal(size=(3, 2))]
    lam, m = 0.7, 50
    assert l2_penalty(weights, lam, m) == pytest.approx(
        lam / (2 * m) * sum(float((w**2).sum()) for w in weights), rel=1e-12
    )
    for w in weights:
        numeric = numerical_gradient(lambda: l2_penalty(weights, lam, m), w)
        assert rel_error((lam / m) * w, numeric) < TOL


def test_optimizer_l2_adds_the_penalty_gradient_to_weights_only():
    net = mlp([4, 5, 3], rng=31, dtype=F64)
    for p in net.parameters():
        p.data[...] = np.random.default_rng(32).normal(size=p.data.shape)
    lam, m = 0.5, 20
    weights = [net[0].weight.data, net[2].weight.data]
    expected = [-numerical_gradient(lambda: l2_penalty(weights, lam, m), w) for w in weights]
    before = net.state_dict()
    opt = SGD(net.parameters(), lr=1.0, l2=lam / m)
    opt.zero_grad()  # the loss contributes nothing
    opt.step()  # so W moves by -lr * (lam/m) W
    after = net.state_dict()
    for name, e in zip(["0.weight", "2.weight"], expected, strict=True):
        assert rel_error(after[name] - before[name], e) < TOL
    for name in ("0.bias", "2.bias"):
        np.testing.assert_array_equal(after[name], before[name])
