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
