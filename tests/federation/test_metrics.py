"""The engine's F1 and ROC AUC give scikit-learn's numbers, bit for bit, without its overhead."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from projects.federation import metrics


@pytest.mark.parametrize("seed", range(40))
def test_binary_scores_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # Rounded scores make ties, which the curve takes together.
    score = np.round(rng.random(n), int(rng.integers(1, 6)))
    proba = np.column_stack([1 - score, score])
    predicted = (score > 0.5).astype(np.int64)
    assert metrics.f1(y, predicted, [0, 1]) == f1_score(
        y, predicted, labels=[0, 1], average="binary", zero_division=0.0
    )
    assert metrics.roc_auc(y, proba) == roc_auc_score(y, proba[:, 1])


@pytest.mark.parametrize("seed", range(20))
def test_multiclass_scores_equal_scikit_learns(seed):
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(6, 300)), int(rng.integers(3, 6))
    y = rng.integers(0, k, n)
    y[:k] = np.arange(k)
    raw = np.round(rng.random((n, k)), int(rng.integers(1, 6))) + 1e-3
    proba = raw / raw.sum(axis=1, keepdims=True)
    predicted = np.argmax(proba, axis=1)
    labels = list(range(k))
    assert metrics.f1(y, predicted, labels) == f1_score(
        y, predicted, labels=labels, average="macro", zero_division=0.0
    )
    assert metrics.roc_auc(y, proba) == roc_auc_score(
        y, proba, multi_class="ovr", average="macro", labels=labels
    )


def test_f1_is_zero_when_a_class_is_neither_true_nor_predicted():
    y = np.array([0, 0, 0])
    assert metrics.f1(y, np.array([0, 0, 0]), [0, 1]) == 0.0
    assert metrics.f1(y, np.array([0, 0, 0]), [0, 1, 2]) == f1_score(
        y, [0, 0, 0], labels=[0, 1, 2], average="macro", zero_division=0.0
    )
