"""Run a search's trials here, in local worker processes, or on a Dask cluster; refit the winner.

:func:`run_search` asks the search's Optuna study for a trial as a slot frees
up (ask-and-tell: the study's sampler picks its values, a grid's come from its
queue), hands it to a backend, and tells the study how it went as it
finishes (:class:`~digitnet.tune.results.Results` rewrites results.json and
results.csv every time). The trial itself reports each epoch to the study
and is pruned there (:class:`~digitnet.tune.trial.Report`):

- :class:`Serial` runs them one after another in this process;
- :class:`LocalProcesses` runs them in ``workers`` processes (loky), each
  limited to its share of the BLAS threads (threadpoolctl), the data written
  once to a file that every process maps;
- :class:`DaskCluster` sends them to a Dask distributed scheduler, the data
  scattered once (broadcast to every worker; Dask's memory manager may later
  keep fewer copies, fetched again where a trial needs one), every trial
  depending on that one copy, results streamed back with ``as_completed``.

A local worker that dies takes every trial it was running with it, and the
process pool with it: the trials that were running are then tried again one at
a time, so the one that kills its worker even alone is recorded as failed and
the others finish. Ctrl-C is noted and stops the search between its steps
(:class:`~digitnet.tune.results.CtrlC` says why); what finished is on disk.
:func:`refit` then trains the best configuration on training + validation
data and measures it on the test set, the only time the search touches it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from digitnet import modelfile, runs
from digitnet.data.datasets import Dataset, train_val_split
from digitnet.errors import ConfigError, DigitnetError
from digitnet.threads import share as share_cores
from digitnet.training import TrainResult, train
from digitnet.tune.results import CtrlC, Results, ctrl_c_noted
from digitnet.tune.space import decode_params, trial_config
from digitnet.tune.trial import FAILED, INTERRUPTED, StudyTrial, TrialData, run_trial, trial_cost


def search_data(dataset: Dataset, subset: int | None = None, seed: int = 0) -> tuple[TrialData, Dataset]:
    """The trials' data (training images only) and the winner's dataset (the same images + the test set).

    ``subset`` keeps a stratified sample of that many training images.
    """
    x, y = dataset.x_train, dataset.y_train
    if subset is not None and subset < len(x):
        _, _, x, y = train_val_split(x, y, subset / len(x), seed=seed)
    trial_data = TrialData(dataset.name, list(dataset.class_names), x, y)
    refit_data = Dataset(
        dataset.name,
        list(dataset.class_names),
        x,
        y,
        dataset.x_test,
        dataset.y_test,
        source=dataset.source,
        test_held_out=dataset.test_held_out,
        official=dataset.official,
    )
    return trial_data, refit_data


@dataclass
class SearchOutcome:
    """What :func:`run_search` did: trials run now, trials in the search, and whether Ctrl-C ended it."""

    ran: int
    total: int
    interrupted: bool
    seconds: float
    backend: str


POLL = 0.1  # seconds a backend's wait() returns after with nothing, for the loop to see a Ctrl-C


class WorkerLost(Exception):
    """The process running a trial died (crashed, killed, out of memory)."""


def run_search(
    results: Results,
    data: TrialData,
    workers: int = 1,
    scheduler: str | None = None,
    connect_timeout: float = 5.0,
    on_submit=None,
    on_result=None,
) -> SearchOutcome:
    """Run every trial of ``results.spec`` not yet done, recording each as it finishes.

    Parameters
    ----------
    results : the search's :class:`~digitnet.tune.results.Results` (new or resumed)
    data : the trials' :class:`~digitnet.tune.trial.TrialData`
    workers : processes on this machine (1: in this process)
    scheduler : ``tcp://HOST:PORT`` of a Dask scheduler; overrides ``workers``
    connect_timeout : seconds to wait for the scheduler to answer
    on_submit : callable ``(number, params)``, called as a trial is handed out
    on_result : callable ``(record)``, called after a trial's record is saved
    """
    spec = results.spec
    config = spec.base_config()
    base = config.to_dict()
    started = time.perf_counter()
    left = results.queue(enqueue=False)
    if not left:
        return SearchOutcome(0, 0, False, 0.0, "none")
    if scheduler:
        backend = DaskCluster(scheduler, data, connect_timeout)
    elif workers > 1:
        backend = LocalProcesses(data, min(workers, left))
    else:
        backend = Serial(data)
    longest = backend.slots() > 1 and spec.prune == "none"
    total = results.queue(lambda trials: longest_first(trials, config, data) if longest else trials)
    running: dict = {}  # handle -> (optuna trial, params, isolated)
    suspects: deque = deque()  # trials whose worker died while others ran beside them
    interrupted, ran, asked = False, 0, 0
    report = len(spec.objectives) == 1  # Optuna takes no per-epoch reports in a multi-objective study

    def submit(trial, params, isolated):
        where = StudyTrial(results.url, results.study.study_name, spec.to_dict(), trial._trial_id)
        running[backend.submit(trial.number, params, base, where if report else None)] = (
            trial,
            params,
            isolated,
        )
        if on_submit:
            on_submit(trial.number, params)

    def hand_out():
        """Fill the free slots: a suspect alone when one waits, else new trials from the study."""
        nonlocal asked
        if backend.broken and not running:
            backend.restart()
        if backend.broken:
            return
        if suspects:
            if not running:
                submit(*suspects.popleft(), isolated=True)
            return
        while len(running) < backend.slots() and asked < total and results.more():
            trial = results.ask()
            if trial is None:  # another command took the last queued trial
                break
            asked += 1
            submit(trial, decode_params(trial.params), isolated=backend.slots() == 1)

    with ctrl_c_noted() as ctrl_c:  # acted on between the loop's steps: CtrlC says why
        try:
            changed = True  # a trial came back since trials were last handed out (or none were yet)
            while True:
                if ctrl_c.pressed:
                    raise KeyboardInterrupt
                if changed:
                    hand_out()
                    if not running and not suspects:
                        break
                if ctrl_c.pressed:  # while the trials were asked for: run none of them
                    raise KeyboardInterrupt
                stop = False
                outcomes = backend.wait(list(running))
                changed = bool(outcomes) or not running
                for handle, outcome in outcomes:
                    trial, params, isolated = running.pop(handle)
                    if isinstance(outcome, WorkerLost) and not isolated:
                        suspects = deque(sorted([*suspects, (trial, params)], key=lambda t: t[0].number))
                        continue
                    if isinstance(outcome, BaseException):
                        outcome = _unfinished(trial.number, params, FAILED, str(outcome))
                    if outcome["status"] == INTERRUPTED:  # the worker saw Ctrl-C too: it is not done
                        outcome["reason"] = "interrupted: --resume runs it again"
                        results.tell(trial, outcome)
                        stop = True
                        continue
                    results.tell(trial, outcome)
                    ran += 1
                    if on_result:
                        on_result(results.records[trial.number])
                if stop:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            interrupted = True
        finally:
            backend.close(kill=interrupted or bool(running))
            for trial, params in [(t, p) for t, p, _ in running.values()] + list(suspects):
                results.tell(
                    trial,
                    _unfinished(trial.number, params, INTERRUPTED, "interrupted: --resume runs it again"),
                )
        interrupted = interrupted or ctrl_c.pressed
    return SearchOutcome(ran, total, interrupted, time.perf_counter() - started, backend.name)


def _unfinished(number: int, params: dict, status: str, reason: str) -> dict:
    """The record of a trial that came back without one of its own."""
    return {
        "trial": number,
        "params": params,
        "status": status,
        "reason": reason,
        "epochs": 0,
        "curve": {"val_accuracy": [], "val_loss": [], "train_loss": []},
    }


def longest_first(trials, base, data: TrialData) -> list:
    """Trials' overrides in order of their expected running time, longest first.

    Several workers finish a search soonest when the long trials start first
    and the short ones fill the gaps at the end (longest-processing-time
    order): in trial order, a grid that grows toward its largest networks
    leaves one worker running the last of them while the others wait. With
    median pruning the trials keep their order, so that the long ones can be
    stopped against the short ones that came before them.
    """
    n_inputs, n_classes = data.x.shape[1], len(data.class_names)

    def cost(trial):
        try:
            return trial_cost(trial_config(base, trial), n_inputs, n_classes, len(data.x))
        except (DigitnetError, TypeError, ValueError):  # a bad combination fails fast in its worker
            return 0.0

    return sorted(trials, key=cost, reverse=True)


# --------------------------------------------------------------------------- backends
class Serial:
    """Trials one after another in this process, with all its BLAS threads."""

    name, broken = "this process", False

    def __init__(self, data: TrialData):
        self.data, self.queue = data, {}

    def slots(self) -> int:
        return 1

    def submit(self, number, params, base, study):
        handle = object()
        self.queue[handle] = (number, params, base, self.data, study)
        return handle

    def wait(self, handles):
        handle = handles[0]
        noted = signal.getsignal(signal.SIGINT)  # the search's, which notes a Ctrl-C: the trial looks at it
        return [
            (handle, run_trial(*self.queue.pop(handle), noted=noted if isinstance(noted, CtrlC) else None))
        ]

    def close(self, kill=False):
        self.queue.clear()


_DATA: TrialData | None = None  # a local worker's view of the data


def _start_worker(name: str, class_names: list, folder: str, threads: int) -> None:
    """Runs once in each local worker: map the data, take a share of the BLAS threads, leave Ctrl-C to fit."""
    global _DATA
    from threadpoolctl import threadpool_limits

    x, y = (np.asarray(np.load(os.path.join(folder, f"{a}.npy"), mmap_mode="r")) for a in ("x", "y"))
    _DATA = TrialData(name, class_names, x, y)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # between trials; during one, fit() stops at the batch's end
    threadpool_limits(threads)
    share_cores(threads)  # and as many for the element-wise work split across cores


def _local_trial(number, params, base, study):
    return run_trial(number, params, base, _DATA, study)


class LocalProcesses:
    """``workers`` processes on this machine, each with ``cores // workers`` BLAS threads.

    The images are written once to a temporary folder, and every worker maps
    that file instead of receiving its own pickled copy: the workers start
    sooner and share one copy in memory.
    """

    def __init__(self, data: TrialData, workers: int):
        try:
            import loky
            import threadpoolctl  # noqa: F401 - the workers need it
        except ImportError:
            raise ConfigError(
                "--workers needs loky and threadpoolctl: pip install 'digitnet[tune]'"
            ) from None
        self.loky, self.data, self.workers = loky, data, workers
        self.threads = max(1, loky.cpu_count() // workers)
        self.name = f"{workers} local processes, {self.threads} BLAS thread{'s' * (self.threads > 1)} each"
        self.broken = False
        try:
            self.folder = tempfile.mkdtemp(prefix="digitnet-tune-")
        except OSError as exc:
            raise DigitnetError(
                f"cannot make a folder for the workers' copy of the images in "
                f"{tempfile.gettempdir()}: {exc.strerror or exc}; set TMPDIR to another"
            ) from None
        try:
            np.save(os.path.join(self.folder, "x.npy"), data.x)
            np.save(os.path.join(self.folder, "y.npy"), data.y)
            self.restart()
        except BaseException as exc:
            shutil.rmtree(self.folder, ignore_errors=True)
            if isinstance(exc, OSError):
                raise DigitnetError(
                    f"cannot write the workers' copy of the images to {self.folder}: "
                    f"{exc.strerror or exc}; set TMPDIR to a folder with room"
                ) from None
            raise

    def restart(self):
        self.executor = self.loky.ProcessPoolExecutor(
            max_workers=self.workers,
            initializer=_start_worker,
            initargs=(self.data.name, list(self.data.class_names), self.folder, self.threads),
        )
        self.broken = False

    def slots(self) -> int:
        return self.workers

    def submit(self, number, params, base, study):
        try:
            return self.executor.submit(_local_trial, number, params, base, study)
        except BrokenExecutor:  # a worker died while idle: start afresh
            self.restart()
            return self.executor.submit(_local_trial, number, params, base, study)

    def wait(self, handles):
        done, _ = wait(handles, timeout=POLL, return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            try:
                out.append((future, future.result()))
            except BrokenExecutor as exc:
                self.broken = True
                codes = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
                out.append(
                    (
                        future,
                        WorkerLost(
                            "its worker process died"
                            + (f" (exit {codes.group(1)})" if codes else "")
                            + ": it crashed, ran out of memory or was killed"
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                out.append((future, exc))
        return out

    def close(self, kill=False):
        try:
            self.executor.shutdown(wait=not kill, kill_workers=kill)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _dask_trial(number, params, base, data, study, host_threads):
    """Runs on a Dask worker: the trials running on one machine share its cores' BLAS threads.

    ``host_threads`` maps each host to the number of worker threads on it.
    """
    from distributed import get_worker
    from threadpoolctl import threadpool_limits

    worker = get_worker()
    sharing = host_threads.get(_host(worker.address), worker.state.nthreads)
    threads = max(1, len(os.sched_getaffinity(0)) // max(1, sharing))
    previous = share_cores(threads)
    try:
        with threadpool_limits(threads), freed_memory_reused():
            return run_trial(number, params, base, data, study)
    finally:
        share_cores(previous)


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@contextmanager
def freed_memory_reused():
    """Let this process reuse the memory it frees while a trial runs; give it back afterwards.

    Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``.
    That setting also stops glibc from raising its mmap threshold as it
    normally does, so every array above 128 KiB (a batch of images, a wide
    layer's activations) is mapped afresh from the system and page-faulted in,
    batch after batch: training runs about 20% slower. For the trial, blocks up
    to 32 MiB come from the heap and freed memory stays for the next batch;
    after it, the settings are put back and the memory returned. Outside glibc
    (or without that variable) nothing changes.
    """
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        mallopt = None
    if trim is None or mallopt is None:
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        mallopt(_M_TRIM_THRESHOLD, int(trim) if trim.isdigit() else 128 << 10)
        mallopt(_M_MMAP_THRESHOLD, 128 << 10)
        malloc_trim(0)


def _host(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


class DaskCluster:
    """A Dask distributed scheduler at ``address``; the data is scattered once, and every trial reads that copy."""

    broken = False

    def __init__(self, address: str, data: TrialData, timeout: float = 5.0):
        try:
            import distributed
        except ImportError:
            raise ConfigError("--scheduler needs Dask: pip install 'digitnet[cluster]'") from None
        self.distributed = distributed
        address = connect_check(address, timeout)
        self.client = distributed.Client(address, timeout=timeout, set_as_default=False)
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, asyncio.TimeoutError):
            self.client.close()
            raise DigitnetError(
                f"the Dask cluster at {address} has no workers: start some with 'dask worker {address}'"
            ) from None
        import importlib.metadata

        versions = self.client.run(importlib.metadata.version, "digitnet", on_error="return")
        missing = sorted(w for w, v in versions.items() if isinstance(v, BaseException))
        if missing:
            self.client.close()
            raise DigitnetError(
                f"digitnet is not installed on the Dask worker{'s' * (len(missing) > 1)} "
                f"{', '.join(missing)}: install it there (pip install 'digitnet[cluster]')"
            )
        self.data = self.client.scatter(data, broadcast=True, hash=False)
        self.done = distributed.as_completed(loop=self.client.loop)
        self.name = f"Dask scheduler {address}"
        self.slots()

    def slots(self) -> int:
        nthreads = self.client.nthreads()
        self.host_threads = {}
        for address, n in nthreads.items():
            self.host_threads[_host(address)] = self.host_threads.get(_host(address), 0) + n
        return max(1, sum(nthreads.values()))

    def submit(self, number, params, base, study):
        future = self.client.submit(
            _dask_trial,
            number,
            params,
            base,
            self.data,
            study,
            self.host_threads,
            pure=False,
            key=f"digitnet-trial-{number}-{os.urandom(4).hex()}",
        )
        self.done.add(future)
        return future

    def wait(self, handles):
        ready = self.done.next_batch(block=False)
        if not ready:
            time.sleep(POLL)
        out = []
        for future in ready:
            try:
                out.append((future, future.result()))
            except self.distributed.client.FutureCancelledError:
                raise DigitnetError(
                    "the Dask scheduler cancelled the search's trials (did it stop?); the "
                    "finished trials are saved: continue with --resume"
                ) from None
            except self.distributed.scheduler.KilledWorker:  # Dask has already retried it elsewhere
                out.append(
                    (
                        future,
                        RuntimeError(
                            "every Dask worker that ran it died (KilledWorker): it crashed, "
                            "ran out of memory or was killed"
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a worker without digitnet's dependencies
                out.append((future, RuntimeError(f"{type(exc).__name__}: {exc}")))
        return out

    def close(self, kill=False):
        if kill:
            self.client.cancel(list(self.done.futures))
        self.client.close()


def connect_check(address: str, timeout: float) -> str:
    """Make sure a Dask scheduler answers at ``address`` within ``timeout`` seconds; return ``tcp://HOST:PORT``.

    A plain TCP connection first (nothing listening fails at once), then
    Dask's handshake with a deadline: a port that accepts but never answers
    would otherwise hang forever.
    """
    import distributed.comm

    m = re.fullmatch(r"(?:tcp://)?(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d{1,5})/?", address.strip())
    if not m:
        raise ConfigError(f"--scheduler {address!r}: expected tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")
    host, port = m.group(1), int(m.group(2))
    address = f"tcp://{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except OSError as exc:
        raise DigitnetError(
            f"no Dask scheduler answers at {address} ({exc.strerror or exc}): is it running "
            "('dask scheduler' prints its address) and can this machine reach it?"
        ) from None

    async def handshake():
        left = max(0.1, deadline - time.monotonic())
        comm = await asyncio.wait_for(distributed.comm.connect(address, timeout=left), left)
        await comm.close()

    try:
        asyncio.run(handshake())
    except (asyncio.TimeoutError, TimeoutError, OSError) as exc:
        raise DigitnetError(
            f"{address} accepts connections but no Dask scheduler answered within "
            f"{timeout:g} s ({type(exc).__name__}): is that the scheduler's port?"
        ) from None
    return address


# --------------------------------------------------------------------------- the winner
def refit(results: Results, dataset: Dataset, callbacks=()) -> tuple[dict, TrainResult]:
    """Train the best trial's configuration on training + validation data; measure it on the test set.

    Returns the best trial's record and the :class:`~digitnet.training.TrainResult`.
    """
    best = results.best()
    if best is None:
        raise DigitnetError(
            f"no trial finished ({_describe(results.counts())}): see "
            f"{results.folder / runs.RESULTS_CSV} for the reasons"
        )
    config = trial_config(results.spec.base_config(), best["params"])
    config.val_fraction = 0.0
    if config.early_stopping:  # no validation set to stop on: train as long as the trial did
        config.epochs, config.early_stopping = best["best_epoch"] or config.epochs, 0
    return best, train(config, dataset, callbacks=callbacks)


def save_winner(results: Results, best: dict, result: TrainResult) -> dict:
    """Save the refitted model as ``model.npz`` in the search's folder and note it in results.json."""
    d = result.dataset
    path = modelfile.save(
        results.folder / runs.MODEL,
        result.model,
        result.normalizer,
        d.class_names,
        dataset=d.name,
        config=result.config.to_dict(),
        metrics=result.metrics,
        extra={
            "data_source": d.source,
            "official_data": d.official,
            "tune": {"trial": best["trial"], "params": best["params"], "val_accuracy": best["val_accuracy"]},
        },
    )
    final = {
        "trial": best["trial"],
        "params": best["params"],
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": float(result.metrics["test_accuracy"]),
        "test_loss": float(result.metrics["test_loss"]),
        "n_train": result.metrics["n_train"],
        "n_test": result.metrics["n_test"],
        "train_seconds": result.metrics["train_seconds"],
        "model": str(path),
    }
    results.finish(final)
    return final


def _describe(counts: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none ran"
