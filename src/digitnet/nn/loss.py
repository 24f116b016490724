"""Softmax and cross-entropy, fused, and the L2 penalty.

For logits ``z`` of shape ``(N, K)`` and integer labels ``y`` of shape ``(N,)``:

    p = softmax(z),  p_k = exp(z_k - max z) / sum_j exp(z_j - max z)
    L = mean_n [ logsumexp(z_n) - sum_k q_nk z_nk ]        q = target distribution
    dL/dz = (p - q) / N

With label smoothing ``eps``, ``q = (1 - eps) * onehot(y) + eps / K``.
Fusing the two avoids ever taking the log of a probability that underflowed.
"""

from __future__ import annotations

import numpy as np

from digitnet.nn import rules


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` logits, stable for any magnitude."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log(softmax(z))`` via log-sum-exp."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class SoftmaxCrossEntropy:
    """Mean cross-entropy of the softmax of logits against integer labels.

    Parameters
    ----------
    label_smoothing : float in [0, 1), default 0

    ``forward(z, y)`` returns the loss (a Python float) and remembers what
    ``backward()`` needs to return ``dL/dz`` of shape ``(N, K)``.
    """

    def __init__(self, label_smoothing: float = 0.0):
        rules.fraction(label_smoothing, "label smoothing")
        self.label_smoothing = label_smoothing

    def forward(self, z: np.ndarray, y: np.ndarray) -> float:
        n, k = z.shape
        rows = np.arange(n)
        shifted = z - z.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        total = p.sum(axis=1, keepdims=True)
        eps = self.label_smoothing
        target_term = shifted[rows, y]
        if eps:
            target_term *= 1 - eps
            target_term += (eps / k) * shifted.sum(axis=1)
        # mean of logsumexp(shifted) - target: one sum of logs, one of targets
        loss = (float(np.log(total).sum()) - float(target_term.sum())) / n
        p /= total
        self._p, self._y, self._rows = p, y, rows
        return loss

    def backward(self) -> np.ndarray:
        p, y, rows = self._p, self._y, self._rows
        n, k = p.shape
        eps = self.label_smoothing
        grad = p  # reuse the buffer: p is not needed again
        grad[rows, y] -= 1 - eps
        if eps:
            grad -= eps / k
        grad *= 1.0 / n
        self._p = None
        return grad

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the last forward's logits (valid until ``backward``)."""
        return self._p

    def __repr__(self):
        return f"SoftmaxCrossEntropy(label_smoothing={self.label_smoothing})"


def l2_penalty(weights, lam: float, m: int) -> float:
    """The L2 term ``lam / (2 m) * sum ||W||^2`` over the given weight arrays.

    Its gradient, ``(lam / m) W``, is what the optimisers add to each weight's
    gradient when given ``l2 = lam / m`` (see :class:`digitnet.nn.optim.Optimizer`).
    """
    return float(lam / (2.0 * m) * sum(float(np.sum(np.square(w, dtype=np.float64))) for w in weights))
