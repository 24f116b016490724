"""Live PyTorch modules <-> digitnet networks (these functions need PyTorch; it is imported inside them).

``to_torch_module(model)`` builds the ``nn.Sequential`` equivalent of a digitnet network with the same
weights; ``from_torch_module(module)`` goes the other way. Both copy bits, so the two compute the same
function up to the order of floating-point operations.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from digitnet import nn
from digitnet.data.loader import Normalizer
from digitnet.errors import ConfigError
from digitnet.interop.export import require
from digitnet.interop.statedict import from_state_dict
from digitnet.modelfile import Classifier


def to_torch_module(model: nn.Sequential):
    """The ``torch.nn.Sequential`` equivalent of a digitnet network, holding copies of its weights.

    ``Linear(784, 128)`` becomes ``torch.nn.Linear(784, 128)`` with ``weight = W.T`` of shape
    ``(128, 784)``; activations and dropout map one to one; the dtype is kept.
    """
    torch = require("torch", "torch", "building a PyTorch module")
    layers = []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            w = layer.weight.data
            linear = torch.nn.Linear(w.shape[0], w.shape[1], dtype=_torch_dtype(torch, w.dtype))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                linear.bias.copy_(torch.from_numpy(layer.bias.data))
            layers.append(linear)
        elif isinstance(layer, nn.LeakyReLU):
            layers.append(torch.nn.LeakyReLU(layer.slope))
        elif isinstance(layer, nn.Dropout):
            layers.append(torch.nn.Dropout(layer.p))
        else:
            layers.append(
                {nn.ReLU: torch.nn.ReLU, nn.Sigmoid: torch.nn.Sigmoid, nn.Tanh: torch.nn.Tanh}[type(layer)]()
            )
    return torch.nn.Sequential(*layers)


def from_torch_module(
    module, activation: str | None = None, normalizer: Normalizer | None = None, dataset: str = "mnist"
) -> Classifier:
    """A digitnet Classifier computing what a PyTorch MLP computes.

    An ``nn.Sequential`` (nested ones too) of ``Linear``, ``ReLU`` / ``LeakyReLU(0.01)`` / ``Sigmoid`` /
    ``Tanh``, ``Dropout``, ``Flatten`` and ``Identity`` is read layer by layer, activation included
    (dropout, an identity at inference, is left out).
    Any other Module is read from its ``state_dict()``: its forward is code, so ``activation`` says what
    it applies between layers (default: the one activation Module it registers, else relu).
    """
    torch = require("torch", "torch", "reading a PyTorch module")
    leaves = [m for m in module.modules() if not list(m.children())]
    names = {
        torch.nn.ReLU: "relu",
        torch.nn.LeakyReLU: "leaky_relu",
        torch.nn.Sigmoid: "sigmoid",
        torch.nn.Tanh: "tanh",
    }
    kinds = {names[type(m)] for m in leaves if type(m) in names}
    state = {
        k: (v.detach().cpu().float() if v.dtype == torch.bfloat16 else v.detach().cpu()).numpy().copy()
        for k, v in module.state_dict().items()
    }
    if isinstance(module, torch.nn.Sequential):
        found = _sequential_activation(torch, leaves, names)
        if activation is not None and activation != found:
            raise ConfigError(f"the module applies {found}, not {activation}")
        activation = found
    elif activation is None:
        activation = kinds.pop() if len(kinds) == 1 else "relu"
    return from_state_dict(state, activation, normalizer, dataset=dataset, where=type(module).__name__)


def _sequential_activation(torch, leaves, names) -> str:
    """The single activation between the Linear layers of a flattened Sequential, checking the pattern."""
    skip = (torch.nn.Dropout, torch.nn.Flatten, torch.nn.Identity)
    layers = [m for m in leaves if not isinstance(m, skip)]
    acts = []
    for prev, m in pairwise(layers):
        if isinstance(prev, torch.nn.Linear) == isinstance(m, torch.nn.Linear):
            raise ConfigError(
                "the Sequential is not Linear, activation, Linear, ...: "
                f"found {type(prev).__name__} then {type(m).__name__}"
            )
    for m in layers:
        if isinstance(m, torch.nn.Linear):
            continue
        if type(m) not in names:
            raise ConfigError(f"the Sequential holds {type(m).__name__}, which digitnet has no layer for")
        if isinstance(m, torch.nn.LeakyReLU) and m.negative_slope != 0.01:
            raise ConfigError(f"LeakyReLU({m.negative_slope}): digitnet networks use slope 0.01")
        acts.append(names[type(m)])
    if (
        not layers
        or not isinstance(layers[0], torch.nn.Linear)
        or not isinstance(layers[-1], torch.nn.Linear)
    ):
        raise ConfigError("the Sequential must start and end with a Linear layer")
    if len(set(acts)) > 1:
        raise ConfigError(
            f"the Sequential mixes activations {sorted(set(acts))}; digitnet uses one throughout"
        )
    return acts[0] if acts else "relu"


def _torch_dtype(torch, dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
