"""Every command through a real subprocess: the JSON contract, --help, and every bad input.

The runs train on a real slice of MNIST (6,000 training and 1,000 test images
written as an NPZ in Keras's layout) so that each takes a second or two.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from clitools import assert_user_error, digitnet, last_json

from digitnet import __version__


@pytest.fixture(scope="module")
def trained(small_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = digitnet(
        "train", "--preset", "adam-128-64", "--epochs", "2", "--data", small_npz, "--out", out, "--json"
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_writes_a_run_folder_and_keeps_the_json_contract(trained):
    out, result = trained
    info = last_json(result.stdout)
    assert set(info) >= {
        "test_accuracy",
        "val_accuracy",
        "train_seconds",
        "epoch_seconds",
        "epochs",
        "model",
        "run_dir",
    }
    assert info["epochs"] == 2 and len(info["epoch_seconds"]) == 2
    assert info["test_accuracy"] > 0.85 and info["model"] == str(out / "model.npz")
    assert {p.name for p in out.iterdir()} >= {
        "config.json",
        "history.csv",
        "history.json",
        "metrics.json",
        "model.npz",
    }
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2 * -(-5400 // 64) and len(history["epochs"]) == 2
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_accuracy")
    assert json.loads((out / "config.json").read_text())["hidden"] == [128, 64]
    assert "test accuracy:" in result.stdout


def test_evaluate_agrees_with_train(trained, small_npz):
    out, train_result = trained
    result = digitnet("evaluate", out / "model.npz", "--data", small_npz, "--json")
    assert result.returncode == 0, result.stderr
    info = last_json(result.stdout)
    assert info["test_accuracy"] == pytest.approx(last_json(train_result.stdout)["test_accuracy"])
    assert info["n"] == 1000
    cm = np.array(info["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 1000
    assert np.trace(cm) / 1000 == pytest.approx(info["test_accuracy"])
    assert [c["support"] for c in info["per_class"]] == cm.sum(axis=1).tolist()
    assert info["top2_accuracy"] >= info["test_accuracy"] and info["seconds"] > 0
    assert "confusion matrix" in result.stdout


def test_predict_gives_digits_and_probabilities(trained, small_npz, mnist):
    out, _ = trained
    result = digitnet("predict", out, "--index", 0, 1, 2, "--data", small_npz, "--json")
    assert result.returncode == 0, result.stderr
    predictions = last_json(result.stdout)["predictions"]
    assert [p["input"] for p in predictions] == ["test[0]", "test[1]", "test[2]"]
    for p in predictions:
        assert len(p["probabilities"]) == 10 and sum(p["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert p["digit"] == int(np.argmax(p["probabilities"]))
    # The first three MNIST test digits are a 7, a 2 and a 1, and even a small model reads them.
    assert [p["digit"] for p in predictions] == mnist.y_test[:3].tolist()


def test_version_and_help():
    result = digitnet("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"digitnet {__version__}"
    for command in ["train", "evaluate", "predict", "data"]:
        result = digitnet(command, "--help")
        assert result.returncode == 0 and "usage: digitnet " + command in result.stdout
    assert "adam-128-64" in digitnet("train", "--help").stdout


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--lr", "0"], "learning rate must be > 0"),
        (["--lr", "-0.1"], "learning rate must be > 0"),
        (["--batch-size", "0"], "batch size"),
        (["--hidden", "128,0"], "hidden sizes must be at least 1"),
        (["--hidden", "12a"], "hidden sizes must be whole numbers"),
        (["--dropout", "1"], "dropout must be in [0, 1)"),
        (["--epochs", "0"], "epochs must be a whole number from 1 to"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--init", "magic"], "unknown initialiser 'magic'"),
        (["--lr", "fast"], "expected a number, got 'fast'"),
    ],
)
def test_impossible_training_settings(flags, fragment, tmp_path):
    result = digitnet("train", *flags, "--out", tmp_path / "run")
    assert_user_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_bad_data_files(tmp_path, mnist):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(
        "label," + ",".join(f"p{i}" for i in range(784)) + "\n" + "3," + ",".join(["0"] * 783) + ",256\n"
    )
    assert_user_error(digitnet("train", "--data", bad_csv, "--out", tmp_path / "r1"), "256")
    not_data = tmp_path / "notes.txt"
    not_data.write_bytes(b"\x00\x01\x02 just some bytes that are no dataset\xff")
    assert_user_error(digitnet("train", "--data", not_data, "--out", tmp_path / "r2"))
    assert_user_error(
        digitnet("train", "--data", tmp_path / "missing.csv", "--out", tmp_path / "r3"), "missing.csv"
    )
    assert not any((tmp_path / r).exists() for r in ["r1", "r2", "r3"])


def test_bad_model_files(tmp_path):
    junk = tmp_path / "model.npz"
    junk.write_bytes(b"not a model at all")
    assert_user_error(digitnet("evaluate", junk), "not a digitnet model file")
    assert_user_error(digitnet("evaluate", tmp_path / "nowhere.npz"), "does not exist")
    assert_user_error(digitnet("predict", junk, "--index", "0"), "not a digitnet model file")


def test_mismatched_shapes_are_named(trained, tmp_path):
    out, _ = trained
    with np.load(out / "model.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["param/2.weight"] = np.zeros((128, 65), np.float32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert_user_error(digitnet("evaluate", bad), "'2.weight' has shape (128, 65)")


def test_predict_index_out_of_range(trained, small_npz):
    out, _ = trained
    assert_user_error(
        digitnet("predict", out, "--index", "1000", "--data", small_npz), "outside the test set"
    )


def test_an_existing_run_folder_is_never_overwritten(trained, small_npz):
    out, _ = trained
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = digitnet("train", "--epochs", "1", "--data", small_npz, "--out", out)
    assert_user_error(result, "already exists")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_csv_without_test_set_holds_one_out(tmp_path, mnist):
    csv = tmp_path / "train.csv"
    rows = np.column_stack([mnist.y_train[:3000], mnist.x_train[:3000]])
    np.savetxt(
        csv,
        rows,
        fmt="%d",
        delimiter=",",
        header="label," + ",".join(f"pixel{i}" for i in range(784)),
        comments="",
    )
    result = digitnet(
        "train",
        "--preset",
        "adam-128-64",
        "--hidden",
        "32",
        "--epochs",
        "1",
        "--data",
        csv,
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("as the test set") == 1, "said once"
    info = last_json(result.stdout)
    assert info["test_held_out"] is True and info["test_accuracy"] > 0.5


def test_ctrl_c_stops_after_the_batch_and_still_saves(small_npz, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitnet",
            "train",
            "--preset",
            "adam-128-64",
            "--epochs",
            "500",
            "--data",
            small_npz,
            "--out",
            str(out),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if line.startswith("epoch"):
            break
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in rest
    info = last_json(rest)
    assert info["interrupted"] is True and 1 <= info["epochs"] < 500
    history = json.loads((out / "history.json").read_text())
    assert history["interrupted"] is True
    assert (out / "model.npz").exists()


FAST_DEFAULT = ["--preset", "default", "--augment-elastic-alpha", "0", "--test-time-shift", "0"]


@pytest.mark.parametrize(
    "flags, advice",
    [
        (["--preset", "adam-128-64", "--optimizer", "sgd", "--lr", "1e6"], "lower learning rate"),
        # a rate beyond float32's range, on a network whose Adam step is split across threads
        ([*FAST_DEFAULT, "--lr", "1e300"], "lower learning rate"),
        # a finite loss whose gradients' norm overflows (it was a traceback as the checkpoint refused it)
        ([*FAST_DEFAULT, "--dtype", "float64", "--l2", "1e300"], "smaller L2 penalty or weight decay"),
    ],
)
def test_divergence_is_a_clear_error_and_writes_nothing(small_npz, tmp_path, flags, advice):
    result = digitnet("train", *flags, "--epochs", "2", "--data", small_npz, "--out", tmp_path / "run")
    assert_user_error(result, advice)
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir()]
