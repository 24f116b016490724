"""The model file: one ``.npz`` holding the weights and a JSON description.

Layout (format version 1)::

    meta              uint8 array: UTF-8 JSON (see below)
    param/<name>      one array per parameter, e.g. ``param/0.weight`` of shape (784, 128)

The JSON holds ``format`` ("digitnet-model"), ``format_version``,
``architecture`` (``sizes``, ``activation``, ``dropout``), ``dtype``,
``normalization``, ``dataset``, ``class_names``, ``config`` (the training
settings), ``metrics`` and ``digitnet_version``.

Loading reads each array through :class:`~digitnet.data.formats.NpzReader`:
a model file can hold only plain numbers, so opening one never runs code, and
no array is allocated before its header's size is checked against the bytes
present and :data:`~digitnet.data.formats.MAX_ARRAY_BYTES`. The JSON is checked
against one schema, :func:`check_metadata` (types, ranges, sizes, nesting),
both when a file is loaded and before one is saved, so digitnet never writes a
model it would then refuse; only the members the architecture names are read.
Every shape is checked against the architecture, and a wrong one is named.
Saving writes a temporary file and renames it, so a crash never leaves half a
model behind.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet import __version__, nn
from digitnet.data.augment import MAX_TEST_TIME_SHIFT, shifted_views
from digitnet.data.formats import (
    MAX_ARRAY_BYTES,
    NpzReader,
    atomic_path,
    first_line,
    float_sized_int,
    json_default,
    read_csv,
)
from digitnet.data.loader import Normalizer
from digitnet.errors import DataError, DigitnetError, ModelFileError
from digitnet.nn.rules import is_finite

FORMAT = "digitnet-model"
FORMAT_VERSION = 1

# The metadata schema's limits (see check_metadata and the README's "Bad input").
MAX_META_BYTES = 1 << 20  # the JSON description
MAX_JSON_DEPTH = 32  # nesting of lists and dicts in it
MAX_LAYERS = 64  # Linear layers
MAX_WIDTH = 1 << 16  # units in one layer
MAX_TEXT = 200  # characters in a class name or the dataset's name
FLOAT32_LIMIT = 1e38  # below float32's largest number (3.4e38)
# the figures in ``metrics`` that evaluate, report and plot read: numbers (or null) when present
METRIC_FIGURES = (
    "test_accuracy",
    "test_loss",
    "test_accuracy_single",
    "test_loss_single",
    "val_accuracy",
    "val_loss",
    "train_accuracy",
    "train_seconds",
)
METRIC_COUNTS = ("epochs", "final_epoch", "best_epoch", "n_train", "n_val", "n_test")
DTYPES = ("float32", "float64")


@dataclass
class Classifier:
    """A trained network with everything needed to use it on raw pixels.

    ``predict_proba(x)`` takes pixel values 0-255 (uint8 or float), shape
    ``(n, 784)`` or ``(n, 28, 28)``, and returns ``(n, K)`` probabilities.

    A model saved with test-time shifts (``meta["test_time_shift"]`` = m >= 1, from
    ``train --test-time-shift``) answers for every image with the mean of the network's
    probabilities over the image and its copies moved by up to m pixels each way
    ((2 m + 1)² views): :meth:`logits`, and so everything that predicts with the model
    (``evaluate``, ``predict``, ``serve``), use them. :meth:`single_logits` is the network alone.
    """

    model: nn.Sequential
    normalizer: Normalizer
    class_names: list
    architecture: dict
    meta: dict = field(default_factory=dict)

    @property
    def dtype(self):
        return self.model.layers[0].weight.data.dtype

    def prepare(self, pixels) -> np.ndarray:
        """Normalise raw pixels into the network's input rows ``(n, inputs)``."""
        pixels = np.asarray(pixels)
        n_inputs = self.architecture["sizes"][0]
        if pixels.dtype.kind not in "biuf":
            raise DataError(f"expected pixel values (numbers), got an array of {pixels.dtype}")
        if pixels.ndim == 0:
            raise DataError(f"expected images of {n_inputs} pixels, got a single number")
        if pixels.dtype.kind == "f" and pixels.size and not (np.abs(pixels).max() <= 1e30):  # NaN fails too
            raise DataError("the pixels hold NaN, infinity or numbers beyond 1e30: pixel values are 0 to 255")
        if pixels.ndim == 1 or pixels.shape[-1] != n_inputs:
            pixels = pixels.reshape(-1, n_inputs) if pixels.size % n_inputs == 0 else pixels
        if pixels.ndim != 2 or pixels.shape[1] != n_inputs:
            raise DigitnetError(
                f"expected images of {n_inputs} pixels, got an array of shape {np.shape(pixels)}"
            )
        return self.normalizer(pixels, self.dtype)

    @property
    def test_time_shift(self) -> int:
        """The largest shift, in pixels, of the views the model averages over (0: the image alone)."""
        return int(self.meta.get("test_time_shift", 0))

    def logits(self, pixels, batch_size: int = 8192) -> np.ndarray:
        """The model's outputs ``(n, K)`` for raw pixels: the network's logits, or with test-time shifts
        the logarithm of its probabilities averaged over the views (so ``softmax`` of them is that mean).

        Side-effect free: a network in the middle of training keeps its mode and its caches.
        """
        return self._outputs(pixels, batch_size, self.test_time_shift)

    def single_logits(self, pixels, batch_size: int = 8192) -> np.ndarray:
        """The network's own logits ``(n, K)``, one view of each image, whatever the model's test-time shifts."""
        return self._outputs(pixels, batch_size, 0)

    def _outputs(self, pixels, batch_size: int, shift: int) -> np.ndarray:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise DigitnetError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
        x = self.prepare(pixels)
        if not len(x):
            return np.zeros((0, self.architecture["sizes"][-1]), self.dtype)
        fill = self.normalizer.black(self.dtype) if shift else 0.0
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught below, once
            out = np.concatenate(
                [
                    test_time_logits(self.model.predict, x[i : i + batch_size], shift, fill)
                    for i in range(0, len(x), batch_size)
                ]
            )
        ok = np.isfinite(out).all(axis=1)
        if not ok.all():  # finite weights, but too large: the arithmetic left the dtype's range
            raise ModelFileError(
                f"{self.meta.get('path', 'the model')}: its outputs overflow {self.dtype} on "
                f"{np.count_nonzero(~ok):,} of {len(x):,} images: its weights are too large to compute with"
            )
        return out

    def predict_proba(self, pixels, batch_size: int = 8192) -> np.ndarray:
        logits = self.logits(pixels, batch_size)
        with np.errstate(over="ignore"):  # logits far apart: z - max overflows to -inf, whose exp is 0
            return nn.softmax(logits) if len(logits) else logits

    def predict(self, pixels, batch_size: int = 8192) -> np.ndarray:
        return self.logits(pixels, batch_size).argmax(axis=1)

    def predict_csv(self, path, batch_size: int = 8192) -> dict:
        """Predict every row of a digit CSV (Kaggle's ``test.csv``, or a labelled ``train.csv``).

        Parameters
        ----------
        path : str or Path
            One image a row, read by :func:`~digitnet.data.formats.read_csv`: 784 pixel
            columns, or a label (0-9) and 784 pixels; with or without a header row.
        batch_size : int, default 8192
            Rows per forward pass.

        Returns
        -------
        dict
            ``digits``: int64 array ``(n,)``, the predicted class of each row, in the file's order;
            ``counts``: int64 array ``(K,)``, how many rows went to each class;
            ``accuracy``: the fraction of rows whose label is the predicted class, a float,
            or None when the CSV has no label column.

        Raises
        ------
        DataError
            If the file is not a digit CSV (see :func:`~digitnet.data.formats.read_csv`).
        """
        x, y = read_csv(path)
        digits = self.predict(x, batch_size)
        counts = np.bincount(digits, minlength=len(self.class_names))
        return {
            "digits": digits,
            "counts": counts,
            "accuracy": None if y is None else float((digits == y).mean()),
        }

    def __repr__(self):
        sizes = "-".join(map(str, self.architecture["sizes"]))
        return f"Classifier({sizes}, {self.architecture['activation']}, dataset={self.meta.get('dataset')!r})"


def check_same_input(*classifiers: Classifier) -> None:
    """Raise :class:`DataError` unless the classifiers read inputs of one size into as many classes.

    Parameters
    ----------
    *classifiers : Classifier
        Two or more models to be run on the same images (one passes trivially).
    """
    first = classifiers[0]
    for other in classifiers[1:]:
        if other.architecture["sizes"][0] != first.architecture["sizes"][0] or len(other.class_names) != len(
            first.class_names
        ):
            raise DataError(
                f"the models do not read the same kind of input: {first.architecture['sizes']} and "
                f"{other.architecture['sizes']}"
            )


def check_dataset(ds, *classifiers: Classifier):
    """Return ``ds`` if the classifiers can read its test images into its classes, else raise :class:`DataError`.

    Parameters
    ----------
    ds : Dataset
        Its ``x_test`` of shape ``(n, pixels)`` and its ``class_names`` (``K`` of them) are checked.
    *classifiers : Classifier
        One model, or several that read the same input (checked first, by :func:`check_same_input`).
        Each takes ``sizes[0]`` inputs into ``len(class_names)`` classes.

    Returns
    -------
    Dataset
        ``ds`` itself.
    """
    check_same_input(*classifiers)
    first = classifiers[0]
    n_in, n_classes = first.architecture["sizes"][0], len(first.class_names)
    if ds.x_test.shape[1] != n_in or len(ds.class_names) != n_classes:
        who = "the model takes" if len(classifiers) == 1 else "the models take"
        raise DataError(
            f"{who} {n_in} pixels into {n_classes} classes; {ds.name} has "
            f"{ds.x_test.shape[1]} pixels and {len(ds.class_names)} classes"
        )
    return ds


def test_time_logits(predict, x: np.ndarray, shift: int, fill: float) -> np.ndarray:
    """``predict(x)`` (a network's logits) for ``shift`` 0; else the log of its softmax averaged over the
    (2 shift + 1)² shifted views of ``x`` (:func:`~digitnet.data.augment.shifted_views`).

    ``x`` is normalised rows (N, side*side) of square images; ``fill`` is a black pixel's value
    after normalisation (what moves in at the border).
    """
    if not shift:
        return predict(x)
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise DigitnetError(f"test-time shifts need square images; these have {x.shape[1]} pixels")
    total = None
    for view in shifted_views(x, shift, side, fill):
        p = nn.softmax(predict(view))
        total = p if total is None else np.add(total, p, out=total)
    total /= (2 * shift + 1) ** 2
    return np.log(np.maximum(total, np.finfo(total.dtype).tiny, out=total), out=total)


def architecture_of(model: nn.Sequential) -> dict:
    """Describe an :func:`~digitnet.nn.mlp`-built network as ``{"sizes", "activation", "dropout"}``."""
    linears = nn.linear_layers(model)
    activation = next(
        (name for name, cls in nn.ACTIVATIONS.items() for layer in model.layers if type(layer) is cls), "relu"
    )
    dropout = next((layer.p for layer in model.layers if isinstance(layer, nn.Dropout)), 0.0)
    sizes = [linears[0].in_features] + [layer.out_features for layer in linears]
    return {"sizes": sizes, "activation": activation, "dropout": dropout}


def save(
    path,
    model: nn.Sequential,
    normalizer: Normalizer,
    class_names,
    dataset: str = "",
    config: dict | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    test_time_shift: int = 0,
) -> Path:
    """Write a model file atomically and return its path.

    ``test_time_shift`` m >= 1 makes the model answer with the mean over the (2 m + 1)² views of every
    image moved by up to m pixels (see :class:`Classifier`); 0 (the default) leaves it out.
    """
    path = Path(path)
    params = {f"param/{name}": p.data for name, p in model.named_parameters()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_of(model),
        "dtype": str(model.layers[0].weight.data.dtype),
        "normalization": normalizer.to_dict(),
        "dataset": dataset,
        "class_names": list(class_names),
        "config": config or {},
        "metrics": metrics or {},
        "digitnet_version": __version__,
        **(extra or {}),
    }
    if test_time_shift:
        meta["test_time_shift"] = test_time_shift
    text = json.dumps(meta, default=json_default)
    try:
        check_metadata(json.loads(text), path)  # exactly what a later load will check
    except ModelFileError as exc:
        raise DigitnetError(f"refusing to write a model digitnet could not read back: {exc}") from None
    blob = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=blob, **params)
    except OSError as exc:
        raise DigitnetError(f"cannot write the model to {path}: {exc.strerror or exc}") from None
    return path


def load(path) -> Classifier:
    """Read a model file, check it, and rebuild the network. Never executes code from the file."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path} does not exist: give the path of a model file (runs/<run>/model.npz)")
    if path.is_dir():  # a run folder: digitnet.runs knows where its model is
        from digitnet.runs import model_file

        path = model_file(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != b"PK\x03\x04":
        raise ModelFileError(f"{path} is not a digitnet model file (not an .npz archive)")
    with NpzReader(path, ModelFileError, what="a digitnet model file") as npz:
        if "meta" not in npz.files:
            raise ModelFileError(f"{path} is not a digitnet model file (it has no 'meta' entry)")
        meta = check_metadata(_parse_meta(npz.read("meta", limit=MAX_META_BYTES), path), path)
        arch = meta["architecture"]
        sizes = arch["sizes"]
        try:
            model = nn.mlp(
                sizes,
                activation=arch.get("activation", "relu"),
                dropout=float(arch.get("dropout", 0.0)),
                init="he",
                rng=0,
                dtype=np.dtype(meta.get("dtype", "float32")),
            )
            normalizer = Normalizer.from_dict(meta.get("normalization") or {"kind": "scale"})
        except DigitnetError as exc:
            raise ModelFileError(f"{path}: its architecture cannot be built ({first_line(exc)})") from None
        expected = dict(model.named_parameters())
        stored = {key[len("param/") :] for key in npz.files if key.startswith("param/")}
        extra = sorted(stored - set(expected))
        if extra:
            raise ModelFileError(f"{path}: unexpected parameters {extra[:8]} for the architecture {sizes}")
        state = {}
        for name, p in expected.items():
            if name not in stored:
                raise ModelFileError(f"{path}: parameter '{name}' is missing")
            value = npz.read(f"param/{name}")
            if value.shape != p.data.shape:
                raise ModelFileError(
                    f"{path}: parameter '{name}' has shape {value.shape}, "
                    f"the architecture {sizes} needs {p.data.shape}"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise ModelFileError(
                    f"{path}: parameter '{name}' holds {value.dtype}, not floating-point numbers"
                )
            if not np.all(np.isfinite(value)):
                raise ModelFileError(f"{path}: parameter '{name}' holds NaN or infinite values")
            state[name] = value
    model.load_state_dict(state)
    model.eval()
    class_names = meta.get("class_names") or [str(i) for i in range(sizes[-1])]
    meta["path"] = str(path)
    return Classifier(model, normalizer, list(class_names), {**arch, "sizes": sizes}, meta)


def _parse_meta(blob: np.ndarray, path: Path):
    """The JSON in a model file's ``meta`` array (UTF-8 bytes as uint8)."""
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ModelFileError(f"{path}: its metadata is {blob.dtype} of shape {blob.shape}, not UTF-8 bytes")
    try:
        return json.loads(blob.tobytes().decode("utf-8"), parse_int=float_sized_int)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{path}: its metadata is not valid JSON ({first_line(exc)})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: its metadata nests deeper than {MAX_JSON_DEPTH} levels") from None


def check_metadata(meta, where, complete: bool = True) -> dict:
    """Check a model's JSON description against digitnet's schema and return it.

    The schema: ``architecture`` a dict of ``sizes`` (2 to ``MAX_LAYERS + 1`` whole numbers
    1-``MAX_WIDTH``, whose parameters fit in ``MAX_ARRAY_BYTES``), ``activation`` (a name in
    :data:`digitnet.nn.ACTIVATIONS`) and ``dropout`` (a number in [0, 1)); ``dtype`` one of
    :data:`DTYPES`; ``normalization`` ``{"kind": "scale"}`` or ``{"kind": "standardize", "mean",
    "std"}`` with finite numbers, std > 0; ``dataset`` a name; ``class_names`` one name per
    output; ``config`` and ``metrics`` dicts (``config["seed"]`` a whole number >= 0; each of
    ``metrics``' :data:`METRIC_FIGURES` a number, each of its :data:`METRIC_COUNTS` a whole number
    >= 0, or null);
    ``test_time_shift`` a whole number 0-``MAX_TEST_TIME_SHIFT``, only for a network of square
    images; no list or dict nested deeper than ``MAX_JSON_DEPTH``.

    Parameters
    ----------
    meta : object
        The parsed JSON.
    where : str or Path
        Named in the error.
    complete : bool, default True
        A model file's metadata: ``format``, ``format_version`` and ``architecture`` are required.
        False for the description inside a ``.pth`` or ``.safetensors`` file, where every field is
        optional (each present one is checked).

    Raises
    ------
    ModelFileError
        Naming the first field that does not fit, and what it should be.
    """

    def bad(field, value, should):
        raise ModelFileError(f"{where}: its metadata's {field} is {str(value)[:80]!r}; it should be {should}")

    if not isinstance(meta, dict):
        raise ModelFileError(f"{where} is not a digitnet model file (its metadata is not a JSON object)")
    _check_depth(meta, where)
    if complete and meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{where} is not a digitnet model file (format {str(meta.get('format'))[:40]!r})"
        )
    if complete and meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{where} has model format version {str(meta.get('format_version'))[:20]}; "
            f"this digitnet reads version {FORMAT_VERSION}: upgrade digitnet"
        )
    arch = meta.get("architecture")
    if arch is None and not complete:
        arch = {}
    if not isinstance(arch, dict):
        bad("architecture", arch, "a dict of sizes, activation and dropout")
    sizes = arch.get("sizes")
    if sizes is not None or complete:
        if not (
            isinstance(sizes, list)
            and 2 <= len(sizes) <= MAX_LAYERS + 1
            and all(type(n) is int and 1 <= n <= MAX_WIDTH for n in sizes)
        ):
            bad("architecture.sizes", sizes, f"2-{MAX_LAYERS + 1} layer widths, whole numbers 1-{MAX_WIDTH}")
        itemsize = 8 if meta.get("dtype") == "float64" else 4
        nbytes = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) * itemsize
        if nbytes > MAX_ARRAY_BYTES:
            bad("architecture.sizes", sizes, f"a network whose weights fit in {MAX_ARRAY_BYTES:,} bytes")
    activation = arch.get("activation", "relu")
    if not (isinstance(activation, str) and activation in nn.ACTIVATIONS):
        bad("architecture.activation", arch.get("activation"), f"one of {', '.join(nn.ACTIVATIONS)}")
    dropout = arch.get("dropout", 0.0)
    if type(dropout) not in (int, float) or not 0 <= dropout < 1:
        bad("architecture.dropout", dropout, "a number from 0 up to (not including) 1")
    if meta.get("dtype", "float32") not in DTYPES:
        bad("dtype", meta.get("dtype"), " or ".join(DTYPES))
    norm = meta.get("normalization")
    if norm is not None:
        numbers = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else []
        if not (
            isinstance(norm, dict)
            and (
                norm == {"kind": "scale"}
                or (
                    norm.get("kind") == "standardize"
                    and set(norm) == {"kind", "mean", "std"}
                    and all(type(v) in (int, float) and is_finite(v) for v in numbers)
                    and numbers[1] > 0
                    # the pixels' scale 1 / (255 std) and shift mean / std are float32 numbers
                    and max(abs(numbers[0]), 1 / 255) / numbers[1] < FLOAT32_LIMIT
                )
            )
        ):
            bad(
                "normalization",
                norm,
                '{"kind": "scale"} or {"kind": "standardize", "mean": M, "std": S > 0}, with M / S and '
                "1 / (255 S) within float32's range",
            )
    dataset = meta.get("dataset", "")
    if not isinstance(dataset, str) or len(dataset) > MAX_TEXT:
        bad("dataset", dataset, f"a dataset's name (text of at most {MAX_TEXT} characters)")
    names = meta.get("class_names")
    if names is not None:
        if not (isinstance(names, list) and all(isinstance(n, str) and len(n) <= MAX_TEXT for n in names)):
            bad("class_names", names, f"a list of names (text of at most {MAX_TEXT} characters)")
        if names and sizes is not None and len(names) != sizes[-1]:
            raise ModelFileError(f"{where}: {len(names)} class names for {sizes[-1]} outputs")
    for key in ("config", "metrics"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            bad(key, meta[key], "a dict")
    for key, value in (meta.get("metrics") or {}).items():
        if key in METRIC_COUNTS and value is not None and (type(value) is not int or value < 0):
            bad(f"metrics.{key}", value, "a whole number 0 or more, or null")
        if key in METRIC_FIGURES and value is not None and type(value) not in (int, float):
            bad(f"metrics.{key}", value, "a number or null")
    seed = (meta.get("config") or {}).get("seed", 0)
    if type(seed) is not int or seed < 0:
        bad("config.seed", seed, "a whole number 0 or more")
    shift = meta.get("test_time_shift", 0)
    if type(shift) is not int or not 0 <= shift <= MAX_TEST_TIME_SHIFT:
        bad("test_time_shift", shift, f"a whole number of pixels from 0 to {MAX_TEST_TIME_SHIFT}")
    if shift and sizes is not None and math.isqrt(sizes[0]) ** 2 != sizes[0]:
        bad("test_time_shift", shift, f"0: the network's {sizes[0]} inputs are not a square image")
    return meta


def _check_depth(obj, where) -> None:
    """Refuse lists and dicts nested deeper than :data:`MAX_JSON_DEPTH` (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ModelFileError(f"{where}: its metadata nests deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
