"""Optimisers step by step against their formulas, and the learning-rate schedules.

Each reference update below is written out by hand in float64 from the
published formula (PyTorch's conventions), one parameter at a time, without
calling the code under test. The optimiser sees two parameters, a weight
(``decay=True``) and a bias (``decay=False``), listed bias first so that the
flat buffer's reordering (decaying parameters first) is exercised too.
"""

import math
from itertools import pairwise

import numpy as np
import pytest

from digitnet.errors import ConfigError
from digitnet.nn import (
    OPTIMIZERS,
    SCHEDULES,
    SGD,
    Adam,
    AdamW,
    Constant,
    Cosine,
    OneCycle,
    Parameter,
    RMSProp,
    Step,
    make_schedule,
    mlp,
)

STEPS = 5


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    bias = Parameter(rng.normal(size=3), decay=False)
    weight = Parameter(rng.normal(size=(3, 2)), decay=True)
    return [bias, weight]


def gradients(seed=1, steps=STEPS):
    """A different gradient for each step, per parameter (bias, weight)."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=3), rng.normal(size=(3, 2))] for _ in range(steps)]


def run(opt_class, grads, **kw):
    params = make_params()
    opt = opt_class(params, **kw)
    history = []
    for g in grads:
        for p, gp in zip(params, g, strict=True):
            p.grad[...] = gp  # write into the optimiser's flat buffer
        opt.step()
        history.append([p.data.copy() for p in params])
    return opt, history


def check(history, reference):
    for step, (got, want) in enumerate(zip(history, reference, strict=True), start=1):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


# -- SGD ---------------------------------------------------------------------------------------------


def test_sgd_plain():
    grads = gradients()
    _, history = run(SGD, grads, lr=0.1)
    p = [x.copy() for x in (q.data for q in make_params())]
    reference = []
    for g in grads:
        p = [pi - 0.1 * gi for pi, gi in zip(p, g, strict=True)]
        reference.append(p)
    check(history, reference)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(nesterov):
    lr, mu = 0.05, 0.9
    grads = gradients()
    _, history = run(SGD, grads, lr=lr, momentum=mu, nesterov=nesterov)
    p = [q.data.copy() for q in make_params()]
    v = [np.zeros_like(x) for x in p]
    reference = []
    for g in grads:
        new_p = []
        for i in range(2):
            v[i] = mu * v[i] + g[i]
            direction = g[i] + mu * v[i] if nesterov else v[i]
            new_p.append(p[i] - lr * direction)
        p = new_p
        reference.append(p)
    check(history, reference)


def test_sgd_l2_applies_to_weights_only():
    lr, l2 = 0.1, 0.03
    grads = gradients()
    _, history = run(SGD, grads, lr=lr, l2=l2)
    b, w = (q.data.copy() for q in make_params())
    reference = []
    for gb, gw in grads:
        b = b - lr * gb
        w = w - lr * (gw + l2 * w)
        reference.append([b, w])
    check(history, reference)


def test_weight_decay_with_zero_gradient_shrinks_weights_only():
    params = make_params()
    b0, w0 = (p.data.copy() for p in params)
    opt = SGD(params, lr=0.5, weight_decay=0.1)
    opt.step()  # gradients are zero
    np.testing.assert_allclose(params[1].data, w0 * (1 - 0.5 * 0.1), rtol=1e-15)
    np.testing.assert_array_equal(params[0].data, b0)


# -- Adam, AdamW ------------------------------------------------------------------------------------


def adam_reference(grads, lr, b1, b2, eps, weight_decay=0.0, l2=0.0):
    p = [q.data.copy() for q in make_params()]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    reference = []
    for t, g in enumerate(grads, start=1):
        new_p = []
        for i in range(2):
            decays = i == 1  # the weight
            gi = g[i] + (l2 * p[i] if decays else 0)
            pi = p[i] * (1 - lr * weight_decay) if decays else p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            new_p.append(pi - lr * m_hat / (np.sqrt(v_hat) + eps))
        p = new_p
        reference.append(p)
    return reference


def test_adam_first_three_steps_have_bias_correction():
    # With bias correction, Adam's first step moves every weight by about lr * sign(g)
    # (m_hat = g, v_hat = g^2); without it the step would be lr * 0.1 / sqrt(0.001) ~ 3.2 lr.
    grads = gradients(steps=3)
    lr = 0.01
    _, history = run(Adam, grads, lr=lr)
    start = [q.data for q in make_params()]
    for first, p0, g in zip(history[0], start, grads[0], strict=True):
        np.testing.assert_allclose(p0 - first, lr * g / (np.abs(g) + 1e-8), rtol=1e-12)
    check(history, adam_reference(grads, lr, 0.9, 0.999, 1e-8))


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3), ((0.0, 0.0), 0.1)])
def test_adam_several_steps(betas, eps):
    grads = gradients(steps=8)
    _, history = run(Adam, grads, lr=0.02, betas=betas, eps=eps)
    check(history, adam_reference(grads, 0.02, *betas, eps))


def test_adam_with_l2():
    grads = gradients()
    _, history = run(Adam, grads, lr=0.01, l2=0.05)
    check(history, adam_reference(grads, 0.01, 0.9, 0.999, 1e-8, l2=0.05))


def test_adamw_decoupled_decay_on_weights_only():
    grads = gradients()
    _, history = run(AdamW, grads, lr=0.01, weight_decay=0.2)
    check(history, adam_reference(grads, 0.01, 0.9, 0.999, 1e-8, weight_decay=0.2))
    # Decoupled decay is not L2: the two give different weights.
    _, coupled = run(Adam, grads, lr=0.01, l2=0.2)
    assert not np.allclose(history[-1][1], coupled[-1][1])
    # A bias with zero gradient is untouched by the decay; a weight with zero gradient shrinks.
    params = make_params()
    b0, w0 = (p.data.copy() for p in params)
    opt = AdamW(params, lr=0.1)
    assert opt.weight_decay == 0.01
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(params[0].data, b0)
    np.testing.assert_allclose(params[1].data, w0 * (1 - 0.1 * 0.01) ** 3, rtol=1e-14)


# -- RMSProp ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_rmsprop(momentum):
    lr, alpha, eps = 0.01, 0.9, 1e-6
    grads = gradients(steps=6)
    _, history = run(RMSProp, grads, lr=lr, alpha=alpha, eps=eps, momentum=momentum)
    p = [q.data.copy() for q in make_params()]
    s = [np.zeros_like(x) for x in p]
    buf = [np.zeros_like(x) for x in p]
    reference = []
    for g in grads:
        new_p = []
        for i in range(2):
            s[i] = alpha * s[i] + (1 - alpha) * g[i] ** 2
            step = g[i] / (np.sqrt(s[i]) + eps)
            if momentum:
                buf[i] = momentum * buf[i] + step
                step = buf[i]
            new_p.append(p[i] - lr * step)
        p = new_p
        reference.append(p)
    check(history, reference)


# -- the flat buffer and the housekeeping --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_parameters_become_views_of_the_flat_buffer(name):
    net = mlp([4, 5, 3], rng=0, dtype=np.float64)
    before = net.state_dict()
    opt = OPTIMIZERS[name](net.parameters(), lr=0.01)
    assert opt.data.ndim == 1 and opt.data.size == sum(p.data.size for p in net.parameters())
    for key, value in net.state_dict().items():  # the values survive the move
        np.testing.assert_array_equal(value, before[key])
    ordered = [net[0].weight, net[2].weight, net[0].bias, net[2].bias]  # decaying first
    assert opt.n_decay == 4 * 5 + 5 * 3

    def assert_views():
        offset = 0
        for p in ordered:
            n = p.data.size
            assert np.shares_memory(p.data, opt.data) and np.shares_memory(p.grad, opt.grad)
            np.testing.assert_array_equal(p.data.ravel(), opt.data[offset : offset + n])
            np.testing.assert_array_equal(p.grad.ravel(), opt.grad[offset : offset + n])
            offset += n

    opt.data[:] = np.arange(opt.data.size)
    opt.grad[:] = -np.arange(opt.grad.size)
    assert_views()
    # load_state_dict copies into the views instead of rebinding them.
    net.load_state_dict(before)
    assert_views()
    np.testing.assert_array_equal(net[0].weight.data, before["0.weight"])
    # zero_grad on either side clears the same memory.
    net.zero_grad()
    assert not opt.grad.any()
    assert_views()
    # A step moves the network's own weights.
    net[2].bias.grad[...] = 1.0
    opt.step()
    assert np.all(net[2].bias.data < before["2.bias"])


def test_flush_subnormals_zeroes_only_tiny_values():
    params = make_params()
    opt = Adam(params, lr=0.1)
    values = np.array([1e-31, -1e-31, 9.9e-31, 1e-45, 0.0, 1.1e-30, -2e-30, 1e-3, -5.0])
    opt.m[: values.size] = values
    opt.v[: values.size] = np.abs(values)
    opt.data[: values.size] = values  # weights are never flushed
    opt.flush_subnormals()
    expected = np.where(np.abs(values) < 1e-30, 0.0, values)
    np.testing.assert_array_equal(opt.m[: values.size], expected)
    np.testing.assert_array_equal(opt.v[: values.size], np.abs(expected))
    np.testing.assert_array_equal(opt.data[: values.size], values)


def test_flush_subnormals_runs_every_64_steps():
    opt = SGD(make_params(), lr=0.1, momentum=0.5)
    calls = []
    real = opt.flush_subnormals
    opt.flush_subnormals = lambda: (calls.append(opt.t), real())
    for _ in range(130):
        opt.step()
    assert calls == [64, 128]
    # And through the real method: a velocity that only decays is zeroed at step 64, not before.
    opt = SGD(make_params(), lr=0.1, momentum=0.5)
    opt.velocity[0] = 1e-12  # 1e-12 * 0.5^63 ~ 1e-31 < 1e-30
    for _ in range(63):
        opt.step()
    assert opt.velocity[0] != 0
    opt.step()
    assert opt.velocity[0] == 0


def test_state_buffers():
    params = make_params()
    assert SGD(make_params(), lr=0.1).state_buffers() == []
    assert len(SGD(make_params(), lr=0.1, momentum=0.9).state_buffers()) == 1
    assert len(Adam(params, lr=0.1).state_buffers()) == 2
    assert len(RMSProp(make_params(), lr=0.1).state_buffers()) == 1
    assert len(RMSProp(make_params(), lr=0.1, momentum=0.5).state_buffers()) == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD(p, lr=0),
        lambda p: SGD(p, lr=-0.1),
        lambda p: SGD(p, lr=0.1, momentum=1.0),
        lambda p: SGD(p, lr=0.1, momentum=1.5),
        lambda p: SGD(p, lr=0.1, momentum=-0.1),
        lambda p: SGD(p, lr=0.1, nesterov=True),
        lambda p: SGD(p, lr=0.1, l2=-1e-3),
        lambda p: SGD(p, lr=0.1, weight_decay=-0.1),
        lambda p: Adam(p, lr=0),
        lambda p: Adam(p, betas=(1.0, 0.999)),
        lambda p: Adam(p, betas=(0.9, 1.0)),
        lambda p: Adam(p, betas=(-0.1, 0.999)),
        lambda p: Adam(p, eps=0),
        lambda p: AdamW(p, weight_decay=-0.01),
        lambda p: AdamW(p, betas=(0.9, 1.5)),
        lambda p: RMSProp(p, alpha=1.0),
        lambda p: RMSProp(p, momentum=1.0),
        lambda p: RMSProp(p, eps=-1e-8),
    ],
)
def test_bad_hyperparameters_raise_config_error(make):
    with pytest.raises(ConfigError):
        make(make_params())


# -- schedules ----------------------------------------------------------------------------------------


def test_constant():
    s = Constant(0.3)
    assert [s(i) for i in (0, 1, 1000)] == [0.3, 0.3, 0.3]


def test_step_boundaries():
    s = Step(1.0, step_size=10, gamma=0.5)
    assert s(0) == 1.0 and s(9) == 1.0
    assert s(10) == 0.5 and s(19) == 0.5
    assert s(20) == 0.25
    with pytest.raises(ConfigError):
        Step(1.0, step_size=0)
    with pytest.raises(ConfigError):
        Step(1.0, step_size=5, gamma=0)
    with pytest.raises(ConfigError):
        Step(1.0, step_size=5, gamma=1.5)


def test_cosine_without_warmup():
    s = Cosine(1.0, total=100, min_lr=0.1)
    assert s(0) == pytest.approx(1.0)
    assert s(50) == pytest.approx(0.55)  # half way: the mean of lr and min_lr
    assert s(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))  # a cosine, not a line
    assert s(100) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    # The last iteration of the run is within a hair of min_lr: (lr - min) (1 - cos(pi/100)) / 2.
    assert s(99) - 0.1 == pytest.approx(0.9 * 0.5 * (1 - math.cos(math.pi / 100)), rel=1e-9)
    values = [s(i) for i in range(101)]
    assert all(a >= b for a, b in pairwise(values))
    assert min(values) >= 0.1


def test_cosine_with_warmup():
    s = Cosine(0.8, total=110, min_lr=0.0, warmup=10)
    ramp = [s(i) for i in range(10)]
    np.testing.assert_allclose(ramp, 0.8 * np.arange(1, 11) / 10)  # linear, reaching lr at it = 9
    assert s(10) == pytest.approx(0.8)
    assert s(60) == pytest.approx(0.4)  # midpoint of the cosine part
    assert s(110) == pytest.approx(0.0, abs=1e-15)
    values = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in pairwise(values))


def test_onecycle():
    total, max_lr = 200, 0.4
    s = OneCycle(max_lr, total=total, pct_start=0.25)
    values = np.array([s(i) for i in range(total)])
    peak = int(np.argmax(values))
    assert peak == s.peak == 49
    assert values[0] == pytest.approx(max_lr / 25)
    assert values[peak] == pytest.approx(max_lr)
    assert values[-1] == pytest.approx(max_lr / 25 / 1e4)
    assert np.all(np.diff(values[: peak + 1]) > 0)
    assert np.all(np.diff(values[peak:]) < 0)
    assert values.min() >= max_lr / 25 / 1e4 * (1 - 1e-9)
    # Both halves are cosines: half way up, the rate is the mean of the start and the peak.
    s2 = OneCycle(1.0, total=102, pct_start=0.5)
    assert s2.peak == 50
    assert s2(25) == pytest.approx((1 / 25 + 1) / 2)
    # ...and a quarter of the way the cosine has moved (1 - cos(pi/4)) / 2 ~ 15% of the way, not 25%.
    lo = 1 / 25
    assert s2(12.5) == pytest.approx(lo + (1 - lo) * 0.5 * (1 - math.cos(math.pi / 4)))
    hi_to_final = s2.final + (1 - s2.final) * 0.5 * (1 + math.cos(math.pi / 4))
    assert s2(50 + 51 / 4) == pytest.approx(hi_to_final)  # a quarter into the descent
    with pytest.raises(ConfigError):
        OneCycle(1.0, total=10, pct_start=0)
    with pytest.raises(ConfigError):
        OneCycle(1.0, total=10, pct_start=1)


def test_make_schedule_names():
    assert set(SCHEDULES) == {"constant", "step", "cosine", "onecycle"}
    c = make_schedule("constant", 0.1, epochs=5, iters_per_epoch=10)
    assert isinstance(c, Constant) and c(49) == 0.1
    st = make_schedule("step", 0.1, epochs=9, iters_per_epoch=10, gamma=0.5)
    assert isinstance(st, Step) and st.step_size == 30  # default: a third of the run
    assert st(29) == 0.1 and st(30) == 0.05
    st2 = make_schedule("step", 0.1, epochs=9, iters_per_epoch=10, step_epochs=2)
    assert st2.step_size == 20 and st2.gamma == 0.1
    co = make_schedule("cosine", 0.1, epochs=5, iters_per_epoch=10, warmup_epochs=1, min_lr=0.01)
    assert isinstance(co, Cosine) and co.total == 50 and co.warmup == 10 and co.min_lr == 0.01
    assert co(9) == pytest.approx(0.1) and co(50) == pytest.approx(0.01)
    oc = make_schedule("onecycle", 0.1, epochs=10, iters_per_epoch=10)
    assert isinstance(oc, OneCycle) and oc.total == 100 and oc.peak == 29  # 30% by default
    oc2 = make_schedule("onecycle", 0.1, epochs=10, iters_per_epoch=10, warmup_epochs=2)
    assert oc2.peak == 19 and oc2(19) == pytest.approx(0.1)  # peaks as warm-up ends
    with pytest.raises(ConfigError, match="unknown schedule 'linear'"):
        make_schedule("linear", 0.1, epochs=1, iters_per_epoch=1)
