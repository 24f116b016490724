"""The model file: one ``.npz`` holding the weights and a JSON description.

Layout (format version 1)::

    meta              uint8 array: UTF-8 JSON (see below)
    param/<name>      one array per parameter, e.g. ``param/0.weight`` of shape (784, 128)

The JSON holds ``format`` ("digitnet-model"), ``format_version``,
``architecture`` (``sizes``, ``activation``, ``dropout``), ``dtype``,
``normalization``, ``dataset``, ``class_names``, ``config`` (the training
settings), ``metrics`` and ``digitnet_version``.

Loading uses ``numpy.load(allow_pickle=False)``: a model file can hold only
plain numbers, so opening one never runs code. Every shape is checked against
the architecture, and a wrong one is named. Saving writes a temporary file
and renames it, so a crash never leaves half a model behind.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitnet import __version__, nn
from digitnet.data.formats import atomic_path, first_line, json_default, read_csv
from digitnet.data.loader import Normalizer
from digitnet.errors import DataError, DigitnetError, ModelFileError

FORMAT = "digitnet-model"
FORMAT_VERSION = 1


@dataclass
class Classifier:
    """A trained network with everything needed to use it on raw pixels.

    ``predict_proba(x)`` takes pixel values 0-255 (uint8 or float), shape
    ``(n, 784)`` or ``(n, 28, 28)``, and returns ``(n, K)`` probabilities.
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
        if pixels.ndim == 1 or pixels.shape[-1] != n_inputs:
            pixels = pixels.reshape(-1, n_inputs) if pixels.size % n_inputs == 0 else pixels
        if pixels.ndim != 2 or pixels.shape[1] != n_inputs:
            raise DigitnetError(
                f"expected images of {n_inputs} pixels, got an array of shape {np.shape(pixels)}"
            )
        return self.normalizer(pixels, self.dtype)

    def logits(self, pixels, batch_size: int = 8192) -> np.ndarray:
        """The network's outputs ``(n, K)`` for raw pixels, by :meth:`~digitnet.nn.Sequential.predict`.

        Side-effect free: a network in the middle of training keeps its mode and its caches.
        """
        x = self.prepare(pixels)
        return (
            np.concatenate([self.model.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
            if len(x)
            else np.zeros((0, self.architecture["sizes"][-1]), self.dtype)
        )

    def predict_proba(self, pixels, batch_size: int = 8192) -> np.ndarray:
        return nn.softmax(self.logits(pixels, batch_size)) if len(pixels) else self.logits(pixels)

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
) -> Path:
    """Write a model file atomically and return its path."""
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
    blob = np.frombuffer(json.dumps(meta, default=json_default).encode("utf-8"), dtype=np.uint8)
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
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except ValueError as exc:
        reason = (
            "it holds pickled Python objects, which digitnet never loads"
            if "pickle" in str(exc)
            else first_line(exc)
        )
        raise ModelFileError(f"{path} is not a digitnet model file ({reason})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is not a digitnet model file ({first_line(exc)})") from None
    if "meta" not in arrays:
        raise ModelFileError(f"{path} is not a digitnet model file (it has no 'meta' entry)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: its metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is not a digitnet model file (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {meta.get('format_version')}; "
            f"this digitnet reads version {FORMAT_VERSION}: upgrade digitnet"
        )
    arch = meta.get("architecture") or {}
    try:
        sizes = [int(s) for s in arch["sizes"]]
        dtype = np.dtype(meta.get("dtype", "float32"))
        model = nn.mlp(
            sizes,
            activation=arch.get("activation", "relu"),
            dropout=float(arch.get("dropout", 0.0)),
            init="he",
            rng=0,
            dtype=dtype,
        )
        normalizer = Normalizer.from_dict(meta.get("normalization") or {"kind": "scale"})
    except (KeyError, TypeError, ValueError, DigitnetError) as exc:
        raise ModelFileError(f"{path}: its architecture cannot be built ({first_line(exc)})") from None
    state = {key[len("param/") :]: value for key, value in arrays.items() if key.startswith("param/")}
    expected = dict(model.named_parameters())
    for name, p in expected.items():
        if name not in state:
            raise ModelFileError(f"{path}: parameter '{name}' is missing")
        if state[name].shape != p.data.shape:
            raise ModelFileError(
                f"{path}: parameter '{name}' has shape {state[name].shape}, "
                f"the architecture {sizes} needs {p.data.shape}"
            )
        if not np.issubdtype(state[name].dtype, np.floating):
            raise ModelFileError(
                f"{path}: parameter '{name}' holds {state[name].dtype}, not floating-point numbers"
            )
        if not np.all(np.isfinite(state[name])):
            raise ModelFileError(f"{path}: parameter '{name}' holds NaN or infinite values")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ModelFileError(f"{path}: unexpected parameters {extra} for the architecture {sizes}")
    model.load_state_dict(state)
    model.eval()
    class_names = meta.get("class_names") or [str(i) for i in range(sizes[-1])]
    if len(class_names) != sizes[-1]:
        raise ModelFileError(f"{path}: {len(class_names)} class names for {sizes[-1]} outputs")
    meta["path"] = str(path)
    return Classifier(model, normalizer, list(class_names), {**arch, "sizes": sizes}, meta)
