"""Property-based fuzzing of every reader: mutated real files give a result or one DigitnetError.

Each reader starts from a valid file made from real MNIST digits (IDX, CSV, Keras NPZ, a model
file, a ``.pth`` and a ``.safetensors`` export, a PNG) and Hypothesis mutates it: bytes flipped,
set, inserted, deleted, duplicated, the file cut short; for archives also inside a member, which
is then packed again, so the mutations reach the ``.npy`` headers, the pickle and the JSON instead
of stopping at a CRC. The contract, for every mutant: the reader returns a result that works (a
model predicts) or raises a :class:`~digitnet.errors.DigitnetError` with a short message, and
allocates less than :data:`PEAK` (measured by ``tracemalloc``, which NumPy reports to).

The run has a fixed budget, ``EXAMPLES`` mutants a reader (about 20 s in all on a 2-core machine),
derandomised so that ``make test`` is repeatable; ``DIGITNET_FUZZ_EXAMPLES=N`` runs N a reader with
fresh randomness. ``make fuzz`` runs the long coverage-guided search (``fuzz/fuzz_readers.py``).
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from hostile_files import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from digitnet import modelfile, nn, preprocess
from digitnet.data import formats
from digitnet.data.loader import Normalizer
from digitnet.errors import DigitnetError
from digitnet.interop import export_pth, export_safetensors
from digitnet.interop.statedict import import_torch

EXAMPLES = 250
PEAK = 100 << 20
FUZZ = fuzz_settings(EXAMPLES)


# --------------------------------------------------------------------------- mutations
@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with 1-6 byte-level mutations, half of them in its first 256 bytes (the header)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        end = max(len(data) - 1, 0)
        at = draw(st.one_of(st.integers(0, min(255, end)), st.integers(0, end)))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate"]))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def mutated_archive(draw, seed: bytes) -> bytes:
    """A zip with one member mutated (or the archive's own bytes), packed again."""
    if draw(st.booleans()):
        return draw(mutated(seed))
    with zipfile.ZipFile(io.BytesIO(seed)) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    name = draw(st.sampled_from(sorted(members)))
    members[name] = draw(mutated(members[name]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in members.items():
            zf.writestr(key, value)
    return buf.getvalue()


@st.composite
def mutated_gzip(draw, seed: bytes) -> bytes:
    """A gzip file with its content mutated, or its compressed bytes."""
    if draw(st.booleans()):
        return draw(mutated(seed))
    return gzip.compress(draw(mutated(gzip.decompress(seed))), mtime=0)


# --------------------------------------------------------------------------- valid seeds
@pytest.fixture(scope="module")
def seeds(mnist, tmp_path_factory) -> dict[str, bytes]:
    """One valid file a reader, from real MNIST test digits."""
    folder = tmp_path_factory.mktemp("seeds")
    x, y = mnist.x_test[:12], mnist.y_test[:12]
    formats.write_idx(folder / "images.idx.gz", x.reshape(-1, 28, 28))
    formats.write_idx(folder / "labels.idx", y)
    rows = "\n".join(",".join(map(str, [label, *pixels])) for label, pixels in zip(y, x, strict=True))
    buf = io.BytesIO()
    np.savez(
        buf, x_train=x[:8].reshape(-1, 28, 28), y_train=y[:8], x_test=x[8:].reshape(-1, 28, 28), y_test=y[8:]
    )
    model = nn.mlp([784, 6, 10], rng=0)
    clf = modelfile.Classifier(
        model,
        Normalizer("scale"),
        [str(i) for i in range(10)],
        modelfile.architecture_of(model),
        {"dataset": "mnist"},
    )
    modelfile.save(folder / "model.npz", model, Normalizer("scale"), clf.class_names, dataset="mnist")
    export_pth(clf, folder / "model.pth")
    export_safetensors(clf, folder / "model.safetensors")
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(255 - x[0].reshape(28, 28)).resize((84, 84)).save(png, format="PNG")
    return {
        "idx-gz": (folder / "images.idx.gz").read_bytes(),
        "idx": (folder / "labels.idx").read_bytes(),
        "csv": ("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n" + rows + "\n").encode(),
        "npz": buf.getvalue(),
        "model": (folder / "model.npz").read_bytes(),
        "pth": (folder / "model.pth").read_bytes(),
        "safetensors": (folder / "model.safetensors").read_bytes(),
        "png": png.getvalue(),
    }


def check_contract(tmp_path, name: str, data: bytes, read, use=None) -> None:
    """Write ``data`` to ``name``; ``read(path)`` must return (and ``use`` work on it) or raise one DigitnetError."""
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        try:
            result = read(path)
            if use is not None:
                use(result)
        except DigitnetError as exc:
            message = str(exc)
            assert message and len(message) < 2000, message[:300]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK, f"{peak >> 20} MiB allocated reading a {len(data)}-byte file"


def predicts(clf) -> None:
    probabilities = clf.predict_proba(np.zeros((2, clf.architecture["sizes"][0]), np.uint8))
    assert probabilities.shape == (2, len(clf.class_names))


# --------------------------------------------------------------------------- the readers
@FUZZ
@given(data=st.data())
def test_idx_reader(seeds, tmp_path, data):
    gz = data.draw(st.booleans())
    mutant = data.draw(mutated_gzip(seeds["idx-gz"]) if gz else mutated(seeds["idx"]))
    check_contract(tmp_path, "f.idx", mutant, formats.read_idx)


@FUZZ
@given(data=st.data())
def test_csv_reader(seeds, tmp_path, data):
    mutant = data.draw(mutated(seeds["csv"]))
    if data.draw(st.booleans()):
        mutant = gzip.compress(mutant, mtime=0)
    check_contract(tmp_path, "f.csv", mutant, formats.read_csv)


@FUZZ
@given(data=st.data())
def test_npz_reader(seeds, tmp_path, data):
    check_contract(tmp_path, "f.npz", data.draw(mutated_archive(seeds["npz"])), formats.read_npz)


@FUZZ
@given(data=st.data())
def test_model_file_reader(seeds, tmp_path, data):
    check_contract(
        tmp_path, "model.npz", data.draw(mutated_archive(seeds["model"])), modelfile.load, predicts
    )


@FUZZ
@given(data=st.data())
def test_torch_file_reader(seeds, tmp_path, data):
    check_contract(tmp_path, "model.pth", data.draw(mutated_archive(seeds["pth"])), import_torch, predicts)


@FUZZ
@given(data=st.data())
def test_safetensors_reader(seeds, tmp_path, data):
    mutant = data.draw(mutated(seeds["safetensors"]))
    check_contract(tmp_path, "model.safetensors", mutant, import_torch, predicts)


@FUZZ
@given(data=st.data())
def test_image_reader(seeds, tmp_path, data):
    check_contract(tmp_path, "digit.png", data.draw(mutated(seeds["png"])), preprocess.prepare)
