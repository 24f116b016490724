"""Hyperparameter search: try configurations on a validation split, keep the best, refit it.

Read in this order:

- ``space``   what to try: values parsed from flags, as Optuna distributions; the :class:`SearchSpec`
- ``study``   the Optuna study: its storage, the sampler and pruner the spec names
- ``trial``   one trial: train on the training split, score on the validation split, report each
              epoch to the study, stop when its pruner says so
- ``results`` the study's trials as records; results.json / results.csv, rewritten after each trial
- ``search``  asking the study for trials, running them here, in local processes or on a Dask
              cluster, telling it how they went; refitting the winner
- ``plots``   heatmap, per-hyperparameter, curve, importance, history and Pareto plots

Example::

    spec = SearchSpec(space={"hidden": "64,128", "l2": "0,1"}, epochs=5).validate()
    results = Results.create("runs/tune", spec)       # and its study, runs/tune/study.db
    data, refit_data = search_data(load_dataset("mnist"), subset=10_000)
    run_search(results, data, workers=2)
    best, result = refit(results, refit_data)     # the only use of the test set
"""

from digitnet.tune.results import Results
from digitnet.tune.search import SearchOutcome, refit, run_search, save_winner, search_data
from digitnet.tune.space import MAX_GRID, PARAMS, Dimension, SearchSpec, parse_dimension
from digitnet.tune.trial import TrialData, run_trial

__all__ = [
    "MAX_GRID",
    "PARAMS",
    "Dimension",
    "Results",
    "SearchOutcome",
    "SearchSpec",
    "TrialData",
    "parse_dimension",
    "refit",
    "run_search",
    "run_trial",
    "save_winner",
    "search_data",
]
