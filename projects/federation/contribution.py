"""How much each site contributed to a model: Shapley values of its per-round updates.

Multi-round reconstruction (Song, Tong and Wei, IEEE BigData 2019; the "MR" baseline of GTG-
Shapley, Liu et al., ACM TIST 2022): in round ``r`` the model a coalition ``S`` of sites would
have produced is rebuilt from the stored updates, without retraining, as FedAvg over ``S``
(the sample-weighted mean of their parameters), and scored on the validators' held-out data;
``U_r(S)`` is that score, and ``U_r({})`` the score of the model the round started from. Each
site's value in round ``r`` is its Shapley value for ``U_r``; its contribution is the sum over
rounds, so the contributions add up to the sum of the rounds' gains (efficiency).

Up to ``EXACT_LIMIT`` sites the Shapley value is exact (every coalition, ``2^n - 1`` models a
round). Beyond, it is estimated from sampled permutations, each site first in turn and the rest
shuffled, as GTG-Shapley's guided sampling does (without its truncation: the models are all
scored at once, at the validators). Leave-one-out, ``U_r(N) - U_r(N - {i})``, is given beside
it as a check; it undervalues sites whose data others duplicate.

Pure numpy, no Django.
"""

import itertools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

Params = list[np.ndarray]
Site = TypeVar("Site", bound=Hashable)

EXACT_LIMIT = 10


def coalition_model(
    updates: Mapping[Site, tuple[Params, float]], coalition: Iterable[Site]
) -> Params:
    """FedAvg over ``coalition``: its sites' parameters averaged, weighted by sample counts."""
    members = sorted(coalition)  # a fixed order: the same bits every time
    if not members:
        raise ValueError("A coalition needs at least one site.")
    total = sum(float(updates[s][1]) for s in members)
    if total <= 0:
        raise ValueError("A coalition's sample counts must add up to more than zero.")
    first = updates[members[0]][0]
    means = []
    for i in range(len(first)):
        acc = np.zeros(np.shape(first[i]), dtype=np.float64)
        for s in members:
            params, weight = updates[s]
            acc += float(weight) * np.asarray(params[i], dtype=np.float64)
        means.append(acc / total)
    return means


def coalitions(sites: Sequence[Site]) -> list[frozenset[Site]]:
    """Every non-empty coalition of ``sites``, smallest first."""
    return [
        frozenset(c)
        for size in range(1, len(sites) + 1)
        for c in itertools.combinations(sites, size)
    ]


def guided_permutations(sites: Sequence[Site], count: int, seed: int) -> list[tuple[Site, ...]]:
    """``count`` permutations: each site first in turn, the others shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    ordered = sorted(sites)
    perms = []
    while len(perms) < count:
        for first in ordered:
            rest = [s for s in ordered if s != first]
            rng.shuffle(rest)
            perms.append((first, *rest))
            if len(perms) == count:
                break
    return perms


def sampled_coalitions(perms: Sequence[Sequence[Site]]) -> list[frozenset[Site]]:
    """The coalitions the permutations' prefixes need, each once, smallest first."""
    seen: dict[frozenset[Site], None] = {}
    for perm in perms:
        for k in range(1, len(perm) + 1):
            seen.setdefault(frozenset(perm[:k]), None)
    return sorted(seen, key=len)


def shapley_exact(
    sites: Sequence[Site], utility: Mapping[frozenset[Site], float]
) -> dict[Site, float]:
    """Exact Shapley values; ``utility`` holds every coalition, the empty one included."""
    n = len(sites)
    values = dict.fromkeys(sites, 0.0)
    for site in sites:
        others = [s for s in sites if s != site]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                without = frozenset(coalition)
                values[site] += weight * (utility[without | {site}] - utility[without])
    return values


def shapley_sampled(
    sites: Sequence[Site], perms: Sequence[Sequence[Site]], utility: Mapping[frozenset[Site], float]
) -> dict[Site, float]:
    """Shapley values estimated as the mean marginal gain over the given permutations."""
    values = dict.fromkeys(sites, 0.0)
    for perm in perms:
        before = frozenset()
        for site in perm:
            after = before | {site}
            values[site] += utility[after] - utility[before]
            before = after
    return {site: value / len(perms) for site, value in values.items()}


def leave_one_out(
    sites: Sequence[Site], utility: Mapping[frozenset[Site], float]
) -> dict[Site, float]:
    """``U(N) - U(N - {i})`` for every site."""
    everyone = frozenset(sites)
    return {site: utility[everyone] - utility[everyone - {site}] for site in sites}
