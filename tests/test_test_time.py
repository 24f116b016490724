"""Test-time shifts: a model that answers with its mean over every image moved by up to m pixels.

The views are checked against scipy.ndimage.shift, the averaged answer against the network run on
each view by hand, and the CLI's train, evaluate and predict against one another on real MNIST.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import assert_user_error, digitnet, last_json
from scipy import ndimage

from digitnet import modelfile, nn
from digitnet.data.augment import shifted_views
from digitnet.data.loader import Normalizer
from digitnet.errors import ConfigError, DigitnetError, ModelFileError
from digitnet.presets import preset


@pytest.mark.parametrize("shift", [1, 2])
def test_the_views_are_the_images_moved_by_every_whole_offset(mnist, shift):
    x = mnist.x_test[:50].astype(np.float32) / 255 - 0.25  # a fill that is not 0
    views = list(shifted_views(x, shift, 28, fill=-0.25))
    assert len(views) == (2 * shift + 1) ** 2 and np.array_equal(views[0], x)
    expected = [np.asarray(x)] + [
        np.stack([ndimage.shift(img.reshape(28, 28), (dy, dx), order=0, cval=-0.25) for img in x]).reshape(
            50, -1
        )
        for dy in range(-shift, shift + 1)
        for dx in range(-shift, shift + 1)
        if dy or dx
    ]
    got = sorted(v.tobytes() for v in views)
    assert got == sorted(e.astype(np.float32).tobytes() for e in expected)  # the same set of views
    assert len(set(got)) == len(got)  # each offset once


@pytest.fixture
def shifted_model(tmp_path, mnist):
    model = nn.mlp([784, 48, 10], rng=0)
    normalizer = Normalizer("standardize", 0.1307, 0.3081)
    x, y = normalizer(mnist.x_train[:3000]), mnist.y_train[:3000].astype(np.int64)
    opt, loss = nn.Adam(model.parameters(), lr=3e-3), nn.SoftmaxCrossEntropy()
    for _ in range(3):
        for i in range(0, len(x), 100):
            loss.forward(model.forward(x[i : i + 100]), y[i : i + 100])
            model.backward(loss.backward(), input_grad=False)
            opt.step()
    path = modelfile.save(
        tmp_path / "m.npz", model, normalizer, [str(i) for i in range(10)], test_time_shift=1
    )
    return model, normalizer, path


def test_the_model_answers_with_the_mean_of_its_nine_views(shifted_model, mnist):
    model, normalizer, path = shifted_model
    clf = modelfile.load(path)
    assert clf.test_time_shift == 1
    images = mnist.x_test[:300]
    fill = float(normalizer(np.zeros(1))[0])
    by_hand = np.mean(
        [
            nn.softmax(
                model.predict(
                    normalizer(ndimage.shift(images.reshape(-1, 28, 28), (0, dy, dx), order=0)).reshape(
                        300, -1
                    )
                )
            )
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ],
        axis=0,
    )
    assert fill < 0  # the shifted-in pixels are black after standardising, not 0
    np.testing.assert_allclose(clf.predict_proba(images), by_hand, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(images).sum(axis=1), 1, atol=1e-5)
    single = nn.softmax(model.predict(normalizer(images)))
    np.testing.assert_allclose(nn.softmax(clf.single_logits(images)), single, rtol=1e-5, atol=1e-7)
    assert np.abs(by_hand - single).max() > 0.05  # the views do change the answer


def test_a_model_without_shifts_answers_with_the_network_alone(tmp_path, mnist):
    model = nn.mlp([784, 16, 10], rng=1)
    clf = modelfile.load(modelfile.save(tmp_path / "m.npz", model, Normalizer("scale"), list("0123456789")))
    assert clf.test_time_shift == 0 and "test_time_shift" not in json.dumps(clf.meta)
    x = mnist.x_test[:64]
    assert np.array_equal(clf.logits(x), model.predict(Normalizer("scale")(x)))


def test_train_evaluate_and_predict_agree_on_the_shifted_model(tmp_path, small_npz, mnist):
    out = tmp_path / "run"
    result = digitnet(
        "train", "--preset", "adam-128-64", "--data", small_npz, "--hidden", "64", "--epochs", "2",
        "--test-time-shift", "1", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trained = last_json(result.stdout)
    assert trained["test_time_shift"] == 1 and "mean of 9 shifted views" in result.stdout
    assert trained["test_accuracy"] != trained["test_accuracy_single"]  # the views changed some answers
    evaluated = digitnet("evaluate", out, "--data", small_npz, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    figures = last_json(evaluated.stdout)
    assert figures["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-9)
    assert figures["test_accuracy_single"] == pytest.approx(trained["test_accuracy_single"], abs=1e-9)
    assert "mean of 9 views" in evaluated.stdout
    clf = modelfile.load(out)
    with np.load(out / "model.npz") as npz:
        meta = json.loads(bytes(npz["meta"]).decode())
    assert meta["test_time_shift"] == 1 and meta["config"]["test_time_shift"] == 1
    digits = clf.predict(mnist.x_test[:1000])
    assert np.mean(digits == mnist.y_test[:1000]) == pytest.approx(figures["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("value", ["4", "-1", "1.5", "x"])
def test_a_test_time_shift_out_of_range_is_one_error_line(tmp_path, small_npz, value):
    out = tmp_path / "run"
    result = digitnet("train", "--data", small_npz, "--epochs", "1", "--test-time-shift", value, "--out", out)
    assert_user_error(result)
    assert not out.exists()


def test_the_setting_is_checked_before_any_work():
    with pytest.raises(ConfigError, match="test-time shift"):
        preset("default", test_time_shift=4).validate()


@pytest.mark.parametrize("value", [4, -1, 1.0, "1", True, None])
def test_a_model_file_with_a_bad_shift_is_refused(shifted_model, tmp_path, value):
    _, _, path = shifted_model
    bad = tmp_path / "bad.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["test_time_shift"] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(bad, **arrays)
    with pytest.raises(ModelFileError, match="test_time_shift"):
        modelfile.load(bad)


def test_shifts_are_refused_for_a_network_of_images_that_are_not_square(tmp_path):
    model = nn.mlp([90, 8, 10], rng=0)
    with pytest.raises(DigitnetError, match="test_time_shift"):
        modelfile.save(tmp_path / "m.npz", model, Normalizer("scale"), list("0123456789"), test_time_shift=1)
    assert not (tmp_path / "m.npz").exists()


def test_the_page_answers_and_explains_with_the_views(shifted_model, mnist):
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    from test_web import post_json, start, stop

    _, _, path = shifted_model
    clf = modelfile.load(path)
    proc, host, port = start(path)
    try:
        changed = 0
        for x in mnist.x_test[:40]:
            status, _, body = post_json((host, port), {"pixels": x.tolist()})
            r = json.loads(body)
            assert status == 200
            model_p, single_p = clf.predict_proba(x[None, :])[0], nn.softmax(clf.single_logits(x[None, :]))[0]
            np.testing.assert_allclose(r["probabilities"], model_p, rtol=1e-5, atol=1e-6)
            assert r["digit"] == int(model_p.argmax())
            outputs = {tuple(p["to"]) for p in r["paths"] if p["to"][0] == len(clf.architecture["sizes"]) - 1}
            assert outputs <= {
                (len(clf.architecture["sizes"]) - 1, r["digit"])
            }  # the paths lead to the answer
            changed += not np.allclose(model_p, single_p, atol=1e-3)
        assert changed > 30  # the views, not the image alone, gave these answers
    finally:
        assert stop(proc)[0] == 0
