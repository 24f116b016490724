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
from digitnet.errors import ConfigError
from digitnet.nn import rules
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
        self.linears, self.activations = _layers(state.model)
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

    def check_state(self, saved, state) -> None:
        """Raise :class:`~digitnet.errors.ConfigError` when ``saved`` is not a :meth:`state_dict` of a
        Diagnostics on the network of ``state`` (a :class:`~digitnet.training.FitState`)."""
        linears, activations = _layers(state.model)
        if not isinstance(saved, dict) or not {"initial_weights", "norms", "seen", "fired"} <= set(saved):
            raise ConfigError(
                "the saved diagnostics must be a dict with initial_weights, norms, seen and fired, "
                f"not {saved!r:.80}"
            )
        initial, fired, seen = saved["initial_weights"], saved["fired"], saved["seen"]
        own = {n: p.data.shape for n, p in state.model.named_parameters() if n.endswith("weight")}
        if not isinstance(initial, dict) or set(initial) != set(own):
            raise ConfigError(f"the saved diagnostics' initial weights must be named {sorted(own)}")
        if not isinstance(fired, list) or len(fired) != len(activations):
            raise ConfigError(f"the saved diagnostics' 'fired' must be a list of {len(activations)} entries")
        expected = [(f"initial_weights/{n}", initial[n], shape, "f") for n, shape in own.items()]
        expected.append(("norms", saved["norms"], (len(linears),), "f"))
        # The k-th activation follows the k-th linear layer: one flag per unit of it.
        expected += [
            (f"fired/{k}", f, (linears[k].out_features,), "b") for k, f in enumerate(fired) if f is not None
        ]
        for where, value, shape, kind in expected:
            ok = isinstance(value, np.ndarray) and value.shape == shape and value.dtype.kind == kind
            if not ok or (kind == "f" and not np.isfinite(value).all()):
                raise ConfigError(f"the saved diagnostics' '{where}' must be an array of shape {shape}")
        if not rules.is_whole(seen):
            raise ConfigError(f"the saved diagnostics' 'seen' must be a whole number >= 0, not {seen!r:.80}")

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


def _layers(model) -> tuple[list, list]:
    """The network's linear layers and its activation layers, input side first."""
    activations = tuple(nn.ACTIVATIONS.values())
    return nn.linear_layers(model), [layer for layer in model.layers if isinstance(layer, activations)]


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
