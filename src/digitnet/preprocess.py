"""Turn a photo, scan or drawing of one digit into a 28 x 28 image made the way MNIST's were.

MNIST's digits are light ink on a black background, their bounding box
scaled so that its longer side is 20 pixels (anti-aliased, aspect ratio
kept), placed in a 28 x 28 frame with their centre of mass in the middle
(at pixel (14, 14), counting from 0). A network trained on MNIST reads
other digits well only if they are brought to the same form. The steps:

1. :func:`load_image`: decode (PNG, JPEG, BMP, GIF's first frame, ...),
   turn the way the camera's EXIF tag says, make it grey (transparent
   pixels become the colour that contrasts with the ink) and shrink it so
   its longer side is at most ``WORK_SIDE`` pixels.
2. :func:`to_ink`: decide the polarity (is the ink darker or lighter than
   the background at the border?) and make the ink light on a dark
   background; subtract a smooth estimate of the background and, for
   paper, divide by its brightness (uneven light); drop what is fainter than ``FAINT`` of the ink's level or
   within the noise; scale so the ink's level is 1; drop specks far
   smaller than the digit (connected parts under ``SPECK`` of the largest).
3. :func:`to_mnist`: crop to the ink's bounding box, scale its longer side
   to 20 pixels and place it in the 28 x 28 frame so that its centre of
   mass falls on (14, 14), rounded to whole pixels as MNIST did, in one
   anti-aliased resampling; scale so the brightest pixel is 255.

Given an MNIST digit, the steps give it back within a grey level
on average: they are MNIST's own.

:func:`prepare` runs all three; it is what ``digitnet predict IMAGE`` and
the web page use. :func:`from_mnist` takes a digit already in MNIST's form
as it is; :func:`save_preview` saves the input beside what the network saw.
Everything is NumPy plus Pillow.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from digitnet.data.formats import atomic_path
from digitnet.errors import DataError

FRAME = 28  # MNIST's image side
BOX = 20  # the longer side of the digit's bounding box in the frame
CENTRE = 14.0  # where the centre of mass goes, in pixel indices (MNIST's mean is 14.0, 14.0)
WORK_SIDE = 320  # images are shrunk to at most this side before the steps (plenty for 20 pixels)
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (memory stays bounded)
FAINT = 0.1  # ink fainter than this fraction of the ink's level is background
SPECK = 0.03  # connected parts smaller than this fraction of the largest are noise
MIN_CONTRAST = 24  # ink must differ from the background by this much (of 255) ...
MIN_SNR = 6.0  # ... and by this many times the background's noise

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
    grey = load_image(source, max_side=max_side, name=name)
    return to_mnist(grey, name=name)


def load_image(
    source, *, max_side: int | None = None, name: str = "the image", work_side: int = WORK_SIDE
) -> np.ndarray:
    """Decode an image to grey, upright, at most ``work_side`` pixels a side.

    Returns a float32 array of shape ``(h, w)`` with values 0-255.
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
                    raise DataError(
                        f"{name} is {w}x{h} pixels; images up to {max_side} pixels a side are read"
                    )
                if w * h > MAX_PIXELS:
                    raise DataError(
                        f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); images up to "
                        f"{MAX_PIXELS // 1_000_000} megapixels are read: scale it down first"
                    )
                turn = _EXIF_TURNS.get(im.getexif().get(0x0112))
                im.draft(
                    "RGB" if im.mode not in ("L", "1") else "L", (work_side, work_side)
                )  # JPEG: decode small
                factor = max(im.size) // (2 * work_side)
                if factor > 1 and im.mode in ("1", "L", "LA", "RGB", "RGBA", "I", "F"):
                    im = im.reduce(factor)  # cheap first shrink of huge images
                grey = _grey(im)
    except DataError:
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
        raise DataError(
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
    """Light ink on a black background, 0-1, with the background and noise removed.

    ``grey`` is ``(h, w)`` with values 0-255. Returns ``(ink, inverted)``,
    ``ink`` of the same shape (float32, 0 where there is no ink) and
    ``inverted`` True when the ink was darker than the background.
    Raises :class:`~digitnet.errors.DataError` if there is no ink.
    """
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise DataError(f"{name}: expected a 2-D grey image, got shape {grey.shape}")
    h, w = grey.shape
    ring = max(1, round(0.03 * min(h, w)))
    border = np.concatenate(
        [grey[:ring].ravel(), grey[-ring:].ravel(), grey[:, :ring].ravel(), grey[:, -ring:].ravel()]
    )
    background = _percentiles(border, (50,))[0]
    darkest, lightest = _percentiles(grey, (0.1, 99.9))
    inverted = background - darkest > lightest - background
    ink = 255.0 - grey if inverted else grey.copy()
    field = _background_field(ink)
    ink -= field
    # The noise, from the lower quantiles of what is left (background, unless most of the image is ink):
    # for Gaussian noise of deviation s, the 25th percentile lies 0.97 s above the 5th.
    p5, p25 = _percentiles(ink[::2, ::2], (5, 25))  # every fourth pixel is plenty for the bulk
    noise = max(0.0, p25 - p5) / 0.97
    # Paper reflects the light that falls on it: where the paper is dimmer, so is the ink's contrast.
    # Dividing by the paper's brightness (255 - field) undoes the uneven light; it scales the noise too.
    gain = 255.0 / np.maximum(255.0 - field, 16.0) if inverted else np.ones(1, np.float32)
    ink *= gain
    level = _percentiles(ink, (99.9,))[0]
    if level < MIN_CONTRAST or level < MIN_SNR * noise * float(gain.mean()):
        raise DataError(
            f"{name} looks blank: no digit stands out from the background "
            f"(contrast {max(level, 0):.0f} of 255)"
        )
    cut = np.maximum(FAINT * level, 4.0 * noise * gain)
    ink = np.where(ink > cut, np.minimum(ink / level, 1.0), 0.0)
    ink *= _keep_mask(ink > 0)
    if not ink.any():
        raise DataError(f"{name} looks blank: no digit stands out from the background")
    return ink.astype(np.float32), bool(inverted)


def _percentiles(a: np.ndarray, qs) -> list[float]:
    """The ``qs`` percentiles of ``a`` (any shape), each the nearest value (no interpolation).

    A high percentile is looked for among the values above the mean, a low
    one among those below: a fraction of the image, so much faster.
    """
    flat = a.ravel()
    n = flat.size
    mean = flat.mean()
    out = []
    for q in qs:
        k = min(n - 1, max(0, int(round(q / 100 * (n - 1)))))
        part = flat[flat >= mean] if q >= 50 else flat[flat <= mean]
        j = k - (n - part.size) if q >= 50 else k  # k's place among those values, sorted
        if not 0 <= j < part.size:
            part, j = flat, k
        out.append(float(np.partition(part, j)[j]))
    return out


def _background_field(ink: np.ndarray, grid: int = 8) -> np.ndarray:
    """A smooth estimate of the background level under ``ink`` (light ink on dark), shape ``ink.shape``.

    The 20th percentile of each cell of a ``grid`` x ``grid`` split (the
    background, unless a cell is mostly ink) fitted by a quadratic surface
    in x and y (light falling off across a page or towards its corners);
    cells far above the first fit (ink) are left out of the second. Small
    images get one level.
    """
    h, w = ink.shape
    if min(h, w) < 64:
        return np.full_like(ink, np.percentile(ink, 20))
    th, tw = h // grid, w // grid
    tiles = ink[: th * grid, : tw * grid].reshape(grid, th, grid, tw)[
        :, ::2, :, ::2
    ]  # a quarter of each cell
    tiles = tiles.transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    k = tiles.shape[1] // 5
    cells = np.partition(tiles, k, axis=1)[:, k].astype(np.float64)  # each cell's 20th percentile
    centres = (np.arange(grid) + 0.5) / grid * 2 - 1  # cell centres in [-1, 1]
    cy, cx = np.repeat(centres, grid), np.tile(centres, grid)
    design = np.stack([np.ones_like(cx), cx, cy, cx * cx, cx * cy, cy * cy], axis=1)
    keep = np.ones(len(cells), bool)
    for _ in range(2):
        coef = np.linalg.lstsq(design[keep], cells[keep], rcond=None)[0]
        resid = cells - design @ coef
        spread = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep])))
        keep = resid <= np.median(resid[keep]) + 3 * spread + 1.0
    x = ((np.arange(w) + 0.5) / w * 2 - 1)[None, :].astype(np.float32)
    y = ((np.arange(h) + 0.5) / h * 2 - 1)[:, None].astype(np.float32)
    c = coef.astype(np.float32)
    return (c[0] + c[1] * x + c[3] * x * x) + (c[2] * y + c[5] * y * y) + y * (c[4] * x)


def _keep_mask(mask: np.ndarray, side: int = 64) -> np.ndarray:
    """``mask`` less its small specks: connected parts under ``SPECK`` of the largest part's area.

    Parts are found on a copy shrunk to at most ``side`` pixels (a pixel is
    set if any pixel it covers is), by spreading labels to 8-neighbours.
    """
    h, w = mask.shape
    f = max(1, -(-max(h, w) // side))
    hp, wp = -(-h // f) * f, -(-w // f) * f
    small = np.zeros((hp, wp), bool)
    small[:h, :w] = mask
    small = small.reshape(hp // f, f, wp).any(axis=1).reshape(hp // f, wp // f, f).any(axis=2)
    labels = np.where(small, np.arange(1, small.size + 1).reshape(small.shape), 0)
    while True:
        spread = labels.copy()  # the largest label among the 8 neighbours and itself
        np.maximum(spread[1:], labels[:-1], out=spread[1:])
        np.maximum(spread[:-1], labels[1:], out=spread[:-1])
        rows = spread.copy()
        np.maximum(spread[:, 1:], rows[:, :-1], out=spread[:, 1:])
        np.maximum(spread[:, :-1], rows[:, 1:], out=spread[:, :-1])
        spread *= small
        spread = spread.ravel()[np.maximum(spread - 1, 0)] * small  # jump: take the label's own label
        if np.array_equal(spread, labels):
            break
        labels = spread
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    if len(ids) <= 1:
        return mask
    # Area in the full image counts, not in the shrunk one: weigh each shrunk pixel by the ink it covers.
    full = np.repeat(np.repeat(labels, f, axis=0), f, axis=1)[:h, :w]
    areas = np.bincount(full[mask], minlength=labels.max() + 1)[ids]
    keep = ids[areas >= SPECK * areas.max()]
    return mask & np.isin(full, keep)


def to_mnist(grey: np.ndarray, *, name: str = "the image") -> Prepared:
    """Grey ``(h, w)`` image, 0-255 -> :class:`Prepared` with the ``(28, 28)`` uint8 MNIST-style digit."""
    ink, inverted = to_ink(grey, name=name)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = ink[top:bottom, left:right]
    scale = BOX / max(crop.shape)  # output pixels per input pixel
    mass = crop.sum()
    # Centre of mass in continuous coordinates (pixel i spans [i, i + 1)).
    cy = float((crop.sum(axis=1) * (np.arange(crop.shape[0]) + 0.5)).sum() / mass)
    cx = float((crop.sum(axis=0) * (np.arange(crop.shape[1]) + 0.5)).sum() / mass)
    span = FRAME / scale  # the frame's side in input pixels
    # Where the box's top-left corner lands in the frame: the centre of mass at the frame's centre,
    # rounded to whole pixels as MNIST did, so the box's edges stay sharp.
    left_out, top_out = round(CENTRE + 0.5 - cx * scale), round(CENTRE + 0.5 - cy * scale)
    # The part of the input that becomes the frame, padded with black where it leaves the crop.
    x0, y0 = -left_out / scale, -top_out / scale
    before_y, before_x = max(0, int(np.ceil(-y0)) + 1), max(0, int(np.ceil(-x0)) + 1)
    after_y = max(0, int(np.ceil(y0 + span - crop.shape[0])) + 1)
    after_x = max(0, int(np.ceil(x0 + span - crop.shape[1])) + 1)
    padded = np.pad(crop, ((before_y, after_y), (before_x, after_x)))
    box = (x0 + before_x, y0 + before_y, x0 + before_x + span, y0 + before_y + span)
    # Shrinking averages the input pixels each output pixel covers (anti-aliasing); enlarging interpolates.
    smooth = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    out = Image.fromarray(padded, "F").resize((FRAME, FRAME), smooth, box=box)
    out = np.clip(np.asarray(out, dtype=np.float32), 0, None)
    out *= 255.0 / max(float(out.max()), 1e-6)
    pixels = np.round(out).astype(np.uint8)
    return Prepared(
        pixels, np.asarray(grey, np.float32), inverted, (int(top), int(left), int(bottom), int(right))
    )


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


def save_preview(prepared: Prepared, folder, name: str) -> Path:
    """Save :func:`side_by_side` of ``prepared`` as ``folder/<stem of name>.preview.png`` (atomically).

    ``test[7]`` becomes ``test-7.preview.png``. A file of that name already there is kept: the
    new one is numbered, ``<stem>-2.preview.png``, ``-3`` ... (up to 999, then the last is replaced).

    Parameters
    ----------
    prepared : Prepared
    folder : str or Path
        An existing folder (see :func:`preview_folder`).
    name : str
        The input's name, e.g. its file path.

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
    try:
        with atomic_path(path) as tmp:
            side_by_side(prepared).save(tmp, format="PNG")
    except OSError as exc:
        raise DataError(f"cannot write the preview {path}: {exc.strerror or exc}") from None
    return path
