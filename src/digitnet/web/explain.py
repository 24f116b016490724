"""How the network decided: each layer's activity and the strongest paths to the winning output.

:func:`trace` runs one image through the network layer by layer (by
``predict``, so a network in training is left as it was), keeping what the
web page draws: the activation of every hidden unit and, walking
back from the winning output, the connections that pushed it up most.
A connection from unit ``i`` of one layer to unit ``j`` of the next adds
``a_i * W[i, j]`` to ``j``'s input, so those products are what is ranked.
"""

from __future__ import annotations

import numpy as np

from digitnet import nn
from digitnet.nn import linear_layers

# How many incoming connections to follow from each unit on a path, output first.
FAN_IN = (6, 3, 3, 3, 3)


def trace(model: nn.Sequential, x: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """Run one normalised input row through ``model`` and explain the answer.

    Parameters
    ----------
    model : Sequential
        An :func:`~digitnet.nn.mlp`: Linear layers with activations between them.
    x : ndarray, shape (1, inputs)
        One image, already normalised as the network expects.
    probabilities : ndarray, shape (K,), optional
        The answer to explain, when the model's is not the network's on ``x`` alone (a model with
        test-time shifts answers from several views); the paths lead to its digit. Default: the
        network's own on ``x``.

    Returns
    -------
    dict with ``probabilities`` (K,), ``digit``, ``layers`` (one list of
    activations per hidden layer) and ``paths``: connections
    ``{"from": [layer, unit], "to": [layer, unit], "weight": a_i * W[i, j]}``
    with layer 0 the input pixels, 1..H the hidden layers and H+1 the output.
    """
    outputs = model.predict(x, return_all=True)
    values = [x[0].astype(np.float32)]  # the input, then each hidden layer's activations
    values += [
        h[0]
        for layer, h in zip(model.layers, outputs, strict=True)
        if not isinstance(layer, (nn.Linear, nn.Dropout))
    ]
    if probabilities is None:
        probabilities = nn.softmax(outputs[-1][0][None, :])[0]
    digit = int(np.argmax(probabilities))
    linears = linear_layers(model)
    paths, frontier = [], [digit]
    for depth, layer_index in enumerate(range(len(linears), 0, -1)):
        w = linears[layer_index - 1].weight.data  # (units below, units here)
        below = values[layer_index - 1]
        k = FAN_IN[min(depth, len(FAN_IN) - 1)]
        chosen = set()
        for unit in frontier:
            push = below * w[:, unit]
            for i in np.argsort(push)[::-1][:k]:
                if push[i] <= 0:
                    break
                paths.append(
                    {
                        "from": [layer_index - 1, int(i)],
                        "to": [layer_index, int(unit)],
                        "weight": float(push[i]),
                    }
                )
                chosen.add(int(i))
        frontier = sorted(chosen)
    return {
        "probabilities": probabilities.tolist(),
        "digit": digit,
        "layers": [v.tolist() for v in values[1:]],
        "paths": paths,
    }


def incoming(model: nn.Sequential, layer: int, unit: int) -> dict:
    """The weights into ``unit`` of ``layer`` (1: first hidden layer ... H+1: output) and its bias.

    Returns ``{"layer", "unit", "weights" (inputs of that layer,), "bias"}``;
    raises IndexError for a layer or unit that does not exist.
    """
    linears = linear_layers(model)
    if not 1 <= layer <= len(linears):
        raise IndexError(f"layer {layer} does not exist: layers are 1 to {len(linears)}")
    lin = linears[layer - 1]
    if not 0 <= unit < lin.out_features:
        raise IndexError(f"layer {layer} has units 0 to {lin.out_features - 1}, not {unit}")
    return {
        "layer": layer,
        "unit": unit,
        "weights": lin.weight.data[:, unit].tolist(),
        "bias": float(lin.bias.data[unit]),
    }
