"""Every plot of a run by name: :data:`PLOTS`, :func:`make` one, :func:`plot_run` them all into files."""

from __future__ import annotations

from pathlib import Path

from digitnet.errors import DigitnetError
from digitnet.viz import data_plots, results, robustness_plots, style, training_plots, weight_plots
from digitnet.viz.catalog import NEEDS_DATA, PLOTS
from digitnet.viz.run import Run


def missing(run: Run, name: str) -> str | None:
    """Why plot ``name`` cannot be made for ``run``, or None when it can."""
    if name not in PLOTS:
        return f"there is no plot called '{name}'; choose from {', '.join(PLOTS)}"
    if name in ("curves", "gradients") and run.history is None:
        return f"{name} needs the training history (history.json), and {run.folder} has none"
    if name == "gradients" and "diagnostics" not in run.history.extra:
        return (
            "gradients needs gradient norms in the history; this run was trained before they were "
            "recorded: train it again"
        )
    if name == "curves" and not run.history.loss:
        return "curves needs a history with at least one iteration"
    if name in NEEDS_DATA and run.dataset is None:
        return f"{name} needs the test images: load the run with its data"
    return None


@style.far_numbers
def make(name: str, run: Run):
    """Build plot ``name`` of ``run`` and return its Figure."""
    reason = missing(run, name)
    if reason:
        raise DigitnetError(reason)
    clf = run.classifier
    if name == "curves":
        return training_plots.curves(run.history, (clf.meta.get("metrics") or {}).get("test_accuracy"))
    if name == "gradients":
        return training_plots.gradients(run.history)
    if name == "confusion":
        return results.confusion(run.y_test, run.y_pred, run.class_names)
    if name == "misclassified":
        return results.misclassified(run.x_test, run.y_test, run.proba, run.class_names)
    if name == "predictions":
        return results.predictions(run.x_test, run.y_test, run.proba, run.logits, run.class_names)
    if name == "weights":
        return weight_plots.weights(clf)
    if name == "distributions":
        return weight_plots.distributions(clf, run.initial_weights)
    if name == "robustness":
        return robustness_plots.robustness(clf, run.x_test, run.y_test)
    ds = run.dataset
    return data_plots.dataset(
        ds.x_train, ds.y_train, run.class_names, ds.x_test, ds.y_test, title=f"The data ({ds.name})"
    )


def plot_run(run: Run, which=None, out=None, formats=("png",), on_saved=None) -> tuple[dict, dict]:
    """Write plots of ``run`` as ``<out>/<name>.<format>``.

    Parameters
    ----------
    run : Run
    which : list of str, optional
        Plot names; default: every plot the run has what it needs for.
        Naming one it cannot make raises :class:`DigitnetError`.
    out : folder, default the run's folder
    formats : tuple of "png", "svg", "pdf"
    on_saved : callable ``(name, paths, seconds)``, optional, called as each plot is written

    Returns
    -------
    written : dict ``name -> [paths]``
    skipped : dict ``name -> reason`` (only when ``which`` is None)
    """
    import time

    names = list(which) if which else list(PLOTS)
    skipped = {}
    for name in names:
        reason = missing(run, name)
        if reason and which:
            raise DigitnetError(reason)
        if reason:
            skipped[name] = reason
    out = Path(out) if out is not None else run.folder
    prepare_folder(out)
    written = {}
    for name in names:
        if name in skipped:
            continue
        started = time.perf_counter()
        fig = make(name, run)
        written[name] = style.save(fig, out / name, formats)
        if on_saved:
            on_saved(name, written[name], time.perf_counter() - started)
    return written, skipped


def prepare_folder(out: Path) -> None:
    """Create ``out`` if needed; raise :class:`DigitnetError` when it cannot hold files."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitnetError(f"cannot use {out} as the output folder: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise DigitnetError(f"cannot use {out} as the output folder: it is not a folder")
