"""Turn a photo, scan or drawing of a digit, or of a number, into 28 x 28 images made the way MNIST's were.

MNIST's digits are light ink on a black background, their bounding box
scaled so that its longer side is 20 pixels (anti-aliased, aspect ratio
kept), placed in a 28 x 28 frame with their centre of mass in the middle
(at pixel (14, 14), counting from 0). A network trained on MNIST reads
other digits well only if they are brought to the same form. The steps:

1. :func:`load_image`: decode (PNG, JPEG, BMP, GIF's first frame, ...),
   turn the way the camera's EXIF tag says, make it grey (transparent
   pixels become the colour that contrasts with the ink) and shrink it so
   its longer side is at most ``WORK_SIDE`` pixels.
2. :func:`to_ink`: decide the polarity (the paper is what most of the
   border is, once the light is evened out; a tight crop is told apart by
   which side holds together) and make the ink light on a dark background;
   subtract the background (a grey opening wider than any stroke, which
   follows shadows) and, for paper, divide by its brightness (uneven
   light); keep what stands out of the noise (measured from neighbouring
   pixels) and above ``FAINT`` of the ink's level; remove ruled and
   squared paper's lines; drop specks and smudges; scale the ink to 0-1.
3. :func:`to_mnist`: crop to the ink's bounding box and :func:`centre` it:
   scale its longer side to 20 pixels and place it in the 28 x 28 frame so
   that its centre of mass falls on (14, 14), rounded to whole pixels as
   MNIST did, in one anti-aliased resampling; scale so the brightest pixel is 255.

Given an MNIST digit, the steps give it back within a grey level
on average: they are MNIST's own.

:func:`prepare` runs all three; it is what ``digitnet predict IMAGE`` and
the web page use. :func:`prepare_number` reads an image holding several
digits: :func:`segment` cuts its ink into digits, left to right, and
:func:`read_number` gives the JSON answer. :func:`from_mnist` takes a digit
already in MNIST's form as it is; :func:`save_preview` saves the input
beside what the network saw (for a number, with each digit's box and reading).
The image work is NumPy, Pillow and ``scipy.ndimage``.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from scipy import ndimage

from digitnet.data.formats import atomic_path
from digitnet.errors import DataError, TooLargeError

FRAME = 28  # MNIST's image side
BOX = 20  # the longer side of the digit's bounding box in the frame
CENTRE = 14.0  # where the centre of mass goes, in pixel indices (MNIST's mean is 14.0, 14.0)
WORK_SIDE = 320  # images are shrunk to at most this side before the steps (plenty for 20 pixels)
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (memory stays bounded)
MIN_SIDE = 3  # images narrower than this (in pixels, as stored) cannot hold a digit
MAX_ASPECT = 64  # nor images this many times longer than wide
FAINT = 0.1  # ink fainter than this fraction of the ink's level is background
SPECK = 0.03  # connected parts smaller than this fraction of the largest are noise ...
SMUDGE = 0.4  # ... and so are those whose strongest ink is under this fraction of the strongest part's
MIN_CONTRAST = 10  # ink must differ from the background by this much (of 255) ...
MIN_SNR = 6.0  # ... and by this many times the noise left after smoothing
SMOOTH = 1.0  # the Gaussian (in working pixels) that the ink's level and mask are measured through
SMOOTH_NOISE = 0.282  # the part of white noise's deviation left after that smoothing: 1 / (2 sqrt(pi) SMOOTH)
FIELD_SIDE = 96  # the background is estimated on the image shrunk to at most this side ...
FIELD_WINDOW = 0.4  # ... with an opening this fraction of its longer side wide
RULE_SPAN = 0.6  # a ruled line crosses at least this fraction of the frame ...
RULE_THICKNESS = 0.03  # ... and is at most this fraction of the frame thick
POLARITY_WINDOW = 0.25  # the median that evens out the light, as a fraction of the image's longer side
CLEAR_BORDER = 0.75  # the paper is the side of the middle grey that this much of the border lies on
SAMPLE = 20_000  # percentiles of an image are taken over about this many of its pixels
EIGHT = np.ones((3, 3), bool)  # 8-connectivity for ndimage.label
# Numbers (prepare_number, segment):
NUMBER_SIDE = 640  # images of numbers are read at up to this side, so that each of 8 digits keeps ~50 pixels
PIECE_OVERLAP = 0.3  # a short part overlapping this much of the narrower's width belongs to that digit
PIECE_HEIGHT = 0.6  # (short: under this fraction of the other's height)
DIGIT_OVERLAP = 0.8  # two tall parts are one digit only if they overlap this much
MARK_HEIGHT = 0.4  # parts under this fraction of the tallest digit's height are dots, dashes or specks
SPLIT_ASPECT = 1.05  # a part wider than this many times its height is touching digits, or a wide one ...
WIDEST = 1.6  # ... and one wider than this is
FAIR_SHARE = 0.35  # each digit cut out holds at least this much of an equal share of the ink
DIGIT_ASPECT = 0.6  # a digit's usual width over its height, for guessing how many touch
NARROWEST = 0.2  # no digit cut from touching ones is narrower than this times their height
SPLIT_COST = 0.3  # each digit more or fewer than the widths suggest costs this much mean log-probability
MAX_DIGITS = 64  # a number is read with at most this many digits (more marks: not a number, or specks)

# The raster formats read. Others are refused unopened: EPS, say, would have Pillow run Ghostscript.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA")  # JPEG covers phones' MPO
# EXIF orientation tag value -> the transpose that shows the picture upright.
_EXIF_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class Prepared:
    """One image after :func:`prepare`.

    ``pixels`` is the ``(28, 28)`` uint8 image the network sees (0-255, light
    ink on black); ``grey`` the ``(h, w)`` float32 input at working size
    (0-255, as it looked, for previews); ``inverted`` says the ink was darker
    than the background; ``bbox`` is the ink's ``(top, left, bottom, right)``
    in ``grey``'s coordinates (bottom and right exclusive).
    """

    pixels: np.ndarray
    grey: np.ndarray
    inverted: bool
    bbox: tuple


def prepare(source, *, max_side: int | None = None, name: str | None = None) -> Prepared:
    """Read an image file (path, bytes or binary file object) and return what the network sees.

    Raises :class:`~digitnet.errors.DataError` naming ``name`` (or the path)
    for a file that is not an image, is damaged or truncated, is larger than
    ``max_side`` pixels a side or ``MAX_PIXELS`` in all, or holds no ink.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "the image")
    notes: list = []
    grey = load_image(source, max_side=max_side, name=name, notes=notes)
    prepared = to_mnist(grey, name=name)
    prepared.notes = notes
    return prepared


def load_image(
    source,
    *,
    max_side: int | None = None,
    name: str = "the image",
    work_side: int = WORK_SIDE,
    notes: list | None = None,
    size: list | None = None,
) -> np.ndarray:
    """Decode an image to grey, upright, at most ``work_side`` pixels a side.

    Returns a float32 array of shape ``(h, w)`` with values 0-255. What the
    reading leaves out (an animated image's later frames) is appended to
    ``notes`` as a sentence, the stored ``(width, height)`` to ``size``. Raises :class:`~digitnet.errors.DataError` for
    a file that is not an image, damaged, too large, smaller than
    ``MIN_SIDE`` pixels a side or more than ``MAX_ASPECT`` times longer than wide.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    Image.init()  # register every format, so FORMATS can be named
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=FORMATS) as im:
                w, h = im.size
                if max_side and max(w, h) > max_side:
                    raise TooLargeError(
                        f"{name} is {w}x{h} pixels; images up to {max_side} pixels a side are read"
                    )
                if w * h > MAX_PIXELS:
                    raise TooLargeError(
                        f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); images up to "
                        f"{MAX_PIXELS // 1_000_000} megapixels are read: scale it down first"
                    )
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise DataError(
                        f"{name} is {w}x{h} pixels: a strip too thin to hold a digit (images up to "
                        f"{MAX_ASPECT} times longer than wide are read): crop it around the digits"
                    )
                if min(w, h) < MIN_SIDE:
                    raise DataError(
                        f"{name} is {w}x{h} pixels: too small to hold a digit "
                        f"(images of at least {MIN_SIDE} pixels a side are read)"
                    )
                if size is not None:
                    size.extend((w, h))
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and notes is not None:
                    notes.append(f"{name} has {frames} frames: the first was read")
                turn = _EXIF_TURNS.get(im.getexif().get(0x0112))
                # JPEG: decode at a half, a quarter or an eighth of the size, down to half the working
                # side (a digit keeps plenty of pixels for its 20; decoding is most of the time).
                im.draft("RGB" if im.mode not in ("L", "1") else "L", (work_side // 2, work_side // 2))
                factor = max(im.size) // (2 * work_side)
                if factor > 1 and im.mode in ("1", "L", "LA", "RGB", "RGBA", "I", "F"):
                    if im.mode == "1":  # black and white: reduce() takes grey, not single bits
                        im = im.convert("L")
                    im = im.reduce(factor)  # cheap first shrink of huge images
                grey = _grey(im)
    except DataError:  # TooLargeError too
        raise
    except FileNotFoundError:
        raise DataError(f"{name} does not exist: check the path") from None
    except IsADirectoryError:
        raise DataError(f"{name} is a folder, not an image") from None
    except UnidentifiedImageError:
        raise DataError(
            f"{name} is not an image digitnet reads (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM or TGA)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found[1]) / 1e6:.0f} megapixels)" if found else ""
        raise TooLargeError(
            f"{name} is too large an image{size}; images up to {MAX_PIXELS // 1_000_000} "
            "megapixels are read: scale it down first"
        ) from None
    except OSError as exc:
        if exc.errno:  # the file system's complaint, e.g. permission denied
            raise DataError(f"cannot read {name}: {exc.strerror}") from None
        raise DataError(f"{name} is damaged or truncated ({exc}): save or export it again") from None
    except (SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise DataError(f"{name} is damaged or truncated ({exc}): save or export it again") from None
    if turn is not None:
        grey = grey.transpose(turn)
    grey.thumbnail((work_side, work_side), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float32)


def _grey(im: Image.Image) -> Image.Image:
    """A mode ``"F"`` image (0-255) of ``im``'s luminance; transparency shows the contrasting colour."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode.startswith("I;16"):
        return Image.fromarray(np.asarray(im, dtype=np.float32) / 257.0, "F")
    if im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32)
        a = np.where(np.isfinite(a), a, np.float32(0))  # a float TIFF may hold NaN or infinity: no ink
        top = float(a.max()) if a.size else 1.0
        return Image.fromarray(a * (255.0 / top if top > 255 else 1.0), "F")
    has_alpha = im.mode in ("LA", "RGBA", "PA", "La", "RGBa")
    if not has_alpha and "transparency" in im.info:
        im, has_alpha = im.convert("RGBA"), True
    if not has_alpha:
        return im.convert("L").convert("F")
    alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    lum = np.asarray(im.convert("RGB").convert("L"), dtype=np.float32)
    if alpha.min() >= 1.0:
        return Image.fromarray(lum, "F")
    # Ink drawn on a transparent sheet: put it on white if it is dark, on black if it is light.
    ink_lum = float((lum * alpha).sum() / max(alpha.sum(), 1e-6))
    background = 255.0 if ink_lum < 128 else 0.0
    return Image.fromarray(lum * alpha + background * (1.0 - alpha), "F")


def to_ink(grey: np.ndarray, *, name: str = "the image") -> tuple[np.ndarray, bool]:
    """Light ink on a black background, 0-1, with the background, noise and ruled lines removed.

    ``grey`` is ``(h, w)`` with values 0-255. Returns ``(ink, inverted)``,
    ``ink`` of the same shape (float32, 0 where there is no ink) and
    ``inverted`` True when the ink was darker than the background.
    Raises :class:`~digitnet.errors.DataError` if there is no ink.

    The background is a grey opening (``scipy.ndimage``) with a window wider
    than any stroke: it follows shadows and uneven light, and needs only some
    paper in every window, so ink may cover most of the frame; a tight crop
    (the ink touching all four edges) has one paper level instead. The noise comes from the differences of
    neighbouring pixels, which are the noise's wherever both lie on paper or
    both on ink, so it too holds however much of the frame is ink.
    """
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise DataError(f"{name}: expected a 2-D grey image, got shape {grey.shape}")
    inverted = _ink_is_dark(grey)
    ink = 255.0 - grey if inverted else grey.copy()
    lo, hi = np.percentile(_sample(ink), (1, 99))
    if _touches_edges(ink > lo + 0.6 * (hi - lo)):
        # Cropped tight around the ink: there is no page for light to fall across, only the paper
        # between strokes, which may be narrower than the ink; its level is the paper's.
        paper = ink[ink < (lo + hi) / 2]  # none when the image is one level throughout
        field = np.full_like(ink, float(np.median(paper)) if paper.size else float(lo))
    else:
        field = _background_field(ink)
    ink -= field
    noise = _noise(ink)
    # Paper reflects the light that falls on it: where the paper is dimmer, so is the ink's contrast.
    # Dividing by the paper's brightness (255 - field) undoes the uneven light; it scales the noise too.
    if inverted:
        gain = 255.0 / np.maximum(255.0 - field, 16.0)
        ink *= gain
        noise *= float(np.median(_sample(gain)))
    smooth = ndimage.gaussian_filter(ink, SMOOTH) if min(ink.shape) > 4 else ink
    level = float(np.percentile(_sample(smooth), 99.9))
    floor = max(MIN_CONTRAST, MIN_SNR * SMOOTH_NOISE * noise)
    if level < floor:
        found = f"the strongest marks differ from the background by {max(level, 0):.0f} of 255"
        need = (
            f"{floor:.0f}, {MIN_SNR:.0f} times this image's noise" if floor > MIN_CONTRAST else f"{floor:.0f}"
        )
        raise DataError(
            f"{name} looks blank: no ink stands out from the background ({found}; ink needs at least "
            f"{need}): photograph it closer or with more contrast"
        )
    mask = (smooth > max(FAINT * level, 4.0 * SMOOTH_NOISE * noise)) & (ink > 0)
    mask = _remove_rules(mask)
    mask = _drop_specks(mask, smooth)
    top = max(float(np.percentile(_sample(ink[mask]), 99)) if mask.any() else level, 1e-6)
    ink = np.where(mask, np.clip(ink / top, 0.0, 1.0), 0.0).astype(np.float32)
    if not ink.any():
        raise DataError(
            f"{name} looks blank: the only marks are ruled lines or specks, no digit: "
            "photograph the digit itself, closer"
        )
    return ink, bool(inverted)


def _sample(a: np.ndarray, most: int = SAMPLE) -> np.ndarray:
    """At most about ``most`` of ``a``'s values, evenly strided: enough for a percentile of an image."""
    flat = a.ravel()
    return flat[:: max(1, flat.size // most)]


def _ink_is_dark(grey: np.ndarray) -> bool:
    """Whether the ink is darker than the paper, from ``grey`` ``(h, w)`` 0-255.

    Split at the middle grey level, the paper is the side most of the border
    lies on. On a page, the light's unevenness is taken out first (a median
    over ``POLARITY_WINDOW`` of the side follows a shadow's edge and takes ink
    for paper only where ink covers most of the window). A tight crop (the
    darkest or the lightest quarter of the range touching all four edges)
    is split as it is; if most of its border is ink, the ink is the side in
    fewer connected parts (the paper falls into corners and holes, the ink
    holds together), and if that ties, the side with fewer pixels.
    """
    h, w = grey.shape
    lo, hi = np.percentile(_sample(grey), (1, 99))
    quarter = (hi - lo) / 4
    tight = any(_touches_edges(side) for side in (grey < lo + quarter, grey > hi - quarter))
    f = max(1, -(-max(h, w) // FIELD_SIDE))
    if not tight and min(h, w) >= 3 * f:
        hs, ws = h // f, w // f
        small = grey[: hs * f, : ws * f].reshape(hs, f, ws, f).mean(axis=(1, 3))
        light = ndimage.median_filter(
            small, size=max(3, round(POLARITY_WINDOW * max(hs, ws))), mode="nearest"
        )
        grey = grey - _enlarge(light, (h, w))
        lo, hi = np.percentile(_sample(grey), (1, 99))
    dark = grey < (lo + hi) / 2
    ring = max(1, round(0.03 * min(h, w)))
    border = np.concatenate(
        [dark[:ring].ravel(), dark[-ring:].ravel(), dark[:, :ring].ravel(), dark[:, -ring:].ravel()]
    )
    on_dark = float(border.mean())
    if on_dark <= 1 - CLEAR_BORDER or on_dark >= CLEAR_BORDER:
        return on_dark < 0.5
    least = 0.01 * dark.size
    parts = []
    for side in (dark, ~dark):
        labels, n = ndimage.label(side, structure=EIGHT)
        parts.append(int((np.bincount(labels.ravel(), minlength=n + 1)[1:] >= least).sum()))
    if parts[0] != parts[1]:
        return parts[0] < parts[1]
    return bool(dark.mean() < 0.5)


def _touches_edges(mask: np.ndarray) -> bool:
    """Whether ``mask`` ``(h, w)`` has a pixel within two of each of the four edges."""
    return bool(mask[:2].any() and mask[-2:].any() and mask[:, :2].any() and mask[:, -2:].any())


def _background_field(ink: np.ndarray) -> np.ndarray:
    """A smooth estimate of the background level under ``ink`` (light ink on dark), shape ``ink.shape``.

    A grey opening (the largest of the local minima) of the image shrunk to
    at most ``FIELD_SIDE`` pixels a side by block means, with a window of
    ``FIELD_WINDOW`` of its longer side, smoothed and enlarged back. Ink
    narrower than the window is not background; the local minima lie a
    little under the paper's mean, which the noise of the shrunk image says
    how far.
    """
    h, w = ink.shape
    f = max(1, -(-max(h, w) // FIELD_SIDE))
    hs, ws = h // f, w // f
    if min(hs, ws) < 3:
        return np.full_like(ink, float(np.percentile(ink, 10)))
    small = ink[: hs * f, : ws * f].reshape(hs, f, ws, f).mean(axis=(1, 3))
    window = max(3, round(FIELD_WINDOW * max(hs, ws)))
    # Beyond the edges, light keeps changing as it did (the odd reflection) unless that would make
    # paper darker than the ink beside the edge (then the even one): an opening reaching out finds
    # neither a false minimum where the light falls off nor one mirrored from the ink.
    ext = np.maximum(
        np.pad(small, window, mode="reflect", reflect_type="odd"), np.pad(small, window, mode="reflect")
    )
    opened = ndimage.grey_opening(ext, size=(window, window))
    opened = ndimage.uniform_filter(opened, size=3)[window:-window, window:-window]
    # The opening follows the minima: lift it to the paper's middle, from the pixels close to it.
    lift = small - opened
    paper = lift[lift <= np.percentile(lift, 30)]
    opened += float(np.median(paper)) if paper.size else 0.0
    if f == 1 and (hs, ws) == (h, w):
        return opened.astype(np.float32)
    return _enlarge(opened, (h, w))


def _enlarge(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``small`` ``(hs, ws)`` enlarged to ``shape`` ``(h, w)`` by bilinear interpolation (float32)."""
    im = Image.fromarray(np.asarray(small, np.float32), "F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32)


def _noise(ink: np.ndarray) -> float:
    """The deviation of the pixel noise in ``ink`` ``(h, w)``: the median absolute difference of
    horizontal neighbours over 0.954 (its value for Gaussian noise), robust to how much is ink."""
    if ink.shape[1] < 2:
        return 0.0
    return float(np.median(_sample(np.abs(np.diff(ink[::2], axis=1))))) / 0.954


def _remove_rules(mask: np.ndarray) -> np.ndarray:
    """``mask`` ``(h, w)`` bool without the lines of ruled or squared paper, mending the ink they crossed.

    A rule is a thin straight run of ink across at least ``RULE_SPAN`` of the
    frame, found by a binary opening with a line that long (:func:`_long_runs`); rules are
    removed only where there are at least two parallel ones (a 7's bar or a
    1's stem is a single line), and thin ones (a marker's stroke is thicker).
    Where a digit's stroke crossed a rule, a closing across the gap puts it back.
    """
    h, w = mask.shape
    out = mask
    for axis, length, across in ((1, w, h), (0, h, w)):
        span = round(RULE_SPAN * length) | 1
        if length < 16 or (mask.sum(axis=axis) >= span).sum() < 2:  # no two rows (columns) could hold one
            continue
        lines = _long_runs(mask, span, axis)
        if not lines.any():
            continue
        rows = lines.any(axis=axis)
        runs, n = ndimage.label(rows)
        thin = max(2, round(RULE_THICKNESS * across))
        sizes = np.bincount(runs, minlength=n + 1)[1:]
        keep = np.flatnonzero(sizes <= thin) + 1
        if len(keep) < 2:
            continue
        rule_rows = np.isin(runs, keep)
        rules = lines & (rule_rows[None, :] if axis == 0 else rule_rows[:, None])
        gap = int(sizes[keep - 1].max()) + 2
        bridge = np.ones((gap, 1) if axis == 1 else (1, gap), bool)
        rest = out & ~rules
        out = rest | (ndimage.binary_closing(rest, structure=bridge) & rules)
    return out


def _long_runs(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
    """The binary opening of ``mask`` by a line of odd ``length`` along ``axis``: the pixels in runs at
    least that long. Two running means (``uniform_filter1d``) take the same time whatever the length."""
    inside = ndimage.uniform_filter1d(mask.astype(np.float32), length, axis=axis, mode="constant")
    full = (inside > 1 - 0.5 / length).astype(np.float32)  # the whole line fits around this pixel
    return ndimage.uniform_filter1d(full, length, axis=axis, mode="constant") > 0.5 / length


def _drop_specks(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """``mask`` less its specks and smudges: 8-connected parts under ``SPECK`` of the largest part's
    area, or whose strongest ink ``ink`` ``(h, w)`` is under ``SMUDGE`` of the strongest part's."""
    labels, n = ndimage.label(mask, structure=EIGHT)
    if n <= 1:
        return mask
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = np.asarray(ndimage.maximum(ink, labels, index=np.arange(1, n + 1)))
    keep = np.zeros(n + 1, bool)
    keep[1:] = (areas >= SPECK * areas.max()) & (peaks >= SMUDGE * peaks.max())
    return keep[labels]


def to_mnist(grey: np.ndarray, *, name: str = "the image") -> Prepared:
    """Grey ``(h, w)`` image, 0-255 -> :class:`Prepared` with the ``(28, 28)`` uint8 MNIST-style digit."""
    ink, inverted = to_ink(grey, name=name)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pixels = centre(ink[top:bottom, left:right])
    return Prepared(
        pixels, np.asarray(grey, np.float32), inverted, (int(top), int(left), int(bottom), int(right))
    )


def centre(crop: np.ndarray) -> np.ndarray:
    """Ink cropped to its box, ``(h, w)`` float 0-1 (light on black) -> MNIST's ``(28, 28)`` uint8 frame.

    The longer side becomes 20 pixels, aspect ratio kept; the centre of mass
    lands on (14, 14), rounded to whole pixels as MNIST did, in one
    anti-aliased resampling; the brightest pixel becomes 255.
    """
    scale = BOX / max(crop.shape)  # output pixels per input pixel
    # Centre of mass in continuous coordinates (pixel i spans [i, i + 1)).
    cy, cx = (float(c) + 0.5 for c in ndimage.center_of_mass(crop))
    span = FRAME / scale  # the frame's side in input pixels
    # Where the box's top-left corner lands in the frame: the centre of mass at the frame's centre,
    # rounded to whole pixels as MNIST did, so the box's edges stay sharp.
    left_out, top_out = round(CENTRE + 0.5 - cx * scale), round(CENTRE + 0.5 - cy * scale)
    # The part of the input that becomes the frame, padded with black where it leaves the crop.
    x0, y0 = -left_out / scale, -top_out / scale
    before_y, before_x = max(0, int(np.ceil(-y0)) + 1), max(0, int(np.ceil(-x0)) + 1)
    after_y = max(0, int(np.ceil(y0 + span - crop.shape[0])) + 1)
    after_x = max(0, int(np.ceil(x0 + span - crop.shape[1])) + 1)
    padded = np.pad(np.asarray(crop, np.float32), ((before_y, after_y), (before_x, after_x)))
    box = (x0 + before_x, y0 + before_y, x0 + before_x + span, y0 + before_y + span)
    # Shrinking averages the input pixels each output pixel covers (anti-aliasing); enlarging interpolates.
    smooth = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    out = Image.fromarray(padded, "F").resize((FRAME, FRAME), smooth, box=box)
    out = np.clip(np.asarray(out, dtype=np.float32), 0, None)
    out *= 255.0 / max(float(out.max()), 1e-6)
    return np.round(out).astype(np.uint8)


@dataclass
class Digit:
    """One digit of a number: ``pixels`` the ``(28, 28)`` uint8 image the network sees, ``box`` its
    ink's ``(top, left, bottom, right)`` in the working image's coordinates (bottom, right exclusive)."""

    pixels: np.ndarray
    box: tuple


@dataclass
class PreparedNumber:
    """One image after :func:`prepare_number`: its digits, left to right.

    ``grey`` is the ``(h, w)`` float32 input at working size (0-255, for
    previews); ``inverted`` says the ink was darker than the background;
    ``scale`` is the input's pixels per working pixel (boxes times ``scale``
    are in the input's own pixels); ``notes`` as in :class:`Prepared`.
    """

    digits: list
    grey: np.ndarray
    inverted: bool
    scale: float = 1.0
    notes: list = field(default_factory=list)

    def boxes(self) -> list[dict]:
        """Each digit's box in the input's own pixels: ``{"x", "y", "width", "height"}``, left to right."""
        k = self.scale
        return [
            {
                "x": round(left * k),
                "y": round(top * k),
                "width": max(1, round((right - left) * k)),
                "height": max(1, round((bottom - top) * k)),
            }
            for top, left, bottom, right in (d.box for d in self.digits)
        ]


def prepare_number(
    source, *, max_side: int | None = None, name: str | None = None, reader=None
) -> PreparedNumber:
    """Read an image file holding a number (path, bytes or binary file object) and find its digits.

    The image is read at up to ``NUMBER_SIDE`` pixels a side (each digit of a
    long number keeps enough pixels), its ink found by :func:`to_ink` and cut
    into digits by :func:`segment`, each brought to MNIST's form by :func:`centre`.
    Raises :class:`~digitnet.errors.DataError` as :func:`prepare` does.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "the image")
    notes: list = []
    size: list = []
    grey = load_image(source, max_side=max_side, name=name, work_side=NUMBER_SIDE, notes=notes, size=size)
    number = to_number(grey, name=name, reader=reader)
    number.scale = max(size) / max(grey.shape)
    number.notes = notes
    return number


def to_number(grey: np.ndarray, *, name: str = "the image", reader=None) -> PreparedNumber:
    """Grey ``(h, w)`` image, 0-255 -> :class:`PreparedNumber`: :func:`to_ink`, :func:`segment`, :func:`centre`.

    Raises :class:`~digitnet.errors.DataError` if there is no ink.
    """
    ink, inverted = to_ink(grey, name=name)
    digits = [Digit(centre(crop), box) for box, crop in segment(ink, reader, name=name)]
    return PreparedNumber(digits, np.asarray(grey, np.float32), inverted)


def segment(ink: np.ndarray, reader=None, *, name: str = "the image") -> list[tuple[tuple, np.ndarray]]:
    """Cut the ink of a number into its digits, left to right.

    ``ink`` is ``(h, w)`` float 0-1 as :func:`to_ink` gives. Returns
    ``[(box, crop)]``: each digit's ``(top, left, bottom, right)`` and its ink
    cropped to that box (only that digit's own ink, ``(bottom - top, right - left)``).

    Connected parts (``scipy.ndimage.label``) that overlap across most of the
    narrower one's width are one digit (a 5's flag, a broken 4, a 7's bar);
    what is under ``MARK_HEIGHT`` of the tallest digit's height is a dot, a
    dash or a speck and is left out; a part wider than ``SPLIT_ASPECT`` times
    its height is several touching digits, split where the ink's column sums
    are least near where the digits' widths say the joins are.

    ``reader``, if given, takes ``(n, 28, 28)`` uint8 digits and returns
    ``(n, 10)`` probabilities (a model's): such a wide part is then cut into
    the number of digits (one, if under ``WIDEST`` times its height, up to one
    more than the widths' guess) that the reader is surest of: the mean
    log-probability of its readings, less ``SPLIT_COST`` for each digit more
    or fewer than the widths suggest; every digit cut out must hold a fair
    share of the ink.
    """
    labels, n = ndimage.label(ink > 0, structure=EIGHT)
    if n == 0:
        return []
    slices = ndimage.find_objects(labels)
    # Each part's box and labels, left to right (ties in label order).
    parts = [([s[0].start, s[1].start, s[0].stop, s[1].stop], [k + 1]) for k, s in enumerate(slices)]
    parts.sort(key=lambda part: part[0][1])
    # Join the pieces of a digit: neighbours in that order whose columns overlap across much of the
    # narrower's width. A joined box keeps the left edge of the first, so the order stands and only
    # its pairs with its neighbours are new: each part is joined to those before it while they join,
    # then the next is looked at. Linear in the parts (a page of specks has thousands).
    joined = []
    for box, members in parts:
        while joined and _one_digit(joined[-1][0], box):
            (t, left, b, r), before = joined.pop()
            before += members
            box, members = [min(t, box[0]), left, max(b, box[2]), max(r, box[3])], before
        joined.append((box, members))
    parts = joined
    tallest = max(b - t for (t, _, b, _), _ in parts)
    groups = [(box, m) for box, m in parts if box[2] - box[0] >= MARK_HEIGHT * tallest]
    if len(groups) > MAX_DIGITS:
        raise DataError(
            f"{name} holds {len(groups)} separate marks of a digit's height: more than the {MAX_DIGITS} "
            "digits a number is read with (is it a number, written dark on light or light on dark?)"
        )
    heights = sorted(b - t for (t, _, b, _), _ in groups)
    typical = heights[len(heights) // 2]
    out = []
    for (top, left, bottom, right), m in sorted(groups, key=lambda g: g[0][1]):
        own = np.where(np.isin(labels[top:bottom, left:right], m), ink[top:bottom, left:right], 0.0)
        h, w = bottom - top, right - left
        expected = w / (DIGIT_ASPECT * max(h, typical))
        guess = max(1, round(expected))
        wide = w > SPLIT_ASPECT * h
        if reader is None or not wide:
            ks = [max(2, guess) if wide else 1]
        else:  # touching digits, or one wide digit: how many?
            ks = [
                k
                for k in range(1, min(guess + 1, MAX_DIGITS) + 1)
                if w / k >= NARROWEST * h and (k > 1 or w <= WIDEST * h)
            ]
        options = [pieces for pieces in (_split(own, top, left, k) for k in ks) if _fair(pieces, own)]
        options = options or [[((top, left, bottom, right), own)]]
        if len(options) > 1:
            scores = []
            for pieces in options:
                p = np.asarray(reader(np.stack([centre(crop) for _, crop in pieces])), np.float64)
                cost = SPLIT_COST * abs(len(pieces) - expected)
                scores.append(float(np.log(np.maximum(p.max(axis=1), 1e-9)).mean()) - cost)
            options = [options[int(np.argmax(scores))]]
        out += options[0]
        if len(out) > MAX_DIGITS:
            raise DataError(
                f"{name} holds more than {MAX_DIGITS} digits side by side, the most a number is read with"
            )
    return out


def _one_digit(first, second) -> bool:
    """Whether the parts of boxes ``first`` and ``second`` (``(top, left, bottom, right)``, ``first`` not
    right of ``second``) are pieces of one digit: their columns overlap across most of the narrower's
    width, or across some of it when one is much shorter than the other (a 5's flag, a 7's bar)."""
    (t1, l1, b1, r1), (t2, l2, b2, r2) = first, second
    overlap = min(r1, r2) - max(l1, l2)
    narrow = min(r1 - l1, r2 - l2)
    short = min(b1 - t1, b2 - t2) < PIECE_HEIGHT * max(b1 - t1, b2 - t2)
    return overlap >= (PIECE_OVERLAP if short else DIGIT_OVERLAP) * narrow


def _fair(pieces: list, own: np.ndarray) -> bool:
    """Whether each of ``pieces`` (from :func:`_split`) holds at least ``FAIR_SHARE`` of an equal share
    of the ink ``own`` (a digit cut from touching ones is a digit, not a stroke's end)."""
    total = float((own > 0).sum())
    return all((crop > 0).sum() >= FAIR_SHARE * total / len(pieces) for _, crop in pieces)


def _cuts(own: np.ndarray, k: int) -> list[int]:
    """Where :func:`_split` cuts ``own`` ``(h, w)`` into ``k``: ``[0, ..., w]``, the column of least ink
    (column sums smoothed over 3) within 35% of a digit's width of where equal widths would put each cut."""
    w = own.shape[1]
    columns = ndimage.uniform_filter1d(own.sum(axis=0), size=3)
    cuts = [0]
    for i in range(1, k):
        centre_x, reach = i * w / k, 0.35 * w / k
        lo, hi = max(cuts[-1] + 1, int(centre_x - reach)), min(w - 1, int(centre_x + reach) + 1)
        cuts.append(lo + int(np.argmin(columns[lo:hi])) if hi > lo else round(centre_x))
    return [*cuts, w]


def _split(own: np.ndarray, top: int, left: int, k: int) -> list[tuple[tuple, np.ndarray]]:
    """The ink ``own`` ``(h, w)`` of a part at ``(top, left)`` cut into ``k`` digits: ``[(box, crop)]``.

    The cuts are :func:`_cuts`'.
    """
    out = []
    for c0, c1 in itertools.pairwise(_cuts(own, k)):
        piece = own[:, c0:c1]
        rows = np.flatnonzero(piece.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(piece.any(axis=0))
        box = (top + rows[0], left + c0 + cols[0], top + rows[-1] + 1, left + c0 + cols[-1] + 1)
        out.append((tuple(int(v) for v in box), piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]))
    return out


def read_number(number: PreparedNumber, probabilities: np.ndarray, class_names) -> dict:
    """The JSON answer for a number: ``{"number", "digits": [{"box", "digit", "label", "probabilities",
    "pixels"}]}``, ``probabilities`` ``(n_digits, n_classes)`` being the model's for ``number.digits``.

    ``number`` is the digits read, left to right, as a string; each box is
    ``{"x", "y", "width", "height"}`` in the input's own pixels; ``pixels``
    the 784 values 0-255 of the 28 x 28 the network saw.
    """
    probabilities = np.asarray(probabilities, np.float64).reshape(len(number.digits), -1)
    read = [int(k) for k in probabilities.argmax(axis=1)] if len(number.digits) else []
    digits = [
        {
            "box": box,
            "digit": k,
            "label": class_names[k],
            "probabilities": [float(v) for v in p],
            "pixels": d.pixels.reshape(-1).astype(int).tolist(),
        }
        for d, box, k, p in zip(number.digits, number.boxes(), read, probabilities, strict=True)
    ]
    return {"number": "".join(str(k) for k in read), "digits": digits}


def number_preview(
    number: PreparedNumber, readings: list[str] | None = None, height: int = 280
) -> Image.Image:
    """An RGB picture of a number: the input with each digit's box (red) and reading, and below it the
    28 x 28 images the network saw, in order, each under its reading. ``readings`` is one string a digit."""
    readings = readings or ["?"] * len(number.digits)
    grey = Image.fromarray(np.clip(number.grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    k = height / grey.height
    top_part = grey.resize((max(1, round(grey.width * k)), height), Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=max(12, height // 10))
    draw = ImageDraw.Draw(top_part)
    for digit, text in zip(number.digits, readings, strict=True):
        t, left, b, r = (v * k for v in digit.box)
        draw.rectangle([left, t, r - 1, b - 1], outline=(220, 40, 40), width=2)
        draw.text((left + 2, max(0, t - height // 10 - 4)), text, fill=(220, 40, 40), font=font)
    side = 112
    gap = 8
    width = max(top_part.width, len(number.digits) * (side + gap) + gap)
    canvas = Image.new("RGB", (width, height + side + height // 10 + 3 * gap), (128, 128, 128))
    canvas.paste(top_part, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (digit, text) in enumerate(zip(number.digits, readings, strict=True)):
        x = gap + i * (side + gap)
        draw.text((x + side // 2 - 6, height + gap), text, fill=(255, 255, 255), font=font)
        seen = Image.fromarray(digit.pixels, "L").resize((side, side), Image.Resampling.NEAREST)
        canvas.paste(seen.convert("RGB"), (x, height + height // 10 + 2 * gap))
    return canvas


def side_by_side(prepared: Prepared, height: int = 280) -> Image.Image:
    """An RGB picture: the input (left, ink's box in red) beside the 28 x 28 the network saw (right).

    Both are ``height`` pixels tall; the 28 x 28 is enlarged without smoothing.
    """
    grey = Image.fromarray(np.clip(prepared.grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    k = height / grey.height
    left = grey.resize((max(1, round(grey.width * k)), height), Image.Resampling.BILINEAR)
    top, lft, bottom, right = prepared.bbox
    ImageDraw.Draw(left).rectangle([lft * k, top * k, right * k - 1, bottom * k - 1], outline=(220, 40, 40))
    seen = (
        Image.fromarray(prepared.pixels, "L")
        .resize((height, height), Image.Resampling.NEAREST)
        .convert("RGB")
    )
    gap = max(4, height // 28)
    canvas = Image.new("RGB", (left.width + gap + height, height), (128, 128, 128))
    canvas.paste(left, (0, 0))
    canvas.paste(seen, (left.width + gap, 0))
    return canvas


def thumbnail(prepared: Prepared, side: int = FRAME) -> np.ndarray:
    """The input as it looked, shrunk to fit a ``side`` x ``side`` frame and centred in it.

    Parameters
    ----------
    prepared : Prepared
    side : int, default 28

    Returns
    -------
    ndarray of int, shape (side, side)
        Grey levels 0-255 (box-filtered, aspect ratio kept), and -1 where the frame is outside the input.
    """
    grey = Image.fromarray(np.clip(prepared.grey, 0, 255).astype(np.uint8), "L")
    k = side / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * k)), max(1, round(grey.height * k))), Image.Resampling.BOX)
    out = np.full((side, side), -1, int)
    y, x = (side - grey.height) // 2, (side - grey.width) // 2
    out[y : y + grey.height, x : x + grey.width] = np.asarray(grey)
    return out


def from_mnist(pixels) -> Prepared:
    """An image already in MNIST's form (a test-set digit, say) as a :class:`Prepared`, unchanged.

    Parameters
    ----------
    pixels : array_like of uint8, shape (784,) or (28, 28)
        Light ink on black, 0-255.

    Returns
    -------
    Prepared
        ``pixels`` and ``grey`` are the image itself, ``(28, 28)`` (uint8 and float32); ``inverted``
        is False; ``bbox`` is the ink's box, or the whole frame ``(0, 0, 28, 28)`` when there is no ink.
    """
    pixels = np.asarray(pixels).reshape(FRAME, FRAME)
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    bbox = (
        (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
        if pixels.any()
        else (0, 0, FRAME, FRAME)
    )
    return Prepared(pixels, pixels.astype(np.float32), False, bbox)


def preview_folder(folder) -> Path:
    """Create ``folder`` (and its parents) for :func:`save_preview`, if need be; return it as a Path.

    Raises :class:`~digitnet.errors.DataError` if it cannot be created.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the preview folder {folder}: {exc.strerror or exc}") from None
    return folder


def save_preview(prepared, folder, name: str, readings: list[str] | None = None) -> Path:
    """Save :func:`side_by_side` of ``prepared`` as ``folder/<stem of name>.preview.png`` (atomically);
    of a :class:`PreparedNumber`, :func:`number_preview` with its ``readings`` (one string a digit).

    ``test[7]`` becomes ``test-7.preview.png``. A file of that name already there is kept: the
    new one is numbered, ``<stem>-2.preview.png``, ``-3`` ... (up to 999, then the last is replaced).

    Parameters
    ----------
    prepared : Prepared or PreparedNumber
    folder : str or Path
        An existing folder (see :func:`preview_folder`).
    name : str
        The input's name, e.g. its file path.
    readings : list of str, optional
        For a number: what each digit was read as, drawn by its box.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DataError
        If the file cannot be written.
    """
    folder = Path(folder)
    stem = Path(name).stem.replace("[", "-").replace("]", "") or "image"
    path, k = folder / f"{stem}.preview.png", 2
    while path.exists() and k < 1000:  # two inputs of the same name: number the later ones
        path, k = folder / f"{stem}-{k}.preview.png", k + 1
    picture = (
        number_preview(prepared, readings) if isinstance(prepared, PreparedNumber) else side_by_side(prepared)
    )
    try:
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
    except OSError as exc:
        raise DataError(f"cannot write the preview {path}: {exc.strerror or exc}") from None
    return path
