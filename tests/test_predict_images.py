"""``digitnet predict`` on real image files and a Kaggle CSV, with a network trained on real MNIST.

The accuracy on digits not from MNIST (typeset in several fonts and drawn
as pen strokes, dark on light and light on dark, some as phone photos) is
the figure the README states.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from digit_images import digit_set, font_paths, trained_model
from PIL import Image, ImageDraw

from digitnet import modelfile, preprocess
from digitnet.data.formats import write_submission
from digitnet.errors import DataError


def digitnet(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(mnist):
    return trained_model(mnist)


@pytest.fixture(scope="module")
def clf(model):
    return modelfile.load(model)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """One file per digit, each in another format: ``[(path, label)]``."""
    if not font_paths():
        pytest.skip("no fonts on this machine: run scripts/system-packages.sh")
    d = tmp_path_factory.mktemp("digits")
    out = []
    formats = ["png", "jpg", "bmp", "gif"]
    for k, (label, _, im) in enumerate(digit_set(per_digit=1, seed=5, photo_every=0)):
        path = d / f"digit{label}.{formats[k % 4]}"
        im.convert("RGB" if path.suffix == ".jpg" else im.mode).save(path)
        out.append((path, label))
    return out


def test_digits_not_from_mnist_are_read_well(clf, mnist, capsys):
    """200 rendered digits (11 fonts and pen strokes; both polarities; 40-900 pixel pages of any aspect;
    a quarter are photos) are read as well as MNIST's own test set, give or take a few points. Without
    the preprocessing (a plain resize to 28 x 28) the same network reads fewer than half."""
    if not font_paths():
        pytest.skip("no fonts on this machine: run scripts/system-packages.sh")
    images = digit_set(per_digit=20, seed=1)
    labels = np.array([label for label, _, _ in images])
    fmts = ["PNG", "BMP", "GIF"]
    pixels = np.stack(
        [
            preprocess.prepare(
                encode(im.convert("RGB"), "JPEG") if "photo" in what else encode(im, fmts[k % 3])
            ).pixels.ravel()
            for k, (_, what, im) in enumerate(images)
        ]
    )
    right = clf.predict(pixels) == labels
    kinds = {
        "dark on light": np.array(["dark on light" in w for _, w, _ in images]),
        "light on dark": np.array(["light on dark" in w for _, w, _ in images]),
        "photos": np.array(["photo" in w for _, w, _ in images]),
    }
    naive = np.stack(
        [np.asarray(im.convert("L").resize((28, 28), Image.Resampling.BOX)).ravel() for _, _, im in images]
    ).astype(np.float32)
    naive = np.where(naive.mean(axis=1, keepdims=True) > 127, 255 - naive, naive)  # even with polarity fixed
    naive_acc = float((clf.predict(naive) == labels).mean())
    mnist_acc = clf.meta["metrics"]["test_accuracy"]
    figures = {name: round(float(right[m].mean()), 3) for name, m in kinds.items()}
    with capsys.disabled():
        print(
            f"\nrendered digits: {right.mean():.1%} of {len(right)} ({figures}); MNIST test {mnist_acc:.1%}; "
            f"plain resize {naive_acc:.1%}"
        )
    assert right.mean() >= 0.9, figures
    assert all(v >= 0.85 for v in figures.values()), figures
    assert naive_acc < 0.5


def test_mnist_digits_read_through_the_preprocessing_lose_nothing(clf, mnist):
    """MNIST's test digits saved as PNGs, white on black or black on white, and read back through the
    preprocessing are read as well as the raw arrays (catches any step that departs from MNIST's)."""
    x, y = mnist.x_test[:1500], mnist.y_test[:1500]
    direct = (clf.predict(x) == y).mean()
    through = np.stack(
        [
            preprocess.prepare(
                encode(Image.fromarray(im.reshape(28, 28) if k % 2 else 255 - im.reshape(28, 28)), "PNG")
            ).pixels.ravel()
            for k, im in enumerate(x)
        ]
    )
    assert (clf.predict(through) == y).mean() >= direct - 0.005


def test_predict_answers_each_file_and_names_each_bad_one(model, digit_files, tmp_path):
    """Good files of four formats are answered in order by the JSON contract; a text file, a truncated
    PNG, a blank page and a 20,000 x 20,000 image each get one error line; the exit status is 2."""
    png = digit_files[0][0].read_bytes()
    bad = {"notes.png": b"not an image\n", "cut.png": png[: len(png) // 2]}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    Image.new("L", (300, 200), 255).save(tmp_path / "blank.png")
    Image.new("1", (20_000, 20_000), 1).save(tmp_path / "huge.png")
    paths = [p for p, _ in digit_files]
    args = [
        paths[0],
        tmp_path / "notes.png",
        *paths[1:5],
        tmp_path / "cut.png",
        tmp_path / "blank.png",
        tmp_path / "huge.png",
        *paths[5:],
    ]
    result = digitnet("predict", model, *args, "--json")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    for line, (name, fragment) in zip(
        errors,
        [
            ("notes.png", "not an image"),
            ("cut.png", "truncated"),
            ("blank.png", "blank"),
            ("huge.png", "megapixels"),
        ],
        strict=True,
    ):
        assert name in line and fragment in line, line
    out = last_json(result.stdout)
    assert [p["input"] for p in out["predictions"]] == [str(p) for p in paths]
    assert [e["input"] for e in out["errors"]] == [
        str(tmp_path / n) for n in ("notes.png", "cut.png", "blank.png", "huge.png")
    ]
    digits = [p["digit"] for p in out["predictions"]]
    assert sum(d == label for d, (_, label) in zip(digits, digit_files, strict=True)) >= 9, digits
    for p in out["predictions"]:
        assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-5
        assert p["probabilities"][p["digit"]] == max(p["probabilities"])
    assert f"{paths[3]}: {digits[3]} (" in result.stdout  # the human line too
    ok = digitnet("predict", model, *paths[:3])
    assert ok.returncode == 0 and ok.stderr == ""


def test_a_large_photo_is_read_in_bounded_memory(model, tmp_path):
    """A 36-megapixel scan is read with the process peaking well under the size a full decode to
    floating point would take (catches decoding at full size before shrinking)."""
    page = Image.new("L", (6000, 6000), 255)
    ImageDraw.Draw(page).line([(1500, 1200), (4400, 1200), (2600, 4800)], fill=0, width=260)  # a 7
    page.save(tmp_path / "scan.png")
    # The child reports its own peak (VmHWM counts from its exec, unlike ru_maxrss, which keeps the
    # parent's peak across a fork).
    code = (
        "import sys; from digitnet.cli.main import main; rc = main(sys.argv[1:]); "
        "sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); sys.exit(rc)"
    )
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc here to read a process's peak memory")
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", model, tmp_path / "scan.png", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["predictions"][0]["digit"] == 7
    peak_mb = int(result.stderr.split()[-2]) / 1024
    full_float = 6000 * 6000 * 4 / 2**20  # 137 MB as float32
    assert peak_mb < 80 + full_float, peak_mb


def test_show_and_save_preview_show_what_the_network_saw(model, digit_files, tmp_path):
    """--show prints the input beside the 28 x 28; --save-preview writes it as a PNG whose right part
    is exactly the pixels the network was given."""
    path, label = digit_files[3]
    result = digitnet("predict", model, path, "--show", "--save-preview", tmp_path / "previews")
    assert result.returncode == 0, result.stderr
    art = [line for line in result.stdout.splitlines() if " | " in line]
    assert len(art) == 28 and len({len(line) for line in art}) == 1
    seen = np.array([[line.split(" | ")[1][2 * i] != " " for i in range(28)] for line in art])
    prepared = preprocess.prepare(path)
    assert np.array_equal(seen, prepared.pixels >= 256 // 10)  # ink where the 28 x 28 has ink
    preview = tmp_path / "previews" / f"{path.stem}.preview.png"
    assert sorted(p.name for p in preview.parent.iterdir()) == [preview.name]
    im = np.asarray(Image.open(preview).convert("L"))
    assert im.shape[0] == 280 and np.array_equal(im[5::10, -280:][:, 5::10], prepared.pixels)


def test_index_and_images_together(model, digit_files, mnist):
    """--index keeps its contract and works beside image files."""
    path, label = digit_files[0]
    result = digitnet("predict", model, path, "--index", 0, 1, "--json")
    assert result.returncode == 0, result.stderr
    out = last_json(result.stdout)["predictions"]
    assert [p["input"] for p in out] == ["test[0]", "test[1]", str(path)]
    assert [p["label"] for p in out[:2]] == mnist.y_test[:2].tolist()


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "nothing to predict"),
        (["--csv", "test.csv"], "--csv needs --submission"),
        (["--submission", "s.csv"], "--submission needs --csv"),
    ],
)
def test_usage_errors(model, args, fragment):
    result = digitnet("predict", model, *args)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and fragment in result.stderr


def test_a_submission_over_its_own_csv_is_refused_and_the_csv_kept(model, mnist, tmp_path):
    """--submission naming the --csv file (by another path too) wrote the answers over the images, once."""
    csv = tmp_path / "test.csv"
    write_csv(csv, mnist.x_test[:5])
    before = csv.read_bytes()
    for same in (csv, tmp_path / "." / "test.csv"):
        result = digitnet("predict", model, "--csv", csv, "--submission", same)
        assert result.returncode == 2 and "is the --csv file itself" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert csv.read_bytes() == before


def write_csv(path, x, y=None):
    """A digit CSV the way Kaggle writes one: a header row, then label (if any) and 784 pixels a row."""
    header = (["label"] if y is not None else []) + [f"pixel{i}" for i in range(784)]
    rows = x if y is None else np.column_stack([y, x])
    with open(path, "w") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, rows, fmt="%d", delimiter=",")


def test_the_kaggle_round_trip(mnist, tmp_path):
    """train.csv -> digitnet train -> digitnet predict --csv test.csv -> submission.csv, exactly as Kaggle
    takes it: 'ImageId,Label', ids 1 to n in order, the model's digits; a bad CSV leaves an old
    submission untouched."""
    write_csv(tmp_path / "train.csv", mnist.x_train[:6000], mnist.y_train[:6000])
    write_csv(tmp_path / "test.csv", mnist.x_test[:1000])
    train = digitnet(
        "train",
        "--data",
        tmp_path / "train.csv",
        "--preset",
        "adam-128-64",
        "--epochs",
        2,
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert train.returncode == 0, train.stderr
    result = digitnet(
        "predict",
        tmp_path / "run",
        "--csv",
        tmp_path / "test.csv",
        "--submission",
        tmp_path / "submission.csv",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "submission.csv").read_bytes().decode("ascii").split("\n")
    assert lines[0] == "ImageId,Label" and lines[-1] == "" and len(lines) == 1002
    ids, labels = zip(*(map(int, line.split(",")) for line in lines[1:-1]), strict=True)
    assert list(ids) == list(range(1, 1001))
    clf = modelfile.load(tmp_path / "run")
    assert list(labels) == clf.predict(mnist.x_test[:1000]).tolist()
    assert np.mean(np.array(labels) == mnist.y_test[:1000]) > 0.85
    info = last_json(result.stdout)["submission"]
    assert info["rows"] == 1000 and sum(info["counts"]) == 1000 and "accuracy" not in info
    # A labelled CSV (train.csv itself) also says how well the model did on it.
    labelled = last_json(
        digitnet(
            "predict",
            tmp_path / "run",
            "--csv",
            tmp_path / "train.csv",
            "--submission",
            tmp_path / "check.csv",
            "--json",
        ).stdout
    )["submission"]
    assert labelled["accuracy"] > 0.85
    # A broken CSV is one error line and the submission already there is left as it was.
    before = (tmp_path / "submission.csv").read_bytes()
    (tmp_path / "broken.csv").write_text("pixel0,pixel1\n1,2\n")
    broken = digitnet(
        "predict",
        tmp_path / "run",
        "--csv",
        tmp_path / "broken.csv",
        "--submission",
        tmp_path / "submission.csv",
    )
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "columns" in broken.stderr
    assert (tmp_path / "submission.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_predict_csv_and_write_submission_give_the_models_digits_row_by_row(clf, mnist, tmp_path):
    """The library half of the Kaggle round trip: the first 500 real MNIST test images as a CSV, predicted
    by Classifier.predict_csv and written by write_submission, read back line by line and compared with
    Classifier.predict on the arrays; the counts and the accuracy of a labelled CSV are counted here."""
    x, y = mnist.x_test[:500], mnist.y_test[:500]
    write_csv(tmp_path / "test.csv", x)
    found = clf.predict_csv(tmp_path / "test.csv")
    expected = clf.predict(x).tolist()
    assert found["digits"].tolist() == expected and found["accuracy"] is None
    tally = Counter(expected)
    assert found["counts"].tolist() == [tally[k] for k in range(10)]
    assert write_submission(tmp_path / "submission.csv", found["digits"]) == tmp_path / "submission.csv"
    raw = (tmp_path / "submission.csv").read_bytes()
    assert raw.startswith(b"ImageId,Label\n") and raw.endswith(b"\n") and b"\r" not in raw
    rows = raw.decode("ascii").splitlines()[1:]
    assert len(rows) == 500
    for i, row in enumerate(rows):
        assert row == f"{i + 1},{expected[i]}", (i, row)
    # A labelled CSV also gives the accuracy, counted here image by image.
    write_csv(tmp_path / "labelled.csv", x, y)
    labelled = clf.predict_csv(tmp_path / "labelled.csv")
    assert labelled["digits"].tolist() == expected
    assert labelled["accuracy"] == sum(d == t for d, t in zip(expected, y.tolist(), strict=True)) / 500 > 0.9
    # What cannot be a submission is refused, and the file already there is left as it was.
    before = (tmp_path / "submission.csv").read_bytes()
    for bad in (found["digits"].reshape(-1, 1), found["digits"] + 0.5):
        with pytest.raises(DataError, match="one whole-number label per image"):
            write_submission(tmp_path / "submission.csv", bad)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match=r"cannot write the submission .*a-file/s\.csv"):
        write_submission(tmp_path / "a-file" / "s.csv", found["digits"])
    assert (tmp_path / "submission.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_from_mnist_thumbnail_and_save_preview(mnist, tmp_path):
    """A test-set digit wrapped as it is, its ink's box found; the text view's input side is the digit
    itself; previews are named after the input, numbered when a name repeats, and show the 28 x 28."""
    digit = mnist.x_test[3]
    prepared = preprocess.from_mnist(digit)
    ink = np.argwhere(digit.reshape(28, 28) > 0)
    assert prepared.bbox == (ink[:, 0].min(), ink[:, 1].min(), ink[:, 0].max() + 1, ink[:, 1].max() + 1)
    assert all(type(v) is int for v in prepared.bbox)
    assert np.array_equal(prepared.pixels, digit.reshape(28, 28)) and prepared.grey.dtype == np.float32
    assert prepared.inverted is False
    assert preprocess.from_mnist(np.zeros(784, np.uint8)).bbox == (0, 0, 28, 28)
    assert np.array_equal(preprocess.thumbnail(prepared), digit.reshape(28, 28))
    wide = preprocess.Prepared(prepared.pixels, np.full((50, 200), 255, np.float32), False, (0, 0, 50, 200))
    thumb = preprocess.thumbnail(wide)  # 200 x 50 -> 28 x 7, centred
    assert (thumb[:10] == -1).all() and (thumb[10:17] == 255).all() and (thumb[17:] == -1).all()

    folder = preprocess.preview_folder(tmp_path / "a" / "b")
    assert folder.is_dir()
    first = preprocess.save_preview(prepared, folder, "test[3]")
    again = preprocess.save_preview(prepared, folder, "elsewhere/test[3].png")
    assert (first.name, again.name) == ("test-3.preview.png", "test-3-2.preview.png")
    for path in (first, again):
        im = np.asarray(Image.open(path).convert("L"))
        assert im.shape == (280, 280 + 10 + 280) and np.array_equal(
            im[5::10, -280:][:, 5::10], prepared.pixels
        )
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match="cannot create the preview folder"):
        preprocess.preview_folder(tmp_path / "a-file" / "previews")
