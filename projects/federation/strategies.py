"""Aggregation strategies: how the coordinator turns the sites' parameters into the next model.

Every strategy is a pure function ``(global_params, results, state, **options) -> (new_params,
new_state)``. ``results`` holds, per site, the full parameters it trained locally and its weight
(the number of training rows). ``state`` is the server optimiser's memory between rounds; only
FedAdam keeps one. Callers pass ``results`` in a stable order (the coordinator sorts by site) and
every sum here runs in that order, so a round aggregated twice gives the same bits.

- ``fedavg``: the sample-weighted mean (McMahan et al., AISTATS 2017).
- ``fedprox``: the same aggregation; its ``mu`` is the proximal coefficient that the sites add
  to their local objective (Li et al., MLSys 2020), hence ``client_options = {"mu"}``.
- ``fedadam``: an Adam step on the server with the averaged change as pseudo-gradient (Reddi et
  al., "Adaptive Federated Optimization", ICLR 2021), as Flower implements it:
  ``delta = fedavg - global; m = b1 m + (1 - b1) delta; v = b2 v + (1 - b2) delta^2;
  new = global + eta m / (sqrt(v) + tau)``. Its state is the m arrays followed by the v arrays.
- ``median``: the coordinate-wise median of the sites' parameters, unweighted (Yin et al.,
  "Byzantine-Robust Distributed Learning", ICML 2018): one wild site cannot drag it far.
- ``trimmed_mean``: coordinate-wise, drop ``floor(beta * n)`` values from each end, then take
  the unweighted mean of the rest (Yin et al., 2018).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = list[np.ndarray]
Results = Sequence[tuple[Params, float]]
State = list[np.ndarray] | None


def _check_results(global_params: Params, results: Results) -> float:
    """The total weight, after checking every result has the global model's shapes."""
    if not results:
        raise ValueError("No results to aggregate.")
    shapes = [np.shape(p) for p in global_params]
    for i, (params, weight) in enumerate(results):
        if [np.shape(p) for p in params] != shapes:
            raise ValueError(f"Result {i} does not have the global model's shapes.")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Result {i} has an invalid weight {weight!r}.")
    total = math.fsum(float(weight) for _, weight in results)
    if total <= 0:
        raise ValueError("The results' weights add up to zero.")
    return total


def _weighted_mean(global_params: Params, results: Results) -> Params:
    total = _check_results(global_params, results)
    means = []
    for i in range(len(global_params)):
        acc = np.zeros(np.shape(global_params[i]), dtype=np.float64)
        for params, weight in results:  # in the given order: the sum is reproducible
            acc += float(weight) * np.asarray(params[i], dtype=np.float64)
        means.append(acc / total)
    return means


def _stacked(results: Results, i: int) -> np.ndarray:
    return np.stack([np.asarray(params[i], dtype=np.float64) for params, _ in results])


def fedavg(global_params: Params, results: Results, state: State = None) -> tuple[Params, State]:
    """The sample-weighted mean of the sites' parameters."""
    return _weighted_mean(global_params, results), None


def fedprox(
    global_params: Params, results: Results, state: State = None, *, mu: float = 0.01
) -> tuple[Params, State]:
    """FedAvg's aggregation; ``mu`` acts on the sites, not here."""
    return _weighted_mean(global_params, results), None


def fedadam(
    global_params: Params,
    results: Results,
    state: State = None,
    *,
    eta: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-9,
) -> tuple[Params, State]:
    """One server Adam step towards the weighted mean; state = m arrays + v arrays."""
    average = _weighted_mean(global_params, results)
    n = len(global_params)
    if state is None:
        state = [np.zeros(np.shape(p)) for p in global_params] * 2
    if len(state) != 2 * n or any(
        np.shape(s) != np.shape(global_params[i % n]) for i, s in enumerate(state)
    ):
        raise ValueError("FedAdam's state does not match the model's shapes.")
    new_params, new_m, new_v = [], [], []
    for i in range(n):
        w = np.asarray(global_params[i], dtype=np.float64)
        delta = average[i] - w
        m = beta1 * state[i] + (1.0 - beta1) * delta
        v = beta2 * state[n + i] + (1.0 - beta2) * delta**2
        new_params.append(w + eta * m / (np.sqrt(v) + tau))
        new_m.append(m)
        new_v.append(v)
    return new_params, new_m + new_v


def median(global_params: Params, results: Results, state: State = None) -> tuple[Params, State]:
    """The coordinate-wise median, unweighted (the mean of the middle two for an even count)."""
    _check_results(global_params, results)
    return [np.median(_stacked(results, i), axis=0) for i in range(len(global_params))], None


def trimmed_mean(
    global_params: Params, results: Results, state: State = None, *, beta: float = 0.1
) -> tuple[Params, State]:
    """The coordinate-wise mean after dropping ``floor(beta * n)`` values from each end."""
    _check_results(global_params, results)
    n = len(results)
    k = math.floor(beta * n)
    out = []
    for i in range(len(global_params)):
        ordered = np.sort(_stacked(results, i), axis=0)
        out.append(ordered[k : n - k].mean(axis=0))
    return out, None


@dataclass(frozen=True)
class Strategy:
    """A named aggregation, its default options and which of them the sites must receive."""

    name: str
    aggregate: Callable[..., tuple[Params, State]]
    defaults: dict[str, float]
    client_options: frozenset[str]
    # Needs each site's parameters (an order statistic): impossible under secure aggregation,
    # where the coordinator only ever holds the sum.
    individual: bool = False


# option -> (test, what the value must be, for the error message)
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "mu": (lambda v: v >= 0, "zero or more"),
    "eta": (lambda v: v > 0, "more than zero"),
    "beta1": (lambda v: 0 <= v < 1, "at least 0 and less than 1"),
    "beta2": (lambda v: 0 <= v < 1, "at least 0 and less than 1"),
    "tau": (lambda v: v > 0, "more than zero"),
    "beta": (lambda v: 0 <= v < 0.5, "at least 0 and less than 0.5"),
}

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("fedavg", fedavg, {}, frozenset()),
        Strategy("fedprox", fedprox, {"mu": 0.01}, frozenset({"mu"})),
        Strategy(
            "fedadam",
            fedadam,
            {"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9},
            frozenset(),
        ),
        Strategy("median", median, {}, frozenset(), individual=True),
        Strategy("trimmed_mean", trimmed_mean, {"beta": 0.1}, frozenset(), individual=True),
    )
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"Unknown aggregation strategy {name!r}; known: {', '.join(STRATEGIES)}."
        ) from None


def strategy_options(name: str, options: Mapping[str, Any] | None) -> dict[str, float]:
    """The strategy's defaults overridden by ``options``; ValueError says what is wrong."""
    strategy = get_strategy(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(strategy.defaults))
    if unknown:
        allowed = ", ".join(sorted(strategy.defaults)) or "none"
        raise ValueError(f"Unknown option(s) for {name}: {', '.join(unknown)}; allowed: {allowed}.")
    merged = dict(strategy.defaults)
    for key, value in options.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"Option {key!r} of {name} must be a finite number, not {value!r}.")
        test, wanted = _RANGES[key]
        if not test(float(value)):
            raise ValueError(f"Option {key!r} of {name} must be {wanted}, not {value!r}.")
        merged[key] = float(value)
    return merged


def aggregate(
    name: str,
    global_params: Params,
    results: Results,
    state: State = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[Params, State]:
    """Aggregate with the named strategy and its (checked) options."""
    return get_strategy(name).aggregate(
        global_params, results, state, **strategy_options(name, options)
    )
