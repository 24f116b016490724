"""From uint8 images to float32 batches: normalisation and the DataLoader.

Convert a whole split once with a :class:`Normalizer`, then let a
:class:`DataLoader` hand out shuffled batches of it::

    norm = Normalizer("scale").fit(ds.x_train)
    loader = DataLoader(norm(ds.x_train), ds.y_train, batch_size=64, rng=seed)
    for xb, yb in loader:        # xb: (64, 784) float32, yb: (64,) labels
        ...

Each batch is gathered with one ``np.take`` of its shuffled row indices: on
MNIST (938 batches of 64) that costs about 25 ms an epoch, half the time of
copying a permuted array once per epoch and slicing it (measured), and it
keeps every batch a fresh array a transform may change in place.

``loader.state_dict()`` records where the loader is (its generator, the
epoch's order, the batches already handed out); ``load_state_dict`` on a new
loader over the same data makes it hand out exactly the batches the first
one would have handed out next, so an interrupted run resumes bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from digitnet.errors import ConfigError


class Normalizer:
    """Map pixel values 0-255 to network inputs.

    ``kind="scale"`` divides by 255, giving [0, 1]. ``kind="standardize"``
    then subtracts the mean and divides by the standard deviation, both single
    numbers fitted on the training images (MNIST: 0.1307 and 0.3081).

    Parameters
    ----------
    kind : {"scale", "standardize"}, default "scale"
    mean, std : float, optional
        Known statistics (in [0, 1] units) for ``"standardize"``; else :meth:`fit` them.
    """

    KINDS = ("scale", "standardize")

    def __init__(self, kind: str = "scale", mean: float | None = None, std: float | None = None):
        if kind not in self.KINDS:
            raise ConfigError(f"unknown normalisation {kind!r}; choose one of: {', '.join(self.KINDS)}")
        if std is not None and not std > 0:
            raise ConfigError(f"the standard deviation must be above 0, not {std}")
        self.kind = kind
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)

    def fit(self, x) -> Normalizer:
        """Fit the mean and standard deviation on training images ``x`` (any shape, values 0-255)."""
        if self.kind == "standardize":
            x = np.asarray(x).reshape(-1)
            if x.size == 0:
                raise ConfigError("cannot fit a normaliser on no images")
            # Sums of whole numbers in float64 are exact; chunks keep the memory small.
            total = squares = 0.0
            for i in range(0, x.size, 1 << 22):
                chunk = x[i : i + (1 << 22)].astype(np.float64)
                total += chunk.sum()
                squares += chunk @ chunk
            mean = float(total) / x.size
            self.mean = mean / 255
            self.std = max(math.sqrt(max(float(squares) / x.size - mean * mean, 0.0)) / 255, 1e-6)
        return self

    def __call__(self, x, dtype=np.float32) -> np.ndarray:
        """Return ``x`` (pixel values 0-255, any shape) normalised, as a new ``dtype`` array."""
        out = np.asarray(x).astype(dtype)
        if self.kind == "scale":
            out /= 255
            return out
        if self.mean is None:
            raise ConfigError("Normalizer('standardize') must be fit on the training images first")
        # (x / 255 - mean) / std as one multiply and one subtraction, in the output's precision.
        number = out.dtype.type
        out *= number(1 / (255 * self.std))
        out -= number(self.mean / self.std)
        return out

    def black(self, dtype=np.float32) -> float:
        """The value a black pixel (0) has after normalisation: what image transforms fill borders with."""
        return float(self(np.zeros(1), dtype)[0])

    def to_dict(self) -> dict:
        """Return the settings as a small JSON-friendly dict (for the model file)."""
        if self.kind == "scale":
            return {"kind": "scale"}
        return {"kind": self.kind, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Rebuild a Normalizer from :meth:`to_dict`'s output."""
        try:
            kind = d["kind"]
            if kind == "standardize":
                return cls(kind, float(d["mean"]), float(d["std"]))
            return cls(kind)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad normalisation settings {d!r} ({exc})") from None

    def __repr__(self) -> str:
        if self.kind == "standardize" and self.mean is not None:
            return f"Normalizer('standardize', mean={self.mean:.4f}, std={self.std:.4f})"
        return f"Normalizer({self.kind!r})"


class DataLoader:
    """Iterate over ``(xb, yb)`` batches, reshuffled every epoch.

    Parameters
    ----------
    x : ndarray, shape (n, ...)
        Inputs, already converted (e.g. float32 from a :class:`Normalizer`).
    y : ndarray, shape (n,), or None
        Labels; ``yb`` is None when ``y`` is None.
    batch_size : int
    shuffle : bool, default True
        Draw a new order from ``rng`` at the start of every epoch.
    drop_last : bool, default False
        Leave out the last batch when it is smaller than ``batch_size``.
    rng : numpy.random.Generator or int, optional
        The source of the shuffles (an int seeds a new Generator; None draws
        fresh entropy). The same seed gives the same orders.
    transform : callable, optional
        ``transform(xb, rng) -> xb``, applied to each batch (e.g. augmentation).

    ``len(loader)`` is the number of batches in an epoch. Each ``iter(loader)``
    starts a new epoch, except the first one after :meth:`load_state_dict`,
    which finishes the epoch the state was taken in.
    """

    def __init__(
        self, x, y, batch_size: int, shuffle: bool = True, drop_last: bool = False, rng=None, transform=None
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"the batch size must be a whole number of at least 1, not {batch_size!r}")
        if y is not None and len(x) != len(y):
            raise ConfigError(f"{len(x)} inputs but {len(y)} labels")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.transform = transform
        self._order = None  # the current epoch's permutation (None: not shuffled, or between epochs)
        self._position = 0  # batches of the current epoch handed out
        self._resume = False  # the next __iter__ continues a loaded epoch

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n, bs = len(self.x), self.batch_size
        if self._resume:
            self._resume = False
            order = self._order
        else:
            order = self.rng.permutation(n) if self.shuffle else None
            self._order, self._position = order, 0
        for start in range(self._position * bs, len(self) * bs, bs):
            if order is None:
                xb = self.x[start : start + bs]
                yb = None if self.y is None else self.y[start : start + bs]
            else:
                idx = order[start : start + bs]
                xb = np.take(self.x, idx, axis=0)
                yb = None if self.y is None else np.take(self.y, idx, axis=0)
            if self.transform is not None:
                xb = self.transform(xb if order is not None else xb.copy(), self.rng)
            self._position += 1
            yield xb, yb
        self._order, self._position = None, 0

    def state_dict(self) -> dict:
        """Where the loader is, for :meth:`load_state_dict`.

        Returns
        -------
        dict
            ``rng``: the generator's ``bit_generator.state`` (a plain dict;
            JSON holds it for the default PCG64); ``order``: the current epoch's
            permutation, an int64 array ``(n,)``, or None (no shuffling, or no
            epoch under way); ``position``: batches of the current epoch handed
            out (a batch counts from the moment it is yielded); ``n`` and
            ``batch_size``.
        """
        return {
            "rng": self.rng.bit_generator.state,
            "order": None if self._order is None else self._order.astype(np.int64),
            "position": self._position,
            "n": len(self.x),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output, taken on a loader over the same data.

        The generator takes the saved state (in place: whoever shares it sees
        it too), and the next ``iter(loader)`` hands out the rest of the saved
        epoch: the same batches, transformed the same way. The epochs after it
        are the ones the saved loader would have given. A state taken after
        the last batch of an epoch had been handed out continues with the next
        epoch. Raises :class:`~digitnet.errors.ConfigError`, changing nothing,
        when the state does not fit this loader (:meth:`check_state`).
        """
        order, position = self.check_state(state)
        self.rng.bit_generator.state = state["rng"]
        if position == len(self):
            order, position = None, 0
        self._order = None if order is None else order.astype(np.int64)
        self._position = int(position)
        self._resume = order is not None or position > 0

    def check_state(self, state) -> tuple[np.ndarray | None, int]:
        """Raise :class:`~digitnet.errors.ConfigError` when ``state`` does not fit this loader; else
        return its order (an array, or None) and position."""
        keys = {"rng", "order", "position", "n", "batch_size"}
        if not isinstance(state, dict) or not keys <= set(state):
            raise ConfigError(
                f"a loader state is a dict with {', '.join(sorted(keys))} "
                f"(what state_dict() returns), not {state!r:.100}"
            )
        n, batches = len(self.x), len(self)
        if state["n"] != n:
            raise ConfigError(
                f"the loader state is of {state['n']} examples, this loader has {n}: "
                "load it into a loader over the same data"
            )
        if state["batch_size"] != self.batch_size:
            raise ConfigError(
                f"the loader state is of batches of {state['batch_size']}, this loader's are "
                f"{self.batch_size}: build it with the saved batch size"
            )
        position, order = state["position"], state["order"]
        if (
            isinstance(position, bool)
            or not isinstance(position, (int, np.integer))
            or not 0 <= position <= batches
        ):
            raise ConfigError(
                f"the loader state's position must be a whole number of batches from 0 to {batches}, "
                f"not {position!r}"
            )
        if order is not None:
            order = np.asarray(order)
            if not self.shuffle:
                raise ConfigError("the loader state is of a shuffling loader, this one has shuffle=False")
            if (
                order.shape != (n,)
                or order.dtype.kind not in "iu"
                or not np.array_equal(np.sort(order), np.arange(n))
            ):
                raise ConfigError(f"the loader state's order is not a permutation of the {n} examples")
        elif position and self.shuffle:
            raise ConfigError(
                "the loader state is of a loader without shuffling, this one shuffles: "
                "build it with shuffle=False"
            )
        try:  # on a generator of the same kind, so that this one changes only once all is well
            type(self.rng.bit_generator)().state = state["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ConfigError(
                f"the loader state's generator state does not fit this loader's "
                f"{type(self.rng.bit_generator).__name__} ({exc})"
            ) from None
        return order, position

    def __repr__(self) -> str:
        return (
            f"DataLoader(n={len(self.x)}, batch_size={self.batch_size}, batches={len(self)}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )
