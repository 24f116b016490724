"""digitnet: a fully connected neural network from scratch in NumPy."""

from digitnet.threads import rest_idle_blas_threads

__version__ = "0.1.0"

rest_idle_blas_threads()  # before anything imports NumPy (digitnet.threads says why)
