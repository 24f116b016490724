"""Pictures of what the network learned: plots, an HTML report and a live dashboard (matplotlib).

Every plot function returns a :class:`matplotlib.figure.Figure`, so a
notebook shows it inline; none needs a display::

    from digitnet import viz
    run = viz.load_run("runs/20250101-120000-default")    # model, history, test set
    viz.curves(run.history)
    viz.compare_curves([run.history, other.history], ["this run", "that run"])
    viz.confusion(run.y_test, run.y_pred, run.class_names)
    viz.make("robustness", run)                           # any plot by name
    viz.plot_run(run)                                     # all of them, as PNGs in the run folder

Modules: ``style`` (the look, saving, the backend), ``run`` (loading a run),
``training_plots``, ``results``, ``weight_plots``, ``robustness_plots``,
``data_plots`` (the plots), ``catalog`` and ``plots`` (the plots by name),
``report`` (the HTML page), ``dashboard`` and ``live`` (the live view).
Names are imported on first use, so ``import digitnet.viz`` is cheap.
"""

import importlib

_WHERE = {
    "curves": "training_plots",
    "gradients": "training_plots",
    "compare_curves": "training_plots",
    "confusion": "results",
    "misclassified": "results",
    "predictions": "results",
    "weights": "weight_plots",
    "distributions": "weight_plots",
    "robustness": "robustness_plots",
    "robustness_curves": "robustness_plots",
    "damage": "robustness_plots",
    "dataset": "data_plots",
    "PLOTS": "catalog",
    "make": "plots",
    "plot_run": "plots",
    "Run": "run",
    "load_run": "run",
    "build_report": "report",
    "write_report": "report",
    "Dashboard": "dashboard",
    "LiveTraining": "live",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'digitnet.viz' has no attribute '{name}'")
    return getattr(importlib.import_module(f"digitnet.viz.{_WHERE[name]}"), name)
