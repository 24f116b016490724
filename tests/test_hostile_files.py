"""Every hostile file gets one clear error (or a correct answer), quickly and in bounded memory.

The kinds are in ``hostile_files.py``: the small ones are committed under ``tests/hostile/``
(with whatever the fuzzers found), the bombs are built here. Each is read twice: in-process,
where the error's class and words are checked and ``tracemalloc`` bounds what was allocated;
and through the command line, as a user would, where the process's peak resident memory is
measured by the kernel (``wait4``) and its address space is capped so a regression fails here
instead of taking the machine.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_user_error
from hostile_files import (
    CORPUS,
    command_of,
    crash_input,
    expectation,
    kinds,
    reader_of,
    run_measured,
    write_corpus,
)

from digitnet import modelfile, nn
from digitnet.data import formats
from digitnet.data.datasets import load_dataset
from digitnet.data.loader import Normalizer
from digitnet.errors import DataError, DigitnetError, ModelFileError
from digitnet.interop.statedict import import_torch
from digitnet.preprocess import load_image

KINDS = {kind.name: kind for kind in kinds()}
LARGE = [name for name, kind in KINDS.items() if kind.large]
COMMITTED = sorted(p for p in CORPUS.iterdir() if not p.name.startswith("."))
MiB = 1 << 20
ERRORS = {"data": DataError, "model": ModelFileError, "torch": ModelFileError, "image": DataError}


def test_the_committed_corpus_is_every_small_kind(tmp_path):
    written = {p.name: p.read_bytes() if p.is_file() else None for p in write_corpus(tmp_path)}
    for name, data in written.items():
        committed = CORPUS / name
        assert committed.exists(), f"{name} is missing from {CORPUS}: run python tests/hostile_files.py"
        if data is not None:
            assert committed.read_bytes() == data, f"{name} changed: run python tests/hostile_files.py"
    assert len(written) + len(LARGE) == len(KINDS) >= 80


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A real model file for ``predict IMAGE`` (784-3-10, untrained: the images' errors come first)."""
    path = tmp_path_factory.mktemp("model") / "model.npz"
    return modelfile.save(path, nn.mlp([784, 3, 10], rng=0), Normalizer("scale"), [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("large")
    return {name: KINDS[name].build(folder) for name in LARGE}


def read(command_name: str, path: Path, cache: Path):
    reader = {"idx": formats.read_idx, "csv": formats.read_csv, "npz": formats.read_npz}.get(reader_of(path))
    if reader is not None:  # a fuzzer's crash file goes back to the reader that failed
        return reader(path)
    if command_name == "data":
        return load_dataset("mnist", data=path, cache_dir=cache)
    if command_name == "model":
        return modelfile.load(path)
    if command_name == "torch":
        return import_torch(path)
    return load_image(path)


def cli_args(command_name: str, path: Path, tmp_path: Path, model: Path, data: Path) -> list:
    return {
        "data": ["data", "info", "--data", path, "--cache-dir", tmp_path / "cache"],
        "model": ["evaluate", path, "--data", data, "--cache-dir", tmp_path / "cache"],
        "torch": ["import-torch", path, "--out", tmp_path / "imported.npz"],
        "image": ["predict", model, path],
    }[command_name]


def path_of(name: str, large) -> Path:
    return large[name] if name in large else CORPUS / name


ALL = sorted(KINDS) + sorted(p.name for p in COMMITTED if p.name.startswith("crash-"))


@pytest.mark.parametrize("name", ALL)
def test_hostile_file_in_process(name, large, tmp_path):
    path = path_of(name, large)
    which, expect = command_of(path), expectation(name)
    tracemalloc.start()
    try:
        if expect is None:
            assert read(which, path, tmp_path) is not None
        else:
            with pytest.raises(DigitnetError) as caught:
                read(which, path, tmp_path)
            assert isinstance(caught.value, ERRORS[which]), type(caught.value)
            assert expect in str(caught.value), str(caught.value)
            assert len(str(caught.value)) < 1000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * MiB, f"{name}: {peak / MiB:.0f} MiB allocated"


@pytest.mark.parametrize("name", ALL)
def test_hostile_file_on_the_command_line(name, large, tiny_model, small_npz, tmp_path):
    path = path_of(name, large)
    which, expect = command_of(path), expectation(name)
    result, peak = run_measured(
        cli_args(which, crash_input(path, tmp_path), tmp_path, tiny_model, small_npz), tmp_path
    )
    if expect is None:
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert_user_error(result, expect)
    assert peak < 1 << 30, f"{name}: peak resident memory {peak / MiB:.0f} MiB"
    assert not any(p.name.endswith(".part") for p in tmp_path.rglob("*"))
    if which == "torch":  # import-torch writes a model only when it can be read back
        imported = tmp_path / "imported.npz"
        assert imported.exists() == (expect is None)
        if expect is None:
            assert modelfile.load(imported).architecture["sizes"][-1] == 16


def test_twenty_square_layers_and_an_odd_one_chain_in_order():
    """The chain is found by its shapes: the odd layer first, then the squares in saved order."""
    clf = import_torch(CORPUS / "torch-chain-20-squares.pth")
    assert clf.architecture["sizes"] == [5] + [16] * 21
    assert list(clf.meta["torch_layers"].values()) == ["odd"] + [f"l{i}" for i in range(20)]


def test_a_refused_build_leaves_the_allowed_names_unchanged():
    from digitnet.interop import torchfile

    before = {key: (value.name, value.dtype) for key, value in torchfile.ALLOWED.items() if key[0] == "torch"}
    with pytest.raises(ModelFileError, match="tries to change"):
        import_torch(CORPUS / "torch-build-storage.pth")
    after = {key: (value.name, value.dtype) for key, value in torchfile.ALLOWED.items() if key[0] == "torch"}
    assert after == before
    assert import_torch(CORPUS / "torch-chain-20-squares.pth").dtype == np.float32  # the next file reads


def test_save_refuses_what_load_would_refuse(tmp_path):
    model = nn.mlp([784, 3, 10], rng=0)
    with pytest.raises(DigitnetError, match="could not read back"):
        modelfile.save(tmp_path / "m.npz", model, Normalizer("scale"), [None] * 10)
    with pytest.raises(DigitnetError, match="could not read back"):
        modelfile.save(tmp_path / "m.npz", model, Normalizer("scale"), list("0123456789"), dataset=["mnist"])
    with pytest.raises(DigitnetError, match="config.seed"):
        modelfile.save(
            tmp_path / "m.npz", model, Normalizer("scale"), list("0123456789"), config={"seed": "x"}
        )
    assert not list(tmp_path.iterdir())
    saved = modelfile.save(
        tmp_path / "m.npz", model, Normalizer("standardize", 0.13, 0.31), list("0123456789")
    )
    assert modelfile.load(saved).normalizer.to_dict() == {"kind": "standardize", "mean": 0.13, "std": 0.31}


def test_evaluate_refuses_an_empty_test_set(tiny_model, tmp_path):
    """It used to print "test accuracy: nan%" and exit 0."""
    result, _ = run_measured(["evaluate", tiny_model, "--data", CORPUS / "data-idx-empty-test"], tmp_path)
    assert_user_error(result, "holds no test images")
