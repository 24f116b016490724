"""State that makes a run resume exactly, and the flat buffer that optimisers share, on real MNIST batches.

- ``Optimizer.state_dict`` / ``load_state_dict``: an optimiser restored from a saved state
  (through an .npz and JSON, as a checkpoint stores it) continues bit for bit;
- a second optimiser on the same parameters shares the first one's buffer; one on another set or
  order of them moves them, and the first one then refuses to step;
- inference from outside the training loop (``Classifier.logits``, the dashboard, the web page's
  explanation) leaves a network in training as it was.
"""

import io
import json

import numpy as np
import pytest

from digitnet.data import Normalizer
from digitnet.errors import ConfigError
from digitnet.nn import SGD, Adam, AdamW, RMSProp, SoftmaxCrossEntropy, mlp

SIZES = [784, 64, 32, 10]
BATCH = 64
BEFORE, AFTER = 40, 30  # steps before the state is taken and after; together they pass step 64

OPTIMISERS = {
    "sgd": (lambda p: SGD(p, lr=0.05), []),
    "sgd-momentum": (lambda p: SGD(p, lr=0.05, momentum=0.9, l2=1e-4), ["velocity"]),
    "sgd-nesterov": (lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True), ["velocity"]),
    "adam": (lambda p: Adam(p, lr=2e-3, betas=(0.8, 0.99)), ["m", "v"]),
    "adamw": (lambda p: AdamW(p, lr=2e-3, weight_decay=0.05), ["m", "v"]),
    "rmsprop": (lambda p: RMSProp(p, lr=1e-3), ["square_avg"]),
    "rmsprop-momentum": (lambda p: RMSProp(p, lr=1e-3, alpha=0.9, momentum=0.5), ["square_avg", "buffer"]),
}


@pytest.fixture(scope="module")
def batches(mnist):
    n = (BEFORE + AFTER) * BATCH
    x, y = Normalizer()(mnist.x_train[:n]), mnist.y_train[:n]
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, n, BATCH)]


def train(net, opt, batches):
    loss = SoftmaxCrossEntropy()
    for xb, yb in batches:
        loss.forward(net.forward(xb), yb)
        net.backward(loss.backward(), input_grad=False)
        opt.step()


def copy_of(net):
    twin = mlp(SIZES, rng=1)
    twin.load_state_dict(net.state_dict())
    return twin


def through_a_checkpoint(state):
    """Store a state as a checkpoint does (arrays in an .npz without pickle, the rest as JSON) and read it back."""
    buffer = io.BytesIO()
    np.savez(buffer, **state["buffers"])
    text = json.dumps({key: value for key, value in state.items() if key != "buffers"})
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    return {**json.loads(text), "buffers": arrays}


# -- optimiser state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(OPTIMISERS))
def test_a_restored_optimiser_continues_bit_for_bit(kind, batches):
    make, names = OPTIMISERS[kind]
    net = mlp(SIZES, rng=0)
    opt = make(net.parameters())
    train(net, opt, batches[:BEFORE])
    opt.lr *= 0.5  # as a schedule would have moved it
    state = opt.state_dict()

    assert state["type"] == type(opt).__name__ and state["t"] == BEFORE
    assert sorted(state["buffers"]) == sorted(names)
    assert state["hyper"]["lr"] == opt.lr and set(state["hyper"]) >= {"lr", "l2", "weight_decay"}
    for name, value in state["buffers"].items():  # copies, not the optimiser's own arrays
        own = getattr(opt, name)
        assert value.dtype == np.float32 and value.shape == own.shape and not np.shares_memory(value, own)
        np.testing.assert_array_equal(value, own)
        assert value.any()

    restored_net = copy_of(net)
    restored = make(restored_net.parameters())
    arrays_before = {name: getattr(restored, name) for name in names}
    restored.load_state_dict(through_a_checkpoint(state))
    assert restored.t == BEFORE and restored.lr == opt.lr
    for name in names:  # copied into the existing arrays
        assert getattr(restored, name) is arrays_before[name]

    fresh_net = copy_of(net)
    fresh = make(fresh_net.parameters())  # the same network, without the saved state

    train(net, opt, batches[BEFORE:])
    train(restored_net, restored, batches[BEFORE:])
    train(fresh_net, fresh, batches[BEFORE:])
    for (name, a), b in zip(net.state_dict().items(), restored_net.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert any(
        not np.array_equal(a, c)
        for a, c in zip(net.state_dict().values(), fresh_net.state_dict().values(), strict=True)
    )


def test_state_dict_is_plain_python_around_the_arrays():
    net = mlp([6, 4, 3], rng=0)
    for kind, (make, _) in OPTIMISERS.items():
        state = make(net.parameters()).state_dict()
        plain = {key: value for key, value in state.items() if key != "buffers"}
        assert json.loads(json.dumps(plain)) == plain, kind
        assert all(type(v) in (float, bool, list) for v in state["hyper"].values()), kind
    assert Adam(net.parameters(), betas=(0.5, 0.9), eps=1e-6).state_dict()["hyper"] == {
        "lr": 1e-3,
        "l2": 0.0,
        "weight_decay": 0.0,
        "betas": [0.5, 0.9],
        "eps": 1e-6,
    }
    assert SGD(net.parameters(), momentum=0.9, nesterov=True).state_dict()["hyper"] == {
        "lr": 0.01,
        "l2": 0.0,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "nesterov": True,
    }
    assert RMSProp(net.parameters(), momentum=0.5).state_dict()["hyper"] == {
        "lr": 1e-3,
        "l2": 0.0,
        "weight_decay": 0.0,
        "alpha": 0.99,
        "eps": 1e-8,
        "momentum": 0.5,
    }


def trained_adam(batches, sizes=SIZES, dtype=np.float32, cls=Adam):
    net = mlp(sizes, rng=0, dtype=dtype)
    opt = cls(net.parameters(), lr=1e-3)
    train(net, opt, [(xb.astype(dtype), yb) for xb, yb in batches[:3]])
    return opt.state_dict()


def with_nan(state, buffer):
    state["buffers"][buffer][7] = np.nan  # a damaged checkpoint: training from it would diverge at once
    return state


@pytest.mark.parametrize(
    "make, state_of, match",
    [
        (lambda p: AdamW(p), lambda b: trained_adam(b), r"of 'Adam', not 'AdamW'"),
        (lambda p: Adam(p), lambda b: trained_adam(b, cls=AdamW), r"of 'AdamW', not 'Adam'"),
        (lambda p: SGD(p, momentum=0.9), lambda b: trained_adam(b), r"of 'Adam', not 'SGD'"),
        (
            lambda p: SGD(p),
            lambda b: SGD(mlp(SIZES).parameters(), momentum=0.9).state_dict(),
            r"\['velocity'\].*has \[\]",
        ),
        (
            lambda p: RMSProp(p, momentum=0.5),
            lambda b: RMSProp(mlp(SIZES).parameters()).state_dict(),
            r"'buffer'",
        ),
        (
            lambda p: Adam(p),
            lambda b: trained_adam(b, sizes=[784, 32, 10]),
            r"'m' has shape \(25450,\).*\(52650,\)",
        ),
        (lambda p: Adam(p), lambda b: trained_adam(b, dtype=np.float64), r"'m' holds float64.*float32"),
        (lambda p: Adam(p), lambda b: {"t": 3}, r"'type', 't', 'hyper' and 'buffers'"),
        (lambda p: Adam(p), lambda b: {**trained_adam(b), "t": -1}, r"'t' must be a whole number"),
        (lambda p: Adam(p), lambda b: {**trained_adam(b), "hyper": {}}, r"learning rate 'lr' > 0"),
        (
            lambda p: Adam(p),
            lambda b: {**trained_adam(b), "hyper": {"lr": float("inf")}},
            r"finite learning rate 'lr' > 0, not inf",
        ),
        (
            lambda p: Adam(p),
            lambda b: with_nan(trained_adam(b), "v"),
            r"'v' of the Adam state holds values that are not finite",
        ),
    ],
)
def test_load_state_dict_refuses_a_state_that_does_not_fit(make, state_of, match, batches):
    opt = make(mlp(SIZES, rng=0).parameters())
    with pytest.raises(ConfigError, match=match):
        opt.load_state_dict(state_of(batches))


def test_load_state_dict_checks_everything_before_copying_anything(batches):
    state = trained_adam(batches)
    state["buffers"]["v"] = state["buffers"]["v"][:-1]  # m fits, v does not
    opt = Adam(mlp(SIZES, rng=0).parameters(), lr=0.01)
    with pytest.raises(ConfigError, match=r"'v' has shape"):
        opt.load_state_dict(state)
    assert not opt.m.any() and not opt.v.any() and opt.t == 0 and opt.lr == 0.01


# -- a second optimiser on the same network ---------------------------------------------------------------


def one_step(net, opt, batch):
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(batch[0]), batch[1])
    net.backward(loss.backward(), input_grad=False)
    opt.step()


def test_a_second_optimiser_on_the_same_parameters_shares_the_buffer(batches):
    net, alone = mlp(SIZES, rng=0), mlp(SIZES, rng=0)
    adam = Adam(net.parameters(), lr=1e-3)
    views = [(p.data, p.grad) for p in net.parameters()]
    sgd = SGD(net.parameters(), lr=0.1)
    assert sgd.data is adam.data and sgd.grad is adam.grad
    assert all(
        p.data is d and p.grad is g for p, (d, g) in zip(net.parameters(), views, strict=True)
    )  # nothing rebound
    # The first optimiser still moves the network's weights, exactly as it would on its own.
    reference = Adam(alone.parameters(), lr=1e-3)
    for batch in batches[:5]:
        one_step(net, adam, batch)
        one_step(alone, reference, batch)
    for (name, a), b in zip(net.state_dict().items(), alone.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # And so does the second: p <- p - lr g on the same memory.
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(batches[5][0]), batches[5][1])
    net.backward(loss.backward(), input_grad=False)
    expected = {name: p.data - p.grad * 0.1 for name, p in net.named_parameters()}
    sgd.step()
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(p.data, expected[name], err_msg=name)
    one_step(net, adam, batches[6])  # the first one steps again, on the same memory
    assert adam.t == 6 and not np.array_equal(net[0].weight.data, expected["0.weight"])


@pytest.mark.parametrize(
    "other",
    [
        lambda net: net[0].parameters(),  # a subset
        lambda net: net.parameters()[::-1],  # another order
        lambda net: net.parameters() + [mlp([3, 2]).parameters()[0]],  # more parameters
    ],
)
def test_an_earlier_optimiser_refuses_to_step_once_its_parameters_were_moved(other, batches):
    net = mlp(SIZES, rng=0)
    adam = Adam(net.parameters(), lr=1e-3)
    one_step(net, adam, batches[0])
    second = SGD(other(net), lr=0.1)
    assert not np.shares_memory(second.data, adam.data)
    before = net.state_dict()
    with pytest.raises(ConfigError, match="moved into another optimiser's buffer.*one optimiser per set"):
        one_step(net, adam, batches[1])
    assert adam.t == 1
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    one_step(net, second, batches[1])  # the later one works
    assert not np.array_equal(net[0].weight.data, before["0.weight"])
    rebuilt = Adam(net.parameters(), lr=1e-3)  # and so does the first, built again
    one_step(net, rebuilt, batches[2])
    assert rebuilt.t == 1


# -- inference from outside the training loop ----------------------------------------------------------------


def test_looking_at_a_network_in_training_changes_nothing(mnist, batches):
    from digitnet.modelfile import Classifier, architecture_of
    from digitnet.viz.dashboard import layer_activity
    from digitnet.web import explain

    def network():
        return mlp(SIZES, dropout=0.3, rng=0)

    watched, alone = network(), network()
    clf = Classifier(watched, Normalizer(), [str(i) for i in range(10)], architecture_of(watched))
    xb, yb = batches[0]
    loss_a, loss_b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    loss_a.forward(watched.forward(xb), yb)
    loss_b.forward(alone.forward(xb), yb)
    # Between the forward pass and the backward pass, everything that reads the network looks at it.
    clf.logits(mnist.x_test[:100])
    layer_activity(watched, clf.prepare(mnist.x_test[:1]))
    explain.trace(watched, clf.prepare(mnist.x_test[1:2]))
    assert watched.training and all(layer.training for layer in watched.layers)
    grad_a = watched.backward(loss_a.backward())
    grad_b = alone.backward(loss_b.backward())
    np.testing.assert_array_equal(grad_a, grad_b)
    for (name, p), q in zip(watched.named_parameters(), alone.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    # The dropout masks of the next training batch are the same too: inference drew nothing.
    np.testing.assert_array_equal(watched.forward(batches[1][0]), alone.forward(batches[1][0]))
