"""Classification scores in plain numpy: F1 and ROC AUC, as scikit-learn computes them.

A site scores the model twice a round (the model it received and its own update) on its
validation rows. scikit-learn's ``f1_score`` and ``roc_auc_score`` validate their inputs at
length and cost milliseconds per call on a few hundred rows, more than the training itself, so
the same arithmetic is done here directly, step for step as scikit-learn 1.x does it (the
known-answer tests compare the two on random inputs):

- F1 per class is ``2 tp / (true + predicted)``, 0 where both are 0 (``zero_division=0``); the
  binary score is the class at index 1's, the macro score the mean over the given labels.
- ROC AUC is the trapezoidal area under the ROC curve, its points taken at each distinct score
  (descending, ties together) with the collinear ones dropped, as ``roc_curve`` does with
  ``drop_intermediate=True``; one-vs-rest for more classes, averaged without weights (macro).
"""

from collections.abc import Sequence

import numpy as np


def f1(y: np.ndarray, predicted: np.ndarray, labels: Sequence[int]) -> float:
    """F1 of the class at index 1 for two labels, else the macro average over ``labels``."""
    y = np.asarray(y)
    predicted = np.asarray(predicted)
    per_class = []
    chosen = [labels[1]] if len(labels) == 2 else list(labels)
    for label in chosen:
        truth = y == label
        guess = predicted == label
        tp = float(np.count_nonzero(truth & guess))
        denominator = float(np.count_nonzero(truth)) + float(np.count_nonzero(guess))
        per_class.append(2.0 * tp / denominator if denominator > 0 else 0.0)
    return float(np.mean(np.asarray(per_class, dtype=np.float64)))


def _binary_roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    truth = np.asarray(truth, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="mergesort")[::-1]
    score = score[order]
    truth = truth[order].astype(np.float64)
    distinct = np.where(np.diff(score))[0]
    threshold_idxs = np.r_[distinct, truth.size - 1]
    tps = np.cumsum(truth)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    if len(fps) > 2:
        optimal = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps = fps[optimal]
        tps = tps[optimal]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    if fps[-1] <= 0 or tps[-1] <= 0:
        raise ValueError("ROC AUC needs both classes among the rows.")
    fpr = fps / fps[-1]
    tpr = tps / tps[-1]
    return float(np.trapezoid(tpr, fpr))


def roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC of class probabilities ``proba`` (rows by classes); every class must occur."""
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[1] == 2:
        return _binary_roc_auc(y == 1, proba[:, 1])
    scores = [_binary_roc_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]
    return float(np.average(np.asarray(scores, dtype=np.float64)))
