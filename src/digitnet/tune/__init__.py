"""Hyperparameter search: try configurations on a validation split, keep the best, refit it.

Read in this order:

- ``space``   what to try: values parsed from flags, grid or random trials, the :class:`SearchSpec`
- ``trial``   one trial: train on the training split, score on the validation split, prune the hopeless
- ``results`` results.json / results.csv, rewritten as each trial finishes (what ``--resume`` reads)
- ``search``  running trials here, in local processes or on a Dask cluster; refitting the winner
- ``plots``   heatmap, per-hyperparameter and curve plots (matplotlib, imported only there)

Example::

    spec = SearchSpec(space={"hidden": "64,128", "l2": "0,1"}, epochs=5).validate()
    results = Results.create("runs/tune", spec)
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
