"""Hyperparameter search on a real Dask cluster: a LocalCluster of two worker processes on 127.0.0.1
(one thread each), started once for the module; and schedulers that refuse or never answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

distributed = pytest.importorskip("distributed", reason="needs digitnet[cluster]")

from digitnet.tune import Results, SearchSpec, run_search, search_data  # noqa: E402
from digitnet.tune.search import DaskCluster  # noqa: E402
from digitnet.tune.space import key  # noqa: E402

GRID = ["--hidden", "16,64", "--l2", "0,5", "--epochs", "2", "--subset", "2000"]


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster.scheduler_address) as client,
    ):
        yield cluster.scheduler_address, client


def digitnet(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_the_same_search_on_a_cluster_scores_as_here(cluster, mnist, tmp_path):
    address, client = cluster
    out = tmp_path / "search"
    result = digitnet("tune", *GRID, "--scheduler", address, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["trials"] == 4 and info["counts"] == {"ok": 4} and address in info["backend"]
    remote = {r["trial"]: r for r in json.loads((out / "results.json").read_text())["trials"]}
    worker_pids = set(client.run(os.getpid).values())
    assert {r["pid"] for r in remote.values()} <= worker_pids
    # two single-thread workers on one 2-core host: each trial gets half the cores' BLAS threads
    assert {r["blas_threads"] for r in remote.values()} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert (out / "model.npz").exists() and (out / "heatmap.png").exists()

    spec = Results.open(out).spec
    here = Results.create(tmp_path / "here", spec)
    run_search(here, search_data(mnist, spec.subset, spec.seed)[0])
    remote = {key(r["params"]): r for r in remote.values()}
    for r in here.records.values():  # one BLAS thread there, two here: see docs/tuning.md
        assert abs(remote[key(r["params"])]["val_accuracy"] - r["val_accuracy"]) <= 1 / 200 + 1e-12
        assert remote[key(r["params"])]["val_loss"] == pytest.approx(r["val_loss"], rel=1e-5)


def test_a_tpe_search_with_hyperband_runs_on_the_cluster(cluster, tmp_path):
    """The workers report each epoch to the study's SQLite file and are pruned there, as local ones are."""
    import optuna

    address, client = cluster
    out = tmp_path / "search"
    result = digitnet(
        "tune", "--hidden", "16:128", "--lr", "1e-4:1e-2", "--trials", "8", "--prune", "hyperband",
        "--epochs", "4", "--subset", "2000", "--scheduler", address, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["trials"] == 8 and address in info["backend"]
    study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    trials = study.get_trials()
    assert len(trials) == 8 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    worker_pids = set(client.run(os.getpid).values())
    for t in trials:  # reported by the worker that trained it, one value an epoch
        assert t.user_attrs["record"]["pid"] in worker_pids
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["record"]["epochs"] + 1))
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.intermediate_values) < 4 for t in pruned)


def _batch_faults(reused: bool) -> int:
    """Page faults while making 200 batch-sized arrays, one after another (run on a Dask worker)."""
    import resource

    import numpy as np

    from digitnet.tune.search import freed_memory_reused

    def batches():
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(200):
            np.ones((128, 784), np.float32)  # a batch of images, 400 KB
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    if reused:
        with freed_memory_reused():
            return batches()
    return batches()


def test_trials_on_dask_workers_reuse_freed_memory():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_, which makes every batch-sized array a fresh mapping:
    page faults on every batch unless the trial's freed_memory_reused() is in force. A worker of its own,
    as the memory that earlier trials freed changes what a new array costs."""
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster.scheduler_address) as client,
    ):
        if set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}:
            pytest.skip("this version of Dask starts its workers without MALLOC_TRIM_THRESHOLD_")
        plain, reused, after = (
            client.submit(_batch_faults, r, pure=False).result() for r in (False, True, False)
        )
    assert plain > 200 * 50, "each batch faults its ~100 pages in"
    assert reused < 500, "the freed batch's memory is reused"
    assert after > 200 * 50, "the worker's own setting is back after the trial"


def _trial_data_tasks(trial_keys, dask_scheduler=None):
    """On the scheduler: the keys of every TrialData it holds, and what each trial task depends on."""
    data = sorted(str(k) for k in dask_scheduler.tasks if str(k).startswith("TrialData-"))
    deps = {k: sorted(str(d.key) for d in dask_scheduler.tasks[k].dependencies) for k in trial_keys}
    return data, deps


def test_the_data_is_scattered_once_and_every_trial_reads_that_copy(cluster, mnist):
    # Dask's Active Memory Manager (on by default) drops replicas no task is waiting for, every 2 s, so
    # which workers hold the broadcast copy at a given moment is Dask's choice; what digitnet promises
    # is that the images travel as one scattered piece of data that every trial depends on, never
    # inside a trial's arguments.
    address, client = cluster
    client.wait_for_workers(2, timeout=60)  # a worker an earlier test killed is back, under its new address
    data, _ = search_data(mnist, 2000)
    backend = DaskCluster(address, data)
    try:
        key = str(backend.data.key)
        assert key.startswith("TrialData-") and backend.client.who_has(backend.data)[backend.data.key]
        spec = SearchSpec(space={"hidden": "16"}, epochs=1).validate()
        base = spec.base_config().to_dict()
        handles = [backend.submit(n, {"hidden": [16], "l2": float(n)}, base, None) for n in (1, 2, 3)]
        done = []
        while len(done) < 3:
            done += backend.wait(handles)
        assert sorted(record["trial"] for _, record in done) == [1, 2, 3]
        assert all(record["status"] == "ok" and record["val_accuracy"] > 0.2 for _, record in done)
        held, deps = backend.client.run_on_scheduler(_trial_data_tasks, [h.key for h in handles])
        assert held == [key], "one copy of the images in the cluster, scattered once"
        assert all(d == [key] for d in deps.values()), deps
    finally:
        backend.close()


def test_a_scheduler_that_never_answers_is_an_error_within_10_seconds(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = digitnet("tune", *GRID, "--scheduler", address, "--out", tmp_path / "out", timeout=30)
        elapsed = time.monotonic() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {address} accepts connections but no Dask scheduler answered within 5 s"
    ), result.stderr
    assert elapsed < 10 and not (tmp_path / "out").exists()


def test_a_refused_scheduler_address_is_an_error_at_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = digitnet("tune", *GRID, "--scheduler", f"127.0.0.1:{port}", "--out", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: no Dask scheduler answers at tcp://127.0.0.1:{port}"
    )
    assert time.monotonic() - started < 10 and not (tmp_path / "out").exists()
