"""Digits not from MNIST, made on the spot (typeset in several fonts and drawn as pen strokes),
and one network trained on real MNIST to read them, shared by the tests of a session.

Each image is a PIL image of some size and aspect ratio, dark ink on light
paper or light on dark, with the digit at some size and position, slanted
and stretched a little. ``photo=True`` adds what a phone photo of paper
has: tinted paper, uneven light, sensor noise and JPEG compression. The
fonts come from Debian packages (scripts/system-packages.sh); a font that is
missing is left out.

:func:`trained_model` trains preset adam-128-64 for 3 epochs on all of MNIST's
training set (about 97% on its test set) once a session and saves it.
"""

from __future__ import annotations

import atexit
import dataclasses
import io
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = [Path("/usr/share/fonts")]
# Fonts whose digits are written the way people write them (no slashed or dotted zero).
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSans-Oblique.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSerif-Bold.ttf",
    "FreeSans.ttf",
    "FreeSerifItalic.ttf",
    "ComicNeue-Regular.otf",
    "ComicNeue-Bold.otf",
    "Humor-Sans.ttf",
]

# Pen strokes for each digit on a 0-1 square (x right, y down), the way a hand writes them.
STROKES = {
    0: [[(0.5 + 0.32 * math.sin(t), 0.5 - 0.45 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 30)]],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[(0.2, 0.25), (0.35, 0.08), (0.6, 0.05), (0.78, 0.2), (0.75, 0.42), (0.2, 0.93), (0.85, 0.93)]],
    3: [
        [
            (0.2, 0.12),
            (0.5, 0.03),
            (0.78, 0.18),
            (0.7, 0.4),
            (0.42, 0.48),
            (0.75, 0.58),
            (0.8, 0.82),
            (0.5, 0.97),
            (0.2, 0.88),
        ]
    ],
    4: [[(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.3), (0.62, 0.97)]],
    5: [
        [
            (0.8, 0.05),
            (0.3, 0.05),
            (0.25, 0.45),
            (0.55, 0.4),
            (0.8, 0.55),
            (0.78, 0.82),
            (0.5, 0.97),
            (0.2, 0.88),
        ]
    ],
    6: [
        [
            (0.72, 0.05),
            (0.4, 0.3),
            (0.22, 0.65),
            (0.3, 0.92),
            (0.55, 0.97),
            (0.75, 0.8),
            (0.7, 0.6),
            (0.45, 0.55),
            (0.25, 0.68),
        ]
    ],
    7: [[(0.15, 0.07), (0.85, 0.07), (0.4, 0.97)]],
    8: [
        [(0.5 + 0.22 * math.sin(t), 0.27 - 0.22 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 20)],
        [
            (0.5 + 0.28 * math.sin(t), 0.72 - 0.25 * math.cos(t))
            for t in np.linspace(math.pi, 3 * math.pi, 20)
        ],
    ],
    9: [
        [
            (0.75, 0.3),
            (0.6, 0.08),
            (0.35, 0.08),
            (0.25, 0.3),
            (0.4, 0.48),
            (0.72, 0.38),
            (0.75, 0.3),
            (0.7, 0.97),
        ]
    ],
}


def font_paths() -> list[Path]:
    """The paths of the :data:`FONTS` that are on this machine."""
    found = {p.name: p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix in (".ttf", ".otf")}
    return [found[name] for name in FONTS if name in found]


def glyph(digit: int, font_path: Path, size: int = 160) -> Image.Image:
    """The digit typeset white on black, cropped to its ink (mode ``"L"``)."""
    font = ImageFont.truetype(str(font_path), size)
    im = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(im).text((size // 2, size // 4), str(digit), fill=255, font=font)
    return im.crop(im.getbbox())


def stroked(digit: int, rng: np.random.Generator, size: int = 200) -> Image.Image:
    """The digit as pen strokes with a wobbling hand, white on black, cropped to its ink."""
    im = Image.new("L", (size + 80, size + 80), 0)
    draw = ImageDraw.Draw(im)
    width = int(rng.integers(size // 14, size // 8))
    for stroke in STROKES[digit]:
        pts = [
            (40 + size * (x + rng.normal(0, 0.015)), 40 + size * (y + rng.normal(0, 0.015)))
            for x, y in stroke
        ]
        draw.line(pts, fill=255, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    return im.crop(im.getbbox())


def distort(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate a few degrees, shear, stretch one axis, and thicken or thin the strokes a little."""
    w, h = ink.size
    sx = rng.uniform(0.8, 1.2)
    shear = rng.uniform(-0.2, 0.2)
    ink = ink.resize((max(1, int(w * sx)), h), Image.Resampling.BICUBIC)
    w = ink.size[0]
    pad = Image.new("L", (w + h, h + h), 0)
    pad.paste(ink, (h // 2, h // 2))
    pad = pad.transform(
        pad.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * pad.size[1] / 2, 0, 1, 0),
        Image.Resampling.BICUBIC,
    )
    pad = pad.rotate(rng.uniform(-10, 10), Image.Resampling.BICUBIC)
    k = int(rng.choice([0, 0, 3]))
    if k:
        pad = pad.filter(ImageFilter.MaxFilter(k))
    return pad.crop(pad.getbbox())


def place(
    ink: Image.Image, rng: np.random.Generator, dark_on_light: bool, photo: bool = False
) -> Image.Image:
    """Put the ink on a page of random size and aspect, at a random size and position."""
    side = int(rng.integers(40, 900))
    aspect = rng.uniform(0.5, 2.0)
    W, H = max(24, int(side * math.sqrt(aspect))), max(24, int(side / math.sqrt(aspect)))
    height = rng.uniform(0.3, 0.85) * min(W, H / 1.0)
    k = height / ink.size[1]
    glyph_w, glyph_h = max(1, int(ink.size[0] * k)), max(1, int(ink.size[1] * k))
    if glyph_w > 0.9 * W:  # wide digit on a narrow page
        k *= 0.9 * W / glyph_w
        glyph_w, glyph_h = max(1, int(ink.size[0] * k)), max(1, int(ink.size[1] * k))
    ink = ink.resize((glyph_w, glyph_h), Image.Resampling.LANCZOS)
    x = int(rng.integers(0, max(1, W - glyph_w)))
    y = int(rng.integers(0, max(1, H - glyph_h)))
    alpha = Image.new("L", (W, H), 0)
    alpha.paste(ink, (x, y))
    a = np.asarray(alpha, np.float32) / 255
    if not photo:
        paper, pen = (255.0, 0.0) if dark_on_light else (0.0, 255.0)
        return Image.fromarray(np.round(paper + (pen - paper) * a).astype(np.uint8), "L")
    # A photo: tinted paper lit unevenly, coloured ink, noise, JPEG.
    yy, xx = np.mgrid[0:H, 0:W] / max(W, H)
    light = 1.0 - rng.uniform(0.1, 0.35) * (
        np.cos(rng.uniform(0, 6.3)) * xx + np.sin(rng.uniform(0, 6.3)) * yy + 0.5
    )
    paper = np.array(
        rng.uniform([190, 180, 160], [245, 240, 230]) if dark_on_light else rng.uniform(10, 60, 3)
    )
    pen = np.array(rng.uniform([10, 10, 40], [70, 70, 140]) if dark_on_light else rng.uniform(200, 255, 3))
    rgb = (paper + (pen - paper) * a[..., None]) * light[..., None] + rng.normal(0, 6, (H, W, 1))
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(60, 90)))
    return Image.open(io.BytesIO(buf.getvalue()))


def digit_set(per_digit: int = 12, seed: int = 0, photo_every: int = 8) -> list[tuple[int, str, Image.Image]]:
    """``per_digit`` images of each digit 0-9: ``(label, description, image)``.

    They cycle through the fonts and the pen strokes, alternate dark-on-light
    and light-on-dark, and two of every ``photo_every`` are photos, one of
    each polarity (0: none).
    """
    rng = np.random.default_rng(seed)
    fonts = font_paths()
    sources = [("font", f) for f in fonts] + [("pen", None)] * max(2, len(fonts) // 3)
    out = []
    for digit in range(10):
        for i in range(per_digit):
            kind, font = sources[(i + 3 * digit) % len(sources)]
            ink = glyph(digit, font) if kind == "font" else stroked(digit, rng)
            dark = i % 2 == 0
            photo = photo_every and i % photo_every in (photo_every // 2 - 1, photo_every - 2)
            image = place(distort(ink, rng), rng, dark, photo=bool(photo))
            what = (
                f"{font.stem if font else 'pen'}, {'dark on light' if dark else 'light on dark'}"
                + (", photo" if photo else "")
                + f", {image.size[0]}x{image.size[1]}"
            )
            out.append((digit, what, image))
    return out


_MODEL: list[Path] = []


def trained_model(mnist) -> Path:
    """The path of a model file trained on ``mnist`` (the conftest fixture), made once a session."""
    from digitnet import modelfile
    from digitnet.presets import preset
    from digitnet.training import train

    if not _MODEL:
        result = train(preset("adam-128-64", epochs=3, batch_size=128, lr=2e-3), mnist)
        folder = Path(tempfile.mkdtemp(prefix="digitnet-test-model-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _MODEL.append(
            modelfile.save(
                folder / "model.npz",
                result.model,
                result.normalizer,
                mnist.class_names,
                dataset="mnist",
                config=dataclasses.asdict(result.config),
                metrics=result.metrics,
            )
        )
    return _MODEL[0]


# ---------------------------------------------------------------- the corpus of digits as people write them
# Each group takes the same digits (fonts and pen strokes, slanted and stretched by distort) and shows
# them one way. Images are PIL images; what a group does is said in CORPUS_GROUPS.


def ink_of(digit: int, k: int, rng: np.random.Generator) -> Image.Image:
    """The ``k``-th way of writing ``digit``: a font or a pen (cycling), distorted; white on black."""
    fonts = font_paths()
    sources = [("font", f) for f in fonts] + [("pen", None)] * max(2, len(fonts) // 3)
    kind, font = sources[k % len(sources)]
    return distort(glyph(digit, font) if kind == "font" else stroked(digit, rng), rng)


def compose(alpha: np.ndarray, paper, pen) -> Image.Image:
    """Ink coverage ``alpha`` ``(h, w)`` 0-1 as ``pen`` on ``paper`` (grey levels or RGB triples)."""
    paper, pen = np.asarray(paper, np.float32), np.asarray(pen, np.float32)
    a = alpha[..., None] if paper.ndim else alpha
    out = paper + (pen - paper) * a
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB" if paper.ndim else "L")


def on_paper(ink: Image.Image, rng: np.random.Generator, height=None, size=None) -> np.ndarray:
    """``ink`` scaled to ``height`` pixels at a random place on a page of ``size``: its coverage 0-1."""
    W, H = size or (int(rng.integers(120, 500)), int(rng.integers(120, 500)))
    height = height or int(rng.uniform(0.4, 0.8) * min(W, H))
    k = height / ink.size[1]
    w = min(max(1, round(ink.size[0] * k)), W - 2)
    ink = ink.resize((w, height), Image.Resampling.LANCZOS)
    page = Image.new("L", (W, H), 0)
    page.paste(ink, (int(rng.integers(0, max(1, W - w))), int(rng.integers(0, max(1, H - height)))))
    return np.asarray(page, np.float32) / 255


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB" if im.mode == "RGB" else "L").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def polarity(alpha, dark: bool, paper=235.0, pen=25.0) -> Image.Image:
    return compose(alpha, paper, pen) if dark else compose(alpha, 255 - paper, 255 - pen)


def ruled(alpha: np.ndarray, rng: np.random.Generator, squared: bool) -> np.ndarray:
    """Lines of ruled (or squared) paper under the ink: a coverage ``(h, w)`` of the lines, 0-1."""
    h, w = alpha.shape
    step = int(rng.integers(max(8, h // 8), max(9, h // 4)))
    lines = np.zeros_like(alpha)
    width = int(rng.integers(1, 3))
    for y in range(int(rng.integers(0, step)), h, step):
        lines[y : y + width] = 1
    if squared:
        for x in range(int(rng.integers(0, step)), w, step):
            lines[:, x : x + width] = 1
    return lines


def perspective(im: Image.Image, rng: np.random.Generator, fill) -> Image.Image:
    """``im`` seen from an angle: its corners moved by up to 12% of its size."""
    w, h = im.size
    d = rng.uniform(-0.12, 0.12, 8) * np.tile([w, h], 4)
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(x + d[2 * i], y + d[2 * i + 1]) for i, (x, y) in enumerate(src)]
    # Solve for the 8 coefficients mapping output (dst) to input (src), as PIL's PERSPECTIVE wants.
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    coef = np.linalg.solve(np.array(rows, float), np.array(rhs, float))
    return im.transform(
        im.size, Image.Transform.PERSPECTIVE, tuple(coef), Image.Resampling.BICUBIC, fillcolor=fill
    )


def shade(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A hand's or a phone's shadow: a soft-edged band at half the light across part of the page."""
    a = np.asarray(im, np.float32)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, np.pi)
    edge = (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)) / max(h, w)
    light = 1.0 - 0.5 / (1 + np.exp(-(edge - rng.uniform(-0.2, 0.2)) * 25))
    light *= 1.0 - 0.25 * (xx / w)  # and light falling off across the page
    a = a * (light[..., None] if a.ndim == 3 else light)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), im.mode)


def tight(ink: Image.Image, rng: np.random.Generator, thick: int = 0) -> np.ndarray:
    """``ink`` cropped to its own box (touching all four edges), maybe thickened: coverage 0-1."""
    if thick:
        ink = ink.filter(ImageFilter.MaxFilter(thick))
    ink = ink.crop(ink.getbbox())
    height = int(rng.integers(24, 200))
    k = height / ink.size[1]
    ink = ink.resize((max(3, round(ink.size[0] * k)), height), Image.Resampling.LANCZOS)
    return np.asarray(ink, np.float32) / 255


def thick_ink(ink: Image.Image, cover: float) -> Image.Image:
    """``ink`` with its strokes thickened until, cropped to its box, it covers about ``cover`` of it."""
    out = ink
    for size in range(3, 200, 4):
        if (np.asarray(out.crop(out.getbbox())) > 127).mean() >= cover:
            break
        out = ink.filter(ImageFilter.MaxFilter(size))
    return out


def _group_image(group: str, digit: int, k: int, ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One image of ``digit`` written as ``ink`` for a corpus ``group`` (see CORPUS_GROUPS); the ``k``-th."""
    dark = k % 2 == 0
    if group == "centred":
        return polarity(on_paper(ink, rng), dark)
    if group == "tight crops":
        return polarity(tight(ink, rng), dark)
    if group == "touching an edge":
        a = on_paper(ink, rng)
        rows, cols = np.flatnonzero(a.max(axis=1) > 0.5), np.flatnonzero(a.max(axis=0) > 0.5)
        a = [a[rows[0] + 1 :], a[: rows[-1]], a[:, cols[0] + 1 :], a[:, : cols[-1]]][k % 4]
        return polarity(a, dark)
    if group == "60% ink":
        return polarity(tight(thick_ink(ink, rng.uniform(0.4, 0.6)), rng), dark)
    if group == "thick marker":
        return polarity(on_paper(ink.filter(ImageFilter.MaxFilter(int(rng.choice([7, 9, 11])))), rng), dark)
    if group == "thin pencil":
        thin = ink.filter(ImageFilter.MinFilter(int(rng.choice([3, 5])))) if ink.getbbox() else ink
        thin = thin if thin.getbbox() else ink
        return polarity(on_paper(thin, rng), dark, paper=225.0, pen=90.0)
    if group == "low contrast":
        paper = rng.uniform(60, 200)
        im = polarity(on_paper(ink, rng), dark, paper=paper, pen=paper - 20)
        a = np.asarray(im, np.float32) + rng.normal(0, 1.5, im.size[::-1])
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if group == "JPEG":
        return jpeg(polarity(on_paper(ink, rng), dark), int(rng.integers(15, 40)))
    if group == "coloured":
        colours = [
            ((250, 240, 120), (200, 20, 30)),
            ((200, 230, 255), (20, 40, 160)),
            ((255, 200, 210), (20, 110, 40)),
            ((30, 60, 30), (250, 250, 250)),
            ((20, 20, 90), (255, 210, 60)),
        ]
        paper, pen = colours[k % len(colours)]
        return compose(on_paper(ink, rng), paper, pen)
    if group in ("ruled paper", "squared paper"):
        a = on_paper(ink, rng)
        lines = ruled(a, rng, squared=group == "squared paper")
        paper, rule, pen = np.array([245, 245, 238.0]), np.array([150, 180, 230.0]), np.array([25, 25, 60.0])
        page = compose(lines, paper, rule)
        out = np.asarray(page, np.float32) + (pen - np.asarray(page, np.float32)) * a[..., None]
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    if group == "shadow":
        return shade(polarity(on_paper(ink, rng), dark=True, paper=240.0).convert("RGB"), rng)
    if group == "perspective":
        page = polarity(on_paper(ink, rng), dark)
        return perspective(page, rng, fill=235 if dark else 20)
    if group == "blur":
        return polarity(on_paper(ink, rng), dark).filter(
            ImageFilter.GaussianBlur(float(rng.uniform(1.5, 3.5)))
        )
    if group == "phone photo":
        return place(ink, rng, dark, photo=True)
    raise ValueError(group)


CORPUS_GROUPS = {
    "centred": "the digit well inside a page, clean",
    "tight crops": "cropped to the ink: strokes touch all four edges",
    "touching an edge": "on a page, one edge cutting through the digit's outermost stroke",
    "60% ink": "strokes thickened until the ink covers 40-60% of a tight crop",
    "thick marker": "strokes 7-11 pixels thicker",
    "thin pencil": "strokes thinned, grey pencil on paper",
    "low contrast": "ink 20 grey levels from the paper, a little noise",
    "JPEG": "JPEG at quality 15-40",
    "coloured": "coloured ink on coloured paper",
    "ruled paper": "ruled in light blue, lines through the digit",
    "squared paper": "squared in light blue",
    "shadow": "a soft shadow at half the light, light falling off across the page",
    "perspective": "photographed from an angle",
    "blur": "out of focus (Gaussian blur of 1.5-3.5 pixels)",
    "phone photo": "tinted paper, uneven light, coloured ink, noise, JPEG",
}


def corpus(per_digit: int = 4, seed: int = 11, groups=None) -> dict[str, list[tuple[int, Image.Image]]]:
    """``{group: [(label, image)]}``: ``per_digit`` images of each digit 0-9 for each corpus group,
    both polarities (alternating) where the group allows, seeded. Every group shows the same written
    digits (the same font or pen stroke, distorted alike), so groups compare pair by pair."""
    inks = {
        (d, k): ink_of(d, k + d, np.random.default_rng([seed, d, k]))
        for d in range(10)
        for k in range(per_digit)
    }
    out = {}
    for gi, group in enumerate(groups or CORPUS_GROUPS):
        rng = np.random.default_rng([seed, 100 + gi])
        out[group] = [
            (d, _group_image(group, d, k, inks[d, k], rng)) for d in range(10) for k in range(per_digit)
        ]
    return out


NUMBER_STYLES = ("dark on light", "light on dark", "ruled paper", "phone photo", "JPEG")


def number_ink(digits: str, rng: np.random.Generator, touching: bool = False) -> np.ndarray:
    """The digits of ``digits`` written side by side: coverage ``(h, w)`` 0-1, with a margin.

    Each digit is one of the fonts or pens (cycling), at 80-120% of a common
    height and a baseline up to 10% off; the gaps are 5-35% of the height, or
    with ``touching`` the neighbours overlap by up to 4% so their strokes meet.
    """
    base = int(rng.integers(50, 110))
    inks = []
    for i, d in enumerate(digits):
        ink = ink_of(int(d), int(rng.integers(0, 100)) + i, rng)
        height = max(8, round(base * rng.uniform(0.8, 1.2)))
        k = height / ink.size[1]
        inks.append(ink.resize((max(2, round(ink.size[0] * k)), height), Image.Resampling.LANCZOS))
    margin = base // 2
    gaps = rng.uniform(-0.04, 0.0, len(inks)) if touching else rng.uniform(0.05, 0.35, len(inks))
    width = sum(im.size[0] for im in inks) + int(sum(gaps[:-1]) * base) + 2 * margin
    canvas = np.zeros((int(base * 1.5) + 2 * margin, max(width, 2 * margin + 1)), np.float32)
    x = margin
    for im, gap in zip(inks, gaps, strict=True):
        y = margin + int(base * 1.2) - im.size[1] + int(rng.normal(0, 0.05) * base)
        y = min(max(0, y), canvas.shape[0] - im.size[1])
        a = np.asarray(im, np.float32) / 255
        w = min(a.shape[1], canvas.shape[1] - x)
        canvas[y : y + a.shape[0], x : x + w] = np.maximum(canvas[y : y + a.shape[0], x : x + w], a[:, :w])
        x += im.size[0] + int(gap * base)
    return canvas


def number_image(digits: str, style: str, rng: np.random.Generator, touching: bool = False) -> Image.Image:
    """``digits`` written as a number (see :func:`number_ink`) in one of ``NUMBER_STYLES``."""
    a = number_ink(digits, rng, touching)
    if style == "dark on light":
        return polarity(a, True)
    if style == "light on dark":
        return polarity(a, False)
    if style == "JPEG":
        return jpeg(polarity(a, True, paper=225.0), int(rng.integers(25, 50)))
    if style == "ruled paper":
        lines = ruled(a, rng, squared=False)
        page = np.asarray(compose(lines, (245, 245, 238), (150, 180, 230)), np.float32)
        out = page + (np.array([25, 25, 60.0]) - page) * a[..., None]
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    if style == "phone photo":
        h, w = a.shape
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        light = 1.0 - rng.uniform(0.1, 0.3) * (xx + yy) / 2
        paper, pen = rng.uniform([190, 180, 160], [245, 240, 230]), rng.uniform([10, 10, 40], [70, 70, 140])
        rgb = (paper + (pen - paper) * a[..., None]) * light[..., None] + rng.normal(0, 5, (h, w, 1))
        return jpeg(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB"), int(rng.integers(60, 90)))
    raise ValueError(style)


def number_set(n: int = 100, seed: int = 12) -> list[tuple[str, str, Image.Image]]:
    """``n`` numbers of 2-8 digits: ``(digits, description, image)``, cycling through the styles,
    one in four with touching digits, seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        digits = "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(2, 9))))
        style = NUMBER_STYLES[i % len(NUMBER_STYLES)]
        touching = i % 4 == 3
        image = number_image(digits, style, rng, touching)
        out.append((digits, style + (", touching" if touching else ""), image))
    return out
