"""The per-batch transforms on real digits: shifts, affine maps, elastic distortions, and their settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from clitools import assert_user_error, digitnet
from scipy import ndimage

from digitnet.data.augment import Compose, ElasticDistortion, RandomAffine, RandomFlip, RandomShift
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


def test_a_whole_pixel_move_is_exact_in_images_past_float32s_whole_numbers():
    # The sampler adds up flat indices in float32, exact below 2^24; a 4,100-pixel image padded to
    # 4,103 has more (its last 11 rows read every other pixel before such indices went to float64).
    side = 4100
    x = np.random.default_rng(0).random((1, side * side), dtype=np.float32)
    moved = RandomAffine(side=side).apply(x, *np.array([[0.0], [1], [0], [1], [-1]]))  # down 1, left 1
    assert np.array_equal(moved.reshape(side, side), translate(x.reshape(side, side), 1, -1))


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


def simards_field_covariance(alpha, sigma, side=28):
    """The exact covariance of Simard's field at every pair of pixels: alpha² Var(U(-1, 1)) (GGᵀ ⊗ GGᵀ)."""
    g = ndimage.gaussian_filter1d(np.eye(side), sigma, axis=0, mode="constant")
    return alpha**2 / 3 * np.kron(g @ g.T, g @ g.T)


@pytest.mark.parametrize("sigma", [4, 2])
def test_elastic_field_has_simards_covariance_and_bends_more_with_alpha(mnist, sigma):
    e = ElasticDistortion(34, sigma)
    field = e.field(4000, np.random.default_rng(3))
    assert field.shape == (2, 4000, 784) and field.dtype == np.float32
    field = field.astype(np.float64)
    exact = simards_field_covariance(34, sigma)
    ours = np.kron(e.basis @ e.basis.T, e.basis @ e.basis.T).astype(np.float64) / 3  # L M Lᵀ, Var M = 1/3
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 0.005  # what the dropped patterns held
    for axis in field:
        seen = axis.T @ axis / len(axis)  # (784, 784) covariance (the mean is 0)
        # 4000 of Simard's own fields miss his covariance by 4.5% (sigma 4) and 9% (sigma 2) here;
        # keeping only the 3 widest patterns of sigma 4 would miss it by 13% before any sampling
        assert np.linalg.norm(seen - exact) / np.linalg.norm(exact) < 0.11
        assert abs(np.trace(seen) / np.trace(exact) - 1) < 0.03  # the variance Simard's field has
    cross = field[0].T @ field[1] / field.shape[1]  # rows and columns are drawn independently
    assert np.linalg.norm(cross) / np.linalg.norm(exact) < 0.11
    x = digits(mnist, 128)
    changes = []
    for alpha in (8, 34, 80):
        out = ElasticDistortion(alpha, 4)(x, np.random.default_rng(0))
        assert out.dtype == x.dtype and out.shape == x.shape
        ratio = out.sum(1) / x.sum(1)  # ink is moved, not made: each digit's varies, the batch's does not
        # (at alpha 80 some 4-5% of the ink is pushed off the image, with Simard's exact field too)
        assert abs(np.median(ratio) - 1) < 0.1 and abs(out.sum() / x.sum() - 1) < 0.07
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
        ("--augment-elastic-sigma", "-4", "from 0.01 to 28 pixels"),
        ("--augment-elastic-sigma", "0", "from 0.01 to 28 pixels"),
        ("--augment-elastic-sigma", "1e-300", "from 0.01 to 28 pixels"),
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


def test_composed_warps_read_the_image_once(mnist):
    x = digits(mnist, 256)
    # two shifts of up to 1 pixel, chained as point maps, are one exact shift of up to 2
    both = Compose(RandomShift(1), RandomShift(1))(x, np.random.default_rng(0)).reshape(-1, 28, 28)
    offsets = set()
    for img, out in zip(x.reshape(-1, 28, 28), both, strict=True):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(translate(img, dy, dx), out)
        ]
        assert found, "not a pure translation"
        offsets.add(found[0])
    assert len(offsets) == 25
    # an affine map and a distortion interpolated once keep the strokes sharper than one after the other
    affine, elastic = RandomAffine(10, 0.1, 10), ElasticDistortion(34, 4)
    fused = Compose(affine, elastic)(x, np.random.default_rng(1))
    rng = np.random.default_rng(1)
    bent = elastic(x, rng)  # the fused draw order: the last transform's points first
    twice = affine(bent, rng)
    assert twice.shape == fused.shape and not np.array_equal(twice, fused)
    assert fused.max(axis=1).mean() > twice.max(axis=1).mean()
    assert abs(fused.sum() / twice.sum() - 1) < 0.02  # the same ink, moved alike


def test_flips_mirror_about_half_the_images_exactly(fashion):
    x = fashion.x_train[:400].astype(np.float32) / 255
    out = RandomFlip()(x, np.random.default_rng(0)).reshape(-1, 28, 28)
    images = x.reshape(-1, 28, 28)
    mirrored = [np.array_equal(o, img[:, ::-1]) for o, img in zip(out, images, strict=True)]
    kept = [np.array_equal(o, img) for o, img in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 150 < sum(m and not k for m, k in zip(mirrored, kept, strict=True)) < 250


def test_a_flip_is_refused_on_digits_and_nothing_is_written(tmp_path, small_npz):
    out = tmp_path / "run"
    assert_user_error(
        digitnet("train", "--data", small_npz, "--epochs", "1", "--augment-flip", "--out", out),
        "mirrored digit",
    )
    assert_user_error(
        digitnet("train", "--preset", "fashion", "--dataset", "mnist", "--out", out), "fashion-mnist"
    )
    assert not out.exists() or not any(out.iterdir())


def test_image_transforms_refuse_images_that_are_not_square(mnist):
    data = dataclasses.replace(
        mnist,
        x_train=mnist.x_train[:600, :700],
        y_train=mnist.y_train[:600],
        x_test=mnist.x_test[:100, :700],
        y_test=mnist.y_test[:100],
    )
    with pytest.raises(ConfigError, match="square images"):
        train(preset("default", epochs=1), data)
    plain = dict(augment_shift=0, augment_elastic_alpha=0, test_time_shift=0)
    with pytest.raises(ConfigError, match="test-time shifts need square images"):
        train(preset("default", epochs=1, **{**plain, "test_time_shift": 1}), data)
    assert train(preset("default", epochs=1, hidden=(16,), **plain), data).metrics["epochs"] == 1


@pytest.mark.parametrize("name", ["default", "best", "fashion"])
def test_the_new_presets_are_valid_and_their_transforms_recorded(name):
    config = preset(name).validate()
    recorded = TrainConfig.from_dict(config.to_dict())
    assert recorded == config
    assert (recorded.dataset == "fashion-mnist") == recorded.augment_flip
    # digits are moved and bent; clothes, centred and aligned, are only mirrored
    assert (recorded.augment_shift >= 1 and recorded.augment_elastic_alpha > 0) == (
        recorded.dataset == "mnist"
    )
