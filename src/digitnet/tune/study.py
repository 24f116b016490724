"""The search's Optuna study: where it is stored, the sampler and pruner its spec names, the spec it keeps.

A study lives in a storage that any Optuna tool opens (``optuna-dashboard
URL``, ``optuna.load_study``): by default the SQLite file ``study.db`` in the
search's folder; or any database SQLAlchemy reaches (``postgresql://...``,
``mysql://...``), or Optuna's journal file (``journal:PATH``), so that
several machines can work on one study. The study keeps its
:class:`~digitnet.tune.space.SearchSpec` as a user attribute: opening it for
a different search is refused (:func:`check_storage`) before anything is written.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

from digitnet.errors import ConfigError, DigitnetError
from digitnet.tune.space import SearchSpec

STUDY_FILE = "study.db"
DEFAULT_NAME = "digitnet-tune"
SPEC_ATTR = "digitnet_search"
JOURNAL = "journal:"

_STORAGES: dict = {}  # url -> storage, one per process


def default_url(folder) -> str:
    """The SQLite database in the search's folder."""
    return f"sqlite:///{(Path(folder) / STUDY_FILE).resolve()}"


def open_storage(url: str, create: bool = True):
    """The Optuna storage at ``url`` (kept for the process); raise :class:`DigitnetError` if it cannot be opened.

    ``create=False`` opens an existing database without making Optuna's tables in it.
    """
    if create and url in _STORAGES:
        return _STORAGES[url]
    import optuna

    try:
        if url.startswith(JOURNAL):
            from optuna.storages.journal import JournalFileBackend

            storage = optuna.storages.JournalStorage(JournalFileBackend(url[len(JOURNAL) :]))
        else:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": _connect_args(url)}, skip_table_creation=not create
            )
    except (ImportError, ModuleNotFoundError) as exc:
        raise DigitnetError(
            f"cannot open the study's storage {hide_password(url)}: no driver ({exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and Optuna's many errors all mean the same here
        if not create and not url.startswith(JOURNAL):  # check_storage has reached it: not Optuna's
            raise DigitnetError(
                f"cannot read the studies in {hide_password(url)}: is it an Optuna database? "
                f"({_first_line(exc)})"
            ) from None
        raise DigitnetError(
            f"cannot open the study's storage {hide_password(url)}: {_first_line(exc)}"
        ) from None
    if create:
        _STORAGES[url] = storage
    return storage


def _connect_args(url: str) -> dict:
    """Wait for a busy SQLite file rather than fail; give up on an unreachable server within 5 s."""
    if url.startswith("sqlite"):
        return {"timeout": 60}
    if url.startswith(("postgresql", "mysql")):
        return {"connect_timeout": 5}
    return {}


def check_storage(url: str, study_name: str, spec: SearchSpec) -> str:
    """Make sure the study ``study_name`` at ``url`` can be opened for ``spec``, writing nothing; return the URL.

    A relative journal or SQLite path is made absolute (the workers may run
    elsewhere). Raises :class:`ConfigError` for a URL that is not one, and
    :class:`DigitnetError` for a storage that cannot be opened or that holds a
    study of that name made for another search.
    """
    url = url.strip()
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :]).expanduser().resolve()
        url = JOURNAL + str(path)
        if not path.parent.is_dir():
            raise DigitnetError(
                f"cannot open the study's storage {url}: the folder {path.parent} does not exist"
            )
        if not path.exists():
            return url
    else:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(
                f"--storage {url!r} is not a database URL: e.g. sqlite:///study.db, "
                "postgresql://user@host/db or journal:study.log"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ConfigError(
                    "--storage: an in-memory SQLite database dies with the command; name a file"
                )
            path = Path(parsed.database).expanduser().resolve()
            url = str(parsed.set(database=str(path)).render_as_string(hide_password=False))
            if not path.parent.is_dir():
                raise DigitnetError(
                    f"cannot open the study's storage {url}: the folder {path.parent} does not exist"
                )
            if not path.exists():
                return url
        why = _unreachable(url)
        if why is not None:
            raise DigitnetError(f"cannot open the study's storage {hide_password(url)}: {why}")
    storage = open_storage(url, create=False)
    try:
        studies = {s.study_name: s for s in storage.get_all_studies()}
    except Exception as exc:  # noqa: BLE001 - e.g. a database without Optuna's tables yet
        if _is_empty_database(url):
            return url
        raise DigitnetError(f"cannot read the studies in {hide_password(url)}: {_first_line(exc)}") from None
    if study_name in studies:
        check_spec(storage, studies[study_name]._study_id, study_name, url, spec)
    return url


def _unreachable(url: str) -> str | None:
    """Why the database at ``url`` cannot be reached (no driver, nothing answering...); None if it answers."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_connect_args(url))
        with engine.connect():
            pass
        engine.dispose()
        return None
    except (ImportError, ModuleNotFoundError) as exc:
        return f"no driver ({exc})"
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors: say the first line
        return _first_line(exc)


def _is_empty_database(url: str) -> bool:
    if url.startswith(JOURNAL):
        return False
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, connect_args=_connect_args(url))
    try:
        return not sqlalchemy.inspect(engine).get_table_names()
    except Exception:  # noqa: BLE001 - unreachable: not empty, and the caller says why
        return False
    finally:
        engine.dispose()


def check_spec(storage, study_id: int, study_name: str, url: str, spec: SearchSpec) -> None:
    """Raise :class:`DigitnetError` unless the stored study was made by ``digitnet tune`` for ``spec``."""
    saved = storage.get_study_user_attrs(study_id).get(SPEC_ATTR)
    where = f"the study '{study_name}' in {hide_password(url)}"
    if saved is None:
        raise DigitnetError(f"{where} was not made by 'digitnet tune': choose another --study-name")
    mine = json.loads(json.dumps(spec.to_dict()))
    if saved != mine:
        differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
        raise DigitnetError(
            f"{where} is another search (its {', '.join(differ)} differ): choose another --study-name, "
            "or another --storage"
        )


def create_study(url: str, study_name: str, spec: SearchSpec):
    """Create the study for ``spec`` at ``url``, or join the one there made for the same spec.

    Returns the study and whether this call created it.
    """
    import optuna

    storage = open_storage(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                sampler=make_sampler(spec),
                pruner=make_pruner(spec),
                directions=spec.directions(),
            )
    except optuna.exceptions.DuplicatedStudyError:
        return load_study(url, study_name, spec), False
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    return study, True


def load_study(url: str, study_name: str, spec: SearchSpec, sampler=None):
    """Open the study ``study_name`` at ``url``; raise :class:`DigitnetError` if it is missing or another search's."""
    import optuna

    storage = open_storage(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.load_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler or make_sampler(spec),
                pruner=make_pruner(spec),
            )
    except KeyError:
        raise DigitnetError(f"there is no study '{study_name}' in {hide_password(url)}") from None
    check_spec(storage, study._study_id, study_name, url, spec)
    return study


def make_sampler(spec: SearchSpec):
    """Optuna's sampler for ``spec.method``, seeded with ``spec.seed``.

    A grid is queued in the study whole (``enqueue_trial``, in the order the
    search wants: longest first on several workers), so that any command
    working on the study takes the next combination from there; Optuna's
    ``GridSampler`` draws in its own order and cannot take queued trials.

    TPE draws its first trials at random, a third of the budget (3 to 10,
    Optuna's default), then models the rest; it treats running trials as if
    they had scored badly (its "constant liar"), so parallel workers do not
    all try the same region.
    """
    import optuna

    seed = spec.seed
    if spec.method in ("grid", "random"):  # a grid's trials all wait in the study's queue: none is sampled
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "tpe":
        startup = max(3, min(10, spec.trials // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    try:
        import cmaes  # noqa: F401 - CmaEsSampler imports it when sampling
    except ImportError:
        raise ConfigError("--search cmaes needs the cmaes package: pip install 'digitnet[tune]'") from None
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(spec: SearchSpec):
    """Optuna's pruner for ``spec.prune``, on epochs: a trial reports its validation accuracy after each.

    ``median`` stops a trial whose best accuracy so far trails the median of
    the earlier trials' at the same epoch (from three trials and epoch
    max(1, epochs/4) on); ``halving`` is asynchronous successive halving
    (rungs at 1, 3, 9... epochs keep the best third); ``hyperband`` runs
    several halvings with different first rungs, up to the trials' epochs.
    """
    import optuna

    epochs = spec.base_config().epochs
    if spec.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 4))
    if spec.prune == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if spec.prune == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def owner() -> str:
    """This process, as it marks the trials it hands out: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(mark: str | None) -> bool:
    """Whether the process that handed out a trial has ended (known only for this host's processes)."""
    if not mark or mark.rpartition(":")[0] != socket.gethostname():
        return False
    pid = int(mark.rpartition(":")[2])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return pid == os.getpid()  # a process looks before it hands out any: the pid was reused


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hide_password(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    if url.startswith(JOURNAL):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: show it as given
        return url
