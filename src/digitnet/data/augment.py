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

How it is fast. A warp reads each output pixel from some point of the input:
every transform here is a map of those points (``move``, with random numbers
it draws for the whole batch first: ``draw_moves``), and :class:`Compose`
chains the maps and reads the image once (:func:`_warp`), so shift, affine and
elastic together cost one bilinear pass, not three (and blur the digit once,
not three times). The sampler works in float32, a chunk of the batch at a time
on each core, in buffers kept between batches (:class:`_Scratch`): at these
sizes, fresh memory and its page faults cost more than the arithmetic. The
elastic field is drawn on the few smooth patterns a Gaussian of sigma lets
through (:class:`ElasticDistortion`), not pixel by pixel.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from digitnet.errors import ConfigError
from digitnet.threads import in_parts


class _Scratch:
    """Named arrays kept between calls: ``scratch(name, shape, dtype)`` returns the same one while the
    shape and dtype stay the same. Reusing them spares the allocator and the page faults of new memory.

    ``rows`` is the most images a chunk of a batch has (:func:`_warp` sets it): the buffers of a
    chunk are made that tall and sliced, so a batch's short last chunk reuses them too.
    """

    def __init__(self):
        self.arrays, self.parts, self.filled, self.rows = {}, {}, None, 0

    def __call__(self, name, shape: tuple, dtype=np.float32) -> np.ndarray:
        return self.get(name, shape, dtype)[0]

    def get(self, name, shape: tuple, dtype=np.float32) -> tuple[np.ndarray, bool]:
        """The array, and whether it is new."""
        a = self.arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self.arrays[name] = np.empty(shape, dtype)
            return a, True
        return a, False

    def part(self, i: int) -> _Scratch:
        """The buffers of the ``i``-th part of a batch, each thread's own."""
        if i not in self.parts:
            self.parts[i] = _Scratch()
        return self.parts[i]


def _grid(side: int) -> np.ndarray:
    """(2, side*side) float32 row and column of every pixel, relative to the image centre."""
    c = (side - 1) / 2
    return (np.mgrid[0:side, 0:side].reshape(2, -1) - c).astype(np.float32)


MIN_ELASTIC_SIGMA = 0.01  # pixels; a field smoothed by less is noise from pixel to pixel
PART_ROWS = 64  # the fewest images a thread samples: below this, waking it costs more than it saves
CHUNK_ROWS = 128  # the most images a thread resamples at once: bounds its buffers (about 4 MB)


def _warp(xb: np.ndarray, moves: list, side: int, fill: float, scratch: _Scratch) -> np.ndarray:
    """Resample each image of ``xb`` (B, side*side) bilinearly at the points its ``moves`` take it to.

    ``moves`` is a list of ``(transform, drawn)``: each transform's random numbers for the whole
    batch (its ``draw_moves``), in the order their point maps apply, each moving the points the
    last one left (its ``move``). Returns a new array of ``xb``'s shape and dtype.

    Threads take the batch in parts (:func:`digitnet.threads.in_parts`), and each part goes in
    chunks of at most :data:`CHUNK_ROWS` images the whole way, from its grid of points to its
    pixels, in buffers kept between batches. Every image is computed by the same operations
    whatever part and chunk it falls in, and its random numbers were drawn for the whole batch
    first, so the result is the same bit for bit however the batch is cut.
    """
    b, p = len(xb), side + 3
    rows = max(1, min(CHUNK_ROWS, (1 << 24) // (p * p)))  # flat indices exact in float32 (see _sample_into)
    out = np.empty(xb.shape, xb.dtype)
    grid = _grid(side)[:, None]

    def part(i, lo, hi):
        buffers = scratch.part(i)
        buffers.rows = rows
        for start in range(lo, hi, rows):
            chunk = slice(start, min(start + rows, hi))
            pts = buffers("points", (2, rows, side * side))[:, : chunk.stop - start]
            pts[...] = grid
            for transform, drawn in moves:
                pts = transform.move(pts, drawn, chunk, buffers)
            _sample_into(xb[chunk], pts, side, fill, buffers, rows, out[chunk])

    in_parts(part, b, PART_ROWS)
    return out


def _sample_into(xb, pts, side, fill, scratch, rows, out):
    """Bilinear samples of each image of ``xb`` (b, side*side), b <= ``rows``, at its own points
    ``pts`` (2, b, side*side), centred (row, col), into ``out``; ``pts`` is used up.

    A point outside an image reads ``fill``, one within a pixel of the border blends with it (as
    ``map_coordinates``'s ``"grid-constant"`` mode does), and integer points read their pixel
    exactly. The images are padded with ``fill`` (one pixel before, two after) and read with four
    gathers from the padded buffer.
    """
    b, p, n = len(xb), side + 3, side * side
    padded, new = scratch.get("padded", (rows, p, p), xb.dtype)
    if new or scratch.filled != fill:  # the border is never written but here: fill it once
        padded[:, [0, -2, -1]] = fill
        padded[:, :, [0, -2, -1]] = fill
        scratch.filled = fill
    padded = padded[:b]
    padded[:, 1:-2, 1:-2] = xb.reshape(b, side, side)
    pts += np.float32((side - 1) / 2 + 1)  # in padded pixels from here on
    np.clip(pts, 0, side + 1, out=pts)  # rows and columns 0 and side + 1 are fill, and so is side + 2
    whole = np.floor(pts, out=scratch("whole", (2, rows, n))[:, :b])  # the pixel before each point
    pts -= whole  # the fraction of the way to the next pixel
    (r, q), (r0, q0) = pts, whole
    if p * p > 1 << 24:  # one image's indices pass 2^24, beyond float32's whole numbers: float64
        r0 = r0.astype(np.float64)
    r0 *= p
    r0 += q0
    # Each image's first pixel in the flat buffer, added in float32: every index is a whole number
    # below rows * p * p <= 2^24 (see _warp), which float32 holds exactly (unless an image alone
    # has more pixels than that, above: then rows is 1 and the sum is in float64).
    starts, new = scratch.get("starts", (rows, 1))
    if new:
        starts[:, 0] = np.arange(rows) * (p * p)
    r0 += starts[:b]
    at = scratch("at", (rows, n), np.intp)[:b]
    np.copyto(at, r0, casting="unsafe")  # flat index of each top-left neighbour
    flat = padded.reshape(-1)
    right, below, top = (scratch(name, (rows, n), xb.dtype)[:b] for name in ("right", "below", "top"))
    # The neighbours at the right, below and below right are the same indices into the buffer
    # read from 1, p and p + 1 elements on. Every index is inside each (the points were clipped),
    # so mode "wrap" never wraps: it is the same gather, and NumPy's fastest (40% less time than
    # the default "raise", measured).
    np.take(flat, at, out=out, mode="wrap")
    np.take(flat[1:], at, out=right, mode="wrap")
    right -= out
    right *= q
    out += right  # the top row: v00 + (v01 - v00) fq
    np.take(flat[p + 1 :], at, out=below, mode="wrap")
    np.take(flat[p:], at, out=top, mode="wrap")
    below -= top
    below *= q
    below += top  # the bottom row: v10 + (v11 - v10) fq
    below -= out
    below *= r
    out += below  # top + (bottom - top) fr


MAX_TEST_TIME_SHIFT = 3  # test-time views are (2 m + 1)^2 copies of every image: 49 at most


def shifted_views(x: np.ndarray, shift: int, side: int, fill: float = 0.0):
    """Every copy of the images ``x`` (N, side*side) moved by whole pixels, at most ``shift`` each way.

    Yields the (2 shift + 1)² views as new (N, side*side) arrays, the unmoved one first, then
    row by row; pixels moved in from outside are ``fill``. What test-time shifts average over
    (:meth:`digitnet.modelfile.Classifier.logits`).
    """
    m, n = int(shift), len(x)
    padded = np.pad(x.reshape(n, side, side), ((0, 0), (m, m), (m, m)), constant_values=fill)
    yield np.ascontiguousarray(x.reshape(n, side * side))
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            if dy or dx:
                view = padded[:, m + dy : m + dy + side, m + dx : m + dx + side]
                yield np.ascontiguousarray(view).reshape(n, side * side)


class _Warp:
    """What the transforms that map sample points share: their image side, fill and buffers, and a
    ``__call__`` that warps the batch by their point map.

    A warp is two methods: ``draw_moves(b, rng)`` draws its random numbers for a batch of ``b``
    images, all at once and in one order (so a batch is the same however it is later cut), and
    ``move(pts, drawn, images, scratch)`` maps the centred sample points (2, n, side*side) of the
    batch's ``images`` (a slice of n of them) by them, returning the moved points (in place, or in a buffer of
    ``scratch``, the calling thread's own).
    """

    def __init__(self, side: int, fill: float):
        self.side, self.fill = int(side), fill
        self._scratch = _Scratch()

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _warp(xb, [(self, self.draw_moves(len(xb), rng))], self.side, self.fill, self._scratch)


class RandomShift(_Warp):
    """Shift every image of a batch by its own random offset of at most ``max_shift`` pixels.

    Parameters
    ----------
    max_shift : int >= 1
        Largest shift in each direction; the uncovered border is filled with
        ``fill`` (the value a black pixel has after normalisation).
    side : int, default 28
        Images are rows of ``side * side`` pixels.
    fill : float, default 0.0

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns a new array of the
    same shape: whole pixels moved, none interpolated.
    """

    def __init__(self, max_shift: int = 2, side: int = 28, fill: float = 0.0):
        if max_shift < 1:
            raise ConfigError(f"the largest shift must be at least 1 pixel, got {max_shift}")
        super().__init__(side, fill)
        self.max_shift = int(max_shift)

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b, s, m = len(xb), self.side, self.max_shift
        padded = np.pad(xb.reshape(b, s, s), ((0, 0), (m, m), (m, m)), constant_values=self.fill)
        windows = sliding_window_view(padded, (s, s), axis=(1, 2))  # (B, 2m+1, 2m+1, s, s), no copy
        dy, dx = rng.integers(0, 2 * m + 1, size=(2, b))
        return windows[np.arange(b), dy, dx].reshape(b, s * s)

    def draw_moves(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """(2, B, 1) float32: each image's move in rows and columns, whole pixels."""
        return rng.integers(-self.max_shift, self.max_shift + 1, size=(2, b, 1)).astype(np.float32)

    def move(self, pts, drawn, images, scratch):
        """Move the sample points by whole pixels: the shift as a point map, in place."""
        pts -= drawn[:, images]
        return pts

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomFlip(_Warp):
    """Mirror each image left to right with probability 1/2 (for clothes; a mirrored digit is another sign).

    Parameters
    ----------
    side : int, default 28
    fill : float, default 0.0

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns a new array of the
    same shape: whole pixels moved, none interpolated.
    """

    def __init__(self, side: int = 28, fill: float = 0.0):
        super().__init__(side, fill)

    def draw_moves(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """(B,) bool: which images are mirrored."""
        return rng.random(b) < 0.5

    def move(self, pts, drawn, images, scratch):
        """Mirror the columns of the sample points of the images drawn to be mirrored, in place."""
        pts[1, drawn[images]] *= -1
        return pts

    def __repr__(self):
        return "RandomFlip()"


class RandomAffine(_Warp):
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
    same shape and dtype, bilinearly interpolated (:func:`_warp`); all parameters 0 is the identity.
    """

    def __init__(self, rotate=0.0, scale=0.0, shear=0.0, translate=0.0, side: int = 28, fill: float = 0.0):
        super().__init__(side, fill)
        self.rotate, self.scale, self.shear, self.translate = map(float, (rotate, scale, shear, translate))

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

    def inverse(self, angle, zoom, shear, dy, dx) -> tuple[np.ndarray, np.ndarray]:
        """The map from output to input points: matrices (B, 2, 2) and offsets (B, 2, 1), float32.

        The forward map, in (row, col) with rows pointing down, is
        ``rotate(shear(zoom(p))) + (dy, dx)``, counter-clockwise on screen; a
        point ``p`` of the output reads the input at ``inverse @ p + offset``.
        """
        a, sh = np.radians(angle), np.tan(np.radians(shear))
        cos, sin, one = np.cos(a), np.sin(a), np.ones_like(a)
        rot = np.array([[cos, -sin], [sin, cos]]).transpose(2, 0, 1)
        shr = np.array([[one, 0 * one], [sh, one]]).transpose(2, 0, 1)
        inverse = np.linalg.inv(rot @ shr * np.asarray(zoom, np.float64)[:, None, None])
        offset = -inverse @ np.stack([dy, dx], axis=1)[:, :, None]
        return inverse.astype(np.float32), offset.astype(np.float32)

    def draw_moves(self, b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Each image's inverse map, as :meth:`inverse` returns it, of parameters from :meth:`draw`."""
        return self.inverse(*self.draw(b, rng))

    def move(self, pts, drawn, images, scratch):
        """Map the sample points through each image's inverse map, into a buffer of ``scratch``."""
        inverse, offset = drawn[0][images], drawn[1][images]
        out = scratch(("mapped", id(self)), (2, scratch.rows, pts.shape[2]))[:, : pts.shape[1]]
        np.matmul(inverse, pts.transpose(1, 0, 2), out=out.transpose(1, 0, 2))
        out += offset.transpose(1, 0, 2)
        return out

    def apply(self, xb, angle, zoom, shear, dy, dx) -> np.ndarray:
        """Warp ``xb`` (B, side*side) by the given per-image parameters, each of shape (B,)."""
        drawn = self.inverse(angle, zoom, shear, dy, dx)
        return _warp(xb, [(self, drawn)], self.side, self.fill, self._scratch)

    def __repr__(self):
        return (
            f"RandomAffine(rotate={self.rotate:g}, scale={self.scale:g}, shear={self.shear:g}, "
            f"translate={self.translate:g})"
        )


class ElasticDistortion(_Warp):
    """Bend every image by its own smooth random displacement field (Simard et al., 2003).

    Simard's field is uniform noise in ``[-1, 1]`` at every pixel, smoothed by a
    Gaussian of ``sigma`` pixels (zero beyond the border) and multiplied by
    ``alpha``; the image is resampled bilinearly at the displaced points
    (:func:`_warp`). Simard's MNIST values: ``sigma=4``, ``alpha=34``.

    The smoothing is ``G @ noise @ G.T`` with ``G`` (side, side) the 1-D filter
    of :func:`scipy.ndimage.gaussian_filter1d` as a matrix. With ``G = U S Vᵀ``
    and ``noise`` of independent entries, ``Vᵀ noise V`` has independent-looking
    entries of the same variance (1/3), and a Gaussian lets few patterns
    through: the ``k`` largest singular values hold 99.9% of ``sum S²`` (``k = 6``
    for sigma 4 on 28 pixels). So the field is drawn as ``alpha L M Lᵀ``,
    ``L = U_k S_k`` (side, k), ``M`` uniform in ``[-1, 1]`` of shape (k, k):
    the covariance of Simard's field but for the 0.2% the dropped patterns hold,
    from 36 random numbers per image and axis instead of 784.

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

    KEPT = 0.999  # share of sum S² the kept patterns hold

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, side: int = 28, fill: float = 0.0):
        if not sigma >= MIN_ELASTIC_SIGMA:  # a Gaussian's sigma², below this, can round to 0
            raise ConfigError(f"the elastic sigma must be at least {MIN_ELASTIC_SIGMA} pixels, got {sigma}")
        super().__init__(side, fill)
        self.alpha, self.sigma = float(alpha), float(sigma)
        self.kernel = ndimage.gaussian_filter1d(np.eye(self.side), self.sigma, axis=0, mode="constant")
        u, s, _ = np.linalg.svd(self.kernel)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), self.KEPT)) + 1
        self.basis = (u[:, :k] * s[:k] * np.sqrt(self.alpha)).astype(np.float32)  # L sqrt(alpha), (side, k)

    def field(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """(2, B, side*side) float32 displacements in rows and columns, in pixels."""
        s = self.side
        return np.matmul(self.basis, self._half(b, rng)).reshape(2, b, s * s)  # L M Lᵀ

    def _half(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """(2, B, k, side) float32: each image's ``M Lᵀ`` for its rows and columns, the half of its field
        that holds all its random numbers."""
        s, k = self.basis.shape
        m = rng.random((b * 2, k, k), dtype=np.float32)
        m *= 2
        m -= 1
        return np.matmul(m.reshape(-1, k), self.basis.T).reshape(2, b, k, s)  # M Lᵀ

    def draw_moves(self, b: int, rng: np.random.Generator) -> np.ndarray | None:
        """Each image's ``M Lᵀ`` (:meth:`_half`), or None when alpha is 0 (nothing is drawn)."""
        return self._half(b, rng) if self.alpha else None

    def move(self, pts, drawn, images, scratch):
        """Displace the sample points by each image's field, in place."""
        if drawn is not None:
            s, b = self.side, pts.shape[1]
            field = scratch("field", (2, scratch.rows, s, s))[:, :b]
            pts += np.matmul(self.basis, drawn[:, images], out=field).reshape(2, b, s * s)  # L M Lᵀ
        return pts

    def __repr__(self):
        return f"ElasticDistortion(alpha={self.alpha:g}, sigma={self.sigma:g})"


class Compose:
    """Apply transforms one after the other, each with the same generator: ``Compose(shift, affine)``.

    When every transform is a warp of this module (of the same image side and
    fill), their point maps are chained and the batch is sampled once: the
    result of warping by each in turn, interpolated once.

    ``__call__(xb, rng)`` takes ``(B, side*side)`` and returns the same shape.
    """

    def __init__(self, *transforms):
        self.transforms = list(transforms)
        warps = all(isinstance(t, _Warp) for t in self.transforms)
        self.fused = warps and len({(t.side, t.fill) for t in self.transforms}) == 1

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.fused:
            for t in self.transforms:
                xb = t(xb, rng)
            return xb
        first = self.transforms[0]
        # The last transform moves the output's pixels first: out(p) = x(m_1(m_2(...m_n(p))))
        moves = [(t, t.draw_moves(len(xb), rng)) for t in reversed(self.transforms)]
        return _warp(xb, moves, first.side, first.fill, first._scratch)

    def __repr__(self):
        return f"Compose({', '.join(map(repr, self.transforms))})"
