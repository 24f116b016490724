"""The per-batch transforms on real digits: shifts, affine maps, elastic distortions, and their settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from clitools import assert_user_error, digitnet
from scipy import ndimage

from digitnet.data.augment import Compose, ElasticDistortion, RandomAffine, RandomShift
from digitnet.errors import ConfigError
from digitnet.presets import preset
from digitnet.training import Callback, TrainConfig, train


def translate(img, dy, dx):
    """Move ``img`` down by ``dy`` and right by ``dx``, filling with zeros (nothing wraps round)."""
    out = np.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_shifts_are_exact_translations(mnist):
    x = mnist.x_train[:256].astype(np.float32) / 255
    out = RandomShift(2)(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    images, shifted = x.reshape(-1, 28, 28), out.reshape(-1, 28, 28)
    seen = set()
    for img, sh in zip(images, shifted, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(translate(img, dy, dx), sh)
        ]
        assert matches, "not a pure translation"
        seen.add(matches[0])
    assert len(seen) == 25  # every offset in [-2, 2]^2 occurs


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


def digits(mnist, n=64, dtype=np.float32):
    return mnist.x_train[:n].astype(dtype) / 255


def one(value, n=1):
    return np.full(n, float(value))


def centre_of_mass(x):
    """(B, 2) row and column of each image's ink centre."""
    img = x.reshape(len(x), 28, 28).astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    total = img.sum(axis=(1, 2))
    return np.stack([(img * rows).sum(axis=(1, 2)) / total, (img * cols).sum(axis=(1, 2)) / total], axis=1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomAffine(0, 0, 0, 0),
        lambda: ElasticDistortion(0, 4),
        lambda: Compose(RandomAffine(), ElasticDistortion(0)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parameters_at_zero_are_the_identity(mnist, make, dtype):
    x = digits(mnist, 128, dtype)
    out = make()(x, np.random.default_rng(0))
    assert out.dtype == dtype and out.shape == x.shape and np.array_equal(out, x)


@pytest.mark.parametrize("angle", [-30, 12, 45])
def test_rotation_matches_scipy(mnist, angle):
    x = digits(mnist, 8)
    out = RandomAffine().apply(x, one(angle, 8), one(1, 8), one(0, 8), one(0, 8), one(0, 8))
    ref = np.stack([ndimage.rotate(img, angle, reshape=False, order=1) for img in x.reshape(-1, 28, 28)])
    assert np.abs(out.reshape(-1, 28, 28) - ref).max() < 1e-5


def test_translation_scale_and_shear_move_the_ink_as_expected(mnist):
    x = digits(mnist, 32)
    n, aff = len(x), RandomAffine()
    com = centre_of_mass(x)
    moved = aff.apply(x, one(0, n), one(1, n), one(0, n), one(2, n), one(-3, n))
    assert np.array_equal(moved.reshape(n, 28, 28), [translate(img, 2, -3) for img in x.reshape(n, 28, 28)])
    inside = (
        x.reshape(n, 28, 28)[:, -2:].sum(axis=(1, 2)) + x.reshape(n, 28, 28)[:, :, :3].sum(axis=(1, 2)) == 0
    )
    assert inside.sum() > 20 and np.allclose(centre_of_mass(moved)[inside] - com[inside], [2, -3], atol=1e-5)
    big, small = (aff.apply(x, one(0, n), one(z, n), one(0, n), one(0, n), one(0, n)) for z in (1.3, 0.7))

    def rows(y):
        return (y.reshape(n, 28, 28) > 0.3).any(axis=2).sum(axis=1)  # height of the ink's box

    assert (rows(big) > rows(x)).mean() > 0.9 and (rows(small) < rows(x)).mean() > 0.9
    assert np.allclose(big.sum(1) / x.sum(1), 1.3**2, rtol=0.08)  # ink grows with the area
    sheared = aff.apply(x, one(0, n), one(1, n), one(20, n), one(0, n), one(0, n)).reshape(n, 28, 28)
    img, top, bottom = x.reshape(n, 28, 28), slice(0, 12), slice(16, 28)

    def col(im, part):
        return (im[:, part] * np.arange(28)).sum(axis=(1, 2)) / im[:, part].sum(axis=(1, 2))

    lean = (col(sheared, bottom) - col(sheared, top)) - (col(img, bottom) - col(img, top))
    assert (lean > 0).mean() > 0.9  # rows further down move right


def test_elastic_field_is_simards_and_bends_more_with_alpha(mnist):
    e = ElasticDistortion(34, 4)
    field = e.field(5, np.random.default_rng(3))
    noise = np.random.default_rng(3).uniform(-1, 1, size=(5, 2, 28, 28))
    expected = ndimage.gaussian_filter(noise, (0, 0, 4, 4), mode="constant") * 34
    assert np.allclose(field.reshape(expected.shape), expected, atol=1e-10)
    x = digits(mnist, 128)
    changes = []
    for alpha in (8, 34, 80):
        out = ElasticDistortion(alpha, 4)(x, np.random.default_rng(0))
        assert out.dtype == x.dtype and out.shape == x.shape
        ratio = out.sum(1) / x.sum(1)  # ink is moved, not made: each digit's varies, the batch's does not
        assert abs(np.median(ratio) - 1) < 0.1 and abs(out.sum() / x.sum() - 1) < 0.05
        changes.append(np.abs(out - x).sum())
    assert 0 < changes[0] < changes[1] < changes[2]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomAffine(15, 0.1, 10, 1),
        lambda: ElasticDistortion(34, 4),
        lambda: Compose(RandomShift(1), RandomAffine(10, 0.1, 5), ElasticDistortion(34)),
    ],
)
def test_same_seed_same_batch_other_seed_another(mnist, make):
    x = digits(mnist, 64, np.float64)
    a, b, c = (make()(x, np.random.default_rng(seed)) for seed in (5, 5, 6))
    assert a.dtype == np.float64 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert "(" in repr(make())


def test_fill_covers_what_the_warp_uncovers():
    x = np.ones((4, 784), np.float32)
    out = RandomAffine().apply(x, one(0, 4), one(0.5, 4), one(0, 4), one(0, 4), one(0, 4))
    assert (
        out.min() == 0
        and RandomAffine(fill=-0.5).apply(x, one(0, 4), one(0.5, 4), one(0, 4), one(0, 4), one(0, 4)).min()
        == -0.5
    )


ALL_ON = dict(
    augment_shift=1,
    augment_rotate=10,
    augment_scale=0.1,
    augment_shear=8,
    augment_elastic_alpha=34,
    augment_elastic_sigma=4,
)


def test_settings_compose_and_resume_mid_epoch_bit_for_bit(mnist):
    data = dataclasses.replace(
        mnist,
        x_train=mnist.x_train[:3000],
        y_train=mnist.y_train[:3000],
        x_test=mnist.x_test[:500],
        y_test=mnist.y_test[:500],
    )
    config = preset("default", hidden=(32, 16), epochs=2, **ALL_ON)
    states = []
    whole = train(config, data, checkpoint=states.append)

    class StopAt(Callback):
        def on_batch_end(self, state):
            if state.iteration == 30:  # in the middle of the second epoch
                state.stop = True

    cut = []
    train(config, data, callbacks=[StopAt()], checkpoint=cut.append)
    again = train(config, data, resume=cut[-1])
    assert again.history.loss == whole.history.loss
    for k, v in whole.model.state_dict().items():
        assert np.array_equal(again.model.state_dict()[k], v)
    plain = train(preset("default", hidden=(32, 16), epochs=2), data)
    assert plain.history.loss != whole.history.loss


def test_a_short_run_with_affine_and_elastic_still_learns(mnist):
    data = dataclasses.replace(
        mnist,
        x_train=mnist.x_train[:3000],
        y_train=mnist.y_train[:3000],
        x_test=mnist.x_test[:1000],
        y_test=mnist.y_test[:1000],
    )
    result = train(
        preset(
            "default",
            hidden=(128,),
            epochs=4,
            augment_rotate=10,
            augment_scale=0.1,
            augment_shear=8,
            augment_elastic_alpha=34,
        ),
        data,
    )
    assert result.metrics["test_accuracy"] > 0.75  # 82.5% here; chance is 10%


@pytest.mark.parametrize(
    "flag, value, fragment",
    [
        ("--augment-rotate", "200", "0 to 180 degrees"),
        ("--augment-rotate", "-1", "0 to 180 degrees"),
        ("--augment-scale", "1", "below 1"),
        ("--augment-scale", "-0.1", "scale"),
        ("--augment-shear", "75", "0 to 60 degrees"),
        ("--augment-elastic-alpha", "-3", "elastic alpha"),
        ("--augment-elastic-sigma", "-4", "greater than 0"),
        ("--augment-elastic-sigma", "0", "greater than 0"),
    ],
)
def test_bad_values_on_the_command_line_are_one_error_line(tmp_path, small_npz, flag, value, fragment):
    out = tmp_path / "run"
    assert_user_error(
        digitnet("train", "--data", small_npz, "--epochs", "1", flag, value, "--out", out), fragment
    )
    assert not out.exists() or not any(out.iterdir())


def test_the_settings_are_off_by_default_and_recorded():
    config = TrainConfig()
    assert config.to_dict()["augment_rotate"] == 0 and config.augment_elastic_alpha == 0
    with pytest.raises(ConfigError, match="0 to 180"):
        TrainConfig(augment_rotate=181).validate()
