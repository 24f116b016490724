"""A search's folder and study: the Optuna study, and results.json / results.csv written from it after every trial.

The study (``study.db`` in the folder, or ``--storage``) is where every trial
is kept, with its parameters, state, per-epoch validation accuracy and the
rest of its record as the user attribute ``record``; :class:`Results` reads its records
from there. Both plain files are rewritten from the study after every
finished trial, under a temporary name then renamed, so a crash or a Ctrl-C
never leaves half a file. ``results.json`` also holds the
:class:`~digitnet.tune.space.SearchSpec` and where the study is, which is
all ``--resume`` needs: trials whose records say ``ok``, ``pruned`` or
``diverged`` are done; failed and interrupted ones are tried again.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from digitnet import runs
from digitnet.data.formats import atomic_path, read_json, shown
from digitnet.errors import DigitnetError
from digitnet.tune import study as studies
from digitnet.tune.space import PARAMS, SearchSpec, decode_params, encode, key, show
from digitnet.tune.trial import DIVERGED, FAILED, INTERRUPTED, OK, PRUNED

FORMAT, FORMAT_VERSION = "digitnet-tune", 2
DONE = (OK, PRUNED, DIVERGED)
CSV_COLUMNS = [
    "val_accuracy",
    "val_loss",
    "train_accuracy",
    "train_loss",
    "epochs",
    "best_epoch",
    "seconds",
    "host",
    "pid",
    "blas_threads",
    "reason",
]


class Results:
    """A search's records, kept in its Optuna ``study`` and written to ``folder``.

    ``records`` maps trial number to record (see
    :func:`~digitnet.tune.trial.run_trial`), for every finished trial of the
    study; ``storage`` is the ``--storage`` URL given (None: ``study.db`` in
    the folder); ``final`` describes the refitted winner once there is one.
    """

    def __init__(
        self, folder, spec: SearchSpec, study, storage=None, final: dict | None = None, joined: bool = False
    ):
        self.folder, self.spec, self.study = Path(folder), spec, study
        self.storage, self.final, self.joined = storage, final, joined

    @property
    def url(self) -> str:
        return self.storage or studies.default_url(self.folder)

    @staticmethod
    def check_new(folder) -> Path:
        """Raise :class:`DigitnetError` unless ``folder`` is absent or empty."""
        return runs.check_new(
            folder, hint=f"continue that search with --resume {folder}, or choose another --out"
        )

    @classmethod
    def create(cls, folder, spec: SearchSpec, storage: str | None = None, study_name: str | None = None):
        """Start a new search in ``folder`` (absent or empty), its study new or, at ``storage``, joined.

        A study of the same name at ``storage`` made for the same spec is
        joined (several machines work on one study); one made for another
        spec is refused with :class:`DigitnetError`.
        """
        folder = cls.check_new(folder)
        name = study_name or studies.DEFAULT_NAME
        if storage is not None:
            storage = studies.check_storage(storage, name, spec)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DigitnetError(f"cannot create {folder}: {exc.strerror or exc}") from None
        study, created = studies.create_study(storage or studies.default_url(folder), name, spec)
        results = cls(folder, spec, study, storage, joined=not created)
        results.fail_abandoned()
        results.write()
        return results

    @classmethod
    def open(cls, folder) -> Results:
        """Read the search saved in ``folder`` and open its study (for ``--resume``)."""
        data = cls.read(folder)
        spec = SearchSpec.from_dict(data["search"])
        storage = data.get("storage")
        url = storage or studies.default_url(folder)
        if storage is None and not (Path(folder) / studies.STUDY_FILE).exists():
            raise DigitnetError(
                f"{Path(folder) / studies.STUDY_FILE} does not exist: the study of that search is gone"
            )
        study = studies.load_study(url, data.get("study") or studies.DEFAULT_NAME, spec)
        results = cls(folder, spec, study, storage, data.get("final"))
        results.fail_abandoned()
        return results

    @staticmethod
    def read(folder) -> dict:
        """results.json of an earlier search, checked: raise :class:`DigitnetError` if it is not one."""
        path = Path(folder) / runs.RESULTS
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise DigitnetError(
                f"{path} does not exist: --resume takes the folder of an earlier 'digitnet tune' run"
            ) from None
        except (OSError, ValueError) as exc:
            raise DigitnetError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DigitnetError(f"{path} is not the results of 'digitnet tune'")
        kinds = {
            "format_version": (int, "a whole number"),
            "search": (dict, "the search's settings"),
            "storage": ((str, type(None)), "text"),
            "study": ((str, type(None)), "text"),
            "final": ((dict, type(None)), "the refitted model's figures"),
        }
        for name, (kind, what) in kinds.items():
            if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
                raise DigitnetError(f"{path} is damaged: '{name}' holds {shown(data[name])}, not {what}")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise DigitnetError(f"{path} was written by a newer digitnet: upgrade to resume it")
        if data.get("format_version", 0) < FORMAT_VERSION:
            raise DigitnetError(
                f"{path} was written before searches kept an Optuna study: it cannot be resumed; "
                "start the search again"
            )
        return data

    # ------------------------------------------------------------------ the study's trials
    def fail_abandoned(self) -> list[int]:
        """Mark failed the trials left running by a search on this host that has ended; return their numbers."""
        import optuna

        lost = []
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if studies.owner_gone(t.user_attrs.get("owner")):
                trial = optuna.Trial(self.study, t._trial_id)
                trial.set_user_attr(
                    "record", {"status": INTERRUPTED, "reason": "was running when its search stopped"}
                )
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                lost.append(t.number)
        return lost

    def ask(self):
        """A new Optuna trial (a queued one first), marked with this process: see :meth:`fail_abandoned`.

        A grid takes only queued trials, and returns None when another command
        working on the study took the last one first.
        """
        import warnings

        with warnings.catch_warnings(), ctrl_c_after():
            warnings.simplefilter("ignore")  # e.g. TPE's constant liar, an experimental option
            if self.spec.method == "grid":
                trial = self._take_queued()
                if trial is None:
                    return None
                for name, distribution in self.spec.distributions().items():
                    trial.suggest_categorical(name, distribution.choices)  # the queued values
            else:
                trial = self.study.ask(self.spec.distributions())
            trial.set_user_attr("owner", studies.owner())
        return trial

    def _take_queued(self):
        """Start the first queued trial no other command started first (as ``Study.ask`` does); None if none."""
        import optuna

        state = optuna.trial.TrialState
        storage = studies.open_storage(self.url)
        for t in self.study.get_trials(deepcopy=False, states=(state.WAITING,)):
            try:
                if storage.set_trial_state_values(t._trial_id, state=state.RUNNING):
                    return optuna.Trial(self.study, t._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def queue(self, order=None, enqueue: bool = True) -> int:
        """Queue in the study the trials this search must still run; return how many it must still run.

        A grid queues every combination not done, queued or running, in
        ``order`` (a function from a list of params to the same, reordered)
        or the grid's own; a command that joined another's study leaves that
        to it, and takes trials from its queue. A sampled search queues its failed and interrupted
        trials' values again, then leaves the rest to the sampler.
        """
        import optuna

        state = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        busy = {
            key(decode_params(t.params or t.system_attrs.get("fixed_params", {})))
            for t in trials
            if t.state in (state.WAITING, state.RUNNING)
        }
        done = self.done()
        if self.spec.method == "grid":
            missing = [p for p in self.spec.grid() if key(p) not in done | busy]
            waiting = sum(t.state == state.WAITING for t in trials)
            if self.joined:
                return waiting
            for params in (order(missing) if order else missing) if enqueue else []:
                self.study.enqueue_trial({n: encode(n, v) for n, v in params.items()})
            return len(missing) + waiting
        left = max(0, self.spec.total() - len(done) - len(busy))
        again = []
        for r in self.records.values():
            if r["status"] in (FAILED, INTERRUPTED) and key(r["params"]) not in done | busy | set(again):
                again.append(key(r["params"]))
        for k in again[:left] if enqueue else []:
            self.study.enqueue_trial({n: encode(n, v) for n, v in json.loads(k).items()})
        return left

    def more(self) -> bool:
        """Whether the study wants another trial: a queued one, or fewer than ``trials`` done or running."""
        import optuna

        state = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == state.WAITING for t in trials):
            return True
        if self.spec.method == "grid":
            return False
        return len(self.done()) + sum(t.state == state.RUNNING for t in trials) < self.spec.total()

    def tell(self, trial, record: dict) -> None:
        """Finish the Optuna ``trial`` with ``record`` (its scores, or how it failed); rewrite both files."""
        import optuna

        state = optuna.trial.TrialState
        values, status = None, record["status"]
        if status == OK:
            values = [record["val_accuracy"], record["seconds"]][: len(self.spec.objectives)]
        with_state = {OK: state.COMPLETE, PRUNED: state.PRUNED}.get(status, state.FAIL)
        with ctrl_c_after():
            trial.set_user_attr("record", {k: v for k, v in record.items() if k not in ("trial", "params")})
            self.study.tell(trial, values, state=with_state)
        self.write()

    @property
    def records(self) -> dict[int, dict]:
        """``{number: record}`` of the study's finished trials."""
        import optuna

        state = optuna.trial.TrialState
        out = {}
        for t in self.study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.FAIL)):
            attrs = dict(t.user_attrs.get("record", {}))
            default = {state.COMPLETE: OK, state.PRUNED: PRUNED}.get(t.state, FAILED)
            record = {
                "trial": t.number,
                "params": decode_params(t.params),
                "status": attrs.pop("status", default),
                "reason": None,
                "val_accuracy": None,
                "val_loss": None,
                "epochs": 0,
                "curve": {"val_accuracy": [], "val_loss": [], "train_loss": []},
            }
            record.update(attrs)
            out[t.number] = record
        return out

    # ------------------------------------------------------------------ reading
    def done(self) -> set[str]:
        """Keys of the trials that need not run again."""
        return {key(r["params"]) for r in self.records.values() if r["status"] in DONE}

    def pareto(self) -> list[int]:
        """With two objectives, the numbers of the trials on the Pareto front (accuracy against seconds)."""
        if len(self.spec.objectives) < 2:
            return []
        return sorted(t.number for t in self.study.best_trials)

    def ranked(self, found: dict | None = None) -> list[dict]:
        """Records best first: finished trials by validation accuracy, then pruned, diverged, failed."""
        order = {OK: 0, PRUNED: 1, DIVERGED: 2}

        def rank(r):
            acc, loss = r.get("val_accuracy"), r.get("val_loss")
            return (
                order.get(r["status"], 3),
                -(acc if acc is not None else -1),
                loss if loss is not None else math.inf,
                r["trial"],
            )

        return sorted((self.records if found is None else found).values(), key=rank)

    def best(self, found: dict | None = None) -> dict | None:
        """The finished trial with the highest validation accuracy (ties: lower loss, then earlier)."""
        ranked = self.ranked(found)
        return ranked[0] if ranked and ranked[0]["status"] == OK else None

    def counts(self, found: dict | None = None) -> dict:
        out = {}
        for r in (self.records if found is None else found).values():
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    # ------------------------------------------------------------------ writing
    def finish(self, final: dict) -> None:
        self.final = final
        self.write()

    def write(self) -> None:
        found = self.records
        records = [found[n] for n in sorted(found)]
        best = self.best(found)
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "search": self.spec.to_dict(),
            "storage": self.storage,
            "study": self.study.study_name,
            "pareto": self.pareto(),
            "best": None
            if best is None
            else {"trial": best["trial"], **best["params"], "val_accuracy": best["val_accuracy"]},
            "final": self.final,
            "counts": self.counts(found),
            "trials": records,
        }
        try:
            with atomic_path(self.folder / runs.RESULTS) as tmp:
                tmp.write_text(json.dumps(data, indent=1) + "\n")
            with atomic_path(self.folder / runs.RESULTS_CSV) as tmp:
                tmp.write_text(self.csv(found))
        except OSError as exc:
            raise DigitnetError(f"cannot write the results in {self.folder}: {exc.strerror or exc}") from None

    def csv(self, found: dict | None = None) -> str:
        """One row per trial, in trial order: number, status, the searched values, the scores."""
        found = self.records if found is None else found
        dims = [name for name in PARAMS if name in self.spec.space]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["trial", "status", *dims, *CSV_COLUMNS])
        for n in sorted(found):
            r = found[n]
            writer.writerow(
                [
                    n,
                    r["status"],
                    *(show(d, r["params"][d]) if d == "hidden" else r["params"][d] for d in dims),
                    *("" if r.get(c) is None else r[c] for c in CSV_COLUMNS),
                ]
            )
        return out.getvalue()


class CtrlC:
    """A SIGINT handler that notes a Ctrl-C instead of raising it; :attr:`pressed` says whether one came.

    A search's coordinating loop runs under it (:func:`ctrl_c_noted`) and looks at :attr:`pressed`
    between its steps. Raised wherever the loop happens to be, a KeyboardInterrupt can stop the
    study's database in the middle of a read and leave that read's lock held, so that the next
    write (the interrupted trials' records) waits on it for the database's whole timeout; or stop
    the process pool half way through handing out a trial.
    """

    def __init__(self):
        self.pressed = False

    def __call__(self, signum, frame):
        self.pressed = True


@contextmanager
def ctrl_c_noted():
    """Run the block with :class:`CtrlC` as the SIGINT handler; yields it (never pressed outside the main thread)."""
    noted = CtrlC()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = signal.signal(signal.SIGINT, noted)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def ctrl_c_after():
    """Hold a Ctrl-C back until the block ends, so that a trial is never half asked for or half told.

    Under :func:`ctrl_c_noted` the Ctrl-C is left to the handler there, which notes it; outside the
    main thread (where signals cannot be handled) the block just runs.
    """
    if threading.current_thread() is not threading.main_thread() or isinstance(
        signal.getsignal(signal.SIGINT), CtrlC
    ):
        yield
        return
    with ctrl_c_noted() as noted:
        yield
    if noted.pressed:
        raise KeyboardInterrupt
