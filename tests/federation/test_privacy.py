"""Differential privacy at the sites: DP-SGD's clipping and noise, and the accountant."""

import dataclasses
import logging
import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from projects.federation import privacy
from projects.federation.encoding import encode_params
from projects.federation.families import get_family
from projects.federation.loop import run_in_process
from projects.federation.protocol import DpSpec, LearningSpec, ProtocolError
from tests.federation.test_learning import base_task, hospitals  # noqa: F401 (fixture)

logging.getLogger("absl").setLevel(logging.ERROR)  # orders dropped for not converging: harmless

DP = DpSpec(noise_multiplier=1.1, clip_norm=0.5, epsilon=3.0, delta=1e-5, ceiling=8.0)


# --- The mechanism --------------------------------------------------------------------------


def test_clipping_holds_per_example():
    rng = np.random.default_rng(0)
    scales = np.array([0.01, 1.0, 50.0]).reshape(3, 1, 1)
    grads = [rng.normal(0, 1, (3, 5, 2)) * scales, rng.normal(0, 1, (3, 2)) * scales[:, 0]]
    clipped = privacy.clip_per_example(grads, 0.5)
    norms = np.sqrt(sum(np.sum(np.reshape(g, (3, -1)) ** 2, axis=1) for g in clipped))
    assert np.all(norms <= 0.5 + 1e-9)
    assert norms[1] == pytest.approx(0.5) and norms[2] == pytest.approx(0.5)
    # A gradient inside the bound is left as it is: clipping, not normalising.
    assert np.array_equal(clipped[0][0], grads[0][0]) and np.array_equal(clipped[1][0], grads[1][0])


def test_the_noise_has_the_configured_scale():
    rng = np.random.default_rng(1)
    z, c = 1.3, 0.7
    # No gradients: what is left is the noise alone, N(0, (z C)^2) on every coordinate.
    noise = privacy.noisy_sum([], [(200_000,)], clip_norm=c, noise_multiplier=z, rng=rng)[0]
    assert float(np.std(noise)) == pytest.approx(z * c, rel=0.01)
    assert abs(float(np.mean(noise))) < 0.01
    # With gradients the noise sits on their clipped sum.
    grads = [np.full((3, 50_000), 10.0)]  # three examples, each clipped to norm c
    total = privacy.noisy_sum(grads, [(50_000,)], clip_norm=c, noise_multiplier=z, rng=rng)[0]
    clipped_sum = 3 * 10.0 * c / math.sqrt(50_000 * 100.0)
    assert float(np.mean(total)) == pytest.approx(clipped_sum, abs=0.02)
    assert float(np.std(total)) == pytest.approx(z * c, rel=0.02)


@pytest.mark.parametrize("family", ["logistic_regression", "linear_regression", "mlp"])
def test_per_example_gradients_are_each_rows_own(family):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(7, 4))
    options = (
        {"task": "classification", "hidden_layers": [5, 3], "l2": 0.01}
        if family == "mlp"
        else {"l2": 0.01}
    )
    y = rng.integers(0, 3, 7) if family != "linear_regression" else rng.normal(size=7)
    model = get_family(family, options)
    params = model.init(4, 1 if family == "linear_regression" else 3, np.random.default_rng(6))
    params = [p + rng.normal(0, 0.1, p.shape) for p in params]
    batched = model.per_example_grads(params, X, y)
    for i in range(7):
        alone = model.loss_and_grads(params, X[i : i + 1], y[i : i + 1])[1]
        for got, want in zip(batched, alone, strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-10, atol=1e-12)

    # The loop a family without the one-pass method gets says the same.
    class Plain:
        loss_and_grads = model.loss_and_grads

    looped = privacy.per_example_grads(Plain(), params, X, y)
    for got, want in zip(looped, batched, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["logistic_regression", "linear_regression", "mlp"])
def test_dp_sgd_trains_every_family_reproducibly(family):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 4))
    options = {"task": "classification"} if family == "mlp" else {}
    y = (X[:, 0] > 0).astype(int) if family != "linear_regression" else X[:, 0] * 2.0
    model = get_family(family, options)
    start = model.init(4, 1 if family == "linear_regression" else 2, np.random.default_rng(3))

    def train(noise_seed: int, z: float = 1.0):
        return model_params(
            privacy.dp_sgd(
                model,
                start,
                X,
                y,
                epochs=2,
                batch_size=10,
                learning_rate=0.1,
                clip_norm=1.0,
                noise_multiplier=z,
                rng=np.random.default_rng(4),
                noise_rng=np.random.default_rng(noise_seed),
            )
        )

    assert train(5) == train(5)
    assert train(5) != train(6)  # the noise is really there


def model_params(params):
    return encode_params(params)


def test_a_step_moves_by_at_most_the_clipped_bound_plus_noise():
    """With no noise, one step of DP-SGD moves the model by at most lr * C * |batch| / (qn)."""
    rng = np.random.default_rng(7)
    X = rng.normal(0, 100, size=(40, 3))  # huge gradients: every example is clipped
    y = rng.integers(0, 2, 40)
    model = get_family("logistic_regression")
    start = model.init(3, 2, np.random.default_rng(0))
    sample = np.random.default_rng(8)
    moved = privacy.dp_sgd(
        model,
        start,
        X,
        y,
        epochs=1,
        batch_size=40,  # q = 1: every row, one step
        learning_rate=1.0,
        clip_norm=0.25,
        noise_multiplier=1e-12,
        rng=sample,
        noise_rng=np.random.default_rng(9),
    )
    step = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(moved, start, strict=True)))
    assert step <= 0.25 + 1e-9  # the mean of 40 gradients, each of norm at most C


# --- Accounting -----------------------------------------------------------------------------


def direct_epsilon(events, delta):
    """dp-accounting called directly, as its own documentation composes DP-SGD."""
    accountant = RdpAccountant(privacy.ORDERS)
    for z, q, steps in events:
        accountant.compose(
            dp_event.SelfComposedDpEvent(
                dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps
            )
        )
    return accountant.get_epsilon(delta)


def test_the_accountant_equals_dp_accounting_called_directly():
    events = [(1.1, 0.01, 100), (1.1, 0.01, 100), (2.0, 0.05, 300)]
    ours = privacy.epsilon([(privacy.Event(z, q, steps), 1) for z, q, steps in events], 1e-5)
    assert ours == direct_epsilon(events, 1e-5)
    # Repetitions compose as the same event repeated.
    twice = privacy.epsilon([(privacy.Event(1.1, 0.01, 100), 2)], 1e-5)
    assert twice == direct_epsilon([(1.1, 0.01, 200)], 1e-5)
    # The design notes' figure: 10 000 records, batch 100, 20 epochs of 100 steps, z = 1.1.
    assert privacy.epsilon([(privacy.Event(1.1, 0.01, 2000), 1)], 1e-5) == pytest.approx(
        2.38, abs=0.02
    )
    # Whole orders only can only overstate epsilon, by little, against every default order.
    full = RdpAccountant()
    full.compose(privacy.dp_event(privacy.Event(2.0, 0.05, 300)))
    ours = privacy.epsilon([(privacy.Event(2.0, 0.05, 300), 1)], 1e-5)
    assert full.get_epsilon(1e-5) <= ours <= full.get_epsilon(1e-5) * 1.02


def test_composition_across_runs_is_tighter_than_the_sum():
    a, b = privacy.Event(5.0, 1.0, 50), privacy.Event(8.0, 1.0, 100)
    eps_a = privacy.epsilon([(a, 1)], 1e-5)
    eps_b = privacy.epsilon([(b, 1)], 1e-5)
    both = privacy.epsilon([(a, 1), (b, 1)], 1e-5)
    assert eps_a == pytest.approx(7.08, abs=0.01)
    assert max(eps_a, eps_b) < both < eps_a + eps_b
    assert privacy.epsilon([], 1e-5) == 0.0


def test_calibration_meets_the_target_from_below():
    z = privacy.noise_for(
        target_epsilon=3.0, rows=96, batch_size=32, epochs=2, rounds=5, delta=1e-5
    )
    event = privacy.round_event(rows=96, batch_size=32, epochs=2, noise_multiplier=z)
    reached = privacy.epsilon([(event, 5)], 1e-5)
    assert reached <= 3.0
    assert reached == pytest.approx(3.0, rel=0.02)
    # More rounds need more noise; a looser budget less.
    more = privacy.noise_for(
        target_epsilon=3.0, rows=96, batch_size=32, epochs=2, rounds=10, delta=1e-5
    )
    looser = privacy.noise_for(
        target_epsilon=6.0, rows=96, batch_size=32, epochs=2, rounds=5, delta=1e-5
    )
    assert looser < z < more


def test_dp_options_are_checked():
    assert privacy.dp_options({"epsilon": 2}) == {"epsilon": 2.0, "clip_norm": 1.0}
    for bad in (
        {},
        {"epsilon": 0},
        {"epsilon": 1, "clip_norm": -1},
        {"epsilon": 1, "x": 1},
        {"epsilon": True},
        {"epsilon": float("nan")},
    ):
        with pytest.raises(ValueError):
            privacy.dp_options(bad)


# --- The contract and the site's own ledger -------------------------------------------------


def test_the_dp_spec_travels_in_the_learning_spec():
    spec = LearningSpec(("a",), "y", ("0", "1"), ((0.0, 1.0),), "classification", dp=DP)
    assert LearningSpec.from_json(spec.to_json()) == spec
    plain = dataclasses.replace(spec, dp=None)
    assert "dp" not in plain.to_json()  # a run without it keeps the bytes it had
    with pytest.raises(ProtocolError):
        LearningSpec.from_json({**spec.to_json(), "dp": {**DP.to_json(), "clip_norm": -1}})
    with pytest.raises(ProtocolError):
        LearningSpec.from_json({**spec.to_json(), "dp": {**DP.to_json(), "extra": 1}})


def test_the_site_ledger_refuses_exactly_past_the_ceiling(tmp_path):
    ledger = privacy.SiteLedger(tmp_path / "ledger.jsonl")
    event = privacy.Event(1.0, 0.1, 50)
    ledger.record(sha256="a" * 64, key=(1, "t", 1), event=event)
    ledger.record(sha256="a" * 64, key=(1, "t", 1), event=event)  # the same round once
    assert len(ledger.events("a" * 64)) == 1
    total = privacy.epsilon([(event, 2)], 1e-5)
    admit = dict(sha256="a" * 64, key=(1, "t", 2), event=event, delta=1e-5)
    ledger.admit(ceiling=total, **admit)  # exactly at the ceiling: allowed
    with pytest.raises(privacy.BudgetExceeded):
        ledger.admit(ceiling=math.nextafter(total, 0), **admit)
    # The round already spent is not counted against itself when sent again.
    ledger.admit(ceiling=privacy.epsilon([(event, 1)], 1e-5), **{**admit, "key": (1, "t", 1)})
    # Another file's spends are its own.
    ledger.admit(ceiling=privacy.epsilon([(event, 1)], 1e-5), **{**admit, "sha256": "b" * 64})


def test_the_in_process_loop_with_dp_is_reproducible_to_the_bit(hospitals):  # noqa: F811
    sites, _, features, ranges = hospitals
    task = base_task(features, ranges, epochs=1)
    task = dataclasses.replace(task, spec=dataclasses.replace(task.spec, dp=DP))
    runs = [run_in_process(sites, task, rounds=2, strategy="fedavg") for _ in range(2)]
    plain = run_in_process(
        sites, base_task(features, ranges, epochs=1), rounds=2, strategy="fedavg"
    )
    blobs = [[encode_params(p) for p in run] for run in runs]
    assert blobs[0] == blobs[1]
    assert blobs[0][-1] != encode_params(plain[-1])
