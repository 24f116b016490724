"""The network library, NumPy only. Read ``module.py`` first, then ``layers.py``.

Data flows ``Sequential.forward`` -> :class:`SoftmaxCrossEntropy` ->
``backward`` -> an optimiser's ``step``; ``Sequential.predict`` is the same
pass at inference, keeping nothing for ``backward``.
"""

from digitnet.nn.layers import (
    ACTIVATIONS,
    Dropout,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
    linear_layers,
    mlp,
)
from digitnet.nn.loss import SoftmaxCrossEntropy, l2_penalty, log_softmax, softmax
from digitnet.nn.module import Module, Parameter, Sequential, flatten_parameters
from digitnet.nn.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSProp
from digitnet.nn.schedule import SCHEDULES, Constant, Cosine, OneCycle, Step, make_schedule

__all__ = [
    "ACTIVATIONS",
    "Dropout",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "linear_layers",
    "mlp",
    "SoftmaxCrossEntropy",
    "l2_penalty",
    "log_softmax",
    "softmax",
    "Module",
    "Parameter",
    "Sequential",
    "flatten_parameters",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSProp",
    "SCHEDULES",
    "Constant",
    "Cosine",
    "OneCycle",
    "Step",
    "make_schedule",
]
