"""``digitnet data fetch|info`` run as a user runs them: a subprocess."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import FASHION_DIR
from test_data_formats import KAGGLE_TRAIN_HEADER, csv_text


def digitnet(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_info_json(mnist, tmp_path):
    shutil.copy(mnist.cache_path, tmp_path / "mnist.npz")
    run = digitnet("data", "info", "--cache-dir", str(tmp_path), "--json")
    assert run.returncode == 0, run.stderr
    info = last_json(run.stdout)
    assert info["counts"] == {"train": 60000, "test": 10000}
    assert info["class_counts"]["test"][1] == 1135 and sum(info["class_counts"]["train"]) == 60000
    assert info["pixels"]["min"] == 0 and info["pixels"]["max"] == 255
    assert info["pixels"]["mean_scaled"] == pytest.approx(0.1307, abs=1e-4)
    assert info["source"] == f"cache {tmp_path / 'mnist.npz'}" and info["official"]
    assert info["class_names"] == list("0123456789")


def test_info_text_for_fashion(fashion):
    run = digitnet("data", "info", "--dataset", "fashion-mnist")
    assert run.returncode == 0, run.stderr
    assert "Ankle boot" in run.stdout and "60,000 train, 10,000 test" in run.stdout


def test_fetch_from_a_folder_fills_the_cache(fashion, tmp_path, dead_url):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    run = digitnet(
        "data",
        "fetch",
        "--dataset",
        "fashion-mnist",
        "--data",
        str(FASHION_DIR),
        "--cache-dir",
        str(tmp_path),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    info = last_json(run.stdout)
    assert info["cache"] == str(tmp_path / "fashion-mnist.npz") and info["official"]
    assert info["source"] == f"IDX files in {FASHION_DIR}"
    assert (tmp_path / "fashion-mnist.npz").is_file()
    run = digitnet(
        "data",
        "fetch",
        "--dataset",
        "fashion-mnist",
        "--cache-dir",
        str(tmp_path),
        env={"DIGITNET_FASHION_MNIST_MIRRORS": dead_url},
    )
    assert run.returncode == 0 and f"cache {tmp_path}" in run.stdout and "checksums match" in run.stdout


def test_held_out_test_set_is_reported(mnist, tmp_path):
    (tmp_path / "train.csv").write_text(csv_text(mnist.x_test[:700], mnist.y_test[:700], KAGGLE_TRAIN_HEADER))
    run = digitnet("data", "info", "--data", str(tmp_path / "train.csv"))
    assert run.returncode == 0, run.stderr
    assert "600 train, 100 test (held out from the training data)" in run.stdout
    assert "note: no labelled test set" in run.stdout


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda p: ["info", "--data", str(p / "missing.csv")], "does not exist"),
        (lambda p: ["info", "--data", str(p / "picture.png")], "not an IDX, CSV or NPZ file"),
        (
            lambda p: ["info", "--data", str(p / "bad.csv")],
            "line 3, column 1: label or pixel 'x' is not a number",
        ),
        (lambda p: ["info", "--data", str(p / "sub")], "holds no dataset"),
        (lambda p: ["fetch", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (
            lambda p: ["fetch", "--dataset", "mnist", "--data", str(p / "train.csv")],
            "not hold the official MNIST",
        ),
        (lambda p: ["fetch", "--cache-dir", str(p / "empty")], "could not fetch MNIST"),
        (lambda p: [], "required: ACTION"),
    ],
)
def test_mistakes_are_one_error_line(tmp_path, dead_url, make_args, message):
    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    row = "7," + ",".join(["0"] * 784)
    (tmp_path / "bad.csv").write_text(f"{KAGGLE_TRAIN_HEADER}\n{row}\nx{row[1:]}\n")
    (tmp_path / "train.csv").write_text("\n".join([row] * 20) + "\n")
    (tmp_path / "sub").mkdir()
    run = digitnet(
        "data", *make_args(tmp_path), env={"DIGITNET_MNIST_MIRRORS": dead_url, "DIGITNET_PIP_FALLBACK": "0"}
    )
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
