"""Scores of predictions against labels: accuracy, confusion matrix, per-class precision/recall/F1,
and how two models' predictions agree.

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
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


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
        {
            "class": i,
            "name": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i in range(len(cm))
    ]


def scores(y_true, probabilities, class_names=None) -> dict:
    """Everything ``digitnet evaluate`` reports about probabilities against labels.

    Parameters
    ----------
    y_true : array_like of int, shape (n,)
    probabilities : array_like of float, shape (n, K)
        One row of class probabilities per image; the predicted class is the most probable.
    class_names : list of str, optional
        ``K`` names for :func:`per_class_scores` (default ``"0"`` to ``"K-1"``).

    Returns
    -------
    dict
        ``n``: int; ``accuracy``: float; ``top2_accuracy``: float (:func:`top_k_accuracy`, ``k=2``);
        ``confusion_matrix``: int64 ``(K, K)``, rows true, columns predicted;
        ``per_class``: :func:`per_class_scores`, one dict per class.
    """
    probabilities = np.asarray(probabilities)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probabilities.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, probabilities.shape[1])
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, y_pred),
        "top2_accuracy": top_k_accuracy(y_true, probabilities, 2),
        "confusion_matrix": cm,
        "per_class": per_class_scores(cm, class_names),
    }


def agreement(y_true, pred_a, pred_b, n_classes: int = 10) -> dict:
    """How two models' predictions on the same labelled images agree and differ.

    Parameters
    ----------
    y_true : array_like of int, shape (n,)
    pred_a, pred_b : array_like of int, shape (n,)
        The classes models A and B predict for each image.
    n_classes : int, default 10
        ``K``, the length of ``disagreements_by_class``.

    Returns
    -------
    dict
        ``n``: int; ``accuracy_a``, ``accuracy_b``: float (:func:`accuracy`);
        ``agreement``: float, the fraction of images both read alike (1.0 when ``n`` is 0);
        ``disagreements``: int64 ``(m,)``, the indices of the ``m`` images read differently, ascending;
        ``only_a_right``, ``only_b_right``: int, images one model reads right and the other wrong;
        ``both_wrong_differently``: int, images both read wrong, each in its own way;
        ``disagreements_by_class``: int64 ``(K,)``, the disagreements counted by true class.
    """
    y = np.asarray(y_true, dtype=np.int64)
    pa, pb = np.asarray(pred_a, dtype=np.int64), np.asarray(pred_b, dtype=np.int64)
    if not y.shape == pa.shape == pb.shape or y.ndim != 1:
        raise ValueError(
            f"labels and both predictions must be (n,) arrays of one length, got shapes "
            f"{y.shape}, {pa.shape} and {pb.shape}"
        )
    differ = np.flatnonzero(pa != pb)
    return {
        "n": int(len(y)),
        "accuracy_a": accuracy(y, pa),
        "accuracy_b": accuracy(y, pb),
        "agreement": 1 - len(differ) / max(1, len(y)),
        "disagreements": differ,
        "only_a_right": int(np.sum((pa == y) & (pb != y))),
        "only_b_right": int(np.sum((pb == y) & (pa != y))),
        "both_wrong_differently": int(np.sum((pa != y) & (pb != y) & (pa != pb))),
        "disagreements_by_class": np.bincount(y[differ], minlength=n_classes),
    }
