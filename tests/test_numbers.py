"""Whole numbers: ``digitnet predict --number``, ``preprocess.prepare_number`` and ``POST /api/predict?number=1``.

The numbers (tests/digit_images.py, built here, seeded) are 2-8 digits from the fonts and pen strokes
the other tests use, at varied sizes, spacing and baselines, some touching, dark on light, light on
dark, on ruled paper, as JPEGs and as phone photos. A digit counts as read where the reading lines up
with the truth (the truth's length less the edit distance), so one extra or missing digit costs one.
"""

from __future__ import annotations

import io
import json
import struct
import urllib.request
import zlib

import numpy as np
import pytest
from clitools import assert_user_error, digitnet, last_json
from digit_images import font_paths, number_image, number_set, stroked, trained_model
from PIL import Image, ImageDraw
from test_web import start, stop

from digitnet import modelfile, preprocess

N_NUMBERS = 120


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.fixture(scope="module")
def model(mnist):
    if not font_paths():
        pytest.skip("no fonts on this machine: run scripts/system-packages.sh")
    return trained_model(mnist)


@pytest.fixture(scope="module")
def clf(model):
    return modelfile.load(model)


def reader(clf):
    return lambda x: clf.predict_proba(x.reshape(len(x), -1))


def read(clf, data: bytes) -> str:
    number = preprocess.prepare_number(data, reader=reader(clf))
    return "".join(str(k) for k in clf.predict(np.stack([d.pixels.reshape(-1) for d in number.digits])))


def test_numbers_are_counted_and_read(clf, capsys):
    """The right count of digits in at least 95% of the numbers and at least 90% of the digits read,
    over every style (catches joining neighbours, splitting one digit, reading right to left, keeping
    ruled lines or JPEG blocks as digits)."""
    results = [(digits, what, read(clf, encode(im))) for digits, what, im in number_set(N_NUMBERS)]
    counted = np.mean([len(got) == len(truth) for truth, _, got in results])
    digits = sum(len(t) for t, _, _ in results)
    right = sum(max(0, len(t) - edit_distance(t, got)) for t, _, got in results)
    styles = sorted({w.split(",")[0] for _, w, _ in results})
    with capsys.disabled():
        print(
            f"\nnumbers of 2-8 digits: right count {counted:.1%} of {len(results)}, digits read {right / digits:.1%} "
            f"of {digits}"
        )
        for style in styles + ["touching"]:
            mine = [r for r in results if style in r[1]]
            c = np.mean([len(g) == len(t) for t, _, g in mine])
            d = sum(max(0, len(t) - edit_distance(t, g)) for t, _, g in mine) / sum(
                len(t) for t, _, _ in mine
            )
            print(f"  {style:<14} count {c:6.1%}  digits {d:6.1%}  ({len(mine)} numbers)")
    assert counted >= 0.95
    assert right / digits >= 0.90


def test_pieces_of_a_digit_are_joined_and_marks_left_out(clf):
    """A 4 written as two strokes that do not meet, a 5 whose flag is lifted off, a 7 with a crossbar,
    a decimal point, a dash and specks: four digits, in order (catches every connected part read as a
    digit, and dots or dashes read as ones)."""
    rng = np.random.default_rng(3)
    page = Image.new("L", (900, 260), 255)
    draw = ImageDraw.Draw(page)
    w = 12
    draw.line([(110, 40), (40, 160), (150, 160)], fill=0, width=w)  # 4: the open angle ...
    draw.line([(125, 95), (125, 220)], fill=0, width=w)  # ... and its stem, apart
    draw.line([(330, 50), (250, 50)], fill=0, width=w)  # 5: the flag, lifted off ...
    draw.line([(245, 65), (240, 125), (300, 115), (330, 160), (300, 215), (240, 205)], fill=0, width=w)
    draw.ellipse([370, 200, 386, 216], fill=0)  # a decimal point
    draw.line([(430, 50), (540, 50), (470, 220)], fill=0, width=w)  # 7 ...
    draw.line([(455, 135), (525, 135)], fill=0, width=w)  # ... with a crossbar that crosses the stem
    draw.line([(590, 130), (640, 130)], fill=0, width=w)  # a dash
    for x, y in rng.integers(0, [900, 260], (6, 2)):
        draw.ellipse([x, y, x + 3, y + 3], fill=0)
    ink = stroked(3, rng).resize((110, 170))
    page.paste(Image.new("L", ink.size, 0), (700, 45), ink)  # 3
    number = preprocess.prepare_number(encode(page), reader=reader(clf))
    assert len(number.digits) == 4
    boxes = number.boxes()
    assert [b["x"] < 200 for b in boxes] == [True, False, False, False]
    assert boxes[0]["y"] <= 45 and boxes[0]["y"] + boxes[0]["height"] >= 215  # both strokes of the 4
    assert boxes[1]["y"] <= 50  # the 5's flag
    assert all(b["height"] > 120 for b in boxes)  # no dot or dash
    assert (
        "".join(str(k) for k in clf.predict(np.stack([d.pixels.reshape(-1) for d in number.digits])))
        == "4573"
    )


def test_touching_digits_are_split(clf):
    """Two and three digits whose strokes run into each other are split where they touch."""
    rng = np.random.default_rng(8)
    found = []
    for digits in ["2026", "48", "305", "9127"]:
        im = number_image(digits, "dark on light", rng, touching=True)
        number = preprocess.prepare_number(encode(im), reader=reader(clf))
        found.append(len(number.digits) == len(digits))
    assert sum(found) >= 3, found


def test_predict_number_json_show_and_preview(model, clf, tmp_path):
    """--number: the JSON line has the number and, for each digit, its box in the image's own pixels,
    reading, probabilities and the 28x28 the network saw; --show draws the boxes and readings as text;
    --save-preview draws them on the picture; the single-digit JSON is unchanged without --number."""
    rng = np.random.default_rng(21)
    im = number_image("2026", "dark on light", rng)
    big = im.resize((im.width * 3, im.height * 3))  # boxes are in the file's pixels, not the working size
    big.save(tmp_path / "year.png")
    result = digitnet(
        "predict",
        model,
        tmp_path / "year.png",
        "--number",
        "--show",
        "--save-preview",
        tmp_path / "prev",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = last_json(result.stdout)["predictions"][0]
    assert out["number"] == "2026" and len(out["digits"]) == 4
    xs = [d["box"]["x"] for d in out["digits"]]
    assert xs == sorted(xs) and max(d["box"]["x"] + d["box"]["width"] for d in out["digits"]) <= big.width
    ink = np.asarray(big) < 128
    for d in out["digits"]:
        b = d["box"]
        inside = ink[b["y"] : b["y"] + b["height"], b["x"] : b["x"] + b["width"]]
        assert inside.mean() > 0.05 and b["height"] > 0.5 * 3 * 70 * 0.8  # a digit's box, at file scale
        assert len(d["pixels"]) == 784 and max(d["pixels"]) == 255
        assert abs(sum(d["probabilities"]) - 1) < 1e-5 and d["label"] == str(d["digit"])
        assert d["probabilities"][d["digit"]] == max(d["probabilities"])
    pixels = np.array([d["pixels"] for d in out["digits"]])
    assert clf.predict(pixels).tolist() == [d["digit"] for d in out["digits"]]
    assert f"{tmp_path / 'year.png'}: 2026 (4 digits" in result.stdout
    boxes_drawn = [line for line in result.stdout.splitlines() if line.count("+") >= 2 and "-" in line]
    assert sum(line.count("+2") + line.count("+0") + line.count("+6") for line in boxes_drawn) == 4
    preview = Image.open(out["preview"]).convert("RGB")
    red = np.asarray(preview).astype(int)
    red = (red[..., 0] > 180) & (red[..., 1] < 90) & (red[..., 2] < 90)
    assert red.sum() > 400  # the four boxes and their readings
    single = digitnet("predict", model, tmp_path / "year.png", "--json")
    entry = last_json(single.stdout)["predictions"][0]
    assert set(entry) == {"input", "digit", "probabilities"}


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG of ``width`` x ``height`` white pixels, compressed to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory):
    """Files at the edges of what an image is, each named for what it is, and two good ones."""
    d = tmp_path_factory.mktemp("awkward")
    rng = np.random.default_rng(4)
    seven = number_image("7", "dark on light", rng)
    seven.save(d / "seven.png")
    number_image("31", "dark on light", rng).save(d / "thirty-one.png")
    Image.new("L", (300, 200), 240).save(d / "no-ink.png")
    Image.new("L", (1, 1), 0).save(d / "one-pixel.png")
    Image.new("L", (100_000, 1), 255).save(d / "strip.png")
    other = number_image("4", "dark on light", rng).resize(seven.size)
    seven.convert("P").save(
        d / "animated.gif", save_all=True, append_images=[other.convert("P")], duration=80
    )
    seven.convert("CMYK").save(d / "cmyk.jpg", quality=90)
    Image.fromarray(np.asarray(seven.convert("L")).astype(np.uint16) * 257).save(d / "sixteen-bit.png")
    # A decompression bomb: a PNG of a few hundred kilobytes whose header says 30000 x 30000 (900 megapixels).
    (d / "bomb.png").write_bytes(png_bomb(30_000, 30_000))
    return d


def test_awkward_files_are_each_answered_or_refused(model, awkward_files):
    """No ink, 1x1, 100000x1 and a decompression bomb each get their own error line; an animated GIF is
    read from its first frame with a note; CMYK JPEGs and 16-bit PNGs are read; the other files are
    answered; the exit status says some were refused. The same with --number."""
    names = [
        "seven.png",
        "no-ink.png",
        "one-pixel.png",
        "strip.png",
        "animated.gif",
        "cmyk.jpg",
        "sixteen-bit.png",
        "bomb.png",
        "thirty-one.png",
    ]
    for extra in ([], ["--number"]):
        result = digitnet(
            "predict", model, *[awkward_files / n for n in names], "--json", *extra, timeout=120
        )
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        notes = [line for line in lines if line.startswith("note: ")]
        assert len(errors) + len(notes) == len(lines)
        expected = [
            ("no-ink.png", "looks blank: no ink"),
            ("one-pixel.png", "1x1 pixels: too small"),
            ("strip.png", "100000x1 pixels: a strip"),
            ("bomb.png", "900 megapixels"),
        ]
        assert len(errors) == len(expected)
        for line, (name, fragment) in zip(errors, expected, strict=True):
            assert name in line and fragment in line, line
        assert notes == [f"note: {awkward_files / 'animated.gif'} has 2 frames: the first was read"]
        out = last_json(result.stdout)
        answered = {p["input"].rsplit("/", 1)[-1]: p for p in out["predictions"]}
        assert sorted(answered) == sorted(
            ["seven.png", "animated.gif", "cmyk.jpg", "sixteen-bit.png", "thirty-one.png"]
        )
        key = "number" if extra else "digit"
        want = {"seven.png": "7", "animated.gif": "7", "cmyk.jpg": "7", "sixteen-bit.png": "7"}
        if extra:
            want["thirty-one.png"] = "31"
        for name, value in want.items():
            assert str(answered[name][key]) == value, (name, answered[name][key])
        assert answered["animated.gif"]["notes"] == [
            f"{awkward_files / 'animated.gif'} has 2 frames: the first was read"
        ]
    ok = digitnet("predict", model, awkward_files / "seven.png", "--number")
    assert ok.returncode == 0 and ok.stderr == ""


def test_a_bad_flag_mix_is_one_error(model):
    result = digitnet("predict", model, "--index", "0", "--number", "--csv", "x.csv")
    assert_user_error(result, "--csv needs --submission")


def test_the_api_reads_a_number(model):
    """POST /api/predict?number=1 gives the JSON of --number, for an uploaded photo and for the page's
    784 pixels; without ?number=1 the single-digit answer is as before; no ink is a 422 with a message."""
    rng = np.random.default_rng(30)
    photo = encode(number_image("1984", "phone photo", rng).convert("RGB"), "JPEG", quality=85)
    proc, host, port = start(model, "--workers", "1")
    try:

        def post(path, body, kind):
            req = urllib.request.Request(
                f"http://{host}:{port}{path}", data=body, method="POST", headers={"Content-Type": kind}
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, data = post("/api/predict?number=1", photo, "image/jpeg")
        assert status == 200 and data["number"] == "1984" and data["inverted"] is True
        assert [sorted(d) for d in data["digits"]] == [
            ["box", "digit", "label", "pixels", "probabilities"]
        ] * 4
        status, single = post("/api/predict", photo, "image/jpeg")
        assert status == 200 and "number" not in single and len(single["probabilities"]) == 10
        drawn = np.zeros((28, 28), int)
        drawn[4:24, 6:9] = 255  # a 1 ...
        drawn[4:24, 16:26:3] = 255  # ... and something beside it
        status, data = post(
            "/api/predict?number=1",
            json.dumps({"pixels": drawn.ravel().tolist()}).encode(),
            "application/json",
        )
        assert status == 200 and len(data["digits"]) >= 1 and data["number"][0] == "1"
        status, data = post("/api/predict?number=1", encode(Image.new("L", (200, 100), 250)), "image/png")
        assert status == 422 and "looks blank" in data["error"]
    finally:
        stop(proc)


def test_show_draws_a_box_at_the_right_edge_one_character_wide():
    """A digit's box that falls in the last character column of the text drawing keeps its reading
    inside the drawing (catches writing the label one column past the edge: an IndexError)."""
    from types import SimpleNamespace

    from digitnet.cli.predict import _number_art

    grey = np.zeros((100, 2000), np.float32)
    grey[10:90, 1990:2000] = 255
    digit = preprocess.Digit(np.zeros((28, 28), np.uint8), (10, 1990, 90, 2000))
    number = SimpleNamespace(grey=grey, inverted=False, digits=[digit])
    art = _number_art(number, [{"label": "7"}])
    drawing = [line for line in art if line.endswith("+")]
    assert drawing and all(len(line) == 96 for line in drawing), art[:3]
