"""Contribution measurement: Shapley values and leave-one-out on cases worked by hand."""

import itertools

import numpy as np
import pytest

from projects.federation.contribution import (
    coalition_model,
    coalitions,
    guided_permutations,
    leave_one_out,
    sampled_coalitions,
    shapley_exact,
    shapley_sampled,
)

# A three-site game worked by hand: A alone is worth 0.6, B 0.4, C 0.0 (its data adds nothing),
# A with B 0.8; C adds nothing to any coalition. The empty coalition: 0.5 (the starting model).
U = {
    frozenset(): 0.5,
    frozenset("A"): 0.6,
    frozenset("B"): 0.4,
    frozenset("C"): 0.5,
    frozenset("AB"): 0.8,
    frozenset("AC"): 0.6,
    frozenset("BC"): 0.4,
    frozenset("ABC"): 0.8,
}


def test_leave_one_out_by_hand():
    # A: U(ABC) - U(BC) = 0.8 - 0.4; B: 0.8 - 0.6; C: 0.8 - 0.8.
    assert leave_one_out("ABC", U) == pytest.approx({"A": 0.4, "B": 0.2, "C": 0.0})


def test_exact_shapley_by_hand_and_its_axioms():
    # A: 1/3 (0.1) + 1/6 (0.4) + 1/6 (0.1) + 1/3 (0.4) = 0.25; B: 1/3 (-0.1) + 1/6 (0.2)
    # + 1/6 (-0.1) + 1/3 (0.2) = 0.05; C: 0 (a null player).
    values = shapley_exact("ABC", U)
    assert values == pytest.approx({"A": 0.25, "B": 0.05, "C": 0.0})
    assert sum(values.values()) == pytest.approx(U[frozenset("ABC")] - U[frozenset()])


def test_symmetric_sites_get_the_same_value():
    twins = {
        c: 0.1 * len(c)
        for size in range(4)
        for c in map(frozenset, itertools.combinations("XYZ", size))
    }
    values = shapley_exact("XYZ", twins)
    assert (
        values["X"]
        == pytest.approx(values["Y"])
        == pytest.approx(values["Z"])
        == pytest.approx(0.1)
    )


def test_all_guided_permutations_give_the_exact_values():
    perms = list(itertools.permutations("ABC"))
    assert shapley_sampled("ABC", perms, U) == pytest.approx(shapley_exact("ABC", U))
    guided = guided_permutations("ABC", 6, seed=1)
    assert [p[0] for p in guided] == ["A", "B", "C", "A", "B", "C"]
    assert all(sorted(p) == ["A", "B", "C"] for p in guided)
    assert set(sampled_coalitions(guided)) <= set(coalitions("ABC"))


def test_a_coalition_model_is_fedavg_over_its_sites():
    updates = {
        "A": ([np.array([1.0, 1.0]), np.array([0.0])], 1.0),
        "B": ([np.array([4.0, 0.0]), np.array([3.0])], 3.0),
    }
    model = coalition_model(updates, ["B", "A"])
    assert np.allclose(model[0], [3.25, 0.25]) and np.allclose(model[1], [2.25])
    assert coalitions("AB") == [frozenset("A"), frozenset("B"), frozenset("AB")]
    with pytest.raises(ValueError):
        coalition_model(updates, [])
