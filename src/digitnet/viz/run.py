"""Everything the pictures of one trained model need, loaded once: :class:`Run`.

A run folder (:mod:`digitnet.runs`) holds the model, its history and the
initial weights; a bare model file has only the first. :func:`load_run` reads
what is there and says what is missing; the test images come from the dataset the model was
trained on (or the one given) and are classified once, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from digitnet import metrics, runs
from digitnet.data.datasets import Dataset, load_dataset
from digitnet.errors import DataError, ModelFileError
from digitnet.modelfile import Classifier
from digitnet.training import History


@dataclass
class Run:
    """A trained model with its history, its initial weights and a test set.

    ``history`` and ``initial_weights`` are None when the run folder lacks
    them. ``dataset`` is loaded by :func:`load_run` or given; ``folder`` is
    where plots go by default.
    """

    classifier: Classifier
    folder: Path
    history: History | None = None
    initial_weights: dict | None = None
    dataset: Dataset | None = None
    name: str = ""
    notes: list = field(default_factory=list)

    @property
    def class_names(self) -> list:
        return self.classifier.class_names

    @property
    def x_test(self) -> np.ndarray:
        """Test images, uint8 ``(n, 784)``."""
        return self.dataset.x_test

    @property
    def y_test(self) -> np.ndarray:
        """Test labels, int64 ``(n,)``."""
        return self.dataset.y_test.astype(np.int64)

    @cached_property
    def logits(self) -> np.ndarray:
        """The model's logits on the test set, ``(n, K)``."""
        return self.classifier.logits(self.x_test)

    @cached_property
    def proba(self) -> np.ndarray:
        """Softmax probabilities on the test set, ``(n, K)``."""
        from digitnet.nn import softmax

        return softmax(self.logits)

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @cached_property
    def confusion(self) -> np.ndarray:
        """``(K, K)`` counts, rows true class, columns predicted."""
        return metrics.confusion_matrix(self.y_test, self.y_pred, len(self.class_names))

    @property
    def accuracy(self) -> float:
        return metrics.accuracy(self.y_test, self.y_pred)


def load_run(path, data=None, dataset: str | None = None, cache_dir=None, load_data: bool = True) -> Run:
    """Load a run folder or a model file (and, by default, the test set of its dataset).

    Parameters
    ----------
    path : str or Path
        A run folder (``runs/<run>``) or a model file (``model.npz``).
    data, cache_dir : optional
        As for :func:`~digitnet.data.load_dataset`: the user's own copy of the data.
    dataset : str, optional
        Dataset name; default: the one the model was trained on.
    load_data : bool, default True

    Raises
    ------
    ModelFileError
        When ``path`` is not a model file or a run folder holding one; when a
        run folder has no ``history.json`` or a damaged one.
    """
    path = Path(path)
    classifier = runs.load_model(path)
    model_path = Path(classifier.meta["path"])
    folder = model_path.parent
    history = runs.read_history(folder)
    if path.is_dir() and history is None:
        raise ModelFileError(
            f"{path} has a model but no {runs.HISTORY}, so it is not a whole run folder: "
            f"plot the model file alone ({model_path}) for the plots that need no history"
        )
    run = Run(classifier, folder, history=history, name=folder.name if path.is_dir() else model_path.stem)
    if history is None:
        run.notes.append(f"no {runs.HISTORY} beside {model_path.name}")
    run.initial_weights = _initial_weights(folder, classifier)
    if load_data:
        name = dataset or classifier.meta.get("dataset") or "mnist"
        seed = int((classifier.meta.get("config") or {}).get("seed", 0))
        run.dataset = check_dataset(load_dataset(name, data=data, cache_dir=cache_dir, seed=seed), classifier)
    return run


def check_dataset(ds: Dataset, classifier: Classifier) -> Dataset:
    """Return ``ds`` if the model can read it, else raise :class:`DataError` saying why not."""
    sizes = classifier.architecture["sizes"]
    if ds.x_test.shape[1] != sizes[0] or len(ds.class_names) != sizes[-1]:
        raise DataError(
            f"the model takes {sizes[0]} pixels into {sizes[-1]} classes; {ds.name} has "
            f"{ds.x_test.shape[1]} pixels and {len(ds.class_names)} classes"
        )
    if not len(ds.x_test):
        raise DataError(f"{ds.name} from {ds.source} has no test images to plot")
    return ds


def _initial_weights(folder: Path, classifier: Classifier) -> dict | None:
    """The weights before training, checked against the model's shapes; None if absent."""
    weights = runs.read_initial_weights(folder)
    if weights is None:
        return None
    expected = {name: p.shape for name, p in classifier.model.named_parameters() if name.endswith("weight")}
    if {k: v.shape for k, v in weights.items()} != expected:
        raise ModelFileError(
            f"{folder / runs.INITIAL_WEIGHTS} does not match the model's layers: it belongs to another run"
        )
    return weights
