"""Aggregation strategies against numbers worked out by hand."""

import math

import numpy as np
import pytest

from projects.federation.strategies import (
    STRATEGIES,
    aggregate,
    get_strategy,
    strategy_options,
)


def arrays(*values):
    return [np.array(v, dtype=np.float64) for v in values]


GLOBAL = arrays([0.0, 0.0], [1.0])
# Two sites: weights 1 and 3.
RESULTS = [(arrays([1.0, 2.0], [3.0]), 1.0), (arrays([3.0, 6.0], [5.0]), 3.0)]


def test_fedavg_is_the_sample_weighted_mean():
    params, state = aggregate("fedavg", GLOBAL, RESULTS)
    # W: (1*[1, 2] + 3*[3, 6]) / 4 = [10, 20] / 4; b: (1*3 + 3*5) / 4 = 18 / 4
    np.testing.assert_array_equal(params[0], [2.5, 5.0])
    np.testing.assert_array_equal(params[1], [4.5])
    assert state is None
    assert all(p.dtype == np.float64 for p in params)


def test_fedavg_sums_in_the_given_order():
    rng = np.random.default_rng(0)
    results = [([rng.normal(size=50)], float(w)) for w in (7, 3, 11, 5)]
    params, _ = aggregate("fedavg", [np.zeros(50)], results)
    acc = np.zeros(50)
    for (p,), w in results:
        acc += w * p
    assert params[0].tobytes() == (acc / 26.0).tobytes()
    again, _ = aggregate("fedavg", [np.zeros(50)], results)
    assert again[0].tobytes() == params[0].tobytes()


def test_fedprox_aggregates_like_fedavg_and_sends_mu_to_the_sites():
    params, state = aggregate("fedprox", GLOBAL, RESULTS, options={"mu": 0.5})
    np.testing.assert_array_equal(params[0], [2.5, 5.0])
    np.testing.assert_array_equal(params[1], [4.5])
    assert state is None
    assert get_strategy("fedprox").client_options == frozenset({"mu"})
    assert strategy_options("fedprox", None) == {"mu": 0.01}
    assert get_strategy("fedavg").client_options == frozenset()


def test_fedadam_two_steps_by_hand():
    options = {"eta": 1.0, "beta1": 0.5, "beta2": 0.75, "tau": 0.5}
    start = arrays([0.0])
    # Step 1: delta = 2 - 0 = 2; m = 0.5*0 + 0.5*2 = 1; v = 0.75*0 + 0.25*4 = 1;
    # new = 0 + 1 * 1 / (sqrt(1) + 0.5) = 2/3.
    step1, state = aggregate("fedadam", start, [(arrays([2.0]), 1.0)], None, options)
    assert step1[0][0] == pytest.approx(2 / 3, rel=1e-15)
    assert len(state) == 2
    assert state[0][0] == pytest.approx(1.0)  # m
    assert state[1][0] == pytest.approx(1.0)  # v
    # Step 2: the sites average 2 again: delta = 2 - 2/3 = 4/3; m = 0.5*1 + 0.5*4/3 = 7/6;
    # v = 0.75*1 + 0.25*16/9 = 43/36; new = 2/3 + (7/6) / (sqrt(43)/6 + 1/2) = 2/3 + 7/(sqrt(43)+3)
    results = [(arrays([1.0]), 1.0), (arrays([3.0]), 1.0)]
    step2, state = aggregate("fedadam", step1, results, state, options)
    assert step2[0][0] == pytest.approx(2 / 3 + 7 / (math.sqrt(43) + 3), rel=1e-14)
    assert state[0][0] == pytest.approx(7 / 6, rel=1e-15)
    assert state[1][0] == pytest.approx(43 / 36, rel=1e-15)


def test_fedadam_defaults_and_state_layout():
    start = arrays([0.0, 1.0], [0.0])
    results = [(arrays([1.0, 1.0], [0.0]), 1.0), (arrays([3.0, 1.0], [0.0]), 1.0)]
    params, state = aggregate("fedadam", start, results)
    # delta = [2, 0]: m = 0.1*delta = [0.2, 0]; v = 0.01*delta^2 = [0.04, 0];
    # new = global + 0.1 * m / (sqrt(v) + 1e-9)
    assert params[0][0] == pytest.approx(0.1 * 0.2 / (0.2 + 1e-9), rel=1e-15)
    assert params[0][1] == 1.0
    assert params[1][0] == 0.0
    assert [s.shape for s in state] == [(2,), (1,), (2,), (1,)]  # m arrays, then v arrays
    np.testing.assert_allclose(state[0], [0.2, 0.0])
    np.testing.assert_allclose(state[2], [0.04, 0.0])
    with pytest.raises(ValueError, match="state"):
        aggregate("fedadam", start, results, state[:2])


def test_median_with_an_even_count_is_the_mean_of_the_middle_two():
    results = [
        (arrays([1.0, -1.0]), 100.0),
        (arrays([5.0, -5.0]), 1.0),
        (arrays([2.0, 0.0]), 1.0),
        (arrays([10.0, 4.0]), 1.0),
    ]
    params, state = aggregate("median", arrays([0.0, 0.0]), results)
    # sorted 1, 2, 5, 10 -> (2 + 5) / 2; sorted -5, -1, 0, 4 -> (-1 + 0) / 2; weights ignored
    np.testing.assert_array_equal(params[0], [3.5, -0.5])
    assert state is None


def test_trimmed_mean_drops_the_outliers():
    results = [
        (arrays([1.0, -100.0]), 1.0),
        (arrays([2.0, 0.0]), 1.0),
        (arrays([1000.0, 1.0]), 50.0),
        (arrays([3.0, 2.0]), 1.0),
        (arrays([4.0, 3.0]), 1.0),
    ]
    # beta 0.2 of 5 sites: floor(1.0) = 1 value dropped from each end, per coordinate:
    # [1, 2, 3, 4, 1000] -> mean(2, 3, 4) = 3; [-100, 0, 1, 2, 3] -> mean(0, 1, 2) = 1
    params, _ = aggregate("trimmed_mean", arrays([0.0, 0.0]), results, options={"beta": 0.2})
    np.testing.assert_array_equal(params[0], [3.0, 1.0])
    # The default beta 0.1 trims floor(0.5) = 0: the plain unweighted mean.
    params, _ = aggregate("trimmed_mean", arrays([0.0, 0.0]), results)
    np.testing.assert_allclose(params[0], [1010 / 5, -94 / 5])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_refuses_empty_results_and_zero_weight(name):
    with pytest.raises(ValueError, match="No results"):
        aggregate(name, GLOBAL, [])
    with pytest.raises(ValueError, match="zero"):
        aggregate(name, GLOBAL, [(RESULTS[0][0], 0.0), (RESULTS[1][0], 0.0)])
    with pytest.raises(ValueError, match="shapes"):
        aggregate(name, GLOBAL, [(arrays([1.0], [1.0]), 1.0)])


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("fedavg", {"mu": 0.1}, "Unknown option"),
        ("fedprox", {"mu": -0.1}, "zero or more"),
        ("fedprox", {"mu": True}, "finite number"),
        ("fedadam", {"eta": 0.0}, "more than zero"),
        ("fedadam", {"beta1": 1.0}, "less than 1"),
        ("fedadam", {"tau": float("nan")}, "finite number"),
        ("trimmed_mean", {"beta": 0.5}, "less than 0.5"),
        ("median", {"beta": 0.1}, "allowed: none"),
    ],
)
def test_strategy_options_refuse_unknown_keys_and_out_of_range_values(name, options, match):
    with pytest.raises(ValueError, match=match):
        strategy_options(name, options)


def test_strategy_options_merge_defaults():
    assert strategy_options("fedadam", {"eta": 0.5}) == {
        "eta": 0.5,
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 1e-9,
    }
    assert strategy_options("trimmed_mean", {}) == {"beta": 0.1}


def test_unknown_strategy():
    with pytest.raises(ValueError, match="Unknown aggregation strategy"):
        get_strategy("fedsgd")
