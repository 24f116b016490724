"""Hostile flags and paths on the command line, and what a kill -9 leaves behind.

Every impossible value is one ``error:`` line and exit status 2, said before
any work starts (nothing on stdout, no data loaded, no folder made); what a
killed download or run left half-written goes at the next start of the
command that makes it, and nothing a running command still needs goes with it.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clitools import assert_user_error, command, digitnet

from digitnet.data.sources import remove_litter

LONG = "x" * 300  # a name longer than any file system allows (255 bytes)


@pytest.fixture(scope="module")
def a_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plain") / "notes.txt"
    path.write_text("a file, not a folder\n")
    return path


@pytest.fixture(scope="module")
def trained(small_npz, tmp_path_factory) -> Path:
    """A run folder: a small network, one epoch on 6,000 real MNIST images."""
    out = tmp_path_factory.mktemp("runs") / "run"
    r = digitnet("train", "--hidden", "16", "--epochs", "1", "--data", small_npz, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--hidden", "1000000000"], "at most 16,384 units, got 1000000000"),
        (["--hidden", "4096,4096,4096"], "36,818,954 weights and biases; at most 20,000,000"),
        (["--hidden", ",".join(["8"] * 64)], "at most 63 hidden layers"),
        (["--hidden", ","], "give at least one hidden size"),
        (["--hidden", "0"], "hidden sizes must be at least 1"),
        (["--warmup-epochs", "inf"], "expected a finite number, got 'inf'"),
        (["--warmup-epochs", "nan"], "expected a finite number, got 'nan'"),
        (["--warmup-epochs", "30", "--epochs", "2"], "cannot be longer than the run"),
        (["--seed", "-1"], "the seed must be a whole number from 0 to 4,294,967,295, got -1"),
        (["--seed", str(2**64)], "from 0 to 4,294,967,295"),
        (["--epochs", "10000000000"], "epochs must be a whole number from 1 to 100,000"),
        (["--batch-size", "99999999999"], "the batch size must be a whole number from 0 to 1,000,000"),
        (["--batch-size", "-1"], "from 0 to 1,000,000"),
        (["--early-stopping", "-3"], "early-stopping patience must be a whole number from 0"),
        (["--lr", "nan"], "expected a finite number"),
        (["--lr", "1e999"], "expected a finite number, got '1e999'"),
        (["--lr", "-1"], "the learning rate must be > 0"),
        (["--l2", "inf"], "expected a finite number"),
        (["--weight-decay=-inf"], "expected a finite number"),
        (["--momentum", "nan"], "expected a finite number"),
        (["--augment-rotate", "NaN"], "expected a finite number"),
        (["--augment-shift", "99"], "the augmentation shift (pixels) must be a whole number from 0 to 8"),
        (["--init", "normal:inf"], "must be > 0 and at most 1e+06"),
        (["--init", "normal:nan"], "must be > 0 and at most 1e+06"),
        (["--init", "normal:1e300"], "must be > 0 and at most 1e+06"),
        (["--frames", "0", "--live", "--save", "x.gif"], "--frames must be 1 to 10,000"),
        (["--data", ","], "--data ',' names no file"),
        (["--data", " "], "--data is empty"),
        (["--data", LONG], "is 300 bytes long; a file or folder name can have at most 255"),
        (["--out", "/proc/digitnet-run"], "cannot be written: /proc is not writable"),
    ],
)
def test_impossible_flags_are_refused_before_any_work(flags, fragment, tmp_path):
    r = digitnet("train", *flags, cwd=tmp_path)
    assert_user_error(r, fragment)
    assert r.stdout == "" and not any(tmp_path.iterdir()), "nothing was loaded, trained or written"


def test_an_out_under_a_file_fails_before_training(a_file, small_npz, tmp_path):
    """The issue's case: it used to train for the whole run and fail when saving."""
    r = digitnet("train", "--data", small_npz, "--out", a_file / "run", cwd=tmp_path)
    assert_user_error(r, f"{a_file} is a file, not a folder")
    assert r.stdout == "" and a_file.read_text() == "a file, not a folder\n"
    r = digitnet("train", "--data", small_npz, "--out", a_file, cwd=tmp_path)
    assert_user_error(r, "is a file: give an output folder")


def test_a_300_character_out_name_fails_before_training(small_npz, tmp_path):
    r = digitnet("train", "--data", small_npz, "--out", tmp_path / LONG)
    assert_user_error(r, "argument --out: the name 'xxxx", "at most 255")
    assert r.stdout == "" and not any(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_an_unwritable_folder_fails_before_training(small_npz, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    r = digitnet("train", "--data", small_npz, "--out", locked / "run")
    assert_user_error(r, f"{locked} is not writable")


def test_the_default_run_folder_is_checked_too(small_npz, a_file, tmp_path):
    """Without --out the run goes to runs/<date-time>-<preset>: a file named runs is found at once."""
    (tmp_path / "runs").write_text("not a folder")
    r = digitnet("train", "--data", small_npz, cwd=tmp_path)
    assert_user_error(r, "runs is a file, not a folder")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["serve", "model.npz", "--connections", "0"], "--connections must be 1 to 10,000, not 0"),
        (["serve", "model.npz", "--workers", "1000"], "--workers must be 1 to 64, not 1000"),
        (["serve", "model.npz", "--port", "-1"], "0 to 65535"),
        (["tune", "--hidden", "64", "--search", "random", "--trials", "0"], "--trials must be 1 to 100,000"),
        (["tune", "--hidden", "64", "--workers", "100000"], "--workers must be 1 to 256"),
        (["tune", "--hidden", "64", "--connect-timeout", "inf"], "expected a finite number"),
        (["tune", "--hidden", "64", "--val-fraction", "nan"], "expected a finite number"),
        (["tune", "--hidden", "64", "--seed", "-1"], "from 0 to 4,294,967,295"),
        (["tune", "--hidden", "64", "--epochs", "999999999"], "from 1 to 100,000"),
        (["tune", "--hidden", "1000000000"], "at most 16,384 units"),
        (["tune", "--lr", "nan"], "is not a finite number"),
        (["import-torch", "x.pth", "--out", "m.npz", "--mean", "0.1", "--std", "0"], "--std must be above 0"),
        (
            ["import-torch", "x.pth", "--out", "m.npz", "--mean", "nan", "--std", "1"],
            "expected a finite number",
        ),
        (["import-torch", "x.pth", "--out", LONG + ".npz"], "at most 255"),
        (["export", "model.npz", "--out", "/proc/model.onnx"], "/proc is not writable"),
        (["evaluate", LONG], "at most 255"),
        (["predict", LONG, "--index", "0"], "at most 255"),
        (["data", "info", "--data", ","], "names no file"),
        (["data", "info", "--cache-dir", LONG], "at most 255"),
    ],
)
def test_other_commands_refuse_impossible_flags(args, fragment, tmp_path):
    r = digitnet(*args, cwd=tmp_path)
    assert_user_error(r, fragment)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "make_args, fragment",
    [
        (lambda run, f: ["export", run, "--out", f / "model.onnx"], "is a file, not a folder"),
        (lambda run, f: ["import-torch", f, "--out", f / "model.npz"], "is a file, not a folder"),
        (lambda run, f: ["report", run, "--out", f / "report.html"], "is not a folder"),
        (lambda run, f: ["plot", run, "--out", f / "plots"], "is a file, not a folder"),
        (lambda run, f: ["plot", run, "--out", f], "is a file: give an output folder"),
        (lambda run, f: ["predict", run, "--csv", f, "--submission", f / "s.csv"], "is a file, not a folder"),
        (
            lambda run, f: ["predict", run, "--index", "0", "--save-preview", f],
            "is a file: give an output folder",
        ),
        (lambda run, f: ["dashboard", run, "--interval", "1000000000"], "--interval must be 1 to 60,000 ms"),
        (lambda run, f: ["dashboard", run, "--save", "x.gif", "--frames", "99999"], "--frames must be 1"),
        (lambda run, f: ["torch-train", "--out", f / "model.pth"], "is a file, not a folder"),
        (lambda run, f: ["tune", "--hidden", "64", "--out", f / "search"], "is a file, not a folder"),
    ],
)
def test_every_output_is_checked_before_the_work(trained, a_file, make_args, fragment):
    r = digitnet(*make_args(trained, a_file))
    assert_user_error(r, fragment)
    assert a_file.read_text() == "a file, not a folder\n"


# --------------------------------------------------------------------------- litter after a kill
def dead_pid() -> int:
    """The process id of a process that has ended (and been reaped)."""
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )


def plant(folder: Path, name: str, *, folder_entry: bool = False, age: float = 3600) -> Path:
    """A leftover as a killed command leaves it: a file (or a folder holding one), ``age`` seconds old."""
    path = folder / name
    if folder_entry:
        path.mkdir(parents=True)
        (path / "part-of-it").write_bytes(b"\0" * 1000)
    else:
        path.write_bytes(b"\0" * 1000)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Promises 50 MB and sends 64 KB every 0.2 s, for ever: a download that is still going when killed."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(50 << 20))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


def test_a_download_killed_midway_is_cleaned_up_at_the_next_fetch(tmp_path):
    """A real kill -9 during a download leaves a .download-* folder with a .part file in it; the next
    'digitnet data fetch' removes it (and an old one from a process long gone), and keeps what is not
    its to remove: a live process's download and a file of the user's that merely ends in .part."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "DIGITNET_MNIST_MIRRORS": f"http://127.0.0.1:{server.server_address[1]}",
        "DIGITNET_PIP_FALLBACK": "0",
    }
    proc = subprocess.Popen(
        command("data", "fetch", "--cache-dir", cache),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 200_000 for p in cache.glob(".download-*/.*.part")):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    killed = list(cache.glob(".download-*"))
    assert len(killed) == 1 and list(killed[0].glob(".*.part")), "the kill left its download behind"
    old = plant(cache, ".download-a1b2c3d4", folder_entry=True)  # an older digitnet's name, no process id
    live = plant(cache, f".download-{os.getpid()}-abcd1234", folder_entry=True)  # this test is running
    users = plant(cache, ".notes.part")
    os.utime(killed[0], (time.time() - 10, time.time() - 10))  # older than the next command, surely

    env["DIGITNET_MNIST_MIRRORS"] = ""  # no mirror now: the fetch fails, after cleaning up
    r = subprocess.run(
        command("data", "fetch", "--cache-dir", cache), env=env, capture_output=True, text=True
    )
    assert_user_error(r, "could not fetch")
    assert not killed[0].exists() and not old.exists()
    assert live.exists() and users.exists()


def test_remove_litter_spares_what_a_running_command_is_writing(tmp_path):
    gone = dead_pid()
    stale_file = plant(tmp_path, f".model.npz.{gone}-1a2b3c4d.part")
    stale_run = plant(tmp_path, f".20260101-000000-default.{gone}-a1b2c3.part", folder_entry=True)
    stale_view = plant(tmp_path, f".live.{gone}-a1b2c3.part.gif")
    running = plant(tmp_path, f".model.npz.{os.getpid()}-1a2b3c4d.part")
    new = plant(tmp_path, f".other.npz.{gone}-1a2b3c4d.part", age=-60)  # written after this process began
    model = plant(tmp_path, "model.npz")
    removed = remove_litter(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_run, stale_view])
    assert all(p.exists() for p in (running, new, model))
    assert remove_litter(tmp_path / "absent") == []


def test_train_removes_a_killed_runs_half_made_folder(small_npz, tmp_path):
    """A run folder is made under a hidden .part name and renamed; a kill in between leaves it."""
    root = tmp_path / "runs"
    gone = dead_pid()
    half_made = plant(root, f".20260101-000000-default.{gone}-a1b2c3.part", folder_entry=True)
    a_model = plant(root, f".model.npz.{gone}-1a2b3c4d.part")
    r = digitnet(
        "train",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--data",
        small_npz,
        "--out",
        root / "new",
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["run_dir"] == str(root / "new")
    assert not half_made.exists() and not a_model.exists()
    assert sorted(p.name for p in root.iterdir()) == ["new"]
