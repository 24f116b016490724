"""RandomShift moves real digits without changing them otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.data.augment import RandomShift
from digitnet.errors import ConfigError


def translate(img, dy, dx):
    """Move ``img`` down by ``dy`` and right by ``dx``, filling with zeros (nothing wraps round)."""
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0),
                                                                    max(-dx, 0):w - max(dx, 0)]
    return out


def test_shifts_are_exact_translations(mnist):
    x = mnist.x_train[:256].astype(np.float32) / 255
    out = RandomShift(2)(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    images, shifted = x.reshape(-1, 28, 28), out.reshape(-1, 28, 28)
    seen = set()
    for img, sh in zip(images, shifted):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(translate(img, dy, dx), sh)]
        assert matches, "not a pure translation"
        seen.add(matches[0])
    assert len(seen) == 25          # every offset in [-2, 2]^2 occurs


def test_same_generator_state_same_shifts(mnist):
    x = mnist.x_train[:64].astype(np.float32)
    a = RandomShift(1)(x, np.random.default_rng(5))
    b = RandomShift(1)(x, np.random.default_rng(5))
    c = RandomShift(1)(x, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fill_value_covers_the_border():
    x = np.ones((8, 784), np.float32)
    out = RandomShift(3, fill=-0.5)(x, np.random.default_rng(0)).reshape(8, 28, 28)
    assert set(np.unique(out)) <= {1.0, -0.5}
    assert (out == -0.5).any(axis=(1, 2)).sum() >= 7


def test_zero_shift_is_refused():
    with pytest.raises(ConfigError):
        RandomShift(0)
