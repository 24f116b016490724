"""Scores of predictions against labels: accuracy, confusion matrix, per-class precision/recall/F1.

All functions take integer arrays of shape ``(n,)`` (``y_true``, ``y_pred``)
or probabilities of shape ``(n, K)``.
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true, y_pred) -> float:
    """Fraction of positions where the two agree."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def top_k_accuracy(y_true, probabilities, k: int = 2) -> float:
    """Fraction of rows whose true class is among the ``k`` most probable."""
    probabilities = np.asarray(probabilities)
    top = np.argpartition(-probabilities, kth=min(k, probabilities.shape[1]) - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(y_true)[:, None], axis=1)))


def confusion_matrix(y_true, y_pred, n_classes: int = 10) -> np.ndarray:
    """``(K, K)`` int64 counts: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(cm: np.ndarray, class_names=None) -> list[dict]:
    """Precision, recall, F1 and support of every class, from a confusion matrix.

    A class never predicted has precision 0 (not NaN); likewise recall for a
    class with no examples.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    names = class_names or [str(i) for i in range(len(cm))]
    return [
        {"class": i, "name": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(actual[i])}
        for i in range(len(cm))
    ]
