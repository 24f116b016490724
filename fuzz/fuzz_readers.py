"""Coverage-guided fuzzing of digitnet's readers with atheris (``make fuzz``).

The first byte of each input picks a reader, the rest is the file::

    python fuzz/fuzz_readers.py [libFuzzer flags] CORPUS_DIR...

``make fuzz`` seeds ``fuzz/corpus/`` from ``tests/hostile/`` and valid files (see
:func:`seed`), then runs for ``FUZZ_SECONDS``. The contract is the tests' (``tests/test_fuzz_readers.py``):
a reader returns or raises one :class:`~digitnet.errors.DigitnetError`. Any other exception is a
crash: the input is written to ``tests/hostile/crash-<sha1>.<reader>.<ext>``, where
``tests/test_hostile_files.py`` reads it from then on, and the fuzzer stops on it as usual. libFuzzer's
``-rss_limit_mb`` (1024 here) and ``-timeout`` (10 s) catch inputs that take too much memory or time.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    from digitnet import modelfile
    from digitnet.data import formats
    from digitnet.errors import DigitnetError
    from digitnet.interop.statedict import import_torch
    from digitnet.preprocess import prepare

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "hostile"
# (reader's name in crash files, suffix of the file, function, the hostile corpus files that seed it)
READERS = [
    ("idx", ".idx", formats.read_idx, "data-idx-*/train-images-*"),
    ("csv", ".csv", formats.read_csv, "data-*.csv*"),
    ("npz", ".npz", formats.read_npz, "data-*.npz"),
    ("model", ".npz", modelfile.load, "model-*.npz"),
    ("torch", ".pth", import_torch, "torch-*.pth"),
    ("torch", ".safetensors", import_torch, "torch-*.safetensors"),
    ("image", ".png", prepare, "image-*.png"),
]
WORK = Path(tempfile.mkdtemp(prefix="digitnet-fuzz-"))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name, suffix, read, _ = READERS[data[0] % len(READERS)]
    path = WORK / f"input{suffix}"
    path.write_bytes(data[1:])
    try:
        result = read(path)
        if hasattr(result, "predict_proba"):  # a model that loads must also predict
            result.predict_proba(np.zeros((1, result.architecture["sizes"][0]), np.uint8))
    except DigitnetError:
        pass
    except BaseException:
        digest = hashlib.sha1(data).hexdigest()[:16]
        HOSTILE.mkdir(exist_ok=True)
        (HOSTILE / f"crash-{digest}.{name}{suffix}").write_bytes(data[1:])
        raise


def seed(folder: Path) -> None:
    """Write one input a reader from the hostile corpus and from valid files, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (_, _, _, pattern) in enumerate(READERS):
        for path in sorted(HOSTILE.glob(pattern)):
            if path.is_file():
                (folder / f"{index}-{path.parent.name}-{path.name}").write_bytes(
                    bytes([index]) + path.read_bytes()
                )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=images,
        y_train=np.arange(4, dtype=np.uint8),
        x_test=images,
        y_test=np.arange(4, dtype=np.uint8),
    )
    (folder / "valid.npz").write_bytes(bytes([2]) + buf.getvalue())
    idx = bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes()
    (folder / "valid.idx").write_bytes(bytes([0]) + idx)
    rows = "\n".join(",".join(map(str, [i, *img.ravel()])) for i, img in enumerate(images))
    (folder / "valid.csv").write_bytes(bytes([1]) + rows.encode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seed"]:
        seed(Path(sys.argv[2]))
        sys.exit(0)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
