"""Weight initialisers.

Each takes the layer's ``fan_in`` (inputs) and ``fan_out`` (outputs), a
``numpy.random.Generator`` and a dtype, and returns a weight matrix of shape
``(fan_in, fan_out)``. Biases start at zero, except with ``torch_default``,
which reproduces PyTorch's ``nn.Linear`` and draws them too.

==================  ======================================  ==================
name                distribution                            suits
==================  ======================================  ==================
``he``              N(0, 2 / fan_in)                        ReLU, LeakyReLU
``he_uniform``      U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))  ReLU
``xavier``          N(0, 2 / (fan_in + fan_out))            tanh, sigmoid
``xavier_uniform``  U(-sqrt(6 / (fan_in + fan_out)), ...)   tanh, sigmoid
``lecun``           N(0, 1 / fan_in)                        SELU-like, tanh
``normal``          N(0, std^2), std = 0.01 by default      classic tutorials
``torch_default``   U(-1/sqrt(fan_in), 1/sqrt(fan_in))       PyTorch parity
==================  ======================================  ==================
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.errors import ConfigError


def he_normal(fan_in, fan_out, rng, dtype=np.float32):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(dtype)


def he_uniform(fan_in, fan_out, rng, dtype=np.float32):
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)


def xavier_normal(fan_in, fan_out, rng, dtype=np.float32):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out)).astype(dtype)


def xavier_uniform(fan_in, fan_out, rng, dtype=np.float32):
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)


def lecun_normal(fan_in, fan_out, rng, dtype=np.float32):
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), (fan_in, fan_out)).astype(dtype)


def normal(fan_in, fan_out, rng, dtype=np.float32, std=0.01):
    return rng.normal(0.0, std, (fan_in, fan_out)).astype(dtype)


def torch_default(fan_in, fan_out, rng, dtype=np.float32):
    # kaiming_uniform_(a=sqrt(5)) works out to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)


MAX_STD = 1e6  # normal:STD at most this: the weights stay float32 numbers, their products too

INITIALISERS = {
    "he": he_normal,
    "he_uniform": he_uniform,
    "xavier": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "lecun": lecun_normal,
    "normal": normal,
    "torch_default": torch_default,
}


def parse_initialiser(name: str, std: float = 0.01) -> tuple[str, float]:
    """``"he"`` -> ``("he", std)``, ``"normal:0.05"`` -> ``("normal", 0.05)``.

    Raises :class:`ConfigError` for a name it does not know.
    """
    base, _, arg = str(name).partition(":")
    if base not in INITIALISERS:
        raise ConfigError(f"unknown initialiser '{name}'; choose one of {', '.join(INITIALISERS)}")
    if arg and base != "normal":
        raise ConfigError(f"initialiser '{name}': only 'normal' takes a value (normal:STD)")
    if arg:
        try:
            std = float(arg)
        except ValueError:
            raise ConfigError(f"initialiser '{name}': the standard deviation must be a number") from None
    if base == "normal" and not 0 < std <= MAX_STD:
        raise ConfigError(f"initialiser '{name}': the standard deviation must be > 0 and at most {MAX_STD:g}")
    return base, std


def initial_weights(name: str, fan_in: int, fan_out: int, rng, dtype=np.float32, std: float = 0.01):
    """Draw a ``(fan_in, fan_out)`` weight matrix and a ``(fan_out,)`` bias with the named scheme.

    ``name`` may be ``"normal:0.05"`` to set the standard deviation of ``normal``.
    """
    base, std = parse_initialiser(name, std)
    if base == "normal":
        weight = normal(fan_in, fan_out, rng, dtype, std=std)
    else:
        weight = INITIALISERS[base](fan_in, fan_out, rng, dtype)
    if base == "torch_default":
        bound = 1.0 / math.sqrt(fan_in)
        bias = rng.uniform(-bound, bound, fan_out).astype(dtype)
    else:
        bias = np.zeros(fan_out, dtype=dtype)
    return weight, bias
