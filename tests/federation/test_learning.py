"""Federated training on scikit-learn's breast-cancer data, against training on pooled rows.

The data are split as the demo splits them: a held-out share for the validator, and three
hospitals of uneven size with uneven mixes of malignant and benign cases, so FedAvg has to cope
with sites that disagree.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from projects.federation.data import file_sha256, load_csv
from projects.federation.encoding import encode_params
from projects.federation.loop import (
    LocalSite,
    initial_params,
    run_in_process,
    run_secure_in_process,
    train_central,
)
from projects.federation.protocol import LearningSpec
from projects.federation.site import RoundTask, evaluate_on_file

LABEL = "diagnosis"
CLASSES = ["0", "1"]
HOLDOUT_SHARE = 0.2
# (malignant share, benign share) of the non-held-out rows; the last site takes what is left.
SHARES = {"north": (0.55, 0.35), "harbour": (0.18, 0.42), "taichung": None}

ROUNDS = 10
# The demo's hyper-parameters: ten rounds of ten local epochs reach the pooled model's accuracy.
DEMO = {
    "family": "logistic_regression",
    "family_options": {"l2": 0.003},
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 0.5,
}


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory):
    """Three hospitals' files (``<dir>/<slug>/breast_cancer.csv``) and a held-out file."""
    root = tmp_path_factory.mktemp("sites")
    bunch = load_breast_cancer()
    features = [str(name) for name in bunch.feature_names]
    diagnosis = 1 - bunch.target  # 1 = malignant
    order = np.random.RandomState(20240611).permutation(len(diagnosis))
    n_holdout = round(HOLDOUT_SHARE * len(order))
    holdout, rest = order[:n_holdout], order[n_holdout:]
    malignant = [int(i) for i in rest if diagnosis[i] == 1]
    benign = [int(i) for i in rest if diagnosis[i] == 0]
    header = [*features, LABEL]

    def rows(indices):
        return [[*(format(v, ".6g") for v in bunch.data[i]), str(diagnosis[i])] for i in indices]

    sites, taken_m, taken_b = [], 0, 0
    for slug, shares in SHARES.items():
        if shares is None:
            picked = malignant[taken_m:] + benign[taken_b:]
        else:
            n_m, n_b = round(shares[0] * len(malignant)), round(shares[1] * len(benign))
            picked = malignant[taken_m : taken_m + n_m] + benign[taken_b : taken_b + n_b]
            taken_m, taken_b = taken_m + n_m, taken_b + n_b
        path = write_csv(root / slug / "breast_cancer.csv", header, rows(sorted(picked)))
        sites.append(LocalSite(site=slug, path=path, sha256=file_sha256(path)))
    holdout_path = write_csv(root / "university" / "holdout.csv", header, rows(sorted(holdout)))
    # The portal sends the ranges seen over the training files.
    pooled = np.concatenate([load_csv(s.path, features=features, label=None)[0] for s in sites])
    ranges = [(float(lo), float(hi)) for lo, hi in zip(pooled.min(0), pooled.max(0), strict=True)]
    return sites, holdout_path, features, ranges


def base_task(features, ranges, **changes):
    spec = LearningSpec(
        features=tuple(features),
        label=LABEL,
        classes=tuple(CLASSES),
        feature_ranges=tuple(ranges),
        task="classification",
    )
    return RoundTask(
        **{
            **DEMO,
            "spec": spec,
            "proximal_mu": 0.0,
            "seed": 20240611,
            "round_number": 0,
            "site": "",
            **changes,
        }
    )


def holdout_metrics(params, task, path):
    return evaluate_on_file(
        task.family,
        task.family_options,
        params,
        path=path,
        features=task.features,
        label=LABEL,
        classes=CLASSES,
        feature_ranges=task.feature_ranges,
    )


def test_fedavg_reaches_the_pooled_accuracy(hospitals):
    sites, holdout, features, ranges = hospitals
    assert [len(load_csv(s.path, features=features, label=None)[0]) for s in sites] == [
        192,
        151,
        112,
    ]
    task = base_task(features, ranges)
    history = run_in_process(sites, task, rounds=ROUNDS, strategy="fedavg")
    assert len(history) == ROUNDS
    federated = holdout_metrics(history[-1], task, holdout)
    central = holdout_metrics(
        train_central(sites, task, epochs=ROUNDS * task.epochs), task, holdout
    )
    assert federated["rows"] == 114
    assert federated["accuracy"] >= 0.93
    assert federated["accuracy"] >= central["accuracy"] - 0.02
    assert federated["roc_auc"] > 0.97
    first = holdout_metrics(history[0], task, holdout)
    assert federated["loss"] < first["loss"]


def test_the_in_process_loop_is_reproducible_to_the_bit(hospitals):
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, epochs=1)
    runs = [
        run_in_process(sites, t, rounds=2, strategy="fedavg")
        for t in (task, task, dataclasses.replace(task, seed=1))
    ]
    blobs = [[encode_params(params) for params in run] for run in runs]
    assert blobs[0] == blobs[1]
    assert blobs[0][-1] != blobs[2][-1]
    # The order of the list of sites does not matter: they are taken in sorted order.
    reversed_run = run_in_process(list(reversed(sites)), task, rounds=2, strategy="fedavg")
    assert [encode_params(p) for p in reversed_run] == blobs[0]


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("fedprox", {"mu": 0.1}),
        ("fedadam", None),
        ("median", None),
        ("trimmed_mean", {"beta": 0.34}),
    ],
)
def test_every_strategy_learns(hospitals, strategy, options):
    sites, holdout, features, ranges = hospitals
    task = base_task(features, ranges, epochs=3)
    history = run_in_process(sites, task, rounds=5, strategy=strategy, strategy_options=options)
    start = initial_params(task.family, task.family_options, len(features), 2, task.seed)
    assert [p.shape for p in history[-1]] == [p.shape for p in start]
    assert all(np.all(np.isfinite(p)) for p in history[-1])
    before = holdout_metrics(start, task, holdout)
    after = holdout_metrics(history[-1], task, holdout)
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.8


def test_fedprox_sends_mu_to_the_sites(hospitals):
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, epochs=2)
    plain = run_in_process(sites, task, rounds=1, strategy="fedavg")
    prox = run_in_process(sites, task, rounds=1, strategy="fedprox", strategy_options={"mu": 1.0})
    zero = run_in_process(sites, task, rounds=1, strategy="fedprox", strategy_options={"mu": 0.0})
    assert encode_params(zero[0]) == encode_params(plain[0])
    assert encode_params(prox[0]) != encode_params(plain[0])


def test_central_training_takes_slugs_from_the_directory_names(hospitals):
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, epochs=1)
    by_site = train_central(sites, task, epochs=2)
    by_path = train_central([s.path for s in sites], task, epochs=2)
    assert encode_params(by_site) == encode_params(by_path)


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_securely_aggregated_runs_match_plain_runs_within_quantisation(hospitals, strategy):
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges)
    plain = run_in_process(sites, task, rounds=3, strategy=strategy)
    secure = run_secure_in_process(
        sites, task, rounds=3, strategy=strategy, clip=100.0, max_weight=1000.0
    )
    for a, b in zip(plain[-1], secure[-1], strict=True):
        assert np.max(np.abs(a - b)) < 1e-9
    assert any(not np.array_equal(a, b) for a, b in zip(plain[-1], secure[-1], strict=True))


def test_strategies_needing_individual_updates_cannot_run_securely(hospitals):
    sites, _, features, ranges = hospitals
    for strategy in ("median", "trimmed_mean"):
        with pytest.raises(ValueError, match="individual updates"):
            run_secure_in_process(
                sites,
                base_task(features, ranges),
                rounds=1,
                strategy=strategy,
                clip=1.0,
                max_weight=1000.0,
            )
