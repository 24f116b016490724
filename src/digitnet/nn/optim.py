"""Optimisers: how the gradient turns into a change of the weights.

Every optimiser gathers the parameters into one flat buffer
(:func:`~digitnet.nn.module.flatten_parameters`), so a step is a handful of
whole-array NumPy operations however many layers there are. The formulas are
PyTorch's, so the same hyperparameters mean the same thing in both.

Two kinds of regularisation, both on weights only (never on biases):

- ``l2``: classic L2 regularisation. The penalty ``lam / (2 m) * sum ||W||^2``
  adds ``(lam / m) W`` to the gradient; pass ``l2 = lam / m``.
- ``weight_decay``: decoupled decay, ``W <- W (1 - lr * weight_decay)`` before
  the update (what AdamW does).

``state_dict()`` and ``load_state_dict(state)`` save and restore what an
optimiser has learned (its step count, learning rate and running averages),
as PyTorch's do, so a run resumes exactly where it stopped.
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.errors import ConfigError
from digitnet.nn import rules
from digitnet.nn.module import flatten_parameters
from digitnet.threads import in_parts


class Optimizer:
    """Base class: keeps the flat buffers, applies L2 / weight decay, counts steps.

    Parameters
    ----------
    params : list of Parameter
        Rebound to views of one flat buffer (the optimiser owns their memory
        layout). A second optimiser on the same parameters shares the first
        one's buffer; one on another set or order of them moves them into its
        own, and the first one then refuses to step.
    lr : float > 0
    l2 : float >= 0, default 0
        Coefficient of ``W`` added to each weight's gradient (``lam / m``).
    weight_decay : float >= 0, default 0
        Decoupled decay rate.
    """

    PART = 1 << 17  # the fewest weights a thread updates: below this, waking it costs more than it saves
    BUFFERS: tuple[str, ...] = ()  # attributes holding running averages (None when unused)
    HYPER: tuple[str, ...] = ()  # the subclass's own hyperparameters, for state_dict

    def __init__(self, params, lr: float, l2: float = 0.0, weight_decay: float = 0.0):
        rules.positive(lr, "the learning rate")
        rules.non_negative(l2, "the L2 coefficient")
        rules.non_negative(weight_decay, "weight decay")
        self.params = list(params)
        self.data, self.grad, self.n_decay = flatten_parameters(self.params)
        self.lr, self.l2, self.weight_decay = lr, l2, weight_decay
        self.t = 0  # steps taken
        self._tmp = np.empty_like(self.data)  # scratch space, so a step allocates nothing
        self._tiny = np.empty(self.data.shape, dtype=bool)

    def __setstate__(self, state: dict) -> None:
        """After pickling or a deep copy: each array comes back apart, so the parameters are bound
        to the flat buffers again (their values, the same as the buffer's, move into a new one)."""
        self.__dict__.update(state)
        if any(p.data.base is not self.data for p in self.params):
            for p in self.params:  # unpickled arrays may rest on bytes: own copies, then one buffer
                p.data, p.grad = np.array(p.data), np.array(p.grad)
            self.data, self.grad, self.n_decay = flatten_parameters(self.params)

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def step(self) -> None:
        """Update every parameter from its ``grad``."""
        for p in self.params:
            if p.data.base is not self.data:
                raise ConfigError(
                    f"this {type(self).__name__}'s parameters were moved into another optimiser's buffer (one "
                    "built later on another set or order of them), so a step here would change nothing the "
                    "network uses: build one optimiser per set of parameters, or build this one again"
                )
        self.t += 1
        nd = self.n_decay
        if self.l2:
            tmp = self._tmp[:nd]
            np.multiply(self.data[:nd], self.l2, out=tmp)
            self.grad[:nd] += tmp  # g <- g + (lam/m) W
        if self.weight_decay:
            self.data[:nd] *= 1.0 - self.lr * self.weight_decay
        in_parts(self._update_part, len(self.data), self.PART)
        if self.t % 64 == 0:
            self.flush_subnormals()

    def _update_part(self, i: int, lo: int, hi: int) -> None:
        self.update(self.data[lo:hi], self.grad[lo:hi], slice(lo, hi))

    def flush_subnormals(self) -> None:
        """Set running averages smaller than 1e-30 to exactly zero.

        A weight whose gradient is always zero (a pixel that is black in every
        image) has moments that decay geometrically into float32's subnormal
        range, where x86 arithmetic runs up to a hundred times slower. Values
        that small change no weight by a representable amount, so zeroing them
        every 64 steps costs nothing in accuracy and keeps every epoch as fast
        as the first.
        """
        for buffer in self.state_buffers():
            np.less(np.abs(buffer, out=self._tmp), 1e-30, out=self._tiny)
            np.copyto(buffer, 0, where=self._tiny)

    def state_buffers(self) -> list[np.ndarray]:
        """The optimiser's running averages (empty for plain SGD)."""
        return list(self.named_buffers().values())

    def named_buffers(self) -> dict[str, np.ndarray]:
        """The running averages by name, e.g. ``{"m": ..., "v": ...}``, each shaped like the flat buffer."""
        return {name: getattr(self, name) for name in self.BUFFERS if getattr(self, name) is not None}

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue from here, as copies.

        Returns
        -------
        dict
            ``type`` (the class name), ``t`` (steps taken), ``hyper`` (``lr``,
            ``l2``, ``weight_decay`` and the class's own, as plain numbers and
            lists) and ``buffers`` (name -> copy of each running average,
            shape ``(total,)``). Every value is an ndarray or plain Python
            that JSON can hold.
        """
        hyper = {name: _plain(getattr(self, name)) for name in ("lr", "l2", "weight_decay") + self.HYPER}
        return {
            "type": type(self).__name__,
            "t": self.t,
            "hyper": hyper,
            "buffers": {name: buffer.copy() for name, buffer in self.named_buffers().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output: copy the running averages in, restore ``t`` and ``lr``.

        The other hyperparameters stay those this optimiser was built with.
        All or nothing: the type and every buffer's presence, shape and dtype
        are checked before the first value is copied; a mismatch raises
        :class:`~digitnet.errors.ConfigError` naming it.
        """
        name = type(self).__name__
        if not isinstance(state, dict) or not {"type", "t", "hyper", "buffers"} <= set(state):
            raise ConfigError(
                f"an optimiser state is a dict with 'type', 't', 'hyper' and 'buffers' "
                f"(what state_dict() returns), not {_describe(state)}"
            )
        if state["type"] != name:
            raise ConfigError(
                f"the optimiser state is of {state['type']!r}, not {name!r}: "
                f"load it into the optimiser it was saved from"
            )
        own, given = self.named_buffers(), state["buffers"]
        if not isinstance(given, dict) or set(given) != set(own):
            saved = sorted(given) if isinstance(given, dict) else _describe(given)
            raise ConfigError(
                f"the {name} state holds the buffers {saved}, this {name} has {sorted(own)}: "
                "build it with the same settings (momentum on or off) as the saved one"
            )
        for key, buffer in own.items():
            value = given[key]
            if not isinstance(value, np.ndarray):
                raise ConfigError(f"buffer {key!r} of the {name} state is {_describe(value)}, not an array")
            if value.shape != buffer.shape:
                raise ConfigError(
                    f"buffer {key!r} has shape {value.shape}, this {name}'s parameters need "
                    f"{buffer.shape}: the state is of another network"
                )
            if value.dtype != buffer.dtype:
                raise ConfigError(
                    f"buffer {key!r} holds {value.dtype}, this {name}'s parameters are "
                    f"{buffer.dtype}: build the network with dtype {value.dtype}"
                )
            if not np.isfinite(value).all():
                raise ConfigError(f"buffer {key!r} of the {name} state holds values that are not finite")
        t, hyper = state["t"], state["hyper"]
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ConfigError(
                f"the {name} state's step count 't' must be a whole number >= 0, not {_shown(t)}"
            )
        lr = hyper.get("lr") if isinstance(hyper, dict) else None
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not 0 < lr < math.inf:
            raise ConfigError(
                f"the {name} state's 'hyper' must hold a finite learning rate 'lr' > 0, not {_shown(lr)}"
            )
        for key, buffer in own.items():
            buffer[...] = given[key]
        self.t, self.lr = int(t), float(lr)

    def update(self, p: np.ndarray, g: np.ndarray, part: slice = slice(None)) -> None:
        """Update the parameters ``p`` from their gradients ``g``, the slice ``part`` of the flat buffers.

        :meth:`step` calls it on a few slices at once (:func:`digitnet.threads.in_parts`); every
        element's arithmetic is the same whatever the slice, so the result is too.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, l2={self.l2}, weight_decay={self.weight_decay})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (heavy ball or Nesterov).

    ``v <- mu v + g``;  ``p <- p - lr * (g + mu v)`` (Nesterov) or ``p <- p - lr * v``.
    With ``momentum=0``: ``p <- p - lr * g``. Full-batch gradient descent is
    this with one batch holding the whole training set.
    """

    BUFFERS, HYPER = ("velocity",), ("momentum", "nesterov")

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **kw):
        super().__init__(params, lr, **kw)
        rules.fraction(momentum, "momentum")
        _check(not nesterov or momentum > 0, "Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        self.velocity = np.zeros_like(self.data) if momentum else None

    def update(self, p, g, part=slice(None)):
        t = self._tmp[part]
        if self.momentum:
            v = self.velocity[part]
            v *= self.momentum
            v += g
            if self.nesterov:
                np.multiply(v, self.momentum, out=t)
                t += g
            else:
                t[...] = v
        else:
            t[...] = g
        t *= self.lr
        p -= t


class Adam(Optimizer):
    """Adam (Kingma & Ba): per-weight step sizes from running moments of the gradient.

    ``m <- b1 m + (1 - b1) g``;  ``v <- b2 v + (1 - b2) g^2``;
    ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)``. The buffers ``self.m`` and ``self.v`` hold
    ``m / (1 - b1)`` and ``v / (1 - b2)`` (see ``update``).
    """

    BUFFERS, HYPER = ("m", "v"), ("betas", "eps")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, **kw):
        super().__init__(params, lr, **kw)
        for b in betas:
            rules.fraction(b, f"betas {tuple(betas)}: each beta")
        rules.positive(eps, "eps")
        self.betas, self.eps = tuple(betas), eps
        self.m = np.zeros_like(self.data)
        self.v = np.zeros_like(self.data)

    def update(self, p, g, part=slice(None)):
        b1, b2 = self.betas
        m, v, t = self.m[part], self.v[part], self._tmp[part]
        # m and v are kept divided by (1 - b1) and (1 - b2): the same information,
        # two fewer passes over the buffers a step (a step here is memory-bound).
        m *= b1
        m += g  # m' <- b1 m' + g       (m = (1 - b1) m')
        v *= b2
        np.multiply(g, g, out=t)
        v += t  # v' <- b2 v' + g^2     (v = (1 - b2) v')
        # With s = sqrt((1 - b2) / (1 - b2^t)), sqrt(v_hat) = s sqrt(v') and
        # lr * m_hat / (sqrt(v_hat) + eps) == (lr (1 - b1) / ((1 - b1^t) s)) * m' / (sqrt(v') + eps / s).
        s = math.sqrt((1 - b2) / (1 - b2**self.t))
        np.sqrt(v, out=t)
        t += self.eps / s
        np.divide(m, t, out=t)
        t *= self.lr * (1 - b1) / ((1 - b1**self.t) * s)
        p -= t


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), default 0.01."""

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.01, **kw):
        super().__init__(params, lr, weight_decay=weight_decay, **kw)


class RMSProp(Optimizer):
    """RMSProp (Hinton): divide the gradient by a running root mean square.

    ``s <- alpha s + (1 - alpha) g^2``;  ``p <- p - lr * g / (sqrt(s) + eps)``
    (with momentum ``mu``: ``b <- mu b + g / (sqrt(s) + eps)``, ``p <- p - lr b``).
    """

    BUFFERS, HYPER = ("square_avg", "buffer"), ("alpha", "eps", "momentum")

    def __init__(
        self, params, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0, **kw
    ):
        super().__init__(params, lr, **kw)
        rules.fraction(alpha, "alpha")
        rules.positive(eps, "eps")
        rules.fraction(momentum, "momentum")
        self.alpha, self.eps, self.momentum = alpha, eps, momentum
        self.square_avg = np.zeros_like(self.data)
        self.buffer = np.zeros_like(self.data) if momentum else None

    def update(self, p, g, part=slice(None)):
        s, t = self.square_avg[part], self._tmp[part]
        s *= self.alpha
        np.multiply(g, g, out=t)
        t *= 1 - self.alpha
        s += t  # s <- alpha s + (1 - alpha) g^2
        np.sqrt(s, out=t)
        t += self.eps
        np.divide(g, t, out=t)  # g / (sqrt(s) + eps)
        if self.momentum:
            b = self.buffer[part]
            b *= self.momentum
            b += t
            np.multiply(b, self.lr, out=t)
        else:
            t *= self.lr
        p -= t


OPTIMIZERS = {"sgd": SGD, "gd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _plain(value):
    """A hyperparameter as plain Python: bools stay bools, tuples become lists of floats."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return float(value)


def _describe(value) -> str:
    return f"a {type(value).__name__}"


def _shown(value) -> str:
    """A number as itself, anything else by its type: what an error line can hold."""
    return repr(value)[:80] if isinstance(value, (int, float, str, type(None))) else _describe(value)
