"""digitnet: a fully connected neural network from scratch in NumPy."""

__version__ = "0.1.0"
