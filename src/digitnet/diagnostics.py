"""What happens inside the network while it trains: gradient norms, inactive units, initial weights.

:class:`Diagnostics` is a training :class:`~digitnet.training.Callback`. Per
epoch it adds to each epoch's record in the :class:`~digitnet.training.History`

- ``grad_norm_<k>``: the mean Frobenius norm ``||dL/dW||`` of linear layer
  ``k`` (1-based, input side first) over the sampled batches: how strongly the
  layer is being corrected;
- ``inactive_<k>``: the share of hidden layer ``k``'s units that never fired
  on any sampled example of the epoch (ReLU: output never above 0, a "dead"
  unit; sigmoid/tanh: always saturated, within 0.01 of a bound);
- ``iteration``: the iterations done by the end of the epoch,

and it keeps a copy of every weight matrix as it was before the first step
(:attr:`Diagnostics.initial_weights`, ``{"0.weight": (in, out) array, ...}``).
``history.extra["diagnostics"]`` names the layers and says how the numbers
were sampled.

It is cheap: it looks at about :attr:`SAMPLES` batches an epoch (evenly spaced)
and at most :attr:`ROWS` rows of each, reusing the gradients and activations
the training step has already computed; nothing is recomputed
(benchmarks/viz_diagnostics.py measures the cost: well under 5 %).
"""

from __future__ import annotations

import numpy as np

from digitnet import nn
from digitnet.training import Callback

SATURATION = 0.01  # a sigmoid output within this of 0 or 1 (tanh: of -1 or 1) is saturated


class Diagnostics(Callback):
    """Record per-layer gradient norms, inactive-unit shares and the initial weights.

    Parameters
    ----------
    samples : int, default 32
        Batches looked at per epoch (every batch when an epoch has fewer).
    rows : int, default 256
        Rows of a sampled batch checked for active units.
    """

    def __init__(self, samples: int = 32, rows: int = 256):
        self.samples, self.rows = int(samples), int(rows)
        self.initial_weights: dict[str, np.ndarray] = {}

    # -- hooks ---------------------------------------------------------------
    def on_train_begin(self, state):
        layers = state.model.layers
        self.linears = nn.linear_layers(state.model)
        self.activations = [layer for layer in layers if isinstance(layer, tuple(nn.ACTIVATIONS.values()))]
        self.initial_weights = {
            name: p.data.copy() for name, p in state.model.named_parameters() if name.endswith("weight")
        }
        self.stride = max(1, state.batches // max(1, self.samples))
        kind = type(self.activations[0]).__name__ if self.activations else "none"
        state.history.extra["diagnostics"] = {
            "layers": [f"{layer.in_features}→{layer.out_features}" for layer in self.linears],
            "activation": kind,
            "inactive": (
                "units whose output was never above 0 on the sampled examples"
                if kind in ("ReLU", "LeakyReLU")
                else "units saturated (within 0.01 of a bound) on every sampled example"
            ),
            "sampled_batches_per_epoch": -(-state.batches // self.stride),
            "sampled_rows_per_batch": self.rows,
        }

    def on_epoch_begin(self, state):
        self._reset()

    def _reset(self):
        self._norms = np.zeros(len(self.linears))
        self._seen = 0
        self._fired = [None] * len(self.activations)

    def on_batch_end(self, state):
        if (state.iteration - 1) % self.stride:
            return
        self._seen += 1
        for k, layer in enumerate(self.linears):
            g = layer.weight.grad.ravel()
            self._norms[k] += np.sqrt(np.dot(g, g))
        for k, act in enumerate(self.activations):
            fired = _fired(act, self.rows)
            self._fired[k] = fired if self._fired[k] is None else self._fired[k] | fired

    def state_dict(self) -> dict:
        """The initial weights and the epoch's sums so far, so that a resumed run records the same figures."""
        return {
            "initial_weights": self.initial_weights,
            "norms": self._norms.copy(),
            "seen": self._seen,
            "fired": [None if f is None else f.copy() for f in self._fired],
        }

    def load_state_dict(self, state: dict) -> None:
        self.initial_weights = {k: np.asarray(v) for k, v in state["initial_weights"].items()}
        self._norms = np.asarray(state["norms"], dtype=np.float64).copy()
        self._seen = int(state["seen"])
        self._fired = [None if f is None else np.asarray(f, dtype=bool) for f in state["fired"]]

    def on_epoch_end(self, state):
        record = state.history.epochs[-1]
        record["iteration"] = state.iteration
        seen = max(1, self._seen)
        for k in range(len(self.linears)):
            record[f"grad_norm_{k + 1}"] = float(self._norms[k] / seen) if self._seen else None
        for k, fired in enumerate(self._fired):
            record[f"inactive_{k + 1}"] = None if fired is None else float(1 - fired.mean())
        self._reset()  # a checkpoint taken now holds no sums of an epoch that is over


def _fired(act: nn.Module, rows: int) -> np.ndarray:
    """Boolean ``(units,)``: which units of an activation layer fired on its last batch's first ``rows`` rows."""
    if isinstance(act, nn.LeakyReLU):
        return act._positive[:rows].any(axis=0)
    out = act._out[:rows]
    if isinstance(act, nn.ReLU):
        return (out > 0).any(axis=0)
    if isinstance(act, nn.Sigmoid):
        return ((out > SATURATION) & (out < 1 - SATURATION)).any(axis=0)
    return (np.abs(out) < 1 - SATURATION).any(axis=0)  # tanh
