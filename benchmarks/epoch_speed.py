"""Seconds per training epoch and inference time: digitnet against PyTorch, the matrix-product floor and others.

Two pieces of work, each one epoch over the 60,000 MNIST training images (float32), then predicting
the 10,000 test images:

- ``adam-128-64``: 784-128-64-10 ReLU, Adam (lr 1e-3), batch 64;
- ``default``: the default preset's architecture, 784-512-256-10 ReLU, Adam, at batch 128, where the
  targets were set (the preset itself now trains at batch 256).

Contestants: digitnet; PyTorch (CPU); the **matrix-product floor**, the same network's matrix
products and nothing else (forward ``a @ W``, backward ``aᵀ g`` and ``g Wᵀ``, each with ``out=``
into a buffer made once; no gather, activation, loss or update), which no NumPy network of these
sizes can go below on this BLAS; the **floor + adam**, those products into the network's own
gradients followed by digitnet's Adam step, the least a NumPy network with that optimiser takes; a
bare NumPy loop as a person would first write it; scikit-learn (``adam-128-64`` only). Every
contestant runs in a fresh process of its own (PyTorch's OpenMP threads and NumPy's OpenBLAS
threads slow each other down when they share one), and the rounds interleave them so a noisy
machine slows them alike. The figures that matter are the ratios, all measured in the same run.

Targets (the engine issue): digitnet's epoch at most 0.50x PyTorch's for both pieces of work, at
most 2.5x the floor for ``adam-128-64`` and 1.8x for ``default``; predicting 10,000 images at most
1.0x PyTorch's time on the same architecture. ``--check`` exits 1 when one is missed.

Run it with the BLAS kernel chosen by the machine, not forced:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/epoch_speed.py``
(``make bench`` does that). Every contestant's process gets the ``OPENBLAS_THREAD_TIMEOUT`` that
``import digitnet`` sets (its idle BLAS threads sleep soon instead of spinning; see
``digitnet.threads``), unless the environment sets its own.
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
from digitnet.threads import BLAS_THREAD_TIMEOUT

WORK = {  # name: (layer sizes, batch size)
    "adam-128-64": ([784, 128, 64, 10], 64),
    "default": ([784, 512, 256, 10], 128),
}
LR = 1e-3
TARGETS = {  # the largest ratio digitnet / contestant allowed, per piece of work
    "adam-128-64": {"epoch vs pytorch": 0.50, "epoch vs floor": 2.5, "inference vs pytorch": 1.0},
    "default": {"epoch vs pytorch": 0.50, "epoch vs floor": 1.8, "inference vs pytorch": 1.0},
}


def digitnet_runner(x, y, seed, sizes, batch):
    model = nn.mlp(sizes, rng=seed, init="torch_default")
    opt = nn.Adam(model.parameters(), lr=LR)
    loss_fn = nn.SoftmaxCrossEntropy()
    loader = DataLoader(x, y, batch, rng=seed)

    def epoch():
        model.train()
        for xb, yb in loader:
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()

    def infer(xt):
        return model.predict(xt).argmax(axis=1)

    return epoch, infer


def matmul_floor_runner(x, y, seed, sizes, batch, ws=None, dws=None, step=None):
    """The network's matrix products alone, each into a buffer made once: the floor of an epoch.

    ``ws`` are the weights and ``dws`` the arrays their gradients are written into (random ones made
    here when left out); ``step``, when given, runs after each batch's products.
    """
    rng = np.random.default_rng(seed)
    if ws is None:
        ws = [
            rng.uniform(-1, 1, (a, b)).astype(np.float32) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        dws = [np.empty_like(w) for w in ws]
    acts = [np.empty((batch, n), np.float32) for n in sizes]  # each layer's output (and input)
    grads = [np.empty((batch, n), np.float32) for n in sizes]  # the gradient at each
    grads[-1][...] = rng.uniform(-1, 1, grads[-1].shape) / batch

    def epoch():
        for start in range(0, len(x), batch):
            n = min(batch, len(x) - start)
            a = [x[start : start + n]] + [buf[:n] for buf in acts[1:]]
            g = [buf[:n] for buf in grads]
            for k, w in enumerate(ws):
                np.matmul(a[k], w, out=a[k + 1])
            for k in range(len(ws) - 1, -1, -1):
                np.matmul(a[k].T, g[k + 1], out=dws[k])
                if k:
                    np.matmul(g[k + 1], ws[k].T, out=g[k])
            if step is not None:
                step()

    def infer(xt):
        a = xt
        for w in ws:
            a = np.matmul(a, w)
        return a.argmax(1)

    return epoch, infer


def adam_floor_runner(x, y, seed, sizes, batch):
    """The floor's matrix products into the network's own weights and gradients, then digitnet's Adam step.

    What any NumPy network with this optimiser takes at least: no gather, bias, activation or loss, and
    an optimiser step of ten whole-array passes over every parameter (the biases' gradients stay 0).
    """
    model = nn.mlp(sizes, rng=seed, init="torch_default")
    opt = nn.Adam(model.parameters(), lr=LR)  # the weights are views of its flat buffer from here on
    layers = nn.linear_layers(model)
    ws, dws = [layer.weight.data for layer in layers], [layer.weight.grad for layer in layers]
    return matmul_floor_runner(x, y, seed, sizes, batch, ws, dws, opt.step)


def bare_numpy_runner(x, y, seed, sizes, batch):
    """The plainest float32 NumPy loop a person would write (three layers)."""
    rng = np.random.default_rng(seed)
    ws = [
        rng.uniform(-1, 1, (a, b)).astype(np.float32) / np.sqrt(a)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    bs = [np.zeros(b, np.float32) for b in sizes[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    state = {"t": 0}

    def epoch():
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
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


def torch_runner(x, y, seed, sizes, batch):
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch():
        model.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()

    def infer(xtest):
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(xtest)).argmax(1).numpy()

    return epoch, infer


def sklearn_runner(x, y, seed, sizes, batch):
    import warnings

    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(sizes[1:-1]),
        solver="adam",
        learning_rate_init=LR,
        batch_size=batch,
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
                f"{i.get('num_threads')} threads, idle ones asleep after 2^"
                f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', '28 (OpenBLAS default)')} cycles"
                for i in info
            )
            or "unknown"
        )
    except ImportError:
        return "unknown (install threadpoolctl)"


RUNNERS = {
    "digitnet": digitnet_runner,
    "pytorch": torch_runner,
    "floor": matmul_floor_runner,
    "floor + adam": adam_floor_runner,
    "bare numpy": bare_numpy_runner,
    "scikit-learn": sklearn_runner,
}
NEEDS = {"pytorch": "torch", "scikit-learn": "sklearn"}
ONLY = {"scikit-learn": ("adam-128-64",)}  # too slow to wait for on the wider network


def measure(name: str, work: str, epochs: int) -> dict:
    """Time ``epochs`` epochs (after one warm-up) and 10,000 predictions for one contestant, in this process."""
    ds = load_dataset("mnist")
    x = ds.x_train.astype(np.float32) / 255
    y = ds.y_train.astype(np.intp)
    xt = ds.x_test.astype(np.float32) / 255
    epoch, infer = RUNNERS[name](x, y, 0, *WORK[work])
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


def ratios(epoch_s: dict, infer_s: dict) -> dict:
    """digitnet's time over each contestant's: ``{"epoch vs pytorch": ..., "inference vs floor": ...}``."""
    out = {}
    for name in epoch_s:
        if name != "digitnet":
            out[f"epoch vs {name}"] = epoch_s["digitnet"] / epoch_s[name]
            out[f"inference vs {name}"] = infer_s["digitnet"] / infer_s[name]
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
    ap.add_argument("--work", nargs="*", default=list(WORK), choices=list(WORK), help="pieces of work (both)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target ratio is missed")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # one contestant, one process: no thread pools fighting
        print(json.dumps(measure(args.worker, args.work[0], 1)))
        return 0

    names = [n for n in RUNNERS if n not in args.skip and (n not in NEEDS or available(NEEDS[n]))]
    runs = [(w, n) for w in args.work for n in names if w in ONLY.get(n, (w,))]
    epoch_times = {run: [] for run in runs}
    infer_runs = {run: [] for run in runs}
    extra = {}
    # Each worker imports NumPy before digitnet: give them all the OpenBLAS setting `import digitnet`
    # makes in the command line (digitnet.threads.rest_idle_blas_threads).
    env = dict(os.environ)
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)
    for _ in range(args.rounds):  # rounds interleave the contestants, so noise hits all alike
        for work, name in runs:
            cmd = [sys.executable, __file__, "--worker", name, "--work", work]
            run = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr}")
            got = json.loads(run.stdout.strip().splitlines()[-1])
            epoch_times[work, name] += got["epoch_seconds"]
            infer_runs[work, name].append(got["inference_seconds"])
            extra.update({k: v for k, v in got.items() if k == "torch"})

    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}",
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_kernel(),
        "rounds": args.rounds,
        "work": {},
        **extra,
    }
    print(
        f"MNIST, one epoch of Adam and 10,000 predictions: median of {args.rounds} rounds, each in its own process"
    )
    print(
        f"machine: {result['machine']}; Python {result['python']}, NumPy {result['numpy']}; BLAS {result['blas']}"
        + (f"; PyTorch {result['torch']}" if "torch" in result else "")
    )
    missed = []
    for work in args.work:
        here = [n for w, n in runs if w == work]
        epoch_s = {n: statistics.median(epoch_times[work, n]) for n in here}
        infer_s = {n: min(infer_runs[work, n]) for n in here}
        got = ratios(epoch_s, infer_s)
        sizes, batch = WORK[work]
        print(f"\n{work}: {'-'.join(map(str, sizes))} ReLU, batch {batch}")
        print(f"  {'':14}{'s/epoch':>10}{'digitnet is':>14}{'infer 10k s':>14}{'digitnet is':>14}")
        for name in here:
            er, ir = got.get(f"epoch vs {name}"), got.get(f"inference vs {name}")
            print(
                f"  {name:<14}{epoch_s[name]:>10.3f}{'' if er is None else f'{er:.2f}x':>14}"
                f"{infer_s[name]:>14.4f}{'' if ir is None else f'{ir:.2f}x':>14}"
            )
        for what, target in TARGETS[work].items():
            if what in got:
                ok = got[what] <= target
                missed += [] if ok else [f"{work} {what}"]
                print(f"  {what}: {got[what]:.2f} (target <= {target}): {'met' if ok else 'MISSED'}")
            else:
                print(f"  {what}: not measured (the contestant is skipped or not installed)")
        result["work"][work] = {"epoch_seconds": epoch_s, "inference_seconds_10k": infer_s, "ratios": got}
        if {"floor + adam", "pytorch"} <= set(epoch_s):
            least = epoch_s["floor + adam"] / epoch_s["pytorch"]
            result["work"][work]["floor + adam vs pytorch"] = least
            print(f"  floor + adam vs pytorch: {least:.2f} (no NumPy network with this Adam step is faster)")
    result["targets"], result["missed"] = TARGETS, missed
    print(
        f"\nload average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in result['load_average'])}"
    )
    if args.json:
        print(json.dumps(result))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
