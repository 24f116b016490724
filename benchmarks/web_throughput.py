"""How many predictions a second ``digitnet serve`` answers on this machine, over loopback.

Starts the real command (``digitnet serve MODEL --port 0``: Gunicorn, 2 gevent
worker processes), then sends a bounded number of requests from a few
client threads on keep-alive connections, and prints requests a second and
latency percentiles for the two kinds of request the page makes:

* ``png``: a 280 x 280 canvas PNG of a drawn digit (decoded and preprocessed
  by the server, as while drawing);
* ``pixels``: JSON ``{"pixels": [784 values]}`` (as "random test digit" does).

The reference is the same work done in this process, one request after
another, with no HTTP: the ratio says what serving adds or gains (on 2 cores
the server can beat it, running two processes). The target is 200/s.

    python benchmarks/web_throughput.py [MODEL] [--requests 2000] [--clients 4]

Without MODEL a small network is trained on MNIST first (a few seconds).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The tests' own small trained model (adam-128-64), made once in a folder removed at exit.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from digit_images import trained_model  # noqa: E402

TARGET = 200.0


def canvas_png() -> bytes:
    """A digit 3 drawn with a round brush on the page's 280 x 280 black pad, as the browser sends it."""
    im = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(im)
    pts = [
        (80, 70),
        (140, 45),
        (195, 80),
        (180, 125),
        (130, 140),
        (190, 165),
        (195, 215),
        (140, 240),
        (80, 220),
    ]
    draw.line(pts, fill=255, width=19, joint="curve")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def start_server(model, workers: int = 2):
    """``(process, "127.0.0.1", port)`` of a ``digitnet serve`` started on a free port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitnet",
            "serve",
            str(model),
            "--port",
            "0",
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stderr.read()}")
    url = line.split("http://")[1].split("/")[0]
    host, port = url.rsplit(":", 1)
    return proc, host, int(port)


def load(host: str, port: int, body: bytes, content_type: str, requests: int, clients: int) -> dict:
    """Send ``requests`` POST /api/predict from ``clients`` threads; return rate and latencies."""
    latencies, failures, lock = [], [], threading.Lock()
    share = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine = []
        for _ in range(n):
            t = time.perf_counter()
            conn.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - t)
            if response.status != 200 or b'"digit"' not in data:
                failures.append(response.status)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": requests,
        "failures": len(failures),
        "seconds": seconds,
        "rate": requests / seconds,
        "p50_ms": 1e3 * q[49],
        "p95_ms": 1e3 * q[94],
    }


def in_process_rate(model, body: bytes, pixels: list, seconds: float = 2.0) -> dict:
    """Predictions a second done here, one after another, without HTTP: the reference."""
    from digitnet import modelfile, preprocess
    from digitnet.web import explain

    clf = modelfile.load(model)
    rates = {}
    for kind in ("png", "pixels"):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            x = (
                preprocess.prepare(body).pixels.reshape(1, -1)
                if kind == "png"
                else np.asarray([pixels], np.float32)
            )
            explain.trace(clf.model, clf.prepare(x))
            n += 1
        rates[kind] = n / (time.perf_counter() - start)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from digitnet.data import load_dataset

    model = args.model or trained_model(load_dataset("mnist"))
    png = canvas_png()
    from digitnet import preprocess

    pixels = preprocess.prepare(png).pixels.reshape(-1).tolist()
    reference = in_process_rate(model, png, pixels)
    proc, host, port = start_server(model, args.workers)
    try:
        load(host, port, png, "image/png", 50, 2)  # warm up
        print(
            f"digitnet serve, {args.workers} gevent worker processes, "
            f"{args.clients} clients on 127.0.0.1, {os.cpu_count()} cores:"
        )
        for kind, body, ctype in [
            ("png", png, "image/png"),
            ("pixels", json.dumps({"pixels": pixels}).encode(), "application/json"),
        ]:
            r = load(host, port, body, ctype, args.requests, args.clients)
            print(
                f"  {kind:6s} {r['rate']:7.1f} predictions/s  ({r['requests']} requests, {r['failures']} failed; "
                f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms)  "
                f"x{r['rate'] / TARGET:.2f} the 200/s target, x{r['rate'] / reference[kind]:.2f} "
                f"in-process ({reference[kind]:.0f}/s)"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
