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


# --- The run's options: L2 strength, validation share, feature scaling -------------------------


def _plain_sgd(X, y, *, epochs, batch_size, learning_rate, rng):
    """Logistic regression by the textbook: minibatch SGD on the mean cross-entropy, no penalty."""
    W, b = np.zeros((X.shape[1], 1)), np.zeros(1)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            rows = order[start : start + batch_size]
            p = 1.0 / (1.0 + np.exp(-(X[rows] @ W + b)))
            error = (p - y[rows].reshape(-1, 1)) / len(rows)
            W, b = W - learning_rate * (X[rows].T @ error), b - learning_rate * error.sum(axis=0)
    return [W, b]


def test_l2_zero_is_the_plain_unregularised_computation(hospitals):
    from projects.federation.data import scale, split
    from projects.federation.site import site_rng, train_on_site

    sites, _, features, ranges = hospitals
    site = sites[0]
    task = base_task(features, ranges, family_options={"l2": 0.0}, site=site.site, round_number=1)
    start = initial_params(task.family, task.family_options, len(features), 2, task.seed)
    result = train_on_site(task, start, data_path=site.path, expected_sha256=site.sha256)

    X, raw = load_csv(site.path, features=features, label=LABEL)
    X, y = scale(X, ranges), np.array([int(v) for v in raw])
    train_rows, _ = split(len(X), task.validation_share, site_rng(task.seed, site.site, "split"))
    plain = _plain_sgd(
        X[train_rows],
        y[train_rows],
        epochs=task.epochs,
        batch_size=task.batch_size,
        learning_rate=task.learning_rate,
        rng=site_rng(task.seed, site.site, "train", 1),
    )
    for ours, theirs in zip(result.params, plain, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    # The default strength is a different model: the option is not ignored.
    regularised = train_on_site(
        dataclasses.replace(task, family_options={"l2": 0.003}),
        start,
        data_path=site.path,
        expected_sha256=site.sha256,
    )
    assert not np.allclose(regularised.params[0], plain[0], rtol=1e-6)


def test_a_validation_share_of_zero_trains_on_every_row_and_scores_nothing(hospitals):
    from projects.federation.site import SiteRefusal, evaluate_on_site, train_on_site

    sites, _, features, ranges = hospitals
    site = sites[0]
    task = base_task(features, ranges, validation_share=0.0, site=site.site, round_number=1)
    start = initial_params(task.family, task.family_options, len(features), 2, task.seed)
    result = train_on_site(task, start, data_path=site.path, expected_sha256=site.sha256)
    assert result.sample_count == 192  # every row
    assert result.metrics == {"validation_rows": 0.0}
    assert result.global_metrics == {"validation_rows": 0.0}
    with pytest.raises(SiteRefusal) as refused:
        evaluate_on_site(
            task, start, data_path=site.path, expected_sha256=site.sha256, holdout=False
        )
    assert refused.value.code == "empty"
    # A held-out file is scored whole, whatever the share.
    scored = evaluate_on_site(
        task, start, data_path=site.path, expected_sha256=site.sha256, holdout=True
    )
    assert scored.sample_count == 192


@pytest.mark.parametrize(
    ("changes", "scaling"),
    [
        ({"family_options": {"l2": 0.0}}, "ranges"),
        ({"family_options": {"l2": 0.1}, "validation_share": 0.0}, "ranges"),
        ({"validation_share": 0.35}, "standardise"),
        ({"learning_rate": 1e-4}, "none"),
    ],
)
def test_every_option_is_reproducible_to_the_bit(hospitals, changes, scaling):
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, epochs=2, **changes)
    if scaling != "ranges":
        pooled = np.concatenate([load_csv(s.path, features=features, label=None)[0] for s in sites])
        stats = (
            tuple(zip(pooled.mean(0), pooled.std(0), strict=True))
            if scaling == "standardise"
            else ()
        )
        task = dataclasses.replace(
            task, spec=dataclasses.replace(task.spec, scaling=scaling, feature_stats=stats)
        )
    one = run_in_process(sites, task, rounds=2, strategy="fedavg")
    two = run_in_process(sites, task, rounds=2, strategy="fedavg")
    assert all(np.array_equal(a, b) for a, b in zip(one[-1], two[-1], strict=True))
    assert all(np.all(np.isfinite(p)) for p in one[-1])


def test_standardisation_uses_the_shared_summaries_not_the_sites_own(hospitals):
    from projects.federation.data import standardise, transform

    sites, _, features, ranges = hospitals
    pooled = np.concatenate([load_csv(s.path, features=features, label=None)[0] for s in sites])
    stats = list(zip(pooled.mean(0), pooled.std(0), strict=True))
    own = load_csv(sites[0].path, features=features, label=None)[0]
    scaled = transform(own, "standardise", ranges, stats)
    np.testing.assert_allclose(scaled, (own - pooled.mean(0)) / pooled.std(0), rtol=1e-12)
    assert abs(scaled.mean()) > 1e-3  # not the site's own standardisation
    assert np.array_equal(transform(own, "none", ranges), own)
    constant = standardise(np.ones((3, 1)), [(1.0, 0.0)])
    assert np.array_equal(constant, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="Unknown feature scaling"):
        transform(own, "zscore", ranges)


def test_fedavg_without_l2_is_plain_fedavg_of_plain_sgd(hospitals):
    """Two rounds of the portal's FedAvg with L2 0 are the textbook computation: every site runs
    unregularised minibatch SGD from the global model, the coordinator averages by rows."""
    from projects.federation.data import scale, split
    from projects.federation.site import site_rng

    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, family_options={"l2": 0.0}, epochs=3)
    history = run_in_process(sites, task, rounds=2, strategy="fedavg")

    data = {}
    for site in sites:
        X, raw = load_csv(site.path, features=features, label=LABEL)
        X, y = scale(X, ranges), np.array([int(v) for v in raw])
        rows, _ = split(len(X), task.validation_share, site_rng(task.seed, site.site, "split"))
        data[site.site] = (X[rows], y[rows])
    W, b = np.zeros((len(features), 1)), np.zeros(1)
    for round_number in (1, 2):
        updates = []
        for slug in sorted(data):
            X, y = data[slug]
            rng = site_rng(task.seed, slug, "train", round_number)
            w, c = W.copy(), b.copy()
            for _ in range(task.epochs):
                order = rng.permutation(len(X))
                for start in range(0, len(X), task.batch_size):
                    rows = order[start : start + task.batch_size]
                    p = 1.0 / (1.0 + np.exp(-(X[rows] @ w + c)))
                    error = (p - y[rows].reshape(-1, 1)) / len(rows)
                    w = w - task.learning_rate * (X[rows].T @ error)
                    c = c - task.learning_rate * error.sum(axis=0)
            updates.append((w, c, len(X)))
        total = sum(n for _w, _c, n in updates)
        W = sum(n * w for w, _c, n in updates) / total
        b = sum(n * c for _w, c, n in updates) / total
    np.testing.assert_allclose(history[-1][0], W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(history[-1][1], b, rtol=1e-9, atol=1e-12)


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
