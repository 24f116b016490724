"""Parity with PyTorch as the oracle: forward, backward, optimisers, the export round trip, torch-train.

Each digitnet network gets a PyTorch twin built here by hand (``torch.nn.Linear`` with ``weight = W.T``),
so the oracle does not lean on the code under test. Inputs are real MNIST images.

Tolerances. float64 agrees to ~1e-14 everywhere; the bounds below leave a margin of about 100.
float32 forward and backward agree to a few ulps. A float32 optimiser step cannot agree that closely
with anything: where a gradient is mostly rounding noise (a sum that cancels), Adam and RMSProp scale
that noise up to a sizeable step, and PyTorch float32 differs from PyTorch float64 by up to 2.5e-5
there. So a float32 run must stay as close to PyTorch float64 as PyTorch float32 does (within a factor
of 4), and its median difference from PyTorch float32 must stay at rounding level, which any mistake
in a formula would exceed by orders of magnitude.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from digitnet import modelfile, nn
from digitnet.cli.main import main
from digitnet.data import DataLoader
from digitnet.data.datasets import Dataset
from digitnet.data.loader import Normalizer
from digitnet.interop import export, from_torch_module, import_torch, load_any, to_torch_module
from digitnet.modelfile import Classifier, architecture_of

torch = pytest.importorskip("torch")

# 1 to 4 hidden layers, widths from 1 to 1024, every activation, both precisions.
ARCHS = [
    ([784, 1024, 10], "relu", np.float32),
    ([784, 64, 1, 10], "sigmoid", np.float64),
    ([784, 300, 100, 10], "tanh", np.float32),
    ([784, 256, 128, 64, 32, 10], "leaky_relu", np.float64),
    ([784, 517, 1024, 10], "relu", np.float64),
    ([784, 90, 7, 33, 10], "leaky_relu", np.float32),
    ([784, 3, 1000, 10], "tanh", np.float64),
    ([784, 40, 40, 40, 40, 10], "sigmoid", np.float32),
]
ARCH_IDS = ["-".join(map(str, s)) + f"-{a}-{np.dtype(d).name}" for s, a, d in ARCHS]
TORCH_ACT = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "leaky_relu": "LeakyReLU"}


@pytest.fixture(scope="module", autouse=True)
def one_thread_each():
    """One thread for PyTorch and one for NumPy's BLAS: the tests alternate between the two, and their
    spinning thread pools would otherwise fight for the cores (a hundredfold slowdown on a busy machine)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(before)


def twin(model: nn.Sequential, dtype=None):
    """A hand-built ``torch.nn.Sequential`` holding the same weights as a digitnet network."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            w = layer.weight.data
            linear = torch.nn.Linear(
                *w.shape, dtype=torch.float64 if w.dtype == np.float64 else torch.float32
            )
            linear.weight.data = torch.tensor(w.T.copy())
            linear.bias.data = torch.tensor(layer.bias.data.copy())
            layers.append(linear)
        elif isinstance(layer, nn.Dropout):
            layers.append(torch.nn.Dropout(layer.p))
        else:
            layers.append(
                getattr(torch.nn, TORCH_ACT[next(k for k, v in nn.ACTIVATIONS.items() if v is type(layer))])()
            )
    net = torch.nn.Sequential(*layers)
    return net.to(dtype) if dtype is not None else net


def build(sizes, activation, dtype, seed=0):
    return nn.mlp(sizes, activation, init="torch_default", rng=seed, dtype=dtype)


def torch_params(net) -> list[np.ndarray]:
    """Parameters in digitnet's layout: weights (in, out), biases (out,)."""
    return [p.detach().numpy().T if p.ndim == 2 else p.detach().numpy() for p in net.parameters()]


def inputs(mnist, n, dtype, start=0):
    return mnist.x_test[start : start + n].astype(dtype) / 255


# -- forward and backward ----------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_forward_gives_the_same_probabilities_and_digits(mnist, arch):
    sizes, activation, dtype = arch
    model = build(sizes, activation, dtype, seed=ARCHS.index(arch)).eval()
    x = inputs(mnist, 1000, dtype)
    ours = nn.softmax(model.forward(x))
    with torch.no_grad():
        theirs = torch.softmax(twin(model)(torch.from_numpy(x)), 1).numpy()
    assert ours.dtype == theirs.dtype == dtype
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.abs(ours - theirs).max() <= (1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("l2", [0.0, 0.05], ids=["plain", "with-L2"])
@pytest.mark.parametrize("arch", ARCHS, ids=ARCH_IDS)
def test_backward_gives_autograds_gradients(mnist, arch, l2):
    sizes, activation, dtype = arch
    model = build(sizes, activation, dtype, seed=ARCHS.index(arch))
    x = mnist.x_train[:64].astype(dtype) / 255
    y = mnist.y_train[:64].astype(np.int64)
    net = twin(model)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss = loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward(), input_grad=False)
    weights = [layer.weight.data for layer in model.layers if isinstance(layer, nn.Linear)]
    loss += nn.l2_penalty(weights, lam=l2, m=1)
    # The optimiser adds l2 * W to each weight's gradient in place before it updates: that sum is the
    # gradient it descends, and what it leaves in p.grad.
    nn.SGD(model.parameters(), lr=1e-3, l2=l2).step()
    torch_loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    torch_loss = torch_loss + l2 / 2 * sum((m.weight**2).sum() for m in net if isinstance(m, torch.nn.Linear))
    torch_loss.backward()
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert abs(loss - torch_loss.item()) <= tol * max(1.0, abs(loss))
    expected = [p.grad.numpy().T if p.ndim == 2 else p.grad.numpy() for p in net.parameters()]
    for p, g in zip(model.parameters(), expected, strict=True):
        assert np.abs(p.grad - g).max() <= tol * max(1.0, np.abs(g).max())


# -- optimisers ------------------------------------------------------------------------------------

OPTIMIZERS = {  # name: (digitnet class, torch class, hyperparameters, L2 coefficient, decoupled decay)
    "sgd": (nn.SGD, torch.optim.SGD, dict(lr=0.1), 0.0, 0.0),
    "sgd-l2": (nn.SGD, torch.optim.SGD, dict(lr=0.1), 1e-3, 0.0),
    "momentum": (nn.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9), 1e-3, 0.0),
    "nesterov": (nn.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), 0.0, 0.0),
    "adam": (nn.Adam, torch.optim.Adam, dict(lr=1e-3), 0.0, 0.0),
    "adam-l2": (nn.Adam, torch.optim.Adam, dict(lr=1e-3, betas=(0.8, 0.99)), 1e-3, 0.0),
    "adamw": (nn.AdamW, torch.optim.AdamW, dict(lr=2e-3), 0.0, 0.05),
    "rmsprop": (nn.RMSProp, torch.optim.RMSprop, dict(lr=1e-3), 1e-3, 0.0),
    "rmsprop-momentum": (nn.RMSProp, torch.optim.RMSprop, dict(lr=5e-4, momentum=0.5, alpha=0.9), 0.0, 0.0),
}
OPT_ARCHS = [
    ([784, 300, 100, 10], "tanh", np.float32),
    ([784, 256, 128, 64, 32, 10], "leaky_relu", np.float64),
    ([784, 128, 10], "relu", np.float32),
    ([784, 64, 1, 10], "sigmoid", np.float64),
]


def batches(mnist, dtype, n=100, size=32):
    loader = DataLoader(
        mnist.x_train[: n * size].astype(dtype) / 255,
        mnist.y_train[: n * size].astype(np.int64),
        batch_size=size,
        rng=7,
    )
    return list(loader)


def torch_run(start: nn.Sequential, name, data, dtype):
    """PyTorch's parameters after step 1 and after every batch of ``data``, from ``start``'s weights."""
    _, torch_cls, kw, l2, decay = OPTIMIZERS[name]
    net = twin(start, torch.float64 if dtype == np.float64 else torch.float32)
    weights = [m.weight for m in net if isinstance(m, torch.nn.Linear)]
    biases = [m.bias for m in net if isinstance(m, torch.nn.Linear)]
    opt = torch_cls(
        [{"params": weights, "weight_decay": l2 or decay}, {"params": biases, "weight_decay": 0.0}], **kw
    )
    after_one = None
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(
            net(torch.from_numpy(x.astype(dtype))), torch.from_numpy(y)
        ).backward()
        opt.step()
        after_one = after_one or [p.copy() for p in torch_params(net)]
    return after_one, torch_params(net)


def digitnet_run(model: nn.Sequential, name, data):
    cls, _, kw, l2, decay = OPTIMIZERS[name]
    opt = cls(model.parameters(), l2=l2, weight_decay=decay, **kw)
    loss_fn, after_one = nn.SoftmaxCrossEntropy(), None
    for x, y in data:
        loss_fn.forward(model.forward(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        after_one = after_one or [p.data.copy() for p in model.parameters()]
    return after_one, [p.data.copy() for p in model.parameters()]


def max_diff(a, b):
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))


def median_diff(a, b):
    return float(
        np.median(
            np.concatenate([np.abs(x.astype(np.float64) - y).ravel() for x, y in zip(a, b, strict=True)])
        )
    )


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_step_and_a_hundred_steps_match_torch_optim(mnist, name, precision):
    i = list(OPTIMIZERS).index(name)
    sizes, activation, dtype = [a for a in OPT_ARCHS if np.dtype(a[2]).name == precision][i % 2]
    model = build(sizes, activation, dtype, seed=i)
    start = build(sizes, activation, dtype, seed=i)
    data = batches(mnist, dtype)
    ours_one, ours = digitnet_run(model, name, data)
    theirs_one, theirs = torch_run(start, name, data, dtype)
    scale = max(1.0, max(float(np.abs(p).max()) for p in theirs))
    moved = max_diff(ours, [p.data for p in start.parameters()])
    assert moved > 1e-3  # the runs really trained
    if dtype == np.float64:
        assert max_diff(ours_one, theirs_one) <= 1e-12 * scale
        assert max_diff(ours, theirs) <= 1e-11 * scale
        return
    exact_one, exact = torch_run(start, name, data, np.float64)  # PyTorch in float64: the reference
    for got, want, truth in ((ours_one, theirs_one, exact_one), (ours, theirs, exact)):
        assert median_diff(got, want) <= 1e-7 * scale  # measured: at most 4e-9
        assert max_diff(got, want) <= 1e-4 * scale  # measured: at most 3e-5
        assert max_diff(got, truth) <= 4 * max_diff(want, truth) + 1e-6 * scale  # measured: at most 2.5 times


# -- the round trip and the exports ------------------------------------------------------------------


@pytest.mark.parametrize("activation", list(nn.ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_export_torch_import_numpy_is_bit_exact(mnist, tmp_path, activation, dtype):
    model = nn.mlp([784, 37, 12, 10], activation, dropout=0.25, rng=3, dtype=dtype).eval()
    clf = Classifier(
        model,
        Normalizer("standardize", 0.1307, 0.3081),
        list("0123456789"),
        architecture_of(model),
        {"dataset": "mnist"},
    )
    x = clf.prepare(mnist.x_test[:500])
    ours = model.forward(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5

    def same_bits(other: nn.Sequential):
        mine = [p.data for p in model.parameters()]
        back = [p.data for p in other.parameters()]
        return len(mine) == len(back) and all(
            a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(mine, back, strict=True)
        )

    # .pth checkpoint -> torch.load(weights_only=True) -> the equivalent nn.Sequential -> torch.save -> import
    export(clf, tmp_path / "checkpoint.pth")
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    net_with_dropout = twin(nn.mlp([784, 37, 12, 10], activation, dropout=0.25, rng=99, dtype=dtype))
    net_with_dropout.load_state_dict(checkpoint["model_state_dict"])
    with torch.no_grad():
        assert np.abs(net_with_dropout.eval()(torch.from_numpy(x)).numpy() - ours).max() <= tol
    torch.save(net_with_dropout.state_dict(), tmp_path / "resaved.pth")
    back = import_torch(tmp_path / "resaved.pth", activation=activation)
    assert same_bits(back.model)
    assert load_any(tmp_path / "checkpoint.pth").normalizer.to_dict() == clf.normalizer.to_dict()
    assert (
        load_any(tmp_path / "checkpoint.pth").architecture["activation"] == activation
    )  # recorded in the file

    # the bare state_dict, for net.load_state_dict(torch.load(path))
    export(clf, tmp_path / "bare.pth", state_dict_only=True)
    net_with_dropout.load_state_dict(torch.load(tmp_path / "bare.pth", weights_only=True))
    assert same_bits(import_torch(tmp_path / "bare.pth", activation=activation).model)

    # safetensors, read by PyTorch's own safetensors loader
    from safetensors.torch import load_file

    export(clf, tmp_path / "model.safetensors")
    net_with_dropout.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert same_bits(load_any(tmp_path / "model.safetensors").model)

    # live modules both ways
    live = to_torch_module(model).eval()
    with torch.no_grad():
        assert np.abs(live(torch.from_numpy(x)).numpy() - ours).max() <= tol
    assert same_bits(from_torch_module(live).model)

    # ONNX, run by ONNX Runtime
    import onnxruntime

    export(clf, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, proba = session.run(["logits", "probabilities"], {"input": x})
    assert logits.dtype == dtype
    assert np.abs(logits - ours).max() <= tol and np.abs(proba - nn.softmax(ours)).max() <= tol
    assert np.array_equal(proba.argmax(1), ours.argmax(1))


def test_the_export_command_writes_each_format(tmp_path, capsys):
    model = nn.mlp([784, 20, 10], "tanh", rng=0)
    modelfile.save(tmp_path / "model.npz", model, Normalizer("scale"), list("0123456789"), dataset="mnist")
    for out in ("m.safetensors", "m.pth", "m.onnx"):
        assert main(["export", str(tmp_path / "model.npz"), "--out", str(tmp_path / out), "--json"]) == 0
        report = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert report["format"] == out.split(".")[1] and report["sizes"] == [784, 20, 10]
    assert main(["export", str(tmp_path / "model.npz"), "--out", str(tmp_path / "m.pth")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "model.npz"), "--out", str(tmp_path / "m.bin")]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.pth"), "--out", str(tmp_path / "again.onnx")]) == 0  # a .pth in
    printed = capsys.readouterr().out
    assert main(["export", str(tmp_path / "model.npz"), "--out", str(tmp_path / "n.pth")]) == 0
    snippet = capsys.readouterr().out.split("load it in PyTorch:\n")[1]
    scope = {}
    exec(textwrap.dedent(snippet), scope)  # the printed code works as printed
    assert isinstance(scope["net"], torch.nn.Sequential) and "again.onnx" in printed


# -- torch-train: the same run in PyTorch ------------------------------------------------------------


def small(mnist) -> Dataset:
    """6,000 training and 2,000 test images of real MNIST."""
    return Dataset(
        "mnist",
        list("0123456789"),
        mnist.x_train[:6000],
        mnist.y_train[:6000],
        mnist.x_test[:2000],
        mnist.y_test[:2000],
        source="MNIST (first 6,000 / 2,000)",
    )


@pytest.mark.parametrize(
    "overrides",
    [
        dict(hidden=(32,), optimizer="adam", lr=3e-3, batch_size=64, epochs=2),
        dict(
            hidden=(48, 16),
            activation="tanh",
            optimizer="sgd",
            lr=0.05,
            momentum=0.9,
            nesterov=True,
            l2=5.0,
            batch_size=50,
            epochs=2,
            normalize="standardize",
            schedule="onecycle",
            dtype="float64",
        ),
    ],
    ids=["adam", "nesterov-l2-standardize-onecycle-float64"],
)
def test_torch_train_feeds_pytorch_the_same_batches_from_the_same_weights(mnist, overrides):
    from digitnet.interop.torch_train import train_torch
    from digitnet.presets import preset
    from digitnet.training import train

    data = small(mnist)
    ours = train(preset("adam-128-64", **overrides), data)
    theirs = train_torch(preset("adam-128-64", **overrides), data)
    assert len(ours.history.loss) == len(theirs.history.loss)
    gap = np.abs(np.subtract(ours.history.loss, theirs.history.loss))
    if overrides.get("dtype") == "float64":
        assert gap.max() <= 1e-10  # every iteration's loss, to rounding (measured 1e-14)
    else:
        assert gap[:20].max() <= 1e-5  # float32: the first batches, to rounding
    assert ours.metrics["n_val"] == theirs.metrics["n_val"] == 600
    assert abs(ours.metrics["test_accuracy"] - theirs.metrics["test_accuracy"]) <= 0.01
    assert ours.metrics["test_accuracy"] > 0.85


@pytest.mark.parametrize(
    "flags",
    [
        ["--optimizer", "sgd", "--lr", "1e6"],  # the loss becomes nan
        ["--lr", "1e300"],  # Adam's step is beyond float32: PyTorch refused it with a traceback
    ],
)
def test_torch_train_divergence_is_one_error_line_and_writes_nothing(mnist, tmp_path, capsys, flags):
    data = small(mnist)
    npz = tmp_path / "small.npz"
    np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    out = tmp_path / "model.pth"
    code = main(["torch-train", "--data", str(npz), "--epochs", "2", *flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "training diverged; try a lower learning rate" in err
    assert not out.exists()


def test_torch_train_then_compare_on_the_command_line(mnist, tmp_path, capsys):
    data = small(mnist)
    np.savez(
        tmp_path / "small.npz",
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
    )
    common = ["--data", str(tmp_path / "small.npz"), "--hidden", "24", "--epochs", "2", "--json"]
    assert main(["torch-train", *common, "--out", str(tmp_path / "mnist_model.pth")]) == 0
    torch_report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert main(["train", "--preset", "adam-128-64", *common, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    ours_report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (
        main(
            [
                "compare",
                str(tmp_path / "run"),
                str(tmp_path / "mnist_model.pth"),
                "--data",
                str(tmp_path / "small.npz"),
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(out.splitlines()[-1])
    assert report["accuracy_a"] == ours_report["test_accuracy"]
    assert report["accuracy_b"] == torch_report["test_accuracy"]
    assert report["agreement"] >= 0.95 and len(report["disagreements"]) == round(
        (1 - report["agreement"]) * 2000
    )
    assert sum(report["disagreements_by_class"].values()) == len(report["disagreements"])
    assert "agreement:" in out and "only A right" in out
    # the .pth is an ordinary PyTorch checkpoint
    checkpoint = torch.load(tmp_path / "mnist_model.pth", weights_only=True)
    net = torch.nn.Sequential(torch.nn.Linear(784, 24), torch.nn.ReLU(), torch.nn.Linear(24, 10))
    net.load_state_dict(checkpoint["model_state_dict"])
    with torch.no_grad():
        theirs = net(torch.from_numpy(data.x_test.astype(np.float32) / 255)).argmax(1).numpy()
    assert np.mean(theirs == data.y_test) == torch_report["test_accuracy"]
    assert checkpoint["digitnet"]["architecture"]["sizes"] == [784, 24, 10]
