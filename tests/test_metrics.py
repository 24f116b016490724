"""The scores of ``digitnet evaluate`` and ``digitnet compare``, on two networks trained on real MNIST.

Every figure is checked against a plain count over the images, one at a time, made here without the
code under test; the model/dataset checks are checked for the messages the commands print.
"""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import metrics
from digitnet.data.datasets import Dataset
from digitnet.errors import DataError
from digitnet.modelfile import Classifier, architecture_of, check_dataset, check_same_input
from digitnet.presets import preset
from digitnet.training import train


def small(mnist) -> Dataset:
    """6,000 training and 2,000 test images of real MNIST."""
    return Dataset(
        "mnist",
        list("0123456789"),
        mnist.x_train[:6000],
        mnist.y_train[:6000],
        mnist.x_test[:2000],
        mnist.y_test[:2000],
        source="MNIST (first 6,000 / 2,000)",
    )


def classifier(result, class_names) -> Classifier:
    return Classifier(
        result.model,
        result.normalizer,
        list(class_names),
        architecture_of(result.model),
        {"dataset": "mnist"},
    )


@pytest.fixture(scope="module")
def two_models(mnist):
    """Two different networks trained for three epochs: 784-32-10 by Adam, 784-128-10 by SGD with momentum
    (about 86% and 90% on the 2,000 test images)."""
    data = small(mnist)
    a = train(preset("adam-128-64", hidden=(32,), epochs=3, schedule="constant"), data)
    b = train(preset("sgd-128", epochs=3, lr=0.05, momentum=0.9), data)
    return classifier(a, data.class_names), classifier(b, data.class_names), data


def test_agreement_counts_what_a_count_image_by_image_counts(two_models):
    a, b, data = two_models
    y = data.y_test
    pa, pb = a.predict(data.x_test), b.predict(data.x_test)
    stats = metrics.agreement(y, pa, pb, 10)

    differ, only_a, only_b, both_wrong, by_class = [], 0, 0, 0, [0] * 10
    for i, (truth, da, db) in enumerate(zip(y.tolist(), pa.tolist(), pb.tolist(), strict=True)):
        if da != db:
            differ.append(i)
            by_class[truth] += 1
        only_a += da == truth and db != truth
        only_b += db == truth and da != truth
        both_wrong += da != truth and db != truth and da != db
    assert stats["n"] == 2000
    assert stats["disagreements"].tolist() == differ and stats["disagreements"].dtype == np.int64
    assert stats["agreement"] == 1 - len(differ) / 2000
    assert stats["only_a_right"] == only_a and stats["only_b_right"] == only_b
    assert stats["both_wrong_differently"] == both_wrong
    assert stats["disagreements_by_class"].tolist() == by_class
    assert stats["accuracy_a"] == sum(p == t for p, t in zip(pa.tolist(), y.tolist(), strict=True)) / 2000
    assert stats["accuracy_b"] == sum(p == t for p, t in zip(pb.tolist(), y.tolist(), strict=True)) / 2000
    # Real, different models: they mostly agree, yet each gets some digits the other misses.
    assert 0.8 < stats["agreement"] < 1 and only_a > 0 and only_b > 0
    # Where they disagree, A is right, or B is, or both are wrong: the three counts add up to the disagreements.
    assert only_a + only_b + both_wrong == len(differ)


def test_agreement_of_a_model_with_itself_and_of_nothing(two_models):
    a, _, data = two_models
    pa = a.predict(data.x_test)
    same = metrics.agreement(data.y_test, pa, pa.copy(), 10)
    assert same["agreement"] == 1.0 and len(same["disagreements"]) == 0
    assert same["only_a_right"] == same["only_b_right"] == same["both_wrong_differently"] == 0
    assert same["disagreements_by_class"].tolist() == [0] * 10
    empty = metrics.agreement([], [], [], 10)
    assert empty["n"] == 0 and empty["agreement"] == 1.0 and len(empty["disagreements_by_class"]) == 10
    with pytest.raises(ValueError, match="one length"):
        metrics.agreement(data.y_test, pa, pa[:-1])


def test_scores_are_what_counting_each_image_gives(two_models):
    a, _, data = two_models
    y = data.y_test
    proba = a.predict_proba(data.x_test)
    s = metrics.scores(y, proba, data.class_names)

    cm = np.zeros((10, 10), int)
    top2 = 0
    for truth, p in zip(y.tolist(), proba.tolist(), strict=True):
        ranked = sorted(range(10), key=lambda k: -p[k])
        cm[truth, ranked[0]] += 1
        top2 += truth in ranked[:2]
    assert s["n"] == 2000 and s["confusion_matrix"].tolist() == cm.tolist()
    assert s["accuracy"] == np.trace(cm) / 2000 and s["top2_accuracy"] == top2 / 2000
    assert s["accuracy"] < s["top2_accuracy"] < 1
    for c, row in enumerate(s["per_class"]):
        assert row["name"] == str(c) and row["support"] == cm[c].sum()
        assert row["recall"] == pytest.approx(cm[c, c] / cm[c].sum())
        assert row["precision"] == pytest.approx(cm[c, c] / cm[:, c].sum())


def test_a_model_and_a_dataset_that_do_not_fit_are_named(two_models):
    a, b, data = two_models
    assert check_dataset(data, a) is data and check_dataset(data, a, b) is data
    five = Dataset(
        "five", list("01234"), data.x_train, data.y_train % 5, data.x_test, data.y_test % 5, source="here"
    )
    with pytest.raises(
        DataError,
        match=r"^the model takes 784 pixels into 10 classes; five has 784 pixels and "
        r"5 classes$",
    ):
        check_dataset(five, a)
    with pytest.raises(DataError, match=r"^the models take 784 pixels into 10 classes; five has"):
        check_dataset(five, a, b)
    narrow = Classifier(a.model, a.normalizer, list("01234"), {**a.architecture, "sizes": [784, 32, 5]})
    with pytest.raises(
        DataError,
        match=r"^the models do not read the same kind of input: \[784, 32, 10\] and "
        r"\[784, 32, 5\]$",
    ):
        check_same_input(a, narrow)
    with pytest.raises(DataError, match="the same kind of input"):
        check_dataset(data, a, narrow)
    check_same_input(a)
