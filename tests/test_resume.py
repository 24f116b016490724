"""Checkpoints and --resume on real MNIST: a run killed or stopped at any moment ends with the same weights,
and a damaged checkpoint is refused before anything is trained or written.

The runs resumed are real `digitnet train` subprocesses on 6,000 real training images (the default
preset's dropout, shifts and one-cycle Adam, with a 64-unit layer so an epoch takes a fraction of a
second); the damaged checkpoints are also resumed in-process, where Hypothesis draws the damage.
The reference is the same run left alone; "the same weights" means bit for bit, since the runs share a
machine and its BLAS threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from clitools import command, digitnet
from hostile_files import fuzz_settings, json_places, nested_json, npy, put_at, rewrite_meta
from hypothesis import given
from hypothesis import strategies as st

from digitnet import runs
from digitnet.data.datasets import load_dataset
from digitnet.errors import DigitnetError
from digitnet.presets import preset
from digitnet.training import Callback, train

PLAN = ["--preset", "default", "--hidden", "64", "--epochs", "6"]


def start(*args):
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(proc, n: int) -> list[str]:
    """Read the process's output until it has printed ``n`` epoch lines."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if sum(x.startswith("epoch") for x in lines) >= n:
            break
    return lines


def weights(folder) -> dict:
    with np.load(folder / "model.npz") as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert diff == 0.0, f"max |diff| {diff}"


def snapshot(folder) -> dict:
    """Every file's bytes and modification time: what 'left exactly as it was' compares."""
    return {  # a link is its target's name (a device in a file's place reads without end)
        p.name: (str(p.readlink()),)
        if p.is_symlink()
        else (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


@pytest.fixture(scope="module")
def reference(small_npz, tmp_path_factory):
    """The uninterrupted run: its folder and JSON line."""
    out = tmp_path_factory.mktemp("ref") / "run"
    result = digitnet("train", *PLAN, "--data", small_npz, "--out", out, "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def interrupted(small_npz, tmp_path_factory):
    """A run stopped by Ctrl-C part-way through an epoch (resumable, its checkpoint taken mid-epoch).

    Ctrl-C lands where it lands: a signal that comes between two epochs stops the run at an epoch's
    end instead, so the run is tried again, a little later into the epoch each time.
    """
    for attempt in range(6):
        out = tmp_path_factory.mktemp("intr") / "run"
        proc = start("train", *PLAN, "--data", small_npz, "--out", out)
        wait_for_epochs(proc, 1)
        time.sleep(0.01 * attempt)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        if runs.Run.open(out).read_checkpoint()["partial"] is not None:
            return out, rest
    pytest.fail("Ctrl-C never landed inside an epoch")


def test_ctrl_c_then_resume_ends_with_the_uninterrupted_weights(interrupted, reference, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(interrupted[0], folder)
    assert f"continue with: digitnet train --resume {interrupted[0]}" in interrupted[1]
    assert runs.Run.open(folder).state == "interrupted"
    checkpoint = runs.Run.open(folder).read_checkpoint()
    assert checkpoint["partial"] is not None, (
        "Ctrl-C came mid-epoch, so the checkpoint holds the epoch's sums"
    )
    result = digitnet("train", "--resume", folder, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.splitlines()[-1])
    assert info["resumed"] is True and info["epochs"] == 6 and info["interrupted"] is False
    assert_same_weights(weights(folder), weights(reference[0]))
    mine, ref = (json.loads((f / "history.json").read_text()) for f in (folder, reference[0]))
    assert mine["loss"] == ref["loss"] and len(mine["epochs"]) == 6
    assert [e["train_loss"] for e in mine["epochs"]] == [e["train_loss"] for e in ref["epochs"]]
    assert [e["grad_norm_1"] for e in mine["epochs"]] == [e["grad_norm_1"] for e in ref["epochs"]]
    assert info["test_accuracy"] == reference[1]["test_accuracy"]
    assert runs.Run.open(folder).state == "finished" and not (folder / "checkpoint.npz").exists()


def test_sigkill_at_any_moment_resumes_to_the_same_weights(small_npz, reference, tmp_path):
    folder = tmp_path / "run"
    rng = np.random.default_rng(0)
    args = ["train", *PLAN, "--data", small_npz, "--out", folder]
    kills, finished = 0, False
    for epochs_to_wait in (0, 1, 2, 1):  # the first kill comes before any checkpoint exists
        proc = start(*args)
        wait_for_epochs(proc, epochs_to_wait) if epochs_to_wait else time.sleep(0.2)
        time.sleep(float(rng.uniform(0.0, 0.2)))  # somewhere inside the next epoch, or its checkpoint
        proc.kill()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err
        state = runs.Run.open(folder).state if (folder / "run.json").exists() else None
        if proc.returncode == 0 or state == "finished":  # it reached its end before the kill
            finished = True
            break
        kills += 1
        if state is not None:
            assert state == "killed"
            args = ["train", "--resume", folder]
    assert kills >= 2
    if not finished:
        result = digitnet(*args)
        assert result.returncode == 0, result.stderr
    assert_same_weights(weights(folder), weights(reference[0]))
    info = json.loads((folder / "run.json").read_text())
    assert info["state"] == "finished" and info["resumed"] >= 1


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_one_usable(small_npz, reference, tmp_path):
    folder = tmp_path / "run"
    # The second checkpoint's write stalls before it is renamed into place, and the process is killed there.
    stall = (
        "import os, sys, time\n"
        "real, calls = os.fsync, []\n"
        "def fsync(fd):\n"
        "    calls.append(fd)\n"
        "    real(fd)\n"
        "    if len(calls) == 2:\n"
        "        print('writing', flush=True); time.sleep(60)\n"
        "os.fsync = fsync\n"
        "from digitnet.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            stall,
            "train",
            *PLAN,
            "--data",
            str(small_npz),
            "--out",
            str(folder),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("writing"):
            break
    proc.kill()
    proc.communicate(timeout=60)
    leftovers = list(folder.glob(".checkpoint.npz.*.part"))
    assert leftovers, "the half-written checkpoint is there"
    state = runs.Run.open(folder).read_checkpoint()
    assert len(state["history"]["epochs"]) == 1, "the first epoch's checkpoint is intact"
    result = digitnet("train", "--resume", folder)
    assert result.returncode == 0, result.stderr
    assert_same_weights(weights(folder), weights(reference[0]))
    assert not list(folder.glob(".*.part"))


def _rewrite_checkpoint(folder, change):
    rewrite_meta(folder / "checkpoint.npz", change)


def _truncate(folder):
    path = folder / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _scramble(folder):
    path = folder / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    data[100:4000] = np.random.default_rng(1).integers(0, 256, 3900, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _other_version(folder):
    _rewrite_checkpoint(folder, lambda h: h.update(format_version=99))


def _other_settings(folder):
    _rewrite_checkpoint(folder, lambda h: h["config"].update(lr=0.5))


def _other_shapes(folder):
    def change(h):
        h["state"]["step"]["model"]["0.weight"] = h["state"]["step"]["model"]["3.bias"]

    _rewrite_checkpoint(folder, change)


def _bloated(folder):
    """A checkpoint that unpacks to far more than this network's could hold (small on disk, 64 MB inside)."""
    path = folder / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(path, **arrays, padding=np.zeros(2**23))


def _crafted_header(shape):
    """A checkpoint whose first weight array's .npy header declares ``shape`` and holds no bytes."""

    def damage(folder):
        path = folder / "checkpoint.npz"
        with zipfile.ZipFile(path) as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
        members["a0.npy"] = npy(header={"descr": "<f4", "fortran_order": False, "shape": shape})
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)

    return damage


DEEP_JSON = nested_json(100_000)  # parsing it overflows Python's stack: a RecursionError


def _nested(name):
    def damage(folder):
        if name == "checkpoint.npz":
            path = folder / name
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            np.savez(path, **{**arrays, "meta": np.frombuffer(DEEP_JSON.encode(), np.uint8)})
        else:
            (folder / name).write_text(DEEP_JSON)

    return damage


@pytest.mark.parametrize(
    "damage, args, fragment",
    [
        (_bloated, [], "more than a checkpoint of this network"),
        (_nested("run.json"), [], "run.json cannot be read"),  # each was a RecursionError's traceback
        (_nested("config.json"), [], "config.json cannot be read as training settings"),
        (_nested("checkpoint.npz"), [], "checkpoint.npz is damaged"),
        (_crafted_header((10**12,)), [], "claims 4,000,000,000,000 bytes"),  # was a MemoryError
        (_crafted_header((2**40, 0, 2**40)), [], "no array can have"),
        (_truncate, [], "is damaged"),
        (_scramble, [], "checkpoint.npz"),
        (_other_version, [], "checkpoint format version 99"),
        (_other_settings, [], "other settings"),
        (_other_shapes, [], "0.weight"),
        (None, ["--lr", "0.1"], "leave out --lr"),
        (None, ["--preset", "default"], "leave out --preset"),
        (None, ["--data", "OTHER"], "is not the data"),
    ],
)
def test_a_bad_resume_is_one_error_and_changes_nothing(interrupted, tmp_path, damage, args, fragment, mnist):
    folder = tmp_path / "run"
    shutil.copytree(interrupted[0], folder)
    if damage is not None:
        damage(folder)
    if "OTHER" in args:
        other = tmp_path / "other.npz"
        np.savez(
            other,
            x_train=mnist.x_train[6000:12000].reshape(-1, 28, 28),
            y_train=mnist.y_train[6000:12000],
            x_test=mnist.x_test[:1000].reshape(-1, 28, 28),
            y_test=mnist.y_test[:1000],
        )
        args = ["--data", other]
    before = snapshot(folder)
    result = digitnet("train", "--resume", folder, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert snapshot(folder) == before


def _in_state(change):
    """A damage that changes the checkpoint's saved training state (its JSON) with ``change(state)``."""
    return lambda folder: _rewrite_checkpoint(folder, lambda header: change(header["state"]))


def _not_finite_weights(folder):
    """The first weight matrix of the checkpoint's network holds a NaN (the JSON is untouched)."""
    path = folder / "checkpoint.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    key = json.loads(arrays["meta"].tobytes())["state"]["step"]["model"]["0.weight"]["__array__"]
    arrays[key][3, 5] = np.nan
    np.savez(path, **arrays)


def _nan_in_json(state):
    state["history"]["epochs"][0]["seconds"] = float("nan")  # json.dumps writes NaN, which is not JSON


def _checkpoint_is_dev_zero(folder):
    (folder / "checkpoint.npz").unlink()
    (folder / "checkpoint.npz").symlink_to("/dev/zero")


# Each of these saved states ended a resume with a traceback (most after training part of an epoch, the
# run then marked failed), or, for the state that is not a dict, quietly started the run again.
STATE_DAMAGES = {
    "partial sums": (_in_state(lambda s: s.update(partial=5)), "'partial'"),
    "epochs": (_in_state(lambda s: s["history"].update(epochs=1.5)), "'history/epochs'"),
    "restored epoch": (
        _in_state(lambda s: s["history"].update(restored_epoch=7)),
        "'history/restored_epoch'",
    ),
    "lr history": (_in_state(lambda s: s["history"].update(lr="x")), "'history/lr'"),
    "best weights": (_in_state(lambda s: s["early_stopping"].update(best_weights=3)), "best_weights"),
    "dropout generator": (
        _in_state(lambda s: s["step"]["rng"]["2"]["state"].update(state=-1)),
        "dropout layer 2",
    ),
    "loader generator": (_in_state(lambda s: s["loader"]["rng"]["state"].update(inc=2**200)), "generator"),
    "diagnostics norms": (_in_state(lambda s: s["callbacks"]["Diagnostics"].update(norms=[1.0])), "'norms'"),
    "diagnostics weights": (
        _in_state(lambda s: s["callbacks"]["Diagnostics"].update(initial_weights=None)),
        "initial weights",
    ),
    "callbacks": (_in_state(lambda s: s.update(callbacks=5)), "'callbacks'"),
    "NaN in the JSON": (_in_state(_nan_in_json), "NaN is not a JSON number"),
    "too large a number": (
        _in_state(lambda s: s["partial"].update(loss=1e308 * 10)),  # json.dumps writes Infinity
        "Infinity is not a JSON number",
    ),
    "a whole number beyond any float": (
        _in_state(lambda s: s["partial"].update(loss=10**400)),  # OverflowError in the checks, once
        "is too large for a number",
    ),
    "settings not a table": (
        lambda folder: _rewrite_checkpoint(folder, lambda h: h.update(config="x")),  # AttributeError, once
        "its settings are not a table",
    ),
    "weights not finite": (_not_finite_weights, "'step/model/0.weight' must be finite"),
    "step count": (  # one error, but over three lines: the message showed the array
        _in_state(lambda s: s["step"]["optimizer"].update(t=s["history"]["loss"])),
        "step count 't' must be a whole number >= 0, not a ndarray",
    ),
    "a device in its place": (_checkpoint_is_dev_zero, "checkpoint.npz is not a file"),  # read without end
    "state not a dict": (
        lambda folder: _rewrite_checkpoint(folder, lambda h: h.update(state=[])),
        "not a dict",
    ),
}


@pytest.mark.parametrize("name", STATE_DAMAGES)
def test_a_saved_state_that_does_not_fit_is_refused_before_training(interrupted, small_npz, tmp_path, name):
    damage, fragment = STATE_DAMAGES[name]
    folder = tmp_path / "run"
    shutil.copytree(interrupted[0], folder)
    damage(folder)
    before = snapshot(folder)
    with pytest.raises(DigitnetError, match=re.escape(fragment)):
        runs.Run.open(folder).resume(load_dataset("mnist", data=small_npz))
    assert snapshot(folder) == before


@pytest.mark.parametrize("name", ["partial sums", "dropout generator", "NaN in the JSON", "step count"])
def test_a_saved_state_that_does_not_fit_is_one_error_line(interrupted, tmp_path, name):
    damage, fragment = STATE_DAMAGES[name]
    folder = tmp_path / "run"
    shutil.copytree(interrupted[0], folder)
    damage(folder)
    before = snapshot(folder)
    result = digitnet("train", "--resume", folder)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert snapshot(folder) == before


# What a damaged or crafted checkpoint may hold anywhere in its saved state ("a0" is an array of it).
ODD_VALUES = [
    None,
    True,
    -1,
    0,
    7,
    2**64,
    -(2**70),
    1e308,
    -0.5,
    "",
    "x",
    [],
    [1.0],
    {},
    [[[]]],
    {"__array__": "a0"},
]


class _StopAfterOneBatch(Callback):
    def on_batch_end(self, state):
        state.stop = True


@pytest.fixture(scope="module")
def small_mnist(small_npz):
    return load_dataset("mnist", data=small_npz)


@fuzz_settings(100)
@given(data=st.data())
def test_any_change_to_the_saved_state_resumes_or_is_refused_before_training(
    interrupted, small_mnist, tmp_path_factory, data
):
    """One or two values anywhere in the checkpoint's state replaced by odd ones: the run either goes on
    (here for one batch, its checkpoint written again) or is refused with one error, the folder as it was."""
    with np.load(interrupted[0] / "checkpoint.npz") as z:
        header = json.loads(z["meta"].tobytes())
    places = list(json_places(header["state"]))[1:]
    changes = data.draw(
        st.lists(st.tuples(st.sampled_from(places), st.sampled_from(ODD_VALUES)), min_size=1, max_size=2)
    )
    folder = tmp_path_factory.mktemp("odd") / "run"
    shutil.copytree(interrupted[0], folder)

    def change(h):
        for path, value in changes:
            put_at(h["state"], path, value)

    _rewrite_checkpoint(folder, change)
    before = snapshot(folder)
    try:
        runs.Run.open(folder).resume(small_mnist, callbacks=[_StopAfterOneBatch()])
    except DigitnetError:
        assert snapshot(folder) == before
    finally:
        shutil.rmtree(folder.parent)


def test_resume_refuses_what_is_not_a_resumable_run(reference, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    cases = [
        (reference[0], "nothing to resume"),
        (tmp_path / "plain", "not a run folder"),
        (tmp_path / "missing", "does not exist"),
    ]
    for folder, fragment in cases:
        before = snapshot(folder) if folder.exists() else None
        result = digitnet("train", "--resume", folder)
        assert result.returncode == 2 and result.stderr.startswith("error: ") and fragment in result.stderr, (
            result.stderr
        )
        assert len(result.stderr.strip().splitlines()) == 1
        assert (snapshot(folder) if folder.exists() else None) == before


def test_early_stopping_reports_the_epoch_it_restores(small_npz, tmp_path):
    out = tmp_path / "run"
    result = digitnet(
        "train",
        "--preset",
        "rmsprop",
        "--epochs",
        "30",
        "--lr",
        "3e-3",
        "--early-stopping",
        "2",
        "--data",
        small_npz,
        "--out",
        out,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.splitlines()[-1])
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    restored = info["restored_epoch"]
    assert info["stopped_early"] and restored == history["restored_epoch"] == history["best_epoch"]
    assert restored < len(history["epochs"]) == info["epochs"] < 30
    best, last = history["epochs"][restored - 1], history["epochs"][-1]
    assert best["val_accuracy"] != last["val_accuracy"], "pick a run whose last epoch scores differently"
    assert info["val_accuracy"] == metrics["val_accuracy"] == best["val_accuracy"]
    assert metrics["final_epoch"] == restored
    assert (
        f"restored the best weights (epoch {restored}, validation {100 * best['val_accuracy']:.2f}%)"
        in result.stdout
    )
    assert f"(validation {100 * best['val_accuracy']:.2f}%;" in result.stdout
    assert json.loads((out / "run.json").read_text())["val_accuracy"] == best["val_accuracy"]


def test_the_loop_resumes_from_any_epoch_to_the_same_weights(mnist):
    """In-process: from every checkpoint, for each optimiser kind, with dropout, shifts and early stopping."""
    data = dataclasses.replace(
        mnist,
        x_train=mnist.x_train[:3000],
        y_train=mnist.y_train[:3000],
        x_test=mnist.x_test[:300],
        y_test=mnist.y_test[:300],
    )
    for changes in (
        dict(optimizer="sgd", momentum=0.9, nesterov=True, lr=0.05),
        dict(optimizer="rmsprop", momentum=0.5, lr=1e-3, schedule="cosine"),
        dict(optimizer="adamw", lr=2e-3, early_stopping=1, label_smoothing=0.1, val_fraction=0.1),
    ):
        config = preset("default", hidden=(32, 16), epochs=3, **changes)
        states = []
        whole = train(config, data, checkpoint=states.append)
        assert len(states) == len(whole.history.epochs)

        class StopAt(Callback):  # stop in the middle of epoch 2, as Ctrl-C would
            def on_batch_end(self, state):
                if state.iteration == 30:
                    state.stop = True

        cut = []
        train(config, data, callbacks=[StopAt()], checkpoint=cut.append)
        for state in [*states[:-1], cut[-1]]:
            again = train(config, data, resume=state)
            assert again.history.loss == whole.history.loss
            assert_same_weights(again.model.state_dict(), whole.model.state_dict())
            assert again.history.restored_epoch == whole.history.restored_epoch
        fresh = train(dataclasses.replace(config, seed=1), data)
        assert not np.array_equal(fresh.model.state_dict()["0.weight"], whole.model.state_dict()["0.weight"])
