"""Per-batch augmentation: random shifts, affine maps and elastic distortions of the digits.

A :class:`~digitnet.data.loader.DataLoader` calls ``transform(xb, rng)`` on
every batch, with its own generator, so a run is reproducible and resumable bit
for bit. Each transform here takes ``(B, side*side)`` rows and returns a new
array of the same shape and dtype, works on the whole batch at once (no loop
over images) and fills the pixels it uncovers with ``fill``, the value a black
pixel has after normalisation. :class:`Compose` chains them.

Moving, turning, stretching and bending each digit a little teaches the network
that a digit is the same digit written a little differently, which a fully
connected layer cannot know by itself.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

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
        windows = sliding_window_view(padded, (s, s), axis=(1, 2))  # (B, 2m+1, 2m+1, s, s), no copy
        dy, dx = rng.integers(0, 2 * m + 1, size=(2, b))
        return windows[np.arange(b), dy, dx].reshape(b, s * s)

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


def _grid(side: int) -> np.ndarray:
    """(2, side*side) row and column of every pixel, relative to the image centre."""
    c = (side - 1) / 2
    rows, cols = np.mgrid[0:side, 0:side].reshape(2, -1).astype(np.float64)
    return np.stack([rows - c, cols - c])


def _sample(xb: np.ndarray, src: np.ndarray, side: int, fill: float) -> np.ndarray:
    """Bilinear samples of each image at its own points: ``src`` (B, 2, side*side), centred (row, col).

    The batch is padded with one pixel of ``fill`` and read with four gathers
    from its flat buffer: a point outside an image reads ``fill``, one within a
    pixel of the border blends with it (as ``map_coordinates``'s
    ``"grid-constant"`` mode does), and integer points read their pixel exactly.
    """
    b, p, c = len(xb), side + 2, (side - 1) / 2 + 1
    padded = np.pad(xb.reshape(b, side, side), ((0, 0), (1, 1), (1, 1)), constant_values=fill).reshape(-1)
    r = np.clip(src[:, 0] + c, 0, p - 1)  # in padded pixels; the
    q = np.clip(src[:, 1] + c, 0, p - 1)  # border reads fill
    r0, q0 = np.minimum(r.astype(np.intp), p - 2), np.minimum(q.astype(np.intp), p - 2)
    fr, fq = (r - r0).astype(xb.dtype), (q - q0).astype(xb.dtype)
    at = r0 * p + q0 + (np.arange(b) * p * p)[:, None]
    v00, v01, v10, v11 = (padded.take(at + d) for d in (0, 1, p, p + 1))
    top = v00 + (v01 - v00) * fq
    return top + (v10 + (v11 - v10) * fq - top) * fr


class RandomAffine:
    """Turn, scale, shear and move every image by its own random affine map about its centre.

    Parameters
    ----------
    rotate : float, default 0
        Largest rotation in degrees, drawn uniformly from ``[-rotate, rotate]``;
        positive turns counter-clockwise as :func:`scipy.ndimage.rotate` does.
    scale : float, default 0
        The zoom is drawn from ``[1 - scale, 1 + scale]``.
    shear : float, default 0
        Largest horizontal shear angle in degrees, from ``[-shear, shear]``.
    translate : float, default 0
        Largest move in pixels along each axis, from ``[-translate, translate]``.
    side : int, default 28
        Images are rows of ``side * side`` pixels.
    fill : float, default 0.0
        The value of uncovered pixels.

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns a new array of the
    same shape and dtype, bilinearly interpolated (:func:`_sample`); all parameters 0 is the identity.
    """

    def __init__(self, rotate=0.0, scale=0.0, shear=0.0, translate=0.0, side: int = 28, fill: float = 0.0):
        self.rotate, self.scale, self.shear, self.translate = map(float, (rotate, scale, shear, translate))
        self.side, self.fill = int(side), fill

    def draw(self, b: int, rng: np.random.Generator):
        """Each image's (angle°, zoom, shear°, dy, dx), five arrays of shape (B,)."""
        u = rng.uniform(-1.0, 1.0, size=(5, b))
        return (
            u[0] * self.rotate,
            1 + u[1] * self.scale,
            u[2] * self.shear,
            u[3] * self.translate,
            u[4] * self.translate,
        )

    def apply(self, xb, angle, zoom, shear, dy, dx) -> np.ndarray:
        """Warp ``xb`` (B, side*side) by the given per-image parameters, each of shape (B,)."""
        a, sh = np.radians(angle), np.tan(np.radians(shear))
        cos, sin, one = np.cos(a), np.sin(a), np.ones_like(a)
        # forward map in (row, col), rows pointing down: rotate(shear(zoom(p))); counter-clockwise on screen
        rot = np.array([[cos, -sin], [sin, cos]]).transpose(2, 0, 1)
        shr = np.array([[one, 0 * one], [sh, one]]).transpose(2, 0, 1)
        forward = rot @ shr * np.asarray(zoom, np.float64)[:, None, None]
        src = np.linalg.inv(forward) @ (_grid(self.side)[None] - np.stack([dy, dx], axis=1)[:, :, None])
        return _sample(xb, src, self.side, self.fill)

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(xb, *self.draw(len(xb), rng))

    def __repr__(self):
        return (
            f"RandomAffine(rotate={self.rotate:g}, scale={self.scale:g}, shear={self.shear:g}, "
            f"translate={self.translate:g})"
        )


class ElasticDistortion:
    """Bend every image by its own smooth random displacement field (Simard et al., 2003).

    Each pixel's displacement in rows and columns is uniform noise in
    ``[-1, 1]`` smoothed by a Gaussian of ``sigma`` pixels (zero beyond the
    border) and multiplied by ``alpha``; the image is resampled bilinearly at the
    displaced points (:func:`_sample`). Simard's MNIST values: ``sigma=4``, ``alpha=34``.

    The Gaussian is separable, so the smoothing is two small matrix products,
    ``G @ noise @ G.T`` with ``G`` (side, side) the 1-D filter of
    :func:`scipy.ndimage.gaussian_filter1d` (mode ``"constant"``) as a matrix:
    the same field as ``gaussian_filter`` at a fraction of its cost.

    Parameters
    ----------
    alpha : float >= 0
        Strength of the displacement in pixels; 0 is the identity.
    sigma : float > 0, default 4
        Smoothness of the field in pixels.
    side : int, default 28
    fill : float, default 0.0

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns a new array of the same shape and dtype.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, side: int = 28, fill: float = 0.0):
        if not sigma > 0:
            raise ConfigError(f"the elastic sigma must be greater than 0 pixels, got {sigma}")
        self.alpha, self.sigma, self.side, self.fill = float(alpha), float(sigma), int(side), fill
        self.kernel = ndimage.gaussian_filter1d(np.eye(self.side), self.sigma, axis=0, mode="constant")

    def field(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """(B, 2, side*side) displacements in rows and columns, in pixels."""
        s, g = self.side, self.kernel * np.sqrt(self.alpha)
        noise = rng.uniform(-1.0, 1.0, size=(b * 2 * s, s))
        smooth = (noise @ g.T).reshape(b * 2, s, s).transpose(0, 2, 1).reshape(-1, s) @ g.T
        return smooth.reshape(b * 2, s, s).transpose(0, 2, 1).reshape(b, 2, s * s)

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _sample(xb, _grid(self.side)[None] + self.field(len(xb), rng), self.side, self.fill)

    def __repr__(self):
        return f"ElasticDistortion(alpha={self.alpha:g}, sigma={self.sigma:g})"


class Compose:
    """Apply transforms one after the other, each with the same generator: ``Compose(shift, affine)``.

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns the same shape.
    """

    def __init__(self, *transforms):
        self.transforms = list(transforms)

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            xb = t(xb, rng)
        return xb

    def __repr__(self):
        return f"Compose({', '.join(map(repr, self.transforms))})"
