"""Hyperparameter search on real MNIST: values, a whole grid search through the CLI, parallel workers that
agree with one process, Ctrl-C and --resume, median pruning, divergence, a worker killed mid-trial, and every
bad input. The Optuna study itself (TPE, Hyperband, storages, a killed search): test_tune_optuna.py.

Trials train on a stratified subset of 2,000-3,000 images for 2-4 epochs, a fraction of a second each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hostile_files import nested_json

from digitnet import modelfile
from digitnet.cli.main import main as cli_main
from digitnet.errors import ConfigError
from digitnet.training import train
from digitnet.tune import Results, SearchSpec, parse_dimension, run_search, search_data
from digitnet.tune.plots import heatmap_table
from digitnet.tune.space import decode_params, key
from digitnet.tune.study import make_sampler

GRID = ["--hidden", "16,64", "--l2", "0,5", "--epochs", "2", "--subset", "2000"]


def digitnet(*args, timeout=300, **kw):
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def records(folder) -> dict[int, dict]:
    return {r["trial"]: r for r in json.loads((folder / "results.json").read_text())["trials"]}


# --------------------------------------------------------------------------- values and trials
def test_lists_ranges_and_layers_parse_and_sample_as_written():
    import optuna

    assert parse_dimension("hidden", "64,110,256-128,64").values == [[64], [110], [256, 128]]
    assert parse_dimension("optimizer", "adam, sgd").values == ["adam", "sgd"]
    spec = SearchSpec(
        space={"lr": "1e-4:1e-1", "dropout": "0:0.5", "hidden": "32:512", "l2": "0,1"},
        method="random",
        trials=3,
    ).validate()
    study = optuna.create_study(sampler=make_sampler(spec))
    draws = [decode_params(study.ask(spec.distributions()).params) for _ in range(3000)]
    lr = np.array([d["lr"] for d in draws])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-1
    # log-uniform: half the draws lie below the geometric middle 10^-2.5 (uniform would put 3% there)
    assert abs(np.mean(lr < 10**-2.5) - 0.5) < 0.04
    assert abs(np.mean([d["dropout"] for d in draws]) - 0.25) < 0.02
    assert all(len(d["hidden"]) == 1 and 32 <= d["hidden"][0] <= 512 for d in draws)
    assert all(isinstance(d["hidden"][0], int) for d in draws)
    assert abs(np.mean([d["hidden"][0] < (32 * 512) ** 0.5 for d in draws]) - 0.5) < 0.04
    assert {d["l2"] for d in draws} == {0.0, 1.0}


def test_a_grid_has_every_combination_once_and_sampled_draws_are_seeded():
    import optuna

    grid = SearchSpec(space={"hidden": "64,110,128", "l2": "0,1,5"}).validate().grid()
    assert len(grid) == 9 and len({json.dumps(t) for t in grid}) == 9
    assert {(t["hidden"][0], t["l2"]) for t in grid} == {(h, l2) for h in (64, 110, 128) for l2 in (0, 1, 5)}
    for method in ("random", "tpe"):
        spec = dict(space={"lr": "1e-4:1e-1", "hidden": "32,64"}, method=method, trials=12)

        def draws(seed, spec=spec):
            s = SearchSpec(**spec, seed=seed).validate()
            study = optuna.create_study(sampler=make_sampler(s), direction="maximize")
            out = []
            for _ in range(12):
                trial = study.ask(s.distributions())
                out.append(decode_params(trial.params))
                study.tell(trial, trial.params["lr"])  # a score, for TPE to model after its random start
            return out

        a = draws(3)
        assert a == draws(3) and len({json.dumps(t) for t in a}) == 12
        assert draws(4) != a
    # a sampled search over lists runs no more trials than there are combinations
    assert SearchSpec(space={"hidden": "16,32"}, method="random", trials=5).validate().total() == 2
    # with only lists given, the search defaults to a grid; with a range, to TPE
    assert SearchSpec(space={"hidden": "16,32"}).validate().method == "grid"
    assert SearchSpec(space={"hidden": "16,32", "lr": "1e-3:1e-2"}).validate().method == "tpe"


# --------------------------------------------------------------------------- a whole search
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "search"
    scratch = tmp_path_factory.mktemp("scratch")
    result = digitnet(
        "tune", *GRID, "--workers", "2", "--out", out, "--json", env={**os.environ, "TMPDIR": str(scratch)}
    )
    assert result.returncode == 0, result.stderr
    # the workers' copy of the images (one file they all map) is gone once the search ends
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("digitnet-tune-")]
    return out, result


def test_a_grid_search_ranks_refits_saves_and_plots(searched, mnist):
    out, result = searched
    info = last_json(result.stdout)
    assert info["trials"] == 4 and info["counts"] == {"ok": 4} and "2 local processes" in info["backend"]
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,status,hidden,l2,val_accuracy,val_loss")
    assert len(rows) == 5 and all(",ok," in r for r in rows[1:])
    found = records(out)
    best = max(found.values(), key=lambda r: r["val_accuracy"])
    assert info["best"]["hidden"] == best["params"]["hidden"] and info["best"]["l2"] == best["params"]["l2"]
    assert info["best"]["val_accuracy"] == best["val_accuracy"] and info["best"]["epochs"] == 2
    # the winner was refitted on training + validation images, and its test accuracy is the saved model's
    model = modelfile.load(out)
    assert model.meta["config"]["val_fraction"] == 0 and model.meta["metrics"]["n_train"] == 2000
    assert model.architecture["sizes"] == [784, *best["params"]["hidden"], 10]
    accuracy = float(np.mean(model.predict(mnist.x_test) == mnist.y_test))
    assert info["test_accuracy"] == pytest.approx(accuracy, abs=1e-12) and accuracy > 0.75
    assert info["model"] == str(out / "model.npz")
    # the two workers started on the larger networks, and the small ones filled in after them
    first = sorted(found.values(), key=lambda r: r["started"])[:2]
    assert [r["params"]["hidden"] for r in first] == [[64], [64]] and {r["trial"] for r in first} == {0, 1}
    # each worker was held to its share of the BLAS threads, in its own process
    assert {r["blas_threads"] for r in found.values()} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert result.stdout.count("trial ") >= 4 and "Trials by validation accuracy" in result.stdout
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_the_plots_show_the_search(searched):
    from matplotlib.image import imread

    out, result = searched
    plots = last_json(result.stdout)["plots"]
    assert set(plots) == {"heatmap", "hyperparams", "curves", "history", "importance"}
    for path in plots.values():
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 400 and image[..., :3].std() > 0.05
    found = list(records(out).values())
    xs, ys, table = heatmap_table(found, "hidden", "l2")
    assert xs == [[16], [64]] and ys == [0.0, 5.0]
    for r in found:
        assert table[ys.index(r["params"]["l2"]), xs.index(r["params"]["hidden"])] == r["val_accuracy"]


@pytest.mark.parametrize(
    "space",
    [
        {"lr": "1e-3:1e-2", "dropout": "0:0.3", "l2": "0,1", "batch_size": "64,128"},
        {"lr": "1e-3:1e-2", "dropout": "0:0.3", "l2": "0,1", "batch_size": "64,128", "hidden": "16,32"},
    ],
    ids=["4", "5"],
)
def test_every_searched_hyperparameter_has_its_panel(mnist, tmp_path, space):
    """Four or five of them leave empty places in the rows of three: it was a ValueError from zip()
    after the whole search had run."""
    from digitnet.tune.plots import plot_hyperparams, save_plots

    spec = SearchSpec(space=space, method="random", trials=3, epochs=1, subset=300).validate()
    results = Results.create(tmp_path / "search", spec)
    data, _ = search_data(mnist, spec.subset, spec.seed)
    assert run_search(results, data, workers=1).ran == 3
    assert "hyperparams" in save_plots(results)
    fig = plot_hyperparams(list(results.records.values()), list(spec.dimensions()))
    assert sum(ax.get_visible() for ax in fig.axes) == len(space) and len(fig.axes) == 6  # two rows of three


def test_trials_in_workers_score_as_one_process_and_as_train_does(searched, mnist, tmp_path):
    out, _ = searched
    spec = Results.open(out).spec
    results = Results.create(tmp_path / "serial", spec)
    data, refit_data = search_data(mnist, spec.subset, spec.seed)
    outcome = run_search(results, data, workers=1)
    assert outcome.ran == 4 and not outcome.interrupted
    parallel = records(out)
    assert {r["pid"] for r in results.records.values()} == {os.getpid()}
    assert os.getpid() not in {r["pid"] for r in parallel.values()}
    # one BLAS thread in each worker, all of them here: float32 products round a little differently
    parallel = {key(r["params"]): r for r in parallel.values()}
    assert len(parallel) == 4
    for r in results.records.values():
        assert abs(r["val_accuracy"] - parallel[key(r["params"])]["val_accuracy"]) <= 1 / 200 + 1e-12
        assert r["val_loss"] == pytest.approx(parallel[key(r["params"])]["val_loss"], rel=1e-5)
    # a trial is exactly what `train` gives for its configuration on the same images
    best = results.best()
    config = spec.base_config()
    config.hidden, config.l2 = tuple(best["params"]["hidden"]), best["params"]["l2"]
    direct = train(config, refit_data)
    assert direct.metrics["val_accuracy"] == best["val_accuracy"]
    assert direct.metrics["n_train"] + direct.metrics["n_val"] == 2000


# --------------------------------------------------------------------------- failures and interruptions
def test_ctrl_c_keeps_finished_trials_and_resume_runs_only_the_rest(tmp_path):
    out = tmp_path / "search"
    cmd = [
        sys.executable,
        "-m",
        "digitnet",
        "tune",
        "--hidden",
        "16,32,48,64",
        "--l2",
        "0,1",
        "--epochs",
        "3",
        "--subset",
        "3000",
        "--workers",
        "2",
        "--out",
        str(out),
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.json").exists() and len(records(out)) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the workers get it too
    t0 = time.perf_counter()
    stdout, stderr = proc.communicate(timeout=60)
    print("stop", time.perf_counter() - t0)
    assert proc.returncode == 130, (stdout, stderr)
    assert f"digitnet tune --resume {out}" in stdout and "Traceback" not in stderr
    assert last_json(stdout)["interrupted"] is True
    assert not _session_alive(proc.pid), "processes outlived the search"
    found = records(out)
    before = {n: r for n, r in found.items() if r["status"] == "ok"}
    # the trials that were running are recorded as interrupted, and run again by --resume
    assert 2 <= len(before) < 8 and {r["status"] for r in found.values()} <= {"ok", "interrupted"}

    t0 = time.perf_counter()
    result = digitnet("tune", "--resume", out, "--workers", "2", "--json")
    print("resume", time.perf_counter() - t0)
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} of 8 trials already done" in result.stdout
    after = records(out)
    ok = [r for r in after.values() if r["status"] == "ok"]
    assert len(ok) == 8 and len({key(r["params"]) for r in ok}) == 8
    assert last_json(result.stdout)["counts"]["ok"] == 8
    for n, r in before.items():  # not run again
        assert after[n]["started"] == r["started"] and after[n]["pid"] == r["pid"]
    assert (out / "model.npz").exists()


def test_a_ctrl_c_during_a_read_of_the_study_is_acted_on_after_it(mnist, tmp_path, monkeypatch):
    # Raised inside the study's database calls, a KeyboardInterrupt can leave a read's lock held, and
    # the interrupted trials' records then wait on it for the database's whole timeout (60 s).
    spec = SearchSpec(space={"l2": "0,1,2,3,4,5"}, preset="wide-512", epochs=3, subset=3000).validate()
    results = Results.create(tmp_path / "search", spec)
    data, _ = search_data(mnist, spec.subset, spec.seed)
    storage = results.study._storage
    read, armed, reads = storage.get_all_trials, [], []

    def get_all_trials(*args, **kwargs):
        if armed and not reads:  # Ctrl-C, with the read under way
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal's handler runs here, before the read is done
            reads.append("done" if (found := read(*args, **kwargs)) is not None else "failed")
            return found
        return read(*args, **kwargs)

    monkeypatch.setattr(storage, "get_all_trials", get_all_trials)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest was started in the background
    t0 = time.perf_counter()
    try:
        outcome = run_search(results, data, workers=2, on_result=lambda record: armed.append(record))
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C was raised inside the read and escaped the search")
    assert reads == ["done"] and outcome.interrupted
    assert time.perf_counter() - t0 < 30
    assert signal.getsignal(signal.SIGINT) is before  # put back
    found = results.records
    ok = [n for n, r in found.items() if r["status"] == "ok"]
    assert 1 <= len(ok) < 6 and {r["status"] for r in found.values()} <= {"ok", "interrupted"}
    saved = json.loads((tmp_path / "search" / "results.json").read_text())
    assert {t["trial"]: t["status"] for t in saved["trials"]} == {n: r["status"] for n, r in found.items()}


@pytest.mark.parametrize("when", ["a trial is asked for", "a trial sets up"])
def test_a_ctrl_c_before_a_trial_trains_stops_the_search_before_that_trial_runs(
    mnist, tmp_path, monkeypatch, when
):
    # In this process the search's handler only notes a Ctrl-C; the trial used to run to its end when
    # the Ctrl-C came while it was asked for (Optuna's ask) or set up (before training took Ctrl-C over).
    from digitnet import training

    spec = SearchSpec(space={"l2": "0,1"}, preset="wide-512", epochs=30, subset=3000).validate()
    results = Results.create(tmp_path / "search", spec)
    data, _ = search_data(mnist, spec.subset, spec.seed)
    sent = []

    def ctrl_c_during(real):
        def wrapped(*args, **kwargs):
            if not sent:
                sent.append(os.kill(os.getpid(), signal.SIGINT))
                time.sleep(0.05)  # the handler runs here
            return real(*args, **kwargs)

        return wrapped

    if when == "a trial is asked for":
        monkeypatch.setattr(results, "ask", ctrl_c_during(results.ask))
    else:
        monkeypatch.setattr(training, "build_model", ctrl_c_during(training.build_model))
    before = signal.getsignal(signal.SIGINT)
    t0 = time.perf_counter()
    outcome = run_search(results, data)  # one slot: the trials run in this process
    assert sent and outcome.interrupted and outcome.ran == 0
    assert time.perf_counter() - t0 < 15  # 30 epochs of 2,700 images take about a minute
    assert signal.getsignal(signal.SIGINT) is before
    (record,) = results.records.values()  # the second trial was never asked for
    assert record["status"] == "interrupted" and record["epochs"] <= 1


def _session_alive(sid: int) -> list[str]:
    """The command lines of the live processes in session ``sid``, after up to 5 s for them to end."""
    deadline = time.monotonic() + 5
    while True:
        alive = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z":
                    alive.append(open(f"/proc/{pid}/cmdline").read().replace("\0", " "))
            except OSError:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_hopeless_trials_are_pruned_and_diverging_ones_recorded(mnist, tmp_path):
    spec = SearchSpec(
        space={"hidden": "64", "optimizer": "sgd", "lr": "0.1,0.05,0.08,1e-6,1e10"},
        epochs=4,
        subset=2000,
        prune="median",
    ).validate()
    results = Results.create(tmp_path / "search", spec)
    data, _ = search_data(mnist, spec.subset, spec.seed)
    run_search(results, data)
    by_lr = {r["params"]["lr"]: r for r in results.records.values()}
    assert [by_lr[lr]["status"] for lr in (0.1, 0.05, 0.08)] == ["ok"] * 3
    assert all(by_lr[lr]["epochs"] == 4 for lr in (0.1, 0.05, 0.08))
    slow = by_lr[1e-6]
    assert slow["status"] == "pruned" and slow["epochs"] == 1 and "median rule" in slow["reason"]
    assert by_lr[1e10]["status"] == "diverged" and "diverged" in by_lr[1e10]["reason"]
    assert results.best()["params"]["lr"] in (0.1, 0.05, 0.08)
    csv_rows = (tmp_path / "search" / "results.csv").read_text().splitlines()
    assert sum(",pruned," in r for r in csv_rows) == 1 and sum(",diverged," in r for r in csv_rows) == 1


def test_a_trial_whose_worker_dies_is_failed_and_the_others_finish(mnist, tmp_path):
    spec = SearchSpec(space={"l2": "0,1,2,3"}, preset="wide-512", epochs=3, subset=3000).validate()
    results = Results.create(tmp_path / "search", spec)
    data, _ = search_data(mnist, spec.subset, spec.seed)
    submits, killers = [], []

    def on_submit(number, params):
        submits.append(number)
        # trial 0 is killed first with trial 1 beside it (once both are handed out), then alone
        if (number, submits.count(number)) in ((1, 1), (0, 2)):
            killers.append(threading.Thread(target=_kill_new_workers, daemon=True))
            killers[-1].start()

    outcome = run_search(results, data, workers=2, on_submit=on_submit)
    for k in killers:
        k.join(10)
    found = results.records
    assert outcome.ran == 4 and sorted(found) == [0, 1, 2, 3]
    assert found[0]["status"] == "failed" and "worker process died" in found[0]["reason"]
    assert "SIGKILL" in found[0]["reason"]
    assert [found[n]["status"] for n in (1, 2, 3)] == ["ok"] * 3
    assert sorted(submits[:4]) == [0, 0, 1, 1]  # both were tried again
    assert key_set(results.done()) == {1, 2, 3}, "a failed trial is run again by --resume"
    assert json.loads((tmp_path / "search" / "results.json").read_text())["counts"] == {"failed": 1, "ok": 3}


_killed: set = set()


def _kill_new_workers():
    """SIGKILL every loky worker process of this test process not killed before, as soon as one exists."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
                cmdline = open(f"/proc/{pid}/cmdline").read()
            except OSError:
                continue
            if ppid == os.getpid() and "popen_loky_posix" in cmdline and int(pid) not in _killed:
                found.append(int(pid))
        if found:
            for pid in found:
                _killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.01)


def key_set(keys) -> set[int]:
    """The trial numbers of done keys (trial n has l2 = n)."""
    return {int(json.loads(k)["l2"]) for k in keys}


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "nothing to search"),
        (["--hidden", ""], "--hidden: give at least one value"),
        (["--hidden", "64,,128"], "an empty value between commas"),
        (["--hidden", "64,abc"], "'abc' is not a whole number"),
        (["--l2", "0,x"], "'x' is not a finite number"),
        (["--lr", "1e-1:1e-4", "--search", "random"], "low end 0.1 is above its high end 0.0001"),
        (["--lr", "1e-4:1e-1", "--search", "grid"], "ranges need --search random or tpe"),
        (["--l2", "0:1", "--search", "random"], "needs a low end above 0"),
        (["--optimizer", "adam,nope"], "unknown optimizer 'nope'"),
        (["--dropout", "0,1.5"], "--dropout 1.5: dropout must be in [0, 1)"),
        (
            ["--hidden", ",".join(map(str, range(1, 102))), "--l2", ",".join(map(str, range(100)))],
            "the grid has 10,100 trials, more than 10,000: pass --yes",
        ),
        (["--hidden", "64", "--trials", "5"], "--trials is for --search random or tpe"),
        (["--hidden", "64", "--objectives", "accuracy,speed"], "unknown objective 'speed'"),
        (["--hidden", "64", "--objectives", "seconds"], "give accuracy once"),
        (
            ["--hidden", "64", "--objectives", "accuracy,seconds", "--prune", "hyperband"],
            "needs one objective",
        ),
        (["--hidden", "64,128", "--lr", "1e-3:1e-2", "--search", "cmaes"], "--hidden is a list"),
        (["--hidden", "64", "--storage", "not a url"], "is not a database URL"),
        (["--hidden", "64", "--storage", "sqlite:////nowhere/at/all/s.db"], "/nowhere/at/all does not exist"),
        (["--hidden", "64", "--storage", "postgresql://u@127.0.0.1:1/db"], "cannot open the study's storage"),
        (["--hidden", "64", "--storage", "sqlite://"], "in-memory SQLite database"),
        (["--hidden", "64", "--workers", "0"], "--workers must be 1 to"),
        (["--hidden", "64", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
        (["--hidden", "64", "--scheduler", "not an address"], "expected tcp://HOST:PORT"),
        (["--hidden", "64", "--val-fraction", "0"], "--val-fraction must be above 0"),
        (["--hidden", "64", "--heatmap", "hidden,colour"], "--heatmap takes two of"),
    ],
)
def test_bad_input_is_one_error_line_and_status_2(args, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["tune", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists(), "nothing is written for a bad command"


def test_bad_folders_are_refused_and_nothing_is_overwritten(searched, tmp_path):
    out, _ = searched
    before = (out / "results.json").read_bytes()
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "results.json").write_text(nested_json(100_000))
    for args, fragment in [
        (["--hidden", "64", "--out", out], "already exists and is not empty"),
        (["--resume", tmp_path / "nowhere"], "does not exist"),
        (["--resume", out, "--hidden", "64"], "leave out --hidden"),
        (["--hidden", "64", "--data", tmp_path / "none.npz", "--out", tmp_path / "new"], "does not exist"),
        (["--resume", deep], "cannot read"),  # its results.json was a RecursionError's traceback
    ]:
        result = digitnet("tune", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert (out / "results.json").read_bytes() == before and not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="--hidden '32:8': the range's low end 32 is above its high end 8"):
        SearchSpec(space={"hidden": "32:8"}, method="random").validate()


def test_no_room_for_the_workers_copy_of_the_images_is_one_error_line(tmp_path):
    import resource

    def small_files():  # as on a full disk: writing past 4 MB fails (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "digitnet",
            "tune",
            "--hidden",
            "16",
            "--l2",
            "0,1",
            "--subset",
            "20000",
            "--epochs",
            "1",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the workers' copy of the images" in lines[0], lines
    assert "set TMPDIR" in lines[0] and list(scratch.iterdir()) == []


# Values put where a search's results.json holds another: each ended 'tune --resume' (or, for the
# trials, 'digitnet runs') with a traceback before the file's fields were checked as they are read.
DAMAGED_RESULTS = {
    "subset": (("search", "subset"), [1], "tune", "the search's subset must be a whole number"),
    "search": (("search",), "finished", "tune", "'search' holds 'finished'"),
    "study name": (("study",), [None], "tune", "'study' holds [None], not text"),
    "space": (("search", "space"), -1, "tune", "the search's space must be hyperparameter names"),
    "trial count": (("search", "trials"), {"a": 1}, "tune", "the search's trials must be a whole number"),
    "format version": (("format_version",), "2", "tune", "'format_version' holds '2'"),
    "preset": (("search", "preset"), [[[]]], "tune", "the search's preset must be text"),
    "trials": (("trials",), True, "runs", "results.json is damaged"),
}


@pytest.mark.parametrize("name", DAMAGED_RESULTS)
def test_a_damaged_results_file_is_named_not_a_traceback(searched, tmp_path, name):
    path, value, reader, fragment = DAMAGED_RESULTS[name]
    folder = tmp_path / "searches" / "search"
    shutil.copytree(searched[0], folder)
    data = json.loads((folder / "results.json").read_text())
    data["final"] = None  # as a search stopped before its refit leaves it: resumable
    place = data
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
    (folder / "results.json").write_text(json.dumps(data))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if reader == "runs":
        result = digitnet("runs", folder.parent, "--json")
        assert result.returncode == 0, result.stderr
        skipped = json.loads(result.stdout.splitlines()[-1])["skipped"]
        assert len(skipped) == 1 and fragment in skipped[0], skipped
    else:
        result = digitnet("tune", "--resume", folder)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
