"""Splitting element-wise work across the cores, and keeping OpenBLAS's idle threads off them.

Some steps of training touch every element of a big array once or a few times and do nothing else:
the optimiser's update of all the weights, the resampling of an augmented batch. One core does them
while the others wait, because NumPy runs its loops on one thread. But NumPy lets go of the
interpreter lock inside each loop, so threads that each take a slice of the arrays run those loops
at the same time. :func:`in_parts` cuts the work in contiguous slices, one per core, and runs them at
once; every element is computed by the same operations as in one piece, so the result is the same
bit for bit however many parts there are.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_THREADS = 4  # beyond this, the memory, not the cores, sets the pace of such loops

BLAS_THREAD_TIMEOUT = "16"  # OpenBLAS's idle threads wait 2^16 cycles (25 µs at 2.6 GHz) before they sleep

_pool = None
_lock = threading.Lock()
_share = threading.local()  # .threads: the most a thread's share of the machine allows (unset: all its cores)


def cores() -> int:
    """The cores this process may run on (at most :data:`MAX_THREADS`, and at most this thread's :func:`share`)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, n, getattr(_share, "threads", None) or n))


def share(threads: int | None) -> int | None:
    """Split the work this thread hands out in at most ``threads`` parts from now on (None: one per core).

    Returns the previous share. For work that shares the machine with other work, as a tuning trial
    does: it takes the same share of the cores for this work as it does of the BLAS threads. Each
    thread has its own, so trials running side by side in one process's threads (as on a Dask
    worker) each set and put back their own.
    """
    previous, _share.threads = getattr(_share, "threads", None), threads
    return previous


def parts(n: int, smallest: int) -> list[tuple[int, int]]:
    """(start, stop) of the slices ``range(n)`` is cut in: one per core, none under ``smallest``."""
    k = max(1, min(cores(), n // max(1, smallest)))
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def in_parts(work, n: int, smallest: int) -> None:
    """Call ``work(i, start, stop)`` for each slice of :func:`parts` at once, this thread taking the first.

    ``work`` must touch only its own slice of the arrays it writes. Small work (``n`` under twice
    ``smallest``) runs here in one piece, with no thread woken. Every part runs under the caller's
    floating-point error settings (``np.errstate`` holds only for the thread that sets it).
    """
    cut = parts(n, smallest)
    if len(cut) == 1:
        work(0, 0, n)
        return
    import numpy as np  # here, not at the top: this module runs before NumPy is loaded (see below)

    errors = np.geterr()

    def with_errors(i, lo, hi):
        with np.errstate(**errors):
            work(i, lo, hi)

    pending = [_executor().submit(with_errors, i, lo, hi) for i, (lo, hi) in enumerate(cut) if i]
    try:
        work(0, *cut[0])
    finally:
        for future in pending:
            future.result()


def rest_idle_blas_threads() -> None:
    """Let OpenBLAS's threads sleep soon after a matrix product, not spin on their core for 0.1 s.

    OpenBLAS keeps its threads spinning for 2^28 cycles after each product, waiting for the next
    one; training does element-wise work between products (activations, the optimiser, the
    augmentation), and a spinning thread then holds the very core :func:`in_parts` would use
    (measured on a 2-core Xeon: the default preset's epoch 3.8 s with them spinning, 3.3 s with
    them at rest). OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy is first imported, so
    this must run before that; a value the environment already holds is kept. ``import digitnet``
    calls it, so the command line and any program that imports digitnet before NumPy get it.
    """
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", BLAS_THREAD_TIMEOUT)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS - 1, thread_name_prefix="digitnet")
        return _pool


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: it starts a pool of its own when it needs one.

    Without this it would hand its slices to the pool it inherited, whose threads do not exist in
    the child, and wait for them forever.
    """
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
