"""A search's folder: results.json and results.csv, rewritten after every finished trial.

Both files are written under a temporary name and renamed, so a crash or a
Ctrl-C never leaves half a file, and every trial that finished is on disk.
``results.json`` also holds the :class:`~digitnet.tune.space.SearchSpec`, which
is all ``--resume`` needs to carry on: the trials whose records say ``ok``,
``pruned`` or ``diverged`` are done; failed ones are tried again.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from digitnet import runs
from digitnet.data.formats import atomic_path
from digitnet.errors import DigitnetError
from digitnet.tune.space import PARAMS, SearchSpec, key, show
from digitnet.tune.trial import DIVERGED, OK, PRUNED

FORMAT, FORMAT_VERSION = "digitnet-tune", 1
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
    """The records of a search's trials, kept in ``folder``.

    ``records`` maps trial number to record (see
    :func:`~digitnet.tune.trial.run_trial`); ``final`` describes the refitted
    winner once there is one.
    """

    def __init__(self, folder, spec: SearchSpec, records: dict | None = None, final: dict | None = None):
        self.folder, self.spec = Path(folder), spec
        self.records = dict(records or {})
        self.final = final

    @staticmethod
    def check_new(folder) -> Path:
        """Raise :class:`DigitnetError` unless ``folder`` is absent or empty."""
        return runs.check_new(
            folder, hint=f"continue that search with --resume {folder}, or choose another --out"
        )

    @classmethod
    def create(cls, folder, spec: SearchSpec) -> Results:
        """Start a new search in ``folder``, which must be absent or empty."""
        folder = cls.check_new(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DigitnetError(f"cannot create {folder}: {exc.strerror or exc}") from None
        results = cls(folder, spec)
        results.write()
        return results

    @classmethod
    def open(cls, folder) -> Results:
        """Read the search saved in ``folder`` (for ``--resume``)."""
        path = Path(folder) / runs.RESULTS
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DigitnetError(
                f"{path} does not exist: --resume takes the folder of an earlier 'digitnet tune' run"
            ) from None
        except (OSError, ValueError) as exc:
            raise DigitnetError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DigitnetError(f"{path} is not the results of 'digitnet tune'")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise DigitnetError(f"{path} was written by a newer digitnet: upgrade to resume it")
        spec = SearchSpec.from_dict(data["search"])
        return cls(folder, spec, {r["trial"]: r for r in data.get("trials", [])}, data.get("final"))

    # ------------------------------------------------------------------ reading
    def done(self) -> set[str]:
        """Keys of the trials that need not run again."""
        return {key(r["params"]) for r in self.records.values() if r["status"] in DONE}

    def ranked(self) -> list[dict]:
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

        return sorted(self.records.values(), key=rank)

    def best(self) -> dict | None:
        """The finished trial with the highest validation accuracy (ties: lower loss, then earlier)."""
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0]["status"] == OK else None

    def curves(self) -> list[list[float]]:
        """Per-epoch validation accuracies of the finished and pruned trials (what pruning compares to)."""
        return [r["curve"]["val_accuracy"] for r in self.records.values() if r["status"] in (OK, PRUNED)]

    def counts(self) -> dict:
        out = {}
        for r in self.records.values():
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    # ------------------------------------------------------------------ writing
    def add(self, record: dict) -> None:
        """Keep ``record`` (replacing an earlier one of the same trial) and rewrite both files."""
        record = dict(record, key=key(record["params"]))
        self.records[record["trial"]] = record
        self.write()

    def finish(self, final: dict) -> None:
        self.final = final
        self.write()

    def write(self) -> None:
        records = [self.records[n] for n in sorted(self.records)]
        best = self.best()
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "search": self.spec.to_dict(),
            "best": None
            if best is None
            else {"trial": best["trial"], **best["params"], "val_accuracy": best["val_accuracy"]},
            "final": self.final,
            "counts": self.counts(),
            "trials": records,
        }
        try:
            with atomic_path(self.folder / runs.RESULTS) as tmp:
                tmp.write_text(json.dumps(data, indent=1) + "\n")
            with atomic_path(self.folder / runs.RESULTS_CSV) as tmp:
                tmp.write_text(self.csv())
        except OSError as exc:
            raise DigitnetError(f"cannot write the results in {self.folder}: {exc.strerror or exc}") from None

    def csv(self) -> str:
        """One row per trial, in trial order: number, status, the searched values, the scores."""
        dims = [name for name in PARAMS if name in self.spec.space]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["trial", "status", *dims, *CSV_COLUMNS])
        for n in sorted(self.records):
            r = self.records[n]
            writer.writerow(
                [
                    n,
                    r["status"],
                    *(show(d, r["params"][d]) if d == "hidden" else r["params"][d] for d in dims),
                    *("" if r.get(c) is None else r[c] for c in CSV_COLUMNS),
                ]
            )
        return out.getvalue()
