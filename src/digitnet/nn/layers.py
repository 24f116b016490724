"""Layers, each with its forward pass and, right beside it, its backward pass.

Shapes: ``x`` is ``(N, in_features)``; a layer's ``backward`` takes the
gradient of the loss with respect to its output (same shape as the output)
and returns it with respect to its input (same shape as ``x``).
``predict`` is ``forward`` at inference: it keeps nothing for ``backward``
and dropout is the identity. See docs/math.md for the equations.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn import rules
from digitnet.nn.init import initial_weights
from digitnet.nn.module import Module, Parameter


class Linear(Module):
    """Affine map ``z = x W + b``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output rows.
    init : str, default "he"
        Initialiser name from :mod:`digitnet.nn.init` for ``W``; ``b`` starts at zero
        (``"torch_default"`` draws it like PyTorch).
    rng : numpy.random.Generator, optional
        Source of the initial weights (a fresh unseeded one if omitted).
    dtype : default float32

    Shapes: input ``(N, in_features)``, output ``(N, out_features)``,
    ``weight`` ``(in_features, out_features)``, ``bias`` ``(out_features,)``.
    """

    def __init__(self, in_features: int, out_features: int, init: str = "he", rng=None, dtype=np.float32):
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"a layer needs at least one unit, got {in_features} -> {out_features}")
        rng = rng if rng is not None else np.random.default_rng()
        w, b = initial_weights(init, in_features, out_features, rng, dtype)
        self.weight = Parameter(w, decay=True)
        self.bias = Parameter(b, decay=False)
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self._x = None

    def forward(self, x):
        self._x = x  # kept for dL/dW = x^T dL/dz
        return self.predict(x)

    def predict(self, x):
        z = x @ self.weight.data
        z += self.bias.data
        return z

    def backward(self, grad, input_grad=True):
        np.matmul(self._x.T, grad, out=self.weight.grad)  # dL/dW = x^T g      (in, out)
        np.add.reduce(grad, axis=0, out=self.bias.grad)  # dL/db = sum_n g_n  (out,)
        return grad @ self.weight.data.T if input_grad else None  # dL/dx = g W^T

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, init={self.init}"


class ReLU(Module):
    """``max(0, x)``; its derivative is 1 where ``x > 0`` and 0 elsewhere.

    ``forward``, ``predict`` and ``backward`` take ``out=``, an array of their
    result's shape to write it into (their input, when :class:`Sequential` owns it).
    """

    in_place = True

    def forward(self, x, out=None):
        self._out = self.predict(x, out)
        return self._out

    def predict(self, x, out=None):
        return np.maximum(x, 0, out=out)

    def backward(self, grad, input_grad=True, out=None):
        return np.multiply(grad, self._out > 0, out=out)


class LeakyReLU(Module):
    """``x`` where ``x > 0``, ``slope * x`` elsewhere (default slope 0.01)."""

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, x):
        self._positive = x > 0
        return np.where(self._positive, x, x * self.slope)

    def predict(self, x):
        return np.where(x > 0, x, x * self.slope)

    def backward(self, grad, input_grad=True):
        return np.where(self._positive, grad, grad * self.slope)

    def extra_repr(self):
        return f"slope={self.slope}"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` so it never overflows;
    derivative ``s (1 - s)``."""

    def forward(self, x):
        self._out = self.predict(x)
        return self._out

    def predict(self, x):
        s = np.tanh(x * 0.5)
        s += 1
        s *= 0.5
        return s

    def backward(self, grad, input_grad=True):
        s = self._out
        return grad * s * (1 - s)


class Tanh(Module):
    """``tanh(x)``; derivative ``1 - tanh(x)^2``."""

    def forward(self, x):
        self._out = self.predict(x)
        return self._out

    def predict(self, x):
        return np.tanh(x)

    def backward(self, grad, input_grad=True):
        t = self._out
        return grad * (1 - t * t)


class Dropout(Module):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale
    the survivors by ``1 / (1 - p)``, so evaluation (``eval()``) is the identity.

    Parameters
    ----------
    p : float in [0, 1)
    rng : numpy.random.Generator, optional
    """

    def __init__(self, p: float = 0.5, rng=None):
        rules.fraction(p, "dropout")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng()
        self._mask = None

    in_place = True  # forward, predict and backward take out=, as ReLU's do

    def forward(self, x, out=None):
        if not self.training or self.p == 0:
            self._mask = None
            return self.predict(x, out)
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = keep.astype(x.dtype)
        self._mask *= 1.0 / (1.0 - self.p)
        return np.multiply(x, self._mask, out=out)

    def predict(self, x, out=None):
        if out is not None and out is not x:
            out[...] = x
            return out
        return x

    def backward(self, grad, input_grad=True, out=None):
        if self._mask is None:
            return self.predict(grad, out)
        return np.multiply(grad, self._mask, out=out)

    def extra_repr(self):
        return f"p={self.p}"


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def linear_layers(model: Module) -> list[Linear]:
    """The Linear layers of ``model`` (inside nested containers too), input side first."""
    if isinstance(model, Linear):
        return [model]
    return [linear for _, child in model.named_children() for linear in linear_layers(child)]


def mlp(sizes, activation: str = "relu", dropout: float = 0.0, init: str = "he", rng=None, dtype=np.float32):
    """Build a fully connected network ``Linear -> activation [-> Dropout] -> ... -> Linear``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths from input to output, e.g. ``[784, 128, 64, 10]``.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}
    dropout : float in [0, 1)
        Applied after each hidden activation when > 0.
    init : str
        Initialiser name (see :mod:`digitnet.nn.init`).
    rng : numpy.random.Generator or int, optional
        Seeds the weights and the dropout masks.

    Returns
    -------
    Sequential
    """
    from digitnet.nn.module import Sequential

    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ConfigError(f"layer sizes must be at least two positive numbers, got {sizes}")
    rules.one_of(activation, ACTIVATIONS, "activation")
    rules.fraction(dropout, "dropout")
    rng = np.random.default_rng(rng)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Linear(n_in, n_out, init=init, rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout, rng=rng))
    return Sequential(*layers)
