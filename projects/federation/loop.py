"""The whole federation in one process, and the centrally trained baseline it is measured against.

``run_in_process`` performs exactly the computation of a distributed run: the same initial
parameters, the same per-site tasks and seeds, the sites in sorted order, every parameter list
passed through ``encode_params``/``decode_params`` as the transport does, sample counts as
weights. Its results are therefore bit-identical to what the coordinator and the site workers
produce, which is what the benchmark and the tests rely on.

``train_central`` is the counterfactual the alliance exists to avoid: the same family trained
on the pooled training rows of every site (each site's split being the one it uses in a run).
"Federated within two points of central" is the usual check that federation costs little.
"""

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from projects.federation import secagg, signing
from projects.federation.data import split
from projects.federation.encoding import decode_params, encode_params
from projects.federation.families import get_family
from projects.federation.site import (
    RoundTask,
    family_for,
    n_outputs_for,
    read_site_file,
    site_rng,
    train_on_site,
)
from projects.federation.strategies import aggregate, get_strategy
from projects.federation.strategies import strategy_options as checked_options

Params = list[np.ndarray]

COORDINATOR = "coordinator"


@dataclass(frozen=True)
class LocalSite:
    """A site in the in-process loop: its slug, its data file and the file's registered hash."""

    site: str
    path: Path
    sha256: str


def initial_params(
    family: str,
    family_options: Mapping[str, Any] | None,
    n_features: int,
    n_outputs: int,
    seed: int,
) -> Params:
    """The run's round-0 model, drawn from the coordinator's own seeded stream."""
    return get_family(family, dict(family_options or {})).init(
        n_features, n_outputs, site_rng(seed, COORDINATOR, "init")
    )


def _transported(params: Params) -> Params:
    return decode_params(encode_params(params), max_arrays=max(len(params), 64))


def run_in_process(
    sites: Sequence[LocalSite],
    base_task: RoundTask,
    *,
    rounds: int,
    strategy: str,
    strategy_options: Mapping[str, Any] | None = None,
) -> list[Params]:
    """The global parameters after each of rounds 1..``rounds``.

    ``base_task``'s ``site`` and ``round_number`` are replaced per site and round; its
    ``proximal_mu`` is replaced by the strategy's ``mu`` when the strategy has one
    (FedProx), and by 0 otherwise, as the coordinator does.
    """
    options = checked_options(strategy, strategy_options)
    proximal_mu = options["mu"] if "mu" in get_strategy(strategy).client_options else 0.0
    family = family_for(base_task.family, base_task.family_options)
    global_params = _transported(
        initial_params(
            base_task.family,
            base_task.family_options,
            len(base_task.features),
            n_outputs_for(family, base_task.classes),
            base_task.seed,
        )
    )
    state: list[np.ndarray] | None = None
    history: list[Params] = []
    for round_number in range(1, rounds + 1):
        blob = encode_params(global_params)
        results: list[tuple[Params, float]] = []
        for local in sorted(sites, key=lambda s: s.site):
            task = dataclasses.replace(
                base_task, site=local.site, round_number=round_number, proximal_mu=proximal_mu
            )
            result = train_on_site(
                task, decode_params(blob), data_path=local.path, expected_sha256=local.sha256
            )
            results.append((_transported(result.params), float(result.sample_count)))
        new_params, state = aggregate(strategy, global_params, results, state, options)
        global_params = _transported(new_params)
        history.append([p.copy() for p in global_params])
    return history


def secure_round(
    global_params: Params,
    trained: Sequence[tuple[str, Params, int]],
    config: secagg.SecAggConfig,
    signing_keys: Mapping[str, Any],
    *,
    seed: int,
    timings: dict[str, float] | None = None,
) -> tuple[Params, int, int]:
    """One secure aggregation of ``(site, params, samples)``: the weighted mean parameters
    (``global + decoded mean change``), the total sample count and the saturated coordinates.

    Each site encodes ``params - global`` with its own stochastic-rounding stream, exactly as
    a site worker does (``secagg_rng``).
    """
    vectors, saturated, encoding = {}, 0, []
    for site, params, samples in trained:
        started = time.perf_counter()
        delta = [
            np.asarray(p, np.float64) - np.asarray(g, np.float64)
            for p, g in zip(params, global_params, strict=True)
        ]
        encoded = secagg.encode_update(
            delta, samples, config, secagg_rng(seed, site, config.round_number)
        )
        vectors[site] = encoded.vector
        saturated += encoded.saturated
        encoding.append(time.perf_counter() - started)
    result = secagg.round_in_process(config, vectors, signing_keys, timings=timings)
    started = time.perf_counter()
    mean, total = secagg.decode_sum(result.total, config, [np.shape(g) for g in global_params])
    if timings is not None:
        timings["encode_max_site"] = max(encoding)
        timings["encode_all_sites"] = sum(encoding)
        timings["coordinator"] += time.perf_counter() - started
    return (
        [np.asarray(g, np.float64) + m for g, m in zip(global_params, mean, strict=True)],
        total,
        saturated,
    )


def secagg_rng(seed: int, site: str, round_number: int) -> np.random.Generator:
    """A site's stream for the stochastic rounding of its secure-aggregation input."""
    return site_rng(seed, site, "secagg", round_number)


def run_secure_in_process(
    sites: Sequence[LocalSite],
    base_task: RoundTask,
    *,
    rounds: int,
    strategy: str,
    strategy_options: Mapping[str, Any] | None = None,
    clip: float,
    max_weight: float,
    secure_timings: list[dict[str, float]] | None = None,
) -> list[Params]:
    """``run_in_process`` with every round securely aggregated (all four stages in memory).

    The strategy receives one result: the decoded weighted mean with the total sample count,
    so FedAvg, FedProx and FedAdam act on it as they would on the sites' own parameters.
    ``secure_timings`` receives, per round, the seconds of each stage (``secure_round``).
    """
    if get_strategy(strategy).individual:
        raise ValueError(f"{strategy} needs individual updates; it cannot run securely.")
    options = checked_options(strategy, strategy_options)
    proximal_mu = options["mu"] if "mu" in get_strategy(strategy).client_options else 0.0
    family = family_for(base_task.family, base_task.family_options)
    global_params = _transported(
        initial_params(
            base_task.family,
            base_task.family_options,
            len(base_task.features),
            n_outputs_for(family, base_task.classes),
            base_task.seed,
        )
    )
    keys = {local.site: signing.generate() for local in sites}
    cohort = tuple(sorted(keys))
    dim = sum(int(np.size(p)) for p in global_params)
    state: list[np.ndarray] | None = None
    history: list[Params] = []
    for round_number in range(1, rounds + 1):
        blob = encode_params(global_params)
        trained: list[tuple[str, Params, int]] = []
        for local in sorted(sites, key=lambda s: s.site):
            task = dataclasses.replace(
                base_task, site=local.site, round_number=round_number, proximal_mu=proximal_mu
            )
            result = train_on_site(
                task, decode_params(blob), data_path=local.path, expected_sha256=local.sha256
            )
            trained.append((local.site, _transported(result.params), int(result.sample_count)))
        config = secagg.SecAggConfig(
            run="in-process",
            round_number=round_number,
            nonce=f"{base_task.seed}-{round_number}",
            cohort=cohort,
            dim=dim,
            clip=clip,
            max_weight=max_weight,
        )
        timings: dict[str, float] = {}
        mean, total, _ = secure_round(
            global_params, trained, config, keys, seed=base_task.seed, timings=timings
        )
        if secure_timings is not None:
            secure_timings.append(timings)
        new_params, state = aggregate(
            strategy, global_params, [(mean, float(total))], state, options
        )
        global_params = _transported(new_params)
        history.append([p.copy() for p in global_params])
    return history


def train_central(
    paths: Sequence[Path | LocalSite], base_task: RoundTask, *, epochs: int
) -> Params:
    """The family trained for ``epochs`` on the pooled training rows of every site.

    Each site's training rows are those of its own seeded split, which depends on the site's
    slug: pass ``LocalSite`` values, or paths laid out as ``<sites>/<slug>/<file>`` (the slug is
    then the parent directory's name). Rows are pooled in sorted slug order; the shuffles come
    from the stream ``("central", "train")`` of the run's seed.
    """
    family = family_for(base_task.family, base_task.family_options)
    n_outputs = n_outputs_for(family, base_task.classes)
    named = sorted(
        (item.site, item.path) if isinstance(item, LocalSite) else (Path(item).parent.name, item)
        for item in paths
    )
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for slug, path in named:
        X, y = read_site_file(
            Path(path),
            features=base_task.features,
            label=base_task.label,
            classes=base_task.classes,
            feature_ranges=base_task.feature_ranges,
            scaling=base_task.spec.scaling,
            feature_stats=base_task.spec.feature_stats,
        )
        train_rows, _ = split(
            len(X), base_task.validation_share, site_rng(base_task.seed, slug, "split")
        )
        features.append(X[train_rows])
        targets.append(y[train_rows])
    start = initial_params(
        base_task.family,
        base_task.family_options,
        len(base_task.features),
        n_outputs,
        base_task.seed,
    )
    return family.train(
        start,
        np.concatenate(features),
        np.concatenate(targets),
        epochs=epochs,
        batch_size=base_task.batch_size,
        learning_rate=base_task.learning_rate,
        rng=site_rng(base_task.seed, "central", "train"),
    )
