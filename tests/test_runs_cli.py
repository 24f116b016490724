"""``digitnet runs`` on real run folders: finished, interrupted (Ctrl-C), killed, failed and running runs.

The runs train through the real command on a slice of MNIST (6,000 training and
1,000 test images as an NPZ), a few at once, so the module's set takes seconds.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from clitools import assert_user_error, command, digitnet, last_json
from hostile_files import ODD_VALUES, fuzz_settings, json_places, rewrite_meta, run_measured
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from digitnet.cli.main import main as cli_main
from digitnet.data import formats
from digitnet.viz import style

TINY = ["--preset", "adam-128-64", "--hidden", "32"]
FINISHED = {
    "lr-1e-3": ["--epochs", "2"],
    "lr-3e-3": ["--epochs", "2", "--lr", "0.003"],
    "hidden-64": ["--epochs", "2", "--hidden", "64"],
}
REASON = (
    "MemoryError: Unable to allocate 1.21 GiB for an array with shape (60000, 5400) and data type float32 "
    "while evaluating the validation split"
)


def read(folder, name):
    return json.loads((folder / name).read_text())


def whole_epochs(folder) -> int:
    """The epochs a run trained to their end, from its history: a Ctrl-C that lands in an epoch stops it
    after the batch under way, and the history keeps that part of an epoch (its sums so far), which the
    run's count of epochs done leaves out (its checkpoint resumes the epoch there)."""
    history = read(folder, "history.json")
    per_epoch = history["epochs"][0]["iteration"]  # the first epoch always ends: the Ctrl-C follows its line
    return len(history["loss"]) // per_epoch


def _start(root, name, small_npz, *flags):
    return subprocess.Popen(
        command("train", *TINY, *flags, "--data", small_npz, "--out", root / name),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _first_epoch(proc) -> None:
    for line in proc.stdout:
        if line.startswith("epoch"):
            return
    raise AssertionError(f"training ended before its first epoch: {proc.communicate()}")


@pytest.fixture(scope="module")
def root(small_npz, tmp_path_factory):
    """A folder of runs made for real, all at once: three finished, one interrupted, one killed,
    one failed, and a folder that is not a run. Also a listing taken while the killed one still trained."""
    root = tmp_path_factory.mktemp("runs")
    finished = {name: _start(root, name, small_npz, *flags) for name, flags in FINISHED.items()}
    interrupted = _start(root, "interrupted", small_npz, "--epochs", "500")
    killed = _start(root, "killed", small_npz, "--epochs", "500")
    try:
        _first_epoch(interrupted)
        interrupted.send_signal(signal.SIGINT)

        _first_epoch(killed)
        deadline = time.monotonic() + 120
        while read(root / "killed", "run.json")["epochs_done"] < 1:  # its first checkpoint is on disk
            assert killed.poll() is None and time.monotonic() < deadline, (
                "no checkpoint after the first epoch"
            )
            time.sleep(0.02)
        while_running = digitnet("runs", root, "--json")
        killed.send_signal(signal.SIGKILL)

        killed.communicate(timeout=60)
        assert killed.returncode == -signal.SIGKILL
        out, err = interrupted.communicate(timeout=120)
        assert interrupted.returncode == 130, (out, err)
        for name, proc in finished.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, (name, out, err)
    finally:
        for proc in [*finished.values(), interrupted, killed]:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    # the state a crash leaves (Run._end(FAILED, "<type>: <message>")), on a copy of the killed run
    shutil.copytree(root / "killed", root / "failed")
    info = read(root / "failed", "run.json")
    info.update(state="failed", reason=REASON)
    (root / "failed" / "run.json").write_text(json.dumps(info))

    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("try a wider network\n")
    return root, while_running


@pytest.fixture(scope="module")
def listing(root):
    root, _ = root
    text, data = digitnet("runs", root), digitnet("runs", root, "--json")
    assert text.returncode == 0 and data.returncode == 0, (text.stderr, data.stderr)
    return root, text.stdout, last_json(data.stdout)


def table_rows(stdout: str) -> dict:
    """The table's lines by run name (the second column)."""
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["created", "name", "preset"]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        rows[line.split()[2]] = line
    return rows


def test_the_json_rows_are_the_runs_files(listing):
    root, _, data = listing
    assert data["root"] == str(root)
    by_name = {r["name"]: r for r in data["runs"]}
    assert set(by_name) == {*FINISHED, "interrupted", "killed", "failed"}
    assert [r["name"] for r in data["runs"]] == [
        r["name"] for r in sorted(data["runs"], key=lambda r: (r["created"], r["name"]))
    ]
    for name in [*FINISHED, "interrupted"]:
        row, metrics = by_name[name], read(root / name, "metrics.json")
        assert (
            row["val_accuracy"] == metrics["val_accuracy"]
            and row["test_accuracy"] == metrics["test_accuracy"]
        )
        assert row["epochs_done"] == whole_epochs(root / name) and row["seconds"] == metrics["train_seconds"]
        assert metrics["epochs"] == len(read(root / name, "history.json")["epochs"])
    for name in FINISHED:
        assert by_name[name]["state"] == "finished" and by_name[name]["resumable"] is False
        assert by_name[name]["epochs_planned"] == 2
    assert (
        by_name["hidden-64"]["architecture"] == "784-64-10"
        and by_name["lr-1e-3"]["architecture"] == "784-32-10"
    )
    assert by_name["interrupted"]["state"] == "interrupted" and by_name["interrupted"]["resumable"] is True
    assert 1 <= by_name["interrupted"]["epochs_done"] < 500 == by_name["interrupted"]["epochs_planned"]

    killed, info = by_name["killed"], read(root / "killed", "run.json")
    assert info["state"] == "running"  # what the file says; nobody holds the lock
    assert killed["state"] == "killed" and killed["resumable"] is True and killed["test_accuracy"] is None
    assert (
        killed["epochs_done"] == info["epochs_done"] >= 1 and killed["val_accuracy"] == info["val_accuracy"]
    )
    assert by_name["failed"]["state"] == "failed" and by_name["failed"]["reason"] == REASON
    assert len(data["skipped"]) == 1 and "notes" in data["skipped"][0]


def test_a_run_that_is_training_reads_running(root):
    root, while_running = root
    assert while_running.returncode == 0, while_running.stderr
    row = {r["name"]: r for r in last_json(while_running.stdout)["runs"]}["killed"]
    assert row["state"] == "running" and row["resumable"] is False


def test_the_table_shows_each_state_and_the_resume_hint(listing):
    root, stdout, data = listing
    rows = table_rows(stdout)
    assert list(rows) == [r["name"] for r in data["runs"]]  # oldest first, like the JSON
    for name in FINISHED:
        metrics = read(root / name, "metrics.json")
        cells = rows[name].split()
        assert cells[-1] == "finished" and "2/2" in cells
        assert (
            f"{100 * metrics['val_accuracy']:.2f}%" in cells
            and f"{100 * metrics['test_accuracy']:.2f}%" in cells
        )
    metrics = read(root / "interrupted", "metrics.json")
    assert rows["interrupted"].endswith("interrupted, resumable")
    assert f"{whole_epochs(root / 'interrupted')}/500" in rows["interrupted"].split()
    assert f"{100 * metrics['test_accuracy']:.2f}%" in rows["interrupted"].split()
    killed = read(root / "killed", "run.json")
    assert rows["killed"].endswith("killed, resumable") and f"{killed['epochs_done']}/500" in rows["killed"]
    failed = rows["failed"].split("failed, resumable: ")[1]
    assert failed.endswith("…") and REASON.startswith(failed[:-1]) and len(failed) < len(REASON)

    after = stdout.split("\n\n", 1)[1]
    assert "resumable: each carries on from its last checkpoint with" in after
    hint = [line.strip() for line in after.splitlines() if line.startswith("  digitnet ")]
    assert hint == [f"digitnet train --resume {root / r['name']}" for r in data["runs"] if r["resumable"]]
    assert len(hint) == 3  # interrupted, killed, failed
    last = stdout.rstrip().splitlines()[-1]
    assert last.startswith("skipped: ") and str(root / "notes") in last and "not a run folder" in last


def test_an_empty_folder_has_no_runs_and_a_missing_one_is_an_error(tmp_path):
    result = digitnet("runs", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"no runs in {tmp_path}")
    assert last_json(result.stdout) == {"root": str(tmp_path), "runs": [], "skipped": []}
    assert_user_error(digitnet("runs", cwd=tmp_path), "runs is not a folder", "digitnet train")  # the default
    assert_user_error(digitnet("runs", tmp_path / "nowhere"), "nowhere is not a folder")
    (tmp_path / "file.txt").write_text("x")
    assert_user_error(digitnet("runs", tmp_path / "file.txt"), "file.txt is not a folder")


def as_a_user(*args) -> list[str]:
    """``digitnet ARGS`` as a user whom file permissions bind: root gives up its power to pass them."""
    import os

    if os.geteuid() != 0:
        return command(*args)
    if not shutil.which("setpriv"):
        pytest.skip("root, and no setpriv to run as a user whom permissions bind")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command(*args)]


def test_a_run_folder_that_cannot_be_read_is_skipped_or_one_error(root, tmp_path):
    """Another user's run (mode 000) in a shared folder: runs lists the others and names it;
    evaluate, plot and report on it are one error line (each a PermissionError traceback, once)."""
    root, _ = root
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copytree(root / "lr-1e-3", shared / "mine")
    shutil.copytree(root / "lr-1e-3", shared / "theirs")
    (shared / "theirs").chmod(0)
    try:
        result = subprocess.run(
            as_a_user("runs", shared, "--json"), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        listed = last_json(result.stdout)
        assert [r["name"] for r in listed["runs"]] == ["mine"]
        assert listed["skipped"] == [f"{shared / 'theirs'} cannot be read (Permission denied)"]
        for args in (
            ["evaluate", shared / "theirs"],
            ["plot", shared / "theirs"],
            ["report", shared / "theirs"],
        ):
            result = subprocess.run(as_a_user(*args), capture_output=True, text=True, timeout=120)
            assert_user_error(result, "Permission denied")
    finally:
        (shared / "theirs").chmod(0o755)


def png_of(path) -> Image.Image:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    image = Image.open(path)
    assert image.format == "PNG" and image.width >= 800 and image.height >= 300
    return image.convert("RGB")


def colour_pixels(image: Image.Image, hex_colour: str) -> int:
    rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return int((np.asarray(image) == rgb).all(axis=-1).sum())


def test_compare_shows_only_the_settings_that_differ(root, tmp_path):
    root, _ = root
    plot = tmp_path / "lr.png"
    result = digitnet("runs", "--compare", root / "lr-1e-3", root / "lr-3e-3", "--plot", plot, "--json")
    assert result.returncode == 0, result.stderr
    data = last_json(result.stdout)
    assert data["settings"] == {"lr": [0.001, 0.003]}
    assert data["plot"] == str(plot)
    lines = result.stdout.splitlines()
    assert lines[0] == "settings that differ:"
    assert lines[1].split() == ["setting", "lr-1e-3", "lr-3e-3"] and lines[2].split() == [
        "lr",
        "0.001",
        "0.003",
    ]
    assert not lines[3].strip()  # one setting, then the figures
    figures = {line[:22].strip(): line[22:].split() for line in lines[4:] if line[:22].strip()}
    for k, name in enumerate(["lr-1e-3", "lr-3e-3"]):
        metrics = read(root / name, "metrics.json")
        assert figures["validation accuracy"][k] == f"{100 * metrics['val_accuracy']:.2f}%"
        assert figures["test accuracy"][k] == f"{100 * metrics['test_accuracy']:.2f}%"
        assert figures["epochs"][k] == "2/2" and figures["state"][k] == "finished"
        assert figures["best epoch (val loss)"][k] == str(metrics["best_epoch"])
        assert figures["seconds"][k] == f"{metrics['train_seconds']:.1f}"
        assert data["runs"][k]["val_accuracy"] == metrics["val_accuracy"]
    assert f"saved {plot}" in result.stdout
    image = png_of(plot)
    assert (
        colour_pixels(image, style.LAYER_COLOURS[0]) > 300
        and colour_pixels(image, style.LAYER_COLOURS[1]) > 300
    )
    assert colour_pixels(image, style.LAYER_COLOURS[2]) == 0


def test_compare_by_name_with_stopped_runs_draws_in_the_current_folder(root, tmp_path):
    root, _ = root
    names = ["lr-1e-3", "hidden-64", "interrupted", "killed"]
    result = digitnet("runs", root, "--compare", *names, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = last_json(result.stdout)
    assert set(data["settings"]) == {"hidden", "epochs"}  # lr, the preset and the seed are shared
    assert data["settings"]["hidden"] == [[32], [64], [32], [32]]
    assert data["settings"]["epochs"] == [2, 2, 500, 500]
    assert [r["state"] for r in data["runs"]] == ["finished", "finished", "interrupted", "killed"]
    assert data["plot"] == "runs-compare.png"
    assert "no curves yet" not in result.stdout  # a killed run has no history.json: its checkpoint's is drawn
    hidden = next(line for line in result.stdout.splitlines() if line.startswith("hidden "))
    assert hidden.split() == ["hidden", "32", "64", "32", "32"]
    image = png_of(tmp_path / "runs-compare.png")
    for colour in style.LAYER_COLOURS[:2]:  # two epochs each: lines
        assert colour_pixels(image, colour) > 300
    assert colour_pixels(image, style.LAYER_COLOURS[2]) > 50  # one epoch: a point in each panel
    assert colour_pixels(image, style.LAYER_COLOURS[3]) > 50  # the killed run, up to its checkpoint


def test_compare_without_matplotlib_still_prints_the_table(root, tmp_path):
    root, _ = root
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from digitnet.cli.main import main; raise SystemExit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "runs", root, "--compare", "lr-1e-3", "lr-3e-3", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "pip install 'digitnet[viz]'" in notes[0]
    data = last_json(result.stdout)
    assert data["plot"] is None and data["settings"] == {"lr": [0.001, 0.003]}
    assert not (tmp_path / "runs-compare.png").exists()


def test_bad_compare_inputs_are_one_error_line(root, tmp_path):
    root, _ = root
    assert_user_error(digitnet("runs", root, "--compare", "lr-1e-3"), "at least two runs")
    assert_user_error(digitnet("runs", root, "--compare", "lr-1e-3", "notes"), "notes is not a run folder")
    assert_user_error(digitnet("runs", root, "--compare", "lr-1e-3", "nowhere"), "nowhere does not exist")
    assert_user_error(digitnet("runs", root, "--plot", tmp_path / "x.png"), "--compare")
    assert_user_error(
        digitnet("runs", root, "--compare", "lr-1e-3", "lr-3e-3", "--plot", tmp_path / "x.txt"), ".png"
    )
    assert_user_error(
        digitnet("runs", root, "--compare", "lr-1e-3", "lr-3e-3", "--plot", tmp_path / "no" / "x.png"),
        "does not exist",
    )
    assert not list(tmp_path.iterdir())


# A value put where a run folder's JSON holds another, and what reads it: each ended the command with a
# traceback before the folder's files were checked as they are read.
DAMAGED = {
    "run.json preset": ("run.json", ("preset",), [None], "runs", "'preset' holds [None], not text"),
    "run.json seconds": ("run.json", ("seconds",), [], "runs", "'seconds' holds [], not a number"),
    "run.json created": ("run.json", ("created",), -1, "runs", "'created' holds -1, not text"),
    "run.json data": ("run.json", ("data",), "finished", "resume", "'data' holds 'finished', not a dict"),
    "run.json architecture": ("run.json", ("architecture", 1), [[]], "resume", "'architecture'"),
    "metrics.json accuracy": ("metrics.json", ("test_accuracy",), [None], "runs", "'test_accuracy' holds"),
    "config.json dataset": ("config.json", ("dataset",), [None], "resume", "unknown dataset"),
    "history.json accuracy": (
        "history.json",
        ("epochs", 0, "train_accuracy"),
        [1],
        "plot",
        "'epochs/1/train_",
    ),
    "history.json best epoch": ("history.json", ("best_epoch",), 0.5, "plot", "'best_epoch' must be None or"),
    "history.json loss": ("history.json", ("loss", 0), {}, "plot", "'loss' must be a row of numbers"),
    "history.json extra": ("history.json", ("extra",), 1.5, "plot", "'extra' must be a dict"),
}


@pytest.mark.parametrize("name", DAMAGED)
def test_a_damaged_run_folder_is_named_not_a_traceback(root, tmp_path, name):
    file, path, value, reader, fragment = DAMAGED[name]
    runs_root = tmp_path / "runs"
    shutil.copytree(root[0] / "interrupted", runs_root / "damaged")
    shutil.copytree(root[0] / "lr-1e-3", runs_root / "lr-1e-3")
    folder = runs_root / "damaged"
    content = read(folder, file)
    *way, last = path
    place = content
    for key in way:
        place = place[key]
    place[last] = value
    (folder / file).write_text(json.dumps(content))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if reader == "runs":  # the damaged folder is skipped with the reason, the others listed
        result = digitnet("runs", runs_root, "--json")
        assert result.returncode == 0, result.stderr
        listed = last_json(result.stdout)
        assert [row["name"] for row in listed["runs"]] == ["lr-1e-3"]
        assert len(listed["skipped"]) == 1 and fragment in listed["skipped"][0], listed["skipped"]
        assert_user_error(digitnet("runs", runs_root, "--compare", "damaged", "lr-1e-3"), fragment)
    elif reader == "resume":
        assert_user_error(digitnet("train", "--resume", folder), fragment)
    else:
        assert_user_error(
            digitnet("plot", folder, "--which", "curves", "--out", tmp_path / "plots"), fragment
        )
        assert not (tmp_path / "plots").exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


HUGE = {"run.json": "runs", "config.json": "resume", "history.json": "plot"}  # a file, and what reads it


@pytest.mark.parametrize("file", HUGE)
def test_a_run_folders_huge_json_file_is_refused_in_bounded_memory(root, tmp_path, file):
    runs_root = tmp_path / "runs"
    folder = runs_root / "damaged"
    shutil.copytree(root[0] / "interrupted", folder)
    with open(folder / file, "r+b") as fh:
        fh.truncate(4 << 30)  # 4 GiB (sparse: no disk), far more than digitnet writes to one
    before = {p.name: p.stat().st_size for p in folder.iterdir()}
    args = {
        "runs": ["runs", runs_root, "--json"],
        "resume": ["train", "--resume", folder],
        "plot": ["plot", folder, "--which", "curves", "--out", tmp_path / "plots"],
    }[HUGE[file]]
    (tmp_path / "cwd").mkdir()
    result, peak = run_measured(args, tmp_path / "cwd")
    expected = [f"damaged/{file}", f"(it holds more than {formats.MAX_JSON_BYTES:,} bytes"]
    if HUGE[file] == "runs":  # the folder is skipped, with the reason
        assert result.returncode == 0, result.stderr
        skipped = last_json(result.stdout)["skipped"]
        assert len(skipped) == 1 and all(fragment in skipped[0] for fragment in expected), skipped
    else:
        assert_user_error(result, *expected)
    assert peak < 1 << 30, f"peak resident memory {peak >> 20} MiB"
    assert {p.name: p.stat().st_size for p in folder.iterdir()} == before
    assert not (tmp_path / "plots").exists()


@fuzz_settings(30)
@given(data=st.data())
def test_any_change_to_a_run_folders_json_is_read_or_named(root, tmp_path_factory, data, capsys):
    """One value anywhere in run.json, config.json, history.json or metrics.json replaced by an odd one:
    listing, comparing and plotting the run work or end with one error line, and change none of its files."""
    runs_root = tmp_path_factory.mktemp("odd")
    folder = runs_root / "run"
    shutil.copytree(root[0] / "interrupted", folder)
    shutil.copytree(root[0] / "lr-1e-3", runs_root / "other")
    name = data.draw(st.sampled_from(["run.json", "config.json", "history.json", "metrics.json"]))
    content = read(folder, name)
    path = data.draw(st.sampled_from(list(json_places(content, first=3))[1:]))
    place = content
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = data.draw(st.sampled_from(ODD_VALUES))
    (folder / name).write_text(json.dumps(content))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    commands = [
        ["runs", runs_root, "--json"],
        ["runs", runs_root, "--compare", "run", "other", "--plot", runs_root / "c.png"],
    ]
    if name == "history.json":  # what the plots read (compare's too; the table above reads the rest)
        commands += [["plot", folder, "--which", "curves", "gradients", "--out", runs_root / "plots"]]
    for args in commands:
        status = cli_main([str(a) for a in args])
        err = capsys.readouterr().err
        assert status == 0 or (status == 2 and err.startswith("error: ") and err.count("\n") == 1), (
            args,
            err,
        )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    shutil.rmtree(runs_root)


def test_a_killed_runs_damaged_checkpoint_history_draws_no_curves(root, tmp_path):
    """A killed run has no history.json: compare reads its history from the checkpoint, checked as a resume
    checks it (a list as an epoch's training loss ended the comparison in a traceback)."""
    runs_root = tmp_path / "runs"
    for name in ("killed", "lr-1e-3"):
        shutil.copytree(root[0] / name, runs_root / name)
    path = runs_root / "killed" / "checkpoint.npz"

    def change(header):
        header["state"]["history"]["epochs"][0]["train_loss"] = [1]

    rewrite_meta(path, change)
    before = path.read_bytes()
    result = digitnet("runs", runs_root, "--compare", "killed", "lr-1e-3", "--plot", tmp_path / "c.png")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "no curves yet for killed" in result.stdout and (tmp_path / "c.png").exists()
    assert path.read_bytes() == before
