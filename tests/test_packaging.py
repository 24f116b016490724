"""digitnet as a user installs it: the sdist and wheel built, the wheel installed with its extras into a
fresh virtual environment (no access to this checkout), then trained and served from there.

This catches what the editable install of the other tests hides: a module or a static file missing from
the package data, a dependency used but not declared, an entry point that does not resolve.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import digitnet
from digitnet.data.sources import cache_dir

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("build")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory, mnist):
    """Build the sdist and, from it, the wheel; install the wheel with the `web` extra in a new venv.

    Returns ``(bin_dir, env, folder)``: the venv's bin, an environment without this checkout on any path
    (MNIST read from the same cache the other tests filled), and a scratch folder.
    """
    folder = tmp_path_factory.mktemp("packaging")
    dist = folder / "dist"
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT)], timeout=600)
    venv = folder / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    (wheel,) = dist.glob("digitnet-*.whl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["DIGITNET_CACHE"] = str(cache_dir())
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[web]"], timeout=900, env=env)
    return venv / "bin", env, folder


def test_the_sdist_and_wheel_carry_the_code_the_page_and_the_docs(installed):
    _, _, folder = installed
    (wheel,) = (folder / "dist").glob("digitnet-*.whl")
    (sdist,) = (folder / "dist").glob("digitnet-*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "digitnet").rglob("*.py")}
    assert modules <= in_wheel, sorted(modules - in_wheel)
    static = {f"digitnet/web/static/{p.name}" for p in (ROOT / "src/digitnet/web/static").iterdir()}
    assert static and static <= in_wheel, sorted(static - in_wheel)
    in_sdist = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    assert {"README.md", "pyproject.toml", "src/digitnet/web/static/index.html"} <= in_sdist


def test_the_installed_wheel_trains_one_epoch_and_serves_the_page(installed):
    bin_dir, env, folder = installed
    where = run(
        [str(bin_dir / "python"), "-c", "import digitnet; print(digitnet.__file__)"], cwd=folder, env=env
    )
    assert where.stdout.strip().startswith(str(bin_dir.parent)), where.stdout  # not this checkout
    version = run([str(bin_dir / "digitnet"), "--version"], cwd=folder, env=env)
    assert digitnet.__version__ in version.stdout

    out = folder / "run"
    trained = run(
        [
            str(bin_dir / "digitnet"),
            "train",
            "--preset",
            "adam-128-64",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--json",
        ],
        cwd=folder,
        env=env,
        timeout=600,
    )
    metrics = json.loads(trained.stdout.strip().splitlines()[-1])
    assert metrics["test_accuracy"] > 0.9, metrics

    proc = subprocess.Popen(
        [str(bin_dir / "digitnet"), "serve", str(out / "model.npz"), "--port", "0"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "http://" in line, line + proc.stderr.read()
        host, port = re.search(r"http://([\d.]+):(\d+)/", line).groups()

        def get(path, body=None):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request("POST" if body is not None else "GET", path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()

        status, page = get("/")
        assert status == 200 and b"<canvas" in page
        links = re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)
        assert len(links) >= 2
        for link in links:
            status, body = get(link.decode())
            assert status == 200 and len(body) > 1000, link
        status, body = get("/api/predict", json.dumps({"pixels": [[0] * 28] * 28}))
        assert status == 200 and len(json.loads(body)["probabilities"]) == 10
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
