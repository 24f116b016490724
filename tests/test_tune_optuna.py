"""The search's Optuna study on real MNIST: TPE with Hyperband in one process and on two workers, the study
read back with Optuna's own API and optuna-dashboard, a search killed and resumed, several commands on one
study, another search refused, and the Pareto front of accuracy against time.

Trials train on a stratified subset of 1,000-2,000 images for 1-4 epochs, a fraction of a second each.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from clitools import command, digitnet, last_json

from digitnet.cli.main import main as cli_main

optuna = pytest.importorskip("optuna", reason="needs digitnet[tune]")

TPE = ["--hidden", "16:128", "--lr", "1e-4:1e-2", "--trials", "10", "--epochs", "4", "--subset", "2000"]


def rows(folder) -> dict[int, dict]:
    return {int(r["trial"]): r for r in csv.DictReader(io.StringIO((folder / "results.csv").read_text()))}


def records(folder) -> dict[int, dict]:
    return {r["trial"]: r for r in json.loads((folder / "results.json").read_text())["trials"]}


def study_of(folder):
    data = json.loads((folder / "results.json").read_text())
    return optuna.load_study(
        study_name=data["study"], storage=data["storage"] or f"sqlite:///{folder / 'study.db'}"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_tpe_search_with_hyperband_agrees_with_its_study(workers, tmp_path):
    out = tmp_path / "search"
    result = digitnet("tune", *TPE, "--prune", "hyperband", "--workers", workers, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    info = last_json(result.stdout)
    assert info["trials"] == 10 and info["study"] == "digitnet-tune"
    assert info["storage"] == f"sqlite:///{out / 'study.db'}"
    assert ("2 local processes" if workers == 2 else "this process") in info["backend"]

    study = optuna.load_study(study_name="digitnet-tune", storage=info["storage"])
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["digitnet_search"]["method"] == "tpe"
    assert study.user_attrs["digitnet_search"]["prune"] == "hyperband"
    table = rows(out)
    trials = study.get_trials()
    assert sorted(table) == [t.number for t in trials] and len(trials) == 10
    for t in trials:  # the study and results.csv tell the same story, trial by trial
        row = table[t.number]
        assert row["status"] == {"COMPLETE": "ok", "PRUNED": "pruned"}[t.state.name]
        assert row["hidden"] == str(t.params["hidden"]) and float(row["lr"]) == t.params["lr"]
        assert float(row["val_accuracy"]) == t.value
        assert int(row["epochs"]) == len(t.intermediate_values) == max(t.intermediate_values)
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
    # Hyperband stopped some trials early: fewer epochs in all than the 40 of no pruning
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.intermediate_values) < 4 for t in pruned)
    assert sum(len(t.intermediate_values) for t in trials) < 40
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert info["best"]["val_accuracy"] == best.value == study.best_value
    assert info["best"]["hidden"] == [best.params["hidden"]] and info["best"]["lr"] == best.params["lr"]
    assert {"history", "importance"} <= set(info["plots"])
    if workers == 2:
        assert len({r["pid"] for r in records(out).values()}) == 2


def test_optuna_dashboard_opens_the_study(tmp_path):
    out = tmp_path / "search"
    result = digitnet(
        "tune", "--hidden", "16,32", "--epochs", "1", "--subset", "1000", "--out", out, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "optuna-dashboard"),
            f"sqlite:///{out / 'study.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None and time.monotonic() < deadline and dashboard.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
            except OSError:
                time.sleep(0.2)
        assert studies is not None, dashboard.stderr.read() if dashboard.poll() is not None else "no answer"
        (summary,) = studies
        assert summary["study_name"] == "digitnet-tune"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10
        ) as r:
            detail = json.load(r)
        assert sorted(t["number"] for t in detail["trials"]) == sorted(rows(out)) == [0, 1]
    finally:
        dashboard.terminate()
        try:
            dashboard.wait(30)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait()


def test_a_killed_search_loses_no_finished_trial_and_reruns_the_running_one(tmp_path):
    out = tmp_path / "search"
    # Trials of a second or more, so the kill 0.3 s after the second one lands inside the third on a
    # quiet machine as on a loaded one.
    args = ["--hidden", "16:128", "--lr", "1e-3:1e-2", "--trials", "6", "--epochs", "5", "--subset", "12000"]
    proc = subprocess.Popen(
        command("tune", *args, "--out", out, "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # kill it inside its third trial or later
        if (out / "results.json").exists() and len(records(out)) >= 2:
            states = [t.state.name for t in study_of(out).get_trials()]
            if states.count("COMPLETE") >= 2 and states.count("RUNNING") == 1:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to tidy up, as in a power cut
    proc.wait(30)
    study = study_of(out)
    before = {t.number: t for t in study.get_trials() if t.state.name == "COMPLETE"}
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"]
    assert len(before) >= 2 and len(running) == 1
    assert set(before) == {n for n, r in records(out).items() if r["status"] == "ok"}

    result = digitnet("tune", "--resume", out, "--json")
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} of 6 trials already done" in result.stdout
    after = {t.number: t for t in study_of(out).get_trials()}
    for n, t in before.items():  # kept as they were, not run again
        assert after[n].state.name == "COMPLETE" and after[n].value == t.value
        assert after[n].datetime_start == t.datetime_start
    lost = after[running[0].number]
    assert lost.state.name == "FAIL"
    assert lost.user_attrs["record"]["reason"] == "was running when its search stopped"
    again = [t for t in after.values() if t.number > lost.number and t.params == lost.params]
    assert len(again) == 1 and again[0].state.name == "COMPLETE", "the lost trial's values run again"
    assert sum(t.state.name == "COMPLETE" for t in after.values()) == 6
    assert last_json(result.stdout)["counts"] == {"ok": 6, "interrupted": 1}
    assert rows(out)[lost.number]["status"] == "interrupted"


def test_several_commands_work_on_one_study_in_a_journal_file(tmp_path):
    storage = f"journal:{tmp_path / 'shared.log'}"
    grid = ["--hidden", "16,32,48", "--l2", "0,1", "--epochs", "2", "--subset", "1000", "--storage", storage]
    from optuna.storages.journal import JournalFileBackend

    def start(name):
        return subprocess.Popen(
            command("tune", *grid, "--out", tmp_path / name, "--json", "--quiet"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def queued():
        if not (tmp_path / "shared.log").exists():
            return 0
        journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "shared.log")))
        studies = journal.get_all_studies()
        return len(optuna.load_study(study_name="digitnet-tune", storage=journal).trials) if studies else 0

    procs = [start("a")]
    deadline = time.monotonic() + 120
    while not queued() and time.monotonic() < deadline:  # the second joins a search under way
        time.sleep(0.1)
    procs.append(start("b"))
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "shared.log")))
    study = optuna.load_study(study_name="digitnet-tune", storage=journal)
    trials = study.get_trials()
    # each of the 6 combinations ran once, whichever command took it from the study's queue
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({(t.params["hidden"], t.params["l2"]) for t in trials}) == 6
    for name in ("a", "b"):
        assert sorted(rows(tmp_path / name)) == sorted(t.number for t in trials)
    assert not (tmp_path / "a" / "study.db").exists()


def test_a_study_of_another_search_is_refused_and_nothing_is_written(tmp_path, capsys):
    db = tmp_path / "studies.db"
    first = ["--hidden", "16", "--epochs", "1", "--subset", "200", "--storage", f"sqlite:///{db}"]
    assert cli_main(["tune", *first, "--out", str(tmp_path / "first"), "--quiet"]) == 0
    capsys.readouterr()
    before = db.read_bytes()
    cases = [
        (
            ["--hidden", "32"],
            "the study 'digitnet-tune' in sqlite:///",
            "is another search (its space differ)",
        ),
        (["--hidden", "16", "--seed", "1"], "is another search (its seed differ)"),
    ]
    for change, *fragments in cases:
        out = tmp_path / "second"
        args = [
            *change,
            "--epochs",
            "1",
            "--subset",
            "200",
            "--storage",
            f"sqlite:///{db}",
            "--out",
            str(out),
        ]
        assert cli_main(["tune", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and all(f in err[0] for f in fragments), err
        assert "choose another --study-name" in err[0]
        assert not out.exists() and db.read_bytes() == before
    # under another name, the same database takes the other search
    args = ["--hidden", "32", "--epochs", "1", "--subset", "200", "--storage", f"sqlite:///{db}"]
    assert (
        cli_main(["tune", *args, "--study-name", "wider", "--out", str(tmp_path / "third"), "--quiet"]) == 0
    )
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")) == [
        "digitnet-tune",
        "wider",
    ]
    # a database that is not Optuna's is left alone
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("create table notes (text)")
    before = other.read_bytes()
    assert (
        cli_main(["tune", "--hidden", "16", "--storage", f"sqlite:///{other}", "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the studies in sqlite:///" in err[0], err
    assert other.read_bytes() == before and not (tmp_path / "x").exists()


def test_two_objectives_give_a_pareto_front_of_accuracy_against_time(tmp_path):
    out = tmp_path / "search"
    result = digitnet(
        "tune", "--hidden", "16,64,256", "--epochs", "1", "--subset", "1000", "--objectives", "accuracy,seconds",
        "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = last_json(result.stdout)
    study = study_of(out)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = sorted(t.number for t in study.best_trials)
    assert info["pareto"] == front == json.loads((out / "results.json").read_text())["pareto"]
    found = records(out)
    for t in study.get_trials():
        assert t.values == [found[t.number]["val_accuracy"], found[t.number]["seconds"]]
    for n in front:  # no trial is at least as accurate and as fast, and better in one
        a, s = found[n]["val_accuracy"], found[n]["seconds"]
        assert not any(
            r["val_accuracy"] >= a and r["seconds"] <= s and (r["val_accuracy"] > a or r["seconds"] < s)
            for r in found.values()
        )
    # the refitted winner is the most accurate trial
    assert info["best"]["val_accuracy"] == max(r["val_accuracy"] for r in found.values())
    assert "pareto" in info["plots"] and (out / "pareto.png").stat().st_size > 10_000


def test_cma_es_samples_the_ranges(mnist, tmp_path):
    from digitnet.tune import Results, SearchSpec, run_search, search_data

    spec = SearchSpec(
        space={"hidden": "16:64", "lr": "1e-3:1e-2"}, method="cmaes", trials=5, epochs=1, subset=500
    ).validate()
    results = Results.create(tmp_path / "search", spec)
    assert type(results.study.sampler).__name__ == "CmaEsSampler"
    run_search(results, search_data(mnist, spec.subset, spec.seed)[0])
    found = list(results.records.values())
    assert len(found) == 5 and all(r["status"] == "ok" for r in found)
    assert all(16 <= r["params"]["hidden"][0] <= 64 and 1e-3 <= r["params"]["lr"] <= 1e-2 for r in found)
    # after its first (independent) draw, every trial came from the adapted normal of a CMA-ES generation
    drawn = [t for t in results.study.trials if any(k.startswith("cma:") for k in t.system_attrs)]
    assert len(drawn) >= 4
