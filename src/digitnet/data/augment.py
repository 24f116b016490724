"""Per-batch augmentation: small random shifts of the digits.

A :class:`~digitnet.data.loader.DataLoader` calls ``transform(xb, rng)`` on
every batch; :class:`RandomShift` is such a transform. Moving each digit by up
to ``max_shift`` pixels in x and y teaches the network that a digit is the same
digit a pixel to the left, which a fully connected layer cannot know by itself.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitnet.errors import ConfigError


class RandomShift:
    """Shift every image of a batch by its own random offset of at most ``max_shift`` pixels.

    Parameters
    ----------
    max_shift : int >= 1
        Largest shift in each direction; the uncovered border is filled with
        ``fill`` (the value a black pixel has after normalisation).
    side : int, default 28
        Images are rows of ``side * side`` pixels.
    fill : float, default 0.0

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns a new array of the same shape.
    """

    def __init__(self, max_shift: int = 2, side: int = 28, fill: float = 0.0):
        if max_shift < 1:
            raise ConfigError(f"the largest shift must be at least 1 pixel, got {max_shift}")
        self.max_shift, self.side, self.fill = int(max_shift), int(side), fill

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, s, m = len(xb), self.side, self.max_shift
        padded = np.pad(xb.reshape(b, s, s), ((0, 0), (m, m), (m, m)), constant_values=self.fill)
        windows = sliding_window_view(padded, (s, s), axis=(1, 2))          # (B, 2m+1, 2m+1, s, s), no copy
        dy, dx = rng.integers(0, 2 * m + 1, size=(2, b))
        return windows[np.arange(b), dy, dx].reshape(b, s * s)

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"
