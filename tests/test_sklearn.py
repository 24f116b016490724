"""DigitnetClassifier as scikit-learn sees it: its checks, pipelines, searches, and real data."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_wine
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from digitnet.data.datasets import Dataset
from digitnet.sklearn import DigitnetClassifier
from digitnet.training import TrainConfig, train


@parametrize_with_checks([DigitnetClassifier()])
def test_sklearn_check(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def mnist_small(mnist):
    def scale(x):
        return x.astype(np.float32) / 255

    return scale(mnist.x_train[:6000]), mnist.y_train[:6000], scale(mnist.x_test[:1000]), mnist.y_test[:1000]


def test_pipeline_with_scaler_on_wine(wine):
    X_tr, X_te, y_tr, y_te = wine
    pipe = make_pipeline(
        StandardScaler(), DigitnetClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
    )
    assert pipe.fit(X_tr, y_tr).score(X_te, y_te) >= 0.94


def test_grid_search_over_two_hyperparameters(wine):
    X_tr, _, y_tr, _ = wine
    pipe = make_pipeline(StandardScaler(), DigitnetClassifier(max_iter=20, random_state=0))
    grid = GridSearchCV(
        pipe,
        {
            "digitnetclassifier__hidden_layer_sizes": [(8,), (32,)],
            "digitnetclassifier__learning_rate_init": [1e-3, 1e-2],
        },
        cv=3,
    )
    grid.fit(X_tr, y_tr)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_score_ >= 0.9
    assert grid.best_estimator_[-1].learning_rate_init in (1e-3, 1e-2)


def test_cross_val_score(wine):
    X_tr, _, y_tr, _ = wine
    scores = cross_val_score(
        make_pipeline(StandardScaler(), DigitnetClassifier(max_iter=30, random_state=0)), X_tr, y_tr, cv=3
    )
    assert scores.shape == (3,) and scores.min() >= 0.85


def test_real_mnist_subset(mnist_small):
    X_tr, y_tr, X_te, y_te = mnist_small
    clf = DigitnetClassifier(max_iter=5, random_state=0).fit(X_tr, y_tr)
    assert clf.n_features_in_ == 784 and list(clf.classes_) == list(range(10))
    assert clf.score(X_te, y_te) >= 0.90
    proba = clf.predict_proba(X_te)
    assert proba.shape == (1000, 10) and np.allclose(proba.sum(axis=1), 1)
    assert np.allclose(np.exp(clf.predict_log_proba(X_te)), proba)
    assert len(clf.loss_curve_) == clf.n_iter_ == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_string_labels_and_integer_input(wine):
    X_tr, X_te, y_tr, y_te = wine
    names = np.array(["barolo", "grignolino", "barbera"])
    scaler = StandardScaler().fit(X_tr)

    def to_int(X):
        return np.round(scaler.transform(X) * 10).astype(np.int64)  # integer input is accepted

    clf = DigitnetClassifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=1e-2, random_state=0)
    clf.fit(to_int(X_tr), names[y_tr])
    assert list(clf.classes_) == sorted(names)
    assert clf.predict(to_int(X_te)).dtype == clf.classes_.dtype
    assert clf.score(to_int(X_te), names[y_te]) >= 0.9


def test_partial_fit_continues_and_equals_fit(wine):
    X_tr, _, y_tr, _ = wine
    X = StandardScaler().fit_transform(X_tr)
    inc = DigitnetClassifier(hidden_layer_sizes=(16,), max_iter=6, random_state=1, schedule="cosine")
    for _ in range(6):
        inc.partial_fit(X, y_tr, classes=np.unique(y_tr))
    assert inc.n_iter_ == 6 and inc.loss_curve_[-1] < inc.loss_curve_[0]
    full = DigitnetClassifier(hidden_layer_sizes=(16,), max_iter=6, random_state=1, schedule="cosine").fit(
        X, y_tr
    )
    # the same shuffles, the same optimiser state, the same schedule: bit for bit the same network
    for name, w in full.model_.state_dict().items():
        np.testing.assert_array_equal(inc.model_.state_dict()[name], w)
    assert inc.loss_curve_ == full.loss_curve_
    full.partial_fit(X, y_tr)  # after fit, one epoch more
    assert full.n_iter_ == 7
    with pytest.raises(ValueError, match="classes"):
        DigitnetClassifier().partial_fit(X, y_tr)


def test_same_random_state_same_probabilities(wine):
    X_tr, X_te, y_tr, _ = wine
    X, Xt = StandardScaler().fit(X_tr).transform(X_tr), StandardScaler().fit(X_tr).transform(X_te)

    def fit(seed):
        return (
            DigitnetClassifier(hidden_layer_sizes=(16,), max_iter=5, dropout=0.2, random_state=seed)
            .fit(X, y_tr)
            .predict_proba(Xt)
        )

    np.testing.assert_array_equal(fit(7), fit(7))
    assert not np.array_equal(fit(7), fit(8))


@pytest.mark.parametrize("early", [False, True])
def test_same_network_as_train(mnist, early):
    """With the same seed and the pixels scaled as ``normalize="scale"`` does, fit is train(), bit for bit."""
    x, y = mnist.x_train[:3000], mnist.y_train[:3000]
    ds = Dataset("mnist", list("0123456789"), x, y, mnist.x_test[:500], mnist.y_test[:500], source="test")
    config = TrainConfig(
        hidden=(32,),
        epochs=3,
        batch_size=64,
        lr=2e-3,
        schedule="cosine",
        seed=5,
        val_fraction=0.2 if early else 0.0,
        early_stopping=1 if early else 0,
    )
    result = train(config, ds)
    X = x.astype(np.float32)
    X /= 255
    clf = DigitnetClassifier(
        hidden_layer_sizes=(32,),
        max_iter=3,
        batch_size=64,
        learning_rate_init=2e-3,
        schedule="cosine",
        random_state=5,
        early_stopping=early,
        validation_fraction=0.2,
        n_iter_no_change=1,
    ).fit(X, y)
    for name, w in result.model.state_dict().items():
        np.testing.assert_array_equal(clf.model_.state_dict()[name], w)
    assert clf.loss_curve_ == [e["train_loss"] for e in result.history.epochs]
    if early:
        assert clf.validation_scores_ == [e["val_accuracy"] for e in result.history.epochs]
        assert clf.best_validation_score_ == result.metrics["val_accuracy"]
    X_test = mnist.x_test[:500].astype(np.float32) / 255
    np.testing.assert_array_equal(clf.predict(X_test), result.model.predict(X_test).argmax(axis=1))


def test_alpha_is_mlpclassifiers_per_batch_l2(wine):
    X_tr, _, y_tr, _ = wine
    clf = DigitnetClassifier(alpha=0.5, batch_size=32, max_iter=1, random_state=0).fit(X_tr, y_tr)
    assert clf._step_.optimizer.l2 == pytest.approx(0.5 / 32)


def test_early_stopping_attributes(wine):
    X_tr, _, y_tr, _ = wine
    X = StandardScaler().fit_transform(X_tr)
    clf = DigitnetClassifier(
        hidden_layer_sizes=(16,),
        max_iter=200,
        learning_rate_init=3e-2,
        early_stopping=True,
        n_iter_no_change=3,
        random_state=0,
    ).fit(X, y_tr)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ in clf.validation_scores_
    assert DigitnetClassifier(max_iter=1).fit(X, y_tr).validation_scores_ is None


def test_off_the_main_thread_and_sigint_untouched(wine):
    X_tr, _, y_tr, _ = wine
    before = signal.getsignal(signal.SIGINT)
    out = {}
    worker = threading.Thread(
        target=lambda: out.setdefault("clf", DigitnetClassifier(max_iter=2).fit(X_tr, y_tr))
    )
    worker.start()
    worker.join()
    assert out["clf"].n_iter_ == 2
    DigitnetClassifier(max_iter=2).fit(X_tr, y_tr)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solver": "lbfgs"}, "optimizer"),
        ({"max_iter": 0}, "max_iter"),
        ({"batch_size": "big"}, "batch_size"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),  # accepted, once: training diverged
        ({"early_stopping": True, "validation_fraction": "0.2"}, "validation_fraction"),  # TypeError, once
        ({"early_stopping": True, "validation_fraction": None}, "validation_fraction"),
        ({"early_stopping": True, "validation_fraction": float("nan")}, "validation_fraction"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_parameters_raise_value_error_in_fit(wine, params, match):
    X_tr, _, y_tr, _ = wine
    clf = DigitnetClassifier(**params)  # stored as given, checked in fit
    with pytest.raises(ValueError, match=match):
        clf.fit(X_tr, y_tr)


def test_a_pickled_or_copied_estimator_trains_on_as_the_original(wine):
    """Pickling and deep copies keep each array apart, so the parameters were no longer views of the
    optimiser's buffer and partial_fit refused, once (a ConfigError). The copies go on to the very
    weights the original reaches."""
    import copy
    import pickle

    X_tr, X_te, y_tr, _ = wine
    original = DigitnetClassifier(max_iter=3, random_state=0).fit(X_tr, y_tr)
    copies = [pickle.loads(pickle.dumps(original)), copy.deepcopy(original)]
    for estimator in [original, *copies]:
        estimator.partial_fit(X_tr, y_tr)
    for other in copies:
        assert np.array_equal(other.predict_proba(X_te), original.predict_proba(X_te))
        assert other.n_iter_ == original.n_iter_ == 4
