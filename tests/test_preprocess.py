"""The MNIST-style preprocessing on real MNIST digits and on digits rendered from fonts and pen strokes.

What each test catches is said in its docstring. No network is needed here:
the model-based figures are in test_predict_images.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from digit_images import font_paths, glyph, place, stroked
from PIL import Image, ImageDraw

from digitnet import preprocess
from digitnet.errors import DataError


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def centre_of_mass(pixels) -> tuple[float, float]:
    p = np.asarray(pixels, np.float64)
    ys, xs = np.mgrid[0 : p.shape[0], 0 : p.shape[1]]
    return float((p * ys).sum() / p.sum()), float((p * xs).sum() / p.sum())


def corr(a, b) -> float:
    """Correlation of two 28 x 28 images, the best over shifts of up to one pixel: centring rounds
    the centre of mass to whole pixels, as MNIST did, so the same digit may land one pixel apart."""
    a, b = np.asarray(a, float), np.pad(np.asarray(b, float), 1)
    return max(
        float(np.corrcoef(a.ravel(), b[1 + dy : 29 + dy, 1 + dx : 29 + dx].ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


@pytest.fixture(scope="module")
def four() -> Image.Image:
    """A typeset 4, white on black, cropped to its ink."""
    fonts = font_paths()
    if not fonts:
        pytest.skip("no fonts on this machine: run scripts/system-packages.sh")
    return glyph(4, fonts[0])


def on_page(ink: Image.Image, size, at, height, dark_on_light=True, paper=None) -> Image.Image:
    """``ink`` (white on black) scaled to ``height`` pixels and put on a page of ``size`` at ``at``."""
    k = height / ink.size[1]
    ink = ink.resize((max(1, round(ink.size[0] * k)), height), Image.Resampling.LANCZOS)
    alpha = Image.new("L", size, 0)
    alpha.paste(ink, at)
    a = np.asarray(alpha, np.float32) / 255
    bg = (255.0 if dark_on_light else 0.0) if paper is None else paper
    fg = 0.0 if dark_on_light else 255.0
    return Image.fromarray(np.round(bg + (fg - bg) * a).astype(np.uint8), "L")


def test_mnist_digits_come_back_as_they_were(mnist):
    """The steps are MNIST's own: its digits come back within a grey level (catches wrong scale,
    centring, cropping, polarity or intensity) with the centre of mass within half a pixel of (14, 14)."""
    x = mnist.x_test[:500].reshape(-1, 28, 28)
    out = np.stack([preprocess.to_mnist(im.astype(np.float32)).pixels for im in x])
    assert out.dtype == np.uint8 and out.shape == (500, 28, 28)
    assert np.abs(out.astype(int) - x).mean() < 1.0
    coms = np.array([centre_of_mass(p) for p in out])
    assert np.abs(coms - 14.0).max() < 0.55
    assert (out.reshape(500, -1).max(axis=1) == 255).all()


def test_the_box_is_20_pixels_and_the_digit_keeps_its_shape(four):
    """A tall digit's longer side is 20 pixels and its aspect ratio survives (catches stretching to a square)."""
    page = on_page(four, (400, 300), (150, 40), 200)
    pixels = preprocess.to_mnist(np.asarray(page, np.float32)).pixels
    rows, cols = np.flatnonzero(pixels.max(axis=1) > 0), np.flatnonzero(pixels.max(axis=0) > 0)
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height == 20
    assert abs(width / height - four.size[0] / four.size[1]) < 0.1
    # Anti-aliased like MNIST's (whose non-zero pixels average 175): edges are grey, not cut sharp.
    ink = pixels[pixels > 0]
    assert ((ink > 30) & (ink < 225)).mean() > 0.3 and 120 < ink.mean() < 220


def test_polarity_size_position_and_aspect_do_not_change_what_the_network_sees(four):
    """The same digit, dark on light or light on dark, big or small, anywhere on a page of any shape,
    gives one 28 x 28 image (catches a wrong polarity decision, a crop that keeps margins, a lost offset)."""
    ref = preprocess.to_mnist(np.asarray(on_page(four, (300, 300), (100, 50), 200), np.float32)).pixels
    pages = [
        on_page(four, (300, 300), (100, 50), 200, dark_on_light=False),
        on_page(four, (1200, 300), (20, 150), 120),  # wide page, digit at the left
        on_page(four, (200, 900), (30, 650), 160, dark_on_light=False),  # tall page, digit at the bottom
        on_page(four, (40, 36), (12, 4), 28),  # tiny
        on_page(four, (500, 500), (300, 300), 160, paper=150.0),  # grey paper
        on_page(four, (300, 300), (100, 50), 200, paper=110.0),  # dim photo of paper: ink darker
        on_page(four, (300, 300), (100, 50), 200, dark_on_light=False, paper=150.0),  # chalk on grey
    ]
    for page in pages:
        prepared = preprocess.prepare(encode(page))
        assert corr(prepared.pixels, ref) > 0.93, page.size
        assert np.abs(prepared.pixels.astype(int) - ref).mean() < 12
    assert [preprocess.prepare(encode(page)).inverted for page in pages] == [
        False,
        True,
        False,
        True,
        True,
        True,
        False,
    ]


def test_a_photo_with_uneven_light_noise_and_jpeg_reads_like_a_clean_scan(four):
    """Tinted paper lit from one side, sensor noise and JPEG artefacts are removed
    (catches a global threshold that keeps the shadow, or noise that widens the box)."""
    ref = preprocess.to_mnist(np.asarray(on_page(four, (300, 300), (100, 50), 200), np.float32)).pixels
    for seed in range(4):
        rng = np.random.default_rng(seed)
        photo = place(four, rng, dark_on_light=seed % 2 == 0, photo=True)
        prepared = preprocess.prepare(encode(photo.convert("RGB"), "JPEG", quality=70))
        assert corr(prepared.pixels, ref) > 0.9, seed


def test_strong_shadow_across_the_paper_is_not_ink(four):
    """Half the page in shadow darker than a global threshold would allow (catches no background flattening)."""
    page = np.asarray(on_page(four, (600, 400), (250, 100), 200), np.float32)
    shadow = np.linspace(1.0, 0.45, 600)[None, :]  # the right side gets half the light
    shaded = np.clip(page * shadow + np.random.default_rng(0).normal(0, 3, page.shape), 0, 255)
    ref = preprocess.to_mnist(page).pixels
    got = preprocess.to_mnist(shaded).pixels
    assert corr(got, ref) > 0.98 and np.abs(got.astype(int) - ref).mean() < 4


def test_specks_away_from_the_digit_are_ignored():
    """Dust and dots around the digit do not widen its box (catches a bounding box over all ink)."""
    rng = np.random.default_rng(1)
    ink = stroked(7, rng)
    page = on_page(ink, (500, 400), (180, 100), 200)
    clean = preprocess.to_mnist(np.asarray(page, np.float32))
    dirty = page.copy()
    draw = ImageDraw.Draw(dirty)
    for x, y in [(10, 10), (480, 380), (30, 350), (460, 40), (100, 200), (420, 250)]:
        draw.ellipse([x, y, x + 4, y + 4], fill=0)
    prepared = preprocess.to_mnist(np.asarray(dirty, np.float32))
    assert prepared.bbox == clean.bbox
    assert np.array_equal(prepared.pixels, clean.pixels)


def test_a_digit_in_two_parts_keeps_both():
    """A 4 written with two separate strokes keeps both (catches keeping only the largest part)."""
    rng = np.random.default_rng(2)
    ink = stroked(4, rng)
    page = on_page(ink, (300, 300), (80, 40), 220)
    ink_arr, _ = preprocess.to_ink(np.asarray(page, np.float32))
    assert (ink_arr > 0).sum() > 0.9 * (np.asarray(page) < 128).sum()


def test_transparency_palette_16_bit_and_animated_gif(four):
    """Each way an image file can hold its pixels gives the same digit (catches a transparent
    PNG read as black on black, a 16-bit PNG clipped to white, a GIF read from its last frame)."""
    page = on_page(four, (300, 300), (100, 50), 200)
    ref = preprocess.prepare(encode(page)).pixels
    alpha = 255 - np.asarray(page)
    for ink_colour in (0, 255):  # black ink or white ink on a transparent sheet
        rgba = np.zeros((300, 300, 4), np.uint8)
        rgba[..., :3] = ink_colour
        rgba[..., 3] = alpha
        got = preprocess.prepare(encode(Image.fromarray(rgba, "RGBA"))).pixels
        assert corr(got, ref) > 0.98, ink_colour
    sixteen = Image.fromarray(np.asarray(page).astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    assert corr(preprocess.prepare(encode(sixteen)).pixels, ref) > 0.98
    assert corr(preprocess.prepare(encode(page.convert("P"), "GIF")).pixels, ref) > 0.98
    assert corr(preprocess.prepare(encode(page.convert("RGB"), "BMP")).pixels, ref) > 0.98
    other = on_page(glyph(7, font_paths()[0]), (300, 300), (100, 50), 200)
    gif = encode(page.convert("P"), "GIF", save_all=True, append_images=[other.convert("P")], duration=100)
    with Image.open(io.BytesIO(gif)) as im:
        assert im.n_frames == 2
    assert corr(preprocess.prepare(gif).pixels, ref) > 0.98


def test_a_large_black_and_white_image_reads_like_its_grey_twin(four):
    """A 1-bit image (mode "1") large enough to be shrunk on reading gives the digit its grey copy gives
    (catches shrinking single bits, which Pillow refuses: the file was called damaged)."""
    page = on_page(four, (1600, 1600), (500, 300), 900)
    grey = preprocess.prepare(encode(page)).pixels
    for fmt in ("PNG", "TIFF", "BMP"):
        one_bit = encode(page.convert("1", dither=Image.Dither.NONE), fmt)
        with Image.open(io.BytesIO(one_bit)) as im:
            assert im.mode == "1" and im.size == (1600, 1600)
        assert corr(preprocess.prepare(one_bit).pixels, grey) > 0.97, fmt
    number = preprocess.prepare_number(encode(page.convert("1").resize((3000, 3000))))
    assert len(number.digits) == 1


def test_non_finite_pixels_and_a_single_paper_level_raise_no_warnings(four):
    """A float TIFF holding NaN and infinity reads as the digit without them; a page of one level
    with a few specks meets an empty selection of paper. Both printed NumPy's RuntimeWarnings before
    their answer or error line, once (catches any warning: they are errors here)."""
    import warnings

    page = on_page(four, (300, 300), (100, 50), 200)
    ref = preprocess.prepare(encode(page)).pixels
    a = np.asarray(page, np.float32)
    a[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    specks = np.full((300, 300), 255, np.uint8)
    specks[np.random.default_rng(0).integers(0, 300, (2, 500)).tolist()] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert corr(preprocess.prepare(encode(Image.fromarray(a, "F"), "TIFF")).pixels, ref) > 0.98
        try:
            preprocess.prepare(encode(Image.fromarray(specks)))
        except DataError:
            pass  # specks may be read as a faint mark or refused; either way, without a warning


def test_a_page_of_dots_is_no_number_and_is_refused_at_once():
    """Dotted paper, a halftone: tens of thousands of specks of one size. Reading it as a number is
    refused in one error (catches joining the pieces by re-sorting after every join, minutes of work
    on 50,000 specks, and answering with hundreds of "digits")."""
    dots = np.full((480, 480), 255, np.uint8)
    dots[::2, ::4] = 0
    with pytest.raises(DataError, match=r"the page holds \d+ separate marks.*more than the 64 digits"):
        preprocess.prepare_number(encode(Image.fromarray(dots)), name="the page")


def test_a_phone_photo_is_turned_upright_by_its_exif_tag(four):
    """A JPEG stored sideways with orientation 6 is read upright (catches ignoring EXIF)."""
    page = on_page(four, (300, 400), (100, 80), 220).convert("RGB")
    ref = preprocess.prepare(encode(page, "JPEG")).pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    sideways = encode(page.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)
    assert corr(preprocess.prepare(sideways).pixels, ref) > 0.97
    without_tag = encode(page.transpose(Image.Transpose.ROTATE_90), "JPEG")
    assert corr(preprocess.prepare(without_tag).pixels, ref) < 0.6


def test_side_by_side_shows_the_input_and_the_28x28(four):
    """The preview is the input beside exactly the pixels the network saw (catches a preview of
    something else)."""
    prepared = preprocess.prepare(encode(on_page(four, (400, 200), (50, 20), 150)))
    im = preprocess.side_by_side(prepared, height=280)
    assert im.size[1] == 280 and im.mode == "RGB"
    seen = np.asarray(im)[:, -280:, 0]
    assert np.array_equal(seen[5::10, 5::10], prepared.pixels)
    left = np.asarray(im.convert("L"))[:, : im.size[0] - 290]
    assert left.shape[1] == 320 * 280 // 160 and left.mean() > 200  # the white page, 2:1


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, four):
    d = tmp_path_factory.mktemp("bad")
    page = on_page(four, (300, 300), (100, 50), 200)
    png = encode(page)
    files = {
        "white.png": encode(Image.new("L", (200, 120), 255)),
        "black.jpg": encode(Image.new("RGB", (64, 64), 0), "JPEG"),
        "noise.png": encode(
            Image.fromarray(
                np.clip(np.random.default_rng(0).normal(128, 8, (200, 200)), 0, 255).astype(np.uint8)
            )
        ),
        "text.png": b"this is not an image\n",
        "vector.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n",
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": encode(page, "JPEG")[:1500],
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    Image.new("1", (20_000, 20_000), 1).save(d / "huge.png")
    (d / "folder.png").mkdir()
    return d


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("white.png", "looks blank"),
        ("black.jpg", "looks blank"),
        ("noise.png", "looks blank"),
        ("text.png", "is not an image"),
        ("empty.png", "is not an image"),
        ("vector.eps", "is not an image"),
        ("truncated.png", "damaged or truncated"),
        ("truncated.jpg", "damaged or truncated"),
        ("huge.png", "400 megapixels"),
        ("folder.png", "is a folder"),
        ("missing.png", "does not exist"),
    ],
)
def test_bad_images_raise_one_clear_error(bad_files, name, fragment):
    """Each bad file is a DataError naming the file and what is wrong (catches tracebacks and silent guesses)."""
    with pytest.raises(DataError) as info:
        preprocess.prepare(bad_files / name)
    assert fragment in str(info.value) and name in str(info.value)


def test_max_side_is_checked_before_decoding():
    """The web page's 4096-pixel limit holds, and names the size (catches decoding first)."""
    wide = encode(Image.new("L", (5000, 10), 255))
    with pytest.raises(DataError, match="5000x10 pixels; images up to 4096"):
        preprocess.prepare(wide, max_side=4096)
