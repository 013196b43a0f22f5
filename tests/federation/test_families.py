"""Model families: exact gradients, the proximal term, learning on toy data, option checks."""

import numpy as np
import pytest

from projects.federation.families import FAMILY_NAMES, TrainingDiverged, get_family


def numeric_gradient(family, params, X, y, eps=1e-6):
    """Central finite differences of the training objective, one coordinate at a time."""
    grads = []
    for i, p in enumerate(params):
        g = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            shifted = [q.copy() for q in params]
            shifted[i][index] = p[index] + eps
            up, _ = family.loss_and_grads(shifted, X, y)
            shifted[i][index] = p[index] - eps
            down, _ = family.loss_and_grads(shifted, X, y)
            g[index] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


CASES = [
    ("logistic_regression", {}, 2),
    ("logistic_regression", {"l2": 0.1}, 2),
    ("logistic_regression", {"l2": 0.05}, 4),
    ("linear_regression", {}, 1),
    ("linear_regression", {"l2": 0.2}, 1),
    ("mlp", {"hidden_layers": [5]}, 2),
    ("mlp", {"hidden_layers": [5], "activation": "tanh", "l2": 0.1}, 3),
    ("mlp", {"hidden_layers": [4, 3], "activation": "tanh"}, 3),
    ("mlp", {"hidden_layers": [4, 3], "activation": "relu"}, 2),
    ("mlp", {"hidden_layers": [6], "task": "regression"}, 1),
    ("mlp", {"hidden_layers": [4, 3], "task": "regression", "activation": "tanh"}, 1),
]


@pytest.mark.parametrize(("name", "options", "n_outputs"), CASES)
def test_gradients_match_finite_differences(name, options, n_outputs):
    rng = np.random.default_rng(42)
    family = get_family(name, options)
    X = rng.normal(size=(12, 3))
    classifies = family.task == "classification"
    y = np.arange(12) % n_outputs if classifies else rng.normal(size=12)
    # Random parameters (linear models start at zero, which would hide sign errors).
    params = [p + rng.normal(scale=0.5, size=p.shape) for p in family.init(3, n_outputs, rng)]
    _, analytic = family.loss_and_grads(params, X, y)
    numeric = numeric_gradient(family, params, X, y)
    for a, n in zip(analytic, numeric, strict=True):
        assert a.shape == n.shape
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-7)


def test_parameter_layouts():
    rng = np.random.default_rng(0)
    shapes = lambda params: [p.shape for p in params]  # noqa: E731
    assert shapes(get_family("logistic_regression").init(4, 2, rng)) == [(4, 1), (1,)]
    assert shapes(get_family("logistic_regression").init(4, 3, rng)) == [(4, 3), (3,)]
    assert shapes(get_family("linear_regression").init(4, 1, rng)) == [(4, 1), (1,)]
    mlp = get_family("mlp", {"hidden_layers": [8, 5]})
    assert shapes(mlp.init(4, 3, rng)) == [(4, 8), (8,), (8, 5), (5,), (5, 3), (3,)]
    assert shapes(mlp.init(4, 2, rng)) == [(4, 8), (8,), (8, 5), (5,), (5, 1), (1,)]
    params = get_family("mlp", {"hidden_layers": [8]}).init(4, 2, rng)
    limit = np.sqrt(6 / (4 + 8))  # Glorot uniform
    assert np.all(np.abs(params[0]) <= limit)
    assert params[0].std() > 0
    assert np.all(params[1] == 0)
    assert all(p.dtype == np.float64 for p in params)


def test_init_is_seeded():
    mlp = get_family("mlp")
    a = mlp.init(5, 2, np.random.default_rng(7))
    b = mlp.init(5, 2, np.random.default_rng(7))
    c = mlp.init(5, 2, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def separable(rng, n=120, classes=2):
    centres = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]])[:classes]
    y = np.arange(n) % classes
    return centres[y] + rng.normal(scale=0.5, size=(n, 2)), y


@pytest.mark.parametrize(
    ("name", "options", "classes"),
    [
        ("logistic_regression", {}, 2),
        ("logistic_regression", {}, 4),
        ("mlp", {"hidden_layers": [16]}, 2),
        ("mlp", {"hidden_layers": [16, 8], "activation": "tanh"}, 4),
    ],
)
def test_training_reduces_the_loss_on_separable_data(name, options, classes):
    rng = np.random.default_rng(1)
    X, y = separable(rng, classes=classes)
    family = get_family(name, options)
    start = family.init(2, classes, rng)
    before = family.evaluate(start, X, y)
    trained = family.train(
        start, X, y, epochs=20, batch_size=16, learning_rate=0.1, rng=np.random.default_rng(2)
    )
    after = family.evaluate(trained, X, y)
    assert after["loss"] < before["loss"] / 2
    assert after["accuracy"] == 1.0
    assert set(after) == {"loss", "accuracy", "f1", "roc_auc"}
    assert after["f1"] == 1.0 and after["roc_auc"] == 1.0
    np.testing.assert_array_equal(family.predict(trained, X), y)


@pytest.mark.parametrize("name", ["linear_regression", "mlp"])
def test_regression_learns_a_linear_target(name):
    rng = np.random.default_rng(3)
    X = rng.uniform(size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    family = get_family(name, {"task": "regression"} if name == "mlp" else {})
    start = family.init(3, 1, rng)
    trained = family.train(
        start, X, y, epochs=200, batch_size=20, learning_rate=0.05, rng=np.random.default_rng(4)
    )
    metrics = family.evaluate(trained, X, y)
    assert set(metrics) == {"loss", "mse", "rmse", "mae", "r2"}
    assert metrics["loss"] == metrics["mse"] < family.evaluate(start, X, y)["mse"] / 10
    assert metrics["r2"] > 0.9
    assert metrics["rmse"] == pytest.approx(np.sqrt(metrics["mse"]))
    assert family.predict(trained, X).shape == (200,)


def test_the_proximal_term_pulls_towards_the_starting_point():
    rng = np.random.default_rng(5)
    X, y = separable(rng)
    family = get_family("logistic_regression")
    anchor = [p + 1.0 for p in family.init(2, 2, rng)]
    distance = {}
    for mu in (0.0, 1.0, 10.0):
        trained = family.train(
            anchor,
            X,
            y,
            epochs=10,
            batch_size=10,
            learning_rate=0.05,
            rng=np.random.default_rng(6),
            proximal_mu=mu,
        )
        moved = [np.sum((t - a) ** 2) for t, a in zip(trained, anchor, strict=True)]
        distance[mu] = np.sqrt(sum(moved))
    assert distance[0.0] > distance[1.0] > distance[10.0] > 0


def test_the_proximal_step_is_mu_times_the_distance():
    # With no data gradient (one row exactly on target), one step moves w by lr * mu * (w - w0);
    # at the first step w == w0, so only the data gradient acts; we check the second step.
    family = get_family("linear_regression")
    X, y = np.array([[0.0]]), np.array([0.0])
    start = [np.array([[2.0]]), np.array([1.0])]
    # Step 1: prediction 1, residual 1: db = 2*1 = 2 -> b = 1 - 0.1*2 = 0.8; W unchanged (X = 0).
    # Step 2: db = 2*0.8 + mu*(0.8 - 1) = 1.6 - 0.5*0.2 = 1.5 -> b = 0.8 - 0.15 = 0.65.
    trained = family.train(
        start,
        X,
        y,
        epochs=2,
        batch_size=1,
        learning_rate=0.1,
        rng=np.random.default_rng(0),
        proximal_mu=0.5,
    )
    assert trained[0][0, 0] == 2.0
    assert trained[1][0] == pytest.approx(0.65, rel=1e-14)


def test_training_never_mutates_its_input_and_is_seeded():
    rng = np.random.default_rng(9)
    X, y = separable(rng)
    family = get_family("mlp", {"hidden_layers": [4]})
    start = family.init(2, 2, rng)
    copies = [p.copy() for p in start]
    kwargs = {"epochs": 2, "batch_size": 8, "learning_rate": 0.1, "proximal_mu": 0.1}
    a = family.train(start, X, y, rng=np.random.default_rng(1), **kwargs)
    b = family.train(start, X, y, rng=np.random.default_rng(1), **kwargs)
    c = family.train(start, X, y, rng=np.random.default_rng(2), **kwargs)
    assert all(np.array_equal(p, q) for p, q in zip(start, copies, strict=True))
    assert all(p.tobytes() == q.tobytes() for p, q in zip(a, b, strict=True))
    assert any(p.tobytes() != q.tobytes() for p, q in zip(a, c, strict=True))
    assert all(p is not q for p, q in zip(a, start, strict=True))


def test_extreme_logits_stay_finite():
    family = get_family("logistic_regression")
    X = np.array([[1e6], [-1e6]])
    params = [np.array([[1e6]]), np.array([0.0])]
    metrics = family.evaluate(params, X, np.array([0, 0]))
    assert np.isfinite(metrics["loss"]) and metrics["accuracy"] == 0.5
    loss, grads = family.loss_and_grads(params, X, np.array([0, 1]))
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)


def test_divergence_is_reported_not_returned():
    rng = np.random.default_rng(0)
    X = rng.normal(scale=100.0, size=(50, 2))
    family = get_family("linear_regression")
    with pytest.raises(TrainingDiverged):
        family.train(
            family.init(2, 1, rng),
            X,
            X[:, 0] * 1e3,
            epochs=50,
            batch_size=5,
            learning_rate=10.0,
            rng=rng,
        )


def test_roc_auc_is_left_out_when_a_class_is_absent():
    family = get_family("logistic_regression")
    params = family.init(2, 3, np.random.default_rng(0))
    metrics = family.evaluate(params, np.ones((4, 2)), np.array([0, 1, 1, 0]))
    assert "roc_auc" not in metrics
    assert set(metrics) == {"loss", "accuracy", "f1"}


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("random_forest", {}, "Unknown model family"),
        ("logistic_regression", {"hidden_layers": [3]}, "Unknown option"),
        ("logistic_regression", {"l2": -1}, "zero or more"),
        ("mlp", {"hidden_layers": []}, "one or two"),
        ("mlp", {"hidden_layers": [4, 4, 4]}, "one or two"),
        ("mlp", {"hidden_layers": [0]}, "between 1 and 1024"),
        ("mlp", {"hidden_layers": [1025]}, "between 1 and 1024"),
        ("mlp", {"hidden_layers": [True]}, "one or two"),
        ("mlp", {"hidden_layers": 32}, "one or two"),
        ("mlp", {"activation": "sigmoid"}, "activation"),
        ("mlp", {"task": "ranking"}, "task"),
    ],
)
def test_get_family_refuses_bad_names_and_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        get_family(name, options)


def test_init_refuses_outputs_that_do_not_fit_the_task():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two classes"):
        get_family("logistic_regression").init(3, 1, rng)
    with pytest.raises(ValueError, match="one value"):
        get_family("linear_regression").init(3, 2, rng)
    with pytest.raises(ValueError, match="one value"):
        get_family("mlp", {"task": "regression"}).init(3, 2, rng)


def test_every_family_name_resolves():
    for name in FAMILY_NAMES:
        family = get_family(name)
        assert family.name == name
        assert family.task in ("classification", "regression")
