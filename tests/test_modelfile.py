"""The model file: exact round trip, shapes checked and named, never executes code, written atomically."""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest

from digitnet import modelfile, nn, training
from digitnet.data.loader import Normalizer
from digitnet.errors import ConfigError, ModelFileError


@pytest.fixture
def saved(tmp_path):
    model = nn.mlp([784, 32, 16, 10], activation="tanh", dropout=0.1, rng=0)
    path = modelfile.save(
        tmp_path / "m.npz",
        model,
        Normalizer("standardize", 0.13, 0.31),
        list("abcdefghij"),
        dataset="mnist",
        config={"seed": 3},
        metrics={"test_accuracy": 0.5},
    )
    return model, path


def test_round_trip_is_exact(saved, mnist):
    model, path = saved
    clf = modelfile.load(path)
    assert clf.architecture == {"sizes": [784, 32, 16, 10], "activation": "tanh", "dropout": 0.1}
    assert clf.class_names == list("abcdefghij") and clf.meta["config"] == {"seed": 3}
    for (name, a), (_, b) in zip(model.named_parameters(), clf.model.named_parameters(), strict=True):
        assert np.array_equal(a.data, b.data), name
    x = mnist.x_test[:100]
    model.eval()
    expected = nn.softmax(model.forward(Normalizer("standardize", 0.13, 0.31)(x)))
    assert np.array_equal(clf.predict_proba(x), expected)
    assert np.array_equal(clf.predict_proba(x.reshape(-1, 28, 28)), expected)


def test_bad_pixels_and_batch_sizes_are_the_callers_error(saved, mnist):
    """NaN pixels were blamed on the model ('its weights are too large'), a single number was an
    IndexError and batch_size=0 a ValueError from range(), once. Each is now a DataError or
    DigitnetError naming what was wrong; good pixels still answer."""
    from digitnet.errors import DataError, DigitnetError

    clf = modelfile.load(saved[1])
    for bad, words in (
        (np.full((1, 784), np.nan), "NaN"),
        (np.full((2, 784), np.inf), "infinity"),
        (np.full((1, 784), 1e300), "beyond 1e30"),
        (5, "a single number"),
        (np.array([["a"] * 784]), "numbers"),
    ):
        with pytest.raises(DataError, match=words):
            clf.predict(bad)
    for size in (0, -1, 2.5, True):
        with pytest.raises(DigitnetError, match="batch_size must be a whole number"):
            clf.predict_proba(mnist.x_test[:3], batch_size=size)
    assert clf.predict(mnist.x_test[:3].astype(np.float64), batch_size=2).shape == (3,)


def test_loading_a_run_folder_finds_its_model(saved, tmp_path):
    _, path = saved
    os.rename(path, tmp_path / "model.npz")
    assert modelfile.load(tmp_path).architecture["sizes"] == [784, 32, 16, 10]


def rewrite(path, out, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(out, "wb") as fh:
        np.savez(fh, **arrays)
    return out


def test_a_wrong_shape_is_named(saved, tmp_path):
    _, path = saved
    bad = rewrite(
        path, tmp_path / "bad.npz", lambda a: a.update({"param/3.weight": np.zeros((32, 17), np.float32)})
    )
    with pytest.raises(ModelFileError, match=r"'3.weight' has shape \(32, 17\).*needs \(32, 16\)"):
        modelfile.load(bad)


def test_a_missing_parameter_is_named(saved, tmp_path):
    _, path = saved
    bad = rewrite(path, tmp_path / "bad.npz", lambda a: a.pop("param/0.bias"))
    with pytest.raises(ModelFileError, match="'0.bias' is missing"):
        modelfile.load(bad)


def test_other_formats_and_versions_are_refused(saved, tmp_path):
    _, path = saved

    def meta(**change):
        def edit(arrays):
            m = json.loads(arrays["meta"].tobytes())
            m.update(change)
            arrays["meta"] = np.frombuffer(json.dumps(m).encode(), np.uint8)

        return edit

    with pytest.raises(ModelFileError, match="format version 99"):
        modelfile.load(rewrite(path, tmp_path / "v.npz", meta(format_version=99)))
    with pytest.raises(ModelFileError, match="not a digitnet model"):
        modelfile.load(rewrite(path, tmp_path / "f.npz", meta(format="keras")))
    plain = tmp_path / "plain.npz"
    np.savez(plain, x_train=np.zeros((2, 784), np.uint8))
    with pytest.raises(ModelFileError, match="no 'meta'"):
        modelfile.load(plain)


@pytest.mark.parametrize("content", [b"", b"hello, not a model", b"PK\x03\x04truncated zip"])
def test_junk_is_refused(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a digitnet model file"):
        modelfile.load(path)


def test_a_truncated_model_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        modelfile.load(cut)


class Exploit:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_inside_is_refused_and_never_runs(saved, tmp_path):
    _, path = saved
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    buf = io.BytesIO()
    np.save(buf, np.array([Exploit(str(marker))], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = buf.getvalue() if item.filename == "param/0.weight.npy" else src.read(item)
            dst.writestr(item.filename, data)
    with pytest.raises(ModelFileError, match="pickled Python objects, which digitnet never loads"):
        modelfile.load(evil)
    assert not marker.exists()


def test_nan_weights_are_refused(saved, tmp_path):
    _, path = saved
    bad = rewrite(
        path,
        tmp_path / "nan.npz",
        lambda a: a.update({"param/0.weight": np.full((784, 32), np.nan, np.float32)}),
    )
    with pytest.raises(ModelFileError, match="NaN"):
        modelfile.load(bad)


@pytest.mark.parametrize("shift", [0, 1])
def test_outputs_past_the_float_range_are_an_error_not_nan(tmp_path, mnist, shift):
    """Finite weights too large for float32: such a model answered NaN for every image, NumPy warning on
    stderr (evaluate read every image as class 0)."""
    model = nn.mlp([784, 32, 10], rng=0)
    model.layers[0].weight.data[:] = 3e38  # two inked pixels sum past float32's largest number
    path = modelfile.save(
        tmp_path / "big.npz", model, Normalizer("scale"), list("0123456789"), test_time_shift=shift
    )
    loaded = modelfile.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelFileError, match=r"big.npz: its outputs overflow float32 on 10 of 10 images"):
            loaded.predict_proba(mnist.x_test[:10])
        with pytest.raises(ModelFileError, match="on 3 of 5 images"):  # blank images stay finite
            loaded.predict(np.concatenate([mnist.x_test[:3], np.zeros((2, 784), np.uint8)]))
    # logits that are finite but far apart are an answer: probabilities of 0 and 1, no warning
    model.layers[0].weight.data[:] = 0
    model.layers[2].bias.data[:] = np.float32(-3e38)
    model.layers[2].bias.data[7] = np.float32(3e38)
    loaded = modelfile.load(
        modelfile.save(tmp_path / "far.npz", model, Normalizer("scale"), list("0123456789"))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(loaded.predict_proba(mnist.x_test[:2]), np.eye(10, dtype=np.float32)[[7, 7]])


def test_a_failed_save_keeps_the_old_file(saved, tmp_path):
    model, path = saved
    before = path.read_bytes()

    class Boom(Exception):
        pass

    def explode(*a, **k):
        raise Boom

    real = np.savez
    np.savez = explode
    try:
        with pytest.raises(Boom):
            modelfile.save(path, model, Normalizer(), list("0123456789"))
    finally:
        np.savez = real
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


@pytest.mark.parametrize("hidden", [[8] * training.MAX_LAYERS, [training.MAX_UNITS]])
def test_the_largest_network_the_settings_allow_is_one_a_model_file_holds(tmp_path, hidden):
    """The flags' limits and the model file's schema agree: nothing trains that then cannot be saved."""
    config = training.TrainConfig(hidden=tuple(hidden)).validate()
    model = nn.mlp([784, *config.hidden, 10], rng=0)
    path = modelfile.save(tmp_path / "model.npz", model, Normalizer("scale"), list("0123456789"))
    assert modelfile.load(path).architecture["sizes"] == [784, *hidden, 10]
    with pytest.raises(ConfigError):
        training.TrainConfig(
            hidden=tuple(hidden) + (8,) if len(hidden) > 1 else (training.MAX_UNITS + 1,)
        ).validate()
