"""digitnet plot, report and dashboard (and train --live) through a real subprocess, headless.

A run is trained once for the module with ``digitnet train`` on a real slice of
MNIST (6,000 training and 1,000 test images in an NPZ). The report is opened in
a real headless Chromium from disk, with no server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_files import ODD_VALUES, fuzz_settings, json_places, nested_json, npy, put_at
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from digitnet import modelfile
from digitnet.viz.plots import make
from digitnet.viz.report import figure_png
from digitnet.viz.run import load_run

SIZES = {
    "curves": (1200, 740),
    "confusion": (1050, 840),
    "misclassified": (1000, 1155),
    "predictions": (1400, 970),
    "weights": (1200, 990),
    "distributions": (1290, 410),
    "gradients": (1200, 460),
    "robustness": (1300, 560),
    "dataset": (1300, 820),
}


def digitnet(*args, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, **(env or {})},
    )


def last_json(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_user_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, (
        result.stderr
    )
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def picture(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    image = np.asarray(image.convert("RGB"))
    colours = np.unique((image.astype(np.uint32) << np.array([16, 8, 0], np.uint32)).sum(axis=2))
    assert image.std() > 20 and len(colours) > 50, "the image is blank"
    return image


@pytest.fixture(scope="module")
def run_dir(small_npz, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    last_json(
        digitnet(
            "train",
            "--preset",
            "adam-128-64",
            "--epochs",
            "2",
            "--data",
            small_npz,
            "--out",
            out,
            "--quiet",
            "--json",
        )
    )
    return out


@pytest.fixture(scope="module")
def accuracy(run_dir, small_npz) -> float:
    return last_json(digitnet("evaluate", run_dir, "--data", small_npz, "--json"))["test_accuracy"]


def test_train_records_what_the_plots_need(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    assert history["extra"]["diagnostics"]["layers"] == ["784→128", "128→64", "64→10"]
    assert {"grad_norm_1", "grad_norm_3", "inactive_2", "iteration"} <= set(history["epochs"][0])
    with np.load(run_dir / "initial_weights.npz", allow_pickle=False) as z:
        assert {k: z[k].shape for k in z.files} == {
            "0.weight": (784, 128),
            "2.weight": (128, 64),
            "4.weight": (64, 10),
        }
        trained = modelfile.load(run_dir).model.layers[0].weight.data
        assert 0.01 < np.abs(z["0.weight"] - trained).mean() < 0.1


def test_plot_draws_every_plot_into_the_run_folder(run_dir, small_npz):
    info = last_json(digitnet("plot", run_dir, "--data", small_npz, "--json"))
    assert list(info["plots"]) == list(SIZES) and info["skipped"] == {}
    for name, (w, h) in SIZES.items():
        path = run_dir / f"{name}.png"
        assert info["plots"][name] == [str(path)]
        assert picture(path).shape == (h, w, 3), name


def in_process(capsys, *args) -> tuple[int, str, str]:
    """Run a command in this process (the same ``main`` as the executable, without a new interpreter)."""
    from digitnet.cli.main import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_error_line(result, *fragments):
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_plot_a_bare_model_file_and_svg(run_dir, small_npz, tmp_path, capsys):
    shutil.copy(run_dir / "model.npz", tmp_path / "model.npz")
    code, out, _ = in_process(
        capsys,
        "plot",
        tmp_path / "model.npz",
        "--data",
        small_npz,
        "--which",
        "confusion",
        "weights",
        "--svg",
        "--out",
        tmp_path / "out",
    )
    assert code == 0 and "note: no history.json beside model.npz" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "confusion.png",
        "confusion.svg",
        "weights.png",
        "weights.svg",
    ]
    assert "<svg" in (tmp_path / "out" / "confusion.svg").read_text()[:1000]
    result = in_process(
        capsys, "plot", tmp_path / "model.npz", "--which", "weights", "distributions", "gradients"
    )
    assert_error_line(result, "gradients needs the training history")


def test_bad_inputs_are_one_clear_line(run_dir, small_npz, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    no_history = tmp_path / "no-history"
    no_history.mkdir()
    shutil.copy(run_dir / "model.npz", no_history / "model.npz")
    assert_error_line(in_process(capsys, "plot", no_history), "no history.json")
    assert_error_line(in_process(capsys, "report", no_history), "no history.json")
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"these bytes are not a model")
    assert_error_line(in_process(capsys, "plot", fake), "is not a digitnet model file")
    assert_error_line(
        in_process(capsys, "dashboard", fake, "--save", tmp_path / "x.png"), "not a digitnet model"
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("in the way")
    assert_error_line(
        in_process(capsys, "plot", run_dir, "--which", "weights", "--out", a_file), "output folder"
    )
    assert_error_line(
        in_process(capsys, "plot", run_dir, "--which", "weights", "--out", a_file / "sub"),
        "is a file, not a folder",
    )
    assert_error_line(in_process(capsys, "report", run_dir, "--out", tmp_path), "is a folder")
    assert_error_line(in_process(capsys, "report", run_dir, "--out", a_file / "r.html"), "not a folder")
    assert_error_line(in_process(capsys, "dashboard", run_dir, "--data", small_npz), "no display")
    assert_error_line(in_process(capsys, "dashboard", run_dir, "--save", tmp_path / "x.avi"), ".png", ".gif")
    assert_error_line(
        in_process(
            capsys, "dashboard", run_dir, "--data", small_npz, "--start", 1000, "--save", tmp_path / "x.png"
        ),
        "--start must be between 0 and 999",
    )
    assert_error_line(in_process(capsys, "train", "--save", tmp_path / "x.gif"), "add --live")
    assert_error_line(
        in_process(capsys, "train", "--live", "--data", small_npz, "--out", tmp_path / "r"), "no display"
    )
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("x.*"))
    assert (a_file.read_text(), sorted(p.name for p in run_dir.iterdir() if p.suffix != ".png")) == (
        "in the way",
        [
            "config.json",
            "history.csv",
            "history.json",
            "initial_weights.npz",
            "metrics.json",
            "model.npz",
            "run.json",
        ],
    )


def test_initial_weights_that_claim_terabytes_are_one_error_line(run_dir, small_npz, tmp_path):
    crafted = tmp_path / "run"
    shutil.copytree(run_dir, crafted, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    with zipfile.ZipFile(crafted / "initial_weights.npz", "w") as z:  # a header and no data
        z.writestr("0.weight.npy", npy(header={"descr": "<f4", "fortran_order": False, "shape": (10**12,)}))
    result = digitnet("plot", crafted, "--data", small_npz, "--which", "distributions")
    assert_user_error(result, "claims 4,000,000,000,000 bytes")  # was a MemoryError's traceback
    assert not list(crafted.glob("*.png"))


def test_a_history_nested_too_deep_is_one_error_line(run_dir, small_npz, tmp_path):
    crafted = tmp_path / "run"
    shutil.copytree(run_dir, crafted, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    (crafted / "history.json").write_text(nested_json(100_000))
    result = digitnet("plot", crafted, "--data", small_npz, "--which", "curves")
    assert_user_error(result, "the run's history cannot be read")  # was a RecursionError's traceback


def test_numbers_near_the_float_limit_in_a_history_draw_without_a_warning(run_dir, small_npz, tmp_path):
    # The axes' margins around 1e308 overflow (a log axis takes exp of its limits): NumPy used to
    # print RuntimeWarnings on stderr, from the learning rate's range and from laying out the axes.
    crafted = tmp_path / "run"
    shutil.copytree(run_dir, crafted, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    history = json.loads((crafted / "history.json").read_text())
    history["loss"][3] = history["lr"][3] = history["epochs"][0]["train_loss"] = 1e308
    (crafted / "history.json").write_text(json.dumps(history))
    result = digitnet("plot", crafted, "--data", small_npz, "--which", "curves", "gradients")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    picture(crafted / "curves.png")
    with warnings.catch_warnings():  # the report draws its figures into PNG bytes of its own
        warnings.simplefilter("error")
        png = figure_png(make("curves", load_run(crafted, load_data=False)))
    picture(Image.open(io.BytesIO(png)))


@pytest.mark.parametrize(
    "key, value",
    [("iteration", None), ("iteration", 1e308), ("inactive_1", float("inf")), ("grad_norm_1", 1e308)],
)
def test_a_missing_or_non_finite_epoch_figure_is_left_out_of_the_plots(
    run_dir, small_npz, tmp_path, key, value
):
    """history.json's checks let these through (null is allowed where diagnostics are missing); the
    curves and gradients figures ended in 'Axis limits cannot be NaN or Inf' or Agg's cell block
    limit, once. The figure is drawn without that point."""
    crafted = tmp_path / "run"
    shutil.copytree(run_dir, crafted, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    history = json.loads((crafted / "history.json").read_text())
    history["epochs"][0][key] = value
    (crafted / "history.json").write_text(json.dumps(history))
    result = digitnet("plot", crafted, "--data", small_npz, "--which", "curves", "gradients")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    picture(crafted / "curves.png")
    picture(crafted / "gradients.png")


def test_the_executable_gives_one_error_line_too(tmp_path):
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"these bytes are not a model")
    assert_user_error(digitnet("plot", fake), "is not a digitnet model file")


def test_report_opens_in_a_browser_from_disk(run_dir, small_npz, accuracy, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (scripts/system-packages.sh installs it)")
    info = last_json(digitnet("report", run_dir, "--data", small_npz, "--json"))
    page = run_dir / "report.html"
    assert info["report"] == str(page) and info["test_accuracy"] == pytest.approx(accuracy)
    text = page.read_text()
    assert (
        "http://" not in text and "https://" not in text and "<script" not in text
    )  # nothing fetched, no code
    assert f"{100 * accuracy:.2f}%" in text
    probe = tmp_path / "probe.html"
    probe.write_text(f"""<!DOCTYPE html><html><body><iframe id="f" src="{page.as_uri()}"></iframe><pre id="out"></pre>
<script>document.getElementById("f").addEventListener("load", () => {{
  const d = document.getElementById("f").contentDocument;
  document.getElementById("out").textContent = "RESULT" + JSON.stringify({{
    images: [...d.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]),
    rows: [...d.querySelectorAll("#per-class tr")].map(r => [...r.cells].map(c => c.textContent)),
    title: d.title}});
}});</script></body></html>""")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--allow-file-access-from-files",
        "--dump-dom",
        probe.as_uri(),
    ]
    dom = subprocess.run([chromium, *flags], capture_output=True, text=True, timeout=120).stdout
    seen = json.loads(dom.split("RESULT", 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    assert [(alt, w, h) for alt, w, h in seen["images"]] == [(f"{n} plot", *SIZES[n]) for n in SIZES]
    header, *rows = seen["rows"]
    assert header == ["class", "precision", "recall", "F1", "support"] and len(rows) == 10
    assert sum(int(r[4]) for r in rows) == 1000
    y = np.load(small_npz)["y_test"]
    pred = modelfile.load(run_dir).predict(np.load(small_npz)["x_test"])
    for digit, row in enumerate(rows):
        assert float(row[2]) == pytest.approx(np.mean(pred[y == digit] == digit), abs=1e-4)


def test_dashboard_records_a_gif_and_a_frame(run_dir, small_npz, tmp_path):
    gif = tmp_path / "dash.gif"
    info = last_json(
        digitnet(
            "dashboard",
            run_dir,
            "--data",
            small_npz,
            "--save",
            gif,
            "--frames",
            6,
            "--interval",
            50,
            "--json",
        )
    )
    movie = Image.open(gif)
    assert movie.n_frames == 6 and movie.size == (1152, 619) and movie.info["duration"] == 50
    model = modelfile.load(run_dir)
    x, y = np.load(small_npz)["x_test"][:6], np.load(small_npz)["y_test"][:6]
    assert info["seen"] == 6 and info["correct"] == int(np.sum(model.predict(x) == y))
    movie.seek(5)
    picture(movie)
    frame = tmp_path / "frame.png"
    info = last_json(
        digitnet(
            "dashboard",
            run_dir,
            "--data",
            small_npz,
            "--save",
            frame,
            "--start",
            100,
            "--only-mistakes",
            "--frames",
            2,
            "--json",
        )
    )  # the view after two mistakes
    wrong = np.flatnonzero(model.predict(np.load(small_npz)["x_test"]) != np.load(small_npz)["y_test"])
    assert info["last_index"] == wrong[wrong >= 100][1] and info["seen"] == 2 and info["correct"] == 0
    assert picture(frame).shape == (860, 1600, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dash.gif", "frame.png"]


def test_train_live_records_the_training(small_npz, tmp_path):
    result = digitnet(
        "train",
        "--preset",
        "adam-128-64",
        "--epochs",
        "1",
        "--data",
        small_npz,
        "--out",
        tmp_path / "run",
        "--live",
        "--save",
        tmp_path / "live.gif",
        "--frames",
        3,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"saved the live view as {tmp_path / 'live.gif'}" in result.stdout
    movie = Image.open(tmp_path / "live.gif")
    assert movie.n_frames == 4 and movie.size == (1152, 691)
    assert (tmp_path / "run" / "model.npz").exists()


def test_dashboard_records_a_movie_frame_for_frame(run_dir, small_npz, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="needs digitnet[video] or a system ffmpeg")
    movie = tmp_path / "dash.mp4"
    info = last_json(
        digitnet(
            "dashboard",
            run_dir,
            "--data",
            small_npz,
            "--save",
            movie,
            "--frames",
            4,
            "--interval",
            100,
            "--json",
        )
    )
    assert info["path"] == str(movie) and info["seen"] == 4
    reader = imageio_ffmpeg.read_frames(str(movie))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(height, width, 3).astype(float) for f in reader]
    assert len(frames) == 4 and (width, height) == (1600, 860) and meta["fps"] == pytest.approx(10)
    # each frame of the movie is the view a PNG of that moment holds, up to the video's compression
    for k in (1, 4):
        still = tmp_path / f"frame{k}.png"
        last_json(
            digitnet("dashboard", run_dir, "--data", small_npz, "--save", still, "--frames", k, "--json")
        )
        view = picture(still).astype(float)
        same, other = np.abs(frames[k - 1] - view).mean(), np.abs(frames[4 - k] - view).mean()
        assert same < 3 and other > 2 * same
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dash.mp4", "frame1.png", "frame4.png"]


def test_a_movie_without_ffmpeg_is_one_error_line(run_dir, small_npz, tmp_path):
    no_ffmpeg = {"PATH": os.path.dirname(sys.executable), "IMAGEIO_FFMPEG_EXE": str(tmp_path / "no-ffmpeg")}
    result = digitnet(
        "dashboard", run_dir, "--data", small_npz, "--save", tmp_path / "dash.mp4", env=no_ffmpeg
    )
    assert_user_error(result, "needs ffmpeg", "digitnet[video]")
    assert list(tmp_path.iterdir()) == []


def write_meta(path: Path, meta: dict) -> None:
    """Write ``path`` (a model file) again with the metadata ``meta`` and its own parameters."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


@fuzz_settings(12)
@given(data=st.data())
def test_any_change_to_a_models_metadata_is_read_or_named(run_dir, small_npz, tmp_path_factory, data, capsys):
    """One or two values anywhere in a trained model's metadata replaced by odd ones: evaluating,
    predicting, comparing, exporting, plotting and the report work or end with one error line (an
    activation given as a list or a dict was a TypeError's traceback, a metric given as text a
    ValueError's in the report)."""
    folder = tmp_path_factory.mktemp("odd") / "run"
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("*.png", "*.svg", "*.html"))
    model = folder / "model.npz"
    meta = modelfile.load(model).meta
    meta.pop("path", None)
    places = list(json_places(meta, first=3))[1:]
    for _ in range(data.draw(st.integers(1, 2))):
        put_at(meta, data.draw(st.sampled_from(places)), data.draw(st.sampled_from(ODD_VALUES)))
    write_meta(model, meta)
    digit = folder / "digit.png"
    with np.load(small_npz) as z:
        Image.fromarray(z["x_test"][0]).save(digit)
    before = model.read_bytes()
    out = folder.parent
    commands = [
        ["evaluate", model, "--data", small_npz, "--json"],
        ["predict", model, digit, "--json"],
        ["compare", model, model, "--data", small_npz, "--json"],
        ["export", model, "--out", out / "m.safetensors", "--force"],
        ["plot", folder, "--data", small_npz, "--which", "curves", "weights", "--out", out / "plots"],
        ["report", folder, "--data", small_npz, "--out", out / "report.html"],
    ]
    for args in commands:
        code, _, err = in_process(capsys, *args)
        assert code == 0 or (code == 2 and err.startswith("error: ") and err.count("\n") == 1), (args, err)
    assert model.read_bytes() == before
    shutil.rmtree(out)
