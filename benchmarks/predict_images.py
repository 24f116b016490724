"""How many phone photos a second ``digitnet predict`` reads, preprocessing and prediction together.

Two kinds of input, made here (seeded) as a phone would deliver them:

* ``digit``: a 1000 x 1000 JPEG of one pen-drawn digit on tinted paper, lit unevenly, with sensor
  noise (read as ``digitnet predict MODEL photo.jpg`` does: ``preprocess.prepare`` and the network);
* ``number``: a 1600 x 500 JPEG of an eight-digit number the same way (read as ``--number`` does:
  ``preprocess.prepare_number`` with the model deciding touching digits, and the network).

Each is read by 1 process and by 2 processes at once (a process pool, one image after another in
each), for ``--seconds`` each. The reference, measured in the same run, is Pillow decoding the
same JPEG to grey at full size in one process: the ratio says what the reading costs beyond the
decode a viewer would do anyway. Targets: 100 digits/s and 20 numbers/s on 2 cores.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/predict_images.py [MODEL] [--seconds 5]

Without MODEL a small network is trained on MNIST first (a few seconds).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TARGETS = {"digit": 100.0, "number": 20.0}
# The pen strokes of each digit, shared with the tests that draw digits not from MNIST.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from digit_images import STROKES, trained_model  # noqa: E402


def photo(digits: str, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """A JPEG of ``digits`` written with a pen across a ``size`` page: tinted, unevenly lit, noisy."""
    w, h = size
    ink = Image.new("L", size, 0)
    draw = ImageDraw.Draw(ink)
    side = min(0.6 * h, 0.8 * w / len(digits))
    x0, y0 = (w - side * 0.8 * len(digits)) / 2, (h - side) / 2
    for i, d in enumerate(digits):
        for stroke in STROKES[int(d)]:
            pts = [(x0 + side * (0.8 * i + 0.8 * x), y0 + side * y) for x, y in stroke]
            draw.line(pts, fill=255, width=max(3, int(side / 10)), joint="curve")
    a = np.asarray(ink, np.float32)[..., None] / 255
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    light = (1.0 - 0.25 * (xx + yy) / 2)[..., None]
    paper, pen = np.array([225.0, 215, 195]), np.array([30.0, 30, 90])
    rgb = (paper + (pen - paper) * a) * light + rng.normal(0, 5, (h, w, 1))
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


_CLF = []


def _init(model: str) -> None:
    from digitnet import modelfile

    _CLF.append(modelfile.load(model))


def _read(kind: str, data: bytes) -> str:
    """Read one photo as the command does; return what was read."""
    from digitnet import preprocess

    clf = _CLF[0]
    if kind == "digit":
        return str(int(clf.predict(preprocess.prepare(data).pixels.reshape(1, -1))[0]))
    number = preprocess.prepare_number(data, reader=lambda x: clf.predict_proba(x.reshape(len(x), -1)))
    return "".join(str(k) for k in clf.predict(np.stack([d.pixels.reshape(-1) for d in number.digits])))


def _decode(kind: str, data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        im.convert("L").load()
    return ""


def _burst(job) -> int:
    """Read the photos one after another for ``seconds``: how many were read."""
    what, kind, photos, seconds = job
    work = _read if what == "read" else _decode
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        work(kind, photos[n % len(photos)])
        n += 1
    return n


def rate(pool, what: str, kind: str, photos: list[bytes], seconds: float, processes: int) -> float:
    start = time.perf_counter()
    done = sum(pool.map(_burst, [(what, kind, photos, seconds)] * processes))
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    inputs = {
        "digit": [(str(d), photo(str(d), (1000, 1000), rng)) for d in range(10)],
        "number": [
            ("".join(map(str, digits)), photo("".join(map(str, digits)), (1600, 500), rng))
            for digits in (rng.integers(0, 10, 8) for _ in range(5))
        ],
    }
    from digitnet.data import load_dataset

    model = str(args.model or trained_model(load_dataset("mnist")))
    _init(model)
    for kind, items in inputs.items():
        right = sum(_read(kind, data) == truth for truth, data in items)
        print(f"{kind}: {right} of {len(items)} photos read right")
    print(f"{os.cpu_count()} cores; each figure over {args.seconds:.0f} s:")
    for processes in (1, 2):
        with ProcessPoolExecutor(processes, initializer=_init, initargs=(model,)) as pool:
            pool.map(_burst, [("read", "digit", [inputs["digit"][0][1]], 0.2)] * processes)  # warm up
            for kind, items in inputs.items():
                photos = [data for _, data in items]
                reference = rate(pool, "decode", kind, photos, args.seconds, 1) if processes == 1 else None
                r = rate(pool, "read", kind, photos, args.seconds, processes)
                line = f"  {kind:6s} {processes} process{'es' if processes > 1 else '  '}: {r:7.1f} photos/s"
                line += f"  x{r / TARGETS[kind]:.2f} the {TARGETS[kind]:.0f}/s target"
                if reference:
                    line += (
                        f"  (Pillow's full decode alone: {reference:.0f}/s; reading: x{r / reference:.2f})"
                    )
                print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
