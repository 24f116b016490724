"""Importing PyTorch files: the restricted reader, without PyTorch, on real torch.save output and crafted files.

Real PyTorch writes the files (and is the oracle for what they hold and predict); digitnet reads them
in a process where ``import torch`` fails. Crafted files that would run a command when unpickled are
refused, and the command never runs.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from digitnet import modelfile
from digitnet.errors import ModelFileError
from digitnet.interop import import_torch, load_torch_state_dict, read_torch_file
from digitnet.interop.torchfile import LEGACY_MAGIC, LEGACY_PROTOCOL

NO_TORCH = "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def run_without_torch(code: str, cwd) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a fresh interpreter in which PyTorch cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH + code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def cli(*args, cwd, without_torch=False) -> subprocess.CompletedProcess:
    """Run ``digitnet ARGS`` in a fresh interpreter (optionally one in which PyTorch cannot be imported)."""
    code = (
        NO_TORCH if without_torch else "import sys\n"
    ) + "from digitnet.cli.main import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def mlp(torch, sizes, act, dtype=None, bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b, bias=bias, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


def torch_proba(torch, net, pixels, dtype):
    """What PyTorch predicts for raw test pixels, with ToTensor()'s scaling."""
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(pixels.astype(dtype) / 255)), 1).double().numpy()


@pytest.fixture(scope="module")
def trained(torch, mnist):
    """A 784-64-32-10 tanh network trained briefly by PyTorch on real MNIST (about 90% accurate)."""
    torch.manual_seed(0)
    net = mlp(torch, [784, 64, 32, 10], torch.nn.Tanh)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    x = torch.from_numpy(mnist.x_train[:19200].astype(np.float32) / 255)
    y = torch.from_numpy(mnist.y_train[:19200].astype(np.int64))
    for i in range(0, 19200, 64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
    return net.eval()


# -- reading real torch.save files, without PyTorch --------------------------------------------------


def test_the_package_and_the_import_command_work_without_pytorch(torch, trained, mnist, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "zip.pth")
    torch.save(trained.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    code = """
from digitnet.cli.main import main
for layout in ("zip", "legacy"):
    assert main(["import-torch", f"{layout}.pth", "--out", f"{layout}.npz", "--activation", "tanh"]) == 0
main(["evaluate", "zip.npz", "--json"])
print("needs torch:", main(["export", "zip.npz", "--out", "x.pth"]), main(["torch-train", "--out", "t.pth"]))
print("torch importable:", sys.modules.get("torch") is not None)
"""
    done = run_without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "needs torch: 2 2" in done.stdout and "torch importable: False" in done.stdout
    assert done.stderr.count("error: ") == 2 and done.stderr.count("pip install 'digitnet[torch]'") == 2
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "t.pth").exists()
    expected = torch_proba(torch, trained, mnist.x_test, np.float32)
    torch_accuracy = float(np.mean(expected.argmax(1) == mnist.y_test))
    assert torch_accuracy > 0.85
    assert json.loads(done.stdout.splitlines()[-3])["test_accuracy"] == torch_accuracy
    for layout in ("zip", "legacy"):
        clf = modelfile.load(tmp_path / f"{layout}.npz")
        assert clf.architecture["sizes"] == [784, 64, 32, 10] and clf.architecture["activation"] == "tanh"
        for (name, p), (tname, t) in zip(
            clf.model.named_parameters(), trained.state_dict().items(), strict=True
        ):
            ours = p.data.T if name.endswith("weight") else p.data
            assert name == tname and np.array_equal(ours, t.numpy())  # bit for bit
        proba = clf.predict_proba(mnist.x_test)
        assert np.array_equal(proba.argmax(1), expected.argmax(1))
        assert np.abs(proba - expected).max() < 1e-6


def test_every_dtype_view_and_layout_reads_back_exactly(torch, tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6) / 7
    state = OrderedDict(
        [
            ("f32", torch.randn(3, 5)),
            ("f64", base),
            ("f16", torch.randn(4).half()),
            ("bf16", torch.randn(4).bfloat16()),
            ("i64", torch.arange(5)),
            ("i8", torch.tensor([-3, 4], dtype=torch.int8)),
            ("u8", torch.tensor([0, 255], dtype=torch.uint8)),
            ("flag", torch.tensor([True, False])),
            ("transposed", base.T),
            ("slice", base[1:3, ::2]),
            ("scalar", torch.tensor(2.5)),
            ("empty", torch.zeros(0, 3)),
            ("param", torch.nn.Parameter(torch.ones(2, 2))),
        ]
    )
    for layout, new in (("zip", True), ("legacy", False)):
        path = tmp_path / f"{layout}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=new)
        got = read_torch_file(path)
        assert list(got) == list(state)
        for key, tensor in state.items():
            want = (
                tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
            )
            assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
            assert np.array_equal(got[key], want), key


def _custom_net(torch, bias_on_fc2=True, dtype=None):
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(16, 10, dtype=dtype)  # registered before the layers feeding it
            self.fc1 = torch.nn.Linear(784, 32, dtype=dtype)
            self.fc2 = torch.nn.Linear(32, 16, bias=bias_on_fc2, dtype=dtype)

        def forward(self, x):
            return self.out(self.act(self.fc2(self.act(self.fc1(x)))))

    return Custom()


VARIANTS = [
    "sequential-relu",
    "custom-tanh-legacy",
    "dataparallel-checkpoint-sigmoid",
    "state_dict-key-float64-leaky-nobias",
    "model-key-half",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_mlp_state_dict_imports_and_predicts_what_pytorch_predicts(torch, mnist, tmp_path, variant):
    torch.manual_seed(VARIANTS.index(variant))
    x = mnist.x_test[:1000]
    dtype, np_dtype, legacy = None, np.float32, False
    if variant == "sequential-relu":
        activation, net = "relu", mlp(torch, [784, 48, 24, 10], torch.nn.ReLU)
        saved = net.state_dict()
    elif variant == "custom-tanh-legacy":
        activation, net, legacy = "tanh", _custom_net(torch), True
        net.act = torch.tanh
        saved = net.state_dict()
        assert list(saved)[0] == "out.weight"  # saved order is not forward order
    elif variant == "dataparallel-checkpoint-sigmoid":
        activation, inner = "sigmoid", mlp(torch, [784, 40, 10], torch.nn.Sigmoid)
        net = torch.nn.DataParallel(inner)
        opt = torch.optim.Adam(net.parameters())
        torch.nn.functional.cross_entropy(net(torch.rand(4, 784)), torch.tensor([1, 2, 3, 4])).backward()
        opt.step()
        saved = {
            "epoch": 3,
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "loss": torch.tensor(0.25),
            "note": "from the training script",
        }
        assert next(iter(net.state_dict())).startswith("module.")
        net = inner
    elif variant == "state_dict-key-float64-leaky-nobias":
        activation, dtype, np_dtype = "leaky_relu", torch.float64, np.float64
        net = _custom_net(torch, bias_on_fc2=False, dtype=dtype)
        net.act = torch.nn.functional.leaky_relu
        saved = {"state_dict": net.state_dict(), "args": {"lr": 0.1, "hidden": [32, 16]}}
    else:
        activation, net = "relu", mlp(torch, [784, 30, 10], torch.nn.ReLU).half()
        saved = {"model": net.state_dict()}
        net = net.float()  # float16 widens to float32 exactly
    path = tmp_path / "model.pth"
    torch.save(saved, path, _use_new_zipfile_serialization=not legacy)
    clf = import_torch(path, activation=activation)
    assert clf.model.layers[0].weight.data.dtype == np_dtype
    expected = torch_proba(torch, net.eval(), x, np_dtype)
    proba = clf.predict_proba(x)
    assert np.array_equal(proba.argmax(1), expected.argmax(1))
    assert np.abs(proba - expected).max() < (1e-12 if np_dtype == np.float64 else 1e-6)


def test_the_activation_is_not_in_the_file_so_the_flag_decides(torch, trained, mnist, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "tanh.pth")
    done = cli("import-torch", "tanh.pth", "--out", "guessed.npz", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        "a state_dict cannot record it" in done.stdout
        and json.loads(done.stdout.splitlines()[-1])["activation"] == "relu"
    )
    guessed = modelfile.load(tmp_path / "guessed.npz").predict(mnist.x_test)
    told = import_torch(tmp_path / "tanh.pth", activation="tanh").predict(mnist.x_test)
    expected = torch_proba(torch, trained, mnist.x_test, np.float32).argmax(1)
    assert np.array_equal(told, expected)
    assert np.mean(guessed != expected) > 0.02  # relu in place of tanh reads many digits differently


def test_standardised_inputs_and_fashion_class_names(torch, trained, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "m.pth")
    done = cli(
        "import-torch",
        "m.pth",
        "--out",
        "m.npz",
        "--activation",
        "tanh",
        "--mean",
        "0.1307",
        "--std",
        "0.3081",
        "--dataset",
        "fashion-mnist",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    clf = modelfile.load(tmp_path / "m.npz")
    assert clf.normalizer.to_dict() == {"kind": "standardize", "mean": 0.1307, "std": 0.3081}
    assert clf.class_names[0] == "T-shirt/top" and clf.meta["dataset"] == "fashion-mnist"
    pixels = np.full((1, 784), 255, np.uint8)
    assert np.allclose(clf.prepare(pixels), (1 - 0.1307) / 0.3081)


# -- what is refused -------------------------------------------------------------------------------


class RunsCommand:
    """Pickles as a call of ``func(*args)``: what a malicious .pth does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def legacy_header(sys_info=None) -> bytes:
    info = sys_info if sys_info is not None else {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}
    return b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, info))


def write_zip(path, pickle_bytes: bytes, storages=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)


def malicious_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Four files that each create ``marker`` when a plain unpickler opens them."""
    touch = f"open({str(marker)!r}, 'w').close()"
    files = {
        "zip-os.system": (
            "zip",
            pickle.dumps({"0.weight": RunsCommand(os.system, f"touch '{marker}'")}, protocol=2),
        ),
        "zip-protocol4-exec": ("zip", pickle.dumps(OrderedDict(w=RunsCommand(exec, touch)), protocol=4)),
        "legacy-subprocess": (
            "legacy",
            legacy_header() + pickle.dumps(RunsCommand(subprocess.Popen, ["touch", str(marker)]), protocol=2),
        ),
        "legacy-header-eval": (
            "legacy",
            pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(RunsCommand(eval, touch), protocol=2),
        ),
    }
    paths = {}
    for name, (layout, data) in files.items():
        path = paths[name] = folder / f"{name}.pth"
        if layout == "zip":
            write_zip(path, data)
        else:
            path.write_bytes(data)
    return paths


def test_the_crafted_files_really_run_a_command_under_a_plain_unpickler(tmp_path):
    """Guards the next tests: their files are live, so refusing them means something."""
    marker = tmp_path / "ran"
    files = malicious_files(tmp_path, marker)
    code = """
import io, json, os, pickle, sys, zipfile
files, marker = json.loads(sys.argv[1]), sys.argv[2]
for name, path in files.items():
    f = io.BytesIO(zipfile.ZipFile(path).read("archive/data.pkl")) if zipfile.is_zipfile(path) else open(path, "rb")
    for _ in range(4):
        try:
            getattr(pickle.load(f), "wait", lambda: None)()      # a Popen: wait for its command
        except Exception:
            break
    print(name, os.path.exists(marker))
    if os.path.exists(marker):
        os.unlink(marker)
"""
    paths = json.dumps({name: str(path) for name, path in files.items()})
    done = subprocess.run(
        [sys.executable, "-c", code, paths, str(marker)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == [word for name in files for word in (name, "True")], done.stderr


@pytest.mark.parametrize(
    "name", ["zip-os.system", "zip-protocol4-exec", "legacy-subprocess", "legacy-header-eval"]
)
def test_a_file_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path, name):
    marker = tmp_path / "ran"
    path = malicious_files(tmp_path, marker)[name]
    with pytest.raises(ModelFileError) as err:
        read_torch_file(path)
    message = str(err.value)
    assert (
        message.startswith(f"refused {path}")
        and "may be malicious" in message
        and "Nothing from it was run" in message
    )
    assert not marker.exists()


def test_the_command_refuses_a_malicious_file_with_one_error_line(tmp_path):
    marker = tmp_path / "ran"
    path = malicious_files(tmp_path, marker)["zip-os.system"]
    (tmp_path / "keep.npz").write_bytes(b"precious")
    for out in ("new.npz", "keep.npz"):
        done = cli("import-torch", path, "--out", out, "--force", cwd=tmp_path, without_torch=True)
        assert done.returncode == 2
        assert (
            done.stderr.count("\n") == 1
            and done.stderr.startswith("error: refused")
            and "posix.system" in done.stderr
        )
    assert not marker.exists() and not (tmp_path / "new.npz").exists()
    assert (tmp_path / "keep.npz").read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_a_whole_pickled_model_is_refused_with_how_to_save_a_state_dict(torch, tmp_path, monkeypatch):
    torch.save(mlp(torch, [784, 8, 10], torch.nn.ReLU), tmp_path / "sequential.pth")
    custom = _custom_net(torch)
    custom.act = torch.nn.ReLU()
    cls = type(custom)
    cls.__module__, cls.__qualname__ = "__main__", "Net"  # as a training script's own class pickles
    monkeypatch.setattr(sys.modules["__main__"], "Net", cls, raising=False)
    torch.save(custom, tmp_path / "custom.pth")
    for name in ("sequential.pth", "custom.pth"):
        with pytest.raises(ModelFileError) as err:
            read_torch_file(tmp_path / name)
        assert "whole pickled model" in str(err.value) and "torch.save(model.state_dict()" in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(mlp(torch, [784, 8, 10], torch.nn.ReLU)).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ModelFileError, match="TorchScript archive"):
        read_torch_file(tmp_path / "scripted.pt")


def test_layers_that_are_not_a_chain_of_linears_are_named(torch, tmp_path):
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 26 * 26, 10),
    )
    torch.save(cnn.state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(ModelFileError) as err:
        import_torch(tmp_path / "cnn.pth")
    message = str(err.value)
    assert "not a chain of Linear layers" in message
    for key in ("0.weight (4, 1, 3, 3)", "0.bias (4,)", "1.running_mean (4,)", "1.num_batches_tracked ()"):
        assert key in message
    assert "3.weight" not in message  # the Linear layer itself was placed
    two_heads = {"a.weight": torch.zeros(32, 784), "b.weight": torch.zeros(10, 16)}
    torch.save(two_heads, tmp_path / "heads.pth")
    with pytest.raises(ModelFileError, match=r"do not form one chain .*a 784->32, b 16->10"):
        import_torch(tmp_path / "heads.pth")


def test_tensors_in_a_set_are_refused_in_one_error(torch, tmp_path):
    """A set of tensors (or of tuples of them) in a .pth: the arrays they become have no hash (a
    TypeError traceback from import-torch, export and compare, once); a set of plain numbers is fine."""
    weights = {"0.weight": torch.zeros(10, 784), "0.bias": torch.zeros(10)}
    for extra in ({torch.zeros(1)}, frozenset({(torch.zeros(1), 1)})):
        torch.save({**weights, "tags": extra}, tmp_path / "set.pth")
        with pytest.raises(ModelFileError, match="tensors in a set"):
            import_torch(tmp_path / "set.pth")
    torch.save({"state_dict": weights, "epochs": {1, 2}}, tmp_path / "numbers.pth")
    assert import_torch(tmp_path / "numbers.pth").architecture["sizes"] == [784, 10]


def _s(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _tuple(values) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def tensor_pickle(key: str, numel: int, offset: int, size, stride) -> bytes:
    """Protocol-2 opcodes of ``torch._utils._rebuild_tensor_v2`` over a FloatStorage, written by hand."""
    storage = (
        b"(" + _s("storage") + b"ctorch\nFloatStorage\n" + _s(key) + _s("cpu") + _tuple([numel])[1:-1] + b"t"
    )
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + storage
        + b"Q"
        + b"J"
        + struct.pack("<i", offset)
        + _tuple(size)
        + _tuple(stride)
        + b"\x89ccollections\nOrderedDict\n)RtR"
    )


def state_pickle(**tensors: bytes) -> bytes:
    return (
        b"\x80\x02ccollections\nOrderedDict\n)R"
        + b"".join(_s(k) + v + b"s" for k, v in tensors.items())
        + b"."
    )


def test_a_handwritten_file_reads_without_pytorch_and_views_stay_inside_their_storage(tmp_path):
    data = np.arange(8, dtype="<f4")
    write_zip(
        tmp_path / "ok.pth", state_pickle(w=tensor_pickle("0", 8, 1, (2, 3), (1, 2))), {"0": data.tobytes()}
    )
    assert np.array_equal(load_torch_state_dict(tmp_path / "ok.pth")["w"], [[1, 3, 5], [2, 4, 6]])
    cases = {
        "past the end": (tensor_pickle("0", 8, 3, (2, 3), (3, 1)), data.tobytes(), "reaches element 8"),
        "short storage": (tensor_pickle("0", 8, 0, (2, 3), (3, 1)), data[:4].tobytes(), "holds 16 bytes"),
        "negative stride": (tensor_pickle("0", 8, 7, (2,), (-1,)), data.tobytes(), "impossible stride"),
        "expanded": (
            tensor_pickle("0", 8, 0, (100000, 100000), (0, 0)),
            data.tobytes(),
            "more elements than its storage",
        ),
    }
    for tensor, blob, expected in cases.values():
        write_zip(tmp_path / "bad.pth", state_pickle(w=tensor), {"0": blob})
        with pytest.raises(ModelFileError, match=expected):
            load_torch_state_dict(tmp_path / "bad.pth")


def test_shared_and_looping_references_are_handled(tmp_path):
    shared = [0.5]
    for _ in range(60):  # 2**60 paths to the innermost list, in a few hundred bytes
        shared = [shared, shared]
    (tmp_path / "shared.pth").write_bytes(
        legacy_header() + pickle.dumps(shared, protocol=2) + pickle.dumps([], protocol=2)
    )
    got = read_torch_file(tmp_path / "shared.pth")
    assert got[0] is got[1]
    loop = []
    loop.append(loop)
    (tmp_path / "loop.pth").write_bytes(
        legacy_header() + pickle.dumps(loop, protocol=2) + pickle.dumps([], protocol=2)
    )
    with pytest.raises(ModelFileError, match="refers to itself"):
        read_torch_file(tmp_path / "loop.pth")


def test_files_that_are_not_torch_files_get_a_clear_error(torch, tmp_path):
    torch.save(OrderedDict(w=torch.ones(300, 300)), tmp_path / "full.pth")
    blob = (tmp_path / "full.pth").read_bytes()
    torch.save(
        OrderedDict(w=torch.ones(300, 300)), tmp_path / "old.pth", _use_new_zipfile_serialization=False
    )
    cases = {
        "empty.pth": b"",
        "text.pth": b"hello, world\n" * 10,
        "random.pth": np.random.default_rng(0).bytes(4096),
        "truncated.pth": blob[: len(blob) // 2],
        "old-truncated.pth": (tmp_path / "old.pth").read_bytes()[:-1000],
        "list.pth": legacy_header() + pickle.dumps([1, 2, 3], protocol=2) + pickle.dumps([], protocol=2),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFileError) as err:
            import_torch(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), name
    np.savez(tmp_path / "model.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="NumPy .npz"):
        read_torch_file(tmp_path / "model.npz")
    done = cli("import-torch", "missing.pth", "--out", "m.npz", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


# -- the torch.nn.Sequential code export prints ------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, activation, dropout, dtype",
    [
        ([784, 64, 32, 10], "relu", 0.0, np.float32),
        ([784, 50, 10], "leaky_relu", 0.3, np.float64),
        ([784, 17, 9, 13, 10], "sigmoid", 0.0, np.float64),
        ([784, 40, 10], "tanh", 0.15, np.float32),
    ],
    ids=["relu-float32", "leaky_relu-dropout-float64", "sigmoid-float64", "tanh-dropout-float32"],
)
def test_the_generated_torch_code_loads_the_exported_weights_and_gives_the_same_logits(
    torch, mnist, tmp_path, sizes, activation, dropout, dtype
):
    """torch_sequential_code, run by real PyTorch, builds the network export_pth's state_dict loads into
    (strictly: the same names and shapes) and that network gives digitnet's logits on real MNIST."""
    from digitnet import nn
    from digitnet.data.loader import Normalizer
    from digitnet.interop import export, torch_sequential_code
    from digitnet.modelfile import Classifier, architecture_of

    model = nn.mlp(sizes, activation, dropout=dropout, rng=7, dtype=dtype).eval()
    clf = Classifier(
        model, Normalizer("scale"), list("0123456789"), architecture_of(model), {"dataset": "mnist"}
    )
    code = torch_sequential_code(clf)
    net = eval(code, {"torch": torch})
    assert isinstance(net, torch.nn.Sequential) and len(net) == len(model.layers)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    for ours, theirs in zip(model.layers, net, strict=True):
        if isinstance(ours, nn.Linear):
            assert isinstance(theirs, torch.nn.Linear) and theirs.weight.dtype == torch_dtype
            assert (theirs.in_features, theirs.out_features) == (ours.in_features, ours.out_features)
        elif isinstance(ours, nn.Dropout):
            assert isinstance(theirs, torch.nn.Dropout) and theirs.p == pytest.approx(ours.p)
        elif isinstance(ours, nn.LeakyReLU):
            assert isinstance(theirs, torch.nn.LeakyReLU) and theirs.negative_slope == ours.slope
        else:
            assert type(theirs).__name__ == type(ours).__name__
    export(clf, tmp_path / "model.pth")
    net.load_state_dict(
        torch.load(tmp_path / "model.pth", weights_only=True)["model_state_dict"], strict=True
    )
    export(clf, tmp_path / "bare.pth", state_dict_only=True)
    bare = eval(code, {"torch": torch})
    bare.load_state_dict(torch.load(tmp_path / "bare.pth", weights_only=True), strict=True)
    x = mnist.x_test[:1000]
    ours = clf.logits(x)
    with torch.no_grad():
        for loaded in (net.eval(), bare.eval()):
            theirs = loaded(torch.from_numpy(clf.prepare(x))).numpy()
            assert theirs.dtype == dtype
            assert np.abs(theirs - ours).max() <= (1e-12 if dtype == np.float64 else 1e-5)
            assert np.array_equal(theirs.argmax(1), ours.argmax(1))
