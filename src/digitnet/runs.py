"""Run folders: where a training run lives, from its first epoch to its last, and how to read them.

A run folder (``runs/<date-time>-<preset>/`` unless you name it)::

    run.json             what the run is and where it stands: its state, its process, epochs done, its data
    config.json          the resolved settings (TrainConfig.to_dict)
    checkpoint.npz       while it trains: all it needs to go on, rewritten after every epoch and on Ctrl-C
    model.npz            the trained network (digitnet.modelfile), once it has stopped
    history.json         every iteration's loss, accuracy and learning rate; every epoch's record
    history.csv          the epochs, one row each
    metrics.json         test and validation scores, epochs and seconds
    initial_weights.npz  the weights before the first step (for the plots)

The folder appears whole: it is made under a temporary name with ``run.json``
and ``config.json`` in it, then renamed. Every file is written under a
temporary name and renamed, so a kill at any moment leaves the previous
version of each. While it trains the process holds a lock (``flock``) on the
folder, which the system lets go when the process dies, so a run whose
``run.json`` says "running" but whose folder is not locked was killed.

A run's state is one of ``running``, ``finished``, ``interrupted`` (Ctrl-C:
the model as it was is saved and it can be resumed), ``killed`` (no model;
resumable from its last checkpoint) and ``failed`` (an error; resumable from
its last checkpoint if it has one). :func:`start` and :meth:`Run.resume` train
in a folder; :func:`list_runs` and :func:`compare` read them. A search
(``digitnet tune``) keeps ``results.json``, ``results.csv`` and its winner's
``model.npz`` in a folder of the same kind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import time
import zipfile
from itertools import pairwise
from pathlib import Path

import numpy as np

from digitnet import modelfile
from digitnet.data.datasets import Dataset
from digitnet.data.formats import (
    NpzReader,
    atomic_path,
    first_line,
    json_default,
    load_json,
    read_json,
    shown,
)
from digitnet.diagnostics import Diagnostics
from digitnet.errors import ConfigError, DataError, DigitnetError, ModelFileError
from digitnet.nn import rules
from digitnet.training import (
    Callback,
    History,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    check_history,
    train,
)

ROOT = Path("runs")
RUN, CONFIG, CHECKPOINT, MODEL = "run.json", "config.json", "checkpoint.npz", "model.npz"
HISTORY, HISTORY_CSV, METRICS, INITIAL_WEIGHTS = (
    "history.json",
    "history.csv",
    "metrics.json",
    "initial_weights.npz",
)
RESULTS, RESULTS_CSV = "results.json", "results.csv"  # a search's folder

FORMAT, FORMAT_VERSION = "digitnet-run", 1
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "digitnet-checkpoint", 1
RUNNING, FINISHED, INTERRUPTED, KILLED, FAILED = "running", "finished", "interrupted", "killed", "failed"


# --------------------------------------------------------------------------- names
def new_folder(kind: str, root=ROOT) -> Path:
    """A fresh ``root/<date-time>-<kind>`` path (``-2``, ``-3``... when that exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / f"{stamp}-{kind}", 2
    while path.exists():
        path, n = Path(root) / f"{stamp}-{kind}-{n}", n + 1
    return path


def check_new(folder, hint: str = "choose another --out, or remove it first") -> Path:
    """Return ``folder`` as a Path; raise :class:`DigitnetError` unless it is absent or an empty folder."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DigitnetError(f"{folder} already exists and is not empty: {hint}")
    return folder


def model_file(path) -> Path:
    """The model file a path names: the path itself, or a run folder's ``model.npz``."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / MODEL).exists():
        return path / MODEL
    if (path / RUN).exists():
        raise ModelFileError(
            f"{path} is a run with no model yet ({Run.open(path).state}): wait for it to "
            f"finish, or continue it with 'digitnet train --resume {path}'"
        )
    raise ModelFileError(f"{path} is a folder with no {MODEL} in it")


def load_model(path) -> modelfile.Classifier:
    """:func:`digitnet.modelfile.load` of a model file or of a run folder's model."""
    return modelfile.load(model_file(path))


# --------------------------------------------------------------------------- one run
class Run:
    """A run folder: ``path`` and its ``run.json`` as ``info``.

    Make one with :func:`start` (or :meth:`create`), open one with :meth:`open`.
    """

    def __init__(self, path, info: dict):
        self.path, self.info = Path(path), info
        self._lock = self._config = None

    def __repr__(self):
        return f"Run({str(self.path)!r}, {self.state})"

    # -- making and opening -------------------------------------------------
    @classmethod
    def create(cls, folder, config: TrainConfig, dataset: Dataset, data=None, cache_dir=None) -> Run:
        """Make the folder (absent or empty) with ``run.json`` and ``config.json``, atomically, and lock it.

        ``data`` and ``cache_dir`` are where the dataset came from, recorded so
        that ``--resume`` can load it again.
        """
        folder = check_new(folder)
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "train",
            "state": RUNNING,
            "reason": None,
            "preset": config.preset,
            "created": _now(),
            "updated": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "architecture": [int(dataset.x_train.shape[1]), *config.hidden, len(dataset.class_names)],
            "epochs_planned": config.epochs,
            "epochs_done": 0,
            "iteration": 0,
            "val_accuracy": None,
            "seconds": 0.0,
            "resumed": 0,
            "data": {
                "dataset": dataset.name,
                "data": _absolute(data),
                "cache_dir": _absolute(cache_dir),
                "source": dataset.source,
                "n_train": int(len(dataset.x_train)),
                "fingerprint": fingerprint(dataset),
            },
        }
        tmp = folder.parent / f".{folder.name}.{os.getpid()}-{secrets.token_hex(3)}.part"
        run = cls(tmp, info)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            run._write_json(CONFIG, config.to_dict())
            run._write_json(RUN, info)
            run._take_lock()
            if folder.exists():  # an empty folder the user named with --out
                folder.rmdir()
            os.replace(tmp, folder)
        except OSError as exc:
            run._release_lock()
            shutil.rmtree(tmp, ignore_errors=True)
            raise DigitnetError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from None
        run.path = folder
        return run

    @classmethod
    def open(cls, path) -> Run:
        """Read a run folder's ``run.json``; raise :class:`DigitnetError` when it is not a run folder."""
        path = Path(path)
        if not path.is_dir():
            raise DigitnetError(
                f"{path} is not a run folder" + ("" if path.exists() else " (it does not exist)")
            )
        try:
            info = read_json(path / RUN)
        except FileNotFoundError:
            if (path / RESULTS).exists():
                raise DigitnetError(
                    f"{path} is a search's folder, not a training run: continue it with "
                    f"'digitnet tune --resume {path}'"
                ) from None
            raise DigitnetError(
                f"{path} is not a run folder: it has no {RUN} (runs made by 'digitnet train' have one)"
            ) from None
        except (OSError, ValueError) as exc:
            raise DigitnetError(
                f"{path / RUN} cannot be read ({exc}): it is not a usable run folder"
            ) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise DigitnetError(f"{path / RUN} is not a digitnet run description")
        if info.get("format_version") != FORMAT_VERSION:
            raise DigitnetError(
                f"{path} has run format version {info.get('format_version')}; this digitnet "
                f"reads version {FORMAT_VERSION}: upgrade digitnet"
            )
        for fields, holder in ((RUN_FIELDS, info), (DATA_FIELDS, info.get("data") or {})):
            for key, (ok, what) in fields.items():
                if key in holder and not ok(holder[key]):
                    raise DigitnetError(
                        f"{path / RUN} is damaged: '{key}' holds {shown(holder[key])}, not {what}"
                    )
        return cls(path, info)

    # -- what it is ----------------------------------------------------------
    @property
    def config(self) -> TrainConfig:
        """The run's settings, read once from ``config.json``."""
        if self._config is None:
            try:
                self._config = TrainConfig.from_dict(read_json(self.path / CONFIG)).validate()
            except (OSError, ValueError, TypeError, DigitnetError) as exc:
                raise DigitnetError(
                    f"{self.path / CONFIG} cannot be read as training settings ({exc})"
                ) from None
        return dataclasses.replace(self._config)

    @property
    def state(self) -> str:
        """``running``, ``finished``, ``interrupted``, ``killed`` or ``failed``."""
        state = self.info.get("state")
        if state == RUNNING and not self.locked():
            return KILLED
        return state

    def locked(self) -> bool:
        """Does a process (this one or another) hold the run's lock, i.e. is it training now?"""
        if self._lock is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing releases a lock taken just now
        return False

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).exists()

    @property
    def resumable(self) -> bool:
        return self.state in (INTERRUPTED, KILLED, FAILED)

    def check_resumable(self) -> None:
        """Raise :class:`DigitnetError` saying why this run cannot be continued, if it cannot."""
        state = self.state
        if state == FINISHED:
            raise DigitnetError(
                f"{self.path} finished its {self.info.get('epochs_done')} epochs: there is nothing "
                "to resume; start a new run (digitnet train --preset ...)"
            )
        if state == RUNNING:
            raise DigitnetError(
                f"{self.path} is training now (process {self.info.get('pid')} on "
                f"{self.info.get('host')}): stop that one first"
            )
        if state not in (INTERRUPTED, KILLED, FAILED):
            raise DigitnetError(f"{self.path / RUN} has an unknown state {state!r}")

    # -- training in it --------------------------------------------------------
    def train(self, dataset: Dataset, callbacks=()) -> TrainResult:
        """Train the run's settings on ``dataset`` here: a checkpoint after every epoch, the files at the end.

        Raises what :func:`digitnet.training.train` raises; the folder then says
        ``failed`` (or ``interrupted`` after a second Ctrl-C). A new run that
        diverges before its first checkpoint leaves nothing behind.
        """
        return self._train(dataset, callbacks, resume=None)

    def resume(self, dataset: Dataset, callbacks=()) -> TrainResult:
        """Continue an interrupted, killed or failed run from its last checkpoint (or from the start).

        Everything is checked before anything is written: the run's state, the
        data (the same training images), the checkpoint (whole, this format
        version, these settings, these shapes). On any mismatch the folder is
        left exactly as it was and :class:`DigitnetError` says why.
        """
        self.check_resumable()
        self._check_data(dataset)
        return self._train(
            dataset, callbacks, resume=self.read_checkpoint(n_train=len(dataset.x_train)) or {}
        )

    def _train(self, dataset: Dataset, callbacks, resume: dict | None) -> TrainResult:
        if self._lock is None:
            self._take_lock()
        diagnostics = Diagnostics()
        begin = _Begin(self, resumed=resume is not None)
        try:
            result = train(
                self.config,
                dataset,
                callbacks=[diagnostics, *callbacks, begin],
                checkpoint=self.save_checkpoint,
                resume=resume or None,
            )
        except TrainingDiverged as exc:
            if resume is None and not self.has_checkpoint:
                self._release_lock()
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                self._end(FAILED, f"diverged: {exc}")
            raise
        except BaseException as exc:
            if not begin.started:  # the setup or the checkpoint failed: nothing was trained
                self._release_lock()
                if resume is None:  # a new run: take its folder away again
                    shutil.rmtree(self.path, ignore_errors=True)
                if resume and isinstance(exc, (KeyError, TypeError, ValueError, IndexError, ArithmeticError)):
                    raise ModelFileError(
                        f"{self.path / CHECKPOINT} does not fit this run "
                        f"({first_line(exc)}): it cannot be resumed"
                    ) from None
                raise
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._end(
                INTERRUPTED if interrupted else FAILED,
                None if interrupted else f"{type(exc).__name__}: {exc}",
            )
            raise
        self.finish(result, diagnostics.initial_weights)
        return result

    def save_checkpoint(self, state: dict) -> None:
        """Write ``state`` (a :meth:`digitnet.training.Loop.state_dict`) as ``checkpoint.npz``, atomically."""
        meta, arrays = _pack(state)
        history = state["history"]
        header = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "written": _now(),
            "config": self.config.to_dict(),
            "state": meta,
        }
        blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        try:
            with atomic_path(self.path / CHECKPOINT) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, meta=blob, **arrays)
                    fh.flush()
                    os.fsync(fh.fileno())  # the rename below must not land before the bytes do
        except OSError as exc:
            raise DigitnetError(
                f"cannot write the checkpoint in {self.path}: {exc.strerror or exc}"
            ) from None
        epochs = history["epochs"]
        self._update(
            epochs_done=len(epochs),
            iteration=int(state["iteration"]),
            val_accuracy=epochs[-1].get("val_accuracy") if epochs else None,
            seconds=float(sum(e["seconds"] for e in epochs)),
        )

    def read_checkpoint(self, n_train: int | None = None) -> dict | None:
        """The checkpoint's state, checked, or None when there is none.

        Raises :class:`DigitnetError` when it is damaged, of another format
        version, or written with other settings than ``config.json``'s. Its
        size is bounded before it is read, by what a checkpoint of this network
        trained on ``n_train`` images (default: the number recorded) can hold.
        """
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        config = self.config
        n_train = n_train or int((self.info.get("data") or {}).get("n_train") or 60_000)
        budget = _checkpoint_budget(config, self.info.get("architecture") or [], n_train)
        if not path.is_file():  # a folder, or a device (/dev/zero reads without end)
            raise ModelFileError(
                f"{path} is not a file: it cannot be resumed; remove it to start the run again"
            )
        try:
            with zipfile.ZipFile(path) as z:
                total = sum(i.file_size for i in z.infolist())
            if total > budget:
                raise ModelFileError(
                    f"{path} holds {total:,} bytes, more than a checkpoint of this network "
                    f"can ({budget:,}): it is not this run's checkpoint"
                )
            # Each array's header is checked before its memory is taken, all of them within the budget.
            with NpzReader(path, ModelFileError, budget=budget, what="a digitnet checkpoint") as z:
                arrays = {key: z.read(key) for key in z.files}
            header = load_json(arrays.pop("meta").tobytes().decode("utf-8"), finite=True)
        except DigitnetError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise ModelFileError(
                f"{path} is damaged ({first_line(exc)}): it cannot be resumed; remove it to "
                "start the run again from its first epoch"
            ) from None
        if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"{path} is not a digitnet checkpoint")
        if header.get("format_version") != CHECKPOINT_VERSION:
            raise ModelFileError(
                f"{path} has checkpoint format version {header.get('format_version')}; this "
                f"digitnet reads version {CHECKPOINT_VERSION}"
            )
        try:  # settings added to digitnet since take their defaults, as config.json's do
            saved = TrainConfig.from_dict(header.get("config") or {}).to_dict()
        except (DigitnetError, TypeError, ValueError, AttributeError):
            saved = header.get("config") or {}
        if not isinstance(saved, dict):
            raise ModelFileError(f"{path} is damaged (its settings are not a table): it cannot be resumed")
        if saved != config.to_dict():
            differ = _differences(saved, config.to_dict())
            raise ConfigError(
                f"{path} was written with other settings than {self.path / CONFIG} "
                f"({differ}): it belongs to another run"
            )
        try:
            state = _unpack(header["state"], arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path} is damaged ({first_line(exc)}): it cannot be resumed") from None
        if not isinstance(state, dict):
            raise ModelFileError(f"{path} is damaged (its state is not a dict): it cannot be resumed")
        return state

    def finish(self, result: TrainResult, initial_weights: dict | None = None) -> None:
        """Write the model, history and metrics; the run is then finished, or interrupted (resumable)."""
        d = result.dataset
        try:
            modelfile.save(
                self.path / MODEL,
                result.model,
                result.normalizer,
                d.class_names,
                dataset=d.name,
                config=result.config.to_dict(),
                metrics=result.metrics,
                extra={"data_source": d.source, "official_data": d.official},
                test_time_shift=result.config.test_time_shift,
            )
            self._write_json(HISTORY, result.history.to_dict(), indent=None)
            with atomic_path(self.path / HISTORY_CSV) as tmp:
                tmp.write_text(result.history.epochs_csv())
            self._write_json(METRICS, result.metrics)
            if initial_weights:
                with atomic_path(self.path / INITIAL_WEIGHTS) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **initial_weights)
        except OSError as exc:
            raise DigitnetError(f"cannot write the run folder {self.path}: {exc.strerror or exc}") from None
        interrupted = result.history.interrupted
        m = result.metrics
        done = {} if interrupted else {"epochs_done": m["epochs"]}  # interrupted: the checkpoint's count
        self._end(
            INTERRUPTED if interrupted else FINISHED,
            None,
            val_accuracy=m["val_accuracy"],
            test_accuracy=m["test_accuracy"],
            seconds=m["train_seconds"],
            final_epoch=m["final_epoch"],
            **done,
        )
        if not interrupted:
            (self.path / CHECKPOINT).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------
    def history(self) -> History | None:
        return read_history(self.path)

    def metrics(self) -> dict | None:
        return _read_json(self.path / METRICS)

    # -- inside ----------------------------------------------------------------
    def _check_data(self, dataset: Dataset) -> None:
        recorded = (self.info.get("data") or {}).get("fingerprint")
        if recorded and recorded != fingerprint(dataset):
            raise DataError(
                f"{dataset.name} from {dataset.source} is not the data {self.path} was trained on "
                f"({(self.info.get('data') or {}).get('source')}): resume it with the same --data"
            )

    def _end(self, state: str, reason, **fields) -> None:
        try:
            self._update(state=state, reason=reason, **fields)
        finally:
            self._release_lock()

    def _update(self, **fields) -> None:
        self.info.update(fields, updated=_now())
        self._write_json(RUN, self.info)

    def _write_json(self, name: str, obj, indent: int | None = 2) -> None:
        try:
            with atomic_path(self.path / name) as tmp:
                tmp.write_text(json.dumps(obj, indent=indent, default=json_default) + "\n")
        except OSError as exc:
            raise DigitnetError(f"cannot write {self.path / name}: {exc.strerror or exc}") from None

    def _take_lock(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)  # the folder itself: no file to leave behind
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DigitnetError(f"{self.path} is training in another process: stop that one first") from None
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


class _Begin(Callback):
    """Marks the run as running once the loop begins (after a checkpoint has been loaded and checked)."""

    def __init__(self, run: Run, resumed: bool):
        self.run, self.resumed, self.started = run, resumed, False

    def on_train_begin(self, state):
        self.started = True
        for leftover in self.run.path.glob(".*.part"):  # a write that a kill cut short
            leftover.unlink(missing_ok=True)
        fields = {"state": RUNNING, "reason": None, "pid": os.getpid(), "host": socket.gethostname()}
        if self.resumed:
            fields["resumed"] = int(self.run.info.get("resumed") or 0) + 1
        self.run._update(**fields)


def start(
    config: TrainConfig, dataset: Dataset, out=None, root=ROOT, callbacks=(), data=None, cache_dir=None
) -> tuple[Run, TrainResult]:
    """Train ``config`` on ``dataset`` in a new run folder (``out``, else a fresh one under ``root``)."""
    run = Run.create(
        out if out else new_folder(config.preset, root), config, dataset, data=data, cache_dir=cache_dir
    )
    return run, run.train(dataset, callbacks)


def fingerprint(dataset: Dataset) -> str:
    """SHA-256 of the training images and labels: what ``--resume`` checks the data against."""
    h = hashlib.sha256()
    for a in (dataset.x_train, dataset.y_train):
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading folders
def read_history(folder) -> History | None:
    """A folder's ``history.json`` as a :class:`History`; None when it has none.

    Raises :class:`ModelFileError` when the file is damaged.
    """
    path = Path(folder) / HISTORY
    if not path.exists():
        return None
    try:
        h = read_json(path)
        check_history(h)
        return History.from_dict(h)
    except (OSError, ValueError, TypeError, ConfigError) as exc:
        raise ModelFileError(f"{path} is damaged ({exc}): the run's history cannot be read") from None


def read_initial_weights(folder) -> dict | None:
    """A folder's ``initial_weights.npz`` as ``{"0.weight": array, ...}``; None when it has none."""
    path = Path(folder) / INITIAL_WEIGHTS
    if not path.exists():
        return None
    try:
        with NpzReader(path, ModelFileError, what="a digitnet file of initial weights") as z:
            return {key: z.read(key) for key in z.files}
    except ModelFileError as exc:
        raise ModelFileError(
            f"{path} is damaged ({exc}): delete it to plot without initial weights"
        ) from None


def summary(folder) -> dict:
    """One run (or search) folder as a row: what ``digitnet runs`` lists.

    Keys: ``name, path, kind, created, preset, architecture, epochs_done,
    epochs_planned, val_accuracy, test_accuracy, seconds, state, resumable,
    reason``. Raises :class:`DigitnetError` for a folder that is neither.
    """
    folder = Path(folder)
    row = {
        "name": folder.name,
        "path": str(folder),
        "kind": "train",
        "created": None,
        "preset": None,
        "architecture": None,
        "epochs_done": None,
        "epochs_planned": None,
        "val_accuracy": None,
        "test_accuracy": None,
        "seconds": None,
        "state": None,
        "resumable": False,
        "reason": None,
    }
    if (folder / RUN).exists():
        run = Run.open(folder)
        i = run.info
        metrics = _read_metrics(folder)
        row.update(
            created=i.get("created"),
            preset=i.get("preset"),
            architecture=_sizes(i.get("architecture")),
            epochs_done=i.get("epochs_done"),
            epochs_planned=i.get("epochs_planned"),
            val_accuracy=i.get("val_accuracy"),
            seconds=i.get("seconds"),
            state=run.state,
            resumable=run.resumable,
            reason=i.get("reason"),
            test_accuracy=metrics.get("test_accuracy") if run.state in (FINISHED, INTERRUPTED) else None,
        )
        return row
    if (folder / RESULTS).exists():
        return _search_summary(folder, row)
    if (folder / MODEL).exists() and (folder / CONFIG).exists():  # a run from before run.json
        config = _read_json(folder / CONFIG)
        config = config if isinstance(config, dict) else {}
        metrics = _read_metrics(folder)
        meta_sizes = None
        try:
            meta_sizes = modelfile.load(folder / MODEL).architecture["sizes"]
        except DigitnetError:
            pass
        for key, (ok, what) in {"preset": _TEXT, "epochs": _WHOLE}.items():
            if not ok(config.get(key)):
                raise DigitnetError(
                    f"{folder / CONFIG} is damaged: '{key}' holds {shown(config[key])}, not {what}"
                )
        row.update(
            created=_stamp(folder / MODEL),
            preset=config.get("preset"),
            architecture=_sizes(meta_sizes),
            epochs_done=metrics.get("epochs"),
            epochs_planned=config.get("epochs"),
            val_accuracy=metrics.get("val_accuracy"),
            test_accuracy=metrics.get("test_accuracy"),
            seconds=metrics.get("train_seconds"),
            state=FINISHED,
        )
        return row
    raise DigitnetError(f"{folder} is not a run folder (no {RUN}, {RESULTS} or {MODEL} in it)")


def _search_summary(folder: Path, row: dict) -> dict:
    data = _read_json(folder / RESULTS)
    if not isinstance(data, dict):
        raise DigitnetError(f"{folder / RESULTS} cannot be read")
    search = data.get("search") or {}
    final = data.get("final") or {}
    best = data.get("best") or {}
    trials = data.get("trials") or []
    fine = all(isinstance(part, dict) for part in (search, final, best))
    fine = fine and isinstance(trials, list) and all(isinstance(t, dict) for t in trials)
    fine = fine and _TEXT[0](search.get("preset")) and isinstance(search.get("space") or {}, dict)
    fine = fine and all(_NUMBER[0](x) for x in [best.get("val_accuracy"), final.get("test_accuracy")])
    fine = fine and all(_NUMBER[0](t.get("seconds")) for t in trials)
    if not fine:
        raise DigitnetError(f"{folder / RESULTS} is damaged: it is not what 'digitnet tune' writes")
    row.update(
        kind="tune",
        created=_stamp(folder / RESULTS),
        preset=search.get("preset"),
        architecture="search: " + " x ".join(search.get("space") or {}),
        epochs_done=len(trials),
        val_accuracy=best.get("val_accuracy"),
        test_accuracy=final.get("test_accuracy"),
        seconds=float(sum(t.get("seconds") or 0 for t in trials)),
        state=FINISHED if final else INTERRUPTED,
        resumable=not final,
    )
    return row


def list_runs(root=ROOT) -> tuple[list[dict], list[str]]:
    """The runs under ``root``, oldest first, and a note for each folder that is not one.

    Raises :class:`DigitnetError` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DigitnetError(
            f"{root} is not a folder"
            + ("" if root.exists() else " (no runs yet: 'digitnet train' makes them there)")
        )
    rows, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            rows.append(summary(folder))
        except DigitnetError as exc:
            skipped.append(str(exc))
        except PermissionError as exc:  # another user's run, say: the others are still listed
            skipped.append(f"{folder} cannot be read ({exc.strerror})")
    rows.sort(key=lambda r: (r["created"] or "", r["name"]))
    return rows, skipped


def compare(folders) -> dict:
    """Several runs side by side: the settings that differ, their figures, and their epoch curves.

    Returns ``{"runs": [summary...], "settings": {name: [value per run]} (only those
    that differ), "histories": [History or None per run]}``.
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise DigitnetError("--compare needs at least two run folders")
    rows = [summary(f) for f in folders]
    configs = [c if isinstance(c := _read_json(f / CONFIG), dict) else {} for f in folders]
    keys = [k for k in TrainConfig().to_dict() if len({json.dumps(c.get(k)) for c in configs}) > 1]
    return {
        "runs": rows,
        "settings": {k: [c.get(k) for c in configs] for k in keys},
        "histories": [_history_so_far(f) for f in folders],
    }


def _history_so_far(folder: Path) -> History | None:
    """The history of a run that has stopped, or, for one still training or killed, its last checkpoint's."""
    history = read_history(folder)
    if history is None and (folder / RUN).exists() and (folder / CHECKPOINT).exists():
        try:
            state = Run.open(folder).read_checkpoint()
            check_history(state.get("history"), finite=True, where="history/")
        except DigitnetError:
            return None
        history = History.from_checkpoint(state["history"])
    return history


# --------------------------------------------------------------------------- the checkpoint's packing
def _pack(tree, arrays=None, path: str = "") -> tuple:
    """Split a nested dict/list of arrays and plain values into JSON (arrays as ``{"__array__": key}``) and arrays."""
    top = arrays is None
    arrays = {} if top else arrays
    if isinstance(tree, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = tree
        out = {"__array__": key}
    elif isinstance(tree, dict):
        out = {str(k): _pack(v, arrays, f"{path}/{k}")[0] for k, v in tree.items()}
    elif isinstance(tree, (list, tuple)):
        out = [_pack(v, arrays, f"{path}/{i}")[0] for i, v in enumerate(tree)]
    elif isinstance(tree, np.generic):
        out = tree.item()
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise ValueError(f"{path}: {tree} has no place in a checkpoint")
    else:
        out = tree
    return out, arrays


def _unpack(tree, arrays: dict):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _unpack(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unpack(v, arrays) for v in tree]
    return tree


def _checkpoint_budget(config: TrainConfig, sizes: list, n_train: int) -> int:
    """The most bytes a checkpoint of this run can hold: the weights a few times over (network, optimiser,
    best and initial weights, in float64 at most), the loader's order and three float64s an iteration."""
    weights = sum((a + 1) * b for a, b in pairwise(sizes)) if len(sizes) > 1 else 0
    iterations = config.epochs * -(-n_train // (config.batch_size or n_train or 1))
    return 16 * 2**20 + 8 * 8 * weights + 8 * n_train + 3 * 8 * iterations


# --------------------------------------------------------------------------- small pieces
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _stamp(path: Path) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))


def _absolute(path) -> str | None:
    """A path (or comma-separated paths, as --data takes) made absolute, so a run resumes from any folder."""
    if path is None:
        return None
    return ",".join(str(Path(p).expanduser().resolve()) for p in str(path).split(","))


def _sizes(sizes) -> str | None:
    return "-".join(map(str, sizes)) if sizes else None


def _read_metrics(folder: Path) -> dict:
    """A run's ``metrics.json`` ({} when it has none or it cannot be read); DigitnetError when a figure
    ``digitnet runs`` shows is not a number."""
    metrics = _read_json(folder / METRICS)
    if not isinstance(metrics, dict):
        return {}
    for key in ("test_accuracy", "val_accuracy", "train_seconds", "epochs"):
        if not _NUMBER[0](metrics.get(key)):
            raise DigitnetError(
                f"{folder / METRICS} is damaged: '{key}' holds {shown(metrics[key])}, not a number"
            )
    return metrics


# What run.json's fields may hold: (test, description); any may be absent. The tests take None.
_TEXT = (lambda v: v is None or isinstance(v, str), "text")
_WHOLE = (lambda v: v is None or rules.is_whole(v), "a whole number >= 0")
_NUMBER = (lambda v: v is None or rules.is_finite(v), "a number")
_SIZES = (lambda v: v is None or isinstance(v, list) and all(rules.is_whole(n, 1) for n in v), "layer sizes")
RUN_FIELDS = {
    **dict.fromkeys(["kind", "state", "reason", "preset", "created", "updated", "host"], _TEXT),
    **dict.fromkeys(["pid", "epochs_planned", "epochs_done", "iteration", "resumed", "final_epoch"], _WHOLE),
    **dict.fromkeys(["val_accuracy", "test_accuracy", "seconds"], _NUMBER),
    "architecture": _SIZES,
    "data": (lambda v: v is None or isinstance(v, dict), "a dict"),
}
DATA_FIELDS = {  # run.json's "data"
    **dict.fromkeys(["dataset", "data", "cache_dir", "source", "fingerprint"], _TEXT),
    "n_train": _WHOLE,
}


def _read_json(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _differences(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k} {a.get(k)!r} there, {b.get(k)!r} here" for k in keys[:4]) or "unknown"
