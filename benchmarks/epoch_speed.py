"""Seconds per training epoch and inference time: digitnet against PyTorch, scikit-learn and a bare NumPy loop.

The work: 784-128-64-10 ReLU network, Adam (lr 1e-3), batch 64, one epoch over
the 60,000 MNIST training images (float32), then predicting the 10,000 test
images. Every contestant runs on the same arrays, each in a fresh process of its own
(PyTorch's OpenMP threads and NumPy's OpenBLAS threads slow each other down
when they share one), and the rounds interleave them (digitnet, PyTorch, ...,
digitnet, PyTorch, ...) so a noisy machine slows them alike. The figures that
matter are the ratios.

Target (issue: train and evaluate end to end): digitnet's epoch takes at most
0.65x PyTorch's on the CPU. ``--check`` exits 1 when it does not.

Run it with the BLAS kernel chosen by the machine, not forced:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/epoch_speed.py``
(``make bench`` does that).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from digitnet import nn
from digitnet.data.datasets import load_dataset
from digitnet.data.loader import DataLoader

SIZES = [784, 128, 64, 10]
BATCH = 64
LR = 1e-3
TARGET = 0.65


def digitnet_runner(x, y, seed):
    model = nn.mlp(SIZES, rng=seed, init="torch_default")
    opt = nn.Adam(model.parameters(), lr=LR)
    loss_fn = nn.SoftmaxCrossEntropy()
    loader = DataLoader(x, y, BATCH, rng=seed)

    def epoch():
        model.train()
        for xb, yb in loader:
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

    def infer(xt):
        model.eval()
        return model.forward(xt).argmax(axis=1)

    return epoch, infer


def bare_numpy_runner(x, y, seed):
    """The plainest float32 NumPy loop a person would write: the floor to compare against."""
    rng = np.random.default_rng(seed)
    ws = [
        rng.uniform(-1, 1, (a, b)).astype(np.float32) / np.sqrt(a)
        for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    bs = [np.zeros(b, np.float32) for b in SIZES[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    state = {"t": 0}

    def epoch():
        order = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            xb, yb = x[idx], y[idx]
            a1 = np.maximum(xb @ ws[0] + bs[0], 0)
            a2 = np.maximum(a1 @ ws[1] + bs[1], 0)
            z = a2 @ ws[2] + bs[2]
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g3 = p / len(yb)
            g2 = (g3 @ ws[2].T) * (a2 > 0)
            g1 = (g2 @ ws[1].T) * (a1 > 0)
            grads = [xb.T @ g1, a1.T @ g2, a2.T @ g3, g1.sum(0), g2.sum(0), g3.sum(0)]
            state["t"] += 1
            t = state["t"]
            for k, (pk, gk) in enumerate(zip(params, grads, strict=True)):
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk * gk
                pk -= LR * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)

    def infer(xt):
        a = np.maximum(xt @ ws[0] + bs[0], 0)
        a = np.maximum(a @ ws[1] + bs[1], 0)
        return (a @ ws[2] + bs[2]).argmax(1)

    return epoch, infer


def torch_runner(x, y, seed):
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        model.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()

    def infer(xtest):
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(xtest)).argmax(1).numpy()

    return epoch, infer


def sklearn_runner(x, y, seed):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(SIZES[1:-1]),
        solver="adam",
        learning_rate_init=LR,
        batch_size=BATCH,
        max_iter=1,
        shuffle=True,
        random_state=seed,
    )
    classes = np.arange(10)

    def epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(x, y, classes=classes)

    def infer(xt):
        return clf.predict(xt)

    return epoch, infer


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [
            i for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")
        ]
        return (
            ", ".join(
                f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} kernel, "
                f"{i.get('num_threads')} threads"
                for i in info
            )
            or "unknown"
        )
    except ImportError:
        return "unknown (install threadpoolctl)"


RUNNERS = {
    "digitnet": digitnet_runner,
    "pytorch": torch_runner,
    "bare numpy": bare_numpy_runner,
    "scikit-learn": sklearn_runner,
}
NEEDS = {"pytorch": "torch", "scikit-learn": "sklearn"}


def measure(name: str, epochs: int) -> dict:
    """Time ``epochs`` epochs (after one warm-up) and 10,000 predictions for one contestant, in this process."""
    ds = load_dataset("mnist")
    x = ds.x_train.astype(np.float32) / 255
    y = ds.y_train.astype(np.intp)
    xt = ds.x_test.astype(np.float32) / 255
    epoch, infer = RUNNERS[name](x, y, 0)
    epoch()  # warm-up: first-touch allocations, lazy imports
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - started)
    infer_times = []
    for _ in range(5):
        started = time.perf_counter()
        infer(xt)
        infer_times.append(time.perf_counter() - started)
    out = {"epoch_seconds": times, "inference_seconds": min(infer_times)}
    if name == "pytorch":
        import torch

        out["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; in each, every contestant runs one timed epoch in a fresh process (default 3)",
    )
    ap.add_argument(
        "--skip", nargs="*", default=[], help="contestants to leave out: pytorch scikit-learn 'bare numpy'"
    )
    ap.add_argument("--check", action="store_true", help=f"exit 1 unless digitnet/PyTorch <= {TARGET}")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # one contestant, one process: no thread pools fighting
        print(json.dumps(measure(args.worker, 1)))
        return 0

    names = [n for n in RUNNERS if n not in args.skip and (n not in NEEDS or available(NEEDS[n]))]
    epoch_times = {n: [] for n in names}
    infer_runs = {n: [] for n in names}
    extra = {}
    for _ in range(args.rounds):  # rounds interleave the contestants, so noise hits all alike
        for name in names:
            run = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr}")
            got = json.loads(run.stdout.strip().splitlines()[-1])
            epoch_times[name] += got["epoch_seconds"]
            infer_runs[name].append(got["inference_seconds"])
            extra.update({k: v for k, v in got.items() if k == "torch"})

    epoch_s = {n: statistics.median(t) for n, t in epoch_times.items()}
    infer_times = {n: min(t) for n, t in infer_runs.items()}
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_kernel(),
        "epoch_seconds": epoch_s,
        "inference_seconds_10k": infer_times,
        "ratio_epoch_vs": {n: epoch_s["digitnet"] / s for n, s in epoch_s.items() if n != "digitnet"},
        "ratio_inference_vs": {
            n: infer_times["digitnet"] / s for n, s in infer_times.items() if n != "digitnet"
        },
        "target_ratio_vs_pytorch": TARGET,
        **extra,
    }

    print(
        f"MNIST, {'-'.join(map(str, SIZES))} ReLU, Adam, batch {BATCH}: median epoch of {args.rounds} rounds, "
        "each contestant in its own process"
    )
    print(
        f"machine: {result['machine']}; Python {result['python']}, NumPy {result['numpy']}; BLAS {result['blas']}"
        + (f"; PyTorch {result['torch']}" if "torch" in result else "")
    )
    print(f"{'':14}{'s/epoch':>10}{'digitnet is':>14}{'infer 10k s':>14}{'digitnet is':>14}")
    for name in names:
        er = result["ratio_epoch_vs"].get(name)
        ir = result["ratio_inference_vs"].get(name)
        print(
            f"{name:<14}{epoch_s[name]:>10.3f}{'' if er is None else f'{er:.2f}x':>14}"
            f"{infer_times[name]:>14.4f}{'' if ir is None else f'{ir:.2f}x':>14}"
        )
    ok = True
    if "pytorch" in names:
        ratio = result["ratio_epoch_vs"]["pytorch"]
        ok = ratio <= TARGET
        print(
            f"epoch time digitnet / PyTorch = {ratio:.2f} (target <= {TARGET}): {'met' if ok else 'MISSED'}"
        )
    else:
        print("PyTorch is not installed: pip install torch (the CPU build) to measure the target ratio")
    if args.json:
        print(json.dumps(result))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
