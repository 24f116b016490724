"""Parameter, Module and Sequential: the skeleton every layer hangs on.

A :class:`Module` turns an input batch into an output batch in ``forward`` and,
given the gradient of the loss with respect to that output, returns the
gradient with respect to its input in ``backward`` while filling in the
gradients of its own parameters. Batches are rows: an input of shape
``(N, features)``.
"""

from __future__ import annotations

import numpy as np

from digitnet.errors import ModelFileError


class Parameter:
    """A trainable array with the gradient of the loss beside it.

    Parameters
    ----------
    data : ndarray
        The values. ``grad`` gets the same shape and dtype, filled with zeros.
    decay : bool, default True
        Whether L2 regularisation and weight decay apply to it (weights: yes,
        biases: no).
    """

    __slots__ = ("data", "grad", "decay")

    def __init__(self, data: np.ndarray, decay: bool = True):
        self.data = data
        self.grad = np.zeros_like(data)
        self.decay = decay

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses implement ``forward(x)``, ``backward(grad, input_grad=True)`` and
    ``predict(x)``; everything else (parameters, modes, state) comes from here.
    """

    training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The output for ``x``, keeping what ``backward`` needs (dropout active in training)."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The output for ``x`` at inference, with no side effect.

        Dropout is the identity, nothing is kept for ``backward`` and the
        ``training`` flag is left as it is, so the network can be looked at in
        the middle of a training step. Equal, bit for bit, to ``forward`` in
        evaluation mode.
        """
        raise NotImplementedError

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Gradient of the loss w.r.t. the input, given it w.r.t. the output.

        ``input_grad=False`` lets the first layer skip work nobody needs.
        """
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- structure -------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = ""):
        """Yield ``(name, Parameter)`` pairs, e.g. ``("0.weight", p)``, in a fixed order."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        """Switch training behaviour on (dropout active) or off; returns self."""
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter, keyed by name."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the parameters in place, checking names and shapes.

        All or nothing: every check passes before the first value is copied.
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ModelFileError(
                f"parameters do not match the network: missing {missing}, unexpected {extra}"
            )
        values = {name: np.asarray(state[name]) for name in own}
        for name, p in own.items():
            if values[name].shape != p.data.shape:
                raise ModelFileError(
                    f"parameter '{name}' has shape {values[name].shape}, the network needs {p.data.shape}"
                )
        for name, p in own.items():
            p.data[...] = values[name]

    # -- display -------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied one after another; backward runs them in reverse.

    >>> net = Sequential(Linear(784, 128), ReLU(), Linear(128, 10))
    """

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    # A layer with ``in_place = True`` (ReLU, Dropout) is given ``out=`` its input when that input
    # is an array this Sequential made (the output, or the gradient, of the layer next to it): one
    # buffer fewer to allocate and fill per layer and batch. Whatever a layer keeps for backward is
    # its own (Linear keeps its input, ReLU its output, Dropout its mask), so nothing needed is lost;
    # a ReLU's output overwritten by the Dropout after it keeps its sign wherever the gradient is not 0.

    def forward(self, x: np.ndarray) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, out=x) if i and getattr(layer, "in_place", False) else layer.forward(x)
        return x

    PREDICT_ROWS = 1024  # rows predicted at a time when there are at least twice as many

    def predict(self, x: np.ndarray, return_all: bool = False):
        """Inference without side effects (see :meth:`Module.predict`).

        Parameters
        ----------
        x : ndarray, shape (N, in_features)
        return_all : bool, default False
            Return the output of every layer, not only the last.

        Returns
        -------
        ndarray, shape (N, out_features), or, with ``return_all``, a list
        holding each layer's output in order (the last one is the network's).

        Many rows go through in blocks of ``PREDICT_ROWS`` (the last block
        takes the rest, up to twice that), so each layer's output stays in the
        core's cache for the bias and the activation after it, and the hidden
        layers' outputs take one block's memory however many images there are.
        Each block is long enough for BLAS to compute every row as it would in
        one product, so the result is the same, bit for bit.
        """
        rows = self.PREDICT_ROWS
        if return_all or len(x) < 2 * rows:
            return self._predict(x, return_all)
        starts = list(range(0, len(x) // rows * rows, rows))
        out = None
        for start, end in zip(starts, starts[1:] + [len(x)], strict=True):
            block = self._predict(x[start:end])
            if out is None:
                out = np.empty((len(x),) + block.shape[1:], block.dtype)
            out[start:end] = block
        return out

    def _predict(self, x: np.ndarray, return_all: bool = False):
        outputs = []
        for i, layer in enumerate(self.layers):
            own = i and not return_all and getattr(layer, "in_place", False)
            x = layer.predict(x, out=x) if own else layer.predict(x)
            if return_all:
                outputs.append(x)
        return outputs if return_all else x

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        last = len(self.layers) - 1
        for i in range(last, -1, -1):
            layer, wanted = self.layers[i], input_grad or i > 0
            if i < last and getattr(layer, "in_place", False):  # grad came from the layer after: ours
                grad = layer.backward(grad, input_grad=wanted, out=grad)
            else:
                grad = layer.backward(grad, input_grad=wanted)
        return grad


def flatten_parameters(params: list[Parameter]) -> tuple[np.ndarray, np.ndarray, int]:
    """Move every parameter (and its gradient) into one contiguous buffer.

    Each ``p.data`` and ``p.grad`` becomes a view into a flat array, so an
    optimiser updates all of them with a handful of whole-array operations
    instead of a few per parameter. Parameters with ``decay=True`` come first,
    so L2 and weight decay apply to the slice ``[:n_decay]``.

    When the parameters already are, in that order, consecutive views filling
    one flat data buffer and one flat grad buffer (as an earlier call left
    them), those buffers are returned as they are: nothing is copied or
    rebound, and every optimiser built on the same parameters shares the
    memory. Otherwise the parameters are moved into new buffers, and an
    optimiser built on them earlier refuses to step.

    Returns
    -------
    data, grad : ndarray, shape (total,)
    n_decay : int
        Number of leading elements that belong to decaying parameters.
    """
    if not params:
        raise ValueError("no parameters to optimise")
    dtypes = {p.data.dtype for p in params}
    if len(dtypes) != 1:
        raise ValueError(f"parameters mix dtypes {sorted(map(str, dtypes))}")
    ordered = [p for p in params if p.decay] + [p for p in params if not p.decay]
    n_decay = sum(p.data.size for p in ordered if p.decay)
    shared = _flat_buffers(ordered)
    if shared is not None:
        return shared[0], shared[1], n_decay
    total = sum(p.data.size for p in ordered)
    data = np.empty(total, dtype=dtypes.pop())
    grad = np.zeros_like(data)
    offset = 0
    for p in ordered:
        n = p.data.size
        data[offset : offset + n] = p.data.ravel()
        grad[offset : offset + n] = p.grad.ravel()
        p.data = data[offset : offset + n].reshape(p.data.shape)
        p.grad = grad[offset : offset + n].reshape(p.grad.shape)
        offset += n
    return data, grad, n_decay


def _flat_buffers(ordered: list[Parameter]) -> tuple[np.ndarray, np.ndarray] | None:
    """The flat ``(data, grad)`` buffers that ``ordered`` fills end to end, in order; else None."""
    data, grad = ordered[0].data.base, ordered[0].grad.base
    if data is None or grad is None or data.ndim != 1 or grad.shape != data.shape or grad.dtype != data.dtype:
        return None
    offset = 0
    for p in ordered:
        for view, base in ((p.data, data), (p.grad, grad)):
            if (
                view.base is not base
                or view.dtype != base.dtype
                or not view.flags.c_contiguous
                or _address(view) != _address(base) + offset * base.itemsize
            ):
                return None
        offset += p.data.size
    return (data, grad) if offset == data.size else None


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]
